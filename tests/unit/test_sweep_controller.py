"""The sweep controller acts on one plan per pass: create-only trials (409 is the trial already there), the
losers stopped, one status write when it changed; a new controller (a restart, a new leader) continues
from the objects alone with the same next trial and no duplicate.

``trainrun.controller.sweeps.SweepController`` with an API client that keeps objects as a server would
(no cluster) and a trial cache fed by hand, as its watch would.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Awaitable, Callable
from typing import Any

from test_sweep import sweep_doc, trial_with
from trainrun.controller.operator import EventRecorder
from trainrun.controller.sweeps import SweepController
from trainrun.kube.aioclient import ApiError
from trainrun.spec.annotations import PARAMETERS_ANNOTATION, PRUNED_ANNOTATION
from trainrun.sweep.trials import projected

Object = dict[str, Any]
KEY = ("ml", "tune")


class FakeServer:
    """TrainingRuns, status writes and Events as an API server keeps them: create refuses a name that exists."""

    def __init__(self) -> None:
        self.runs: dict[str, Object] = {}
        self.creates: list[str] = []
        self.status_patches: list[Object] = []
        self.events: list[Object] = []
        self.version = 0

    async def create(self, resource: Any, namespace: str, body: Object) -> Object:
        if resource.plural == "events":
            if any(event["metadata"]["name"] == body["metadata"]["name"] for event in self.events):
                raise ApiError("exists", status=409, reason="AlreadyExists")
            self.events.append(body)
            return body
        name = body["metadata"]["name"]
        self.creates.append(name)
        if name in self.runs:
            raise ApiError(f"trainingruns {name!r} already exists", status=409, reason="AlreadyExists")
        self.runs[name] = copy.deepcopy(body)
        return body

    async def patch_merge(self, resource: Any, namespace: str, name: str, patch: Object, subresource: str | None = None) -> Object:
        self.version += 1
        if subresource == "status":
            self.status_patches.append(patch["status"])
            return {"metadata": {"name": name, "resourceVersion": f"v{self.version}"}, "status": patch["status"]}
        run = self.runs[name]
        run["metadata"]["annotations"].update(patch.get("metadata", {}).get("annotations", {}))
        run["spec"].update(patch.get("spec", {}))
        return run


def in_loop(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def controller_for(server: FakeServer) -> SweepController:
    controller = SweepController(server, namespaces=[None], recorder=EventRecorder(server, instance="test"))  # type: ignore[arg-type]
    controller.leading(True)
    return controller


def deliver(controller: SweepController, server: FakeServer) -> None:
    """What the trials' watch brings: every TrainingRun the server has, as the cache keeps it."""
    for run in server.runs.values():
        controller._on_trial(None, projected(run))


def test_trials_are_created_once_even_when_the_watch_is_late() -> None:
    async def scenario() -> None:
        server = FakeServer()
        controller = controller_for(server)
        controller.sweep_changed(None, sweep_doc(parallelism=3, maxTrials=6))
        await controller.reconcile(KEY)
        assert server.creates == ["tune-0", "tune-1", "tune-2"]
        # The watch has not brought them yet: the same plan, refused as existing, and a look again soon.
        again = await controller.reconcile(KEY)
        assert server.creates[3:] == ["tune-0", "tune-1", "tune-2"] and len(server.runs) == 3
        assert again is not None and again <= 1.0
        deliver(controller, server)
        await controller.reconcile(KEY)
        assert len(server.runs) == 3 and server.creates[6:] == []
        started = [event for event in server.events if event["reason"] == "TrialStarted"]
        assert len(started) == 3 and started[0]["involvedObject"]["kind"] == "TrainingSweep"

    in_loop(scenario)


def test_status_is_written_when_it_changes_only() -> None:
    async def scenario() -> None:
        server = FakeServer()
        controller = controller_for(server)
        controller.sweep_changed(None, sweep_doc(parallelism=2, maxTrials=2))
        await controller.reconcile(KEY)
        deliver(controller, server)
        await controller.reconcile(KEY)
        writes = len(server.status_patches)
        await controller.reconcile(KEY)
        assert len(server.status_patches) == writes
        for name in list(server.runs):
            server.runs[name] = trial_with(server.runs[name], phase="Completed", values=[0.5, 0.4 if name == "tune-1" else 0.45])
        deliver(controller, server)
        await controller.reconcile(KEY)
        status = server.status_patches[-1]
        assert status["phase"] == "Completed" and status["best"]["trial"] == "tune-1"
        assert status["trialsSummary"] == "2/0/0/0 of 2" and status["bestSummary"] == "val_loss=0.4 (tune-1)"
        assert any(event["reason"] == "NewBest" for event in server.events)

    in_loop(scenario)


def test_a_new_controller_continues_the_same_study_from_the_objects() -> None:
    async def scenario() -> None:
        document = sweep_doc(parallelism=2, maxTrials=6, algorithm="tpe", earlyStopping={"type": "median", "startupTrials": 1})

        async def until_done(server: FakeServer, kill_after: int | None) -> FakeServer:
            controller = controller_for(server)
            controller.sweep_changed(None, copy.deepcopy(document))
            passes = 0
            while True:
                deliver(controller, server)
                await controller.reconcile(KEY)
                passes += 1
                if kill_after is not None and passes % kill_after == 0:
                    controller = controller_for(server)  # the old one is gone with its memory: only the objects stay
                    controller.sweep_changed(None, {**copy.deepcopy(document), "status": server.status_patches[-1]})
                for name, run in server.runs.items():
                    number = int(name.rsplit("-", 1)[1])
                    status = run.get("status") or {}
                    if status.get("phase") in ("Completed", "Cancelled") or passes > 80:
                        continue
                    points = [point["value"] for point in (status.get("series") or {}).get("points", [])]
                    if run["spec"].get("cancel"):
                        server.runs[name] = trial_with(run, phase="Cancelled", values=points)
                        continue
                    values = [*points, (5.0 if number % 2 else 1.0) / (len(points) + 1)]
                    server.runs[name] = trial_with(run, phase="Completed" if len(values) == 3 else "Running", values=values)
                if server.status_patches and server.status_patches[-1].get("phase") in ("Completed", "Failed"):
                    return server
                assert passes < 100

        calm = await until_done(FakeServer(), kill_after=None)
        crashing = await until_done(FakeServer(), kill_after=2)
        assert sorted(calm.runs) == sorted(crashing.runs) == [f"tune-{n}" for n in range(6)]

        def parameters(server: FakeServer) -> list[str]:
            return [server.runs[f"tune-{n}"]["metadata"]["annotations"][PARAMETERS_ANNOTATION] for n in range(6)]

        assert parameters(calm) == parameters(crashing)
        assert calm.status_patches[-1]["best"] == crashing.status_patches[-1]["best"]
        pruned = [name for name, run in calm.runs.items() if PRUNED_ANNOTATION in run["metadata"]["annotations"]]
        assert pruned and all(int(name.rsplit("-", 1)[1]) % 2 for name in pruned)
        assert json.loads(calm.runs["tune-0"]["metadata"]["annotations"][PARAMETERS_ANNOTATION])

    in_loop(scenario)
