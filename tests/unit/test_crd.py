"""The committed CRD is exactly what the spec models generate, and it describes every field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from trainrun.spec.crd import training_run_crd

CRD_FILE = Path(__file__).parents[2] / "crds" / "trainrun.dev_trainingruns.yaml"


def schema() -> dict[str, Any]:
    return training_run_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def test_committed_crd_matches_the_models() -> None:
    committed = yaml.safe_load(CRD_FILE.read_text())
    assert committed == training_run_crd(), "regenerate it: trainrun crd > crds/trainrun.dev_trainingruns.yaml"


def walk(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, child in node.get("properties", {}).items():
        found.extend(walk(child, f"{path}.{name}"))
    if isinstance(node.get("items"), dict):
        found.extend(walk(node["items"], f"{path}[]"))
    if isinstance(node.get("additionalProperties"), dict):
        found.extend(walk(node["additionalProperties"], f"{path}{{}}"))
    return found


def test_every_spec_and_status_field_has_a_description_and_a_type() -> None:
    for path, node in walk(schema()["properties"]["spec"], "spec") + walk(schema()["properties"]["status"], "status"):
        if path.endswith("[]") or path.endswith("{}"):
            continue
        assert node.get("description"), f"{path} has no description (kubectl explain shows nothing)"
        assert node.get("type") or node.get("x-kubernetes-int-or-string"), f"{path} has no type"


def test_structural_schema_has_no_json_schema_leftovers() -> None:
    text = yaml.safe_dump(training_run_crd())
    for keyword in ("$ref", "anyOf", "$defs", "title:", "additionalProperties: false"):
        assert keyword not in text


def test_defaults_enums_minimums_and_cel_rules() -> None:
    spec = schema()["properties"]["spec"]
    hyper = spec["properties"]["hyperparameters"]["properties"]
    assert hyper["epochs"]["minimum"] == 1 and "default" not in hyper["epochs"]  # see test_program_env
    assert hyper["learningRate"]["exclusiveMinimum"] is True and hyper["learningRate"]["minimum"] == 0
    assert spec["properties"]["distribution"]["properties"]["workers"]["minimum"] == 0
    assert spec["properties"]["runPolicy"]["properties"]["restartPolicy"]["enum"] == ["OnFailure", "Never", "ExitCode", "Always"]
    assert spec["required"] == ["image"]
    assert spec["properties"]["resources"]["properties"]["cpu"]["x-kubernetes-int-or-string"] is True
    assert len(spec["x-kubernetes-validations"]) == 3
    assert spec["properties"]["env"]["items"]["properties"]["valueFrom"]["x-kubernetes-preserve-unknown-fields"] is True


def test_printer_columns_and_names() -> None:
    crd = training_run_crd()
    assert crd["spec"]["names"]["shortNames"] == ["tr"]
    columns = [column["name"] for column in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Phase", "Pool", "Workers", "GPUs", "Metric", "Progress", "ETA", "Age", "Job", "Model", "Version", "Message"]
    assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}
