"""One plain trainer process on synthetic data: learning, metric lines, output folder, export, resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trainer_harness import METRIC_PREFIX, QUICK_FLAGS, TrainerRun, run_trainer
from trainrun_trainer.models import build_classifier


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory: pytest.TempPathFactory) -> TrainerRun:
    output_dir = tmp_path_factory.mktemp("two-epochs") / "outputs"
    return run_trainer([*QUICK_FLAGS, "--epochs", "2"], output_dir=output_dir).check()


def test_training_loss_falls(output_dir: Path) -> None:
    """The synthetic task takes real learning (patterns seen shifted): 128 steps of the small CNN."""
    run = run_trainer(["--model", "cnn", "--synthetic-samples", "2048", "--batch-size", "32", "--learning-rate",
                       "0.003", "--print-frequency", "8", "--epochs", "2"], output_dir=output_dir).check()
    window_losses = [line["train_loss"] for line in run.metric_lines if "val_loss" not in line
                     and "final" not in line]
    assert len(window_losses) == 16
    assert window_losses[-1] < 0.8 * window_losses[0], window_losses
    validation_losses = [line["val_loss"] for line in run.metric_lines if "val_loss" in line and "final" not in line]
    assert validation_losses[1] < validation_losses[0]


def test_metric_lines_follow_the_contract(two_epochs: TrainerRun) -> None:
    lines = two_epochs.metric_lines
    for line in lines:
        assert isinstance(line["epoch"], int) and isinstance(line["step"], int)
        assert all(isinstance(value, (int, float)) for value in line.values())
    # Every metric line of stdout is also in metrics.jsonl, in the same order.
    assert two_epochs.metrics_file == lines
    epoch_lines = [line for line in lines if "val_loss" in line and "final" not in line]
    assert [line["epoch"] for line in epoch_lines] == [1, 2]
    for line in epoch_lines:
        # An epoch's means have names of their own: the window at the same step has its own train_loss.
        assert {"epoch_train_loss", "epoch_train_accuracy", "val_loss", "val_accuracy", "val_top1", "val_top5",
                "epoch_images_per_sec"} <= line.keys()
        assert not {"train_loss", "train_accuracy", "images_per_sec", "lr"} & line.keys()
        assert 0 <= line["val_top1"] <= line["val_top5"] <= 1
    final = lines[-1]
    assert final["final"] is True and final["epoch"] == 2
    # 128 images / 16 per step = 8 steps an epoch; the print frequency is 2.
    window_steps = [line["step"] for line in lines if "val_loss" not in line]
    assert window_steps == [2, 4, 6, 8, 10, 12, 14, 16]
    assert all({"train_loss", "train_accuracy", "images_per_sec", "lr"} <= line.keys() for line in lines
               if "val_loss" not in line)
    # Human-readable progress is there too, beside the machine lines.
    assert "epoch 2/2 done" in two_epochs.process.stdout
    assert all(line.startswith(METRIC_PREFIX) or "trainrun:metric" not in line
               for line in two_epochs.process.stdout.splitlines())


def test_output_folder_holds_the_contracted_files(two_epochs: TrainerRun) -> None:
    output = two_epochs.output_dir
    assert sorted(path.name for path in (output / "checkpoints").iterdir()) == ["epoch-0001.pt", "epoch-0002.pt"]
    checkpoint = torch.load(output / "checkpoints" / "epoch-0002.pt", weights_only=True)
    assert checkpoint["epoch"] == 2
    assert {"model", "optimizer", "scheduler", "best_val_loss"} <= checkpoint.keys()
    summary = two_epochs.run_summary
    assert summary["world_size"] == 1
    assert summary["hyperparameters"]["model"] == "cnn"
    assert summary["hyperparameters"]["epochs"] == 2
    assert summary["class_names"] == [f"class_{index}" for index in range(10)]
    assert summary["input_shape"] == [3, 32, 32]
    assert summary["final_metrics"]["val_loss"] == pytest.approx(checkpoint["best_val_loss"])
    # model.pt is the bare network's state dict: it loads into a freshly built network.
    network = build_classifier("cnn", input_shape=(3, 32, 32), num_classes=10).network
    network.load_state_dict(torch.load(output / "model.pt", weights_only=True))


@pytest.mark.parametrize(
    ("file", "loader"),
    [("model.ts", "torch.jit.load({path!r})"), ("model.pt2", "torch.export.load({path!r}).module()")],
)
def test_exported_models_load_and_predict_without_the_training_code(two_epochs: TrainerRun, tmp_path: Path,
                                                                    file: str, loader: str) -> None:
    path = str(two_epochs.output_dir / file)
    script = (
        "import sys, torch\n"
        "sys.modules['trainrun_trainer'] = None  # any import of the training code now fails\n"
        f"model = {loader.format(path=path)}\n"
        "print(tuple(model(torch.rand(5, 3, 32, 32)).shape), tuple(model(torch.rand(1, 3, 32, 32)).shape))\n"
    )
    result = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(5, 10) (1, 10)"


def test_the_onnx_model_gives_the_pytorch_models_outputs_in_onnx_runtime(two_epochs: TrainerRun) -> None:
    """model.onnx in ONNX Runtime, any batch size, against the PyTorch model (model.ts) on the same batch."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(two_epochs.output_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    (image_input,), (logits_output,) = session.get_inputs(), session.get_outputs()
    assert (image_input.name, logits_output.name) == ("images", "logits")
    assert image_input.shape[1:] == [3, 32, 32] and isinstance(image_input.shape[0], str)  # a dynamic batch
    pytorch_model = torch.jit.load(str(two_epochs.output_dir / "model.ts"))
    for batch_size in (1, 7):
        images = torch.rand(batch_size, 3, 32, 32)
        (logits,) = session.run(None, {"images": images.numpy()})
        with torch.no_grad():
            expected = pytorch_model(images)
        assert logits.shape == (batch_size, 10)
        assert torch.allclose(torch.from_numpy(logits), expected, atol=1e-4), (logits, expected)
    assert not list(two_epochs.output_dir.glob("*.onnx.data"))  # the weights are inside the one file


def test_triton_repository_entry_follows_tritons_model_config(two_epochs: TrainerRun, tmp_path: Path) -> None:
    """triton/<name>/ is what Triton's PyTorch backend loads: config.pbtxt is checked against Triton's own
    ModelConfig schema (tritonclient's protobuf, unknown fields refused), the model against libtorch."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    folder = two_epochs.output_dir / "triton" / "cnn"  # no TRAINRUN_RUN_NAME here: named after the model
    config = text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.name == "cnn" and config.platform == "pytorch_libtorch" and config.max_batch_size == 64
    assert [(item.name, item.data_type, list(item.dims)) for item in config.input] == [
        ("INPUT__0", model_config_pb2.TYPE_FP32, [3, 32, 32])
    ]
    assert [(item.name, item.data_type, list(item.dims), item.label_filename) for item in config.output] == [
        ("OUTPUT__0", model_config_pb2.TYPE_FP32, [10], "labels.txt")
    ]
    assert (folder / "labels.txt").read_text().splitlines() == two_epochs.run_summary["class_names"]
    assert (folder / "1" / "model.pt").read_bytes() == (two_epochs.output_dir / "model.ts").read_bytes()
    script = (
        "import sys, torch\n"
        "sys.modules['trainrun_trainer'] = None\n"
        f"model = torch.jit.load({str(folder / '1' / 'model.pt')!r})\n"
        "print(tuple(model(torch.rand(64, 3, 32, 32)).shape))\n"
    )
    result = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(64, 10)"


def test_rerun_with_more_epochs_resumes_from_the_newest_checkpoint(output_dir: Path) -> None:
    first = run_trainer([*QUICK_FLAGS, "--epochs", "2"], output_dir=output_dir).check()
    second = run_trainer([*QUICK_FLAGS, "--epochs", "3"], output_dir=output_dir).check()
    assert "resuming after epoch 2" in second.process.stdout
    assert {line["epoch"] for line in second.metric_lines} == {3}
    # Steps continue where the first run stopped (8 per epoch).
    assert min(line["step"] for line in second.metric_lines) == 18
    assert sorted(path.name for path in (output_dir / "checkpoints").iterdir()) == [
        "epoch-0001.pt", "epoch-0002.pt", "epoch-0003.pt"]
    # metrics.jsonl is appended to, so it tells the whole story of both runs.
    assert second.metrics_file == first.metric_lines + second.metric_lines
    assert second.run_summary["epochs_completed"] == 3


def test_run_that_is_already_complete_trains_nothing(output_dir: Path) -> None:
    run_trainer([*QUICK_FLAGS, "--epochs", "1"], output_dir=output_dir).check()
    again = run_trainer([*QUICK_FLAGS, "--epochs", "1"], output_dir=output_dir).check()
    assert [line.get("final") for line in again.metric_lines] == [True]
    assert (output_dir / "model.ts").is_file()
