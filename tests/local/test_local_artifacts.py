"""Where a local run's artifacts are: ``Client.artifacts``/``download`` and ``trainrun artifacts --local``
read the verified copy the run made (status.artifacts), not its raw outputs/.

The run folders are made by the runner's own functions (no training), so these tests are fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from localrun import sample
from trainrun import Client
from trainrun.cli.main import app
from trainrun.local import RunFolder, prepare_run_folder
from trainrun.local.runner import upload_artifacts
from trainrun.spec.status import Phase, TrainingRunStatus
from typer.testing import CliRunner


def finished_run_without_output_uri(runs_dir: Path) -> RunFolder:
    """A Completed run whose spec names no output URI: its copy went to the run folder's artifacts/."""
    document = sample("quickstart.yaml")
    document["spec"].pop("output", None)
    folder = prepare_run_folder(document, runs_dir=runs_dir)
    (folder.outputs_dir / "model.pt").write_bytes(b"weights")
    (folder.log_path("master-0")).write_text("trained\n")
    artifacts = upload_artifacts(folder, folder.default_artifacts_uri)
    folder.write_status(TrainingRunStatus(phase=Phase.COMPLETED, reason="Completed", message="done", artifacts=artifacts))
    return folder


def test_artifacts_of_a_local_run_are_its_verified_copy(tmp_path: Path) -> None:
    folder = finished_run_without_output_uri(tmp_path / "runs")
    client = Client(backend="local", runs_dir=tmp_path / "runs")
    artifacts = client.artifacts("quickstart")
    assert artifacts["uri"] == folder.default_artifacts_uri
    assert artifacts["manifest"] is not None
    assert {entry["path"] for entry in artifacts["manifest"]["files"]} == {"model.pt", "logs/master-0.log"}


def test_the_cli_lists_and_downloads_the_verified_copy(tmp_path: Path) -> None:
    finished_run_without_output_uri(tmp_path / "runs")
    runner = CliRunner()
    listed = runner.invoke(app, ["artifacts", "quickstart", "--local", "--runs-dir", str(tmp_path / "runs")])
    assert listed.exit_code == 0, listed.output
    assert "no manifest" not in listed.output
    assert "model.pt" in listed.output and "logs/master-0.log" in listed.output
    downloaded = runner.invoke(
        app, ["artifacts", "quickstart", "--local", "--runs-dir", str(tmp_path / "runs"), "--download", str(tmp_path / "copy")]
    )
    assert downloaded.exit_code == 0, downloaded.output
    assert "verified against manifest.json" in downloaded.output
    assert (tmp_path / "copy" / "model.pt").read_bytes() == b"weights"


def test_a_run_that_copied_nothing_yet_points_where_its_copy_will_go(tmp_path: Path) -> None:
    document = sample("quickstart.yaml")
    document["spec"].pop("output", None)
    folder = prepare_run_folder(document, runs_dir=tmp_path / "runs")
    client = Client(backend="local", runs_dir=tmp_path / "runs")
    assert client.output_uri("quickstart") == folder.default_artifacts_uri  # never outputs/, which has no manifest
    assert client.artifacts("quickstart")["manifest"] is None


@pytest.mark.parametrize("where", ["status", "spec"])
def test_the_facade_prefers_the_copy_made_then_the_spec(tmp_path: Path, where: str) -> None:
    document = sample("quickstart.yaml")
    document["spec"]["output"] = {"uri": (tmp_path / "spec-target").as_uri()}
    folder = prepare_run_folder(document, runs_dir=tmp_path / "runs")
    if where == "status":
        status = folder.read_status()
        status.artifacts = upload_artifacts(folder, (tmp_path / "copied-here").as_uri())
        folder.write_status(status)
    expected = (tmp_path / ("copied-here" if where == "status" else "spec-target")).as_uri()
    assert Client(backend="local", runs_dir=tmp_path / "runs").output_uri("quickstart") == expected
