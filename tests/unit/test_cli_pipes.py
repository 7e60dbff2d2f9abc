"""A reader that stops early (``trainrun logs NAME | head``) is a normal end: exit code 0, nothing on stderr.

The console script runs under bash with pipefail, so the exit code is trainrun's own, as a shell script
that pipes it would see it. The output is far larger than a pipe holds, so trainrun writes to a closed pipe.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from run_folders import local_run
from trainrun.storage import upload_directory

LINES = 20_000


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    lines = [f"line {index} " + "x" * 60 for index in range(LINES)]
    records = [{"replica": "master-0", "epoch": 1, "step": step, "train_loss": 1.0 / step} for step in range(1, LINES)]
    outputs = tmp_path / "outputs"
    for index in range(1500):  # a manifest of 1,500 files: its JSON is far more than a pipe holds
        (outputs / f"shard-{index // 100}").mkdir(parents=True, exist_ok=True)
        (outputs / f"shard-{index // 100}" / f"part-{index}.bin").write_bytes(b"x")
    copied = upload_directory(outputs, (tmp_path / "artifacts").as_uri())
    artifacts = {"uri": copied.uri, "manifestUri": copied.manifest_uri, "fileCount": 1500, "bytes": 1500}
    local_run(tmp_path / "runs", logs={"master-0": lines, "worker-0": lines}, metrics=records,
              status={"phase": "Completed", "artifacts": artifacts})
    return tmp_path / "runs"


@pytest.mark.parametrize(
    "verb",
    [["logs", "demo"], ["logs", "demo", "--raw"], ["metrics", "demo", "--history"], ["metrics", "demo", "--json"],
     ["artifacts", "demo", "-o", "json"], ["artifacts", "demo"]],
    ids=["logs", "logs-raw", "metrics-history", "metrics-json", "artifacts-json", "artifacts-table"],
)
def test_a_closed_pipe_ends_the_verb_with_exit_code_0(runs_dir: Path, verb: list[str]) -> None:
    command = " ".join([sys.executable, "-m", "trainrun.cli", *verb, "--local", "--runs-dir", str(runs_dir)])
    completed = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{command} | head -n 2"],
        capture_output=True, text=True, env=os.environ, timeout=120, check=False,
    )
    assert (completed.returncode, completed.stderr) == (0, ""), completed.stderr
    assert len(completed.stdout.splitlines()) == 2
