"""Whole-run restarts by cause, hangs, and failures never retried: what ``plan`` does about a run in trouble.

Called by ``trainrun.plan.core.plan`` on every reconcile of an active run. :func:`answer` is the
policy (``spec.runPolicy.restartOn``, ``failOn``, ``onHang``, ``maxRestarts``); :func:`supervise` is the
state machine around it, read entirely from what is observed and from ``status.restarts``, so a plan
made twice, or after a crash, does the same:

  a failure or hang of the current replicas ... restart: record it in status.restarts, delete the job
                                                fail: Failed now, delete the job (its replicas stop)
                                                report (hangs only): Running, Stalled, a Warning Event
  the job is older than the last restart ...... delete it (again: idempotent), wait
  no job, replicas of the old one still there . wait for them to stop (two jobs never share the output)
  no job, the backoff not over ................ wait (restartBackoffSeconds, doubled per restart)
  no job, nothing left ........................ the plan creates the job again under its own name: every
                                                replica resumes from the last checkpoint in $OUTPUT_DIR

A run that finished (or is uploading) is never restarted: the budget lives in the run's status, not in
a job that a TTL may delete. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from trainrun.metrics.progress import ProgressSnapshot
from trainrun.plan.causes import HANG, Trouble, classify
from trainrun.spec.model import RunPolicy, TrainingRun
from trainrun.spec.status import Phase, Restart
from trainrun.status import PhaseEvent
from trainrun.status.observe import (
    DEFAULT_JOB_KIND,
    JobView,
    PodView,
    ReplicaState,
    observe_events,
    observe_workload,
)
from trainrun.status.phase import Supervision, current_replicas
from trainrun.status.progress import hang_check
from trainrun.status.shapes import rfc3339, timestamp

MAX_BACKOFF_SECONDS = 3600.0
RESTART_POLL_SECONDS = 5.0  # while old replicas stop (their deletions also wake the run up)
STOPPING = "stopping the old {kind}; every replica of the new one resumes from the last checkpoint"


@dataclass(frozen=True)
class Decision:
    """What to do about a trouble."""

    kind: Literal["restart", "fail", "report"]
    reason: str
    message: str


def answer(policy: RunPolicy, trouble: Trouble | None, *, restarts_done: int) -> Decision | None:
    """The policy's answer to a trouble; None leaves it to the training-operator (backoffLimit, restartPolicy)."""
    if trouble is None:
        return None
    if trouble.cause == HANG:
        if policy.on_hang == "Report":
            return Decision("report", "Hung", trouble.message)
        if policy.on_hang == "Fail":
            return Decision("fail", "Hung", f"{trouble.message}; failed (spec.runPolicy.onHang: Fail)")
    elif trouble.cause in policy.fail_on:
        return Decision("fail", trouble.cause, f"{trouble.message}; not retried (spec.runPolicy.failOn)")
    elif trouble.cause not in policy.restart_on:
        return None
    if restarts_done >= policy.max_restarts:
        return Decision(
            "fail",
            "RestartLimitExceeded",
            f"{trouble.message}; not restarted: all {policy.max_restarts} restarts used "
            f"(spec.runPolicy.maxRestarts={policy.max_restarts})",
        )
    return Decision("restart", "Restarting", _restart_words(policy, restarts_done + 1, trouble.cause, trouble.message))


def _restart_words(policy: RunPolicy, number: int, cause: str, message: str) -> str:
    return f"restart {number} of {policy.max_restarts} ({cause}): {message}"


def backoff_seconds(policy: RunPolicy, restarts_done: int) -> float:
    """How long after restart N its new job is created: restartBackoffSeconds, doubled for each one before."""
    if restarts_done <= 0:
        return 0.0
    return min(MAX_BACKOFF_SECONDS, float(policy.restart_backoff_seconds * 2 ** (restarts_done - 1)))


@dataclass(frozen=True)
class Supervised:
    """What :func:`supervise` asks of the plan."""

    supervision: Supervision | None = None  # what the status says (build_status applies it)
    delete_job: bool = False
    hold_job: bool = False  # leave the job alone: do not create or change it
    restart: Restart | None = None  # a new entry for status.restarts
    event: PhaseEvent | None = None
    check_again_in: float | None = None  # seconds

    @property
    def restarting(self) -> bool:
        return self.supervision is not None and self.supervision.reason == "Restarting"


def supervise(
    run: TrainingRun,
    *,
    job: JobView | None,
    pods: Sequence[PodView],
    gone: Sequence[PodView],
    events: Sequence[Mapping[str, Any]],
    snapshot: ProgressSnapshot | None,
    restarts: Sequence[Restart],
    phase: Phase | None,
    now: str,
    workload: Mapping[str, Any] | None = None,
    job_kind: str = DEFAULT_JOB_KIND,
) -> Supervised:
    """The run's restart state machine at ``now`` (see the module's docstring). ``job``: the job as ``observe_job``
    reads it; ``pods``: the replica pods, ``gone``: replica pods deleted since, as last seen (both as
    ``observe_pods`` reads them); ``workload``:
    Kueue's Workload of a queued run's job (its eviction by preemption is a cause); ``job_kind``: for the words."""
    if phase is not None and (phase.finished or phase is Phase.UPLOADING):
        return Supervised()
    policy = run.spec.run_policy
    moment = timestamp(now)
    last = timestamp(restarts[-1].time) if restarts else None
    assert moment is not None
    if last is not None:
        waiting = _restart_under_way(policy, job, pods, restarts, last, moment, job_kind)
        if waiting is not None:
            return waiting
    if job is None or job.has("Succeeded"):
        return Supervised()
    memory = str(run.spec.resources.memory) if run.spec.resources.memory is not None else None
    trouble = classify(
        pods,
        gone=gone,
        events=observe_events(events),
        snapshot=snapshot,
        since=last,
        memory=memory,
        workload=observe_workload(workload),
    )
    check_again_in: float | None = None
    if trouble is None and not job.has("Failed"):
        replicas = current_replicas(job, run, pods)
        running = {
            name: timestamp(pod.running_since) or timestamp(pod.start_time) or moment
            for name, pod in replicas.items()
            if pod is not None and pod.state is ReplicaState.RUNNING
        }
        if running and len(running) == len(replicas):
            check = hang_check(snapshot, running=running, timeout_seconds=policy.hang_timeout_seconds, now=moment)
            check_again_in = check.check_again_in
            if check.hang is not None:
                trouble = Trouble(HANG, check.hang.message)
    decision = answer(policy, trouble, restarts_done=len(restarts))
    if decision is None or trouble is None:
        return Supervised(check_again_in=check_again_in)
    if decision.kind == "report":
        return Supervised(
            supervision=Supervision(decision.reason, decision.message, stalled=True),
            event=PhaseEvent("Warning", decision.reason, decision.message),
        )
    if decision.kind == "fail":
        return Supervised(supervision=Supervision(decision.reason, decision.message, fail=True), delete_job=True, hold_job=True)
    message = f"{decision.message}; {STOPPING.format(kind=job_kind)}"
    return Supervised(
        supervision=Supervision(decision.reason, message),
        delete_job=True,
        hold_job=True,
        restart=Restart(cause=trouble.cause, message=trouble.message, time=now),
        event=PhaseEvent("Warning", decision.reason, message),
        check_again_in=RESTART_POLL_SECONDS,
    )


def _restart_under_way(
    policy: RunPolicy,
    job: JobView | None,
    pods: Sequence[PodView],
    restarts: Sequence[Restart],
    last: datetime,
    now: datetime,
    job_kind: str,
) -> Supervised | None:
    """While the job of before the last restart, or its replicas, are still there, or the backoff runs."""
    latest = restarts[-1]
    what = _restart_words(policy, len(restarts), latest.cause, latest.message)
    created = timestamp(job.created) if job is not None else None
    if job is not None and (created is None or created < last):
        return Supervised(
            supervision=Supervision("Restarting", f"{what}; {STOPPING.format(kind=job_kind)}"),
            delete_job=not job.deleting,
            hold_job=True,
            check_again_in=RESTART_POLL_SECONDS,
        )
    if job is not None:
        return None  # the new job: supervised as any
    old = sorted({pod.replica for pod in pods if (timestamp(pod.created) or last) < last})
    if old:
        return Supervised(
            supervision=Supervision("Restarting", f"{what}; waiting for replica {', '.join(old)} of the old job to stop"),
            hold_job=True,
            check_again_in=RESTART_POLL_SECONDS,
        )
    create_at = last + timedelta(seconds=backoff_seconds(policy, len(restarts)))
    if create_at > now:
        return Supervised(
            supervision=Supervision("Restarting", f"{what}; creating the new {job_kind} at {rfc3339(create_at)}"),
            hold_job=True,
            check_again_in=(create_at - now).total_seconds(),
        )
    return Supervised(supervision=Supervision("Restarting", f"{what}; creating the new {job_kind}"))
