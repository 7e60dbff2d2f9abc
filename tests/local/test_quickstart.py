"""`trainrun run quickstart.yaml --local`: two real processes train, the loss falls, artifacts are copied."""

from __future__ import annotations

import json

import pytest
from localrun import FinishedRun, metric_records

pytestmark = pytest.mark.slow  # real training processes


def test_the_run_completes_with_exit_code_0(quickstart: FinishedRun) -> None:
    assert quickstart.result.returncode == 0, quickstart.result.stdout + quickstart.result.stderr
    status = json.loads((quickstart.folder / "status.json").read_text())
    assert status["phase"] == "Completed"
    assert status["replicas"] == {
        "Master": {"active": 0, "succeeded": 1, "failed": 0},
        "Worker": {"active": 0, "succeeded": 1, "failed": 0},
    }
    assert status["startTime"] <= status["completionTime"]
    conditions = {condition["type"]: condition["status"] for condition in status["conditions"]}
    assert conditions == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}


def test_each_phase_change_is_recorded_as_an_event(quickstart: FinishedRun) -> None:
    events = [json.loads(line) for line in (quickstart.folder / "events.jsonl").read_text().splitlines()]
    assert [event["message"].split(":")[0] for event in events] == [
        "Preparing",
        "Preparing -> Running",
        "Running -> Uploading",
        "Uploading -> Completed",
    ]
    assert all(event["type"] == "Normal" for event in events)


def test_two_processes_trained_together(quickstart: FinishedRun) -> None:
    master_log = (quickstart.folder / "logs" / "master-0.log").read_text()
    assert "world size 2" in master_log
    assert (quickstart.folder / "logs" / "worker-0.log").exists()


def test_replica_lines_are_shown_with_their_prefix(quickstart: FinishedRun) -> None:
    lines = quickstart.result.stdout.splitlines()
    assert any(line.startswith("[master-0] trainrun:metric {") for line in lines)
    assert "quickstart: Preparing" in quickstart.result.stdout
    assert "quickstart: Running" in quickstart.result.stdout
    assert "quickstart: Uploading" in quickstart.result.stdout
    assert "quickstart: Completed" in quickstart.result.stdout


def test_the_loss_falls(quickstart: FinishedRun) -> None:
    losses = [
        record["train_loss"] for record in metric_records(quickstart.folder / "metrics.jsonl") if "train_loss" in record
    ]
    assert len(losses) >= 4
    assert losses[-1] < losses[0] / 2


def test_metric_records_carry_position_and_replica(quickstart: FinishedRun) -> None:
    first = metric_records(quickstart.folder / "metrics.jsonl")[0]
    assert first["replica"] == "master-0"
    assert isinstance(first["epoch"], int) and isinstance(first["step"], int)


def test_artifacts_reach_the_output_uri_with_the_manifest_last(quickstart: FinishedRun) -> None:
    artifacts = quickstart.artifacts
    for name in ("model.pt", "model.ts", "model.pt2", "metrics.jsonl", "run.json", "logs/master-0.log", "logs/worker-0.log"):
        assert (artifacts / name).is_file(), name
    manifest = json.loads((artifacts / "manifest.json").read_text())
    listed = {entry["path"] for entry in manifest["files"]}
    assert {"model.pt", "model.ts", "logs/master-0.log"} <= listed
    assert manifest["file_count"] == len(manifest["files"])
    status = json.loads((quickstart.folder / "status.json").read_text())
    assert status["artifacts"]["fileCount"] == manifest["file_count"]
    assert status["artifacts"]["uri"].endswith("artifacts")


def test_the_model_loads_without_the_training_code(quickstart: FinishedRun) -> None:
    import torch

    model = torch.jit.load(str(quickstart.artifacts / "model.ts"))
    output = model(torch.zeros(1, 1, 28, 28))
    assert output.shape == (1, 10)
    # The torch.export program: the same network, any batch size.
    program = torch.export.load(str(quickstart.artifacts / "model.pt2")).module()
    images = torch.rand(5, 1, 28, 28)
    assert torch.allclose(program(images), model(images), atol=1e-5)


def test_the_worker_writes_to_its_own_scratch_folder(quickstart: FinishedRun) -> None:
    assert (quickstart.folder / "scratch" / "worker-0").is_dir()
    assert not (quickstart.folder / "scratch" / "worker-0" / "model.pt").exists()
