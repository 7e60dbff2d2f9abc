"""Table-driven tests of ``trainrun.status``: every phase, every failure cause, the kstatus conditions
and the health kstatus itself reads from them (tests/kubecheck), sticky finished phases whose counts
still follow what is observed, phases that only move forward, lastTransitionTime, counts and times,
phase Events, and garbage input."""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import kubecheck
import pytest
from factories import (
    NOW,
    at,
    event,
    make_run,
    pod,
    pytorchjob,
    uploader_job,
    uploader_pod,
)
from trainrun.render.children import uploader_job_name
from trainrun.spec import TrainingRun
from trainrun.spec.status import Artifacts, Condition, Phase, ReplicaCounts, TrainingRunStatus
from trainrun.status import PhaseEvent, StatusInput, build_status, count_replicas, phase_event
from trainrun.status.failure import Cause, elapsed
from trainrun.status.observe import ReplicaState, observe_job, observe_pods

SCHEDULER = "0/6 nodes are available: 6 Insufficient nvidia.com/gpu. preemption: 0/6 nodes are available."
AMD_SCHEDULER = "0/6 nodes are available: 6 Insufficient amd.com/gpu."
CPU_AND_GPU_SCHEDULER = (
    "0/8 nodes are available: 2 node(s) had untolerated taint {nvidia.com/gpu: present}, 4 Insufficient cpu, "
    "6 Insufficient nvidia.com/gpu. preemption: 0/8 nodes are available: 8 Preemption is not helpful for scheduling."
)
VOLUME_SCHEDULER = (
    "0/8 nodes are available: pod has unbound immediate PersistentVolumeClaims. "
    "preemption: 0/8 nodes are available: 8 Preemption is not helpful for scheduling."
)
URI = "s3://models/runs/run"
WORKER_REFUSAL = 'pods "run-worker-0" is forbidden: failed quota: compute: must specify requests.memory for: pytorch'
QUOTA_REFUSAL = (
    'pods "run-upload-x7k2p" is forbidden: exceeded quota: compute, requested: requests.memory=512Mi, '
    "used: requests.memory=0, limited: requests.memory=100Mi"
)
WAITED = "2h00m (since 2026-01-01T10:00:00Z)"  # a pod created at at(0), seen at NOW
PRIORITY_REFUSAL = 'Error creating: pods "run-master-0" is forbidden: no PriorityClass with name urgent was found'
INVALID_POD = (
    'Error creating: Pod "run-worker-0" is invalid: spec.tolerations[0].operator: Invalid value: '
    '"Exists": value must be empty when `operator` is \'Exists\''
)
ARTIFACTS = Artifacts(uri=URI, manifest_uri=f"{URI}/manifest.json", file_count=7, bytes=1_234_567)
BACKOFF = "Job default/run has failed because it has reached the specified backoff limit"
DEADLINE = "Job default/run has failed because it was active longer than specified deadline"


def status_of(
    *,
    run: TrainingRun | None = None,
    job: Mapping[str, Any] | None = None,
    pods: Sequence[Mapping[str, Any]] = (),
    events: Sequence[Mapping[str, Any]] = (),
    uploader: Mapping[str, Any] | None = None,
    previous: TrainingRunStatus | None = None,
    problems: Sequence[str] = (),
    pending: Sequence[str] = (),
    pool: str | None = "a100",
    now: str = NOW,
    generation: int | None = None,
    storage_problem: Cause | None = None,
) -> TrainingRunStatus:
    run = run if run is not None else make_run()
    replicas, uploader_pods = observe_pods(pods, uploader_job_name=uploader_job_name(run))
    return build_status(
        StatusInput(
            run=run,
            now=now,
            previous=previous or TrainingRunStatus(),
            generation=generation,
            job=observe_job(job),
            replicas=replicas,
            uploader_pods=uploader_pods,
            events=events,
            uploader=uploader,
            problems=problems,
            pending_changes=pending,
            pool=pool,
            storage_problem=storage_problem,
        )
    )


def condition(status: TrainingRunStatus, condition_type: str) -> Condition:
    return next(item for item in status.conditions if item.type == condition_type)


def truth(status: TrainingRunStatus) -> tuple[bool, bool, bool]:
    """(Ready, Reconciling, Stalled) as booleans."""
    return tuple(condition(status, kind).status == "True" for kind in ("Ready", "Reconciling", "Stalled"))  # type: ignore[return-value]


@dataclass
class Case:
    """One row of the decision table."""

    id: str
    phase: Phase
    reason: str
    message: str | None = None  # exact
    contains: tuple[str, ...] = ()
    run: TrainingRun = field(default_factory=make_run)
    job: Mapping[str, Any] | None = None
    pods: list[Mapping[str, Any]] = field(default_factory=list)
    events: list[Mapping[str, Any]] = field(default_factory=list)
    uploader: Mapping[str, Any] | None = None
    previous: TrainingRunStatus | None = None
    problems: list[str] = field(default_factory=list)
    pool: str | None = "a100"
    storage_problem: Cause | None = None


def status_for(case: Case, **overrides: Any) -> TrainingRunStatus:
    """The status of one row of the decision table (``overrides`` replace its fields)."""
    given: dict[str, Any] = {
        "run": case.run, "job": case.job, "pods": case.pods, "events": case.events, "uploader": case.uploader,
        "previous": case.previous, "problems": case.problems, "pool": case.pool, "storage_problem": case.storage_problem,
    }
    return status_of(**{**given, **overrides})


master_running = pod("run-master-0").running()
worker_running = pod("run-worker-0").running()

CASES = [
    # -- Queued --------------------------------------------------------------------------------------
    Case("no-job-yet", Phase.QUEUED, "Creating", "creating the PyTorchJob"),
    Case(
        "job-created-no-pods", Phase.QUEUED, "WaitingForPods",
        "waiting for the training-operator to create replica master-0, worker-0",
        job=pytorchjob().created(),
    ),
    Case(
        "job-without-status", Phase.QUEUED, "WaitingForPods", job=pytorchjob().without_status(),
        contains=("master-0",),
    ),
    Case(
        "training-operator-cannot-create-pods", Phase.QUEUED, "FailedCreatePod",
        'the training-operator cannot create the pods: pods "run-master-0" is forbidden: exceeded quota',
        job=pytorchjob().created(),
        events=[event("FailedCreatePod", 'pods "run-master-0" is forbidden: exceeded quota', name="run", kind="PyTorchJob")],
    ),
    Case(
        "training-operator-cannot-create-the-worker", Phase.QUEUED, "ResourcesRequired",
        "the training-operator cannot create replica worker-0: " + WORKER_REFUSAL
        + " (no retry can pass: set spec.resources.cpu and memory)",
        job=pytorchjob().created(), pods=[pod("run-master-0")],
        events=[event("FailedCreatePod", WORKER_REFUSAL, name="run", kind="PyTorchJob")],
    ),
    # Refusals no retry passes: the run is stalled with the API server's words and the fix (issue 24).
    Case(
        "priority-class-not-found", Phase.QUEUED, "PriorityClassNotFound",
        f"the training-operator cannot create the pods: {PRIORITY_REFUSAL} "
        "(no retry can pass: create that PriorityClass or change spec.resources.priorityClassName)",
        job=pytorchjob().created(),
        events=[event("FailedCreatePod", PRIORITY_REFUSAL, name="run", kind="PyTorchJob")],
    ),
    Case(
        "invalid-pod", Phase.QUEUED, "InvalidPod",
        job=pytorchjob().created(), pods=[pod("run-master-0")],
        events=[event("FailedCreatePod", INVALID_POD, name="run", kind="PyTorchJob")],
        contains=("cannot create replica worker-0: Error creating: Pod \"run-worker-0\" is invalid: spec.tolerations[0]",),
    ),
    Case(
        "refusal-of-a-replica-created-since", Phase.QUEUED, "WaitingForPods",
        "waiting for the training-operator to create replica worker-0",
        job=pytorchjob().created(), pods=[pod("run-master-0")],
        events=[event("FailedCreatePod", 'pods "run-master-0" is forbidden: exceeded quota', name="run", kind="PyTorchJob")],
    ),
    Case(
        "pods-not-scheduled-yet", Phase.QUEUED, "Scheduling",
        "waiting 4m12s (since 2026-01-01T11:55:48Z) for the scheduler to place replica master-0, worker-0",
        job=pytorchjob().created(),
        pods=[pod("run-master-0").created("2026-01-01T11:55:48Z"), pod("run-worker-0").created("2026-01-01T11:56:00Z")],
    ),
    Case(
        "pods-not-scheduled-since-an-unknown-time", Phase.QUEUED, "Scheduling",
        "waiting for the scheduler to place replica master-0",
        job=pytorchjob(workers=0).created(), run=make_run(workers=0), pods=[pod("run-master-0").created("garbage")],
    ),
    Case(
        "master-unschedulable-gpus", Phase.QUEUED, "Unschedulable",
        f"no node in pool a100 can take replica master-0 (needs 16 nvidia.com/gpu), waiting {WAITED}: {SCHEDULER}",
        run=make_run(gpus=16, pool="a100"), job=pytorchjob().created(),
        pods=[pod("run-master-0").gpus(16).pending_unschedulable(SCHEDULER), pod("run-worker-0").gpus(16).pending_unschedulable(SCHEDULER)],
    ),
    Case(
        "worker-unschedulable-master-running", Phase.QUEUED, "Unschedulable",
        f"no node in pool a100 can take replica worker-0 (needs 8 amd.com/gpu), waiting {WAITED}: {AMD_SCHEDULER}",
        job=pytorchjob().created(),
        pods=[master_running, pod("run-worker-0").gpus(8, "amd.com/gpu").pending_unschedulable(AMD_SCHEDULER)],
    ),
    Case(
        "unschedulable-cpu-and-gpus", Phase.QUEUED, "Unschedulable",
        f"no node in pool a100 can take replica master-0 (needs cpu 90, 8 nvidia.com/gpu), waiting {WAITED}: "
        f"{CPU_AND_GPU_SCHEDULER}",
        run=make_run(workers=0), job=pytorchjob(workers=0).created(),
        pods=[pod("run-master-0").gpus(8).limits(cpu="90", memory="900Gi").pending_unschedulable(CPU_AND_GPU_SCHEDULER)],
    ),
    Case(
        "waiting-for-a-volume-not-for-gpus", Phase.QUEUED, "WaitingForVolume",
        f"replica master-0 has waited {WAITED} for its volume: {VOLUME_SCHEDULER}",
        run=make_run(workers=0, gpus=1, pool="t4"), job=pytorchjob(workers=0).created(), pool="t4",
        pods=[pod("run-master-0").gpus(1).pending_unschedulable(VOLUME_SCHEDULER)],
    ),
    Case(
        "placed-after-waiting-for-a-volume", Phase.PREPARING, "ContainerCreating", "replica master-0 is ContainerCreating",
        run=make_run(workers=0, gpus=1, pool="t4"), job=pytorchjob(workers=0).created(), pool="t4",
        pods=[pod("run-master-0").gpus(1).container_creating().placed("t4-0")],
        events=[event("FailedScheduling", VOLUME_SCHEDULER, name="run-master-0", when=at(1))],
    ),
    Case(
        "unschedulable-message-from-event", Phase.QUEUED, "Unschedulable",
        f"no node in pool a100 can take replica master-0, waiting {WAITED}: "
        "0/2 nodes are available: 2 node(s) had untolerated taint",
        job=pytorchjob(workers=0).created(), run=make_run(workers=0),
        pods=[pod("run-master-0").gpus(4).pending_unschedulable("")],
        events=[
            event("FailedScheduling", "0/2 nodes are available: old", name="run-master-0", when=at(1)),
            event("FailedScheduling", "0/2 nodes are available: 2 node(s) had untolerated taint", name="run-master-0", when=at(2)),
        ],
    ),
    Case(
        "unschedulable-cpu-only-no-pool", Phase.QUEUED, "Unschedulable",
        f"no node can take replica master-0 (needs memory 64Gi), waiting {WAITED}: "
        "0/3 nodes are available: 3 Insufficient memory.",
        job=pytorchjob(workers=0).created(), run=make_run(workers=0), pool=None,
        pods=[pod("run-master-0").limits(cpu="8", memory="64Gi").pending_unschedulable("0/3 nodes are available: 3 Insufficient memory.")],
    ),
    Case(
        "kueue-not-admitted", Phase.QUEUED, "WaitingForAdmission",
        "waiting for Kueue to admit the PyTorchJob (LocalQueue team-a)",
        run=make_run(queue="team-a"), job=pytorchjob().suspended(),
    ),
    Case(
        "kueue-admitted-resuming", Phase.QUEUED, "Resuming",
        run=make_run(queue="team-a"), job=pytorchjob().suspended(flag=False), contains=("resuming",),
    ),
    # -- Preparing -----------------------------------------------------------------------------------
    Case(
        "staging-inputs", Phase.PREPARING, "Initializing",
        "replica master-0 is running init container stage-in; replica worker-0 is running init container stage-in",
        job=pytorchjob().created(),
        pods=[pod("run-master-0").init_container().init_running(), pod("run-worker-0").init_container().init_running()],
    ),
    Case(
        "pulling-image", Phase.PREPARING, "PullingImage",
        "replica master-0 is pulling image ghcr.io/acme/trainer:1.0",
        run=make_run(workers=0), job=pytorchjob(workers=0).created(), pods=[pod("run-master-0").container_creating()],
        events=[event("Pulling", 'Pulling image "ghcr.io/acme/trainer:1.0"', name="run-master-0", event_type="Normal")],
    ),
    Case(
        "pulled-container-creating", Phase.PREPARING, "ContainerCreating", "replica master-0 is ContainerCreating",
        run=make_run(workers=0), job=pytorchjob(workers=0).created(), pods=[pod("run-master-0").container_creating()],
        events=[
            event("Pulling", 'Pulling image "x"', name="run-master-0", when=at(1)),
            event("Pulled", 'Successfully pulled image "x"', name="run-master-0", when=at(2)),
        ],
    ),
    Case(
        "one-running-one-creating", Phase.PREPARING, "ContainerCreating", "replica worker-0 is ContainerCreating",
        job=pytorchjob().created(), pods=[master_running, pod("run-worker-0").container_creating()],
    ),
    Case(
        "init-container-failed", Phase.PREPARING, "InitContainerFailed",
        "replica master-0 cannot start: init container stage-in exited with code 1: "
        "AccessDenied: s3://datasets/x is not readable with these credentials",
        run=make_run(workers=0), job=pytorchjob(workers=0).created(),
        pods=[pod("run-master-0").init_container().init_failed(
            1, "downloading s3://datasets/x\nAccessDenied: s3://datasets/x is not readable with these credentials")],
    ),
    Case(
        "image-pull-backoff", Phase.PREPARING, "ImagePullBackOff",
        "replica worker-0 cannot pull image ghcr.io/acme/trainer:1.0: ImagePullBackOff "
        '(Back-off pulling image "ghcr.io/acme/trainer:1.0")',
        job=pytorchjob().created(),
        pods=[master_running, pod("run-worker-0").image_pull_backoff('Back-off pulling image "ghcr.io/acme/trainer:1.0"')],
    ),
    Case(
        "err-image-pull", Phase.PREPARING, "ImagePullBackOff",
        "replica master-0 cannot pull image ghcr.io/acme/nope:1: ErrImagePull (manifest unknown)",
        run=make_run(workers=0), job=pytorchjob(workers=0).created(),
        pods=[pod("run-master-0", image="ghcr.io/acme/nope:1").image_pull_backoff("manifest unknown", reason="ErrImagePull")],
    ),
    Case(
        "invalid-image-name", Phase.PREPARING, "InvalidImageName",
        run=make_run(workers=0), job=pytorchjob(workers=0).created(),
        pods=[pod("run-master-0", image="UPPER:case").image_pull_backoff("couldn't parse image reference", reason="InvalidImageName")],
        contains=("cannot pull image UPPER:case: InvalidImageName",),
    ),
    Case(
        "missing-secret", Phase.PREPARING, "CreateContainerConfigError",
        'replica master-0 cannot start container pytorch: CreateContainerConfigError (secret "s3-credentials" not found)',
        run=make_run(workers=0), job=pytorchjob(workers=0).created(),
        pods=[pod("run-master-0").waiting("CreateContainerConfigError", 'secret "s3-credentials" not found')],
    ),
    Case(
        "image-error-while-other-unscheduled", Phase.QUEUED, "ImagePullBackOff",
        job=pytorchjob().created(),
        pods=[pod("run-master-0").image_pull_backoff("no such host"), pod("run-worker-0").pending_unschedulable(SCHEDULER)],
        contains=("replica master-0 cannot pull image",),
    ),
    # -- Running -------------------------------------------------------------------------------------
    Case(
        "all-running", Phase.RUNNING, "Running", "training: 2 of 2 replicas running",
        job=pytorchjob().running(), pods=[master_running, worker_running],
    ),
    Case(
        "all-running-job-still-created", Phase.RUNNING, "Running", "training: 2 of 2 replicas running",
        job=pytorchjob().created(), pods=[master_running, worker_running],
    ),
    Case(
        "job-running-master-running-worker-starting", Phase.RUNNING, "Running", "training: 1 of 2 replicas running",
        job=pytorchjob().running(), pods=[master_running, pod("run-worker-0").container_creating()],
    ),
    Case(
        "job-running-but-master-starting", Phase.PREPARING, "ContainerCreating",
        job=pytorchjob().running(), pods=[pod("run-master-0").container_creating(), worker_running],
    ),
    Case(
        "job-running-pods-not-listed-yet", Phase.RUNNING, "Running", "training: 2 of 2 replicas running",
        job=pytorchjob().running().replica_status("Master", active=1).replica_status("Worker", active=1),
    ),
    Case(
        "crash-loop", Phase.RUNNING, "CrashLoopBackOff",
        "replica worker-0 keeps failing and is restarted (restarts: 4): last time, replica worker-0 exited with code 1",
        job=pytorchjob().running(), pods=[master_running, pod("run-worker-0").crash_looping(1, finished_at=at(5))],
    ),
    Case(
        "restarting-pods-running", Phase.RUNNING, "Restarting",
        "restarting after replica worker-0 exited with code 137 (SIGKILL)",
        job=pytorchjob().running().restarting(),
        pods=[master_running, pod("run-worker-0").restarted(137, finished_at=at(6))],
    ),
    Case(
        "restarting-new-pod-starting", Phase.PREPARING, "Restarting",
        "the training-operator is restarting failed replicas",
        job=pytorchjob().restarting(message=""), pods=[master_running, pod("run-worker-0").container_creating()],
    ),
    # -- Uploading / Completed -----------------------------------------------------------------------
    Case(
        "succeeded-nothing-to-copy", Phase.COMPLETED, "Completed",
        "training succeeded (no spec.output.uri: nothing to copy)",
        job=pytorchjob().succeeded(), pods=[pod("run-master-0").succeeded(), pod("run-worker-0").succeeded()],
    ),
    Case(
        "succeeded-uploader-not-created", Phase.UPLOADING, "Uploading",
        f"training succeeded; starting the copy of $OUTPUT_DIR to {URI}",
        run=make_run(output_uri=URI), job=pytorchjob().succeeded(),
    ),
    Case(
        "uploading", Phase.UPLOADING, "Uploading", f"copying $OUTPUT_DIR to {URI}",
        run=make_run(output_uri=URI), job=pytorchjob().succeeded(), uploader=uploader_job().active(),
    ),
    Case(
        "uploader-pod-refused-by-quota", Phase.UPLOADING, "UploaderNotCreated",
        f"training succeeded, but the uploader pod cannot be created: {QUOTA_REFUSAL}",
        run=make_run(output_uri=URI), job=pytorchjob().succeeded(), uploader=uploader_job(),
        events=[event("FailedCreate", QUOTA_REFUSAL, name="run-upload", kind="Job", when=at(32))],
    ),
    Case(
        "uploader-pod-refused-for-good", Phase.UPLOADING, "UploaderNotCreated",
        contains=("uploader pod cannot be created: ", "violates PodSecurity", "no retry can pass"),
        run=make_run(output_uri=URI), job=pytorchjob().succeeded(), uploader=uploader_job(),
        events=[event("FailedCreate", 'pods "run-upload-x" is forbidden: violates PodSecurity "restricted:latest"',
                      name="run-upload", kind="Job", when=at(32))],
    ),
    Case(
        "uploader-pod-created-after-a-refusal", Phase.UPLOADING, "Uploading", f"copying $OUTPUT_DIR to {URI}",
        run=make_run(output_uri=URI), job=pytorchjob().succeeded(), uploader=uploader_job().active(),
        events=[event("FailedCreate", QUOTA_REFUSAL, name="run-upload", kind="Job", when=at(32))],
    ),
    Case(
        "uploading-retry", Phase.UPLOADING, "Uploading",
        f"copying $OUTPUT_DIR to {URI} (attempt 2; the last one failed: connection reset by peer)",
        run=make_run(output_uri=URI), job=pytorchjob().succeeded(), uploader=uploader_job().active(failed_attempts=1),
        pods=[uploader_pod().terminated(1, finished_at=at(32), message="connection reset by peer")],
    ),
    Case(
        "uploaded-manifest-not-read", Phase.UPLOADING, "Uploading", f"artifacts copied to {URI}; reading the manifest",
        run=make_run(output_uri=URI), job=pytorchjob().succeeded(), uploader=uploader_job().succeeded(),
    ),
    Case(
        "uploaded-and-recorded", Phase.COMPLETED, "Completed",
        f"training succeeded; 7 files (1.2 MB) copied to {URI}",
        run=make_run(output_uri=URI), job=pytorchjob().succeeded(), uploader=uploader_job().succeeded(),
        previous=TrainingRunStatus(phase=Phase.UPLOADING, artifacts=ARTIFACTS),
    ),
    Case(
        "upload-failed-pod-message", Phase.FAILED, "UploadFailed",
        f"artifact copy to {URI} failed: AccessDenied: PutObject on bucket models",
        run=make_run(output_uri=URI), job=pytorchjob().succeeded(), uploader=uploader_job().failed(),
        pods=[uploader_pod().terminated(1, finished_at=at(39), message="copying 7 files\nAccessDenied: PutObject on bucket models")],
    ),
    Case(
        "upload-failed-job-message", Phase.FAILED, "UploadFailed",
        f"artifact copy to {URI} failed: Job has reached the specified backoff limit",
        run=make_run(output_uri=URI), job=pytorchjob().succeeded(), uploader=uploader_job().failed(),
    ),
    # -- Failed --------------------------------------------------------------------------------------
    Case(
        "oom-killed", Phase.FAILED, "OOMKilled", "replica worker-0 was OOMKilled (memory limit 16Gi)",
        job=pytorchjob().failed(), pods=[master_running, pod("run-worker-0").memory("16Gi").oom_killed(finished_at=at(9))],
    ),
    Case(
        "oom-killed-limit-from-spec", Phase.FAILED, "OOMKilled", "replica master-0 was OOMKilled (memory limit 32Gi)",
        run=make_run(memory="32Gi"), job=pytorchjob().failed(), pods=[pod("run-master-0").oom_killed(finished_at=at(9))],
    ),
    Case(
        "first-failure-wins", Phase.FAILED, "ReplicaFailed", "replica worker-0 exited with code 3",
        job=pytorchjob().failed(),
        pods=[
            pod("run-master-0").terminated(1, finished_at=at(5, 30)),
            pod("run-worker-0").terminated(3, finished_at=at(5, 10)),
        ],
    ),
    Case(
        "exit-with-termination-message", Phase.FAILED, "ReplicaFailed",
        "replica master-0 exited with code 1: ValueError: --epochs must be positive",
        run=make_run(workers=0), job=pytorchjob(workers=0).failed(),
        pods=[pod("run-master-0").terminated(1, finished_at=at(3), message="Traceback ...\nValueError: --epochs must be positive\n")],
    ),
    Case(
        "backoff-limit", Phase.FAILED, "BackoffLimitExceeded",
        f"{BACKOFF} (spec.runPolicy.backoffLimit=3); first failure: replica master-0 exited with code 1",
        job=pytorchjob().failed(BACKOFF),
        pods=[pod("run-master-0").restarted(1, finished_at=at(4), restarts=3), pod("run-worker-0").restarted(1, finished_at=at(7))],
    ),
    Case(
        "deadline", Phase.FAILED, "DeadlineExceeded", f"{DEADLINE} (spec.runPolicy.activeDeadlineSeconds=600)",
        run=make_run(active_deadline_seconds=600), job=pytorchjob().failed(DEADLINE),
    ),
    Case(
        "failed-without-pods", Phase.FAILED, "Failed", "PyTorchJob default/run has failed because 1 Worker replica(s) failed.",
        job=pytorchjob().failed(),
    ),
    Case(
        "evicted", Phase.FAILED, "ReplicaFailed",
        "replica worker-0 failed: Evicted: The node was low on resource: ephemeral-storage.",
        job=pytorchjob().failed(), pods=[master_running, pod("run-worker-0").evicted("The node was low on resource: ephemeral-storage.")],
    ),
    Case(
        "failed-copy-on-failure-uploading", Phase.UPLOADING, "Uploading",
        f"training failed (replica worker-0 exited with code 2); copying $OUTPUT_DIR to {URI} before reporting "
        "the failure (spec.output.copyOnFailure)",
        run=make_run(output_uri=URI, copy_on_failure=True), job=pytorchjob().failed(),
        pods=[pod("run-worker-0").terminated(2, finished_at=at(8))], uploader=uploader_job().active(),
    ),
    Case(
        "failed-copy-on-failure-copied", Phase.FAILED, "ReplicaFailed",
        f"replica worker-0 exited with code 2; outputs copied to {URI}",
        run=make_run(output_uri=URI, copy_on_failure=True), job=pytorchjob().failed(),
        pods=[pod("run-worker-0").terminated(2, finished_at=at(8))], uploader=uploader_job().succeeded(),
    ),
    Case(
        "failed-copy-on-failure-copy-failed", Phase.FAILED, "ReplicaFailed",
        f"replica worker-0 exited with code 2; artifact copy to {URI} failed: Job has reached the specified backoff limit",
        run=make_run(output_uri=URI, copy_on_failure=True), job=pytorchjob().failed(),
        pods=[pod("run-worker-0").terminated(2, finished_at=at(8))], uploader=uploader_job().failed(),
    ),
    Case(
        "failed-without-copy-on-failure", Phase.FAILED, "ReplicaFailed", "replica worker-0 exited with code 2",
        run=make_run(output_uri=URI), job=pytorchjob().failed(), pods=[pod("run-worker-0").terminated(2, finished_at=at(8))],
    ),
    # -- Cancelled / Suspended -----------------------------------------------------------------------
    Case("cancel-before-start", Phase.CANCELLED, "Cancelled", run=make_run(cancel=True), contains=("spec.cancel",)),
    Case(
        "cancel-while-running", Phase.CANCELLED, "Cancelled", run=make_run(cancel=True),
        job=pytorchjob().running().suspended(), pods=[master_running, worker_running],
    ),
    Case(
        "suspend-requested", Phase.SUSPENDED, "Suspending",
        "suspending: spec.runPolicy.suspend is true; stopping replica master-0, worker-0",
        run=make_run(suspend=True), job=pytorchjob().running(), pods=[master_running, worker_running],
    ),
    Case(
        "suspended-replicas-stopped", Phase.SUSPENDED, "Suspended", run=make_run(suspend=True),
        job=pytorchjob().suspended(), pods=[pod("run-worker-0").succeeded()],
        contains=("spec.runPolicy.suspend is true, so the replicas were stopped",),
    ),
    Case(
        "job-suspended", Phase.SUSPENDED, "Suspended", "PyTorchJob run is suspended.", job=pytorchjob().suspended(),
    ),
    # -- Configuration problems ----------------------------------------------------------------------
    Case(
        "unknown-pool", Phase.QUEUED, "PoolNotFound",
        "spec.resources.pool: unknown pool 'h100'; the operator knows: a100, t4 (ConfigMap trainrun-operator-config)",
        problems=["spec.resources.pool: unknown pool 'h100'; the operator knows: a100, t4 (ConfigMap trainrun-operator-config)"],
    ),
    Case(
        "training-operator-missing", Phase.QUEUED, "TrainingOperatorMissing",
        problems=["the cluster does not serve PyTorchJob (kubeflow.org/v1): install the Kubeflow training-operator, "
                  "then the run starts by itself"],
        contains=("install the Kubeflow training-operator",),
    ),
    Case(
        "too-many-gpus", Phase.QUEUED, "InvalidConfiguration",
        "spec.resources.gpus: 16 GPUs per replica, but nodes of pool 't4' have 4; x; "
        "the operator configuration is invalid",
        problems=["spec.resources.gpus: 16 GPUs per replica, but nodes of pool 't4' have 4; x",
                  "the operator configuration is invalid"],
    ),
    Case(
        "problem-while-running-keeps-phase", Phase.RUNNING, "InvalidConfiguration",
        problems=["the operator configuration (ConfigMap x) is invalid: bad yaml"],
        previous=TrainingRunStatus(phase=Phase.RUNNING), contains=("bad yaml",),
    ),
    Case(
        "problem-with-job-observed", Phase.RUNNING, "InvalidConfiguration",
        problems=["the operator configuration is invalid"], job=pytorchjob().running(), pods=[master_running, worker_running],
    ),
    Case(
        "storage-retried", Phase.UPLOADING, "UploadNotVerified",
        "reading the manifest of the copy: connection refused (attempt 2); trying again in 10 s, at 2026-01-01T12:00:10Z",
        run=make_run(output_uri=URI), job=pytorchjob().succeeded(), uploader=uploader_job().succeeded(),
        storage_problem=Cause(
            "UploadNotVerified",
            "reading the manifest of the copy: connection refused (attempt 2); trying again in 10 s, at 2026-01-01T12:00:10Z",
        ),
    ),
    Case(
        "problem-does-not-override-finished", Phase.COMPLETED, "Completed",
        problems=["spec.resources.pool: unknown pool 'x'"], job=pytorchjob().succeeded(),
    ),
    # -- Pods without the training-operator's labels, stale and deleting pods ------------------------
    Case(
        "unlabelled-pods-by-name", Phase.RUNNING, "Running",
        job=pytorchjob().created(), pods=[pod("run-master-0").running().unlabelled(), pod("run-worker-0").running().unlabelled()],
    ),
    Case(
        "newest-pod-of-a-replica-counts", Phase.RUNNING, "Running",
        job=pytorchjob().created(),
        pods=[master_running, pod("run-worker-0").created(at(0)).terminated(143, finished_at=at(3)),
              pod("run-worker-0").created(at(4)).running()],
    ),
    Case(
        "deleting-pods-ignored", Phase.QUEUED, "WaitingForPods",
        job=pytorchjob().created(), pods=[pod("run-master-0").running().deleting(), pod("run-worker-0").running().deleting()],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_decision_table(case: Case) -> None:
    status = status_for(case)
    assert (status.phase, status.reason) == (case.phase, case.reason), status.message
    if case.message is not None:
        assert status.message == case.message
    for part in case.contains:
        assert part in (status.message or "")
    # Every status names its cause in the message and has the three kstatus conditions.
    assert status.message
    assert [item.type for item in status.conditions] == ["Ready", "Reconciling", "Stalled"]


def test_case_ids_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))


# -- kstatus conditions per phase ----------------------------------------------------------------------
CONDITION_ROWS = [
    # (case id, Ready, Reconciling, Stalled, health as kstatus computes it)
    ("no-job-yet", False, True, False, "InProgress"),
    ("master-unschedulable-gpus", False, True, False, "InProgress"),
    ("waiting-for-a-volume-not-for-gpus", False, True, False, "InProgress"),
    ("pods-not-scheduled-yet", False, True, False, "InProgress"),
    ("uploader-pod-refused-by-quota", False, True, False, "InProgress"),
    # Refused for good: Failed for kstatus, so Flux and Argo CD stop waiting (issue 24).
    ("priority-class-not-found", False, False, True, "Failed"),
    ("invalid-pod", False, False, True, "Failed"),
    ("training-operator-cannot-create-the-worker", False, False, True, "Failed"),
    ("uploader-pod-refused-for-good", False, False, True, "Failed"),
    ("kueue-not-admitted", False, True, False, "InProgress"),
    ("pulling-image", False, True, False, "InProgress"),
    ("image-pull-backoff", False, False, True, "Failed"),
    ("err-image-pull", False, False, True, "Failed"),
    ("invalid-image-name", False, False, True, "Failed"),
    ("missing-secret", False, False, True, "Failed"),
    ("all-running", False, True, False, "InProgress"),
    ("crash-loop", False, True, False, "InProgress"),
    ("uploading", False, True, False, "InProgress"),
    ("failed-copy-on-failure-uploading", False, True, False, "InProgress"),
    ("uploaded-and-recorded", True, False, False, "Current"),
    ("succeeded-nothing-to-copy", True, False, False, "Current"),
    ("oom-killed", False, False, True, "Failed"),
    ("backoff-limit", False, False, True, "Failed"),
    ("upload-failed-pod-message", False, False, True, "Failed"),
    ("cancel-while-running", True, False, False, "Current"),
    ("suspend-requested", False, True, False, "InProgress"),
    ("suspended-replicas-stopped", True, False, False, "Current"),
    ("job-suspended", True, False, False, "Current"),
    ("unknown-pool", False, False, True, "Failed"),
    ("training-operator-missing", False, False, True, "Failed"),
    ("problem-while-running-keeps-phase", False, False, True, "Failed"),
    ("storage-retried", False, True, False, "InProgress"),
]
_BY_ID = {case.id: case for case in CASES}


@pytest.mark.parametrize(("case_id", "ready", "reconciling", "stalled"), [row[:4] for row in CONDITION_ROWS],
                         ids=[row[0] for row in CONDITION_ROWS])
def test_kstatus_conditions(case_id: str, ready: bool, reconciling: bool, stalled: bool) -> None:
    case = _BY_ID[case_id]
    run = case.run.model_copy(update={"metadata": case.run.metadata.model_copy(update={"generation": 7})})
    status = status_for(case, run=run)
    assert truth(status) == (ready, reconciling, stalled)
    assert status.observed_generation == 7
    for item in status.conditions:
        assert item.observed_generation == 7
        assert item.reason == status.reason
        assert item.last_transition_time == NOW
        assert item.reason.isalnum() and item.reason[0].isupper()


def test_condition_rows_cover_every_phase() -> None:
    covered = {_BY_ID[row[0]].phase for row in CONDITION_ROWS}
    assert covered == set(Phase)


def test_health_as_kstatus_computes_it_in_every_phase() -> None:
    """Flux's health checks, kpt and Config Sync read our conditions with kstatus itself (cli-utils, built
    from Go modules): a finished run never reads as still in progress, a failed or stalled one as Failed."""
    rows = [*CONDITION_ROWS, ("sticky-cancelled", True, False, False, "Current")]
    objects = []
    for case_id, *_ in rows:
        if case_id == "sticky-cancelled":  # a reconcile after the cancel: the finished phase is kept
            status = status_of(run=make_run(cancel=True), previous=status_of(run=make_run(cancel=True)), now=at(50))
        else:
            status = status_for(_BY_ID[case_id])
        metadata = {"name": "run", "namespace": "default", "generation": 1}
        objects.append({"apiVersion": "trainrun.dev/v1alpha1", "kind": "TrainingRun", "metadata": metadata,
                        "status": status.to_patch()})
    answers = kubecheck.ask("kstatus", objects)
    assert {row[0]: answer["status"] for row, answer in zip(rows, answers, strict=True)} == {row[0]: row[4] for row in rows}


# -- lastTransitionTime --------------------------------------------------------------------------------
def test_last_transition_time_kept_while_status_unchanged_and_moved_when_it_changes() -> None:
    queued = status_of(job=pytorchjob().created(), now=at(1))
    preparing = status_of(
        job=pytorchjob().created(), pods=[pod("run-master-0").container_creating(), pod("run-worker-0").container_creating()],
        previous=queued, now=at(2),
    )
    assert preparing.phase is Phase.PREPARING
    assert all(item.last_transition_time == at(1) for item in preparing.conditions)  # all still False/True/False
    failed = status_of(
        job=pytorchjob().failed(), pods=[pod("run-worker-0").terminated(1, finished_at=at(3))], previous=preparing, now=at(4)
    )
    times = {item.type: item.last_transition_time for item in failed.conditions}
    assert times == {"Ready": at(1), "Reconciling": at(4), "Stalled": at(4)}


def test_condition_without_previous_time_gets_now() -> None:
    previous = TrainingRunStatus(
        phase=Phase.QUEUED, conditions=[Condition(type="Reconciling", status="True", reason="Creating")]
    )
    status = status_of(previous=previous, now=at(9))
    assert condition(status, "Reconciling").last_transition_time == at(9)


# -- Finished phases are sticky ------------------------------------------------------------------------
def _finished(phase: Phase, reason: str, **extra: Any) -> TrainingRunStatus:
    ready = phase in (Phase.COMPLETED, Phase.CANCELLED)
    stalled = phase is Phase.FAILED
    return TrainingRunStatus(
        phase=phase, reason=reason, message=f"{phase.value} earlier", observed_generation=1, job_name="run",
        completion_time=at(30), start_time=at(1),
        conditions=[
            Condition(type="Ready", status=str(ready), reason=reason, last_transition_time=at(30), observed_generation=1),
            Condition(type="Reconciling", status="False", reason=reason, last_transition_time=at(30), observed_generation=1),
            Condition(type="Stalled", status=str(stalled), reason=reason, last_transition_time=at(30), observed_generation=1),
        ],
        **extra,
    )


STICKY_ROWS = [
    ("completed-then-job-failed", _finished(Phase.COMPLETED, "Completed"), pytorchjob().failed(), make_run()),
    ("completed-then-job-gone", _finished(Phase.COMPLETED, "Completed"), None, make_run()),
    ("failed-then-job-running", _finished(Phase.FAILED, "OOMKilled"), pytorchjob().running(), make_run()),
    ("failed-then-suspend", _finished(Phase.FAILED, "ReplicaFailed"), pytorchjob().suspended(), make_run(suspend=True)),
    ("cancelled-then-uncancelled", _finished(Phase.CANCELLED, "Cancelled"), pytorchjob().running(), make_run()),
    ("completed-then-cancel", _finished(Phase.COMPLETED, "Completed"), pytorchjob().succeeded(), make_run(cancel=True)),
]


@pytest.mark.parametrize(("previous", "job", "run"), [row[1:] for row in STICKY_ROWS], ids=[row[0] for row in STICKY_ROWS])
def test_finished_phases_are_sticky(previous: TrainingRunStatus, job: Mapping[str, Any] | None, run: TrainingRun) -> None:
    bumped = run.model_copy(update={"metadata": run.metadata.model_copy(update={"generation": 2})})
    status = status_of(run=bumped, job=job, pods=[pod("run-master-0").running()], previous=previous, now=at(50),
                       problems=["spec.resources.pool: unknown pool 'x'"])
    assert (status.phase, status.reason, status.message) == (previous.phase, previous.reason, previous.message)
    assert status.completion_time == at(30) and status.start_time == at(1)
    assert status.observed_generation == 2
    assert all(item.observed_generation == 2 and item.last_transition_time == at(30) for item in status.conditions)
    assert truth(status) == (previous.phase is not Phase.FAILED, False, previous.phase is Phase.FAILED)


def test_artifacts_may_be_added_to_a_finished_run() -> None:
    failed = _finished(Phase.FAILED, "ReplicaFailed")
    recorded = failed.model_copy(update={"artifacts": ARTIFACTS})  # the operator read the manifest after the copy
    status = status_of(run=make_run(output_uri=URI, copy_on_failure=True), job=pytorchjob().failed(),
                       uploader=uploader_job().succeeded(), previous=recorded)
    assert status.phase is Phase.FAILED and status.artifacts == ARTIFACTS


# -- Replica counts follow what is observed, finished or not --------------------------------------------
_WORKER_STILL_ACTIVE = {"Master": ReplicaCounts(succeeded=1), "Worker": ReplicaCounts(active=1)}
_ALL_SUCCEEDED = {"Master": ReplicaCounts(succeeded=1), "Worker": ReplicaCounts(succeeded=1)}
FINISHED_COUNT_ROWS = [
    # (id, the finished status recorded, the job now, its pods now, the counts expected)
    ("completed-job-counts-its-last-worker", _finished(Phase.COMPLETED, "Completed", replicas=_WORKER_STILL_ACTIVE),
     pytorchjob().succeeded().replica_status("Master", succeeded=1).replica_status("Worker", succeeded=1), [],
     _ALL_SUCCEEDED),
    ("completed-pods-completed", _finished(Phase.COMPLETED, "Completed", replicas=_WORKER_STILL_ACTIVE),
     pytorchjob().succeeded(), [pod("run-master-0").succeeded(), pod("run-worker-0").succeeded()], _ALL_SUCCEEDED),
    ("cancelled-pods-gone",
     _finished(Phase.CANCELLED, "Cancelled", replicas={"Master": ReplicaCounts(active=1), "Worker": ReplicaCounts(active=1)}),
     pytorchjob().suspended(), [], {}),
    ("job-and-pods-cleaned-up",
     _finished(Phase.FAILED, "ReplicaFailed", replicas={"Master": ReplicaCounts(active=1), "Worker": ReplicaCounts(failed=1)}),
     None, [], {"Master": ReplicaCounts(), "Worker": ReplicaCounts(failed=1)}),
]


@pytest.mark.parametrize(("previous", "job", "pods", "expected"), [row[1:] for row in FINISHED_COUNT_ROWS],
                         ids=[row[0] for row in FINISHED_COUNT_ROWS])
def test_replica_counts_of_a_finished_run_follow_what_is_observed(
    previous: TrainingRunStatus, job: Mapping[str, Any] | None, pods: list[Mapping[str, Any]],
    expected: dict[str, ReplicaCounts],
) -> None:
    status = status_of(job=job, pods=pods, previous=previous, now=at(50))
    assert (status.phase, status.reason, status.message) == (previous.phase, previous.reason, previous.message)
    assert status.replicas == expected


# -- Phases only move forward --------------------------------------------------------------------------
FORWARD_ROWS = [
    # (id, phase before, job now, pods now, phase expected, reason expected)
    ("running-replica-recreated", Phase.RUNNING, pytorchjob().restarting(message=""),
     [master_running, pod("run-worker-0").container_creating()], Phase.RUNNING, "Restarting"),
    ("running-pods-not-listed-after-operator-restart", Phase.RUNNING, pytorchjob().created(), [], Phase.RUNNING,
     "WaitingForPods"),
    ("running-replica-recreated-unschedulable", Phase.RUNNING, pytorchjob().running(),
     [master_running, pod("run-worker-0").pending_unschedulable(SCHEDULER)], Phase.RUNNING, "Unschedulable"),
    ("preparing-worker-unschedulable", Phase.PREPARING, pytorchjob().created(),
     [pod("run-master-0").container_creating(), pod("run-worker-0").pending_unschedulable(SCHEDULER)], Phase.PREPARING,
     "Unschedulable"),
    ("uploading-job-read-late", Phase.UPLOADING, pytorchjob().running(), [master_running, worker_running],
     Phase.UPLOADING, "Running"),
    ("preempted-by-kueue-back-in-the-queue", Phase.RUNNING, pytorchjob().suspended(), [], Phase.QUEUED,
     "WaitingForAdmission"),
    ("resumed-after-suspend-starts-over", Phase.SUSPENDED, pytorchjob().created(),
     [pod("run-master-0").container_creating(), pod("run-worker-0").container_creating()], Phase.PREPARING,
     "ContainerCreating"),
    ("forward-as-usual", Phase.PREPARING, pytorchjob().running(), [master_running, worker_running], Phase.RUNNING,
     "Running"),
]


@pytest.mark.parametrize(("before", "job", "pods", "phase", "reason"), [row[1:] for row in FORWARD_ROWS],
                         ids=[row[0] for row in FORWARD_ROWS])
def test_phases_only_move_forward_unless_the_spec_stops_the_run(
    before: Phase, job: Mapping[str, Any], pods: list[Mapping[str, Any]], phase: Phase, reason: str
) -> None:
    queue = "team-a" if job.get("spec", {}).get("runPolicy", {}).get("suspend") else None
    status = status_of(run=make_run(queue=queue), job=job, pods=pods, previous=TrainingRunStatus(phase=before))
    assert (status.phase, status.reason) == (phase, reason), status.message
    assert status.message


def test_a_run_held_back_reads_in_progress_with_what_happens_now() -> None:
    recreated = status_of(job=pytorchjob().restarting(message=""), pods=[master_running, pod("run-worker-0").container_creating()],
                          previous=TrainingRunStatus(phase=Phase.RUNNING))
    assert recreated.message == "the training-operator is restarting failed replicas"
    assert truth(recreated) == (False, True, False)
    assert phase_event(TrainingRunStatus(phase=Phase.RUNNING), recreated) is None


# -- Pending changes -----------------------------------------------------------------------------------
def test_pending_changes_are_listed_and_named_in_reconciling() -> None:
    changes = ["spec.distribution.workers", "spec.hyperparameters.epochs"]
    status = status_of(job=pytorchjob().running(), pods=[master_running, worker_running], pending=changes)
    assert status.pending_changes == changes
    reconciling = condition(status, "Reconciling")
    assert reconciling.status == "True"
    assert reconciling.message == (
        "training: 2 of 2 replicas running; spec changes waiting for the replicas to stop (suspend, then resume): "
        "spec.distribution.workers, spec.hyperparameters.epochs"
    )
    assert status.message == "training: 2 of 2 replicas running"
    assert "spec.distribution.workers" not in condition(status, "Ready").message


def test_pending_changes_on_a_finished_run_are_never_applied() -> None:
    status = status_of(previous=_finished(Phase.COMPLETED, "Completed"), pending=["spec.image"])
    assert status.pending_changes == ["spec.image"]
    assert condition(status, "Reconciling").message.endswith("spec changes not applied because the run has finished: spec.image")


# -- Names, counts, times, carried-over fields ---------------------------------------------------------
def test_counts_from_replica_statuses() -> None:
    job = pytorchjob(workers=2).running().replica_status("Master", active=1).replica_status("Worker", active=1, failed=1)
    status = status_of(run=make_run(workers=2), job=job, pods=[master_running])
    assert status.replicas == {"Master": ReplicaCounts(active=1), "Worker": ReplicaCounts(active=1, failed=1)}


def test_the_replicas_running_count_as_active_before_the_training_operator_says_so() -> None:
    """The training-operator's replicaStatuses lag behind its pods: a run Running says its replicas are active."""
    job = pytorchjob(workers=1).running().replica_status("Master", active=0).replica_status("Worker", active=0, failed=1)
    status = status_of(run=make_run(workers=1), job=job, pods=[master_running, pod("run-worker-0").running()])
    assert status.phase is Phase.RUNNING
    assert status.replicas == {"Master": ReplicaCounts(active=1), "Worker": ReplicaCounts(active=1, failed=1)}
    finished = pytorchjob(workers=1).succeeded().replica_status("Master", succeeded=1).replica_status("Worker", succeeded=1)
    done = status_of(run=make_run(workers=1), job=finished, pods=[master_running])  # its numbers once it has finished
    assert done.replicas == {"Master": ReplicaCounts(succeeded=1), "Worker": ReplicaCounts(succeeded=1)}


def test_counts_from_pods_when_the_job_has_none() -> None:
    pods = [
        master_running,
        pod("run-worker-0").succeeded(),
        pod("run-worker-1").terminated(1, finished_at=at(4)),
        pod("run-worker-2").pending_unschedulable(SCHEDULER),
        pod("run-worker-3").running().deleting(),
        uploader_pod().terminated(1, finished_at=at(4)),
    ]
    status = status_of(run=make_run(workers=4), job=pytorchjob(workers=4).created(), pods=pods)
    assert status.replicas == {
        "Master": ReplicaCounts(active=1),
        "Worker": ReplicaCounts(active=1, succeeded=1, failed=1),
    }


def test_count_replicas_is_how_the_local_runner_counts_its_processes() -> None:
    states = [("Master", ReplicaState.RUNNING), ("Worker", ReplicaState.SUCCEEDED), ("Worker", ReplicaState.FAILED),
              ("Worker", ReplicaState.PREPARING)]
    assert count_replicas(states) == {"Master": ReplicaCounts(active=1), "Worker": ReplicaCounts(active=1, succeeded=1, failed=1)}


def test_names_pool_and_carried_fields() -> None:
    previous = TrainingRunStatus(phase=Phase.RUNNING, metrics={"val_loss": 0.31}, key_metric="val_loss=0.31", pool="old")
    status = status_of(job=pytorchjob().running().started(at(2)), pods=[master_running, worker_running], previous=previous,
                       pool="a100")
    assert (status.job_name, status.master_pod, status.pool) == ("run", "run-master-0", "a100")
    assert status.metrics == {"val_loss": 0.31} and status.key_metric == "val_loss=0.31"
    assert status.start_time == at(1) and status.completion_time is None  # its pods started before the job said so


def test_master_pod_name_known_before_the_pod_exists() -> None:
    status = status_of(job=pytorchjob().created())
    assert status.master_pod == "run-master-0"


def test_without_a_job_what_was_known_is_kept() -> None:
    previous = TrainingRunStatus(
        phase=Phase.RUNNING, job_name="run", master_pod="run-master-0", start_time=at(1),
        replicas={"Master": ReplicaCounts(active=1)}, pool="a100",
    )
    status = status_of(previous=previous, problems=["the operator configuration is invalid"], pool=None)
    assert (status.job_name, status.master_pod, status.start_time, status.pool) == ("run", "run-master-0", at(1), "a100")
    assert status.replicas == {"Master": ReplicaCounts(active=1)}


def test_start_time_falls_back_to_the_earliest_pod() -> None:
    status = status_of(job=pytorchjob().running(), pods=[pod("run-master-0").running(at(7)), pod("run-worker-0").running(at(3))])
    assert status.start_time == at(3)


def test_the_start_time_is_the_earliest_known_and_never_moves_later() -> None:
    """The job's startTime and its pods' come in either order: a later one arriving writes no new start."""
    pods = [pod("run-master-0").running(at(3)), pod("run-worker-0").running(at(3))]
    before_the_job_said = status_of(job=pytorchjob().created(), pods=pods)
    assert before_the_job_said.start_time == at(3)
    job_later = status_of(job=pytorchjob().running().started(at(4)), pods=pods, previous=before_the_job_said)
    assert job_later.start_time == at(3)
    job_earlier = status_of(job=pytorchjob().running().started(at(2)), pods=pods, previous=before_the_job_said)
    assert job_earlier.start_time == at(2)
    pods_gone = status_of(job=pytorchjob().succeeded().started(at(4)), previous=job_later)
    assert pods_gone.start_time == at(3)


COMPLETION_ROWS = [
    ("job-completion", make_run(), pytorchjob().succeeded(at(30)), None, None, at(30)),
    ("uploader-completion", make_run(output_uri=URI), pytorchjob().succeeded(at(30)), uploader_job().succeeded(at(36)),
     TrainingRunStatus(artifacts=ARTIFACTS), at(36)),
    ("failed-job-completion", make_run(), pytorchjob().failed(completed=at(20)), None, None, at(20)),
    ("failed-no-completion-uses-now", make_run(), pytorchjob().failed(completed=None), None, None, NOW),
    ("upload-failed-time", make_run(output_uri=URI), pytorchjob().succeeded(), uploader_job().failed(when=at(41)), None, at(41)),
    ("cancelled-now", make_run(cancel=True), pytorchjob().running(), None, None, NOW),
    ("running-none", make_run(), pytorchjob().running(), None, None, None),
]


@pytest.mark.parametrize(("run", "job", "uploader", "previous", "expected"), [row[1:] for row in COMPLETION_ROWS],
                         ids=[row[0] for row in COMPLETION_ROWS])
def test_completion_time(run: TrainingRun, job: Mapping[str, Any], uploader: Mapping[str, Any] | None,
                         previous: TrainingRunStatus | None, expected: str | None) -> None:
    status = status_of(run=run, job=job, uploader=uploader, previous=previous, pods=[master_running, worker_running])
    assert status.completion_time == expected


def test_invalid_run_reports_its_problems_with_the_given_generation() -> None:
    status = build_status(
        StatusInput(run=None, now=NOW, generation=4, problems=["spec.resources.gpus: must be at most 64"])
    )
    assert (status.phase, status.reason, status.message) == (Phase.QUEUED, "InvalidConfiguration", "spec.resources.gpus: must be at most 64")
    assert status.observed_generation == 4 and truth(status) == (False, False, True)


def test_status_round_trips_through_the_wire_format() -> None:
    case = _BY_ID["backoff-limit"]
    status = status_of(job=case.job, pods=case.pods)
    wire = status.to_patch()
    assert wire["phase"] == "Failed" and wire["conditions"][0]["lastTransitionTime"] == NOW
    assert TrainingRunStatus.model_validate(wire) == status


# -- Phase Events --------------------------------------------------------------------------------------
def test_phase_event_on_change_only() -> None:
    running = status_of(job=pytorchjob().running(), pods=[master_running, worker_running])
    assert phase_event(running, running) is None
    assert phase_event(None, running) == PhaseEvent("Normal", "Running", "Running: training: 2 of 2 replicas running")
    queued = status_of(job=pytorchjob().created())
    assert phase_event(queued, running) == PhaseEvent("Normal", "Running", "Queued -> Running: training: 2 of 2 replicas running")


def test_phase_event_warns_on_failure_and_stalls() -> None:
    running = status_of(job=pytorchjob().running(), pods=[master_running, worker_running])
    failed = status_of(job=pytorchjob().failed(), pods=[pod("run-worker-0").memory("16Gi").oom_killed(finished_at=at(9))])
    assert phase_event(running, failed) == PhaseEvent(
        "Warning", "OOMKilled", "Running -> Failed: replica worker-0 was OOMKilled (memory limit 16Gi)"
    )
    stalled = status_of(job=pytorchjob().created(), pods=[pod("run-master-0").image_pull_backoff(), pod("run-worker-0").scheduled()])
    event_for_stall = phase_event(status_of(), stalled)
    assert event_for_stall is not None and event_for_stall.type == "Warning" and event_for_stall.reason == "ImagePullBackOff"
    assert phase_event(None, TrainingRunStatus()) is None


# -- Garbage input never raises ------------------------------------------------------------------------
GARBAGE_JOBS: list[Any] = [
    {},
    {"status": "broken"},
    {"status": {"conditions": "Running"}},
    {"status": {"conditions": [None, 3, "x", {"type": 5, "status": []}, {"type": "Failed"}]}},
    {"status": {"replicaStatuses": {"Master": "active", "Worker": {"active": "two", "failed": -3}}}},
    {"status": {"replicaStatuses": [1, 2]}, "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": "x"}, "Worker": None}}},
    {"spec": "x", "metadata": 7},
    {"spec": {"pytorchReplicaSpecs": {"Worker": {"replicas": -5}}}, "status": {"startTime": 12345}},
    [1, 2, 3],
    "a job",
]
GARBAGE_PODS: list[Any] = [
    None,
    7,
    "pod",
    {},
    {"metadata": []},
    {"metadata": {"name": "run-master-0", "labels": {"training.kubeflow.org/replica-type": 1}}, "status": {"phase": 3}},
    {"metadata": {"name": "run-worker-0"}, "status": {"containerStatuses": "x", "conditions": [None, {"type": "PodScheduled"}]}},
    {"metadata": {"name": "run-worker-1"},
     "status": {"phase": "Failed", "containerStatuses": [None, {"state": {"terminated": {"exitCode": "abc", "finishedAt": "yesterday"}}},
                                                         {"name": "pytorch", "lastState": {"terminated": []}, "state": "weird"}]}},
    {"metadata": {"name": "run-master-0", "creationTimestamp": "not a time"},
     "spec": {"containers": [{"resources": {"limits": ["nvidia.com/gpu"]}}, None]},
     "status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": None}]}},
    {"metadata": {"name": "run-master-0", "labels": {"training.kubeflow.org/replica-type": "Master",
                                                     "training.kubeflow.org/replica-index": "zero"}},
     "status": {"phase": "Pending", "initContainerStatuses": [{"name": "x", "state": {"running": True}}]}},
]
GARBAGE_EVENTS: list[Any] = [None, 1, {}, {"reason": 5}, {"reason": "FailedScheduling", "involvedObject": "pod"},
                             {"reason": "Pulling", "lastTimestamp": "nope", "message": None}]
GARBAGE_UPLOADERS: list[Any] = [{}, {"status": "x"}, {"status": {"failed": "many", "conditions": {"Failed": True}}},
                                {"spec": {"backoffLimit": "three"}, "status": {"failed": 10}}, 5]


@pytest.mark.parametrize("job", GARBAGE_JOBS, ids=[f"job-{index}" for index in range(len(GARBAGE_JOBS))])
def test_garbage_job_degrades_to_a_phase(job: Any) -> None:
    status = status_of(job=job, pods=GARBAGE_PODS, events=GARBAGE_EVENTS, uploader=GARBAGE_UPLOADERS[2])
    assert status.phase in (Phase.QUEUED, Phase.PREPARING, Phase.RUNNING, Phase.FAILED)
    assert status.message and status.reason


@pytest.mark.parametrize("uploader", GARBAGE_UPLOADERS, ids=[f"uploader-{index}" for index in range(len(GARBAGE_UPLOADERS))])
def test_garbage_uploader_degrades_to_a_phase(uploader: Any) -> None:
    status = status_of(run=make_run(output_uri=URI), job=pytorchjob().succeeded(), uploader=uploader, pods=GARBAGE_PODS)
    assert status.phase in (Phase.UPLOADING, Phase.FAILED)
    assert status.message


def test_garbage_sequences_of_the_wrong_type() -> None:
    status = status_of(
        job=pytorchjob().created(), pods="pods", events=None,  # type: ignore[arg-type]
        problems=[None, 3], pending="spec.x",  # type: ignore[list-item]
    )
    assert status.phase is Phase.QUEUED
    assert status.pending_changes == []


def _mutations(document: Any, rng: random.Random) -> Any:
    """The document with some values, at any depth, replaced by values of the wrong shape."""
    wrong: list[Any] = [None, 0, -1, "", "x", [], {}, [None], {"a": None}, True, 3.5]
    if isinstance(document, dict):
        return {key: rng.choice(wrong) if rng.random() < 0.15 else _mutations(value, rng) for key, value in document.items()}
    if isinstance(document, list):
        return [rng.choice(wrong) if rng.random() < 0.15 else _mutations(value, rng) for value in document]
    return document


def test_randomly_damaged_inputs_never_raise() -> None:
    rng = random.Random(20260101)
    sources = [case for case in CASES if case.job is not None or case.pods]
    for round_number in range(300):
        case = sources[round_number % len(sources)]
        damaged_job = _mutations(copy.deepcopy(dict(case.job)) if case.job is not None else None, rng)
        damaged_pods = _mutations([copy.deepcopy(dict(item)) for item in case.pods], rng)
        damaged_events = _mutations([copy.deepcopy(dict(item)) for item in case.events], rng)
        damaged_uploader = _mutations(copy.deepcopy(dict(case.uploader)) if case.uploader is not None else None, rng)
        status = status_of(run=case.run, job=damaged_job, pods=damaged_pods, events=damaged_events, uploader=damaged_uploader,
                           previous=case.previous)
        assert status.phase is not None and status.reason and status.message is not None, case.id


@pytest.mark.parametrize(
    ("seconds", "text"), [(-5, "0s"), (42, "42s"), (252, "4m12s"), (3600, "1h00m"), (7500, "2h05m"), (273600, "3d04h")]
)
def test_a_wait_is_told_in_its_two_largest_units(seconds: float, text: str) -> None:
    assert elapsed(seconds) == text
