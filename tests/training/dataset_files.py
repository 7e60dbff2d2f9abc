"""Writes tiny datasets in their real on-disk formats, for the trainer's data-loading tests.

FashionMNIST: the four uncompressed IDX files under FashionMNIST/raw/. CIFAR-10: the pickled
batches of cifar-10-batches-py/. ImageFolder: PNG files in <split>/<class>/ folders.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _idx_images(path: Path, images: np.ndarray) -> None:
    count, rows, columns = images.shape
    path.write_bytes(struct.pack(">IIII", 2051, count, rows, columns) + images.astype(np.uint8).tobytes())


def _idx_labels(path: Path, labels: np.ndarray) -> None:
    path.write_bytes(struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


def write_fashion_mnist(root: Path, *, train: int = 64, test: int = 32, seed: int = 0) -> None:
    """root/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte with random pictures."""
    rng = np.random.default_rng(seed)
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, count in (("train", train), ("t10k", test)):
        _idx_images(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)))
        _idx_labels(raw / f"{prefix}-labels-idx1-ubyte", np.arange(count) % 10)


def write_cifar10(root: Path, *, per_batch: int = 16, seed: int = 0) -> None:
    """root/cifar-10-batches-py/ with five small training batches, a test batch and the meta file."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{index}" for index in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {"batch_label": name, "labels": [int(label) for label in np.arange(per_batch) % 10],
                 "data": rng.integers(0, 256, (per_batch, 3 * 32 * 32), dtype=np.uint8),
                 "filenames": [f"{name}_{index}.png" for index in range(per_batch)]}
        with (folder / name).open("wb") as handle:
            pickle.dump(batch, handle)
    with (folder / "batches.meta").open("wb") as handle:
        pickle.dump({"label_names": CIFAR10_CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072}, handle)


def write_png(path: Path, *, colour: tuple[int, int, int], size: int = 20, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def write_image_folder(root: Path, *, train_classes: dict[str, tuple[int, int, int]],
                       val_classes: dict[str, tuple[int, int, int]] | None = None, per_class: int = 6) -> None:
    """root/train/<class>/*.png and root/val/<class>/*.png, each class a noisy plain colour."""
    for split, classes in (("train", train_classes), ("val", val_classes or train_classes)):
        for class_index, (name, colour) in enumerate(classes.items()):
            for index in range(per_class):
                write_png(root / split / name / f"{index:03d}.png", colour=colour,
                          seed=class_index * 1000 + index)
