"""The TrainingRun API: parse a document, apply defaults, validate it against the operator's pools.

The one entry point every caller uses (operator, ``trainrun validate``, ``trainrun render``, the local
runner), so a file is judged the same way everywhere. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from trainrun.spec.config import OperatorConfig, Pool, parse_operator_config
from trainrun.spec.errors import FieldProblem, InvalidTrainingRun, problems_from_validation_error
from trainrun.spec.model import API_VERSION, KIND, TrainingRun, TrainingRunSpec


def load_training_run(document: Mapping[str, Any]) -> TrainingRun:
    """Parse a TrainingRun document (apiVersion, kind, metadata, spec) with defaults applied."""
    problems: list[FieldProblem] = []
    if not isinstance(document, Mapping):
        raise InvalidTrainingRun([FieldProblem("<root>", "a TrainingRun must be a YAML mapping with apiVersion, kind, metadata and spec")])
    if document.get("apiVersion") != API_VERSION:
        problems.append(FieldProblem("apiVersion", f"must be {API_VERSION}; got {document.get('apiVersion')!r}"))
    if document.get("kind") != KIND:
        problems.append(FieldProblem("kind", f"must be {KIND}; got {document.get('kind')!r}"))
    if problems:
        raise InvalidTrainingRun(problems)
    body = {key: document[key] for key in ("apiVersion", "kind", "metadata", "spec") if key in document}
    try:
        return TrainingRun.model_validate(body)
    except ValidationError as error:
        raise InvalidTrainingRun(problems_from_validation_error(error)) from None


def problems_with_config(run: TrainingRun, config: OperatorConfig) -> list[FieldProblem]:
    """What stops this run from being placed with this operator configuration (unknown pool, too many GPUs)."""
    resources = run.spec.resources
    pool_name, pool = config.pool_named(resources.pool)
    if resources.pool is not None and pool is None:
        known = ", ".join(sorted(config.pools)) or "none are configured"
        return [
            FieldProblem(
                "spec.resources.pool",
                f"unknown pool {resources.pool!r}; the operator knows: {known} "
                f"(ConfigMap trainrun-operator-config)",
            )
        ]
    if pool is None or pool.gpus_per_node is None:
        return []
    if resources.gpus > pool.gpus_per_node:
        return [
            FieldProblem(
                "spec.resources.gpus",
                f"{resources.gpus} GPUs per replica, but nodes of pool {pool_name!r} have {pool.gpus_per_node}; "
                f"ask for at most {pool.gpus_per_node} and add workers instead",
            )
        ]
    return []


def validate_training_run(document: Mapping[str, Any], config: OperatorConfig | None = None) -> TrainingRun:
    """Parse and check a TrainingRun; raise InvalidTrainingRun naming every field at fault."""
    run = load_training_run(document)
    if config is not None:
        problems = problems_with_config(run, config)
        if problems:
            raise InvalidTrainingRun(problems)
    return run


__all__ = [
    "FieldProblem",
    "InvalidTrainingRun",
    "OperatorConfig",
    "Pool",
    "TrainingRun",
    "TrainingRunSpec",
    "load_training_run",
    "parse_operator_config",
    "problems_with_config",
    "validate_training_run",
]
