"""The datasets (synthetic, FashionMNIST, CIFAR-10, ImageFolder) and the batches each rank trains on.

Called by `trainrun_trainer.training`. `load_dataset` reads or makes the data and fails with a
message naming the path it expected; `train_batches` / `validation_batches` give each rank its
share as uint8 image batches already on the training device.

Small datasets (synthetic, FashionMNIST, CIFAR-10) live in memory as one uint8 tensor and batches
are slices of it: no DataLoader, no per-image Python. Folders of image files go through a
DataLoader with worker processes that decode and augment.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Iterator, Sized
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import torch
import torchvision  # type: ignore[import-untyped]
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from torchvision import transforms

from trainrun_trainer.config import TrainConfig
from trainrun_trainer.errors import TrainerError
from trainrun_trainer.runtime import Runtime

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DEFAULT_IMAGE_SIZE = {"mlp": 28, "cnn": 32}
DEFAULT_LARGE_IMAGE_SIZE = 224
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{index}" for index in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_META_FILE = "batches.meta"
FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# In-memory data is copied to the GPU whole when it is at most this big.
MAX_BYTES_ON_GPU = 4 * 2**30


@dataclasses.dataclass(frozen=True)
class TensorSplit:
    """A split held in memory: uint8 images (N, C, H, W) and int64 labels (N)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


Split = TensorSplit | Dataset[Any]


def split_size(split: Split) -> int:
    """Images in a split (torch's Dataset type does not promise a length; ours all have one)."""
    return len(cast(Sized, split))


@dataclasses.dataclass(frozen=True)
class LoadedDataset:
    """Both splits, the class names (index = label) and the (C, H, W) shape of one image."""

    train: Split
    validation: Split
    class_names: list[str]
    input_shape: tuple[int, int, int]


def image_size_for(config: TrainConfig) -> int:
    """The square side the model sees when the data does not fix it (synthetic, imagefolder)."""
    if config.image_size is not None:
        return config.image_size
    return DEFAULT_IMAGE_SIZE.get(config.model, DEFAULT_LARGE_IMAGE_SIZE)


# --- synthetic ---------------------------------------------------------------------------------

# Each class is a mixture of this many patterns, each seen shifted by up to a fifth of the image side:
# a network must learn the patterns and their shifts, which takes the whole of a short run (a class
# that is one fixed pattern is learnt in a few steps and teaches nothing about a learning curve).
SYNTHETIC_PATTERNS_PER_CLASS = 6
SYNTHETIC_COARSE_SIDE = 6  # the patterns are random 6x6 grids blown up to the image size: smooth blobs
SYNTHETIC_MAX_SHIFT_FRACTION = 0.2
SYNTHETIC_SIGNAL = 30.0  # grey levels of pattern around mid-grey (128) ...
SYNTHETIC_NOISE = 30.0  # ... and of per-pixel Gaussian noise


def _shifted(patterns: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Each image of (N, C, H, W) rolled down by rows[n] and right by columns[n] pixels (wrapping round)."""
    count, channels, height, width = patterns.shape
    row_index = (torch.arange(height) - rows[:, None]) % height
    column_index = (torch.arange(width) - columns[:, None]) % width
    patterns = patterns.gather(2, row_index[:, None, :, None].expand(count, channels, height, width))
    return patterns.gather(3, column_index[:, None, None, :].expand(count, channels, height, width))


def _synthetic_split(*, count: int, patterns: torch.Tensor, num_classes: int,
                     generator: torch.Generator) -> TensorSplit:
    """`count` images: one of its class's patterns, shifted, plus noise. Learnable, but not at once."""
    labels = torch.arange(count) % num_classes
    labels = labels[torch.randperm(count, generator=generator)]
    images = torch.empty((count, *patterns.shape[1:]), dtype=torch.uint8)
    max_shift = int(SYNTHETIC_MAX_SHIFT_FRACTION * patterns.shape[-1])
    chunk = 256  # bounds the float temporaries for large images
    for start in range(0, count, chunk):
        chunk_labels = labels[start:start + chunk]
        size = len(chunk_labels)
        variant = torch.randint(0, SYNTHETIC_PATTERNS_PER_CLASS, (size,), generator=generator)
        chosen = patterns[chunk_labels * SYNTHETIC_PATTERNS_PER_CLASS + variant]
        rows, columns = torch.randint(-max_shift, max_shift + 1, (2, size), generator=generator)
        noise = torch.randn((size, *patterns.shape[1:]), generator=generator)
        pixels = 128 + SYNTHETIC_SIGNAL * _shifted(chosen, rows, columns) + SYNTHETIC_NOISE * noise
        images[start:start + chunk] = pixels.clamp_(0, 255).to(torch.uint8)
    return TensorSplit(images=images, labels=labels)


def _synthetic(config: TrainConfig) -> LoadedDataset:
    channels = 1 if config.model == "mlp" else 3
    size = image_size_for(config)
    generator = torch.Generator().manual_seed(config.seed)
    coarse = torch.randn((config.num_classes * SYNTHETIC_PATTERNS_PER_CLASS, channels, SYNTHETIC_COARSE_SIDE,
                          SYNTHETIC_COARSE_SIDE), generator=generator)
    patterns = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    train = _synthetic_split(count=config.synthetic_samples, patterns=patterns, num_classes=config.num_classes,
                             generator=generator)
    validation = _synthetic_split(count=max(config.synthetic_samples // 4, 1), patterns=patterns,
                                  num_classes=config.num_classes, generator=generator)
    return LoadedDataset(train=train, validation=validation,
                         class_names=[f"class_{index}" for index in range(config.num_classes)],
                         input_shape=(channels, size, size))


# --- FashionMNIST and CIFAR-10 ------------------------------------------------------------------

def _fashion_mnist(root: Path) -> LoadedDataset:
    raw = root / "FashionMNIST" / "raw"
    missing = [name for name in FASHION_MNIST_FILES if not (raw / name).is_file()]
    if missing:
        raise TrainerError(
            f"--dataset fashion-mnist: missing {', '.join(missing)} in {raw}. The trainer never "
            "downloads: put the four uncompressed IDX files of FashionMNIST there "
            "(torchvision.datasets.FashionMNIST(root, download=True) on a machine with internet "
            f"writes them), and pass the folder above FashionMNIST/ as --data-dir (now {root})"
        )
    splits = []
    for train in (True, False):
        dataset = torchvision.datasets.FashionMNIST(str(root), train=train, download=False)
        splits.append(TensorSplit(images=dataset.data.unsqueeze(1).contiguous(),
                                  labels=dataset.targets.to(torch.int64)))
    return LoadedDataset(train=splits[0], validation=splits[1], class_names=list(dataset.classes),
                         input_shape=(1, 28, 28))


def _read_cifar_batch(path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        # The official CIFAR-10 python format is a pickle; torchvision reads it the same way.
        return cast(dict[str, Any], pickle.load(handle, encoding="latin1"))


def _cifar_split(folder: Path, names: tuple[str, ...]) -> TensorSplit:
    batches = [_read_cifar_batch(folder / name) for name in names]
    images = np.concatenate([np.asarray(batch["data"], dtype=np.uint8) for batch in batches])
    labels = np.concatenate([np.asarray(batch["labels"], dtype=np.int64) for batch in batches])
    return TensorSplit(images=torch.from_numpy(images).reshape(-1, 3, 32, 32).contiguous(),
                       labels=torch.from_numpy(labels))


def _cifar10(root: Path) -> LoadedDataset:
    # Read directly rather than through torchvision.datasets.CIFAR10, whose MD5 check rejects
    # any copy but the complete official one (a subset for a quick run, for instance).
    folder = root / CIFAR10_FOLDER
    expected = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE, CIFAR10_META_FILE)
    missing = [name for name in expected if not (folder / name).is_file()]
    if missing:
        raise TrainerError(
            f"--dataset cifar10: missing {', '.join(missing)} in {folder}. The trainer never "
            "downloads: unpack cifar-10-python.tar.gz (the python version of CIFAR-10) so that "
            f"{CIFAR10_FOLDER}/ sits inside --data-dir (now {root})"
        )
    meta = _read_cifar_batch(folder / CIFAR10_META_FILE)
    return LoadedDataset(train=_cifar_split(folder, CIFAR10_TRAIN_FILES),
                         validation=_cifar_split(folder, (CIFAR10_TEST_FILE,)),
                         class_names=[str(name) for name in meta["label_names"]],
                         input_shape=(3, 32, 32))


# --- ImageFolder -------------------------------------------------------------------------------

def _image_folder_split(folder: Path, transform: transforms.Compose) -> torchvision.datasets.ImageFolder:
    if not folder.is_dir():
        raise TrainerError(
            f"--dataset imagefolder: {folder} does not exist; --data-dir must hold train/ and val/, "
            "each with one subfolder of images per class (train/cat/001.png, val/cat/002.png)"
        )
    class_folders = [entry for entry in folder.iterdir() if entry.is_dir()]
    loose_images = [entry.name for entry in folder.iterdir()
                    if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES]
    if not class_folders:
        found = (f"it holds {len(loose_images)} unlabelled images directly" if loose_images
                 else "it is empty")
        raise TrainerError(
            f"--dataset imagefolder: {folder} has no class subfolders ({found}). Images are "
            f"labelled by their folder: move them to {folder}/<class name>/<image>"
        )
    try:
        return torchvision.datasets.ImageFolder(str(folder), transform=transform)
    except FileNotFoundError:
        raise TrainerError(
            f"--dataset imagefolder: the class folders in {folder} "
            f"({', '.join(sorted(entry.name for entry in class_folders))}) contain no images; "
            f"put image files ({', '.join(IMAGE_SUFFIXES)}) in them"
        ) from None


def _image_folder(root: Path, config: TrainConfig) -> LoadedDataset:
    size = image_size_for(config)
    train_transform = transforms.Compose([
        transforms.RandomResizedCrop(size, scale=(0.35, 1.0), antialias=True),
        transforms.RandomHorizontalFlip(),
        transforms.PILToTensor(),
    ])
    validation_transform = transforms.Compose([
        transforms.Resize(round(size * 256 / 224), antialias=True),
        transforms.CenterCrop(size),
        transforms.PILToTensor(),
    ])
    train = _image_folder_split(root / "train", train_transform)
    validation = _image_folder_split(root / "val", validation_transform)
    if train.classes != validation.classes:
        only_train = sorted(set(train.classes) - set(validation.classes))
        only_validation = sorted(set(validation.classes) - set(train.classes))
        raise TrainerError(
            "--dataset imagefolder: train/ and val/ must have the same class folders; "
            f"only in train/: {only_train or 'none'}; only in val/: {only_validation or 'none'}. "
            "Add or rename folders so both sides list the same classes"
        )
    return LoadedDataset(train=train, validation=validation, class_names=list(train.classes),
                         input_shape=(3, size, size))


def load_dataset(config: TrainConfig) -> LoadedDataset:
    """Read (or for synthetic, make) both splits of the configured dataset."""
    if config.dataset == "synthetic":
        return _synthetic(config)
    assert config.data_dir is not None  # parse_config requires it for every other dataset
    if config.dataset == "fashion-mnist":
        return _fashion_mnist(config.data_dir)
    if config.dataset == "cifar10":
        return _cifar10(config.data_dir)
    return _image_folder(config.data_dir, config)


# --- batches -------------------------------------------------------------------------------------

class BatchSource(Protocol):
    """Yields (uint8 images, int64 labels) batches on the device, the same count on every rank."""

    def __len__(self) -> int: ...

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


def _steps(count: int, batch_size: int, *, drop_last: bool) -> int:
    if drop_last and count >= batch_size:
        return count // batch_size
    return -(-count // batch_size)


class TensorBatches:
    """Batches sliced from an in-memory split: a gather and a copy per step, nothing per image."""

    def __init__(self, split: TensorSplit, *, runtime: Runtime, batch_size: int,
                 sampler: DistributedSampler[int] | None, drop_last: bool) -> None:
        # On a GPU the whole split moves there once when it fits; else each batch is gathered on
        # the host and copied from pinned memory, overlapping the copy with compute.
        self.resident = runtime.device.type == "cpu" or split.images.nbytes <= MAX_BYTES_ON_GPU
        home = runtime.device if self.resident else torch.device("cpu")
        self.images, self.labels = split.images.to(home), split.labels.to(home)
        self.device = runtime.device
        self.batch_size = batch_size
        self.sampler = sampler
        # Validation: every rank takes every world_size-th image, no padding, so sums are exact.
        self.fixed_indices = torch.arange(runtime.rank, len(split), runtime.world_size)
        count = len(sampler) if sampler is not None else len(self.fixed_indices)
        self.step_count = _steps(count, batch_size, drop_last=drop_last)

    def __len__(self) -> int:
        return self.step_count

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
            indices = torch.tensor(list(iter(self.sampler)), dtype=torch.int64)
        else:
            indices = self.fixed_indices
        indices = indices.to(self.images.device)
        for step in range(self.step_count):
            chosen = indices[step * self.batch_size:(step + 1) * self.batch_size]
            images, labels = self.images.index_select(0, chosen), self.labels.index_select(0, chosen)
            if not self.resident:
                images = images.pin_memory().to(self.device, non_blocking=True)
                labels = labels.pin_memory().to(self.device, non_blocking=True)
            yield images, labels


class LoaderBatches:
    """Batches from a DataLoader whose workers decode and augment image files."""

    def __init__(self, loader: DataLoader[Any], *, runtime: Runtime, sampler: DistributedSampler[int] | None) -> None:
        self.loader = loader
        self.sampler = sampler
        self.device = runtime.device

    def __len__(self) -> int:
        return len(self.loader)

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        for images, labels in self.loader:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)


def _worker_count(runtime: Runtime) -> int:
    # On a GPU the CPU cores have nothing else to do; on a CPU they also run the model.
    if runtime.device.type == "cuda":
        return min(8, runtime.cpu_threads)
    return max(1, runtime.cpu_threads // 2)


def _loader(dataset: Dataset[Any], *, runtime: Runtime, batch_size: int, seed: int,
            sampler: DistributedSampler[int] | None, drop_last: bool) -> DataLoader[Any]:
    workers = _worker_count(runtime)
    generator = torch.Generator().manual_seed(seed + runtime.rank)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=runtime.device.type == "cuda", persistent_workers=workers > 0,
                      drop_last=drop_last, generator=generator)


def train_batches(split: Split, *, runtime: Runtime, batch_size: int, seed: int) -> BatchSource:
    """This rank's shuffled share of the training split; every rank gets the same step count."""
    sampler: DistributedSampler[int] = DistributedSampler(
        cast(Dataset[Any], split), num_replicas=runtime.world_size, rank=runtime.rank, shuffle=True, seed=seed)
    # Drop a ragged last batch: a batch of one breaks BatchNorm and wastes a step.
    drop_last = len(sampler) >= batch_size
    if isinstance(split, TensorSplit):
        return TensorBatches(split, runtime=runtime, batch_size=batch_size, sampler=sampler,
                             drop_last=drop_last)
    loader = _loader(split, runtime=runtime, batch_size=batch_size, seed=seed, sampler=sampler,
                     drop_last=drop_last)
    return LoaderBatches(loader, runtime=runtime, sampler=sampler)


def validation_batches(split: Split, *, runtime: Runtime, batch_size: int, seed: int) -> BatchSource:
    """This rank's share of the validation split, unpadded: summed over ranks it is the whole split."""
    if isinstance(split, TensorSplit):
        return TensorBatches(split, runtime=runtime, batch_size=batch_size, sampler=None, drop_last=False)
    share = Subset(split, range(runtime.rank, split_size(split), runtime.world_size))
    loader = _loader(share, runtime=runtime, batch_size=batch_size, seed=seed, sampler=None,
                     drop_last=False)
    return LoaderBatches(loader, runtime=runtime, sampler=None)
