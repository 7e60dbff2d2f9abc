"""``--set PATH=VALUE`` overrides of a TrainingRun file (``trainrun.client.documents.apply_overrides``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from trainrun.cli.main import app
from trainrun.client.documents import DocumentError, apply_overrides
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "manifests" / "samples" / "quickstart.yaml"


def document() -> dict[str, Any]:
    return {
        "apiVersion": "trainrun.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": "run"},
        "spec": {"hyperparameters": {"epochs": 3}, "inputs": [{"name": "data", "uri": "s3://a/data"}]},
    }


def test_paths_start_under_spec_unless_they_name_a_top_level_key() -> None:
    original = document()
    result = apply_overrides(
        original,
        [
            "hyperparameters.epochs=1",
            "spec.distribution.workers=2",
            "metadata.name=run-2",
            r"metadata.labels.trainrun\.dev/team=vision",
        ],
    )
    assert result["spec"]["hyperparameters"]["epochs"] == 1
    assert result["spec"]["distribution"] == {"workers": 2}
    assert result["metadata"] == {"name": "run-2", "labels": {"trainrun.dev/team": "vision"}}
    assert original == document()  # the input is not changed


def test_values_are_yaml_and_an_empty_value_removes_the_field() -> None:
    result = apply_overrides(
        document(),
        [
            "hyperparameters.learningRate=0.001",
            "hyperparameters.amp=true",
            "hyperparameters.extra.tags=[a, b]",
            "env[0].value=a=b",  # only the first '=' splits
            "env[0].name=MODE",
            "hyperparameters.epochs=",
        ],
    )
    hyperparameters = result["spec"]["hyperparameters"]
    assert hyperparameters["learningRate"] == 0.001 and hyperparameters["amp"] is True
    assert hyperparameters["extra"] == {"tags": ["a", "b"]}
    assert "epochs" not in hyperparameters
    assert result["spec"]["env"] == [{"value": "a=b", "name": "MODE"}]


def test_list_items_by_index_or_appended() -> None:
    result = apply_overrides(document(), ["inputs[0].uri=s3://b/data", "inputs.1.name=more", "inputs[1].uri=s3://c"])
    assert result["spec"]["inputs"] == [{"name": "data", "uri": "s3://b/data"}, {"name": "more", "uri": "s3://c"}]
    assert apply_overrides(document(), ["inputs[0]="])["spec"]["inputs"] == []


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("hyperparameters.epochs", "write PATH=VALUE"),
        ("=1", "write PATH=VALUE"),
        ("a..b=1", "write PATH=VALUE"),
        ("inputs[3].uri=s3://x", "spec.inputs.3 is not an item of a list (1 items there)"),
        ("hyperparameters.epochs.max=1", "spec.hyperparameters.epochs holds 3, not a mapping with 'max' in it"),
    ],
)
def test_bad_overrides_say_what_is_wrong(override: str, words: str) -> None:
    with pytest.raises(DocumentError) as raised:
        apply_overrides(document(), [override])
    assert f"--set {override!r}" in str(raised.value) and words in str(raised.value)


def test_render_and_validate_take_set() -> None:
    runner = CliRunner()
    rendered = runner.invoke(app, ["render", str(QUICKSTART), "--set", "distribution.workers=3"])
    assert rendered.exit_code == 0, rendered.output
    job = next(yaml.safe_load_all(rendered.output.split("\n", 1)[1]))
    assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 3
    # What --set produces is validated like the file itself: the field is named.
    refused = runner.invoke(app, ["validate", str(QUICKSTART), "--set", "distribution.workers=-1"])
    assert refused.exit_code == 1
    assert "spec.distribution.workers" in refused.output
    malformed = runner.invoke(app, ["render", str(QUICKSTART), "--set", "workers"])
    assert malformed.exit_code == 1 and "error: --set 'workers': write PATH=VALUE" in malformed.output


def test_a_field_that_holds_a_string_keeps_a_string() -> None:
    base = document()
    base["spec"]["hyperparameters"]["extra"] = {"steps": "200"}
    result = apply_overrides(base, ["hyperparameters.extra.steps=120", "inputs[0].uri=123"])
    assert result["spec"]["hyperparameters"]["extra"]["steps"] == "120"
    assert result["spec"]["inputs"][0]["uri"] == "123"
    assert apply_overrides(base, ["hyperparameters.epochs=7"])["spec"]["hyperparameters"]["epochs"] == 7
