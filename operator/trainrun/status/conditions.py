"""A ``Verdict`` -> the kstatus conditions Ready, Reconciling and Stalled.

These three are what kstatus (``kubectl wait``, kpt, Config Sync), Argo CD and Flux read to tell
"in progress", "current" and "failed" apart:

  phase                                 Ready   Reconciling   Stalled
  Queued, Preparing, Running, Uploading False   True          False
  ... with a stalling cause             False   False         True
  Completed                             True    False         False
  Failed                                False   False         True
  Suspended, Cancelled                  False   False         False

Every condition carries the run's generation, and keeps its lastTransitionTime while its status does
not change. Called by ``trainrun.status.compute_status`` (operator reconcile, local runner). Pure.
"""

from __future__ import annotations

from collections.abc import Sequence

from trainrun.spec.status import Condition, Phase
from trainrun.status.phase import Verdict

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
ACTIVE_PHASES = frozenset({Phase.QUEUED, Phase.PREPARING, Phase.RUNNING, Phase.UPLOADING})


def pending_changes_note(pending_changes: Sequence[str], *, finished: bool) -> str:
    """What the Reconciling message says about spec changes the running job could not take."""
    if not pending_changes:
        return ""
    paths = ", ".join(pending_changes)
    if finished:
        return f"spec changes not applied because the run has finished: {paths}"
    return f"spec changes waiting for the replicas to stop (suspend, then resume): {paths}"


def kstatus_conditions(
    *,
    verdict: Verdict,
    previous: Sequence[Condition],
    generation: int | None,
    now: str,
    pending_changes: Sequence[str],
) -> list[Condition]:
    """Ready, Reconciling and Stalled for this verdict."""
    stalled = verdict.stalled or verdict.phase is Phase.FAILED
    reconciling = verdict.phase in ACTIVE_PHASES and not stalled
    note = pending_changes_note(pending_changes, finished=verdict.phase.finished)
    reconciling_message = f"{verdict.message}; {note}" if note and verdict.message else (note or verdict.message)
    earlier = {condition.type: condition for condition in previous}

    def condition(condition_type: str, status: bool, message: str) -> Condition:
        text = "True" if status else "False"
        before = earlier.get(condition_type)
        kept = before.last_transition_time if before is not None and before.status == text else None
        return Condition(
            type=condition_type,
            status=text,
            reason=verdict.reason,
            message=message,
            observed_generation=generation,
            last_transition_time=kept or now,
        )

    return [
        condition(READY, verdict.phase is Phase.COMPLETED, verdict.message),
        condition(RECONCILING, reconciling, reconciling_message),
        condition(STALLED, stalled, verdict.message),
    ]
