"""Each data source on tiny data written in its own on-disk format, through the real trainer."""

from __future__ import annotations

from pathlib import Path

import torch
from dataset_files import CIFAR10_CLASSES, write_cifar10, write_fashion_mnist, write_image_folder
from trainer_harness import run_trainer
from trainrun_trainer.config import parse_config
from trainrun_trainer.data import TensorSplit, load_dataset

ONE_QUICK_EPOCH = ("--epochs", "1", "--batch-size", "8", "--print-frequency", "2")


def test_image_folder_of_png_files(tmp_path: Path, output_dir: Path) -> None:
    data = tmp_path / "pets"
    write_image_folder(data, train_classes={"cat": (200, 40, 40), "dog": (40, 40, 200)})
    run = run_trainer(["--dataset", "imagefolder", "--data-dir", str(data), "--model", "cnn",
                       "--image-size", "16", *ONE_QUICK_EPOCH], output_dir=output_dir).check()
    summary = run.run_summary
    assert summary["class_names"] == ["cat", "dog"]
    assert summary["input_shape"] == [3, 16, 16]
    assert run.metric_lines[-1]["final"] is True


def test_fashion_mnist_copy_in_torchvision_layout(tmp_path: Path, output_dir: Path) -> None:
    write_fashion_mnist(tmp_path / "data", train=48, test=16)
    run = run_trainer(["--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "data"), *ONE_QUICK_EPOCH],
                      output_dir=output_dir).check()
    summary = run.run_summary
    assert summary["hyperparameters"]["model"] == "mlp"  # the default for fashion-mnist
    assert summary["input_shape"] == [1, 28, 28]
    assert summary["class_names"][0] == "T-shirt/top" and len(summary["class_names"]) == 10


def test_cifar10_copy_in_the_python_batches_layout(tmp_path: Path, output_dir: Path) -> None:
    write_cifar10(tmp_path / "data", per_batch=8)
    run = run_trainer(["--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), *ONE_QUICK_EPOCH],
                      output_dir=output_dir).check()
    summary = run.run_summary
    assert summary["hyperparameters"]["model"] == "cnn"  # the default for cifar10
    assert summary["class_names"] == CIFAR10_CLASSES
    # 5 training batches of 8 images, 8 images a step.
    assert [line["step"] for line in run.metric_lines if "val_loss" in line] == [5, 5]


def test_cifar10_loader_keeps_images_and_labels_together(tmp_path: Path) -> None:
    write_cifar10(tmp_path, per_batch=4)
    dataset = load_dataset(parse_config(["--dataset", "cifar10", "--data-dir", str(tmp_path)], environ={}))
    assert isinstance(dataset.train, TensorSplit) and isinstance(dataset.validation, TensorSplit)
    assert dataset.train.images.shape == (20, 3, 32, 32) and dataset.train.images.dtype == torch.uint8
    assert dataset.train.labels.tolist() == [0, 1, 2, 3] * 5
    assert len(dataset.validation) == 4


def test_synthetic_data_is_fixed_by_the_seed_and_shaped_for_the_model() -> None:
    def load(*flags: str) -> TensorSplit:
        split = load_dataset(parse_config(["--synthetic-samples", "32", *flags], environ={})).train
        assert isinstance(split, TensorSplit)
        return split

    first, again, other_seed = load("--seed", "3"), load("--seed", "3"), load("--seed", "4")
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.images, other_seed.images)
    assert load("--model", "mlp").images.shape == (32, 1, 28, 28)
    assert load("--model", "cnn").images.shape == (32, 3, 32, 32)
    assert load("--model", "resnet50", "--image-size", "64").images.shape == (32, 3, 64, 64)
    # Every class present, in equal numbers.
    assert torch.bincount(first.labels).tolist() == [4, 4, 3, 3, 3, 3, 3, 3, 3, 3]
