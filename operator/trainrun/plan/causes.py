"""Why the current replicas of a run failed, as one cause of ``spec.runPolicy.restartOn`` / ``failOn``.

Read by ``trainrun.plan.restarts`` on every reconcile of an active run. The evidence, in the order it
is trusted: a pod the cluster took away (its DisruptionTarget condition, its status reason, or an Event
from the scheduler, the kubelet or the taint manager: NodeLost, Preempted, Evicted), then the first
failed exit of a training container (OOMKilled by the kubelet; else what the container's last words or
its log announced: a CUDA out-of-memory error, a lost NCCL/Gloo peer, a Python exception). Only the
replicas of the current PyTorchJob count: pods created before ``since`` (the last whole-run restart)
belong to the job that was replaced. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from trainrun.metrics.progress import ProgressSnapshot
from trainrun.metrics.signals import log_signal
from trainrun.status.failure import replica_failures, replica_order, termination_cause
from trainrun.status.observe import EventView, PodView, WorkloadView, observe_pod
from trainrun.status.shapes import timestamp

NODE_LOST = "NodeLost"
PREEMPTED = "Preempted"
EVICTED = "Evicted"
OOM_KILLED = "OOMKilled"
HANG = "Hang"  # not a restartOn/failOn cause: spec.runPolicy.onHang decides

# The DisruptionTarget condition's reasons (Kubernetes >= 1.26) and the pod status reasons that say the
# cluster, not the program, ended a replica.
DISRUPTIONS = {
    "DeletionByPodGC": NODE_LOST,  # its node was deleted
    "DeletionByTaintManager": NODE_LOST,  # its node became unreachable (NoExecute taint)
    "PreemptionByScheduler": PREEMPTED,
    "PreemptionByKubeScheduler": PREEMPTED,
    "EvictionByEvictionAPI": EVICTED,  # a drain
    "TerminationByKubelet": EVICTED,  # node pressure, or a node shutdown
}
POD_REASONS = {"NodeLost": NODE_LOST, "Evicted": EVICTED, "Preempting": PREEMPTED, "Shutdown": NODE_LOST, "Terminated": NODE_LOST}
# Events about a replica pod that say the same (their reasons are in trainrun.plan.EVENT_REASONS).
EVENTS = {"Preempted": PREEMPTED, "Evicted": EVICTED, "TaintManagerEviction": NODE_LOST}
_WORDS = {NODE_LOST: "lost its node", PREEMPTED: "was preempted", EVICTED: "was evicted"}


@dataclass(frozen=True)
class Trouble:
    """A cause (NodeLost, ..., UserError, Hang, or Failed when nothing tells why) and what happened."""

    cause: str
    message: str


def classify(
    pods: Sequence[PodView],
    *,
    gone: Sequence[PodView] = (),
    events: Sequence[EventView] = (),
    snapshot: ProgressSnapshot | None = None,
    since: datetime | None = None,
    memory: str | None = None,
    workload: WorkloadView | None = None,
) -> Trouble | None:
    """The cause of the current replicas' failure, None while none failed. ``gone``: replica pods that
    were deleted with a disruption (remembered by the controller); ``memory``: the spec's memory limit;
    ``workload``: Kueue's Workload of a queued run's job, whose eviction by preemption stopped every replica."""
    if workload is not None and workload.evicted_reason == PREEMPTED and (
        since is None or workload.evicted_at is None or workload.evicted_at >= since
    ):
        return Trouble(PREEMPTED, f"Kueue preempted the run ({workload.evicted_message or 'a higher priority workload'})")
    current = sorted((pod for pod in pods if _current(pod, since)), key=replica_order)
    for pod in [*current, *(pod for pod in gone if _current(pod, since))]:
        cause = DISRUPTIONS.get(pod.disruption or "") or POD_REASONS.get(pod.reason or "")
        if cause is not None:
            detail = pod.disruption_message or pod.message or pod.disruption or pod.reason
            return Trouble(cause, f"replica {pod.replica} {_WORDS[cause]} ({detail})")
    names = {pod.name: pod for pod in current}
    for event in events:
        cause = EVENTS.get(event.reason)
        about = names.get(event.object_name or "")
        recent = since is None or (event.moment is not None and event.moment >= since)
        if cause is not None and about is not None and recent:
            return Trouble(cause, f"replica {about.replica} {_WORDS[cause]} ({event.message})")
    failures = replica_failures(current)
    if not failures:
        return None
    pod, termination = failures[0]
    said = termination_cause(pod, termination, memory_fallback=memory)
    if termination.reason == OOM_KILLED:
        return Trouble(OOM_KILLED, said.message)
    logged = snapshot.replicas.get(pod.replica) if snapshot is not None else None
    signal = log_signal(termination.message or "") or (logged.signal.cause if logged and logged.signal else None)
    if signal is None:
        return Trouble("Failed", said.message)
    line = logged.signal.line if logged and logged.signal and logged.signal.cause == signal else None
    return Trouble(signal, f"{said.message}" + (f" (log: {line})" if line and line not in said.message else ""))


def worth_remembering(raw_pod: Mapping[str, Any]) -> bool:
    """Whether a replica pod, as last seen before it was deleted, tells why the run is where it is: the cluster
    took it away (for :func:`classify`, since the pod that replaces it tells nothing), or one of its
    containers failed (a job that fails at its backoff limit may lose its pods with it: a TrainJob's Job
    does). The controller remembers such pods."""
    pod = observe_pod(raw_pod)
    taken = (pod.disruption or "") in DISRUPTIONS or (pod.reason or "") in POD_REASONS
    return taken or any(termination.failed for termination in pod.terminations)


def _current(pod: PodView, since: datetime | None) -> bool:
    if since is None:
        return True
    created = timestamp(pod.created)
    return created is not None and created >= since
