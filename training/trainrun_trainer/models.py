"""The networks the trainer offers, wrapped so they take plain [0, 1] images.

Called by `trainrun_trainer.training` (to build the model) and by tests/bench/bench_training.py
(the same network under the baseline loop). `build_classifier` returns an `ImageClassifier`:
input normalisation and channel matching live inside the model, so the exported TorchScript
file needs no preprocessing code beyond "image -> float tensor in [0, 1]".
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision  # type: ignore[import-untyped]
from torch import nn

from trainrun_trainer.errors import TrainerError

TORCHVISION_MODELS = ("resnet18", "resnet34", "resnet50", "densenet121")
# torchvision's ImageNet statistics: what pretrained weights expect, and a fine default otherwise.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageClassifier(nn.Module):
    """Normalises [0, 1] images, matches the channel count the network expects, classifies.

    `network` is the part saved as model.pt, so its state dict loads straight into the
    torchvision model of the same name.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, network: nn.Module, *, mean: tuple[float, ...], std: tuple[float, ...],
                 input_channels: int, network_channels: int, num_classes: int) -> None:
        super().__init__()
        self.network = network
        self.num_classes = num_classes
        self.network_channels = network_channels
        self.repeat_grey = input_channels != network_channels
        # Not persistent: they are constants of the recipe, not learned state.
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = (images - self.mean) / self.std
        if self.repeat_grey:
            # Grey images into an RGB network: the same plane three times.
            images = images.expand(-1, self.network_channels, -1, -1)
        logits: torch.Tensor = self.network(images)
        return logits


def _mlp(*, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Two hidden layers over the flattened image: the classic FashionMNIST baseline."""
    channels, height, width = input_shape
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(channels * height * width, 256),
        nn.ReLU(inplace=True),
        nn.Linear(256, 128),
        nn.ReLU(inplace=True),
        nn.Linear(128, num_classes),
    )


def _cnn(*, input_channels: int, num_classes: int) -> nn.Module:
    """A small convolutional net for 32x32 images (CIFAR-10 sized); any size works thanks
    to the adaptive pooling before the classifier."""
    return nn.Sequential(
        nn.Conv2d(input_channels, 8, kernel_size=5),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, kernel_size=5),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(5),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 96),
        nn.ReLU(inplace=True),
        nn.Linear(96, num_classes),
    )


def pretrained_weights_path(model_name: str) -> tuple[Path, torchvision.models.WeightsEnum]:
    """Where torch hub keeps the ImageNet weights of `model_name`, and which weights those are.

    Prefers the first weights of the model's list already on disk, else names the default.
    """
    weights_enum = torchvision.models.get_model_weights(model_name)
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    candidates = [weights_enum.DEFAULT, *weights_enum]
    for weights in candidates:
        path = checkpoints / Path(weights.url).name
        if path.is_file():
            return path, weights
    return checkpoints / Path(weights_enum.DEFAULT.url).name, weights_enum.DEFAULT


def _torchvision_network(name: str, *, num_classes: int, pretrained: bool) -> nn.Module:
    network: nn.Module
    if not pretrained:
        network = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        return network
    path, weights = pretrained_weights_path(name)
    if not path.is_file():
        raise TrainerError(
            f"--pretrained needs the {name} ImageNet weights at {path}, and the trainer never "
            f"downloads: copy {Path(weights.url).name} (from {weights.url}) into "
            f"{path.parent} (TORCH_HOME moves that cache), or drop --pretrained"
        )
    # The file is on disk, so torchvision loads it from the hub cache without a download.
    network = torchvision.models.get_model(name, weights=weights)
    # Transfer learning: keep the features, give the classifier head our number of classes.
    if isinstance(network, torchvision.models.ResNet):
        network.fc = nn.Linear(network.fc.in_features, num_classes)
    elif isinstance(network, torchvision.models.DenseNet):
        network.classifier = nn.Linear(network.classifier.in_features, num_classes)
    return network


def build_classifier(name: str, *, input_shape: tuple[int, int, int], num_classes: int,
                     pretrained: bool = False) -> ImageClassifier:
    """The network `name` for images of `input_shape` (C, H, W), wrapped in `ImageClassifier`."""
    channels = input_shape[0]
    if name == "mlp":
        network, network_channels = _mlp(input_shape=input_shape, num_classes=num_classes), channels
    elif name == "cnn":
        network, network_channels = _cnn(input_channels=channels, num_classes=num_classes), channels
    elif name in TORCHVISION_MODELS:
        network = _torchvision_network(name, num_classes=num_classes, pretrained=pretrained)
        network_channels = 3
    else:
        raise TrainerError(f"unknown model {name!r}; choose one of mlp, cnn, {', '.join(TORCHVISION_MODELS)}")
    if channels not in (1, network_channels):
        raise TrainerError(
            f"--model {name} takes {network_channels}-channel images but the data has {channels} channels"
        )
    mean = IMAGENET_MEAN if channels == 3 else (sum(IMAGENET_MEAN) / 3,)
    std = IMAGENET_STD if channels == 3 else (sum(IMAGENET_STD) / 3,)
    return ImageClassifier(network, mean=mean, std=std, input_channels=channels,
                           network_channels=network_channels, num_classes=num_classes)


def uses_convolutions(name: str) -> bool:
    """Whether channels_last memory layout can speed the model up (not for the MLP)."""
    return name != "mlp"
