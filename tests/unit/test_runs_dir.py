"""Which runs folder the ``--local`` verbs read when none is named, and what they say when they find no run."""

from __future__ import annotations

from pathlib import Path

import pytest
from run_folders import local_run
from trainrun.cli.main import app
from trainrun.local import nearest_runs_dir
from typer.testing import CliRunner

runner = CliRunner()


def test_a_sub_folder_reads_the_runs_of_the_folder_above(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = local_run(tmp_path / "project" / "runs", name="demo")
    deeper = tmp_path / "project" / "src" / "deeper"
    deeper.mkdir(parents=True)
    monkeypatch.chdir(deeper)
    monkeypatch.delenv("TRAINRUN_RUNS_DIR", raising=False)
    result = runner.invoke(app, ["get", "--local"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].split()[:2] == [folder.path.name, "Completed"]
    assert runner.invoke(app, ["describe", "demo", "--local"]).exit_code == 0


def test_an_empty_runs_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["get", "--local", "--runs-dir", str(tmp_path / "empty")])
    assert (result.exit_code, result.output) == (0, f"No TrainingRuns found in {tmp_path / 'empty'}.\n")
    result = runner.invoke(app, ["logs", "demo", "--local", "--runs-dir", str(tmp_path / "empty")])
    assert (result.exit_code, result.output) == (1, f"error: no local run called 'demo' in {tmp_path / 'empty'}\n")


def test_no_runs_here_or_above_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if nearest_runs_dir(tmp_path) is not None:
        pytest.skip(f"a folder above {tmp_path} holds runs of its own")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRAINRUN_RUNS_DIR", raising=False)
    result = runner.invoke(app, ["get", "--local"])
    assert result.output == (
        f"No TrainingRuns found in {tmp_path / 'runs'} nor in a runs/ folder above it "
        "(--runs-dir or TRAINRUN_RUNS_DIR names another).\n"
    )


def test_the_nearest_folder_with_runs_wins_and_empty_ones_are_passed_over(tmp_path: Path) -> None:
    local_run(tmp_path / "runs")
    (tmp_path / "a" / "runs").mkdir(parents=True)  # a runs folder with no run in it
    local_run(tmp_path / "a" / "b" / "runs")
    assert nearest_runs_dir(tmp_path / "a" / "b" / "c") == tmp_path / "a" / "b" / "runs"
    assert nearest_runs_dir(tmp_path / "a") == tmp_path / "runs"
