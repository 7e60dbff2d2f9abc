"""The local runner's observations, written as the API objects the operator's supervision and status read.

``trainrun.local.observe`` turns the staging, the replica processes (running, exited with a code and the
last exception line of their log, or not started) and the copy of $OUTPUT_DIR into a PyTorchJob, pods and
an uploader Job; ``assess`` then gives ``build_status``'s status, so a local run reads in the cluster's
words (tests/unit/test_shared_phases.py compares the two sides). Table-driven, no processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from factories import NOW, make_run
from trainrun.local.observe import (
    ArtifactCopy,
    CopyState,
    LocalJob,
    LocalWorld,
    Outcome,
    ReplicaProcess,
    Staging,
    assess,
    local_children,
    replica_pod,
    training_outcome,
)
from trainrun.spec.status import Artifacts, Phase, ReplicaCounts, TrainingRunStatus

URI = "s3://models/run"
T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def running(name: str) -> ReplicaProcess:
    return ReplicaProcess(name=name, started_at=t(0))


def exited(name: str, code: int, *, after: float, last_words: str | None = None) -> ReplicaProcess:
    return ReplicaProcess(name=name, started_at=t(0), exit_code=code, finished_at=t(after), last_words=last_words)


def copying() -> ArtifactCopy:
    return ArtifactCopy(CopyState.COPYING, started_at=t(40))


def copied(artifacts: Artifacts | None = None) -> ArtifactCopy:
    return ArtifactCopy(CopyState.SUCCEEDED, started_at=t(40), finished_at=t(45), artifacts=artifacts)


def copy_failed(error: str) -> ArtifactCopy:
    return ArtifactCopy(CopyState.FAILED, started_at=t(40), finished_at=t(45), error=error)


ARTIFACTS = Artifacts(uri=URI, manifest_uri=f"{URI}/manifest.json", file_count=3, bytes=1234)
BOOM = "RuntimeError: worker 1 could not load its shard"


@dataclass
class Case:
    id: str
    phase: Phase
    reason: str
    message: str
    replicas: list[ReplicaProcess]
    copy: ArtifactCopy | None = None
    copy_on_failure: bool = False
    staging: Staging | None = None
    replica_counts: dict[str, ReplicaCounts] | None = field(default=None)


CASES = [
    # -- Running ------------------------------------------------------------------------------------------
    Case(
        "all-running", Phase.RUNNING, "Running", "training: 2 of 2 replicas running",
        [running("master-0"), running("worker-0")],
        replica_counts={"Master": ReplicaCounts(active=1), "Worker": ReplicaCounts(active=1)},
    ),
    Case(
        "a-worker-done-first", Phase.RUNNING, "Running", "training: 1 of 2 replicas running",
        [running("master-0"), exited("worker-0", 0, after=9)],
        replica_counts={"Master": ReplicaCounts(active=1), "Worker": ReplicaCounts(succeeded=1)},
    ),
    # -- Failed: the replica, its exit code and its last exception line ---------------------------------
    Case(
        "worker-failed", Phase.FAILED, "ReplicaFailed", f"replica worker-0 exited with code 1: {BOOM}",
        [running("master-0"), exited("worker-0", 1, after=5, last_words=BOOM)],
    ),
    Case(
        "failed-without-words", Phase.FAILED, "ReplicaFailed", "replica master-0 exited with code 2",
        [exited("master-0", 2, after=5)],
    ),
    Case(
        "killed-by-a-signal", Phase.FAILED, "ReplicaFailed", "replica worker-1 exited with code 137 (SIGKILL)",
        [running("master-0"), running("worker-0"), exited("worker-1", -9, after=5)],
    ),
    Case(
        "first-failure-wins", Phase.FAILED, "ReplicaFailed", f"replica worker-0 exited with code 1: {BOOM}",
        [exited("master-0", -15, after=5.2, last_words="stopped"), exited("worker-0", 1, after=5.1, last_words=BOOM)],
        replica_counts={"Master": ReplicaCounts(failed=1), "Worker": ReplicaCounts(failed=1)},
    ),
    Case(
        "failure-then-master-success", Phase.FAILED, "ReplicaFailed", "replica worker-0 exited with code 3",
        [exited("master-0", 0, after=8), exited("worker-0", 3, after=5)],
    ),
    Case(
        "failed-no-copy-on-failure", Phase.FAILED, "ReplicaFailed", "replica worker-0 exited with code 3",
        [running("master-0"), exited("worker-0", 3, after=5)],
    ),
    Case(
        "failed-copy-on-failure-copying", Phase.UPLOADING, "Uploading",
        f"training failed (replica worker-0 exited with code 3); copying $OUTPUT_DIR to {URI} before reporting "
        "the failure (spec.output.copyOnFailure)",
        [exited("master-0", 143, after=6), exited("worker-0", 3, after=5)], copy=copying(), copy_on_failure=True,
    ),
    Case(
        "failed-copy-on-failure-copied", Phase.FAILED, "ReplicaFailed",
        f"replica worker-0 exited with code 3; outputs copied to {URI}",
        [exited("master-0", 143, after=6), exited("worker-0", 3, after=5)], copy=copied(ARTIFACTS), copy_on_failure=True,
    ),
    Case(
        "failed-copy-on-failure-copy-failed", Phase.FAILED, "ReplicaFailed",
        f"replica worker-0 exited with code 3; artifact copy to {URI} failed: bucket not found",
        [exited("master-0", 143, after=6), exited("worker-0", 3, after=5)], copy=copy_failed("bucket not found"),
        copy_on_failure=True,
    ),
    # -- Succeeded: the copy, then Completed ------------------------------------------------------------
    Case(
        "master-succeeded-before-the-copy", Phase.UPLOADING, "Uploading",
        f"training succeeded; starting the copy of $OUTPUT_DIR to {URI}",
        [exited("master-0", 0, after=30), running("worker-0")],
    ),
    Case(
        "a-lingering-worker-stopped-after-success", Phase.UPLOADING, "Uploading",
        f"training succeeded; starting the copy of $OUTPUT_DIR to {URI}",
        [exited("master-0", 0, after=30), exited("worker-0", -15, after=61)],
        replica_counts={"Master": ReplicaCounts(succeeded=1), "Worker": ReplicaCounts(failed=1)},
    ),
    Case(
        "copying", Phase.UPLOADING, "Uploading", f"copying $OUTPUT_DIR to {URI}",
        [exited("master-0", 0, after=30), exited("worker-0", 0, after=30)], copy=copying(),
    ),
    Case(
        "completed", Phase.COMPLETED, "Completed", f"training succeeded; 3 files (1.2 kB) copied to {URI}",
        [exited("master-0", 0, after=30), exited("worker-0", 0, after=30)], copy=copied(ARTIFACTS),
        replica_counts={"Master": ReplicaCounts(succeeded=1), "Worker": ReplicaCounts(succeeded=1)},
    ),
    Case(
        "copy-failed", Phase.FAILED, "UploadFailed", f"artifact copy to {URI} failed: bucket not found",
        [exited("master-0", 0, after=30)], copy=copy_failed("Traceback...\nbucket not found"),
    ),
    Case(
        "copy-error-credentials-masked", Phase.FAILED, "UploadFailed",
        f"artifact copy to {URI} failed: cannot reach http://***@s3:8333",
        [exited("master-0", 0, after=30)], copy=copy_failed("cannot reach http://AKIAFAKE:fakeSecret@s3:8333"),
    ),
    # -- Before training: staging, a program that cannot start ------------------------------------------
    Case(
        "staging", Phase.PREPARING, "Initializing", "replica master-0 is running init container stage-in",
        [ReplicaProcess("master-0")], staging=Staging(t(0)),
    ),
    Case(
        "created-nothing-to-stage", Phase.PREPARING, "ContainerCreating", "replica master-0 is ContainerCreating",
        [ReplicaProcess("master-0")],
    ),
    Case(
        "staging-failed", Phase.FAILED, "InitContainerFailed",
        "replica master-0 cannot start: init container stage-in exited with code 1: no such bucket: inputs",
        [ReplicaProcess("master-0")], staging=Staging(t(0), finished_at=t(3), error="no such bucket: inputs"),
        replica_counts={"Master": ReplicaCounts(failed=1)},
    ),
    Case(
        "could-not-start", Phase.FAILED, "ReplicaFailed",
        "replica master-0 exited with code 128: could not start 'trian.py': No such file or directory",
        [ReplicaProcess("master-0", start_error="could not start 'trian.py': No such file or directory", finished_at=t(1))],
    ),
]


def job(*replicas: ReplicaProcess, staging: Staging | None = None) -> LocalJob:
    return LocalJob(created_at=t(0), replicas=tuple(replicas), staging=staging)


def status_of(case: Case) -> TrainingRunStatus:
    run = make_run(workers=0, output_uri=URI, copy_on_failure=case.copy_on_failure, generation=None)
    previous = TrainingRunStatus(phase=Phase.RUNNING if any(item.started_at for item in case.replicas) else None)
    world = LocalWorld(run, job(*case.replicas, staging=case.staging), case.copy)
    return assess(world, previous=previous, now=NOW).status


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_the_status_of_local_processes_is_the_status_functions(case: Case) -> None:
    status = status_of(case)
    assert (status.phase, status.reason, status.message) == (case.phase, case.reason, case.message)
    if case.replica_counts is not None:
        assert status.replicas == case.replica_counts
    assert status.job_name is None and status.master_pod is None  # nothing of those names exists locally
    stalled = next(condition for condition in status.conditions if condition.type == "Stalled")
    assert stalled.status == ("True" if case.phase is Phase.FAILED else "False")


@pytest.mark.parametrize(
    ("replicas", "outcome"),
    [
        ([running("master-0"), running("worker-0")], None),
        ([running("master-0"), exited("worker-0", 0, after=3)], None),
        ([exited("master-0", 0, after=3), running("worker-0")], Outcome.SUCCEEDED),
        ([exited("master-0", 0, after=3), exited("worker-0", 1, after=4)], Outcome.SUCCEEDED),
        ([exited("master-0", 0, after=3), exited("worker-0", 1, after=3)], Outcome.FAILED),
        ([exited("master-0", 0, after=3), exited("worker-0", 1, after=2)], Outcome.FAILED),
        ([running("master-0"), exited("worker-0", 1, after=2)], Outcome.FAILED),
        ([exited("master-0", -15, after=2), running("worker-0")], Outcome.FAILED),
    ],
    ids=[
        "running", "worker-done", "master-done", "worker-failed-after", "same-moment", "worker-failed-before",
        "worker-failed", "master-killed",
    ],
)
def test_training_outcome_is_the_training_operators_rule(
    replicas: list[ReplicaProcess], outcome: Outcome | None
) -> None:
    assert training_outcome(job(*replicas)) == outcome


@pytest.mark.parametrize(
    ("replica", "pod_phase", "state"),
    [
        (running("worker-0"), "Running", {"running": {"startedAt": "2026-01-01T10:00:00Z"}}),
        (
            exited("master-0", 0, after=1.5),
            "Succeeded",
            {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": "2026-01-01T10:00:00Z",
                            "finishedAt": "2026-01-01T10:00:01.500000Z"}},
        ),
        (
            exited("worker-2", 1, after=2, last_words=BOOM),
            "Failed",
            {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": "2026-01-01T10:00:00Z",
                            "finishedAt": "2026-01-01T10:00:02.000000Z", "message": BOOM}},
        ),
        (
            exited("worker-0", -9, after=2),
            "Failed",
            {"terminated": {"exitCode": 137, "reason": "Error", "startedAt": "2026-01-01T10:00:00Z",
                            "finishedAt": "2026-01-01T10:00:02.000000Z"}},
        ),
    ],
    ids=["running", "succeeded", "failed-with-last-words", "killed"],
)
def test_a_replica_process_is_a_pod_as_the_training_operator_names_it(
    replica: ReplicaProcess, pod_phase: str, state: dict[str, object]
) -> None:
    written = replica_pod(make_run("mnist"), job(replica), replica)
    replica_type, _, index = replica.name.partition("-")
    assert written["metadata"]["name"] == f"mnist-{replica.name}"
    assert written["metadata"]["labels"] == {
        "training.kubeflow.org/job-name": "mnist",
        "training.kubeflow.org/replica-type": replica_type,
        "training.kubeflow.org/replica-index": index,
    }
    assert written["status"]["phase"] == pod_phase
    assert written["status"]["containerStatuses"] == [{"name": "pytorch", "restartCount": 0, "state": state}]


@pytest.mark.parametrize(
    ("replicas", "conditions", "replica_statuses"),
    [
        ([running("master-0"), running("worker-0")], ["Created", "Running"], {"Master": {"active": 1}, "Worker": {"active": 1}}),
        ([exited("master-0", 0, after=9), exited("worker-0", 0, after=9)], ["Created", "Succeeded"],
         {"Master": {"succeeded": 1}, "Worker": {"succeeded": 1}}),
        ([running("master-0"), exited("worker-0", 1, after=9)], ["Created", "Failed"], {"Master": {"active": 1}, "Worker": {"failed": 1}}),
    ],
    ids=["running", "succeeded", "failed"],
)
def test_the_processes_are_a_pytorchjob(
    replicas: list[ReplicaProcess], conditions: list[str], replica_statuses: dict[str, dict[str, int]]
) -> None:
    written = local_children(LocalWorld(make_run("mnist"), job(*replicas))).job
    assert written is not None and written["metadata"]["name"] == "mnist"
    assert written["spec"]["pytorchReplicaSpecs"] == {"Master": {"replicas": 1}, "Worker": {"replicas": 1}}
    assert [condition["type"] for condition in written["status"]["conditions"]] == conditions
    assert written["status"]["replicaStatuses"] == replica_statuses
    assert written["status"]["startTime"] == "2026-01-01T10:00:00Z"
    if conditions[-1] != "Running":
        assert written["status"]["completionTime"] == "2026-01-01T10:00:09Z"


@pytest.mark.parametrize(
    ("copy", "logs_read", "final"),
    [
        pytest.param(copied(ARTIFACTS), True, True, id="completed with every replica's output read: the metrics are final"),
        pytest.param(copied(ARTIFACTS), False, None, id="completed while a replica's output is still read: not yet"),
        pytest.param(copying(), True, None, id="still copying: not finished, not final"),
    ],
)
def test_the_metrics_are_final_once_the_run_finished_and_its_output_was_read(
    copy: ArtifactCopy, logs_read: bool, final: bool | None
) -> None:
    run = make_run(workers=0, output_uri=URI, generation=None)
    world = LocalWorld(run, job(exited("master-0", 0, after=5)), copy, metrics={"loss": 0.1}, logs_read=logs_read)
    assert assess(world, previous=TrainingRunStatus(phase=Phase.RUNNING), now=NOW).status.metrics_final is final
