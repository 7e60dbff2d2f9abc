"""The operator's decisions, pure: a TrainingRun, the operator config and what the watches observed ->
the children to apply, the status to write, the Events to post, when to look again.

``plan`` is all the operator's reconcile decides (``trainrun.controller.operator`` only gets, plans and
acts); ``projections`` trims watched objects to the fields the plan reads. No I/O here: unit-tested
table-driven without a cluster (tests/unit/test_plan.py).
"""

from trainrun.plan.core import (
    EVENT_REASONS,
    NO_TRAINING_OPERATOR,
    Action,
    Apply,
    Delete,
    ManifestRead,
    MergePatch,
    Observed,
    Plan,
    plan,
    previous_status,
    status_patch,
)

__all__ = [
    "EVENT_REASONS",
    "NO_TRAINING_OPERATOR",
    "Action",
    "Apply",
    "Delete",
    "ManifestRead",
    "MergePatch",
    "Observed",
    "Plan",
    "plan",
    "previous_status",
    "status_patch",
]
