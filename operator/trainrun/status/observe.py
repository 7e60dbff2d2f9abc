"""Raw API dicts -> small typed views: the job (PyTorchJob, or a TrainJob read into the same shape by the
watch projections), its replica pods, the uploader Job, Events.

The first step of ``trainrun.status.build_status`` (the operator's plan, the local runner): everything
later in the package reads these views, never the raw camelCase dicts, so the knowledge of the API's
shapes (training-operator v1 labels and conditions, pod container states, batch/v1 Job conditions)
lives in this one module. Built on ``trainrun.status.shapes``: odd shapes
read as absent, nothing here raises. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from trainrun.render.children import COMPONENT_LABEL, REPLICA_INDEX_LABEL, REPLICA_TYPE_LABEL, UPLOADER_COMPONENT
from trainrun.spec.status import ReplicaCounts
from trainrun.status.shapes import (
    as_count,
    as_int,
    as_mapping,
    as_message,
    as_text,
    field,
    is_true,
    mappings,
    timestamp,
)

BATCH_JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
DEFAULT_JOB_KIND = "PyTorchJob"
# The batch/v1 Job default, used when the uploader Job's spec does not say.
DEFAULT_JOB_BACKOFF_LIMIT = 6
# The training-operator names pods <job>-<replica type>-<index>; used when a pod lacks its labels.
_REPLICA_NAME = re.compile(r"-(master|worker)-(\d+)$")
# A TrainJob's pods (JobSet's Indexed Job): the node rank, and the JobSet they belong to.
COMPLETION_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
_REPLICA_TYPES = {"master": "Master", "worker": "Worker"}


@dataclass(frozen=True)
class JobCondition:
    """One condition of a PyTorchJob or a batch Job."""

    type: str
    true: bool
    reason: str | None
    message: str | None
    last_transition_time: str | None


@dataclass(frozen=True)
class JobView:
    """What the status function needs from the job (a PyTorchJob, or a TrainJob in a PyTorchJob's shape)."""

    kind: str  # PyTorchJob or TrainJob: the words the status uses for it
    name: str | None
    conditions: dict[str, JobCondition]
    replica_statuses: dict[str, ReplicaCounts]
    expected_replicas: dict[str, int]  # from spec.pytorchReplicaSpecs, by replica type; empty when unreadable
    suspend_requested: bool | None  # spec.runPolicy.suspend; None when absent
    start_time: str | None
    completion_time: str | None
    created: str | None = None  # metadata.creationTimestamp: a job older than the last restart is the old one
    deleting: bool = False  # metadata.deletionTimestamp is set

    def has(self, condition_type: str) -> bool:
        """Whether the condition of this type is True."""
        condition = self.conditions.get(condition_type)
        return condition is not None and condition.true

    @property
    def ended(self) -> bool:
        """Whether training is over: the job Succeeded or Failed."""
        return self.has("Succeeded") or self.has("Failed")

    def message_of(self, condition_type: str) -> str | None:
        """The message of the condition of this type, whatever its status."""
        condition = self.conditions.get(condition_type)
        return condition.message if condition is not None else None


@dataclass(frozen=True)
class Waiting:
    """A container that has not started, and the kubelet's reason."""

    container: str
    reason: str
    message: str | None
    image: str | None
    init: bool


@dataclass(frozen=True)
class Termination:
    """A container that exited (now, or before its last restart)."""

    container: str
    exit_code: int | None
    reason: str | None
    message: str | None
    finished_at: str | None
    memory_limit: str | None
    init: bool

    @property
    def failed(self) -> bool:
        return self.reason == "OOMKilled" or (self.exit_code is not None and self.exit_code != 0)

    @property
    def finished_moment(self) -> datetime | None:
        return timestamp(self.finished_at)


class ReplicaState(Enum):
    """How far one replica's pod has got."""

    UNSCHEDULED = 0
    PREPARING = 1
    RUNNING = 2
    SUCCEEDED = 3
    FAILED = 4


@dataclass(frozen=True)
class PodView:
    """One pod of the run: a replica (master-0, worker-1, ...) or an uploader attempt."""

    name: str
    replica: str  # master-0, worker-1; the pod name when it is not a replica pod
    replica_type: str | None  # Master or Worker
    phase: str
    scheduled: bool
    unschedulable_message: str | None  # the scheduler's message; "" when Unschedulable says nothing
    waiting: tuple[Waiting, ...]
    terminations: tuple[Termination, ...]  # current and previous (lastState) exits of every container
    running_init: str | None
    limits: dict[str, str]
    start_time: str | None
    created: str | None
    deleting: bool
    restarts: int
    reason: str | None  # pod-level status.reason, e.g. Evicted
    message: str | None
    disruption: str | None = None  # the DisruptionTarget condition's reason: DeletionByPodGC, PreemptionByScheduler, ...
    disruption_message: str | None = None
    running_since: str | None = None  # when its (latest started) training container began running

    @property
    def ran(self) -> bool:
        """Whether a container of it (not an init container) started: it runs, or it exited."""
        return self.running_since is not None or any(not termination.init for termination in self.terminations)

    @property
    def state(self) -> ReplicaState:
        if self.phase == "Running":
            return ReplicaState.RUNNING
        if self.phase == "Succeeded":
            return ReplicaState.SUCCEEDED
        if self.phase == "Failed":
            return ReplicaState.FAILED
        return ReplicaState.PREPARING if self.scheduled else ReplicaState.UNSCHEDULED


@dataclass(frozen=True)
class EventView:
    """A Kubernetes Event about one of the run's objects."""

    reason: str
    message: str
    object_kind: str | None
    object_name: str | None
    moment: datetime | None


class UploadState(Enum):
    ACTIVE = "active"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class UploaderView:
    """The batch Job that copies $OUTPUT_DIR to the output URI."""

    name: str | None
    state: UploadState
    active: int  # pods running now
    failed_attempts: int
    failure_message: str | None  # the last failed pod's termination message, else the Job's Failed message
    completion_time: str | None


def observe_job(raw: Mapping[str, Any] | None) -> JobView | None:
    """The PyTorchJob's view, or None when there is no job (or it is not a mapping)."""
    if not isinstance(raw, Mapping):
        return None
    status = as_mapping(raw.get("status"))
    counts: dict[str, ReplicaCounts] = {}
    for replica_type, numbers in as_mapping(status.get("replicaStatuses")).items():
        if isinstance(replica_type, str) and isinstance(numbers, Mapping):
            counts[replica_type] = ReplicaCounts(
                active=as_count(numbers.get("active")),
                succeeded=as_count(numbers.get("succeeded")),
                failed=as_count(numbers.get("failed")),
            )
    expected: dict[str, int] = {}
    for replica_type, replica_spec in as_mapping(field(raw, "spec", "pytorchReplicaSpecs")).items():
        if isinstance(replica_type, str) and isinstance(replica_spec, Mapping):
            replicas = replica_spec.get("replicas")
            expected[replica_type] = 1 if replicas is None else as_count(replicas)
    suspend = field(raw, "spec", "runPolicy", "suspend")
    return JobView(
        kind=as_text(raw.get("kind")) or DEFAULT_JOB_KIND,
        name=as_text(field(raw, "metadata", "name")),
        conditions=_conditions(status.get("conditions")),
        replica_statuses=counts,
        expected_replicas=expected,
        suspend_requested=suspend if isinstance(suspend, bool) else None,
        start_time=as_text(status.get("startTime")),
        completion_time=as_text(status.get("completionTime")),
        created=as_text(field(raw, "metadata", "creationTimestamp")),
        deleting=field(raw, "metadata", "deletionTimestamp") is not None,
    )


@dataclass(frozen=True)
class WorkloadView:
    """What Kueue says of a queued run's job (its Workload): admitted or not, and why."""

    admitted: bool
    pending_message: str | None  # QuotaReserved False: why it waits ("insufficient unused quota for ...")
    evicted_reason: str | None  # Evicted True: Preempted, PodsReadyTimeout, InactiveWorkload, ...
    evicted_message: str | None
    evicted_at: datetime | None


def observe_workload(raw: Mapping[str, Any] | None) -> WorkloadView | None:
    """The Workload's view, or None when there is none (not queued, or Kueue has not made it yet)."""
    if not isinstance(raw, Mapping):
        return None
    conditions = _conditions(field(raw, "status", "conditions"))
    reserved = conditions.get("QuotaReserved")
    evicted = conditions.get("Evicted")
    return WorkloadView(
        admitted=bool(conditions.get("Admitted") and conditions["Admitted"].true),
        pending_message=reserved.message if reserved is not None and not reserved.true else None,
        evicted_reason=evicted.reason if evicted is not None and evicted.true else None,
        evicted_message=evicted.message if evicted is not None and evicted.true else None,
        evicted_at=timestamp(evicted.last_transition_time) if evicted is not None and evicted.true else None,
    )


def _conditions(raw: object) -> dict[str, JobCondition]:
    conditions: dict[str, JobCondition] = {}
    for item in mappings(raw):
        condition_type = as_text(item.get("type"))
        if condition_type is None:
            continue
        conditions[condition_type] = JobCondition(
            type=condition_type,
            true=is_true(item.get("status")),
            reason=as_text(item.get("reason")),
            message=as_message(item.get("message")),
            last_transition_time=as_text(item.get("lastTransitionTime")),
        )
    return conditions


def observe_pod(raw: Mapping[str, Any]) -> PodView:
    """One pod's view; the replica name comes from the training-operator's labels, else the pod name."""
    metadata = as_mapping(raw.get("metadata"))
    labels = as_mapping(metadata.get("labels"))
    status = as_mapping(raw.get("status"))
    name = as_text(metadata.get("name")) or "<unnamed pod>"
    replica_type, replica = _replica_identity(name, labels)
    scheduled_condition = next(
        (item for item in mappings(status.get("conditions")) if item.get("type") == "PodScheduled"), None
    )
    scheduled = scheduled_condition is not None and is_true(scheduled_condition.get("status"))
    unschedulable_message: str | None = None
    if scheduled_condition is not None and not scheduled and scheduled_condition.get("reason") == "Unschedulable":
        unschedulable_message = as_message(scheduled_condition.get("message")) or ""
    phase = as_text(status.get("phase")) or "Pending"
    if phase in ("Running", "Succeeded", "Failed") or as_text(field(raw, "spec", "nodeName")) is not None:
        scheduled = True  # a pod bound to a node, or that ran, was placed, whatever its conditions say
    specs = _container_specs(raw)
    waiting: list[Waiting] = []
    terminations: list[Termination] = []
    running_init: str | None = None
    running_since: str | None = None
    restarts = 0
    for key, init in (("initContainerStatuses", True), ("containerStatuses", False)):
        for container_status in mappings(status.get(key)):
            container = as_text(container_status.get("name")) or "<unnamed container>"
            restarts += as_count(container_status.get("restartCount"))
            memory_limit = as_text(field(specs.get(container), "resources", "limits", "memory"))
            state = as_mapping(container_status.get("state"))
            waiting_state = as_mapping(state.get("waiting"))
            waiting_reason = as_text(waiting_state.get("reason"))
            if waiting_reason is not None:
                waiting.append(
                    Waiting(
                        container=container,
                        reason=waiting_reason,
                        message=as_message(waiting_state.get("message")),
                        image=as_text(container_status.get("image"))
                        or as_text(field(specs.get(container), "image")),
                        init=init,
                    )
                )
            if init and isinstance(state.get("running"), Mapping):
                running_init = running_init or container
            started_at = as_text(field(state, "running", "startedAt"))
            if not init and started_at is not None and (running_since is None or started_at > running_since):
                running_since = started_at
            for state_key in ("state", "lastState"):
                terminated = field(container_status, state_key, "terminated")
                if isinstance(terminated, Mapping):
                    terminations.append(
                        Termination(
                            container=container,
                            exit_code=as_int(terminated.get("exitCode")),
                            reason=as_text(terminated.get("reason")),
                            message=as_message(terminated.get("message")),
                            finished_at=as_text(terminated.get("finishedAt")),
                            memory_limit=memory_limit,
                            init=init,
                        )
                    )
    disruption = next(
        (
            item
            for item in mappings(status.get("conditions"))
            if item.get("type") == "DisruptionTarget" and is_true(item.get("status"))
        ),
        {},
    )
    limits: dict[str, str] = {}
    for container_spec in mappings(field(raw, "spec", "containers")):
        for resource, amount in as_mapping(field(container_spec, "resources", "limits")).items():
            text = as_text(amount)
            if isinstance(resource, str) and text is not None:
                limits.setdefault(resource, text)
    return PodView(
        name=name,
        replica=replica,
        replica_type=replica_type,
        phase=phase,
        scheduled=scheduled,
        unschedulable_message=unschedulable_message,
        waiting=tuple(waiting),
        terminations=tuple(terminations),
        running_init=running_init,
        limits=limits,
        start_time=as_text(status.get("startTime")),
        created=as_text(metadata.get("creationTimestamp")),
        deleting=metadata.get("deletionTimestamp") is not None,
        restarts=restarts,
        reason=as_text(status.get("reason")),
        message=as_message(status.get("message")),
        disruption=as_text(disruption.get("reason")) or ("DisruptionTarget" if disruption else None),
        disruption_message=as_message(disruption.get("message")),
        running_since=running_since,
    )


def replica_sort_key(replica: str) -> tuple[int, int]:
    """The order people read replicas in: master-0, worker-0, worker-1, ... worker-10 (by number, not text)."""
    kind, _, index = replica.rpartition("-")
    return (0 if kind == "master" else 1, int(index) if index.isdigit() else 0)


def replica_names(worker_count: int) -> list[str]:
    """master-0 then worker-0 .. worker-(n-1), as the training-operator names the pods' replicas."""
    return ["master-0", *(f"worker-{index}" for index in range(worker_count))]


def replica_name(pod: Mapping[str, Any]) -> str:
    """``master-0``, ``worker-2``: the replica a pod plays (its labels, else its name)."""
    metadata = as_mapping(pod.get("metadata"))
    return _replica_identity(str(metadata.get("name") or ""), as_mapping(metadata.get("labels")))[1]


def _replica_identity(name: str, labels: Mapping[str, Any]) -> tuple[str | None, str]:
    """(Master|Worker|None, "master-0"): from the training-operator's labels, or a TrainJob node's rank (node
    0 is the Master, node i the Worker i - 1, as a PyTorchJob names them), else parsed from the pod name."""
    rank = as_text(labels.get(COMPLETION_INDEX_LABEL)) if JOBSET_NAME_LABEL in labels else None
    if rank is not None and rank.isdigit():
        return ("Master", "master-0") if rank == "0" else ("Worker", f"worker-{int(rank) - 1}")
    type_label = as_text(labels.get(REPLICA_TYPE_LABEL))
    index_label = as_text(labels.get(REPLICA_INDEX_LABEL))
    if type_label is not None and type_label.lower() in _REPLICA_TYPES:
        lowered = type_label.lower()
        if index_label is not None:
            return _REPLICA_TYPES[lowered], f"{lowered}-{index_label}"
    match = _REPLICA_NAME.search(name)
    if match is not None:
        return _REPLICA_TYPES[match.group(1)], f"{match.group(1)}-{match.group(2)}"
    if type_label is not None and type_label.lower() in _REPLICA_TYPES:
        return _REPLICA_TYPES[type_label.lower()], type_label.lower()
    return None, name


def _container_specs(raw: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    specs: dict[str, Mapping[str, Any]] = {}
    for key in ("initContainers", "containers"):
        for container_spec in mappings(field(raw, "spec", key)):
            container = as_text(container_spec.get("name"))
            if container is not None:
                specs[container] = container_spec
    return specs


def is_uploader_pod(raw: Mapping[str, Any], uploader_job_name: str | None) -> bool:
    """Pods of the uploader Job carry our component label and the batch Job's name label."""
    labels = as_mapping(field(raw, "metadata", "labels"))
    if labels.get(COMPONENT_LABEL) == UPLOADER_COMPONENT:
        return True
    return uploader_job_name is not None and any(labels.get(key) == uploader_job_name for key in BATCH_JOB_NAME_LABELS)


def observe_pods(
    raw_pods: Sequence[Mapping[str, Any]] | object, *, uploader_job_name: str | None
) -> tuple[list[PodView], list[PodView]]:
    """(replica pods, uploader pods); pods of neither kind are left out."""
    replicas: list[PodView] = []
    uploaders: list[PodView] = []
    for raw in mappings(raw_pods):
        if is_uploader_pod(raw, uploader_job_name):
            uploaders.append(observe_pod(raw))
            continue
        pod = observe_pod(raw)
        if pod.replica_type is not None:
            replicas.append(pod)
    return replicas, uploaders


def observe_events(raw_events: Sequence[Mapping[str, Any]] | object) -> list[EventView]:
    """Events oldest first (events without a readable time first), so the last match is the newest."""
    events: list[EventView] = []
    for raw in mappings(raw_events):
        reason = as_text(raw.get("reason"))
        if reason is None:
            continue
        involved = as_mapping(raw.get("involvedObject") or raw.get("regarding"))
        moment = None
        for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
            moment = timestamp(raw.get(key))
            if moment is not None:
                break
        moment = moment or timestamp(field(raw, "metadata", "creationTimestamp"))
        events.append(
            EventView(
                reason=reason,
                message=as_message(raw.get("message") or raw.get("note")) or "",
                object_kind=as_text(involved.get("kind")),
                object_name=as_text(involved.get("name")),
                moment=moment,
            )
        )
    events.sort(key=lambda event: (event.moment is not None, event.moment.timestamp() if event.moment else 0.0))
    return events


def observe_uploader(raw: Mapping[str, Any] | None, uploader_pods: Sequence[PodView]) -> UploaderView | None:
    """The uploader Job's view, or None when there is none yet."""
    if not isinstance(raw, Mapping):
        return None
    status = as_mapping(raw.get("status"))
    conditions = _conditions(status.get("conditions"))
    failed_attempts = as_count(status.get("failed"))
    backoff_limit = as_int(field(raw, "spec", "backoffLimit"))
    limit = DEFAULT_JOB_BACKOFF_LIMIT if backoff_limit is None else backoff_limit
    complete = conditions.get("Complete")
    failed = conditions.get("Failed")
    if (complete is not None and complete.true) or as_count(status.get("succeeded")) > 0:
        state = UploadState.SUCCEEDED
        completion = as_text(status.get("completionTime")) or (complete.last_transition_time if complete else None)
    elif (failed is not None and failed.true) or (failed_attempts > limit and as_count(status.get("active")) == 0):
        state = UploadState.FAILED
        completion = failed.last_transition_time if failed is not None else None
    else:
        state = UploadState.ACTIVE
        completion = None
    return UploaderView(
        name=as_text(field(raw, "metadata", "name")),
        state=state,
        active=as_count(status.get("active")),
        failed_attempts=failed_attempts,
        failure_message=_last_pod_failure_message(uploader_pods) or (failed.message if failed else None),
        completion_time=completion,
    )


def _last_pod_failure_message(pods: Sequence[PodView]) -> str | None:
    """The termination message of the newest failed uploader container: what ``trainrun upload`` said."""
    failures = [item for pod in pods for item in pod.terminations if item.failed and item.message]
    if not failures:
        return None
    newest = max(failures, key=lambda item: item.finished_moment.timestamp() if item.finished_moment else 0.0)
    return newest.message

