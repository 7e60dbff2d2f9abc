"""A phase change -> the Kubernetes Event the operator posts on the TrainingRun.

``kubectl describe tr`` then tells the run's story (Queued -> Running -> Uploading -> Completed) with
the cause of every step. Called by the operator's plan after ``build_status``, and by the local
runner, which records it in the run folder's events.jsonl. Pure: it builds the Event's content, the
caller sends it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from trainrun.spec.status import Phase, TrainingRunStatus
from trainrun.status.conditions import STALLED


@dataclass(frozen=True)
class PhaseEvent:
    """The type, reason and message of a Kubernetes Event."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def phase_event(previous: TrainingRunStatus | None, current: TrainingRunStatus) -> PhaseEvent | None:
    """The Event for a phase change (Warning for Failed or stalled runs), or None when the phase is unchanged."""
    before = previous.phase if previous is not None else None
    if current.phase is None or current.phase == before:
        return None
    stalled = any(condition.type == STALLED and condition.status == "True" for condition in current.conditions)
    event_type: Literal["Normal", "Warning"] = "Warning" if current.phase is Phase.FAILED or stalled else "Normal"
    change = f"{before.value} -> {current.phase.value}" if before is not None else current.phase.value
    message = f"{change}: {current.message}" if current.message else change
    return PhaseEvent(type=event_type, reason=current.reason or current.phase.value, message=message)
