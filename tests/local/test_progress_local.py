"""Progress, ETA and hangs of local runs: ``trainrun run --local`` for real.

The quick start reports its percent and ETA while it trains (the status the CLI's ``get`` reads, written
by the runner from the same functions the operator uses), and a replica that stops printing is reported
as hung by the operator's hang rule (``spec.runPolicy.hangTimeoutSeconds``, ``onHang``).
"""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from localrun import TRAINRUN, cli_env, run_folder, run_local, sample, start_local_run, write_run

pytestmark = pytest.mark.slow  # real training processes


def status_of(runs_dir: Path) -> dict[str, Any]:
    if not runs_dir.exists() or not any(runs_dir.iterdir()):
        return {}
    path = run_folder(runs_dir) / "status.json"
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError:
        return {}  # caught while it was written


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_the_quickstart_reports_progress_and_an_eta_while_it_trains(tmp_path: Path) -> None:
    manifest = write_run(tmp_path / "quickstart.yaml", sample("quickstart.yaml"))
    runs_dir = tmp_path / "runs"
    process = start_local_run(manifest, runs_dir, cwd=tmp_path, output=subprocess.DEVNULL)
    seen: list[dict[str, Any]] = []
    rows: list[list[str]] = []
    done = threading.Event()

    def watch_progress() -> None:
        """Every progress with an ETA the runner writes, read as it comes (not between the CLI calls below,
        which a busy machine makes take longer than the rest of the training)."""
        while not done.is_set():
            progress = status_of(runs_dir).get("progress")
            if progress and progress.get("eta") and (not seen or seen[-1]["step"] != progress["step"]):
                seen.append(progress)
            time.sleep(0.1)

    watcher = threading.Thread(target=watch_progress, daemon=True)
    watcher.start()
    try:
        while process.poll() is None and len(rows) < 2:
            if seen:
                table = subprocess.run(
                    [*TRAINRUN, "get", "--local", "--runs-dir", str(runs_dir)],
                    capture_output=True, text=True, env=cli_env(), cwd=tmp_path, timeout=30,
                ).stdout.splitlines()
                row = table[1].split() if len(table) > 1 else []
                if row[1:2] == ["Running"]:  # not a row of the run just Completed
                    rows.append(row)
            time.sleep(0.3)
        assert process.wait(timeout=300) == 0
    finally:
        done.set()
        watcher.join()
        if process.poll() is None:
            process.kill()
    assert len(seen) >= 2, seen
    assert [item["percent"] for item in seen] == sorted(item["percent"] for item in seen)
    for progress in seen:
        # The ETA is the last step's time plus what is left at the pace of the latest steps.
        left = (progress["totalSteps"] - progress["step"]) / progress["stepsPerSecond"]
        assert (moment(progress["eta"]) - moment(progress["lastStepTime"])).total_seconds() == pytest.approx(left, abs=1)
        assert progress["summary"] == f"{progress['percent']:.0f}%" and progress["epochs"] == 3
    # trainrun get shows them (PROGRESS, ETA columns) while the run trains.
    assert rows and rows[0][6].endswith("%") and rows[0][7] not in ("-", ""), rows
    final = status_of(runs_dir)
    assert final["phase"] == "Completed"
    assert final["progress"]["step"] == final["progress"]["totalSteps"] and final["progress"]["summary"] == "100%"


SLEEPER = textwrap.dedent(
    """
    import os, time
    print('trainrun:progress {"step": 0, "total_steps": 1000}', flush=True)
    for step in range(1, 4):
        print(f'trainrun:metric {{"epoch": 1, "step": {step}, "loss": 0.5}}', flush=True)
        time.sleep(0.2)
    time.sleep(600)  # then nothing: stuck
    """
)


def sleeper_run(tmp_path: Path, **policy: Any) -> Path:
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    document = sample("quickstart.yaml")
    document["metadata"]["name"] = "sleeper"
    document["spec"]["script"] = "sleeper.py"
    document["spec"]["hyperparameters"] = {}
    document["spec"]["runPolicy"] = {"hangTimeoutSeconds": 10, **policy}
    return write_run(tmp_path / "sleeper.yaml", document)


def test_a_replica_that_stops_printing_is_reported_as_hung(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    process = start_local_run(sleeper_run(tmp_path), runs_dir, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 90
        while status_of(runs_dir).get("reason") != "Hung" and time.monotonic() < deadline:
            time.sleep(0.3)
        status = status_of(runs_dir)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert status.get("reason") == "Hung", status
    assert status["phase"] == "Running"
    assert status["message"].startswith("hung: no new step since") and "(step 3)" in status["message"]
    assert "silent: master-0 since" in status["message"] and "worker-0 since" in status["message"]
    stalled = next(condition for condition in status["conditions"] if condition["type"] == "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "Hung"
    assert "note: hung: no new step since" in output  # the CLI says so as it happens
    assert process.returncode == 130  # then Ctrl-C: Cancelled


def test_on_hang_fail_fails_the_local_run(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    started = time.monotonic()
    result = run_local(sleeper_run(tmp_path, onHang="Fail"), runs_dir, cwd=tmp_path, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert time.monotonic() - started < 60
    status = status_of(runs_dir)
    assert (status["phase"], status["reason"]) == ("Failed", "Hung"), status
    assert "failed (spec.runPolicy.onHang: Fail)" in status["message"]
    assert "sleeper: Failed" in result.stderr


def test_on_hang_restart_restarts_the_local_run_then_its_limit_fails_it(tmp_path: Path) -> None:
    """The operator's restart rules, run by the local runner: a hung run's processes are stopped and started
    again after the back-off (the log goes on: both sets wrote to it), once; the second hang is past
    maxRestarts and fails the run."""
    runs_dir = tmp_path / "runs"
    manifest = sleeper_run(tmp_path, onHang="Restart", maxRestarts=1, restartBackoffSeconds=1)
    result = run_local(manifest, runs_dir, cwd=tmp_path, timeout=240)
    assert result.returncode == 1, result.stdout + result.stderr
    status = status_of(runs_dir)
    assert (status["phase"], status["reason"]) == ("Failed", "RestartLimitExceeded"), status
    assert [restart["cause"] for restart in status["restarts"]] == ["Hang"]
    assert "all 1 restarts used (spec.runPolicy.maxRestarts=1)" in status["message"]
    log = (run_folder(runs_dir) / "logs" / "master-0.log").read_text()
    assert log.count('"step": 3') >= 2, log  # the first set of processes, then the restarted one
    events = [json.loads(line) for line in (run_folder(runs_dir) / "events.jsonl").read_text().splitlines()]
    assert any(event["reason"] == "Restarting" and event["type"] == "Warning" for event in events), events
