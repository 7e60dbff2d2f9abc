"""``build_status``: one run's world as observed (a ``StatusInput``) -> its whole ``TrainingRunStatus``.

The one place a status is made. The operator's plan (``trainrun.plan.core``) fills a ``StatusInput``
from its watch caches and the facts its background work brought (the verified manifest, the sealed log
archive); the local runner (``trainrun.local.runner``) fills one from its processes, written as the same
objects by ``trainrun.local.observe``. Both get the same phase, reason and message for the same world.

It reads the raw dicts into views (``observe``), decides the phase (``phase``), builds the kstatus
conditions (``conditions``) and fills in names, counts, times, metrics, progress, restarts and the log
archive. Finished phases (Completed, Failed, Cancelled) are sticky: once reported, the phase, reason and
message stay; the replica counts, the artifacts, the metrics and the generation still follow what is
observed. Never raises on odd input: a shape it cannot read counts as absent. Pure: ``now`` is given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trainrun.metrics import SERIES_POINTS, MetricSample
from trainrun.metrics.progress import ProgressSnapshot
from trainrun.render.children import master_pod_name
from trainrun.spec.annotations import SERIES_ANNOTATION
from trainrun.spec.model import TrainingRun
from trainrun.spec.status import (
    Artifacts,
    LogsStatus,
    MetricSeries,
    Phase,
    ReplicaCounts,
    Restart,
    SeriesPoint,
    Tracked,
    TrainingRunStatus,
)
from trainrun.status.conditions import LOGS_COMPLETE, kstatus_conditions, logs_condition
from trainrun.status.failure import Cause
from trainrun.status.observe import (
    DEFAULT_JOB_KIND,
    JobView,
    PodView,
    ReplicaState,
    observe_events,
    observe_uploader,
    observe_workload,
)
from trainrun.status.phase import Supervision, Verdict, Views, current_replicas, phase_verdict
from trainrun.status.progress import progress_status, spec_epochs
from trainrun.status.registration import REGISTERED, RegistrationState, registered_condition, registration_verdict
from trainrun.status.shapes import as_list, as_text, earliest


@dataclass(frozen=True)
class StatusInput:
    """Everything a status is built from.

    ``run`` is None only for a TrainingRun that does not parse (``problems`` say why, ``generation`` is
    its metadata.generation). The raw objects are as the API serves them (or trimmed by the operator's
    projections): the job, Events about it and its pods, the uploader Job; the pods come observed
    (``observe_pods``: the replicas and the uploader's), as the caller's supervision read them too.
    The rest is what the caller decided or learned: problems that stop the run, spec changes the live
    job cannot take, the verified copy, a supervision verdict and a restart, the log follower's metrics
    and progress, the log archive, an object store that is being retried.
    """

    run: TrainingRun | None
    now: str
    previous: TrainingRunStatus = field(default_factory=TrainingRunStatus)
    generation: int | None = None
    job: JobView | None = None  # as observe_job reads it
    replicas: Sequence[PodView] = ()  # the replica pods, deleted ones that tell why included (``deleting``)
    uploader_pods: Sequence[PodView] = ()
    events: Sequence[Mapping[str, Any]] = ()
    uploader: Mapping[str, Any] | None = None
    workload: Mapping[str, Any] | None = None  # Kueue's Workload of a queued run's job
    job_kind: str = DEFAULT_JOB_KIND  # what the run's job is, or will be (the backend's kind)
    pod_creator: str = "the training-operator"  # who creates the replica pods (the backend's words)
    pod_creator_objects: tuple[str, ...] = ()  # the Jobs that create them, when not the job itself
    problems: Sequence[str] = ()
    pending_changes: Sequence[str] = ()
    pool: str | None = None
    artifacts: Artifacts | None = None  # the verified copy (else what ``previous`` recorded)
    supervision: Supervision | None = None
    restart: Restart | None = None  # decided now: appended to status.restarts
    metrics: Mapping[str, float] | None = None  # the latest values read from the logs (None: none read)
    metrics_final: bool = False  # every replica's log was read to its end (or as far as it could be)
    key_metric: str | None = None
    series: Sequence[MetricSample] = ()  # new values of the series metric (the annotation trainrun.dev/series)
    progress: ProgressSnapshot | None = None
    logs: LogsStatus | None = None
    storage_problem: Cause | None = None  # a storage step failed and is tried again: what and when
    registration: RegistrationState | None = None  # spec.output.register: where the model's registration stands
    tracking: Tracked | None = None  # the experiment tracker's run of this run (else what ``previous`` recorded)
    children_named: bool = True  # False for the local runner: its replicas are processes, not named objects


def build_status(given: StatusInput) -> TrainingRunStatus:
    """The run's status for this input (see ``StatusInput``)."""
    status = _phase_and_children(given)
    updates: dict[str, Any] = {}
    if given.metrics is not None:
        # Added to what is known: a reader that started after a replica's pod went (a restarted operator, no
        # archive to resume from) does not take away the values read before.
        updates.update(metrics={**status.metrics, **given.metrics}, key_metric=given.key_metric or status.key_metric)
    series = series_status(given.run, status.series, given.series)
    if series != status.series:
        updates["series"] = series
    finished = status.phase is not None and status.phase.finished
    if finished and given.metrics_final:
        updates["metrics_final"] = True
    progress = progress_status(given.progress, epochs=spec_epochs(given.run)) if given.run is not None else None
    if progress is not None and not finished:
        updates["progress"] = progress
    elif finished and status.progress is not None and status.progress.eta is not None:
        updates["progress"] = status.progress.model_copy(update={"eta": None})  # a finished run expects nothing
    if given.restart is not None and not finished:
        updates["restarts"] = [*status.restarts, given.restart]
    if given.logs is not None:
        updates["logs"] = given.logs
        logs = logs_condition(
            given.logs, previous=given.previous.conditions, generation=status.observed_generation, now=given.now
        )
        kept = [item for item in status.conditions if item.type != LOGS_COMPLETE]
        updates["conditions"] = [*kept, logs] if logs is not None else kept
    if given.tracking is not None:
        updates["tracking"] = given.tracking
    if given.registration is not None and given.registration.model is not None:
        updates["model"] = given.registration.model
    registered = registered_condition(
        given.registration,
        previous=given.previous.conditions,
        generation=status.observed_generation,
        now=given.now,
    )
    if registered is not None:
        kept = [item for item in updates.get("conditions", status.conditions) if item.type != REGISTERED]
        updates["conditions"] = [*kept, registered]
    if not given.children_named:
        updates.update(job_name=None, master_pod=None)
    return status.model_copy(update=updates) if updates else status


def series_status(
    run: TrainingRun | None, previous: MetricSeries | None, samples: Sequence[MetricSample]
) -> MetricSeries | None:
    """status.series: the values of the metric the run's annotation names, by position, the earlier ones kept
    (a restarted operator reads a log again from where its archive says, or from the start): one value per
    position, the latest for it, the last ``SERIES_POINTS`` positions. None when the run names no metric."""
    metric = run.metadata.annotations.get(SERIES_ANNOTATION) if run is not None else None
    if metric is None:
        return None
    by_position: dict[tuple[int, int], SeriesPoint] = {}
    kept = previous.points if previous is not None and previous.metric == metric else []
    new = [
        SeriesPoint(epoch=sample.epoch, step=sample.step, value=sample.value) for sample in samples if sample.name == metric
    ]
    for point in [*kept, *new]:
        by_position[(point.epoch if point.epoch is not None else -1, point.step if point.step is not None else -1)] = point
    points = [by_position[position] for position in sorted(by_position)][-SERIES_POINTS:]
    return MetricSeries(metric=metric, points=points)


def _phase_and_children(given: StatusInput) -> TrainingRunStatus:
    """Phase, reason, message and conditions, with the job's name, replica counts and times."""
    run = given.run
    earlier = given.previous
    if given.artifacts is not None:
        earlier = earlier.model_copy(update={"artifacts": given.artifacts})
    observed_generation = run.metadata.generation if run is not None else given.generation
    changes = [text for item in as_list(given.pending_changes) if (text := as_text(item)) is not None]
    problem_texts = [text for item in as_list(given.problems) if (text := as_text(item)) is not None]
    if run is None and not problem_texts:
        problem_texts = ["the TrainingRun could not be read"]

    job_view = given.job
    replica_pods, uploader_pods = given.replicas, given.uploader_pods
    if earlier.phase is not None and earlier.phase.finished:
        sticky = Verdict(earlier.phase, earlier.reason or earlier.phase.value, earlier.message or "", stalled=False)
        return earlier.model_copy(
            update={
                "observed_generation": observed_generation,
                "conditions": kstatus_conditions(
                    verdict=sticky,
                    previous=earlier.conditions,
                    generation=observed_generation,
                    now=given.now,
                    pending_changes=changes,
                ),
                "pending_changes": changes,
                "replicas": _observed_replicas(job_view, replica_pods, earlier),
            }
        )

    verdict = phase_verdict(
        Views(
            run=run,
            job=job_view,
            pods=replica_pods,
            events=observe_events(given.events),
            uploader=observe_uploader(given.uploader, uploader_pods),
            artifacts=earlier.artifacts,
            problems=problem_texts,
            pool=given.pool,
            previous_phase=earlier.phase,
            now=given.now,
            job_kind=job_view.kind if job_view is not None else given.job_kind,
            pod_creator=given.pod_creator,
            pod_creator_objects=given.pod_creator_objects,
            workload=observe_workload(given.workload),
        )
    )
    if given.supervision is not None and not problem_texts:
        verdict = given.supervision.applied_to(verdict, now=given.now)
    if given.storage_problem is not None and verdict.phase is Phase.UPLOADING:
        verdict = Verdict(Phase.UPLOADING, given.storage_problem.reason, given.storage_problem.message)
    verdict = registration_verdict(verdict, given.registration)
    live_replicas = current_replicas(job_view, run, replica_pods) if job_view is not None and run is not None else {}
    master = live_replicas.get("master-0")
    if job_view is not None and run is not None:
        job_name: str | None = job_view.name or run.metadata.name
        master_pod: str | None = master.name if master is not None else master_pod_name(run)
        # The earliest start known: the job's (a TrainJob has none) and its pods' come in either order, and a
        # start that moved later at each would write the status again for nothing.
        start_time = earliest([job_view.start_time, *(pod.start_time for pod in replica_pods), earlier.start_time])
    else:
        # The job was not read (not created yet, or the operator stopped at a problem): keep what was known.
        job_name, master_pod, start_time = earlier.job_name, earlier.master_pod, earlier.start_time
    return TrainingRunStatus(
        phase=verdict.phase,
        reason=verdict.reason,
        message=verdict.message,
        observed_generation=observed_generation,
        conditions=kstatus_conditions(
            verdict=verdict,
            previous=earlier.conditions,
            generation=observed_generation,
            now=given.now,
            pending_changes=changes,
        ),
        job_name=job_name,
        pool=given.pool or earlier.pool,
        master_pod=master_pod,
        replicas=_observed_replicas(job_view, replica_pods, earlier),
        start_time=start_time or earlier.start_time,
        completion_time=verdict.completion_time if verdict.phase.finished else None,
        metrics=dict(earlier.metrics),
        key_metric=earlier.key_metric,
        series=earlier.series,
        artifacts=earlier.artifacts,
        logs=earlier.logs,
        model=earlier.model,
        tracking=earlier.tracking,
        progress=earlier.progress,
        restarts=list(earlier.restarts),
        pending_changes=changes,
    )


def _observed_replicas(
    job: JobView | None, pods: Sequence[PodView], earlier: TrainingRunStatus
) -> dict[str, ReplicaCounts]:
    """The replica counts as observed now; what was known when neither the job nor a pod was seen."""
    if job is not None or pods:
        return replica_counts(job, pods)
    if earlier.phase is not None and earlier.phase.finished:
        # A finished run whose job and pods are gone (cleaned up): nothing of it is active any more.
        return {kind: counts.model_copy(update={"active": 0}) for kind, counts in earlier.replicas.items()}
    return dict(earlier.replicas)


def replica_counts(job: JobView | None, pods: Sequence[PodView]) -> dict[str, ReplicaCounts]:
    """Active/succeeded/failed per replica type. While the job runs, a type whose pods are seen is counted from them
    (what the phase is decided from: the training-operator's numbers can lag behind, and a run Running with no replica
    active would say two things at once), keeping the failures and successes the training-operator counted of pods
    gone since; a type with no pod seen, and every type once the job has finished (its pods may be cleaned up), has
    the training-operator's numbers."""
    counted = count_replicas((pod.replica_type, pod.state) for pod in pods if pod.replica_type is not None and not pod.deleting)
    if job is None:
        return counted
    if job.ended:
        return dict(job.replica_statuses) or counted
    merged = dict(job.replica_statuses)
    for kind, seen in counted.items():
        reported = job.replica_statuses.get(kind, ReplicaCounts())
        merged[kind] = ReplicaCounts(
            active=seen.active, succeeded=max(seen.succeeded, reported.succeeded), failed=max(seen.failed, reported.failed)
        )
    return merged


def count_replicas(replicas: Iterable[tuple[str, ReplicaState]]) -> dict[str, ReplicaCounts]:
    """(replica type, state) of each replica -> active/succeeded/failed per type.

    Also how the local runner counts its replica processes (its PyTorchJob's replicaStatuses).
    """
    counts: dict[str, ReplicaCounts] = {}
    for replica_type, state in replicas:
        current = counts.get(replica_type, ReplicaCounts())
        counts[replica_type] = ReplicaCounts(
            active=current.active + (state not in (ReplicaState.SUCCEEDED, ReplicaState.FAILED)),
            succeeded=current.succeeded + (state is ReplicaState.SUCCEEDED),
            failed=current.failed + (state is ReplicaState.FAILED),
        )
    return counts
