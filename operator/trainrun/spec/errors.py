"""Errors that say which field of a TrainingRun is wrong and how to fix it.

Raised by ``trainrun.spec.load`` and shown as they are by ``trainrun validate``, the local runner and
the operator's Stalled condition. Pure.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from trainrun.spec.config import OperatorConfig
from trainrun.spec.kubevalidation import RESOURCE_NAME_PATTERN
from trainrun.spec.model import DNS_LABEL_PATTERN, OBJECT_NAME_PATTERN, TrainingRun
from trainrun.spec.sweep import TrainingSweep


@dataclass(frozen=True)
class FieldProblem:
    """One thing wrong with one field."""

    field: str
    message: str

    def __str__(self) -> str:
        # A rule across fields names its field itself: "spec.distribution.nprocPerNode (4) exceeds ...".
        return self.message if self.message.startswith(f"{self.field} ") else f"{self.field}: {self.message}"


class InvalidTrainingRun(ValueError):
    """A TrainingRun that cannot run as written; ``problems`` lists every field at fault."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(problem) for problem in problems))


class InvalidTrainingSweep(InvalidTrainingRun):
    """A TrainingSweep that cannot run as written; ``problems`` lists every field at fault."""


# Hints appended to pydantic's messages, by its error type: what to do, not only what is wrong.
_FIXES = {
    "extra_forbidden": "unknown field (`trainrun crd` prints every field with its description)",
    "missing": "is required",
    "int_from_float": "must be a whole number, e.g. 8",
    "int_type": "must be a whole number, e.g. 8",
    "int_parsing": "must be a whole number, e.g. 8",
    "greater_than_equal": "is below the minimum",
}
# pydantic's "String should match pattern '^[a-z0-9]...'", in words.
_PATTERN_WORDS = {
    DNS_LABEL_PATTERN: "must be lower-case letters, digits and '-', starting and ending with a letter or digit",
    OBJECT_NAME_PATTERN: "must be a Kubernetes object name: lower-case letters, digits, '-' and '.', "
    "starting and ending with a letter or digit",
    RESOURCE_NAME_PATTERN: "must be an extended resource name: a domain, '/' and a name, e.g. amd.com/gpu",
}


def problems_from_validation_error(error: ValidationError, *, prefix: str = "") -> list[FieldProblem]:
    """Turn pydantic's errors into FieldProblems with dotted camelCase paths (``spec.resources.gpus``), a
    map's key in brackets (``spec.resources.nodeSelector["bad key!"]``)."""
    model = _VALIDATED_MODELS.get(error.title)
    problems = []
    for detail in error.errors():
        path = dotted_path(model, detail["loc"])
        message = detail["msg"].removeprefix("Value error, ")
        hint = _FIXES.get(detail["type"])
        if detail["type"] == "string_pattern_mismatch":
            message = _PATTERN_WORDS.get(str((detail.get("ctx") or {}).get("pattern")), message)
        if detail["type"] == "extra_forbidden":
            message = _FIXES["extra_forbidden"] if model is None else _unknown_field_message(model, detail["loc"])
        elif hint and hint not in message:
            message = hint if detail["type"] == "missing" else f"{message} ({hint})"
        if "input" in detail and detail["type"] not in ("missing", "extra_forbidden", "value_error") and not isinstance(
            detail["input"], (dict, list)
        ):
            message = f"{message}; got {detail['input']!r}"
        named = message.split(" ", 1)[0]
        if path and named.startswith(f"{path}."):
            path = named  # a rule of the object about one of its fields: name that field
        problems.append(FieldProblem(field=f"{prefix}{path}" if path else prefix.rstrip(".") or "<root>", message=message))
    return problems


# The models whose validation errors get a list of the fields they do have (by pydantic's error title).
_VALIDATED_MODELS: dict[str, type[BaseModel]] = {
    model.__name__: model for model in (TrainingRun, TrainingSweep, OperatorConfig)
}


def _unknown_field_message(model: type[BaseModel], location: Sequence[int | str]) -> str:
    """``unknown field; did you mean workers? spec.distribution has: workers, nprocPerNode``."""
    known = fields_at(model, location[:-1])
    if not known:
        return _FIXES["extra_forbidden"]
    where = ".".join(str(part) for part in location[:-1] if not isinstance(part, int)) or "the document"
    close = difflib.get_close_matches(str(location[-1]), known, n=1)
    guess = f"; did you mean {close[0]}?" if close else ":"
    return f"unknown field{guess} {where} has: {', '.join(known)}"


def dotted_path(model: type[BaseModel] | None, location: Sequence[int | str]) -> str:
    """pydantic's location as a path: ``spec.inputs[0].uri``; a key of a map in brackets and quotes, as
    ``spec.podMetadata.labels["team"]``, wherever the model says the part is a map's key (pydantic adds
    ``[key]`` after a key that is itself at fault)."""
    text = ""
    annotation: Any = model
    for index, part in enumerate(location):
        if part == "[key]" and index == len(location) - 1:
            break
        if isinstance(part, int):
            text += f"[{part}]"
        elif get_origin(_without_wrappers(annotation)) is dict:
            text += f"[{json.dumps(part, ensure_ascii=False)}]"
        else:
            text += f".{part}"
        annotation = _inside(annotation, part)
    return text.lstrip(".")


def fields_at(model: type[BaseModel], path: Sequence[int | str]) -> list[str]:
    """The fields, as written in YAML (camelCase), of the object at path inside model; [] when that is no model."""
    annotation: Any = model
    for part in path:
        annotation = _inside(annotation, part)
    annotation = _without_wrappers(annotation)
    if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return []
    return [info.alias or name for name, info in annotation.model_fields.items()]


def _inside(annotation: Any, part: int | str) -> Any:
    """The annotation of what ``part`` (a field, an index, a key) addresses in ``annotation``; None if unknown."""
    annotation = _without_wrappers(annotation)
    if get_origin(annotation) in (list, dict, tuple):
        return get_args(annotation)[-1]  # an item or a value: the key or index names no field
    if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return None
    field = next((info for name, info in annotation.model_fields.items() if part in (name, info.alias)), None)
    return field.annotation if field is not None else None


def _without_wrappers(annotation: Any) -> Any:
    """``Annotated[X, ...]``, ``X | None`` -> X."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin is Union or type(annotation).__name__ == "UnionType":
            members = [member for member in get_args(annotation) if member is not type(None)]
            annotation = members[0]
        else:
            return annotation
