"""``trainrun sweep``, ``get trs`` and ``describe sweep`` through typer's CliRunner: a bad sweep is one line
naming the field before anything starts; the sweep table has kubectl's columns; describe lists the trials
best first. A client that serves one finished sweep stands in for the cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from test_sweep import NOW, run_sweep, scripted, sweep_doc
from trainrun.cli import get as get_module
from trainrun.cli import logs as logs_module
from trainrun.cli.main import app
from trainrun.cli.sweepplots import sweep_views
from trainrun.spec import load_training_sweep
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def finished_sweep() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    document = sweep_doc(maxTrials=6, parallelism=2, earlyStopping={"type": "median", "startupTrials": 2}, algorithm="random")
    trials, plans = run_sweep(document, scripted({3, 4}), rounds=40)
    sweep = {**document, "metadata": {**document["metadata"], "creationTimestamp": NOW}, "status": plans[-1].status_patch}
    return sweep, list(trials.values())


class OneSweepClient:
    def __init__(self, sweep: dict[str, Any], trials: list[dict[str, Any]]) -> None:
        self.sweep = sweep
        self.trial_objects = trials

    def trials(self, name: str) -> list[dict[str, Any]]:
        assert name == "tune"
        return self.trial_objects

    def get_sweep(self, name: str) -> dict[str, Any]:
        assert name == "tune"
        return self.sweep

    def list_sweeps(self, *, all_namespaces: bool = False) -> list[dict[str, Any]]:
        return [self.sweep]


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    sweep, trials = finished_sweep()
    for module in (get_module, logs_module):
        monkeypatch.setattr(module, "client_for", lambda *args, **kwargs: OneSweepClient(sweep, trials))
    return sweep


def test_the_sample_sweep_is_valid() -> None:
    sweep = load_training_sweep(yaml.safe_load((REPO / "manifests" / "samples" / "sweep.yaml").read_text()), local=True)
    assert set(sweep.spec.parameters) == {"learningRate", "batchSize"}


def test_a_bad_sweep_is_one_line_naming_the_field(tmp_path: Path) -> None:
    document = sweep_doc(maxTrials=0)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(document))
    result = runner.invoke(app, ["sweep", str(path), "--local", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1
    assert result.output.startswith("error: spec.maxTrials:") and result.output.count("\n") == 1, result.output
    assert not (tmp_path / "runs").exists()


def test_get_trs_shows_kubectls_columns(cluster: dict[str, Any]) -> None:
    result = runner.invoke(app, ["get", "trs"])
    assert result.exit_code == 0, result.output
    header, row = result.output.strip().splitlines()
    assert header.split() == ["NAME", "PHASE", "TRIALS", "BEST", "PROGRESS", "AGE"]
    status = cluster["status"]
    assert row.split()[:2] == ["tune", "Completed"] and status["trialsSummary"] in row and status["bestSummary"] in row
    one = runner.invoke(app, ["get", "trs", "tune", "-o", "yaml"])
    assert yaml.safe_load(one.output)["status"]["best"] == status["best"]


def test_describe_sweep_lists_the_trials_best_first(cluster: dict[str, Any]) -> None:
    result = runner.invoke(app, ["describe", "sweep", "tune"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    start = lines.index("Trials (best first):")
    rows = [line.split() for line in lines[start + 2 :] if line.strip().startswith("tune-")]
    assert rows[0][0] == cluster["status"]["best"]["trial"]
    states = [row[1] for row in rows]
    assert states == sorted(states, key=["Completed", "Pruned", "Running", "Failed", "Cancelled"].index)
    assert "Pruned" in states


def test_a_run_name_after_a_run_name_is_refused() -> None:
    result = runner.invoke(app, ["get", "quickstart", "tune"])
    assert result.exit_code == 1 and "trainrun get trs tune" in result.output


def test_metrics_sweep_draws_every_trial_and_each_parameter(cluster: dict[str, Any], tmp_path: Path) -> None:
    image = tmp_path / "sweep.png"
    result = runner.invoke(app, ["metrics", "sweep", "tune", "--plot", str(image)])
    assert result.exit_code == 0, result.output
    assert image.stat().st_size > 10_000
    assert "val_loss by epoch" in result.output and "learningRate vs val_loss" in result.output


def test_the_sweep_views_highlight_the_best_and_mark_the_pruned(cluster: dict[str, Any]) -> None:
    sweep, trials = finished_sweep()
    views = sweep_views(sweep, trials)
    assert [curve.name for curve in views.curves if curve.best] == [sweep["status"]["best"]["trial"]]
    assert {curve.name for curve in views.curves if curve.pruned} <= {"tune-3", "tune-4"}
    assert [view.name for view in views.parameters] == ["learningRate", "batchSize"]
    learning_rate, batch_size = views.parameters
    assert learning_rate.numeric and learning_rate.log_scale and batch_size.numeric and not batch_size.log_scale
    assert sum(point.best for point in learning_rate.points) == 1
