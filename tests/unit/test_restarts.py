"""Failure causes, the restart decision and the restart state machine of ``trainrun.plan``, without a cluster.

Table-driven: the cause classifier (``trainrun.plan.causes``) from pod states, Events and log lines; the
policy (``trainrun.plan.restarts.answer``); and whole reconciles (``trainrun.plan.plan``) through a
restart: decided, the old job deleted, its replicas awaited, the backoff, the new job; fail at once,
the budget, a finished run never restarted, and idempotence.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest
from factories import NOW, at, event, pod
from run_factory import pools
from test_reconcile_plan import body, describe, job, running_pods
from trainrun.metrics import MetricParser
from trainrun.metrics.progress import ProgressSnapshot, ProgressTracker
from trainrun.plan import Observed, plan
from trainrun.plan.causes import Trouble, classify
from trainrun.plan.restarts import answer, backoff_seconds
from trainrun.spec.model import RunPolicy
from trainrun.spec.status import Phase
from trainrun.status.observe import observe_events, observe_pods
from trainrun.status.shapes import timestamp

PARSER = MetricParser()


def logs(*lines: tuple[str, str, str]) -> ProgressSnapshot:
    """A snapshot of (replica, time, text) lines; the tracker watched from 10:00."""
    tracker = ProgressTracker(since=timestamp(at(0)))
    for replica, when, text in lines:
        moment = timestamp(when)
        assert moment is not None
        tracker.take(replica, text, PARSER.parse(text), moment)
    return tracker.snapshot()


def views(*raw: dict[str, Any]) -> list[Any]:
    return observe_pods(list(raw), uploader_job_name=None)[0]


@dataclass
class CauseCase:
    name: str
    pods: list[dict[str, Any]]
    cause: str | None
    gone: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    snapshot: ProgressSnapshot | None = None
    since: str | None = None
    message_has: str = ""


CAUSE_CASES = [
    CauseCase("all running: no trouble", running_pods(), None),
    CauseCase(
        "the node was deleted (PodGC)",
        [pod("run-master-0").running(), pod("run-worker-0").running().disrupted("DeletionByPodGC", "PodGC: node no longer exists")],
        "NodeLost",
        message_has="replica worker-0 lost its node (PodGC: node no longer exists)",
    ),
    CauseCase(
        "the pod went with its node: remembered by the controller",
        [pod("run-master-0").running()],
        "NodeLost",
        gone=[pod("run-worker-0").running().disrupted("DeletionByTaintManager", "Taint manager: deleting due to NoExecute taint")],
    ),
    CauseCase("preempted by the scheduler", [pod("run-master-0").running().disrupted("PreemptionByScheduler", "preempted")], "Preempted"),
    CauseCase("drained", [pod("run-master-0").running().disrupted("EvictionByEvictionAPI", "Eviction API: evicting")], "Evicted"),
    CauseCase("evicted by the kubelet", [pod("run-master-0").evicted("The node was low on resource: memory.")], "Evicted"),
    CauseCase(
        "a Preempted Event about a current replica",
        running_pods(),
        "Preempted",
        events=[event("Preempted", "Preempted by pod 1234 on node gpu-3", name="run-worker-0", when=at(20))],
    ),
    CauseCase(
        "an Event from before the last restart does not count",
        [pod("run-master-0").created(at(10)).running(), pod("run-worker-0").created(at(10)).running()],
        None,
        events=[event("Preempted", "Preempted by pod 1234", name="run-worker-0", when=at(5))],
        since=at(10),
    ),
    CauseCase("OOMKilled", [pod("run-master-0").running(), pod("run-worker-0").oom_killed(finished_at=at(9))], "OOMKilled"),
    CauseCase(
        "a CUDA out-of-memory line in the termination message",
        [pod("run-master-0").terminated(1, finished_at=at(9), message="torch.OutOfMemoryError: CUDA out of memory.")],
        "CudaOOM",
    ),
    CauseCase(
        "a lost peer, read from the log",
        [pod("run-master-0").running(), pod("run-worker-0").restarted(1, finished_at=at(9))],
        "CommunicationError",
        snapshot=logs(("worker-0", at(8), "torch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp:1970")),
        message_has="NCCL error",
    ),
    CauseCase(
        "the first failure decides: a user error before the others lose their peer",
        [pod("run-master-0").terminated(1, finished_at=at(9)), pod("run-worker-0").terminated(1, finished_at=at(10))],
        "UserError",
        snapshot=logs(
            ("master-0", at(8), "ValueError: labels out of range"),
            ("worker-0", at(9), "RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer"),
        ),
    ),
    CauseCase("an exit nothing explains", [pod("run-master-0").terminated(3, finished_at=at(9))], "Failed"),
    CauseCase(
        "replicas of the job before the last restart do not count",
        [pod("run-master-0").created(at(1)).oom_killed(finished_at=at(9))],
        None,
        since=at(10),
    ),
]


@pytest.mark.parametrize("case", CAUSE_CASES, ids=[case.name for case in CAUSE_CASES])
def test_cause(case: CauseCase) -> None:
    trouble = classify(
        views(*case.pods),
        gone=views(*case.gone),
        events=observe_events(case.events),
        snapshot=case.snapshot,
        since=timestamp(case.since) if case.since else None,
    )
    assert (trouble.cause if trouble else None) == case.cause, trouble
    if case.message_has:
        assert trouble is not None and case.message_has in trouble.message, trouble


@pytest.mark.parametrize(
    ("policy", "cause", "done", "kind", "reason"),
    [
        ({}, "NodeLost", 0, "restart", "Restarting"),
        ({}, "Preempted", 2, "restart", "Restarting"),
        ({}, "NodeLost", 3, "fail", "RestartLimitExceeded"),
        ({"maxRestarts": 0}, "Evicted", 0, "fail", "RestartLimitExceeded"),
        ({}, "OOMKilled", 0, None, None),  # the training-operator's own policy
        ({"failOn": ["OOMKilled"]}, "OOMKilled", 0, "fail", "OOMKilled"),
        ({"restartOn": ["CommunicationError"]}, "CommunicationError", 1, "restart", "Restarting"),
        ({"restartOn": []}, "NodeLost", 0, None, None),
        ({}, "Failed", 0, None, None),
        ({}, "Hang", 0, "report", "Hung"),
        ({"onHang": "Fail"}, "Hang", 0, "fail", "Hung"),
        ({"onHang": "Restart"}, "Hang", 0, "restart", "Restarting"),
        ({"onHang": "Restart", "maxRestarts": 1}, "Hang", 1, "fail", "RestartLimitExceeded"),
    ],
)
def test_decision(policy: dict[str, Any], cause: str, done: int, kind: str | None, reason: str | None) -> None:
    decision = answer(RunPolicy.model_validate(policy), Trouble(cause, "what happened"), restarts_done=done)
    assert (decision.kind if decision else None) == kind
    assert (decision.reason if decision else None) == reason
    if decision is not None and kind == "fail" and reason == "RestartLimitExceeded":
        assert "spec.runPolicy.maxRestarts" in decision.message


@pytest.mark.parametrize(("base", "done", "seconds"), [(30, 0, 0), (30, 1, 30), (30, 2, 60), (30, 3, 120), (600, 9, 3600), (0, 4, 0)])
def test_backoff_doubles_up_to_an_hour(base: int, done: int, seconds: float) -> None:
    assert backoff_seconds(RunPolicy(restart_backoff_seconds=base), done) == seconds


def restart(cause: str = "Hang", when: str = at(30)) -> dict[str, Any]:
    return {"cause": cause, "message": "what happened", "time": when}


def running_status(*restarts: dict[str, Any], phase: Phase = Phase.RUNNING) -> dict[str, Any]:
    return {"phase": phase.value, "reason": phase.value, "observedGeneration": 1, "restarts": list(restarts)}


def job_created(when: str, *, deleting: str | None = None) -> Any:
    built = job().running().started()
    built["metadata"]["creationTimestamp"] = when
    if deleting is not None:
        built["metadata"]["deletionTimestamp"] = deleting
    return built


def slow_start(name: str) -> Any:
    """A pod admitted at 10:01 whose training container only began running at 11:58."""
    built = pod(name).running(started="2026-01-01T11:58:00Z")
    built["status"]["startTime"] = at(1)
    return built


STALE = logs(("master-0", at(2), 'trainrun:progress {"total_steps": 100}'), ("master-0", at(5), 'trainrun:metric {"step": 40, "loss": 1}'))
POLICY = {"hangTimeoutSeconds": 600, "onHang": "Restart", "restartBackoffSeconds": 60}


@dataclass
class RestartCase:
    name: str
    run: dict[str, Any]
    observed: Observed
    actions: list[str]
    phase: Phase
    reason: str
    restarts: list[str] = field(default_factory=list)  # causes in status.restarts afterwards
    events: list[str] = field(default_factory=list)
    requeue_after: float | None = None
    message_has: str = ""


RESTART_CASES = [
    RestartCase(
        "a silent log with onHang Restart: the restart is recorded and the job deleted",
        body(running_status(), runPolicy=POLICY),
        Observed(job=job_created(at(0)), pods=running_pods(), progress=STALE),
        ["delete PyTorchJob"],
        Phase.RUNNING,
        "Restarting",
        restarts=["Hang"],
        events=["Restarting"],
        message_has="restart 1 of 3 (Hang): hung: no new step since 2026-01-01T10:05:00Z (step 40)",
    ),
    RestartCase(
        "onHang Report: Running, Stalled, a Warning Event, nothing deleted",
        body(running_status(), runPolicy={"hangTimeoutSeconds": 600}),
        Observed(job=job_created(at(0)), pods=running_pods(), progress=STALE),
        [],
        Phase.RUNNING,
        "Hung",
        events=["Hung"],
        message_has="silent: master-0 since 2026-01-01T10:05:00Z, worker-0 since 2026-01-01T10:01:00Z",
    ),
    RestartCase(
        "onHang Fail: Failed, the job deleted",
        body(running_status(), runPolicy={"hangTimeoutSeconds": 600, "onHang": "Fail"}),
        Observed(job=job_created(at(0)), pods=running_pods(), progress=STALE),
        ["delete PyTorchJob"],
        Phase.FAILED,
        "Hung",
        events=["Hung"],
    ),
    RestartCase(
        "steps keep coming: nothing to do, look again when it would be hung",
        body(running_status(), runPolicy={**POLICY, "hangTimeoutSeconds": 200}),
        Observed(job=job_created(at(0)), pods=running_pods(), progress=logs(("master-0", "2026-01-01T11:59:00Z", 'trainrun:metric {"step": 7, "loss": 1}'))),
        [],
        Phase.RUNNING,
        "Running",
        requeue_after=140.0,
    ),
    RestartCase(
        "containers that began running lately are not hung for the pods' age (a slow image pull)",
        body(running_status(), runPolicy=POLICY),
        Observed(job=job_created(at(0)), pods=[slow_start("run-master-0"), slow_start("run-worker-0")], progress=logs()),
        [],
        Phase.RUNNING,
        "Running",
    ),
    RestartCase(
        "the old job is still there after the restart was recorded: deleted again, no second restart",
        body(running_status(restart()), runPolicy=POLICY),
        Observed(job=job_created(at(0)), pods=running_pods(), progress=STALE),
        ["delete PyTorchJob"],
        Phase.RUNNING,
        "Restarting",
        restarts=["Hang"],
        message_has="stopping the old PyTorchJob; every replica of the new one resumes from the last checkpoint",
    ),
    RestartCase(
        "the old job is going: wait",
        body(running_status(restart()), runPolicy=POLICY),
        Observed(job=job_created(at(0), deleting=at(31)), pods=running_pods()),
        [],
        Phase.RUNNING,
        "Restarting",
        restarts=["Hang"],
    ),
    RestartCase(
        "no job, the old replicas still stopping: wait for them (two jobs never share the output)",
        body(running_status(restart()), runPolicy=POLICY),
        Observed(pods=[pod("run-master-0").deleting().running()]),
        [],
        Phase.RUNNING,
        "Restarting",
        restarts=["Hang"],
        message_has="waiting for replica master-0 of the old job to stop",
    ),
    RestartCase(
        "no job, nothing left, the backoff not over: wait until it is",
        body(running_status(restart(when="2026-01-01T11:59:30Z")), runPolicy=POLICY),
        Observed(),
        [],
        Phase.RUNNING,
        "Restarting",
        restarts=["Hang"],
        requeue_after=30.0,
        message_has="creating the new PyTorchJob at 2026-01-01T12:00:30Z",
    ),
    RestartCase(
        "no job, the backoff over: the job again, under its own name",
        body(running_status(restart()), runPolicy=POLICY),
        Observed(),
        ["apply PyTorchJob"],
        Phase.RUNNING,
        "Restarting",
        restarts=["Hang"],
    ),
    RestartCase(
        "the new job runs: supervised as any, its old steps do not make it hung",
        body(running_status(restart(when="2026-01-01T11:50:00Z")), runPolicy=POLICY),
        Observed(
            job=job_created("2026-01-01T11:51:00Z"),
            pods=[pod("run-master-0").created("2026-01-01T11:51:00Z").running("2026-01-01T11:52:00Z")],
            progress=STALE,
        ),
        [],
        Phase.RUNNING,
        "Running",
        restarts=["Hang"],
    ),
    RestartCase(
        "OOMKilled with failOn: Failed at once, the job deleted, no restart",
        body(running_status(), runPolicy={"failOn": ["OOMKilled"]}),
        Observed(job=job_created(at(0)), pods=[pod("run-master-0").running(), pod("run-worker-0").oom_killed(finished_at=at(9))]),
        ["delete PyTorchJob"],
        Phase.FAILED,
        "OOMKilled",
        events=["OOMKilled"],
        message_has="replica worker-0 was OOMKilled",
    ),
    RestartCase(
        "OOMKilled without failOn: the training-operator's own restart policy",
        body(running_status()),
        Observed(job=job_created(at(0)), pods=[pod("run-master-0").running(), pod("run-worker-0").restarted(137, finished_at=at(9), reason="OOMKilled")]),
        [],
        Phase.RUNNING,
        "Running",
    ),
    RestartCase(
        "a node lost under a replica: restarted by default",
        body(running_status()),
        Observed(job=job_created(at(0)), pods=[pod("run-master-0").running()], gone_pods=[pod("run-worker-0").running().disrupted("DeletionByPodGC", "PodGC: node no longer exists")]),
        ["delete PyTorchJob"],
        Phase.RUNNING,
        "Restarting",
        restarts=["NodeLost"],
        events=["Restarting"],
    ),
    RestartCase(
        "the job failed because its node went (restartPolicy Never): restarted, not Failed",
        body(running_status(), runPolicy={"restartPolicy": "Never"}),
        Observed(job=job().failed().started(), pods=[pod("run-master-0").running().disrupted("DeletionByPodGC", "PodGC: node no longer exists")]),
        ["delete PyTorchJob"],
        Phase.RUNNING,
        "Restarting",
        restarts=["NodeLost"],
        events=["Restarting"],
    ),
    RestartCase(
        "the budget is used up: Failed, saying so",
        body(running_status(restart("NodeLost", at(10)), restart("NodeLost", at(20)), restart("NodeLost", at(30)))),
        Observed(job=job_created(at(31)), pods=[pod("run-master-0").created(at(31)).running().disrupted("DeletionByPodGC", "PodGC")]),
        ["delete PyTorchJob"],
        Phase.FAILED,
        "RestartLimitExceeded",
        restarts=["NodeLost", "NodeLost", "NodeLost"],
        events=["RestartLimitExceeded"],
        message_has="all 3 restarts used (spec.runPolicy.maxRestarts=3)",
    ),
    RestartCase(
        "a finished run whose job a TTL deleted is never started again",
        body(running_status(restart(), phase=Phase.COMPLETED)),
        Observed(),
        [],
        Phase.COMPLETED,
        "Completed",
        restarts=["Hang"],
    ),
    RestartCase(
        "training succeeded: a silent log after it is no hang",
        body(running_status(), runPolicy=POLICY),
        Observed(job=job().succeeded().started(), pods=running_pods(), progress=STALE),
        [],
        Phase.COMPLETED,
        "Completed",
        events=["Completed"],
    ),
]


@pytest.mark.parametrize("case", RESTART_CASES, ids=[case.name for case in RESTART_CASES])
def test_restart_plan(case: RestartCase) -> None:
    decided = plan(case.run, pools(), case.observed, now=NOW)
    assert [describe(action) for action in decided.actions] == case.actions
    assert decided.status.phase is case.phase, decided.status.message
    assert decided.status.reason == case.reason, decided.status.message
    assert [item.cause for item in decided.status.restarts] == case.restarts
    assert [item.reason for item in decided.events if item.reason not in ("Running",)] == case.events
    if case.requeue_after is not None:
        assert decided.requeue_after == pytest.approx(case.requeue_after)
    assert case.message_has in (decided.status.message or ""), decided.status.message
    if case.reason in ("Hung",) and case.phase is Phase.RUNNING:
        stalled = next(item for item in decided.status.conditions if item.type == "Stalled")
        assert stalled.status == "True" and stalled.reason == "Hung"
    if case.restarts and case.events == ["Restarting"]:
        assert decided.status.restarts[-1].time == NOW
        assert decided.logs == "follow"  # the new job's replicas append to the same followed logs


@pytest.mark.parametrize("case", RESTART_CASES, ids=[case.name for case in RESTART_CASES])
def test_restart_plan_is_idempotent(case: RestartCase) -> None:
    """Planning again with the status written records no second restart and posts nothing new."""
    first = plan(case.run, pools(), case.observed, now=NOW)
    written = copy.deepcopy(case.run)
    written["status"] = first.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    again = plan(written, pools(), case.observed, now=NOW)
    assert again.status.restarts == first.status.restarts
    assert again.status.phase is first.status.phase
    assert not [item for item in again.events if item.reason != "Hung"]
    assert again.status_patch == {}

