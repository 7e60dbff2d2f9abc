"""``compute_status``: everything observed about a run -> its whole ``TrainingRunStatus``.

The one entry point of the package for the operator: its reconcile calls it after it has read the
PyTorchJob, the pods, the Events and the uploader Job (the local runner calls it with its processes
and its copy written as those objects by ``trainrun.local.observe``). It reads the raw dicts into
views (``observe``), decides the phase (``phase``), builds the kstatus conditions (``conditions``) and
fills in names, counts and times. Finished phases
(Completed, Failed, Cancelled) are sticky: once reported, the phase, reason and message stay; the
replica counts, the artifacts and the generation still follow what is observed.
Never raises on odd input: a shape it cannot read counts as absent. Pure: no I/O, ``now`` is given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from trainrun.render.children import master_pod_name, uploader_job_name
from trainrun.spec.model import TrainingRun
from trainrun.spec.status import ReplicaCounts, TrainingRunStatus
from trainrun.status.conditions import kstatus_conditions
from trainrun.status.observe import (
    JobView,
    PodView,
    ReplicaState,
    observe_events,
    observe_job,
    observe_pods,
    observe_uploader,
)
from trainrun.status.phase import Observations, Supervision, Verdict, current_replicas, decide
from trainrun.status.shapes import as_list, as_text, earliest


def compute_status(
    *,
    run: TrainingRun | None,
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    uploader_job: Mapping[str, Any] | None,
    previous: TrainingRunStatus | None,
    problems: Sequence[str],
    pending_changes: Sequence[str],
    pool: str | None,
    now: str,
    generation: int | None = None,
    supervision: Supervision | None = None,
) -> TrainingRunStatus:
    """The run's status from what was observed.

    ``run`` is None only for a TrainingRun that does not parse; ``problems`` then says why and
    ``generation`` gives its metadata.generation (otherwise read from ``run``). ``previous.artifacts``
    is what the operator recorded from the uploader's manifest; ``previous.progress`` and
    ``previous.restarts`` are kept (the caller updates them). ``supervision`` is a restart, hang or
    failure the caller decided (see ``Supervision``).
    """
    earlier = previous or TrainingRunStatus()
    observed_generation = run.metadata.generation if run is not None else generation
    changes = [text for item in as_list(pending_changes) if (text := as_text(item)) is not None]
    problem_texts = [text for item in as_list(problems) if (text := as_text(item)) is not None]
    if run is None and not problem_texts:
        problem_texts = ["the TrainingRun could not be read"]

    job_view = observe_job(job)
    replica_pods, uploader_pods = observe_pods(
        pods, uploader_job_name=uploader_job_name(run) if run is not None else None
    )
    if earlier.phase is not None and earlier.phase.finished:
        sticky = Verdict(
            earlier.phase, earlier.reason or earlier.phase.value, earlier.message or "", stalled=False
        )
        return earlier.model_copy(
            update={
                "observed_generation": observed_generation,
                "conditions": kstatus_conditions(
                    verdict=sticky,
                    previous=earlier.conditions,
                    generation=observed_generation,
                    now=now,
                    pending_changes=changes,
                ),
                "pending_changes": changes,
                "replicas": _observed_replicas(job_view, replica_pods, earlier),
            }
        )

    verdict = decide(
        Observations(
            run=run,
            job=job_view,
            pods=replica_pods,
            events=observe_events(events),
            uploader=observe_uploader(uploader_job, uploader_pods),
            artifacts=earlier.artifacts,
            problems=problem_texts,
            pool=pool,
            previous_phase=earlier.phase,
            now=now,
        )
    )
    if supervision is not None and not problem_texts:
        verdict = supervision.applied_to(verdict, now=now)
    live_replicas = current_replicas(job_view, run, replica_pods) if job_view is not None and run is not None else {}
    master = live_replicas.get("master-0")
    if job_view is not None and run is not None:
        job_name: str | None = job_view.name or run.metadata.name
        master_pod: str | None = master.name if master is not None else master_pod_name(run)
        start_time = job_view.start_time or earliest([pod.start_time for pod in replica_pods])
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
            now=now,
            pending_changes=changes,
        ),
        job_name=job_name,
        pool=pool or earlier.pool,
        master_pod=master_pod,
        replicas=_observed_replicas(job_view, replica_pods, earlier),
        start_time=start_time or earlier.start_time,
        completion_time=verdict.completion_time if verdict.phase.finished else None,
        metrics=dict(earlier.metrics),
        key_metric=earlier.key_metric,
        artifacts=earlier.artifacts,
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
    """Active/succeeded/failed per replica type: the training-operator's numbers, else counted from the pods."""
    if job is not None and job.replica_statuses:
        return dict(job.replica_statuses)
    return count_replicas((pod.replica_type, pod.state) for pod in pods if pod.replica_type is not None and not pod.deleting)


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
