"""The contract between the operator and the built-in trainer, bound to both sides' own code.

The trainer is its own package (it runs in the trainer image without the operator), so the two sides
cannot share one definition: these tests hold them together instead. Every expectation comes from the
operator's spec model (``trainrun.spec.model.Hyperparameters``), its renderer and its metric parser,
never from literals: a field added, renamed or re-defaulted on one side fails here until the other
side follows.
"""

from __future__ import annotations

import io
import typing
from pathlib import Path
from typing import Any

import annotated_types
import pytest
from trainrun.metrics import METRIC_PREFIX, MetricParser
from trainrun.metrics.progress import PROGRESS_PREFIX, ProgressLine, progress_line
from trainrun.render.replica import flag_name, hyperparameter_flags, trainrun_env
from trainrun.spec import load_training_run
from trainrun.spec.model import Hyperparameters
from trainrun_trainer import reporting
from trainrun_trainer.config import DATASET_NAMES, MODEL_NAMES, parse_config
from trainrun_trainer.errors import TrainerError

TYPED_FIELDS = [name for name in Hyperparameters.model_fields if name != "extra"]


def training_run(hyperparameters: dict[str, Any]) -> Any:
    return load_training_run(
        {
            "apiVersion": "trainrun.dev/v1alpha1",
            "kind": "TrainingRun",
            "metadata": {"name": "contract"},
            "spec": {"image": "trainer", "hyperparameters": hyperparameters},
        }
    )


def spec_minimum(name: str) -> tuple[float, bool] | None:
    """(minimum, inclusive) of a spec field, from its Field(ge=...) or Field(gt=...)."""
    for constraint in Hyperparameters.model_fields[name].metadata:
        if isinstance(constraint, annotated_types.Ge):
            return constraint.ge, True  # type: ignore[return-value]
        if isinstance(constraint, annotated_types.Gt):
            return constraint.gt, False  # type: ignore[return-value]
    return None


# Every typed field away from its default, so that a value lost on the way cannot pass as the default.
CHOSEN = {"model": "resnet34", "dataset": "imagefolder", "dataDir": "/data", "epochs": 7, "batchSize": 48,
          "learningRate": 0.02, "warmupEpochs": 2, "seed": 9, "patience": 0, "printFrequency": 3, "pretrained": True}


def test_the_chosen_values_cover_every_typed_hyperparameter() -> None:
    assert {Hyperparameters.model_fields[name].alias for name in TYPED_FIELDS} == set(CHOSEN)


@pytest.mark.parametrize("channel", ["flags", "environment"])
def test_what_the_operator_renders_the_trainer_reads_back_unchanged(channel: str) -> None:
    run = training_run(CHOSEN)
    if channel == "flags":
        config = parse_config(hyperparameter_flags(run), environ={})
    else:
        config = parse_config([], environ=trainrun_env(run))
    for name in TYPED_FIELDS:
        assert getattr(config, name) == _as_trainer_value(getattr(run.spec.hyperparameters, name)), name


def test_the_trainer_defaults_are_the_spec_defaults() -> None:
    config = parse_config([], environ={})
    spec_defaults = Hyperparameters()
    for name in TYPED_FIELDS:
        if name == "model":
            continue  # no default in either: chosen from the dataset (the next test)
        assert getattr(config, name) == _as_trainer_value(getattr(spec_defaults, name)), name
    assert spec_defaults.model is None


def test_the_trainer_accepts_exactly_the_models_and_datasets_the_spec_allows() -> None:
    assert set(MODEL_NAMES) == _literal_choices("model")
    assert set(DATASET_NAMES) == _literal_choices("dataset")


@pytest.mark.parametrize("name", [name for name in TYPED_FIELDS if spec_minimum(name) is not None])
def test_the_trainer_refuses_what_the_spec_refuses_below_its_minimum(name: str) -> None:
    minimum = spec_minimum(name)
    assert minimum is not None
    value, inclusive = minimum
    flag = f"--{flag_name(name)}"
    if inclusive:
        parse_config([f"{flag}={value}"], environ={})  # the spec's minimum itself is fine
        below = value - 1 if isinstance(value, int) else value / 2
    else:
        below = value
    with pytest.raises(TrainerError):
        parse_config([f"{flag}={below}"], environ={})


def test_a_metric_line_of_the_trainer_is_parsed_by_the_operator(tmp_path: Path) -> None:
    assert reporting.METRIC_PREFIX == METRIC_PREFIX
    stream = io.StringIO()
    reporting.Reporter(output_dir=tmp_path, enabled=True, stream=stream).metrics(
        epoch=2, step=40, samples={"train_loss": 0.5, "images_per_sec": 1234.5}
    )
    samples = MetricParser().parse(stream.getvalue().rstrip("\n"))
    assert {(sample.name, sample.value, sample.epoch, sample.step) for sample in samples} == {
        ("train_loss", 0.5, 2, 40),
        ("images_per_sec", 1234.5, 2, 40),
    }


def test_the_progress_line_of_the_trainer_is_read_by_the_operator(tmp_path: Path) -> None:
    assert reporting.PROGRESS_PREFIX == PROGRESS_PREFIX
    stream = io.StringIO()
    reporting.Reporter(output_dir=tmp_path, enabled=True, stream=stream).progress(
        step=120, total_steps=500, epoch=2, epochs=5
    )
    assert progress_line(stream.getvalue().rstrip("\n")) == ProgressLine(step=120, total_steps=500, epoch=2, epochs=5)


def test_the_stage_the_trainer_announces_is_read_by_the_operator(tmp_path: Path) -> None:
    stream = io.StringIO()
    reporting.Reporter(output_dir=tmp_path, enabled=True, stream=stream).stage("exporting model")
    assert progress_line(stream.getvalue().rstrip("\n")) == ProgressLine(stage="exporting model")


def _as_trainer_value(value: object) -> object:
    """The spec keeps dataDir as text; the trainer as a Path."""
    return Path(value) if isinstance(value, str) and value.startswith("/") else value


def _literal_choices(name: str) -> set[str]:
    found: set[str] = set()
    pending: list[Any] = [Hyperparameters.model_fields[name].annotation]
    while pending:
        annotation = pending.pop()
        if typing.get_origin(annotation) is typing.Literal:
            found.update(typing.get_args(annotation))
        else:
            pending.extend(typing.get_args(annotation))
    return found
