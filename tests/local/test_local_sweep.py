"""The sample sweep with ``trainrun sweep --local``: its trials are local runs of the real trainer, 2 at a time,
and the sweep ends naming the best trial (a shortened sample: 4 trials of 2 epochs on a smaller data set)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from localrun import REPO, TRAINRUN, cli_env, sample, write_run

pytestmark = pytest.mark.slow  # real training processes


def test_the_sample_sweep_runs_to_the_end_locally_and_reports_the_best(tmp_path: Path) -> None:
    document = sample("sweep.yaml")
    spec = document["spec"]
    spec["maxTrials"] = 4
    spec["template"]["hyperparameters"].update({"epochs": 2, "extra": {"image-size": "28", "synthetic-samples": "4096"}})
    runs_dir = tmp_path / "runs"
    result = subprocess.run(
        [*TRAINRUN, "sweep", str(write_run(tmp_path / "sweep.yaml", document)), "--local", "--runs-dir", str(runs_dir)],
        capture_output=True, text=True, timeout=900, env=cli_env(), cwd=tmp_path, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert sum(line.startswith("TrialStarted: quickstart-tune-") for line in lines) == 4
    assert any(line.startswith("NewBest: new best: quickstart-tune-") for line in lines)
    phase = next(line for line in lines if line.startswith("Phase:"))
    assert phase.split() == ["Phase:", "Completed"]
    best = next(line for line in lines if line.startswith("Best:")).split()[-1].strip("()")
    folders = sorted(path for path in runs_dir.iterdir() if path.is_dir())
    assert [path.name.rsplit("-", 2)[0] for path in folders] == [f"quickstart-tune-{n}" for n in range(4)]
    values = {}
    for folder in folders:
        status = json.loads((folder / "status.json").read_text())
        assert status["phase"] in ("Completed", "Cancelled"), status
        epochs = [point["epoch"] for point in status["series"]["points"]]
        assert epochs == sorted(epochs) and epochs[0] == 1  # the objective by epoch, kept for early stopping
        if status["phase"] == "Completed":
            values[folder.name.rsplit("-", 2)[0]] = status["metrics"]["val_loss"]
    assert best == min(values, key=values.__getitem__)
    assert (REPO / "manifests" / "samples" / "sweep.yaml").is_file()
