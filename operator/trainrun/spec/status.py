"""The TrainingRun's status as pydantic models: what ``kubectl get tr`` and ``trainrun describe`` show.

Produced by ``trainrun.status`` (pure) and written by the operator and the local runner; the CRD's
status schema is generated from these models. Pure.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class Phase(StrEnum):
    """Where a run stands; the first column of ``kubectl get tr``."""

    QUEUED = "Queued"
    PREPARING = "Preparing"
    RUNNING = "Running"
    UPLOADING = "Uploading"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    SUSPENDED = "Suspended"

    @property
    def finished(self) -> bool:
        """Completed, Failed and Cancelled never change again."""
        return self in (Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED)


class StatusModel(BaseModel):
    """Base of the status models: camelCase on the wire."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Condition(StatusModel):
    """A kstatus-style condition (Ready, Reconciling, Stalled) that Argo CD and Flux read."""

    type: str = Field(description="Ready, Reconciling or Stalled.")
    status: str = Field(description="True, False or Unknown.")
    reason: str = Field(description="One CamelCase word for the cause.")
    message: str = Field(default="", description="What happened, for people.")
    observed_generation: int | None = Field(default=None, description="The spec generation this condition describes.")
    last_transition_time: str | None = Field(default=None, description="When status last changed (RFC 3339).")


class ReplicaCounts(StatusModel):
    """Pods of one replica type by state."""

    active: int = Field(default=0, description="Pods running or pending.")
    succeeded: int = Field(default=0, description="Pods that exited 0.")
    failed: int = Field(default=0, description="Pods that failed.")


class Artifacts(StatusModel):
    """What was copied to object storage after training."""

    uri: str = Field(description="Where the artifacts are.")
    manifest_uri: str = Field(description="The manifest (path, size, sha256 of every file), written last.")
    file_count: int = Field(description="Files copied.")
    bytes: int = Field(description="Bytes copied.")


class ModelVersion(StatusModel):
    """The model version registered for this run (spec.output.register)."""

    registry: str = Field(description="The registry's key in the operator configuration.")
    name: str = Field(description="The registered model's name.")
    version: str = Field(description="The version this run registered.")
    uri: str = Field(description="What the version points to: the verified copy of the model in object storage.")


class Tracked(StatusModel):
    """The experiment tracker's run that mirrors this run (params, the metric series, the final status)."""

    registry: str = Field(description="The registry's key in the operator configuration.")
    experiment: str = Field(description="The experiment's name.")
    run_id: str | None = Field(default=None, description="The tracker's run id (none until it is created).")
    message: str | None = Field(default=None, description="Why the tracker is not up to date: its words and when it is tried again.")
    ended: bool = Field(default=False, description="The tracker's run was ended with the run's final status: nothing more is sent.")


class LogGap(StatusModel):
    """A replica log that could not be read to its end: its pod went before the operator read it."""

    replica: str = Field(description="The replica (master-0, worker-1, ...).")
    after: str | None = Field(default=None, description="When the last line read was written (none: nothing was read).")


class LogsStatus(StatusModel):
    """Where every replica's log is archived: shipped while the run trains, composed when it ends."""

    uri: str = Field(description="The archive: <replica>.log and metrics.jsonl once sealed (segments in .parts/ before).")
    sealed: bool = Field(
        default=False, description="The logs were composed after the run ended (and are in its manifest when it has one)."
    )
    complete: bool = Field(
        default=False, description="Sealed with every replica's log read to its end: no line is known to be missing."
    )
    gaps: list[LogGap] = Field(
        default_factory=list, description="Replica logs that could not be read to their end (each marked in its .log)."
    )
    started: list[str] = Field(
        default_factory=list,
        description="The replicas whose training container was seen started: once sealed, each has its log in the "
        "archive or a gap declared (also when its pods went while no operator could ship what it had read).",
    )
    message: str | None = Field(
        default=None, description="Why the archive is not complete yet: the object store's words and when it is tried again."
    )


class Progress(StatusModel):
    """How far training is, read from the metric lines: the PROGRESS and ETA columns of ``kubectl get tr``."""

    epoch: int | None = Field(default=None, description="The latest epoch a replica reported.")
    epochs: int | None = Field(default=None, description="Epochs in the whole run, when known (spec or the program).")
    step: int | None = Field(default=None, description="The latest step a replica reported.")
    total_steps: int | None = Field(default=None, description="Steps in the whole run, as the program reports it (total_steps).")
    percent: float | None = Field(default=None, description="Done, 0-100: step / totalSteps (else epochs done / epochs).")
    summary: str | None = Field(default=None, description="The PROGRESS column: 42%, or step 420 when no total is known.")
    steps_per_second: float | None = Field(default=None, description="Recent pace, from the times of the last steps.")
    samples_per_second: float | None = Field(default=None, description="Throughput the program reports (samples_per_sec, images_per_sec).")
    eta: str | None = Field(default=None, description="When training should end at the recent pace (RFC 3339).")
    last_step_time: str | None = Field(default=None, description="When the latest step was reported (the log line's time).")
    last_log_time: str | None = Field(default=None, description="When any replica last printed a line.")


class Restart(StatusModel):
    """One whole-run restart: the PyTorchJob was recreated and every replica resumed from the last checkpoint."""

    cause: str = Field(description="NodeLost, Preempted, Evicted, CommunicationError, OOMKilled, CudaOOM, UserError or Hang.")
    message: str = Field(description="What happened, naming the replica.")
    time: str = Field(description="When the restart was decided (RFC 3339).")


class SeriesPoint(StatusModel):
    """One value of the series metric, at the position the program reported it."""

    epoch: int | None = Field(default=None, description="The epoch of the value, if the program said.")
    step: int | None = Field(default=None, description="The step of the value, if the program said.")
    value: float = Field(description="The value.")


class MetricSeries(StatusModel):
    """The Master's values of one metric by position: what a sweep's early stopping compares trials by."""

    metric: str = Field(description="The metric (the annotation trainrun.dev/series names it).")
    points: list[SeriesPoint] = Field(default_factory=list, description="Its latest values by position (at most 100), oldest first.")


class TrainingRunStatus(StatusModel):
    """Everything the operator reports about a run."""

    phase: Phase | None = Field(default=None, description="Queued, Preparing, Running, Uploading, Completed, Failed, Cancelled or Suspended.")
    reason: str | None = Field(default=None, description="One CamelCase word for why the run is in this phase.")
    message: str | None = Field(default=None, description="What is happening or what went wrong, naming the cause.")
    observed_generation: int | None = Field(default=None, description="The spec generation the status describes.")
    conditions: list[Condition] = Field(default_factory=list, description="kstatus conditions: Ready, Reconciling, Stalled.")
    job_name: str | None = Field(default=None, description="The PyTorchJob of this run.")
    pool: str | None = Field(default=None, description="The node pool the run was placed on.")
    master_pod: str | None = Field(default=None, description="Name of the Master pod.")
    replicas: dict[str, ReplicaCounts] = Field(default_factory=dict, description="Pod counts per replica type (Master, Worker).")
    start_time: str | None = Field(default=None, description="When the first replica started running.")
    completion_time: str | None = Field(default=None, description="When the run finished.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Latest value of every metric read from the logs.")
    metrics_final: bool | None = Field(
        default=None,
        description="True once the run has finished and every replica's log was read to its end (or as far as it "
        "could be: status.logs.gaps): status.metrics will not change. What a sweep waits for before it reads a "
        "trial's objective.",
    )
    key_metric: str | None = Field(default=None, description="The metric shown by kubectl get, e.g. val_loss=0.312.")
    series: MetricSeries | None = Field(
        default=None,
        description="The values of the metric the annotation trainrun.dev/series names, by position (a sweep "
        "trial's objective, for early stopping).",
    )
    artifacts: Artifacts | None = Field(default=None, description="What was copied to object storage.")
    logs: LogsStatus | None = Field(default=None, description="Where the replicas' logs are archived (none: not archived).")
    model: ModelVersion | None = Field(default=None, description="The model version registered for this run (spec.output.register).")
    tracking: Tracked | None = Field(default=None, description="The experiment tracker's run of this run (tracking).")
    progress: Progress | None = Field(default=None, description="Epoch, step, percent done, pace and ETA, from the metric lines.")
    restarts: list[Restart] = Field(
        default_factory=list, description="Whole-run restarts, oldest first (spec.runPolicy.restartOn, onHang: Restart)."
    )
    pending_changes: list[str] = Field(
        default_factory=list,
        description="Spec fields changed while the run was active; they apply after suspend and resume, or never "
        "once the run finished.",
    )

    def to_patch(self) -> dict[str, object]:
        """The status as a JSON-ready dict for a merge patch (camelCase, no unset optionals)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
