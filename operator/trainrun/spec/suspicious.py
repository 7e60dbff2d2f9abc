"""Values Kubernetes accepts but that are almost surely not what was meant: warnings, not errors.

``memory: "1"`` is one byte (a quantity without a suffix counts bytes): the API server stores it and the
scheduler places it, then the container cannot start. Such a value is legal, so the run is not
refused; ``suspicious_values`` names the field and the likely fix, and ``trainrun validate`` prints it
as a warning. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from trainrun.spec.errors import FieldProblem
from trainrun.spec.model import TrainingRun
from trainrun.spec.quantity import parse_quantity

MEBIBYTE = 2**20


@dataclass(frozen=True)
class _Least:
    """The least amount of bytes that makes sense for a field, and what it is for."""

    field: str
    value: int | str | None
    least: int  # bytes
    least_text: str
    what: str


def suspicious_values(run: TrainingRun) -> list[FieldProblem]:
    """Every legal but suspicious value of the run, with its field and what was probably meant."""
    spec = run.spec
    checks = [
        _Least("spec.resources.memory", spec.resources.memory, 32 * MEBIBYTE, "32Mi", "per replica, too little to start a training process"),
        _Least("spec.output.volume.size", spec.output.volume.size, MEBIBYTE, "1Mi", "for the output volume, too little for a model"),
    ]
    return [problem for check in checks if (problem := _too_small(check)) is not None]


def _too_small(check: _Least) -> FieldProblem | None:
    if check.value is None:
        return None
    amount = parse_quantity(str(check.value))
    if amount is None or amount.compare(Fraction(check.least)) >= 0:
        return None
    text = str(check.value)
    if text.isdigit():
        # The usual slip: a number of gibibytes or mebibytes written without its suffix.
        unit = "byte" if text == "1" else "bytes"
        return FieldProblem(
            check.field,
            f"{text!r} is {text} {unit}, less than {check.least_text} {check.what}: a quantity without a suffix "
            f"counts bytes; did you mean {text}Gi or {text}Mi?",
        )
    return FieldProblem(check.field, f"{text!r} is less than {check.least_text} {check.what}")
