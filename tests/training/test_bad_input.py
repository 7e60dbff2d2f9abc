"""Bad input ends the run with one clear line naming the flag or path and the fix, exit status 2.

Most cases call the entry point in this process (the data checks come before any training); one
goes through a real child process to pin down the exit status and stderr of the command.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from dataset_files import write_image_folder, write_png
from trainer_harness import trainer_env
from trainrun_trainer.__main__ import main


@pytest.fixture(autouse=True)
def _quiet_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TRAINRUN_MODEL",
                 "TRAINRUN_DATASET", "TRAINRUN_DATA_DIR", "TRAINRUN_EPOCHS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OUTPUT_DIR", str(tmp_path / "outputs"))


def _error_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("trainrun_trainer: error: ")
    return captured.err


def test_unknown_flag_names_it_and_suggests_the_right_one(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "trainrun_trainer", "--epoch=3", "--lr=0.1"],
                            capture_output=True, text=True, env=trainer_env(tmp_path / "outputs"), timeout=120)
    assert result.returncode == 2
    assert "unknown argument(s) '--epoch=3' (did you mean --epochs?), '--lr=0.1'" in result.stderr
    assert "--learning-rate" in result.stderr  # the list of known flags
    assert "Traceback" not in result.stderr


def test_unknown_model(capsys: pytest.CaptureFixture[str]) -> None:
    error = _error_of(["--model", "vgg16"], capsys)
    assert "--model 'vgg16' is not supported (env TRAINRUN_MODEL)" in error
    assert "resnet18" in error


def test_bad_value_in_an_env_fallback_names_the_variable(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TRAINRUN_EPOCHS", "five")
    assert "TRAINRUN_EPOCHS='five' is not valid for --epochs" in _error_of([], capsys)


def test_out_of_range_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--batch-size must be at least 1, got 0" in _error_of(["--batch-size", "0"], capsys)


def test_unlabelled_image_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for index in range(3):
        write_png(tmp_path / "data" / "train" / f"{index}.png", colour=(10, 20, 30))
    error = _error_of(["--dataset", "imagefolder", "--data-dir", str(tmp_path / "data")], capsys)
    assert f"{tmp_path / 'data' / 'train'} has no class subfolders (it holds 3 unlabelled images directly)" in error
    assert "<class name>/<image>" in error


def test_empty_image_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data" / "train").mkdir(parents=True)
    error = _error_of(["--dataset", "imagefolder", "--data-dir", str(tmp_path / "data")], capsys)
    assert "has no class subfolders (it is empty)" in error


def test_class_folders_without_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "data" / "train" / "cat" / "notes.txt").write_text("not an image")
    error = _error_of(["--dataset", "imagefolder", "--data-dir", str(tmp_path / "data")], capsys)
    assert "(cat) contain no images" in error


def test_train_and_val_with_different_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_image_folder(tmp_path / "data", per_class=1,
                       train_classes={"cat": (1, 1, 1), "dog": (2, 2, 2), "fox": (3, 3, 3)},
                       val_classes={"cat": (1, 1, 1), "dog": (2, 2, 2), "owl": (4, 4, 4)})
    error = _error_of(["--dataset", "imagefolder", "--data-dir", str(tmp_path / "data")], capsys)
    assert "train/ and val/ must have the same class folders" in error
    assert "only in train/: ['fox']; only in val/: ['owl']" in error


def test_missing_val_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_png(tmp_path / "data" / "train" / "cat" / "0.png", colour=(1, 2, 3))
    error = _error_of(["--dataset", "imagefolder", "--data-dir", str(tmp_path / "data")], capsys)
    assert f"{tmp_path / 'data' / 'val'} does not exist" in error


def test_dataset_needs_a_data_dir(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--dataset cifar10 needs --data-dir (env TRAINRUN_DATA_DIR)" in _error_of(["--dataset", "cifar10"], capsys)


@pytest.mark.parametrize(("dataset", "expected"), [
    ("fashion-mnist", "missing train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                      "t10k-labels-idx1-ubyte in {root}/FashionMNIST/raw"),
    ("cifar10", "missing data_batch_1, data_batch_2, data_batch_3, data_batch_4, data_batch_5, test_batch, "
                "batches.meta in {root}/cifar-10-batches-py"),
])
def test_missing_dataset_copy_names_the_expected_path(dataset: str, expected: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    error = _error_of(["--dataset", dataset, "--data-dir", str(tmp_path)], capsys)
    assert expected.format(root=tmp_path) in error
    assert "never downloads" in error


def test_pretrained_weights_missing_from_the_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    error = _error_of(["--model", "resnet18", "--pretrained", "--synthetic-samples", "8"], capsys)
    assert f"needs the resnet18 ImageNet weights at {tmp_path}/torch/hub/checkpoints/resnet18-f37072fd.pth" in error
    assert "never downloads" in error


def test_pretrained_for_a_model_without_weights(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--pretrained has no weights for --model cnn" in _error_of(["--model", "cnn", "--pretrained"], capsys)
