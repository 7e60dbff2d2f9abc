"""The reading verbs over a local run (get, describe, logs, metrics, wait, artifacts) through typer's CliRunner."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from localrun import FinishedRun
from trainrun.cli.main import app
from typer.testing import CliRunner

pytestmark = pytest.mark.slow  # real training processes

runner = CliRunner()


def invoke(quickstart: FinishedRun, *arguments: str) -> tuple[int, str]:
    result = runner.invoke(app, [*arguments, "--local", "--runs-dir", str(quickstart.runs_dir)])
    return result.exit_code, result.output


def test_get_shows_a_kubectl_like_table(quickstart: FinishedRun) -> None:
    code, output = invoke(quickstart, "get")
    assert code == 0, output
    header, row = output.strip().splitlines()
    assert header.split() == ["NAME", "PHASE", "POOL", "WORKERS", "GPUS", "METRIC", "PROGRESS", "ETA", "AGE"]
    # A local run is named by its folder, which every --local verb takes: two runs of one name differ.
    assert row.split()[:5] == [quickstart.folder.name, "Completed", "-", "1", "0"]
    assert row.split()[5].startswith("val_loss=")


def test_get_as_yaml_json_and_wide(quickstart: FinishedRun) -> None:
    code, output = invoke(quickstart, "get", "quickstart", "-o", "yaml")
    assert code == 0 and yaml.safe_load(output)["status"]["phase"] == "Completed"
    code, output = invoke(quickstart, "list", "-o", "json")
    assert code == 0 and json.loads(output)["items"][0]["metadata"]["name"] == "quickstart"
    code, output = invoke(quickstart, "get", "-o", "wide")
    assert code == 0 and "IMAGE" in output and "ghcr.io/trainrun/trainer:0.1.0" in output


def test_describe_shows_phase_replicas_metrics_and_artifacts(quickstart: FinishedRun) -> None:
    code, output = invoke(quickstart, "describe", "quickstart")
    assert code == 0, output
    for expected in (
        "Phase:",
        "Completed",
        "Conditions:",
        "Replicas:",
        "Metrics:",
        "train_loss",
        "Artifacts:",
        "Run folder:",
        "Events:",
        "Uploading -> Completed",
    ):
        assert expected in output


def test_logs_prefix_each_line_unless_one_replica_is_asked(quickstart: FinishedRun) -> None:
    code, output = invoke(quickstart, "logs", "quickstart")
    assert code == 0 and output.splitlines()[0].startswith("[master-0] ")
    code, output = invoke(quickstart, "logs", "quickstart", "--replica", "master-0", "--raw")
    assert code == 0 and output == (quickstart.folder / "logs" / "master-0.log").read_text()  # byte for byte
    # --tail N: the last N lines of each replica, as kubectl logs --tail.
    master_lines = (quickstart.folder / "logs" / "master-0.log").read_text().splitlines()
    code, output = invoke(quickstart, "logs", "quickstart", "--replica", "master-0", "--tail", "3", "--raw")
    assert code == 0 and output.splitlines() == master_lines[-3:]
    code, output = invoke(quickstart, "logs", "quickstart", "--tail", "1", "--raw")
    expected = []
    for replica in ("master-0", "worker-0"):
        lines = (quickstart.folder / "logs" / f"{replica}.log").read_text().splitlines()
        expected += [f"[{replica}] {line}" for line in lines[-1:]]  # a replica that printed nothing has none
    assert code == 0 and output.splitlines() == expected


def test_logs_show_metric_and_progress_lines_as_the_console_does(quickstart: FinishedRun) -> None:
    code, output = invoke(quickstart, "logs", "quickstart", "--replica", "master-0")
    assert code == 0
    assert "trainrun:metric" not in output and "trainrun:progress" not in output
    assert "progress: epoch 1 of 3 · step 0 of " in output
    assert any(line.startswith("epoch 1 · step 8 · train_loss ") for line in output.splitlines()), output


def test_metrics_latest_and_history(quickstart: FinishedRun) -> None:
    code, output = invoke(quickstart, "metrics", "quickstart")
    assert code == 0 and "train_loss" in output
    code, output = invoke(quickstart, "metrics", "quickstart", "--json")
    history = json.loads(output)["history"]
    assert history[0]["epoch"] == 1
    # The trainer's final line repeats its best epoch's: the history has each measurement once.
    measurements = [json.dumps({k: v for k, v in record.items() if k != "time"}, sort_keys=True) for record in history]
    assert len(measurements) == len(set(measurements))
    assert "val_loss" in history[-1] and history[-1]["epoch"] == 3  # the last epoch's summary, once
    code, output = invoke(quickstart, "metrics", "quickstart", "--history")
    lines = output.splitlines()
    assert code == 0 and lines[0].split()[:2] == ["EPOCH", "STEP"]
    assert len(lines) == 1 + len(history) and lines[-1] != lines[-2]


def test_artifacts_lists_the_manifest_and_downloads_it(quickstart: FinishedRun, tmp_path: Path) -> None:
    manifest = json.loads((quickstart.artifacts / "manifest.json").read_text())
    code, output = invoke(quickstart, "artifacts", "quickstart")
    assert code == 0, output
    heading, header, *rows = output.strip().splitlines()
    assert heading.startswith(f"file://{quickstart.artifacts}: {manifest['file_count']} files")
    assert header.split() == ["PATH", "SIZE", "SHA256"]
    listed = {row.split()[0]: row.split()[-1] for row in rows}
    assert listed == {entry["path"]: entry["sha256"][:16] for entry in manifest["files"]}
    assert listed["model.pt"] == hashlib.sha256((quickstart.artifacts / "model.pt").read_bytes()).hexdigest()[:16]

    code, output = invoke(quickstart, "artifacts", "quickstart", "-o", "wide")
    assert code == 0 and {row.split()[-1] for row in output.strip().splitlines()[2:]} == {
        entry["sha256"] for entry in manifest["files"]
    }

    code, output = invoke(quickstart, "artifacts", "quickstart", "-o", "json")
    assert code == 0 and json.loads(output)["manifest"] == manifest

    code, output = invoke(quickstart, "artifacts", "quickstart", "--download", str(tmp_path / "copy"))
    assert code == 0, output
    assert f"downloaded {manifest['file_count']} files" in output and "verified against manifest.json" in output
    for entry in manifest["files"]:
        copied = (tmp_path / "copy" / entry["path"]).read_bytes()
        assert hashlib.sha256(copied).hexdigest() == entry["sha256"]

    code, output = invoke(quickstart, "artifacts", "nope")
    assert code == 1 and output.startswith("error: ") and "'nope'" in output


def test_wait_exit_codes(quickstart: FinishedRun) -> None:
    assert invoke(quickstart, "wait", "quickstart", "--for", "Completed")[0] == 0
    code, output = invoke(quickstart, "wait", "quickstart", "--for", "Failed", "--timeout", "5s")
    assert code == 1 and "finished as Completed, not Failed" in output
    code, output = invoke(quickstart, "wait", "quickstart", "--timeout", "soon")
    assert code == 1 and "--timeout 'soon' is not a duration" in output


def test_unknown_run_is_one_line_on_stderr(quickstart: FinishedRun) -> None:
    code, output = invoke(quickstart, "get", "nope")
    assert code == 1
    assert output.strip().splitlines() == [f"error: no local run called 'nope' in {quickstart.runs_dir}"]
