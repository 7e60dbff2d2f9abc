"""The TrainingSweep's status as pydantic models: what ``kubectl get trs`` and ``trainrun describe sweep`` show.

Produced by the sweep planner (``trainrun.sweep.plan``, pure) and written by the operator; the CRD's status
schema is generated from these models (``trainrun.spec.crd``). Pure.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field

from trainrun.spec.status import Condition, ModelVersion, Phase, StatusModel

# The trials in status.trials, at most: the running ones and the best finished ones.
MAX_TRIAL_SUMMARIES = 50


class TrialState(StrEnum):
    """Where one trial stands, as the sweep counts it."""

    RUNNING = "Running"  # created and not finished (queued, preparing or training)
    COMPLETED = "Completed"  # finished with a value of the objective
    PRUNED = "Pruned"  # stopped early by the sweep: it was losing
    FAILED = "Failed"  # failed, or completed without reporting the objective
    CANCELLED = "Cancelled"  # stopped by the sweep's end (cancel, deadline, target) or by hand


class TrialCounts(StatusModel):
    """Trials by state."""

    created: int = Field(default=0, description="Trials created so far.")
    running: int = Field(default=0, description="Trials not finished.")
    completed: int = Field(default=0, description="Trials that finished with a value of the objective.")
    pruned: int = Field(default=0, description="Trials stopped early because they were losing.")
    failed: int = Field(default=0, description="Trials that failed (or reported no value of the objective).")
    cancelled: int = Field(default=0, description="Trials stopped by the sweep's end or by hand.")


class BestTrial(StatusModel):
    """The best completed trial so far."""

    trial: str = Field(description="The trial's TrainingRun.")
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="Its parameters by name.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    metric: str = Field(description="The objective's metric.")
    value: float = Field(description="Its value of the objective.")


class TrialSummary(StatusModel):
    """One trial in a line."""

    name: str = Field(description="The trial's TrainingRun.")
    number: int = Field(description="Its number in the sweep (the suffix of its name).")
    state: TrialState = Field(description="Running, Completed, Pruned, Failed or Cancelled.")
    value: float | None = Field(default=None, description="Its value of the objective (a pruned trial's last).")
    position: int | None = Field(default=None, description="The latest position (epoch or step) it reported the objective at.")
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="Its parameters by name.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    message: str | None = Field(default=None, description="Why it was pruned or failed.")


class TrainingSweepStatus(StatusModel):
    """Everything the operator reports about a sweep."""

    phase: Phase | None = Field(default=None, description="Running, Completed, Failed or Cancelled.")
    reason: str | None = Field(default=None, description="One CamelCase word for why the sweep is in this phase.")
    message: str | None = Field(default=None, description="What is happening or what went wrong.")
    observed_generation: int | None = Field(default=None, description="The spec generation the status describes.")
    conditions: list[Condition] = Field(default_factory=list, description="kstatus conditions: Ready, Reconciling, Stalled.")
    counts: TrialCounts = Field(default_factory=TrialCounts, description="Trials by state.")
    trials_summary: str | None = Field(
        default=None, description="The TRIALS column: done/running/pruned/failed of maxTrials, e.g. 5/3/2/0 of 12."
    )
    best: BestTrial | None = Field(default=None, description="The best completed trial so far.")
    best_summary: str | None = Field(default=None, description="The BEST column: metric=value (trial).")
    progress: str | None = Field(default=None, description="The PROGRESS column: the share of maxTrials finished.")
    trials: list[TrialSummary] = Field(
        default_factory=list,
        description=f"The trials by number: the running ones and the best finished ones, at most {MAX_TRIAL_SUMMARIES}.",
    )
    start_time: str | None = Field(default=None, description="When the sweep was first reconciled.")
    completion_time: str | None = Field(default=None, description="When the sweep finished.")
    model: ModelVersion | None = Field(
        default=None, description="The best trial's model version the sweep registered (spec.register)."
    )

    def to_patch(self) -> dict[str, object]:
        """The status as a JSON-ready dict for a merge patch (camelCase, no unset optionals)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
