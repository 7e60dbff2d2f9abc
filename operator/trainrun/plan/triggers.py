"""Which changes of a run's children its status shows at once, so the controller reconciles the run on
them without waiting for the children to settle.

The controller (``trainrun.controller.operator``) gathers a run's child changes for a moment before it
reconciles (a job's pods are created, placed and started within moments of each other: one pass, one
status write, a settled view). Two moments end that wait, because the status has something to say the
moment they come and what follows changes nothing in it: every replica the job asks for is Running, and
the job has ended (its Succeeded or Failed condition; a TrainJob's Complete reads as Succeeded) with
every replica's pod ended too, whichever of those changes comes last. A job that says it ended while a
replica's pod still runs (a PyTorchJob succeeds with its Master) waits for that pod, or for the window.
Pure: the projected objects of the watch caches in, a yes or no out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from trainrun.status.observe import JobView, is_uploader_pod, observe_job, replica_name

Object = Mapping[str, Any]
_ENDED_PHASES = ("Succeeded", "Failed")


def job_change_at_once(old: Object | None, new: Object | None, pods: Sequence[Object]) -> bool:
    """The job's change (``old`` -> ``new``) ends it, and every replica's pod among the run's ``pods`` has ended."""
    return _ended(observe_job(new)) and not _ended(observe_job(old)) and _replicas_ended(pods)


def pod_change_at_once(old: Object | None, new: Object | None, job: Object | None, pods: Sequence[Object]) -> bool:
    """The pod's change (``old`` -> ``new``; ``pods`` the run's pods after it) is the last replica Running, or
    the last replica's end after the job's."""
    if _phase(new) == "Running" and _phase(old) != "Running":
        return _every_replica_running(observe_job(job), pods)
    if _phase(old) not in _ENDED_PHASES and (new is None or _phase(new) in _ENDED_PHASES):
        return _ended(observe_job(job)) and _replicas_ended(pods)
    return False


def _ended(job: JobView | None) -> bool:
    return job is not None and job.ended


def _phase(pod: Object | None) -> object:
    return ((pod or {}).get("status") or {}).get("phase")


def _replica_pods(pods: Sequence[Object]) -> list[Object]:
    return [pod for pod in pods if not is_uploader_pod(pod, None)]


def _replicas_ended(pods: Sequence[Object]) -> bool:
    return all(_phase(pod) in _ENDED_PHASES for pod in _replica_pods(pods))


def _every_replica_running(job: JobView | None, pods: Sequence[Object]) -> bool:
    """Each replica the job asks for (master-0, worker-0, ...) has a Running pod."""
    if job is None or not job.expected_replicas:
        return False
    wanted = {f"{kind.lower()}-{index}" for kind, count in job.expected_replicas.items() for index in range(count)}
    return wanted <= {replica_name(pod) for pod in _replica_pods(pods) if _phase(pod) == "Running"}
