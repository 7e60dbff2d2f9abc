"""Stopping local runs: Ctrl-C (SIGINT) cancels cleanly, a failing replica fails the run and stops the rest
(in the words the operator gives the same failure on a cluster: tests/unit/test_shared_phases.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from localrun import TRAINRUN, cli_env, metric_records, run_folder, run_local, sample, start_local_run, write_run

pytestmark = pytest.mark.slow  # real training processes


def wait_for(condition: object, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigint_cancels_the_run_and_leaves_no_process(tmp_path: Path) -> None:
    document = sample("quickstart.yaml")
    document["spec"]["hyperparameters"]["epochs"] = 50  # far longer than the test waits
    manifest = write_run(tmp_path / "long.yaml", document)
    runs_dir = tmp_path / "runs"
    process = start_local_run(manifest, runs_dir, cwd=tmp_path)
    try:
        wait_for(
            lambda: (
                runs_dir.exists()
                and any(runs_dir.iterdir())
                and (run_folder(runs_dir) / "metrics.jsonl").exists()
                and metric_records(run_folder(runs_dir) / "metrics.jsonl")
            ),
            timeout=120,
            what="the first metric line",
        )
        descendants = psutil.Process(process.pid).children(recursive=True)
        # Two torchrun launchers and their two training processes at least.
        assert len(descendants) >= 4, descendants
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, output
    alive = [child for child in descendants if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]
    assert alive == []
    status = json.loads((run_folder(runs_dir) / "status.json").read_text())
    assert status["phase"] == "Cancelled"
    assert "long: Cancelled" in output or "quickstart: Cancelled" in output


SLEEPER_SCRIPT = textwrap.dedent(
    """
    import os, time
    print(f"rank {os.environ['RANK']} ready", flush=True)
    time.sleep(600)
    """
)


@pytest.mark.parametrize("how", ["ctrl-c", "trainrun cancel"])
def test_a_stop_shows_one_line_per_replica_and_keeps_the_rest_in_the_logs(tmp_path: Path, how: str) -> None:
    """torchrun answers SIGTERM with warnings and a SignalException traceback (about 30 lines a replica):
    the console shows one line per replica instead, the logs keep every line."""
    (tmp_path / "sleeper.py").write_text(SLEEPER_SCRIPT)
    document = sample("quickstart.yaml")
    document["metadata"]["name"] = "sleeper"
    document["spec"]["script"] = "sleeper.py"
    document["spec"]["hyperparameters"]["extra"] = {}
    runs_dir = tmp_path / "runs"
    process = start_local_run(write_run(tmp_path / "sleeper.yaml", document), runs_dir, cwd=tmp_path)
    try:
        assert process.stdout is not None
        before: list[str] = []
        while sum(" ready" in line for line in before) < 2:  # both replicas run, and print nothing more
            line = process.stdout.readline()
            assert line, "".join(before)
            before.append(line.rstrip("\n"))
        if how == "ctrl-c":
            process.send_signal(signal.SIGINT)
        else:
            subprocess.run([*TRAINRUN, "cancel", "sleeper", "--local", "--runs-dir", str(runs_dir)], env=cli_env(),
                           check=True, capture_output=True, timeout=60)
        after = process.stdout.read().splitlines()
        assert process.wait(timeout=60) == 130
    finally:
        if process.poll() is None:
            process.kill()
    folder = run_folder(runs_dir)
    replica_lines = [line for line in after if line.startswith("[")]
    assert sorted(line.split("]")[0] for line in replica_lines) == ["[master-0", "[worker-0"], after  # one each
    assert after[-2][: len("sleeper: Cancelled  cancelled")] == "sleeper: Cancelled  cancelled", after
    assert after[-1] == f"run folder: {folder}"
    assert len(after) == 4, after
    for line in replica_lines:
        replica = line[1:].split("]")[0]
        logged = (folder / "logs" / f"{replica}.log").read_text().splitlines()
        held = int(line.split("(")[1].split(" ")[0])
        assert held == len(logged) - 1, (line, logged)  # every line after "ready" is in the log, and counted
    assert "SignalException" in (folder / "logs" / "master-0.log").read_text()


FAILING_SCRIPT = textwrap.dedent(
    """
    import os, time
    if os.environ["RANK"] != "0":
        raise RuntimeError(f"worker {os.environ['RANK']} could not load its shard")
    print("master waiting", flush=True)
    time.sleep(120)
    """
)


def test_a_failing_worker_fails_the_run_and_names_its_error(tmp_path: Path) -> None:
    (tmp_path / "fail.py").write_text(FAILING_SCRIPT)
    document = sample("quickstart.yaml")
    document["metadata"]["name"] = "failing"
    document["spec"]["script"] = "fail.py"
    manifest = write_run(tmp_path / "failing.yaml", document)
    runs_dir = tmp_path / "runs"
    started = time.monotonic()
    result = run_local(manifest, runs_dir, cwd=tmp_path, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert time.monotonic() - started < 60, "the Master should have been stopped, not waited for"
    expected = "replica worker-0 exited with code 1: RuntimeError: worker 1 could not load its shard"
    assert expected in result.stderr
    status = json.loads((run_folder(runs_dir) / "status.json").read_text())
    assert status["phase"] == "Failed"
    assert status["reason"] == "ReplicaFailed"
    assert status["message"] == expected
    # The same words as the operator's for this failure on a cluster: tests/unit/test_shared_phases.py.
    stalled = [condition for condition in status["conditions"] if condition["type"] == "Stalled"]
    assert stalled[0]["status"] == "True"
    assert "master waiting" in (run_folder(runs_dir) / "logs" / "master-0.log").read_text()


def test_a_program_that_cannot_start_fails_the_run_with_its_name(tmp_path: Path) -> None:
    document = sample("quickstart.yaml")
    document["metadata"]["name"] = "missing"
    document["spec"].update({"launcher": "none", "command": ["no-such-program-xyz"]})
    document["spec"]["hyperparameters"]["extra"] = {}
    runs_dir = tmp_path / "runs"
    result = run_local(write_run(tmp_path / "missing.yaml", document), runs_dir, cwd=tmp_path, timeout=60)
    assert result.returncode == 1
    expected = "replica master-0 exited with code 128: could not start 'no-such-program-xyz': No such file or directory"
    assert expected in result.stderr
    status = json.loads((run_folder(runs_dir) / "status.json").read_text())
    assert (status["phase"], status["reason"], status["message"]) == ("Failed", "ReplicaFailed", expected)
