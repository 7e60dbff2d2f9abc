"""The operator's experiment tracker (``trainrun.controller.tracking.RunTracker``) against a fake MLflow:
the metric records it is handed and the ones only the log archive has are sent once each, in order, with
the high-water mark in the same request, through restarts (a new tracker reading the mark back)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from trainrun.base.registry import SENT_TAG
from trainrun.controller.tracking import RunTracker
from trainrun.plan.registration import Track
from trainrun.registry import MlflowClient


class FakeMlflow:
    """One experiment's runs in memory: the calls of ``MlflowClient`` under what ``RunTracker`` uses."""

    tracked_run = MlflowClient.tracked_run

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}

    async def close(self) -> None:
        pass

    async def experiment_id(self, name: str) -> str:
        return "1"

    async def find_run(self, experiment_id: str, run_uid: str) -> dict[str, Any] | None:
        for run_id, run in self.runs.items():
            if run["tags"].get("trainrun.run_uid") == run_uid:
                return {"info": {"run_id": run_id}, "data": {"tags": [{"key": k, "value": v} for k, v in run["tags"].items()]}}
        return None

    async def create_run(self, experiment_id: str, *, name: str, start: str, tags: Any) -> str:
        run_id = f"r{len(self.runs) + 1}"
        self.runs[run_id] = {"tags": dict(tags), "metrics": [], "params": {}, "status": "RUNNING"}
        return run_id

    async def log_batch(self, run_id: str, *, metrics: Any = (), params: Any = (), tags: Any = ()) -> None:
        run = self.runs[run_id]
        run["metrics"] += [(row["key"], row["step"], row["value"]) for row in metrics]
        run["params"].update(dict(params))
        run["tags"].update(dict(tags))

    async def end_run(self, run_id: str, *, status: str, end: str | None) -> None:
        self.runs[run_id]["status"] = status


class FakeArchive:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def read_all(self) -> dict[str, list[str]]:
        return {"metrics": list(self.lines)}


def record(step: int, replica: str = "master-0") -> str:
    return json.dumps({"time": "2026-11-30T10:00:00Z", "replica": replica, "step": step, "loss": 1.0 / step})


TRACK = Track(
    registry="mlflow", experiment="e", run_uid="uid-1", run_name="run", start=None, params=(("epochs", "1"),), tags=(("trainrun.run_uid", "uid-1"),)
)


def tracker(server: FakeMlflow, archive: FakeArchive) -> RunTracker:
    async def client(track: Track) -> Any:
        return server

    async def opened() -> Any:
        return archive

    return RunTracker("run", client=client, archive=opened, on_change=lambda: None)


def test_records_are_sent_once_through_restarts_and_gaps() -> None:
    server = FakeMlflow()
    shipped = [record(step) if step % 4 else record(step, "worker-0") for step in range(1, 13)]
    archive = FakeArchive(shipped[:6])

    async def scenario() -> None:
        first = tracker(server, archive)
        first.track = TRACK
        first.feed(0, shipped[:4])
        await first._sync()  # creates the run, sends records 0-3 with the mark 4
        assert server.runs["r1"]["tags"][SENT_TAG] == "4"
        first.feed(4, shipped[4:6])  # handed, but the operator dies before sending them
        # A restarted operator: the follower resumes after what the archive holds (6 records), so the new tracker
        # is handed records from index 6 on; 4 and 5 come from the archive.
        second = tracker(server, archive)
        second.track = TRACK
        second.feed(6, shipped[6:9])
        await second._sync()
        assert second.run_id == "r1" and server.runs["r1"]["tags"][SENT_TAG] == "9"
        archive.lines = shipped  # sealed: everything
        second.feed(7, shipped[7:9])  # handed again (a batch re-offered): ignored
        second.track = Track(**{**TRACK.__dict__, "final": "FINISHED"})  # the run is over, its logs sealed
        await second._sync()
        assert second.ended

    asyncio.run(scenario())
    run = server.runs["r1"]
    steps = [step for _, step, _ in run["metrics"]]
    assert steps == [step for step in range(1, 13) if step % 4]  # the Master's, each once, in order
    assert run["tags"][SENT_TAG] == "12" and run["status"] == "FINISHED" and run["params"] == {"epochs": "1"}
    assert len(server.runs) == 1
