"""Command-line flags and environment variables -> a validated `TrainConfig`.

Called by `trainrun_trainer.__main__.main` (and by tests). The flags, their env fallbacks
and defaults follow the contract with the operator: the operator appends flags after the
user's own args, and each flag falls back to its `TRAINRUN_*` variable when absent. This
package runs without the operator's, so the two cannot share one definition:
tests/training/test_operator_contract.py binds these flags, defaults, choices and minimums to
the operator's spec model (trainrun.spec.model.Hyperparameters).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trainrun_trainer.errors import TrainerError

MODEL_NAMES = ("mlp", "cnn", "resnet18", "resnet34", "resnet50", "densenet121")
DATASET_NAMES = ("synthetic", "fashion-mnist", "cifar10", "imagefolder")
DEFAULT_MODEL_FOR_DATASET = {"fashion-mnist": "mlp", "cifar10": "cnn"}
FALLBACK_MODEL = "resnet18"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs to know, after defaults and validation."""

    model: str
    dataset: str
    data_dir: Path | None
    epochs: int
    batch_size: int
    learning_rate: float
    warmup_epochs: int
    seed: int
    patience: int
    print_frequency: int
    pretrained: bool
    compile: bool
    image_size: int | None
    num_classes: int
    synthetic_samples: int
    output_dir: Path
    checkpoint_dir: Path
    serving_name: str  # the Triton model's name: the run's (TRAINRUN_RUN_NAME), else the model's

    def as_json(self) -> dict[str, Any]:
        """The hyperparameters as JSON-friendly values (for run.json)."""
        values = dataclasses.asdict(self)
        return {key: str(value) if isinstance(value, Path) else value for key, value in values.items()}


@dataclasses.dataclass(frozen=True)
class _Option:
    """One flag: its env fallback, how to parse the env string, its default and its check."""

    flag: str
    env: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    choices: Sequence[str] | None = None
    minimum: float | None = None


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


_OPTIONS: tuple[_Option, ...] = (
    _Option("--model", "TRAINRUN_MODEL", str, None,
            "network to train (default: mlp for fashion-mnist, cnn for cifar10, else resnet18)",
            choices=MODEL_NAMES),
    _Option("--dataset", "TRAINRUN_DATASET", str, "synthetic", "where the images come from",
            choices=DATASET_NAMES),
    _Option("--data-dir", "TRAINRUN_DATA_DIR", str, None,
            "dataset root (imagefolder: holds train/ and val/)"),
    _Option("--epochs", "TRAINRUN_EPOCHS", int, 5, "passes over the training data", minimum=1),
    _Option("--batch-size", "TRAINRUN_BATCH_SIZE", int, 16, "images per step and per process",
            minimum=1),
    _Option("--learning-rate", "TRAINRUN_LEARNING_RATE", float, 0.001,
            "peak learning rate for one process; multiplied by the world size", minimum=1e-12),
    _Option("--warmup-epochs", "TRAINRUN_WARMUP_EPOCHS", int, 0,
            "epochs of linear warm-up before the polynomial decay", minimum=0),
    _Option("--seed", "TRAINRUN_SEED", int, 1, "random seed (model init, data order, synthetic data)",
            minimum=0),
    _Option("--patience", "TRAINRUN_PATIENCE", int, 3,
            "stop after this many epochs without a lower validation loss (0: never stop early)", minimum=0),
    _Option("--print-frequency", "TRAINRUN_PRINT_FREQUENCY", int, 10,
            "log training metrics every N steps", minimum=1),
    _Option("--image-size", "TRAINRUN_IMAGE_SIZE", int, None,
            "side of the square input for imagefolder and synthetic data "
            "(default: 28 for mlp, 32 for cnn, 224 otherwise)", minimum=8),
    _Option("--num-classes", "TRAINRUN_NUM_CLASSES", int, 10, "classes of synthetic data", minimum=2),
    _Option("--synthetic-samples", "TRAINRUN_SYNTHETIC_SAMPLES", int, 1024,
            "training images of synthetic data (validation gets a quarter)", minimum=4),
)
_BOOLEAN_OPTIONS: tuple[_Option, ...] = (
    _Option("--pretrained", "TRAINRUN_PRETRAINED", _parse_bool, False,
            "start from ImageNet weights found in the local torch hub cache (never downloaded)"),
    _Option("--compile", "TRAINRUN_COMPILE", _parse_bool, False, "wrap the model in torch.compile"),
)


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _env_default(option: _Option, environ: Mapping[str, str]) -> Any:
    """The option's value from its env variable, or its default; a bad value names the variable.
    An empty variable counts as unset (manifests often render absent values as "")."""
    if not environ.get(option.env):
        return option.default
    raw = environ[option.env]
    try:
        return option.parse(raw)
    except ValueError as error:
        raise TrainerError(f"{option.env}={raw!r} is not valid for {option.flag}: {error}") from None


def _build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainrun_trainer",
        description="Train an image classifier with DistributedDataParallel (run it under torchrun).",
        allow_abbrev=False,
    )
    for option in _OPTIONS:
        parser.add_argument(option.flag, dest=_dest(option.flag), type=option.parse,
                            default=_env_default(option, environ), help=option.help)
    for option in _BOOLEAN_OPTIONS:
        parser.add_argument(option.flag, dest=_dest(option.flag), action=argparse.BooleanOptionalAction,
                            default=_env_default(option, environ), help=option.help)
    return parser


def _reject_unknown(unknown: list[str]) -> None:
    if not unknown:
        return
    known = [option.flag for option in _OPTIONS + _BOOLEAN_OPTIONS]
    known += [f"--no-{option.flag[2:]}" for option in _BOOLEAN_OPTIONS]
    problems = []
    for argument in unknown:
        name = argument.split("=", 1)[0]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        problems.append(f"{argument!r}{hint}")
    raise TrainerError(
        "unknown argument(s) " + ", ".join(problems)
        + ". Known flags: " + " ".join(sorted(known)) + "."
    )


def _check_option(option: _Option, value: Any) -> None:
    if value is None:
        return
    if option.choices is not None and value not in option.choices:
        raise TrainerError(
            f"{option.flag} {value!r} is not supported (env {option.env}); "
            f"choose one of: {', '.join(option.choices)}"
        )
    if option.minimum is not None and value < option.minimum:
        raise TrainerError(
            f"{option.flag} must be at least {option.minimum:g}, got {value} (env {option.env})"
        )


def parse_config(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> TrainConfig:
    """Turn command-line arguments plus env fallbacks into a checked `TrainConfig`.

    Raises TrainerError naming the flag (and its env variable) for anything invalid.
    """
    env = os.environ if environ is None else environ
    parser = _build_parser(env)
    # A malformed value (--epochs abc) or --help ends here through argparse's own exit.
    namespace, unknown = parser.parse_known_args(list(argv))
    _reject_unknown(unknown)
    values = vars(namespace)
    for option in _OPTIONS:
        _check_option(option, values[_dest(option.flag)])

    dataset = values["dataset"]
    model = values["model"] or DEFAULT_MODEL_FOR_DATASET.get(dataset, FALLBACK_MODEL)
    data_dir = Path(values["data_dir"]) if values["data_dir"] else None
    if dataset != "synthetic" and data_dir is None:
        raise TrainerError(
            f"--dataset {dataset} needs --data-dir (env TRAINRUN_DATA_DIR) pointing at the dataset root"
        )
    if values["pretrained"] and model in ("mlp", "cnn"):
        raise TrainerError(
            f"--pretrained has no weights for --model {model}; use one of resnet18, resnet34, "
            "resnet50, densenet121, or drop --pretrained"
        )
    output_dir = Path(env.get("OUTPUT_DIR") or "outputs")
    checkpoint_dir = Path(env.get("TRAINRUN_CHECKPOINT_DIR") or output_dir / "checkpoints")
    return TrainConfig(
        model=model,
        dataset=dataset,
        data_dir=data_dir,
        epochs=values["epochs"],
        batch_size=values["batch_size"],
        learning_rate=values["learning_rate"],
        warmup_epochs=values["warmup_epochs"],
        seed=values["seed"],
        patience=values["patience"],
        print_frequency=values["print_frequency"],
        pretrained=values["pretrained"],
        compile=values["compile"],
        image_size=values["image_size"],
        num_classes=values["num_classes"],
        synthetic_samples=values["synthetic_samples"],
        output_dir=output_dir,
        checkpoint_dir=checkpoint_dir,
        serving_name=env.get("TRAINRUN_RUN_NAME") or model,
    )
