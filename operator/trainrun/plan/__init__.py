"""The operator's decisions, pure: a TrainingRun, the operator config and what the controller observed ->
the children to apply, the storage work to start, the status to write, the Events to post, when to look
again.

``plan`` is all the operator's reconcile decides (``trainrun.controller.operator`` only observes, plans
once and acts); ``trainrun.status.work`` holds the facts that slow work brings back and the retry windows
(below the plan, so the sweep plan shares them); ``restarts``
and ``causes`` the supervision of a run in trouble; ``projections`` trims watched objects to the fields
the plan reads. No I/O here: unit-tested table-driven without a cluster (tests/unit/test_reconcile_plan.py,
tests/unit/test_restarts.py).
"""

from trainrun.plan.core import (
    EVENT_REASONS,
    Action,
    Apply,
    Delete,
    MergePatch,
    Observed,
    Plan,
    merge_patched,
    plan,
    previous_status,
    status_patch,
)
from trainrun.status.work import (
    Attempts,
    ReadManifest,
    Refusal,
    Register,
    Registration,
    SealedLogs,
    SealLogs,
    StorageWork,
)

__all__ = [
    "EVENT_REASONS",
    "Action",
    "Apply",
    "Attempts",
    "Delete",
    "MergePatch",
    "Observed",
    "Plan",
    "ReadManifest",
    "Refusal",
    "Register",
    "Registration",
    "SealLogs",
    "SealedLogs",
    "StorageWork",
    "merge_patched",
    "plan",
    "previous_status",
    "status_patch",
]
