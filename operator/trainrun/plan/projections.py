"""Watched objects trimmed to the fields the plan and the status read: what the operator keeps in memory.

Applied by the operator's watch caches (``trainrun.controller.informers``) to every object a watch
delivers, so a thousand runs with four pods each cost a few MB, not the whole objects with their managed
fields, env and volumes. ``tests/unit/test_reconcile_plan.py`` checks that a plan made from projections equals one
made from the whole objects. Pure.

Each projection of a kind with many changes a run (pods, PyTorchJobs, TrainingRuns) also has the *shape* of
what it reads: a ``TypedDict`` of the watch event with only those fields (``PodEvent``, ...). The watch decodes
an event into it (``trainrun.kube.body.decode_watch_event``) and makes no objects for the rest (a pod's
managed fields, env, volumes and IPs: two thirds of it); ``tests/unit/test_reconcile_plan.py`` checks that
each projection of the shape's decoding equals the projection of the whole object.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, TypedDict

from trainrun.render.changes import APPLIED_SPEC_ANNOTATION
from trainrun.spec.annotations import SERIES_ANNOTATION

Object = dict[str, Any]


# The fields each projection picks are spelled once, in the shapes the watch decodes into: the tuples below
# are read from them.
class _Identity(TypedDict, total=False):
    """The metadata every projection reads, and the version the watch goes on from."""

    name: Any
    namespace: Any
    uid: Any
    labels: Any
    creationTimestamp: Any
    deletionTimestamp: Any
    resourceVersion: Any


class _Container(TypedDict, total=False):
    name: Any
    image: Any
    resources: Any


class _Condition(TypedDict, total=False):
    type: Any
    status: Any
    reason: Any
    message: Any
    lastTransitionTime: Any


class _ContainerStatus(TypedDict, total=False):
    name: Any
    image: Any
    restartCount: Any
    state: Any
    lastState: Any


def _fields(shape: type, *leaving: str) -> tuple[str, ...]:
    """The keys of the TypedDict SHAPE, in their order, but LEAVING."""
    return tuple(key for key in shape.__annotations__ if key not in leaving)


_METADATA = _fields(_Identity, "resourceVersion")
_CONTAINER_FIELDS = _fields(_Container)
# The pod conditions the status reads (placed or not, and why; taken away by the cluster), and of each
# container's status what says where it is: not its ids, readiness, probes' times or mounts (a third of a pod).
_POD_CONDITIONS = frozenset({"PodScheduled", "DisruptionTarget"})
_TIMED_CONDITION_FIELDS = _fields(_Condition)
_CONDITION_FIELDS = _fields(_Condition, "lastTransitionTime")
_CONTAINER_STATUS_FIELDS = _fields(_ContainerStatus)


def _shared(value: Any) -> Any:
    """VALUE copied with every string in it interned: the label values, images, phases, reasons and times that
    thousands of pods have alike are kept once, not once a pod (a projected pod takes 3.3 KB, 2.2 KB so), and
    the copied dictionaries are no larger than their keys need."""
    if isinstance(value, str):
        return sys.intern(value)
    if isinstance(value, dict):
        return {key: _shared(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shared(item) for item in value]
    return value


def _pick(raw: Mapping[str, Any] | None, keys: tuple[str, ...]) -> Object:
    source = raw if isinstance(raw, Mapping) else {}
    return {key: _shared(source[key]) for key in keys if key in source}


def _metadata(raw: Mapping[str, Any]) -> Object:
    return _pick(raw.get("metadata"), _METADATA)


def _pick_each(raw: object, keys: tuple[str, ...], types: frozenset[str] | None = None) -> list[Object]:
    """KEYS of each mapping in the list RAW (only of those whose type is one of TYPES, when given)."""
    if not isinstance(raw, list):
        return []
    return [_pick(item, keys) for item in raw if isinstance(item, Mapping) and (types is None or item.get("type") in types)]


class _PodSpec(TypedDict, total=False):
    containers: list[_Container]
    initContainers: list[_Container]


class _PodStatus(TypedDict, total=False):
    phase: Any
    reason: Any
    message: Any
    startTime: Any
    conditions: list[_Condition]
    containerStatuses: list[_ContainerStatus]
    initContainerStatuses: list[_ContainerStatus]


class _Pod(TypedDict, total=False):
    metadata: _Identity
    spec: _PodSpec
    status: _PodStatus


class PodEvent(TypedDict):
    """A pod's watch event with what :func:`pod` reads."""

    type: str
    object: _Pod


def pod(raw: Mapping[str, Any]) -> Object:
    """A pod: identity, its containers' images and resources, and its status as the status builder reads it."""
    spec = raw.get("spec") or {}
    raw_status = raw.get("status")
    status: Mapping[str, Any] = raw_status if isinstance(raw_status, Mapping) else {}
    projected = _pick(status, ("phase", "reason", "message", "startTime"))
    if isinstance(status.get("conditions"), list):
        projected["conditions"] = _pick_each(status["conditions"], _CONDITION_FIELDS, _POD_CONDITIONS)
    for key in ("containerStatuses", "initContainerStatuses"):
        if key in status:
            projected[key] = _pick_each(status[key], _CONTAINER_STATUS_FIELDS)
    return {
        "metadata": _metadata(raw),
        "spec": {
            "containers": _pick_each(spec.get("containers"), _CONTAINER_FIELDS),
            "initContainers": _pick_each(spec.get("initContainers"), _CONTAINER_FIELDS),
        },
        "status": projected,
    }


def _job_metadata(raw: Mapping[str, Any]) -> Object:
    """A job's identity and the spec it was rendered from (the applied-spec annotation)."""
    metadata = _metadata(raw)
    annotations = (raw.get("metadata") or {}).get("annotations") or {}
    if APPLIED_SPEC_ANNOTATION in annotations:
        metadata["annotations"] = {APPLIED_SPEC_ANNOTATION: annotations[APPLIED_SPEC_ANNOTATION]}
    return metadata


class _JobIdentity(_Identity, total=False):
    annotations: Any


class _ReplicaSpec(TypedDict, total=False):
    replicas: Any


class _PyTorchJobSpec(TypedDict, total=False):
    runPolicy: Any
    pytorchReplicaSpecs: dict[str, _ReplicaSpec]


class _ReplicaCounts(TypedDict, total=False):
    active: Any
    succeeded: Any
    failed: Any


_REPLICA_COUNT_FIELDS = _fields(_ReplicaCounts)


class _JobStatus(TypedDict, total=False):
    startTime: Any
    completionTime: Any
    conditions: list[_Condition]
    replicaStatuses: dict[str, _ReplicaCounts]


_JOB_TIMES = _fields(_JobStatus, "conditions", "replicaStatuses")


class _PyTorchJob(TypedDict, total=False):
    apiVersion: Any
    kind: Any
    metadata: _JobIdentity
    spec: _PyTorchJobSpec
    status: _JobStatus


class PyTorchJobEvent(TypedDict):
    """A PyTorchJob's watch event with what :func:`pytorchjob` reads (not its replicas' pod templates)."""

    type: str
    object: _PyTorchJob


def pytorchjob(raw: Mapping[str, Any]) -> Object:
    """A PyTorchJob: identity, the spec it was rendered from, its run policy, replica counts, status."""
    spec = raw.get("spec") or {}
    replica_specs = spec.get("pytorchReplicaSpecs") or {}
    return {
        "apiVersion": raw.get("apiVersion"),
        "kind": raw.get("kind"),
        "metadata": _job_metadata(raw),
        "spec": {
            "runPolicy": spec.get("runPolicy") or {},
            "pytorchReplicaSpecs": {
                replica_type: _pick(replica_spec, _fields(_ReplicaSpec))
                for replica_type, replica_spec in replica_specs.items()
                if isinstance(replica_spec, Mapping)
            },
        },
        "status": _job_status(raw.get("status")),
    }


def _job_status(raw: object) -> Object:
    """A PyTorchJob's status as the status builder reads it: its conditions (not their update times, which move
    without news), replica counts (not their label selectors), start and completion times."""
    status: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    kept = _pick(status, _JOB_TIMES)
    if isinstance(status.get("conditions"), list):
        kept["conditions"] = _pick_each(status["conditions"], _TIMED_CONDITION_FIELDS)
    counts = status.get("replicaStatuses")
    if isinstance(counts, Mapping):
        kept["replicaStatuses"] = {
            replica_type: _pick(numbers, _REPLICA_COUNT_FIELDS) for replica_type, numbers in counts.items() if isinstance(numbers, Mapping)
        }
    return kept


# TrainJob condition types -> the PyTorchJob condition types the status reads.
_TRAINJOB_CONDITIONS = {"Complete": "Succeeded", "Failed": "Failed", "Suspended": "Suspended"}


def trainjob(raw: Mapping[str, Any]) -> Object:
    """A TrainJob read into a PyTorchJob's shape, so the status reads either kind alike: its nodes as one
    Master and numNodes - 1 Workers, suspend as the run policy's, Complete as Succeeded (its time as the
    completion time), a failure saying whether it was the deadline or the backoff limit. It has no replica counts: the status counts the pods.
    Its own suspend and deadline are kept for the live patch."""
    spec = raw.get("spec") or {}
    nodes = (spec.get("trainer") or {}).get("numNodes") or 1
    replica_specs: Object = {"Master": {"replicas": 1}}
    if isinstance(nodes, int) and nodes > 1:
        replica_specs["Worker"] = {"replicas": nodes - 1}
    conditions: list[Object] = []
    completion = None
    for condition in (raw.get("status") or {}).get("conditions") or []:
        if not isinstance(condition, Mapping) or condition.get("type") not in _TRAINJOB_CONDITIONS:
            continue
        kind = _TRAINJOB_CONDITIONS[str(condition["type"])]
        message = str(condition.get("message") or "")
        if condition.get("reason") == "DeadlineExceeded" and "deadline" not in message.lower():
            message = f"{message} (active longer than the deadline)".strip()
        elif condition.get("reason") == "FailedJobs":
            # The runtime's Job fails only at its backoff limit (no pod failure policy, no deadline of its own).
            message = f"{message}: its Job reached the specified backoff limit".strip(": ")
        conditions.append({**_shared(condition), "type": kind, "message": message})
        if kind in ("Succeeded", "Failed") and condition.get("status") == "True":
            completion = condition.get("lastTransitionTime")
    status: Object = {"conditions": conditions}
    if completion is not None:
        status["completionTime"] = completion
    kept = {key: spec[key] for key in ("suspend", "activeDeadlineSeconds") if key in spec}
    return {
        "apiVersion": raw.get("apiVersion"),
        "kind": raw.get("kind"),
        "metadata": _job_metadata(raw),
        "spec": {**_shared(kept), "runPolicy": {"suspend": bool(spec.get("suspend"))}, "pytorchReplicaSpecs": replica_specs},
        "status": status,
    }


def workload(raw: Mapping[str, Any]) -> Object:
    """Kueue's Workload of a job: whose it is (its owner references) and its conditions."""
    metadata = _metadata(raw)
    metadata["ownerReferences"] = _pick_each((raw.get("metadata") or {}).get("ownerReferences"), ("kind", "name", "uid"))
    return {"metadata": metadata, "status": {"conditions": _pick_each((raw.get("status") or {}).get("conditions"), _TIMED_CONDITION_FIELDS)}}


def batch_job(raw: Mapping[str, Any]) -> Object:
    """The uploader's batch Job: identity, its retry limit, its status."""
    return {
        "metadata": _metadata(raw),
        "spec": _pick(raw.get("spec"), ("backoffLimit",)),
        "status": _shared(raw.get("status") or {}),
    }


def identity(raw: Mapping[str, Any]) -> Object:
    """Only the name and labels (a claim: the plan only needs to know that it is there)."""
    return {"metadata": _metadata(raw)}


def event(raw: Mapping[str, Any]) -> Object:
    """An Event: what about, why, what it says, when."""
    kept = _pick(raw, ("reason", "message", "type", "lastTimestamp", "eventTime", "firstTimestamp"))
    kept["involvedObject"] = _pick(raw.get("involvedObject"), ("kind", "name", "namespace", "uid"))
    kept["metadata"] = _pick(raw.get("metadata"), ("name", "namespace", "creationTimestamp"))
    return kept


def config_map(raw: Mapping[str, Any]) -> Object:
    return {"metadata": _metadata(raw), "data": _shared(raw.get("data") or {})}


class _RunIdentity(_JobIdentity, total=False):
    generation: Any


_RUN_METADATA = _fields(_RunIdentity, "annotations")


class _TrainingRun(TypedDict, total=False):
    apiVersion: Any
    kind: Any
    metadata: _RunIdentity
    spec: Any
    status: Any


class TrainingRunEvent(TypedDict):
    """A TrainingRun's watch event with what :func:`training_run` reads (not its managed fields)."""

    type: str
    object: _TrainingRun


def training_run(raw: Mapping[str, Any]) -> Object:
    """A TrainingRun without its managed fields and annotations but the series one: what ``plan`` reads."""
    metadata = _pick(raw.get("metadata"), _RUN_METADATA)
    series = ((raw.get("metadata") or {}).get("annotations") or {}).get(SERIES_ANNOTATION)
    if series is not None:
        metadata["annotations"] = {SERIES_ANNOTATION: series}  # the one annotation the plan reads (a sweep's trial)
    return {
        "apiVersion": raw.get("apiVersion"),
        "kind": raw.get("kind"),
        "metadata": metadata,
        "spec": _shared(raw.get("spec") or {}),
        "status": _shared(raw.get("status") or {}),
    }
