"""One table of situations, two sides: a run on a cluster and the same run on this machine read the same.

Each case is one situation (training, a replica that failed with an exception, staging that failed, a
program that cannot start, the copy, a cancel, a hang and what ``onHang`` makes of it) written twice: as
what a cluster shows (the PyTorchJob as the training-operator reports it, the pods as the kubelet does,
the uploader Job, the facts the controller's background work brought), decided by the operator's
``trainrun.plan.plan``; and as what the local runner observes (its staging, its processes, its copy),
decided by ``trainrun.local.observe.assess``. Both must give the same phase, reason and message: the
words come from one status builder. Pure: no cluster, no processes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from factories import pod, pytorchjob, uploader_job, uploader_pod
from run_factory import document, pools
from trainrun.local.observe import ArtifactCopy, CopyState, LocalJob, LocalWorld, ReplicaProcess, Staging, assess
from trainrun.metrics import MetricSample
from trainrun.metrics.progress import ProgressSnapshot, ProgressTracker
from trainrun.plan import Attempts, Observed, SealedLogs, plan
from trainrun.spec import load_training_run
from trainrun.spec.status import Artifacts, Phase, TrainingRunStatus

URI = "s3://models/run"
ARTIFACTS = Artifacts(uri=URI, manifest_uri=f"{URI}/manifest.json", file_count=3, bytes=1234)
SEALED = SealedLogs(metrics={}, key_metric=None)
BOOM = "RuntimeError: worker 1 could not load its shard"
T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
NOW = "2026-01-01T10:30:00Z"


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def stamp(seconds: float) -> str:
    """The API server's time for ``t(seconds)`` (whole seconds)."""
    return t(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


def running(name: str) -> ReplicaProcess:
    return ReplicaProcess(name, started_at=t(60))


def exited(name: str, code: int, *, after: float, last_words: str | None = None) -> ReplicaProcess:
    return ReplicaProcess(name, started_at=t(60), exit_code=code, finished_at=t(after), last_words=last_words)


def stalled_progress() -> ProgressSnapshot:
    """Steps 1-10 by 10:02, then silence until NOW (28 minutes)."""
    tracker = ProgressTracker(since=t(0))
    for step in range(1, 11):
        tracker.take("master-0", f"step {step}", [MetricSample("loss", 1.0 / step, step=step)], t(60 + 6 * step))
    return tracker.snapshot()


@dataclass
class Case:
    id: str
    phase: Phase  # what both sides must say (with the same reason and message)
    reason: str
    local: Callable[[], LocalJob | None]
    cluster: Callable[[], Observed]
    copy: ArtifactCopy | None = None
    previous: Phase | None = Phase.RUNNING
    spec: dict[str, Any] = field(default_factory=dict)
    progress: Callable[[], ProgressSnapshot | None] = lambda: None
    cancelled: bool = False


def job(*replicas: ReplicaProcess, staging: Staging | None = None) -> LocalJob:
    return LocalJob(created_at=t(0), replicas=replicas, staging=staging)


def two_running() -> Observed:
    return Observed(
        job=pytorchjob().running().started(stamp(60)),
        pods=[pod("run-master-0").running(stamp(60)), pod("run-worker-0").running(stamp(60))],
    )


def succeeded(**facts: Any) -> Observed:
    return Observed(
        job=pytorchjob().succeeded(stamp(1500)).started(stamp(60)),
        pods=[pod("run-master-0").succeeded(stamp(1500)), pod("run-worker-0").succeeded(stamp(1500))],
        **facts,
    )


CASES = [
    Case(
        "training", Phase.RUNNING, "Running",
        lambda: job(running("master-0"), running("worker-0")), two_running,
    ),
    Case(
        "a-worker-raised", Phase.FAILED, "ReplicaFailed",
        lambda: job(running("master-0"), exited("worker-0", 1, after=300, last_words=BOOM)),
        lambda: Observed(
            job=pytorchjob().failed().started(stamp(60)),
            pods=[
                pod("run-master-0").running(stamp(60)),
                pod("run-worker-0").terminated(1, finished_at=stamp(300), message=f"Traceback (most recent call last):\n  ...\n{BOOM}\n"),
            ],
        ),
    ),
    Case(
        "killed-by-sigkill", Phase.FAILED, "ReplicaFailed",
        lambda: job(running("master-0"), exited("worker-0", -9, after=300)),
        lambda: Observed(
            job=pytorchjob().failed().started(stamp(60)),
            pods=[pod("run-master-0").running(stamp(60)), pod("run-worker-0").terminated(137, finished_at=stamp(300))],
        ),
    ),
    Case(
        "staging", Phase.PREPARING, "Initializing",
        lambda: job(ReplicaProcess("master-0"), ReplicaProcess("worker-0"), staging=Staging(t(1))),
        lambda: Observed(
            job=pytorchjob().created(),
            pods=[pod("run-master-0").init_running(), pod("run-worker-0").init_running()],
        ),
        previous=Phase.QUEUED,
    ),
    Case(
        "staging-failed", Phase.FAILED, "InitContainerFailed",
        lambda: job(
            ReplicaProcess("master-0"), ReplicaProcess("worker-0"),
            staging=Staging(t(1), finished_at=t(5), error="NoSuchBucket: inputs"),
        ),
        lambda: Observed(
            job=pytorchjob().failed("PyTorchJob default/run has failed because 1 Master replica(s) failed."),
            pods=[
                pod("run-master-0").init_terminated(1, "NoSuchBucket: inputs"),
                pod("run-worker-0").init_terminated(1, "NoSuchBucket: inputs"),
            ],
        ),
        previous=Phase.PREPARING,
    ),
    Case(
        "cannot-start-the-program", Phase.FAILED, "ReplicaFailed",
        lambda: job(
            ReplicaProcess("master-0", start_error="exec: \"trian.py\": executable file not found", finished_at=t(61)),
            ReplicaProcess("worker-0"),
        ),
        lambda: Observed(
            job=pytorchjob().failed("PyTorchJob default/run has failed because 1 Master replica(s) failed."),
            pods=[
                pod("run-master-0").terminated(
                    128, finished_at=stamp(61), reason="StartError", message="exec: \"trian.py\": executable file not found"
                ),
                pod("run-worker-0").container_creating(),
            ],
        ),
        previous=Phase.PREPARING,
    ),
    Case(
        "trained-copy-not-started", Phase.UPLOADING, "Uploading",
        lambda: job(exited("master-0", 0, after=1500), exited("worker-0", 0, after=1500)), succeeded,
    ),
    Case(
        "copying", Phase.UPLOADING, "Uploading",
        lambda: job(exited("master-0", 0, after=1500), exited("worker-0", 0, after=1500)),
        lambda: succeeded(uploader=uploader_job().active(), seal=Attempts(result=SEALED)),
        copy=ArtifactCopy(CopyState.COPYING, started_at=t(1510)),
    ),
    Case(
        "completed", Phase.COMPLETED, "Completed",
        lambda: job(exited("master-0", 0, after=1500), exited("worker-0", 0, after=1500)),
        lambda: succeeded(
            uploader=uploader_job().succeeded(stamp(1700)),
            seal=Attempts(result=SEALED),
            manifest=Attempts(result=ARTIFACTS),
        ),
        copy=ArtifactCopy(CopyState.SUCCEEDED, started_at=t(1510), finished_at=t(1700), artifacts=ARTIFACTS),
        previous=Phase.UPLOADING,
    ),
    Case(
        "copy-failed", Phase.FAILED, "UploadFailed",
        lambda: job(exited("master-0", 0, after=1500), exited("worker-0", 0, after=1500)),
        lambda: Observed(
            job=pytorchjob().succeeded(stamp(1500)).started(stamp(60)),
            pods=[
                pod("run-master-0").succeeded(stamp(1500)),
                pod("run-worker-0").succeeded(stamp(1500)),
                uploader_pod().terminated(1, finished_at=stamp(1700), message="NoSuchBucket: models"),
            ],
            uploader=uploader_job().failed(),
        ),
        copy=ArtifactCopy(CopyState.FAILED, started_at=t(1510), finished_at=t(1700), error="NoSuchBucket: models"),
        previous=Phase.UPLOADING,
    ),
    Case(
        "cancelled", Phase.CANCELLED, "Cancelled",
        lambda: job(running("master-0"), running("worker-0")), two_running, cancelled=True,
    ),
    Case(
        "hung-reported", Phase.RUNNING, "Hung",
        lambda: job(running("master-0"), running("worker-0")), two_running,
        spec={"runPolicy": {"onHang": "Report", "hangTimeoutSeconds": 600}}, progress=stalled_progress,
    ),
    Case(
        "hung-failed", Phase.FAILED, "Hung",
        lambda: job(running("master-0"), running("worker-0")), two_running,
        spec={"runPolicy": {"onHang": "Fail", "hangTimeoutSeconds": 600}}, progress=stalled_progress,
    ),
    Case(
        "hung-restarted", Phase.RUNNING, "Restarting",
        lambda: job(running("master-0"), running("worker-0")), two_running,
        spec={"runPolicy": {"onHang": "Restart", "hangTimeoutSeconds": 600, "maxRestarts": 2}}, progress=stalled_progress,
    ),
]


def body(case: Case) -> dict[str, Any]:
    spec = {"image": "ghcr.io/acme/trainer:1.0", "distribution": {"workers": 1}, "output": {"uri": URI}, **case.spec}
    if case.cancelled:
        spec["cancel"] = True
    written = document(**spec)
    written["metadata"] = {"name": "run", "namespace": "default", "uid": "uid-1", "generation": 1}
    if case.previous is not None:
        written["status"] = {"phase": case.previous.value, "observedGeneration": 1}
    return written


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_cluster_run_and_a_local_run_read_the_same(case: Case) -> None:
    document_ = body(case)
    previous = TrainingRunStatus.model_validate(document_.get("status") or {})
    observed = case.cluster()
    on_cluster = plan(document_, pools(), replace(observed, progress=case.progress()), now=NOW).status
    local = assess(
        LocalWorld(load_training_run(document_), case.local(), case.copy, progress=case.progress()),
        previous=previous,
        now=NOW,
    ).status
    assert (on_cluster.phase, on_cluster.reason) == (case.phase, case.reason), on_cluster.message
    assert (local.phase, local.reason, local.message) == (on_cluster.phase, on_cluster.reason, on_cluster.message)
    assert local.restarts == on_cluster.restarts
