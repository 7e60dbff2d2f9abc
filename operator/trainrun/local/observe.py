"""What the local runner knows of its processes -> the API-shaped dicts ``trainrun.status.compute_status`` reads.

The local runner plays the cluster's parts itself: the kubelet (it starts each replica as a process and
sees it exit), the training-operator (a run succeeds when the Master exits 0 and fails when a replica
fails before that) and the uploader Job (it copies $OUTPUT_DIR). This module writes what it saw as
those parts would report it: a PyTorchJob with its conditions and replicaStatuses, one pod per replica
with the ``pytorch`` container running or terminated (exit code, and as the termination message the
exception's last line from the replica's log), and the uploader Job with its pod. ``observed_status``
hands them to ``compute_status``, the operator's own status function, so a local run's phase, reason
and message are decided by the same code and read in the same words as on a cluster:
``replica worker-0 exited with code 1: RuntimeError: ...``. Progress and hangs too: the runner's
``ProgressTracker`` snapshot gives ``status.progress`` and, through the operator's hang rule and
``spec.runPolicy.onHang``, a hang reported (Running, Stalled) or failed; a whole-run restart is the
operator's (on a cluster), so here ``onHang: Restart`` reports.

Pure: the runner gives the times and what it read from the logs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from trainrun.metrics import is_master
from trainrun.metrics.progress import ProgressSnapshot
from trainrun.plan.causes import HANG, Trouble
from trainrun.plan.restarts import decide
from trainrun.render.children import (
    COMPONENT_LABEL,
    CONTAINER_NAME,
    JOB_NAME_LABEL,
    REPLICA_INDEX_LABEL,
    REPLICA_TYPE_LABEL,
    job_name,
    uploader_job_name,
)
from trainrun.spec.model import TrainingRun
from trainrun.spec.status import ReplicaCounts, TrainingRunStatus
from trainrun.status import compute_status, count_replicas
from trainrun.status.observe import UPLOADER_COMPONENT, ReplicaState
from trainrun.status.phase import Supervision
from trainrun.status.progress import hang_check, progress_status, spec_epochs
from trainrun.status.shapes import timestamp

Object = dict[str, Any]
# The container runtime reports a process killed by signal N as exit code 128 + N.
SIGNAL_EXIT_BASE = 128


class Outcome(Enum):
    """How the training part of a run ended, by the training-operator's rule."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class ReplicaProcess:
    """One replica process as the runner saw it."""

    name: str  # master-0, worker-0, ...: the pod's replica on a cluster
    started_at: datetime
    exit_code: int | None = None  # None while it runs; negative when a signal killed it (Popen.returncode)
    finished_at: datetime | None = None
    last_words: str | None = None  # the exception's last line from its log (see runner.last_error_line)

    @property
    def replica_type(self) -> str:
        return "Master" if is_master(self.name) else "Worker"

    @property
    def container_exit_code(self) -> int | None:
        """The exit code as a container would report it: killed by SIGKILL is 137."""
        if self.exit_code is None or self.exit_code >= 0:
            return self.exit_code
        return SIGNAL_EXIT_BASE - self.exit_code

    @property
    def state(self) -> ReplicaState:
        if self.exit_code is None:
            return ReplicaState.RUNNING
        return ReplicaState.SUCCEEDED if self.exit_code == 0 else ReplicaState.FAILED


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


@dataclass(frozen=True)
class LocalObservations:
    """The replicas and the copy, written as the API objects ``compute_status`` reads."""

    job: Object
    pods: list[Object]
    uploader_job: Object | None


def training_outcome(replicas: Sequence[ReplicaProcess]) -> Outcome | None:
    """The training-operator's rule: Succeeded once the Master exits 0, Failed once a replica fails first.

    A replica that fails after the Master succeeded (a Worker stopped while it lingered) does not fail
    the run; one that fails at the same moment does.
    """
    master = next((replica for replica in replicas if replica.replica_type == "Master"), None)
    master_done = master.finished_at if master is not None and master.exit_code == 0 else None
    if any(
        replica.state is ReplicaState.FAILED
        and (master_done is None or (replica.finished_at is not None and replica.finished_at <= master_done))
        for replica in replicas
    ):
        return Outcome.FAILED
    return Outcome.SUCCEEDED if master_done is not None else None


def replica_statuses(replicas: Sequence[ReplicaProcess]) -> dict[str, ReplicaCounts]:
    """Active/succeeded/failed processes per replica type, as the PyTorchJob's replicaStatuses count pods."""
    return count_replicas((replica.replica_type, replica.state) for replica in replicas)


def observe(run: TrainingRun, replicas: Sequence[ReplicaProcess], copy: ArtifactCopy | None) -> LocalObservations:
    """The PyTorchJob, its pods and the uploader Job (with its pod) a cluster would show for these processes."""
    pods = [replica_pod(run, replica) for replica in replicas]
    uploader = None
    if copy is not None:
        uploader = uploader_job(run, copy)
        pods.append(uploader_pod(run, copy))
    return LocalObservations(job=pytorchjob(run, replicas), pods=pods, uploader_job=uploader)


def observed_status(
    *,
    run: TrainingRun,
    replicas: Sequence[ReplicaProcess],
    copy: ArtifactCopy | None,
    previous: TrainingRunStatus,
    now: str,
    progress: ProgressSnapshot | None = None,
) -> TrainingRunStatus:
    """The run's status, decided by ``compute_status`` from these observations.

    ``run.spec.output.uri`` is where the runner copies to (the run folder's artifacts/ when the spec
    names none); ``previous.artifacts`` is what the copy wrote. No PyTorchJob or pod exists on this
    machine, so the status names none. ``progress`` is what the replicas' logs said of their steps.
    """
    observations = observe(run, replicas, copy)
    status = compute_status(
        run=run,
        job=observations.job,
        pods=observations.pods,
        events=[],
        uploader_job=observations.uploader_job,
        previous=previous,
        problems=[],
        pending_changes=[],
        pool=None,
        now=now,
        supervision=hang_supervision(run, replicas, progress, now=now) if copy is None else None,
    )
    known = progress_status(progress, epochs=spec_epochs(run))
    finished = status.phase is not None and status.phase.finished
    return status.model_copy(
        update={"job_name": None, "master_pod": None, **({"progress": known} if known and not finished else {})}
    )


def hang_supervision(
    run: TrainingRun, replicas: Sequence[ReplicaProcess], progress: ProgressSnapshot | None, *, now: str
) -> Supervision | None:
    """A hang of replicas that all still run, as ``spec.runPolicy.onHang`` says: reported, or failed."""
    moment = timestamp(now)
    running = {replica.name: replica.started_at for replica in replicas if replica.exit_code is None}
    if moment is None or not replicas or len(running) != len(replicas):
        return None
    policy = run.spec.run_policy
    hang = hang_check(progress, running=running, timeout_seconds=policy.hang_timeout_seconds, now=moment).hang
    if hang is None:
        return None
    if policy.on_hang == "Restart":
        note = "; spec.runPolicy.onHang: Restart restarts runs on a cluster, here the hang is reported"
        return Supervision("Hung", hang.message + note, stalled=True)
    decision = decide(policy, Trouble(HANG, hang.message), restarts_done=0)
    assert decision is not None  # a hang is always reported or failed
    return Supervision(decision.reason, decision.message, fail=decision.kind == "fail", stalled=True)


def pytorchjob(run: TrainingRun, replicas: Sequence[ReplicaProcess]) -> Object:
    """The PyTorchJob as the training-operator reports it: replica specs, conditions, replicaStatuses, times."""
    name = job_name(run)
    counts = replica_statuses(replicas)
    outcome = training_outcome(replicas)
    started = min((replica.started_at for replica in replicas), default=None)
    conditions = [_condition("Created", f"PyTorchJob {name} is created.", started)]
    status: Object = {"conditions": conditions}
    if started is not None:
        status["startTime"] = _seconds(started)
    if outcome is None:
        conditions.append(_condition("Running", f"PyTorchJob {name} is running.", started))
    else:
        finished = _decided_at(replicas, outcome)
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
        "metadata": {"name": name},
        "spec": {"pytorchReplicaSpecs": specs, "runPolicy": {"suspend": False}},
        "status": status,
    }


def _decided_at(replicas: Sequence[ReplicaProcess], outcome: Outcome) -> datetime | None:
    """When the outcome was reached: the Master's success, or the first failure."""
    if outcome is Outcome.SUCCEEDED:
        deciding = [replica.finished_at for replica in replicas if replica.replica_type == "Master"]
    else:
        deciding = [replica.finished_at for replica in replicas if replica.state is ReplicaState.FAILED]
    return min((moment for moment in deciding if moment is not None), default=None)


def replica_pod(run: TrainingRun, replica: ReplicaProcess) -> Object:
    """The replica's pod, named and labelled as the training-operator names them, with its container's state."""
    replica_type, _, index = replica.name.rpartition("-")
    state: Object
    code = replica.container_exit_code
    if code is None:
        phase = "Running"
        state = {"running": {"startedAt": _seconds(replica.started_at)}}
    else:
        phase = "Succeeded" if code == 0 else "Failed"
        terminated: Object = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": _seconds(replica.started_at),
        }
        if replica.finished_at is not None:
            terminated["finishedAt"] = _precise(replica.finished_at)
        if code != 0 and replica.last_words:
            terminated["message"] = replica.last_words
        state = {"terminated": terminated}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{job_name(run)}-{replica.name}",
            "labels": {JOB_NAME_LABEL: job_name(run), REPLICA_TYPE_LABEL: replica_type, REPLICA_INDEX_LABEL: index},
            "creationTimestamp": _precise(replica.started_at),
        },
        "status": {
            "phase": phase,
            "startTime": _seconds(replica.started_at),
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{"name": CONTAINER_NAME, "restartCount": 0, "state": state}],
        },
    }


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
