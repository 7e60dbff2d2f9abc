"""When the controller reconciles a run after a change of its children: at once for the pod that makes every
replica Running and for the end of the job with every replica's (``trainrun.plan.triggers``), after the
coalescing window for the rest;
and the work queue that carries those requests (``trainrun.controller.queue``): a burst gives one pass, a key
waiting for a worker takes no timer, a key added for now drops its timer, a key added while its pass runs is
reconciled once more. The queue runs on a real event loop with short windows; no cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import pytest
from factories import pod, pytorchjob, uploader_pod
from test_controller import RecordingKube, child, in_loop
from trainrun.controller.operator import CHILD_COALESCE_SECONDS, JOB, POD, Controller
from trainrun.controller.queue import WorkQueue
from trainrun.plan import projections
from trainrun.plan.triggers import job_change_at_once, pod_change_at_once

Object = dict[str, Any]
KEY = ("default", "run")


def replica(name: str, phase: str) -> Object:
    built = {"Running": pod(f"run-{name}").running(), "Succeeded": pod(f"run-{name}").succeeded()}.get(phase, pod(f"run-{name}"))
    return projections.pod(child(POD, built))


@pytest.mark.parametrize(
    ("old", "new", "ended"),
    [
        (pytorchjob().running(), pytorchjob().succeeded(), True),
        (pytorchjob().running(), pytorchjob().failed(), True),
        (None, pytorchjob().succeeded(), True),  # first seen ended (a relist after the operator was away)
        (pytorchjob().succeeded(), pytorchjob().succeeded(), False),  # its end seen before
        (pytorchjob().created(), pytorchjob().running(), False),
        (pytorchjob().running(), pytorchjob().restarting(), False),
        (pytorchjob().running(), None, False),  # deleted
    ],
)
def test_a_jobs_end_is_reconciled_at_once_when_its_replicas_have_ended(old: Object | None, new: Object | None, ended: bool) -> None:
    project = projections.pytorchjob
    old_job, new_job = (project(job) if job else None for job in (old, new))
    ended_pods = [replica("master-0", "Succeeded"), replica("worker-0", "Succeeded")]
    assert job_change_at_once(old_job, new_job, ended_pods) is ended
    assert job_change_at_once(old_job, new_job, []) is ended  # pods cleaned up, or never seen
    # A PyTorchJob succeeds with its Master: a Worker still running is waited for (its end comes within moments).
    assert not job_change_at_once(old_job, new_job, [replica("master-0", "Succeeded"), replica("worker-0", "Running")])


def test_the_last_replicas_end_after_the_jobs_is_reconciled_at_once() -> None:
    ended = projections.pytorchjob(child(JOB, pytorchjob().succeeded()))
    master, worker_running, worker = replica("master-0", "Succeeded"), replica("worker-0", "Running"), replica("worker-0", "Succeeded")
    uploader = projections.pod(child(POD, uploader_pod().running()))
    assert pod_change_at_once(worker_running, worker, ended, [master, worker, uploader])  # the uploader is no replica
    assert pod_change_at_once(worker_running, None, ended, [master])  # deleted while it ran
    assert not pod_change_at_once(worker_running, worker, projections.pytorchjob(child(JOB, pytorchjob().running())), [master, worker])
    assert not pod_change_at_once(worker, None, ended, [master])  # the clean-up of an ended pod: nothing new
    assert not pod_change_at_once(replica("master-0", "Running"), master, ended, [master, worker_running])


def test_the_pod_that_makes_every_replica_running_is_the_last_one_to_become_running() -> None:
    job = projections.pytorchjob(pytorchjob(workers=2).running())
    master, worker0 = replica("master-0", "Running"), replica("worker-0", "Running")
    worker1_pending, worker1 = replica("worker-1", "Pending"), replica("worker-1", "Running")
    assert pod_change_at_once(worker1_pending, worker1, job, [master, worker0, worker1])
    assert not pod_change_at_once(None, worker0, job, [master, worker0, worker1_pending])  # one still pending
    assert not pod_change_at_once(worker1, worker1, job, [master, worker0, worker1])  # it was running already
    assert not pod_change_at_once(worker1_pending, worker1, None, [master, worker0, worker1])  # no job: how many?
    assert not pod_change_at_once(worker1_pending, worker1, job, [master, worker1])  # a replica not created yet
    # The old pod of a restarted replica, still Running while it goes, does not stand in for another replica.
    assert not pod_change_at_once(worker1_pending, worker1, job, [master, worker1, replica("worker-1", "Running")])


def test_the_controller_reconciles_the_last_replica_running_and_the_end_of_job_and_replicas_at_once_the_rest_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> None:
        controller = Controller(RecordingKube(), operator_namespace="trainrun-system", namespaces=[None], instance="test")  # type: ignore[arg-type]
        added: list[float] = []
        monkeypatch.setattr(controller.queue, "add", lambda key, after=0.0: added.append(after))
        on_job, on_pod = controller._on_child(JOB), controller._on_pod
        created = projections.pytorchjob(child(JOB, pytorchjob().created()))
        on_job(None, created)
        master_pending, master = replica("master-0", "Pending"), replica("master-0", "Running")
        worker_pending, worker = replica("worker-0", "Pending"), replica("worker-0", "Running")
        on_pod(None, master_pending)
        on_pod(None, worker_pending)
        on_pod(master_pending, master)
        on_pod(worker_pending, worker)  # the last replica Running
        running = projections.pytorchjob(child(JOB, pytorchjob().running()))
        on_job(created, running)
        master_ended, worker_ended = replica("master-0", "Succeeded"), replica("worker-0", "Succeeded")
        on_pod(master, master_ended)
        on_job(running, projections.pytorchjob(child(JOB, pytorchjob().succeeded())))  # its Worker still runs
        on_pod(worker, worker_ended)  # the last replica's end
        on_pod(master_ended, None)  # the clean-up
        window = CHILD_COALESCE_SECONDS
        assert added == [window, window, window, window, 0.0, window, window, window, 0.0, window]

    in_loop(scenario)


Actions = Callable[[WorkQueue, list[Hashable]], Awaitable[None]]


async def queue_passes(actions: Actions, *, handle_seconds: float = 0.0, settle: float = 0.3) -> list[Hashable]:
    """The keys a queue reconciled while ``actions(queue, passes)`` ran, and ``settle`` seconds after it."""
    passes: list[Hashable] = []

    async def handle(key: Hashable) -> None:
        passes.append(key)
        await asyncio.sleep(handle_seconds)

    queue = WorkQueue(handle, workers=2)
    queue.active.set()
    workers = asyncio.create_task(queue.run())
    await actions(queue, passes)
    await asyncio.sleep(settle)
    workers.cancel()
    return passes


def test_a_burst_of_changes_within_the_window_gives_one_pass_after_it() -> None:
    async def scenario() -> None:
        async def burst(queue: WorkQueue, passes: list[Hashable]) -> None:
            for _ in range(5):
                queue.add("run", 0.2)
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            assert passes == []  # the window is still open

        assert await queue_passes(burst) == ["run"]

    in_loop(scenario)


def test_a_key_added_for_now_drops_its_timer_and_one_waiting_for_a_worker_takes_none() -> None:
    async def scenario() -> None:
        async def now_after_later(queue: WorkQueue, passes: list[Hashable]) -> None:
            queue.add("run", 0.1)
            queue.add("run")  # reconciled now: the pass reads everything the timer's pass would have

        assert await queue_passes(now_after_later) == ["run"]

        async def later_while_waiting(queue: WorkQueue, passes: list[Hashable]) -> None:
            queue.active.clear()  # no worker takes it yet
            queue.add("run")
            queue.add("run", 0.1)  # its pass, not begun, will read this change too: no second pass at 0.1 s
            await asyncio.sleep(0.02)
            queue.active.set()

        assert await queue_passes(later_while_waiting) == ["run"]

    in_loop(scenario)


def test_a_key_changed_while_its_pass_runs_is_reconciled_again_after_it() -> None:
    async def scenario() -> None:
        async def during(queue: WorkQueue, passes: list[Hashable]) -> None:
            queue.add("run")
            await asyncio.sleep(0.02)  # the pass is running (it takes 0.1 s)
            queue.add("run")
            queue.add("other", 0.05)

        assert sorted(map(str, await queue_passes(during, handle_seconds=0.1, settle=0.4))) == ["other", "run", "run"]

    in_loop(scenario)
