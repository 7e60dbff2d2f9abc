"""What the local runner observes (its staging, its replica processes, its copy) -> the run's status.

The local runner (``trainrun.local.runner``) only observes: when it began staging and how that ended, when
each replica process started and how it exited (with its last words from its log), how the copy went.
:func:`assess` writes those observations as the objects a cluster would show for them (the PyTorchJob with
the training-operator's conditions, its pods with their containers' states, the uploader Job with its
pod) and hands them to the operator's own decisions: ``trainrun.plan.restarts.supervise`` (hangs,
restarts by cause, failures never retried) and ``trainrun.status.build_status`` (phase, reason, message,
conditions). So a local run's phases are decided by the code that decides a cluster run's, and read in
the same words: ``replica worker-0 exited with code 1: RuntimeError: ...``. The runner acts on what comes
back: it stops the replicas of a finished or restarting run, starts a new set after a restart, copies
the outputs when the status says Uploading.

The one rule of a job controller that lives here is the training-operator's (:func:`training_outcome`):
Succeeded once the Master exits 0, Failed once a replica fails first; locally nothing else plays that
part. Pure: the runner gives the times and what it read from the logs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from trainrun.metrics import MetricSample, is_master
from trainrun.metrics.progress import ProgressSnapshot
from trainrun.plan.restarts import Supervised, supervise
from trainrun.render.children import (
    COMPONENT_LABEL,
    CONTAINER_NAME,
    JOB_NAME_LABEL,
    REPLICA_INDEX_LABEL,
    REPLICA_TYPE_LABEL,
    UPLOADER_COMPONENT,
    job_name,
    uploader_job_name,
)
from trainrun.spec.model import TrainingRun
from trainrun.spec.status import Artifacts, ReplicaCounts, Tracked, TrainingRunStatus
from trainrun.status import StatusInput, build_status, count_replicas
from trainrun.status.observe import ReplicaState, observe_job, observe_pods
from trainrun.status.registration import RegistrationState

Object = dict[str, Any]
# The container runtime reports a process killed by signal N as exit code 128 + N.
SIGNAL_EXIT_BASE = 128
# ... and a container whose program could not be started as 128, with reason StartError.
START_ERROR_EXIT_CODE = 128
STAGE_IN_CONTAINER = "stage-in"  # the init container that stages inputs and code on a cluster


class Outcome(Enum):
    """How the training part of a run ended, by the training-operator's rule."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class ReplicaProcess:
    """One replica as the runner saw it: its process, or why it could not start one."""

    name: str  # master-0, worker-0, ...: the pod's replica on a cluster
    started_at: datetime | None = None  # None: not started (staging, or another replica could not start)
    exit_code: int | None = None  # None while it runs; negative when a signal killed it (Popen.returncode)
    finished_at: datetime | None = None
    last_words: str | None = None  # the exception's last line from its log (see runner.last_error_line)
    start_error: str | None = None  # why its program could not be started

    @property
    def replica_type(self) -> str:
        return "Master" if is_master(self.name) else "Worker"

    @property
    def container_exit_code(self) -> int | None:
        """The exit code as a container would report it: killed by SIGKILL is 137, not started 128."""
        if self.start_error is not None:
            return START_ERROR_EXIT_CODE
        if self.exit_code is None or self.exit_code >= 0:
            return self.exit_code
        return SIGNAL_EXIT_BASE - self.exit_code

    @property
    def state(self) -> ReplicaState:
        code = self.container_exit_code
        if code is None:
            return ReplicaState.RUNNING if self.started_at is not None else ReplicaState.PREPARING
        return ReplicaState.SUCCEEDED if code == 0 else ReplicaState.FAILED


@dataclass(frozen=True)
class Staging:
    """The runner's download of the inputs and the code snapshot: the stage-in init containers' part."""

    started_at: datetime
    finished_at: datetime | None = None
    error: str | None = None  # why it failed


@dataclass(frozen=True)
class LocalJob:
    """One set of replica processes: what a PyTorchJob is on a cluster (a restart makes a new one)."""

    created_at: datetime
    replicas: tuple[ReplicaProcess, ...]
    staging: Staging | None = None  # None: nothing to stage


class CopyState(Enum):
    COPYING = "copying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class ArtifactCopy:
    """The runner's copy of $OUTPUT_DIR to the output URI: the uploader Job's part."""

    state: CopyState
    started_at: datetime
    finished_at: datetime | None = None
    error: str | None = None  # why a failed copy failed (the storage error)
    artifacts: Artifacts | None = None  # what a successful copy's manifest records


@dataclass(frozen=True)
class LocalWorld:
    """Everything the runner observed: the run (spec.output.uri is where it copies to; spec.cancel is true
    once it was cancelled), its current job (None between a restart's stop and its new start), the copy."""

    run: TrainingRun
    job: LocalJob | None
    copy: ArtifactCopy | None = None
    progress: ProgressSnapshot | None = None  # what the replicas' logs said of their steps
    metrics: Mapping[str, float] | None = None  # the latest values read from the logs (None: none yet)
    key_metric: str | None = None
    logs_read: bool = False  # no replica's output is still being read (each one's was read to its end)
    series: Sequence[MetricSample] = ()  # the series metric's values (a sweep trial's objective: status.series)
    registration: RegistrationState | None = None  # spec.output.register, once the copy is verified
    tracking: Tracked | None = None  # the MLflow run of a tracked run, once it was sent


@dataclass(frozen=True)
class LocalChildren:
    """The objects a cluster would show for a local world: the PyTorchJob, the pods, the uploader Job."""

    job: Object | None
    pods: list[Object] = field(default_factory=list)
    uploader: Object | None = None


@dataclass(frozen=True)
class Assessment:
    """The status for a local world, and what supervision asks of the runner."""

    status: TrainingRunStatus
    supervised: Supervised


def assess(world: LocalWorld, *, previous: TrainingRunStatus, now: str) -> Assessment:
    """Supervise the world and build its status, as the operator's plan does for a run on a cluster."""
    children = local_children(world)
    replicas, uploader_pods = observe_pods(children.pods, uploader_job_name=uploader_job_name(world.run))
    job = observe_job(children.job)
    supervised = supervise(
        world.run,
        job=job,
        pods=replicas,
        gone=(),
        events=(),
        snapshot=world.progress,
        restarts=previous.restarts,
        phase=previous.phase,
        now=now,
    )
    status = build_status(
        StatusInput(
            run=world.run,
            now=now,
            previous=previous,
            job=job,
            replicas=replicas,
            uploader_pods=uploader_pods,
            uploader=children.uploader,
            artifacts=world.copy.artifacts if world.copy is not None else None,
            supervision=supervised.supervision,
            restart=supervised.restart,
            metrics=world.metrics,
            metrics_final=world.logs_read,
            key_metric=world.key_metric,
            series=world.series,
            progress=world.progress,
            registration=world.registration,
            tracking=world.tracking,
            children_named=False,
        )
    )
    return Assessment(status, supervised)


def local_children(world: LocalWorld) -> LocalChildren:
    """The PyTorchJob, its pods and the uploader Job (with its pod) a cluster would show for this world."""
    run, job = world.run, world.job
    pods = [replica_pod(run, job, replica) for replica in job.replicas] if job is not None else []
    uploader = None
    if world.copy is not None:
        uploader = uploader_job(run, world.copy)
        pods.append(uploader_pod(run, world.copy))
    return LocalChildren(job=pytorchjob(run, job) if job is not None else None, pods=pods, uploader=uploader)


def training_outcome(job: LocalJob) -> Outcome | None:
    """The training-operator's rule: Succeeded once the Master exits 0, Failed once a replica fails first
    (its staging or its start included).

    A replica that fails after the Master succeeded (a Worker stopped while it lingered) does not fail
    the run; one that fails at the same moment does.
    """
    if job.staging is not None and job.staging.error is not None:
        return Outcome.FAILED
    replicas = job.replicas
    master = next((replica for replica in replicas if replica.replica_type == "Master"), None)
    master_done = master.finished_at if master is not None and master.state is ReplicaState.SUCCEEDED else None
    if any(
        replica.state is ReplicaState.FAILED
        and (master_done is None or (replica.finished_at is not None and replica.finished_at <= master_done))
        for replica in replicas
    ):
        return Outcome.FAILED
    return Outcome.SUCCEEDED if master_done is not None else None


def replica_statuses(job: LocalJob) -> dict[str, ReplicaCounts]:
    """Active/succeeded/failed replicas per type, as the PyTorchJob's replicaStatuses count pods."""
    return count_replicas((replica.replica_type, _state(job, replica)) for replica in job.replicas)


def _state(job: LocalJob, replica: ReplicaProcess) -> ReplicaState:
    """A replica's state; one that never started because staging failed has failed (its pod did)."""
    staging_failed = job.staging is not None and job.staging.error is not None
    return ReplicaState.FAILED if staging_failed and replica.started_at is None else replica.state


def pytorchjob(run: TrainingRun, job: LocalJob) -> Object:
    """The PyTorchJob as the training-operator reports it: replica specs, conditions, replicaStatuses, times."""
    name = job_name(run)
    replicas = job.replicas
    counts = replica_statuses(job)
    outcome = training_outcome(job)
    started = [replica.started_at for replica in replicas if replica.started_at is not None]
    conditions = [_condition("Created", f"PyTorchJob {name} is created.", job.created_at)]
    status: Object = {"conditions": conditions}
    if started:
        status["startTime"] = _seconds(min(started))
    if outcome is None:
        if replicas and len(started) == len(replicas):
            conditions.append(_condition("Running", f"PyTorchJob {name} is running.", max(started)))
    else:
        finished = _decided_at(job, outcome)
        if outcome is Outcome.SUCCEEDED:
            message = f"PyTorchJob {name} is successfully completed."
        else:
            failed = ", ".join(
                f"{numbers.failed} {replica_type}" for replica_type, numbers in counts.items() if numbers.failed
            )
            message = f"PyTorchJob {name} has failed because {failed} replica(s) failed."
        conditions.append(_condition(outcome.value, message, finished))
        if finished is not None:
            status["completionTime"] = _seconds(finished)
    status["replicaStatuses"] = {
        replica_type: numbers.model_dump(exclude_defaults=True) for replica_type, numbers in counts.items()
    }
    specs = {
        replica_type: {"replicas": sum(1 for replica in replicas if replica.replica_type == replica_type)}
        for replica_type in dict.fromkeys(replica.replica_type for replica in replicas)
    }
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name, "creationTimestamp": _precise(job.created_at)},
        "spec": {"pytorchReplicaSpecs": specs, "runPolicy": {"suspend": False}},
        "status": status,
    }


def _decided_at(job: LocalJob, outcome: Outcome) -> datetime | None:
    """When the outcome was reached: the Master's success, or the first failure (its staging's included)."""
    if outcome is Outcome.SUCCEEDED:
        deciding = [replica.finished_at for replica in job.replicas if replica.replica_type == "Master"]
    else:
        deciding = [replica.finished_at for replica in job.replicas if replica.state is ReplicaState.FAILED]
        if job.staging is not None and job.staging.error is not None:
            deciding.append(job.staging.finished_at)
    return min((moment for moment in deciding if moment is not None), default=None)


def replica_pod(run: TrainingRun, job: LocalJob, replica: ReplicaProcess) -> Object:
    """The replica's pod, named and labelled as the training-operator names them, with its containers' states:
    the stage-in init container while the runner stages, then the training container."""
    replica_type, _, index = replica.name.rpartition("-")
    pod_status: Object = {"conditions": [{"type": "PodScheduled", "status": "True"}]}
    staging = job.staging
    if staging is not None:
        pod_status["initContainerStatuses"] = [{"name": STAGE_IN_CONTAINER, "state": _staging_state(staging)}]
    code = replica.container_exit_code
    if replica.started_at is None and code is None:
        failed = staging is not None and staging.error is not None
        pod_status["phase"] = "Failed" if failed else "Pending"
        waiting = "PodInitializing" if staging is not None else "ContainerCreating"
        pod_status["containerStatuses"] = [
            {"name": CONTAINER_NAME, "restartCount": 0, "state": {"waiting": {"reason": waiting}}}
        ]
    else:
        state: Object
        if code is None:
            pod_status["phase"] = "Running"
            state = {"running": {"startedAt": _seconds(replica.started_at or job.created_at)}}
        else:
            pod_status["phase"] = "Succeeded" if code == 0 else "Failed"
            state = {"terminated": _terminated(replica, code)}
        pod_status["containerStatuses"] = [{"name": CONTAINER_NAME, "restartCount": 0, "state": state}]
        if replica.started_at is not None:
            pod_status["startTime"] = _seconds(replica.started_at)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{job_name(run)}-{replica.name}",
            "labels": {JOB_NAME_LABEL: job_name(run), REPLICA_TYPE_LABEL: replica_type, REPLICA_INDEX_LABEL: index},
            "creationTimestamp": _precise(job.created_at),
        },
        "status": pod_status,
    }


def _terminated(replica: ReplicaProcess, code: int) -> Object:
    terminated: Object = {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}
    if replica.start_error is not None:
        terminated.update(reason="StartError", message=replica.start_error)
    elif code != 0 and replica.last_words:
        terminated["message"] = replica.last_words
    if replica.started_at is not None:
        terminated["startedAt"] = _seconds(replica.started_at)
    if replica.finished_at is not None:
        terminated["finishedAt"] = _precise(replica.finished_at)
    return terminated


def _staging_state(staging: Staging) -> Object:
    if staging.finished_at is None:
        return {"running": {"startedAt": _seconds(staging.started_at)}}
    terminated: Object = {"exitCode": 0 if staging.error is None else 1, "finishedAt": _precise(staging.finished_at)}
    terminated["reason"] = "Completed" if staging.error is None else "Error"
    if staging.error is not None:
        terminated["message"] = staging.error
    return {"terminated": terminated}


def uploader_job(run: TrainingRun, copy: ArtifactCopy) -> Object:
    """The batch Job of the copy: active, Complete, or Failed (no retries: the runner copies once)."""
    status: Object = {"startTime": _seconds(copy.started_at)}
    finished = _seconds(copy.finished_at) if copy.finished_at is not None else None
    if copy.state is CopyState.COPYING:
        status["active"] = 1
    elif copy.state is CopyState.SUCCEEDED:
        status.update(succeeded=1, conditions=[{"type": "Complete", "status": "True", "lastTransitionTime": finished}])
        if finished is not None:
            status["completionTime"] = finished
    else:
        status.update(
            failed=1,
            conditions=[
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                    "lastTransitionTime": finished,
                }
            ],
        )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": uploader_job_name(run)},
        "spec": {"backoffLimit": 0},
        "status": status,
    }


def uploader_pod(run: TrainingRun, copy: ArtifactCopy) -> Object:
    """The uploader Job's pod; a failed copy's error is its termination message, as ``trainrun upload`` leaves it."""
    state: Object
    if copy.state is CopyState.COPYING:
        phase, state = "Running", {"running": {"startedAt": _seconds(copy.started_at)}}
    else:
        code = 0 if copy.state is CopyState.SUCCEEDED else 1
        terminated: Object = {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}
        if copy.finished_at is not None:
            terminated["finishedAt"] = _precise(copy.finished_at)
        if copy.error:
            terminated["message"] = copy.error
        phase, state = ("Succeeded" if code == 0 else "Failed"), {"terminated": terminated}
    name = uploader_job_name(run)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-local",
            "labels": {COMPONENT_LABEL: UPLOADER_COMPONENT, "batch.kubernetes.io/job-name": name},
        },
        "status": {"phase": phase, "containerStatuses": [{"name": "upload", "state": state}]},
    }


def _condition(condition_type: str, message: str, moment: datetime | None) -> Mapping[str, Any]:
    when = _seconds(moment) if moment is not None else None
    return {
        "type": condition_type,
        "status": "True",
        "reason": f"PyTorchJob{condition_type}",
        "message": message,
        "lastUpdateTime": when,
        "lastTransitionTime": when,
    }


def _seconds(moment: datetime) -> str:
    """As the API server writes times: UTC, whole seconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _precise(moment: datetime) -> str:
    """With microseconds: exits seen at two polls of the runner in the same second keep their order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
