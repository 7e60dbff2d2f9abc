"""Views of what was observed -> the run's phase, reason and message (a ``Verdict``).

The decision table of ``trainrun.status.build_status`` (the operator's plan and the local runner), in the
order it is checked:

  cancel requested ............................ Cancelled
  job Failed .................................. Failed (Uploading first when spec.output.copyOnFailure)
  job Succeeded ............................... Uploading until the copy is verified, then Completed
  spec.runPolicy.suspend / job suspended ...... Suspended (Queued while Kueue has not admitted the job)
  no job yet .................................. Queued
  a container that cannot start (bad image) .. Queued/Preparing, stalled
  a replica the scheduler cannot place ........ Queued, with how long it has waited
  every replica running (or job Running) ...... Running
  pods the API server refuses for good ........ Queued, stalled (a missing PriorityClass, an invalid pod)
  pods missing or not scheduled ............... Queued, with how long the scheduler has taken so far
  pods scheduled, containers starting ......... Preparing

Configuration problems reported by the operator override any phase that is not finished. Phases only
move forward (Queued, Preparing, Running, Uploading): a replica the training-operator recreates, or a
read that lags behind after an operator restart, changes the reason and message but never takes a
Running run back to Preparing. Only a stop the spec asks for starts over: after Suspended
(spec.runPolicy.suspend), or while Kueue holds the job (preempted, waiting for admission). Pure.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from trainrun.spec.model import TrainingRun
from trainrun.spec.status import Artifacts, Phase
from trainrun.status.failure import (
    Cause,
    init_failure_cause,
    job_failure_cause,
    latest_failure_cause,
    pod_refusal_cause,
    problems_cause,
    replica_order,
    stalling_waiting_cause,
    unschedulable_cause,
    upload_failure_message,
    waited,
)
from trainrun.status.observe import EventView, JobView, PodView, ReplicaState, UploaderView, UploadState, WorkloadView
from trainrun.status.shapes import earliest, timestamp

_PULL_EVENT_IMAGE = re.compile(r'"([^"]+)"')
_DETAILS_SHOWN = 3
_JOB_CREATE_FAILURE_REASONS = ("FailedCreatePod", "FailedCreate")


@dataclass(frozen=True)
class Verdict:
    """Where the run stands and why; ``stalled`` means only a change of spec or cluster can move it."""

    phase: Phase
    reason: str
    message: str
    stalled: bool = False
    completion_time: str | None = None
    stopping: bool = False  # Suspended, but replicas are still stopping


# The phases a run goes through in this order, never back (see the module's docstring).
PROGRESS = (Phase.QUEUED, Phase.PREPARING, Phase.RUNNING, Phase.UPLOADING)


@dataclass(frozen=True)
class Supervision:
    """What the operator's own supervision decided about an active run (``trainrun.plan.restarts``): a
    restart under way, a hang reported, or a failure it will not retry. It wins over what the job says,
    except once training succeeded (a finished run is never restarted)."""

    reason: str
    message: str
    fail: bool = False
    stalled: bool = False

    def applied_to(self, verdict: Verdict, *, now: str) -> Verdict:
        if verdict.phase in (Phase.UPLOADING, Phase.COMPLETED, Phase.CANCELLED) or verdict.stopping:
            return verdict
        if self.fail:
            return Verdict(Phase.FAILED, self.reason, self.message, stalled=True, completion_time=now)
        phase = Phase.RUNNING if verdict.phase is Phase.FAILED else verdict.phase
        return Verdict(phase, self.reason, self.message, stalled=self.stalled)


@dataclass(frozen=True)
class Views:
    """Everything ``phase_verdict`` looks at, already read into views."""

    run: TrainingRun | None
    job: JobView | None
    pods: Sequence[PodView]  # replica pods only
    events: Sequence[EventView]
    uploader: UploaderView | None
    artifacts: Artifacts | None
    problems: Sequence[str]
    pool: str | None
    previous_phase: Phase | None
    now: str
    job_kind: str = "PyTorchJob"  # what the run's job is (or will be): the word the messages use
    pod_creator: str = "the training-operator"  # who creates the replica pods: the words the messages use
    pod_creator_objects: tuple[str, ...] = ()  # the Jobs that create them (JobSet's, for a TrainJob)
    workload: WorkloadView | None = None  # Kueue's Workload of a queued run's job


def phase_verdict(observations: Views) -> Verdict:
    """The phase for these observations; problems win over every phase that is not finished."""
    run = observations.run
    verdict = None if run is None else _observed(observations, run)
    if verdict is not None and (verdict.phase.finished or not observations.problems):
        return _forward_only(verdict, observations)
    cause = problems_cause(observations.problems)
    if verdict is not None and observations.job is not None:
        phase = verdict.phase
    elif observations.previous_phase is not None and not observations.previous_phase.finished:
        phase = observations.previous_phase  # the job was not read: keep what was known
    else:
        phase = Phase.QUEUED
    return _forward_only(Verdict(phase, cause.reason, cause.message, stalled=True), observations)


def _forward_only(verdict: Verdict, observations: Views) -> Verdict:
    """The verdict, kept at the previous phase where it would go back without a stop the spec asked for."""
    before, after = observations.previous_phase, verdict.phase
    if before not in PROGRESS or after not in PROGRESS or PROGRESS.index(after) >= PROGRESS.index(before):
        return verdict
    job = observations.job
    if job is not None and (job.has("Suspended") or job.suspend_requested):
        return verdict  # preempted by Kueue (or suspended by hand): back in the queue, for real
    return replace(verdict, phase=before)


def _observed(observations: Views, run: TrainingRun) -> Verdict:
    job = observations.job
    now = observations.now
    if run.spec.cancel:
        return Verdict(
            Phase.CANCELLED,
            "Cancelled",
            "cancelled (trainrun cancel, or spec.cancel: true): the replicas were stopped; a cancelled run never starts again",
            completion_time=now,
        )
    if job is not None and job.has("Failed"):
        return _failed(observations, run, job)
    if job is not None and job.has("Succeeded"):
        return _succeeded(observations, run, job)
    if run.spec.run_policy.suspend:
        live = [
            pod.replica
            for pod in sorted(observations.pods, key=replica_order)
            if pod.state not in (ReplicaState.SUCCEEDED, ReplicaState.FAILED)
        ]
        if live:
            return Verdict(
                Phase.SUSPENDED,
                "Suspending",
                f"suspending: spec.runPolicy.suspend is true; stopping replica {_names(list(dict.fromkeys(live)))}",
                stopping=True,
            )
        return Verdict(
            Phase.SUSPENDED,
            "Suspended",
            "suspended: spec.runPolicy.suspend is true, so the replicas were stopped; "
            "set it to false to resume from the latest checkpoint",
        )
    if job is None:
        return Verdict(Phase.QUEUED, "Creating", f"creating the {observations.job_kind}")
    if job.has("Suspended") or job.suspend_requested:
        return _job_suspended(run, job, observations.workload)
    return _active(observations, run, job)


def _failed(observations: Views, run: TrainingRun, job: JobView) -> Verdict:
    cause = job_failure_cause(job, observations.pods, run)
    completion = job.completion_time or observations.now
    uri = run.spec.output.uri
    if uri is None or not run.spec.output.copy_on_failure:
        return Verdict(Phase.FAILED, cause.reason, cause.message, stalled=True, completion_time=completion)
    uploader = observations.uploader
    if uploader is None or uploader.state is UploadState.ACTIVE:
        return Verdict(
            Phase.UPLOADING,
            "Uploading",
            f"training failed ({cause.message}); copying $OUTPUT_DIR to {uri} before reporting the failure "
            "(spec.output.copyOnFailure)",
        )
    if uploader.state is UploadState.SUCCEEDED:
        message = f"{cause.message}; outputs copied to {uri}"
    else:
        message = f"{cause.message}; {upload_failure_message(uri, uploader)}"
    return Verdict(Phase.FAILED, cause.reason, message, stalled=True, completion_time=completion)


def _succeeded(observations: Views, run: TrainingRun, job: JobView) -> Verdict:
    uri = run.spec.output.uri
    now = observations.now
    if uri is None:
        return Verdict(
            Phase.COMPLETED,
            "Completed",
            "training succeeded (no spec.output.uri: nothing to copy)",
            completion_time=job.completion_time or now,
        )
    uploader = observations.uploader
    if uploader is None:
        return Verdict(Phase.UPLOADING, "Uploading", f"training succeeded; starting the copy of $OUTPUT_DIR to {uri}")
    if uploader.state is UploadState.FAILED:
        return Verdict(
            Phase.FAILED,
            "UploadFailed",
            upload_failure_message(uri, uploader),
            stalled=True,
            completion_time=uploader.completion_time or now,
        )
    if uploader.state is UploadState.SUCCEEDED:
        artifacts = observations.artifacts
        if artifacts is None:
            return Verdict(Phase.UPLOADING, "Uploading", f"artifacts copied to {uri}; reading the manifest")
        return Verdict(
            Phase.COMPLETED,
            "Completed",
            f"training succeeded; {artifacts.file_count} files ({human_size(artifacts.bytes)}) copied to {artifacts.uri}",
            completion_time=uploader.completion_time or job.completion_time or now,
        )
    if uploader.active == 0 and not uploader.failed_attempts:
        # The Job exists but has no pod: admission refused it (a ResourceQuota, a policy) and the Job
        # controller keeps trying. Say why instead of claiming a copy is under way.
        refused = [event for event in _create_failures(observations, "Job") if event.object_name == uploader.name]
        if refused:
            cause = pod_refusal_cause(refused[-1].message, "training succeeded, but the uploader pod cannot be created")
            return Verdict(Phase.UPLOADING, "UploaderNotCreated", cause.message, stalled=cause.stalled)
    message = f"copying $OUTPUT_DIR to {uri}"
    if uploader.failed_attempts:
        last = f": {uploader.failure_message}" if uploader.failure_message else ""
        message += f" (attempt {uploader.failed_attempts + 1}; the last one failed{last})"
    return Verdict(Phase.UPLOADING, "Uploading", message)


def human_size(count: int) -> str:
    """1234567 -> '1.2 MB' (decimal units, as object stores bill)."""
    if count < 1000:
        return f"{count} B"
    size = float(count)
    unit = "B"
    for unit in ("kB", "MB", "GB", "TB"):  # noqa: B007 - the unit reached is the one printed
        size /= 1000
        if size < 1000:
            break
    return f"{size:.1f} {unit}"


def _job_suspended(run: TrainingRun, job: JobView, workload: WorkloadView | None) -> Verdict:
    queue = run.spec.resources.queue
    if job.suspend_requested is False:
        # Kueue admitted the job (or the run was resumed); its controller has not caught up yet.
        return Verdict(Phase.QUEUED, "Resuming", f"resuming: the {job.kind}'s replicas are being created again")
    if queue is not None:
        waiting = f"waiting for Kueue to admit the {job.kind} (LocalQueue {queue})"
        if workload is not None and workload.evicted_reason is not None:
            said = f": {workload.evicted_message}" if workload.evicted_message else ""
            return Verdict(Phase.QUEUED, workload.evicted_reason, f"evicted by Kueue ({workload.evicted_reason}){said}; {waiting}")
        if workload is not None and workload.pending_message:
            return Verdict(Phase.QUEUED, "WaitingForAdmission", f"{waiting}: {workload.pending_message}")
        return Verdict(Phase.QUEUED, "WaitingForAdmission", waiting)
    return Verdict(
        Phase.SUSPENDED,
        "Suspended",
        job.message_of("Suspended") or f"the {job.kind} is suspended",
    )


def current_replicas(job: JobView, run: TrainingRun, pods: Sequence[PodView]) -> dict[str, PodView | None]:
    """Every replica the job should have (master-0, worker-0, ...) and its newest live pod, if any."""
    expected = job.expected_replicas or {"Master": 1, "Worker": run.spec.distribution.workers}
    replicas: dict[str, PodView | None] = {}
    for replica_type in sorted(expected, key=lambda name: (name != "Master", name)):
        for index in range(expected[replica_type]):
            replicas[f"{replica_type.lower()}-{index}"] = None
    for pod in pods:
        if pod.deleting or pod.replica not in replicas:
            continue
        known = replicas[pod.replica]
        if known is None or _created_key(pod) >= _created_key(known):
            replicas[pod.replica] = pod
    return replicas


def _created_key(pod: PodView) -> float:
    moment = timestamp(pod.created)
    return moment.timestamp() if moment is not None else 0.0


def _active(observations: Views, run: TrainingRun, job: JobView) -> Verdict:
    replicas = current_replicas(job, run, observations.pods)
    live = [pod for pod in replicas.values() if pod is not None]
    states = [pod.state if pod is not None else ReplicaState.UNSCHEDULED for pod in replicas.values()]
    waiting_phase = Phase.QUEUED if ReplicaState.UNSCHEDULED in states else Phase.PREPARING

    blocker = stalling_waiting_cause(live)
    if blocker is not None:
        return Verdict(waiting_phase, blocker.reason, blocker.message, stalled=True)
    unschedulable = unschedulable_cause(live, observations.events, observations.pool, observations.now)
    if unschedulable is not None:
        return Verdict(Phase.QUEUED, unschedulable.reason, unschedulable.message)

    master = replicas.get("master-0")
    master_running = master.state is ReplicaState.RUNNING if master is not None else bool(
        job.replica_statuses.get("Master") and job.replica_statuses["Master"].active
    )
    all_running = bool(states) and all(state in (ReplicaState.RUNNING, ReplicaState.SUCCEEDED) for state in states)
    if all_running or (job.has("Running") and master_running):
        return _running(observations, run, job, replicas)
    if job.has("Restarting"):
        return Verdict(waiting_phase, "Restarting", _restarting_message(observations, run, job))
    init_failure = init_failure_cause(live)
    if init_failure is not None:
        return Verdict(Phase.PREPARING, init_failure.reason, init_failure.message)
    if waiting_phase is Phase.QUEUED:
        return _queued(observations, replicas)
    return _preparing(observations, replicas)


def _running(
    observations: Views, run: TrainingRun, job: JobView, replicas: dict[str, PodView | None]
) -> Verdict:
    if job.has("Restarting"):
        return Verdict(Phase.RUNNING, "Restarting", _restarting_message(observations, run, job))
    for pod in sorted((pod for pod in replicas.values() if pod is not None), key=replica_order):
        if any(waiting.reason == "CrashLoopBackOff" for waiting in pod.waiting):
            cause = latest_failure_cause([pod], run)
            last = f": last time, {cause.message}" if cause is not None else ""
            return Verdict(
                Phase.RUNNING,
                "CrashLoopBackOff",
                f"replica {pod.replica} keeps failing and is restarted (restarts: {pod.restarts}){last}",
            )
    running = sum(1 for pod in replicas.values() if pod is not None and pod.state is ReplicaState.RUNNING)
    if not any(replicas.values()):
        # The pods are not listed yet (a watch lags behind the job): trust the training-operator's count.
        running = sum(counts.active for counts in job.replica_statuses.values())
    return Verdict(Phase.RUNNING, "Running", f"training: {running} of {len(replicas)} replicas running")


def _restarting_message(observations: Views, run: TrainingRun, job: JobView) -> str:
    cause: Cause | None = latest_failure_cause(observations.pods, run)
    if cause is not None:
        return f"restarting after {cause.message}"
    return job.message_of("Restarting") or "the training-operator is restarting failed replicas"


def _queued(observations: Views, replicas: dict[str, PodView | None]) -> Verdict:
    missing = [name for name, pod in replicas.items() if pod is None]
    # The training-operator's Events are about its PyTorchJob; a TrainJob's pods come from JobSet's Job.
    failures = [
        event
        for event in _create_failures(observations, None, "PyTorchJob", "Job")
        if event.object_kind != "Job" or event.object_name in observations.pod_creator_objects
    ]
    creator = observations.pod_creator
    refusal = None
    if missing and failures and len(missing) == len(replicas):
        refusal = pod_refusal_cause(failures[-1].message, f"{creator} cannot create the pods")
    # Some replicas exist: only a failure that names a missing one (pods "job-worker-0" is forbidden ...)
    # explains the wait; an older one about a replica created since does not.
    about_missing = [event for event in failures if any(name in event.message for name in missing)]
    if refusal is None and about_missing:
        refusal = pod_refusal_cause(
            about_missing[-1].message, f"{creator} cannot create replica {_names(missing)}"
        )
    if refusal is not None:
        return Verdict(Phase.QUEUED, refusal.reason, refusal.message, stalled=refusal.stalled)
    if missing:
        return Verdict(
            Phase.QUEUED,
            "WaitingForPods",
            f"waiting for {creator} to create replica {_names(missing)}",
        )
    unplaced = [pod for pod in replicas.values() if pod is not None and pod.state is ReplicaState.UNSCHEDULED]
    wait = waited(earliest([pod.created for pod in unplaced]), observations.now)
    how_long = f" {wait}" if wait else ""
    names = _names([pod.replica for pod in unplaced])
    return Verdict(Phase.QUEUED, "Scheduling", f"waiting{how_long} for the scheduler to place replica {names}")


def _create_failures(observations: Views, *kinds: str | None) -> list[EventView]:
    """Events of a controller that could not create a pod (admission refused it), about objects of these kinds."""
    return [
        event
        for event in observations.events
        if event.reason in _JOB_CREATE_FAILURE_REASONS and event.object_kind in kinds
    ]


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_DETAILS_SHOWN])
    return shown if len(names) <= _DETAILS_SHOWN else f"{shown} and {len(names) - _DETAILS_SHOWN} more"


def _preparing(observations: Views, replicas: dict[str, PodView | None]) -> Verdict:
    details = [
        _preparation(pod, observations.events)
        for pod in replicas.values()
        if pod is not None and pod.state is ReplicaState.PREPARING
    ]
    if not details:
        return Verdict(Phase.PREPARING, "Preparing", "replicas are starting")
    shown = "; ".join(message for _, message in details[:_DETAILS_SHOWN])
    if len(details) > _DETAILS_SHOWN:
        shown += f"; {len(details) - _DETAILS_SHOWN} more replicas are starting"
    return Verdict(Phase.PREPARING, details[0][0], shown)


def _preparation(pod: PodView, events: Sequence[EventView]) -> tuple[str, str]:
    """(reason, message) for one scheduled replica whose containers have not all started."""
    if pod.running_init is not None:
        return "Initializing", f"replica {pod.replica} is running init container {pod.running_init}"
    pulls = [event for event in events if event.object_name == pod.name and event.reason in ("Pulling", "Pulled")]
    if pulls and pulls[-1].reason == "Pulling":
        match = _PULL_EVENT_IMAGE.search(pulls[-1].message)
        image = match.group(1) if match else next((item.image for item in pod.waiting if item.image), "its image")
        return "PullingImage", f"replica {pod.replica} is pulling image {image}"
    waiting = next((item for item in pod.waiting if not item.init), None) or next(iter(pod.waiting), None)
    if waiting is not None:
        # The kubelet's reasons are CamelCase words already; keep only those characters of odd ones.
        reason = re.sub(r"[^A-Za-z0-9]", "", waiting.reason) or "Preparing"
        return reason, f"replica {pod.replica} is {waiting.reason}"
    return "Preparing", f"replica {pod.replica} is starting"
