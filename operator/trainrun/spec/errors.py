"""Errors that say which field of a TrainingRun is wrong and how to fix it.

Raised by ``trainrun.spec.load`` and shown as they are by ``trainrun validate``, the local runner and
the operator's Stalled condition. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError


@dataclass(frozen=True)
class FieldProblem:
    """One thing wrong with one field."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class InvalidTrainingRun(ValueError):
    """A TrainingRun that cannot run as written; ``problems`` lists every field at fault."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(problem) for problem in problems))


# Hints appended to pydantic's messages, by its error type: what to do, not only what is wrong.
_FIXES = {
    "extra_forbidden": "unknown field: check its spelling against `kubectl explain trainingrun.spec` "
    "or `trainrun validate --help`",
    "missing": "is required",
    "int_from_float": "must be a whole number, e.g. 8",
    "int_parsing": "must be a whole number, e.g. 8",
    "greater_than_equal": "is below the minimum",
}


def problems_from_validation_error(error: ValidationError, *, prefix: str = "") -> list[FieldProblem]:
    """Turn pydantic's errors into FieldProblems with dotted camelCase paths (``spec.resources.gpus``)."""
    problems = []
    for detail in error.errors():
        path = ".".join(str(part) if not isinstance(part, int) else f"[{part}]" for part in detail["loc"])
        path = path.replace(".[", "[")
        message = detail["msg"].removeprefix("Value error, ")
        hint = _FIXES.get(detail["type"])
        if hint and hint not in message:
            message = hint if detail["type"] in ("extra_forbidden", "missing") else f"{message} ({hint})"
        if "input" in detail and detail["type"] not in ("missing", "extra_forbidden", "value_error") and not isinstance(
            detail["input"], (dict, list)
        ):
            message = f"{message}; got {detail['input']!r}"
        problems.append(FieldProblem(field=f"{prefix}{path}" if path else prefix.rstrip(".") or "<root>", message=message))
    return problems
