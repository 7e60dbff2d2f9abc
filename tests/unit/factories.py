"""Fluent builders of the objects the operator reads: TrainingRuns, PyTorchJobs, pods, Events, uploader Jobs.

Each builder is the raw API dict itself (a ``dict`` subclass in the API server's camelCase shape), and
each method changes it and returns it, so a test reads like the situation it sets up:

    pod("run-master-0").gpus(16).pending_unschedulable("0/6 nodes are available: ...")
    pytorchjob("run").running().replica_status("Master", active=1)
    make_run(workers=2, output_uri="s3://models/run", copy_on_failure=True)
    uploader_job("run-upload").failed("Job has reached the specified backoff limit")

Shared by the unit tests of status, render and the controller (``run_factory`` builds TrainingRun
documents; ``make_run`` here adds the settings that matter to a run's status). Times are fixed
(``at(minute)``) so tests never depend on the clock.
"""

from __future__ import annotations

import re
from typing import Any

from run_factory import document
from trainrun.spec import TrainingRun, load_training_run

JOB_NAME_LABEL = "training.kubeflow.org/job-name"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
REPLICA_INDEX_LABEL = "training.kubeflow.org/replica-index"
NOW = "2026-01-01T12:00:00Z"
IMAGE = "ghcr.io/acme/trainer:1.0"


def at(minute: int, second: int = 0) -> str:
    """A fixed RFC 3339 time on 2026-01-01 between 10:00 and 10:59."""
    return f"2026-01-01T10:{minute:02d}:{second:02d}Z"


def make_run(
    name: str = "run",
    *,
    workers: int = 1,
    gpus: int = 0,
    memory: str | None = None,
    cpu: str | None = None,
    pool: str | None = None,
    output_uri: str | None = None,
    copy_on_failure: bool = False,
    cancel: bool = False,
    suspend: bool = False,
    queue: str | None = None,
    generation: int | None = 1,
    backoff_limit: int = 3,
    active_deadline_seconds: int | None = None,
) -> TrainingRun:
    """A parsed TrainingRun named ``name`` (namespace default) with the settings that matter to its status."""
    resources: dict[str, Any] = {"gpus": gpus}
    for key, value in (("memory", memory), ("cpu", cpu), ("pool", pool), ("queue", queue)):
        if value is not None:
            resources[key] = value
    run_policy: dict[str, Any] = {"suspend": suspend, "backoffLimit": backoff_limit}
    if active_deadline_seconds is not None:
        run_policy["activeDeadlineSeconds"] = active_deadline_seconds
    output: dict[str, Any] = {"copyOnFailure": copy_on_failure}
    if output_uri is not None:
        output["uri"] = output_uri
    body = document(
        image=IMAGE, distribution={"workers": workers}, resources=resources, runPolicy=run_policy, output=output, cancel=cancel
    )
    body["metadata"] = {"name": name, "namespace": "default", "uid": "uid-1"}
    if generation is not None:
        body["metadata"]["generation"] = generation
    return load_training_run(body)


def _set_condition(conditions: list[dict[str, Any]], condition: dict[str, Any]) -> None:
    conditions[:] = [item for item in conditions if item.get("type") != condition["type"]]
    conditions.append(condition)


class PodBuilder(dict[str, Any]):
    """A replica pod as the training-operator creates it, named ``<job>-<type>-<index>``."""

    def __init__(self, name: str, *, image: str = IMAGE) -> None:
        match = re.search(r"^(.*)-(master|worker)-(\d+)$", name)
        labels: dict[str, str] = {}
        if match is not None:
            labels = {
                JOB_NAME_LABEL: match.group(1),
                REPLICA_TYPE_LABEL: match.group(2),
                REPLICA_INDEX_LABEL: match.group(3),
                "app.kubernetes.io/component": "replica",
            }
        super().__init__(
            apiVersion="v1",
            kind="Pod",
            metadata={"name": name, "namespace": "default", "labels": labels, "creationTimestamp": at(0)},
            spec={"containers": [{"name": "pytorch", "image": image}]},
            status={"phase": "Pending"},
        )

    # -- spec -------------------------------------------------------------------------------------------
    def limits(self, **amounts: str) -> PodBuilder:
        """Limits of the ``pytorch`` container, e.g. ``limits(cpu="8", memory="64Gi")`` (GPUs: ``gpus``)."""
        self["spec"]["containers"][0].setdefault("resources", {}).setdefault("limits", {}).update(amounts)
        return self

    def gpus(self, count: int, resource: str = "nvidia.com/gpu") -> PodBuilder:
        return self.limits(**{resource: str(count)})

    def memory(self, amount: str) -> PodBuilder:
        return self.limits(memory=amount)

    def init_container(self, name: str = "stage-in") -> PodBuilder:
        self["spec"].setdefault("initContainers", []).append({"name": name, "image": "ghcr.io/trainrun/operator:0.1.0"})
        return self

    # -- metadata ---------------------------------------------------------------------------------------
    def created(self, when: str) -> PodBuilder:
        self["metadata"]["creationTimestamp"] = when
        return self

    def deleting(self, when: str = NOW) -> PodBuilder:
        self["metadata"]["deletionTimestamp"] = when
        return self

    def unlabelled(self) -> PodBuilder:
        self["metadata"]["labels"] = {}
        return self

    # -- scheduling -------------------------------------------------------------------------------------
    def pending_unschedulable(self, message: str) -> PodBuilder:
        self["status"] = {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
            ],
        }
        return self

    def scheduled(self) -> PodBuilder:
        self["status"]["phase"] = "Pending"
        _set_condition(self["status"].setdefault("conditions", []), {"type": "PodScheduled", "status": "True"})
        return self

    def placed(self, node: str) -> PodBuilder:
        """Bound to ``node`` (spec.nodeName) with no PodScheduled condition left in the status, as a
        status written whole by someone else (kwok's stages) leaves it."""
        self["spec"]["nodeName"] = node
        conditions = self["status"].get("conditions", [])
        self["status"]["conditions"] = [item for item in conditions if item.get("type") != "PodScheduled"]
        return self

    # -- container states -------------------------------------------------------------------------------
    def _container_status(self, *, init: bool = False, name: str = "pytorch") -> dict[str, Any]:
        key = "initContainerStatuses" if init else "containerStatuses"
        statuses = self["status"].setdefault(key, [])
        for status in statuses:
            if status["name"] == name:
                return status  # the same dict: the caller edits it in place
        image = "ghcr.io/trainrun/operator:0.1.0" if init else self["spec"]["containers"][0]["image"]
        status = {"name": name, "image": image, "ready": False, "restartCount": 0, "state": {}}
        statuses.append(status)
        return status

    def waiting(self, reason: str, message: str | None = None, *, container: str = "pytorch", init: bool = False) -> PodBuilder:
        self.scheduled()
        waiting: dict[str, Any] = {"reason": reason}
        if message is not None:
            waiting["message"] = message
        self._container_status(init=init, name=container)["state"] = {"waiting": waiting}
        return self

    def container_creating(self) -> PodBuilder:
        return self.waiting("ContainerCreating")

    def image_pull_backoff(self, message: str = "Back-off pulling image", *, reason: str = "ImagePullBackOff") -> PodBuilder:
        return self.waiting(reason, message)

    def init_running(self, name: str = "stage-in") -> PodBuilder:
        self.scheduled()
        self._container_status(init=True, name=name)["state"] = {"running": {"startedAt": at(1)}}
        return self.waiting("PodInitializing")

    def init_failed(self, exit_code: int, message: str | None = None, *, name: str = "stage-in") -> PodBuilder:
        self.scheduled()
        terminated: dict[str, Any] = {"exitCode": exit_code, "reason": "Error", "finishedAt": at(2)}
        if message is not None:
            terminated["message"] = message
        status = self._container_status(init=True, name=name)
        status["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}
        status["lastState"] = {"terminated": terminated}
        status["restartCount"] = 2
        return self.waiting("PodInitializing")

    def init_terminated(self, exit_code: int, message: str | None = None, *, name: str = "stage-in") -> PodBuilder:
        """An init container that exited and was not restarted (restartPolicy Never): the pod is Failed."""
        self.init_failed(exit_code, message, name=name)
        status = self._container_status(init=True, name=name)
        status["state"], status["restartCount"] = status.pop("lastState"), 0
        self["status"]["phase"] = "Failed"
        return self

    def running(self, started: str = at(1)) -> PodBuilder:
        self.scheduled()
        self["status"]["phase"] = "Running"
        self["status"]["startTime"] = started
        status = self._container_status()
        status["state"] = {"running": {"startedAt": started}}
        status["ready"] = True
        return self

    def restarted(
        self, exit_code: int, *, finished_at: str, reason: str = "Error", restarts: int = 1, message: str | None = None
    ) -> PodBuilder:
        """Running again after the container exited (restartPolicy OnFailure): lastState holds the exit."""
        self.running()
        status = self._container_status()
        status["lastState"] = {"terminated": _terminated(exit_code, reason, finished_at, message)}
        status["restartCount"] = restarts
        return self

    def crash_looping(self, exit_code: int, *, finished_at: str, restarts: int = 4, reason: str = "Error") -> PodBuilder:
        self.restarted(exit_code, finished_at=finished_at, reason=reason, restarts=restarts)
        status = self._container_status()
        status["state"] = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}}
        status["ready"] = False
        return self

    def terminated(
        self, exit_code: int, *, finished_at: str, reason: str = "Error", message: str | None = None
    ) -> PodBuilder:
        """The container exited and was not restarted (restartPolicy Never): the pod is Failed (or Succeeded)."""
        self.running()
        self["status"]["phase"] = "Succeeded" if exit_code == 0 else "Failed"
        status = self._container_status()
        status["state"] = {"terminated": _terminated(exit_code, reason, finished_at, message)}
        status["ready"] = False
        return self

    def oom_killed(self, *, finished_at: str) -> PodBuilder:
        return self.terminated(137, finished_at=finished_at, reason="OOMKilled")

    def succeeded(self, finished_at: str = at(30)) -> PodBuilder:
        return self.terminated(0, finished_at=finished_at, reason="Completed")

    def evicted(self, message: str) -> PodBuilder:
        self["status"] = {"phase": "Failed", "reason": "Evicted", "message": message}
        return self

    def disrupted(self, reason: str, message: str, when: str = NOW) -> PodBuilder:
        """The DisruptionTarget condition the control plane sets before it deletes a pod (PodGC, preemption, drain)."""
        _set_condition(
            self["status"].setdefault("conditions", []),
            {"type": "DisruptionTarget", "status": "True", "reason": reason, "message": message, "lastTransitionTime": when},
        )
        return self


def _terminated(exit_code: int, reason: str, finished_at: str, message: str | None) -> dict[str, Any]:
    terminated: dict[str, Any] = {"exitCode": exit_code, "reason": reason, "finishedAt": finished_at}
    if message is not None:
        terminated["message"] = message
    return terminated


def pod(name: str, *, image: str = IMAGE) -> PodBuilder:
    """A replica pod named ``<job>-<master|worker>-<index>``, Pending and not yet scheduled."""
    return PodBuilder(name, image=image)


class PyTorchJobBuilder(dict[str, Any]):
    """A kubeflow.org/v1 PyTorchJob as the training-operator reports it."""

    def __init__(self, name: str = "run", *, workers: int = 1) -> None:
        replica_specs: dict[str, Any] = {"Master": {"replicas": 1, "restartPolicy": "OnFailure"}}
        if workers:
            replica_specs["Worker"] = {"replicas": workers, "restartPolicy": "OnFailure"}
        super().__init__(
            apiVersion="kubeflow.org/v1",
            kind="PyTorchJob",
            metadata={"name": name, "namespace": "default", "generation": 1},
            spec={"pytorchReplicaSpecs": replica_specs, "runPolicy": {"suspend": False}},
            status={"conditions": []},
        )

    def condition(
        self, condition_type: str, status: str = "True", *, message: str = "", reason: str | None = None, when: str = at(0)
    ) -> PyTorchJobBuilder:
        _set_condition(
            self["status"].setdefault("conditions", []),
            {
                "type": condition_type,
                "status": status,
                "reason": reason or f"PyTorchJob{condition_type}",
                "message": message,
                "lastUpdateTime": when,
                "lastTransitionTime": when,
            },
        )
        return self

    def _exclusive(self, condition_type: str, message: str) -> PyTorchJobBuilder:
        # The training-operator turns Running and Restarting off when the other one (or an end) comes.
        for other in ("Running", "Restarting"):
            if other != condition_type and any(c["type"] == other for c in self["status"]["conditions"]):
                self.condition(other, "False")
        return self.condition(condition_type, message=message)

    def created(self) -> PyTorchJobBuilder:
        return self.condition("Created", message=f"PyTorchJob {self['metadata']['name']} is created.")

    def running(self) -> PyTorchJobBuilder:
        return self.created()._exclusive("Running", f"PyTorchJob {self['metadata']['name']} is running.")

    def restarting(self, message: str = "PyTorchJob run is restarting because 1 Worker replica(s) failed.") -> PyTorchJobBuilder:
        return self.created()._exclusive("Restarting", message)

    def succeeded(self, completed: str = at(30)) -> PyTorchJobBuilder:
        self["status"]["completionTime"] = completed
        self.created()._exclusive("Succeeded", f"PyTorchJob {self['metadata']['name']} is successfully completed.")
        return self

    def failed(self, message: str = "PyTorchJob default/run has failed because 1 Worker replica(s) failed.",
               completed: str | None = at(20)) -> PyTorchJobBuilder:
        if completed is not None:
            self["status"]["completionTime"] = completed
        self.created()._exclusive("Failed", message)
        return self

    def suspended(self, *, flag: bool = True) -> PyTorchJobBuilder:
        """Suspended condition True; ``flag`` is the job's spec.runPolicy.suspend (False once un-suspended)."""
        self["spec"]["runPolicy"]["suspend"] = flag
        return self.created().condition("Suspended", message=f"PyTorchJob {self['metadata']['name']} is suspended.")

    def replica_status(self, replica_type: str, *, active: int = 0, succeeded: int = 0, failed: int = 0) -> PyTorchJobBuilder:
        numbers = {key: value for key, value in (("active", active), ("succeeded", succeeded), ("failed", failed)) if value}
        self["status"].setdefault("replicaStatuses", {})[replica_type] = numbers
        return self

    def started(self, when: str = at(1)) -> PyTorchJobBuilder:
        self["status"]["startTime"] = when
        return self

    def without_status(self) -> PyTorchJobBuilder:
        del self["status"]
        return self


def pytorchjob(name: str = "run", *, workers: int = 1) -> PyTorchJobBuilder:
    """A PyTorchJob with one Master and ``workers`` Workers, without conditions yet."""
    return PyTorchJobBuilder(name, workers=workers)


class UploaderJobBuilder(dict[str, Any]):
    """The batch/v1 Job that copies $OUTPUT_DIR to object storage."""

    def __init__(self, name: str = "run-upload") -> None:
        super().__init__(
            apiVersion="batch/v1",
            kind="Job",
            metadata={"name": name, "namespace": "default"},
            spec={"backoffLimit": 3},
            status={},
        )

    def active(self, *, failed_attempts: int = 0) -> UploaderJobBuilder:
        self["status"] = {"active": 1, "startTime": at(31)}
        if failed_attempts:
            self["status"]["failed"] = failed_attempts
        return self

    def succeeded(self, completed: str = at(35)) -> UploaderJobBuilder:
        self["status"] = {
            "succeeded": 1,
            "startTime": at(31),
            "completionTime": completed,
            "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": completed}],
        }
        return self

    def failed(self, message: str = "Job has reached the specified backoff limit", when: str = at(40)) -> UploaderJobBuilder:
        self["status"] = {
            "failed": 4,
            "startTime": at(31),
            "conditions": [
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": message,
                 "lastTransitionTime": when}
            ],
        }
        return self


def uploader_job(name: str = "run-upload") -> UploaderJobBuilder:
    """The uploader Job, just created."""
    return UploaderJobBuilder(name)


def uploader_pod(name: str = "run-upload-abcde", *, job: str = "run-upload", run: str = "run") -> PodBuilder:
    """A pod of the uploader Job (labels of batch/v1 and of our renderer)."""
    built = PodBuilder(name, image="ghcr.io/trainrun/operator:0.1.0")
    built["metadata"]["labels"] = {
        "batch.kubernetes.io/job-name": job,
        "job-name": job,
        "trainrun.dev/run": run,
        "app.kubernetes.io/component": "uploader",
    }
    return built


def event(
    reason: str,
    message: str,
    *,
    name: str,
    kind: str = "Pod",
    when: str = at(0),
    event_type: str = "Warning",
) -> dict[str, Any]:
    """A core/v1 Event about one object."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.{reason.lower()}", "namespace": "default"},
        "involvedObject": {"kind": kind, "name": name, "namespace": "default"},
        "reason": reason,
        "message": message,
        "type": event_type,
        "firstTimestamp": when,
        "lastTimestamp": when,
        "count": 1,
    }
