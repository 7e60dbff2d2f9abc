"""Why a run is stuck or failed, in words that name the replica, the resource and the fix.

Turns the observed pods, Events, the PyTorchJob and the uploader Job into a ``Cause``: one CamelCase
reason (Unschedulable, ImagePullBackOff, OOMKilled, ReplicaFailed, BackoffLimitExceeded, ...) and a
message such as "replica worker-0 was OOMKilled (memory limit 16Gi)". The training-operator itself only
says "Created" for a job whose pods cannot start, and "N replica(s) failed" for a failure, so the detail
comes from here. A cause is stalled when waiting cannot end it (a bad image, a pod the API server refuses
for good, such as one naming a PriorityClass that does not exist); a wait that may end (no node free yet,
a claim not bound yet) says how long it has lasted. Used by ``trainrun.status.phase`` (for the operator's
reconcile). Pure.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Sequence
from dataclasses import dataclass

from trainrun.metrics.signals import EXCEPTION_LINE
from trainrun.spec.model import TrainingRun
from trainrun.status.observe import EventView, JobView, PodView, Termination, UploaderView, replica_sort_key
from trainrun.status.shapes import as_text, timestamp

# Waiting reasons that no amount of waiting fixes: the spec (image, secret, config map) must change.
STALLING_WAITING_REASONS = {
    "ErrImagePull": "ImagePullBackOff",
    "ImagePullBackOff": "ImagePullBackOff",
    "InvalidImageName": "InvalidImageName",
    "CreateContainerConfigError": "CreateContainerConfigError",
}
_IMAGE_WAITING_REASONS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName"}
# The API server's words when it refuses a pod that no retry will create until the spec or the cluster
# changes: the reason the run then gives, and the fix. Any other refusal (an exceeded quota) may pass.
PERMANENT_POD_REFUSALS = {
    "no PriorityClass with name": (
        "PriorityClassNotFound", "create that PriorityClass or change spec.resources.priorityClassName"
    ),
    "is invalid": ("InvalidPod", "change the field it names (`trainrun validate` checks what it can before)"),
    "violates PodSecurity": ("PodSecurityViolation", "the namespace's Pod Security level does not allow these pods"),
    # A ResourceQuota that counts requests or limits the pods do not set.
    "must specify": ("ResourcesRequired", "set spec.resources.cpu and memory"),
}
# How the operator recognises its own problem strings (see ``problems_cause``).
# How the operator recognises its own problem strings (see ``problems_cause``): the platform lacks a part.
MISSING_PARTS = (
    ("does not serve pytorchjob (kubeflow.org", "TrainingOperatorMissing"),
    ("does not serve trainjob (trainer.kubeflow.org", "TrainerMissing"),
    ("does not serve kueue", "KueueMissing"),
    ("localqueue", "LocalQueueNotFound"),
)
POOL_FIELD = "spec.resources.pool"
# The scheduler's words for a resource no node has enough of ("3 Insufficient nvidia.com/gpu"), and for
# a pod that waits for its volume rather than for a node (unbound claims, volume node affinity).
_INSUFFICIENT = re.compile(r"Insufficient ([A-Za-z0-9./_-]+?)[,.]?(?=\s|$)")
_VOLUME_MARKERS = ("persistentvolumeclaim", "persistent volume", "volume node affinity", "pvc")
# A termination message can be a whole log tail (terminationMessagePolicy FallbackToLogsOnError).
_MAX_DETAIL = 300
# A replica's last words: the exception a program died of (trainrun.metrics.signals.EXCEPTION_LINE), and
# torchrun's report of a failed child (its own traceback ending in ChildFailedError, a banner, and its
# glog-style log lines).
TORCHRUN_FAILURE_MARK = "torch.distributed.elastic.multiprocessing.errors.ChildFailedError"
TORCHRUN_LOG_LINE = re.compile(r"^[EWI]\d{4} \d\d:\d\d:\d\d")


@dataclass(frozen=True)
class Cause:
    """Why the run is where it is: one CamelCase word, a sentence, and whether only a change can fix it."""

    reason: str
    message: str
    stalled: bool = False


def replica_order(pod: PodView) -> tuple[int, int, str]:
    """Master first, then workers by index: the order people read replicas in."""
    return (*replica_sort_key(pod.replica), pod.name)


def short_detail(text: str | None) -> str | None:
    """The last non-empty line of a (possibly multi-line) message, cut to a readable length."""
    if text is None:
        return None
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    last = lines[-1]
    return last if len(last) <= _MAX_DETAIL else last[: _MAX_DETAIL - 3] + "..."


def error_line(log_tail: str | None) -> str | None:
    """The last ``SomethingError: ...`` line of a replica's log tail, else its last non-empty line.

    torchrun's own report of a failed child (its traceback, the ChildFailedError banner and its
    timestamped log lines) is skipped: the child's error above it is the cause a person wants. Used for
    a container's termination message here and for a local replica's log by trainrun.local.runner.
    """
    if log_tail is None:
        return None
    lines = [line.strip() for line in log_tail.splitlines()]
    report = next((index for index, line in enumerate(lines) if TORCHRUN_FAILURE_MARK in line), None)
    if report is not None:
        tracebacks = [index for index in range(report) if lines[index].startswith("Traceback (most recent call last)")]
        lines = lines[: tracebacks[-1] if tracebacks else report]
    lines = [line for line in lines if line and not TORCHRUN_LOG_LINE.match(line)]
    for line in reversed(lines):
        if EXCEPTION_LINE.match(line):
            return line
    return lines[-1] if lines else None


def stalling_waiting_cause(pods: Sequence[PodView]) -> Cause | None:
    """A container that cannot start until the spec changes: bad image, missing secret or config map."""
    for pod in sorted(pods, key=replica_order):
        for waiting in pod.waiting:
            reason = STALLING_WAITING_REASONS.get(waiting.reason)
            if reason is None:
                continue
            detail = f" ({waiting.message})" if waiting.message else ""
            if waiting.reason in _IMAGE_WAITING_REASONS:
                image = waiting.image or "<unknown image>"
                message = f"replica {pod.replica} cannot pull image {image}: {waiting.reason}{detail}"
            else:
                message = f"replica {pod.replica} cannot start container {waiting.container}: {waiting.reason}{detail}"
            return Cause(reason, message, stalled=True)
    return None


def pod_refusal_cause(message: str, what: str) -> Cause:
    """The API server refused a pod of the run (``what``: "the training-operator cannot create replica
    worker-0"): stalled when no retry can pass (PERMANENT_POD_REFUSALS), else FailedCreatePod."""
    for words, (reason, fix) in PERMANENT_POD_REFUSALS.items():
        if words in message:
            return Cause(reason, f"{what}: {message} (no retry can pass: {fix})", stalled=True)
    return Cause("FailedCreatePod", f"{what}: {message}")


def elapsed(seconds: float) -> str:
    """``42s``, ``4m12s``, ``2h05m``, ``3d04h``: a wait in its two largest units."""
    whole = max(int(seconds), 0)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds_left = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds_left:02d}s"
    return f"{seconds_left}s"


def waited(since: str | None, now: str) -> str | None:
    """How long a wait that began at ``since`` has lasted at ``now``, and since when: ``4m12s (since
    2026-11-30T10:02:03Z)``; the time keeps the status true between two writes. None when unknown."""
    start, end = timestamp(since), timestamp(now)
    if start is None or end is None:
        return None
    return f"{elapsed((end - start).total_seconds())} (since {since})"


def insufficient_resources(pod: PodView, scheduler_message: str) -> str:
    """What the pod asks of the resources the scheduler says no node has enough of: "8 nvidia.com/gpu"."""
    short = [match.group(1) for match in _INSUFFICIENT.finditer(scheduler_message)]
    needs = []
    for resource in dict.fromkeys(short):
        amount = pod.limits.get(resource)
        if amount is not None:
            needs.append(f"{amount} {resource}" if "gpu" in resource.lower() else f"{resource} {amount}")
    return ", ".join(needs)


def unschedulable_cause(
    pods: Sequence[PodView], events: Sequence[EventView], pool: str | None, now: str
) -> Cause | None:
    """The first replica that the scheduler cannot place, with what the scheduler says is missing and how
    long the replica has waited (a node may free up, a claim may bind: not stalled)."""
    for pod in sorted(pods, key=replica_order):
        if pod.scheduled or pod.deleting:
            continue
        scheduler_message = pod.unschedulable_message or _newest_event_message(events, pod.name, "FailedScheduling")
        if scheduler_message is None:
            continue
        said = f": {scheduler_message}" if scheduler_message else ""
        wait = waited(pod.created, now)
        if any(marker in scheduler_message.lower() for marker in _VOLUME_MARKERS):
            how_long = f" has waited {wait}" if wait else " is waiting"
            return Cause("WaitingForVolume", f"replica {pod.replica}{how_long} for its volume{said}")
        where = f"no node in pool {pool}" if pool else "no node"
        needs = insufficient_resources(pod, scheduler_message)
        wanted = f" (needs {needs})" if needs else ""
        how_long = f", waiting {wait}" if wait else ""
        return Cause("Unschedulable", f"{where} can take replica {pod.replica}{wanted}{how_long}{said}")
    return None


def _newest_event_message(events: Sequence[EventView], object_name: str, reason: str) -> str | None:
    matching = [event.message for event in events if event.object_name == object_name and event.reason == reason]
    return matching[-1] if matching else None


def init_failure_cause(pods: Sequence[PodView], *, pending_only: bool = True) -> Cause | None:
    """An init container (input or code staging) that exited with an error before training could start (in
    a pod still Pending, where the kubelet retries it; ``pending_only=False``: also one whose pod failed)."""
    for pod in sorted(pods, key=replica_order):
        if pending_only and pod.phase != "Pending":
            continue
        failures = [item for item in pod.terminations if item.init and item.failed]
        if failures:
            failure = _newest(failures)
            detail = short_detail(failure.message)
            message = f"replica {pod.replica} cannot start: init container {failure.container} {_exit_phrase(failure)}"
            return Cause("InitContainerFailed", f"{message}: {detail}" if detail else message)
    return None


def _newest(terminations: Sequence[Termination]) -> Termination:
    return max(terminations, key=lambda item: item.finished_moment.timestamp() if item.finished_moment else 0.0)


def _exit_phrase(termination: Termination) -> str:
    code = termination.exit_code
    if code is None:
        return f"ended ({termination.reason or 'no exit code'})"
    phrase = f"exited with code {code}"
    if code > 128:
        try:
            phrase += f" ({signal.Signals(code - 128).name})"
        except ValueError:
            pass
    return phrase


def replica_failures(pods: Sequence[PodView]) -> list[tuple[PodView, Termination]]:
    """Every failed exit of a training container, oldest first (exits without a time last)."""
    failures = [(pod, item) for pod in pods for item in pod.terminations if not item.init and item.failed]
    return sorted(
        failures,
        key=lambda pair: (
            pair[1].finished_moment is None,
            pair[1].finished_moment.timestamp() if pair[1].finished_moment else 0.0,
            replica_order(pair[0]),
        ),
    )


def termination_cause(pod: PodView, termination: Termination, *, memory_fallback: str | None) -> Cause:
    """OOMKilled with the memory limit, or the exit code with the container's last words."""
    if termination.reason == "OOMKilled":
        limit = termination.memory_limit or memory_fallback
        memory = f"memory limit {limit}" if limit else "no memory limit set: the node ran out"
        return Cause("OOMKilled", f"replica {pod.replica} was OOMKilled ({memory})")
    message = f"replica {pod.replica} {_exit_phrase(termination)}"
    detail = short_detail(error_line(termination.message))
    return Cause("ReplicaFailed", f"{message}: {detail}" if detail else message)


def first_failure_cause(pods: Sequence[PodView], run: TrainingRun | None) -> Cause | None:
    """The replica that failed first (by finishedAt): later failures are usually the others losing it."""
    failures = replica_failures(pods)
    memory = _spec_memory(run)
    if failures:
        pod, termination = failures[0]
        return termination_cause(pod, termination, memory_fallback=memory)
    init_failure = init_failure_cause(pods, pending_only=False)
    if init_failure is not None:
        return init_failure
    for pod in sorted(pods, key=replica_order):
        if pod.phase == "Failed" and pod.reason is not None:
            # Evicted, DeadlineExceeded, ...: the pod failed without a container exit to show.
            detail = f": {short_detail(pod.message)}" if pod.message else ""
            return Cause("ReplicaFailed", f"replica {pod.replica} failed: {pod.reason}{detail}")
    return None


def latest_failure_cause(pods: Sequence[PodView], run: TrainingRun | None) -> Cause | None:
    """The most recent failed exit: why a replica is restarting now."""
    failures = replica_failures(pods)
    if not failures:
        return None
    pod, termination = failures[-1]
    return termination_cause(pod, termination, memory_fallback=_spec_memory(run))


def _spec_memory(run: TrainingRun | None) -> str | None:
    memory = run.spec.resources.memory if run is not None else None
    return None if memory is None else str(memory)


def job_failure_cause(job: JobView, pods: Sequence[PodView], run: TrainingRun | None) -> Cause:
    """Why the PyTorchJob failed: its backoff limit or deadline (from its own message), else a replica."""
    job_message = job.message_of("Failed")
    lowered = (job_message or "").lower()
    replica_cause = first_failure_cause(pods, run)
    policy = run.spec.run_policy if run is not None else None
    if "backoff limit" in lowered or "deadline" in lowered:
        backoff = "backoff limit" in lowered
        reason = "BackoffLimitExceeded" if backoff else "DeadlineExceeded"
        message = job_message or reason
        if policy is not None:
            setting = (
                f"spec.runPolicy.backoffLimit={policy.backoff_limit}"
                if backoff
                else f"spec.runPolicy.activeDeadlineSeconds={policy.active_deadline_seconds}"
            )
            message += f" ({setting})"
        if replica_cause is not None:
            message += f"; first failure: {replica_cause.message}"
        return Cause(reason, message, stalled=True)
    if replica_cause is not None:
        return Cause(replica_cause.reason, replica_cause.message, stalled=True)
    return Cause("Failed", job_message or "the PyTorchJob failed without saying why", stalled=True)


def upload_failure_message(uri: str, uploader: UploaderView) -> str:
    """ "artifact copy to s3://... failed: <what the uploader said>"."""
    detail = short_detail(uploader.failure_message) or "the uploader Job failed without a message"
    return f"artifact copy to {uri} failed: {detail}"


def problems_cause(problems: Sequence[str]) -> Cause:
    """Configuration problems found by the operator (its ConfigMap, the spec vs the pools, the cluster).

    The reason is read from the first problem: a ``spec.resources.pool`` problem (as
    ``trainrun.spec.problems_with_config`` words it) is PoolNotFound, an unknown registry RegistryNotFound; one saying the cluster lacks the
    backend's kind, Kueue or the run's LocalQueue is TrainingOperatorMissing, TrainerMissing, KueueMissing
    or LocalQueueNotFound; anything else InvalidConfiguration.
    """
    texts = [text for problem in problems if (text := as_text(problem)) is not None] or ["invalid configuration"]
    first = texts[0].lower()
    missing = next((reason for marker, reason in MISSING_PARTS if marker in first), None)
    if first.startswith(POOL_FIELD.lower()) and "unknown pool" in first:
        reason = "PoolNotFound"
    elif "registry" in first.split(":")[0] and "unknown registry" in first:
        reason = "RegistryNotFound"
    elif missing is not None:
        reason = missing
    else:
        reason = "InvalidConfiguration"
    return Cause(reason, "; ".join(texts), stalled=True)
