"""A ``Verdict`` -> the kstatus conditions Ready, Reconciling and Stalled.

These three are what kstatus (``kubectl wait``, kpt, Config Sync, Flux's health checks) and Argo CD
read to tell "in progress", "current" and "failed" apart. kstatus reads Reconciling=True as
InProgress, Stalled=True as Failed, then Ready: True is Current, False InProgress. So every phase
that has reached what the spec asks for is Ready, finished or not:

  phase                                 Ready   Reconciling   Stalled   kstatus
  Queued, Preparing, Running, Uploading False   True          False     InProgress
  ... with a stalling cause             False   False         True      Failed
  Completed                             True    False         False     Current
  Failed                                False   False         True      Failed
  Cancelled (spec.cancel)               True    False         False     Current
  Suspended, replicas still stopping    False   True          False     InProgress
  Suspended (spec.runPolicy.suspend)    True    False         False     Current

Every condition carries the run's generation, and keeps its lastTransitionTime while its status does
not change. Once the log archive is sealed a fourth, ``LogsComplete`` (which kstatus ignores), says
whether every replica's log was read to its end. Called by ``trainrun.status.build_status``. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence

from trainrun.spec.status import Condition, LogsStatus, Phase
from trainrun.status.phase import PROGRESS, Verdict

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
LOGS_COMPLETE = "LogsComplete"  # beside the three: whether the sealed log archive misses lines
# Phases where the run is what its spec asks for: trained and copied, cancelled, or suspended.
SETTLED_PHASES = frozenset({Phase.COMPLETED, Phase.CANCELLED, Phase.SUSPENDED})


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
    reconciling = (verdict.phase in PROGRESS or verdict.stopping) and not stalled
    ready = verdict.phase in SETTLED_PHASES and not verdict.stopping and not stalled
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
        condition(READY, ready, verdict.message),
        condition(RECONCILING, reconciling, reconciling_message),
        condition(STALLED, stalled, verdict.message),
    ]


ARCHIVE_FAILING = "ArchiveFailing"  # the LogsComplete reason while the log archive's store cannot be used


def logs_condition(
    logs: LogsStatus | None, *, previous: Sequence[Condition], generation: int | None, now: str
) -> Condition | None:
    """LogsComplete once the archive is sealed: True when every replica's log was read to its end, False
    naming the logs that miss lines. Before the seal, False while the archive's store fails (the logs are not
    being kept: ``logs.message`` names the setting and says the store's words); absent while it works."""
    if logs is None or not (logs.sealed or logs.message):
        return None
    text = "True" if logs.sealed and logs.complete else "False"
    before = next((item for item in previous if item.type == LOGS_COMPLETE), None)
    kept = before.last_transition_time if before is not None and before.status == text else None
    reason = "Archived" if text == "True" else "LogGap" if logs.sealed else ARCHIVE_FAILING
    return Condition(
        type=LOGS_COMPLETE,
        status=text,
        reason=reason,
        message="every replica's log was read to its end and archived" if text == "True" else logs.message or "",
        observed_generation=generation,
        last_transition_time=kept or now,
    )
