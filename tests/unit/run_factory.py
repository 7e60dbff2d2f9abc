"""Builds TrainingRun documents for the unit tests: a minimal valid run, changed field by field."""

from __future__ import annotations

import copy
from typing import Any

from trainrun.spec import OperatorConfig, TrainingRun, load_training_run, parse_operator_config

BASE_DOCUMENT: dict[str, Any] = {
    "apiVersion": "trainrun.dev/v1alpha1",
    "kind": "TrainingRun",
    "metadata": {"name": "mnist", "namespace": "ml", "uid": "1234-abcd", "generation": 3},
    "spec": {"image": "ghcr.io/trainrun/trainer:0.1.0"},
}

POOLS: dict[str, Any] = {
    "defaultPool": "cpu",
    "pools": {
        "a100": {
            "nodeSelector": {"trainrun.dev/pool": "a100"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "gpusPerNode": 8,
        },
        "mi300": {"nodeSelector": {"trainrun.dev/pool": "mi300"}, "gpuResource": "amd.com/gpu", "gpusPerNode": 8},
        "cpu": {"nodeSelector": {"trainrun.dev/pool": "cpu"}, "gpusPerNode": 0},
    },
}


def document(**spec: Any) -> dict[str, Any]:
    """The base document with these spec fields set (camelCase keys, as in YAML)."""
    body = copy.deepcopy(BASE_DOCUMENT)
    body["spec"].update(spec)
    return body


def training_run(**spec: Any) -> TrainingRun:
    return load_training_run(document(**spec))


def pools() -> OperatorConfig:
    return parse_operator_config(copy.deepcopy(POOLS))
