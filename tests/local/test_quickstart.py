"""`trainrun run quickstart.yaml --local`: two real processes train, the loss falls, artifacts are copied."""

from __future__ import annotations

import json
import re
import socket

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
    assert status["metricsFinal"] is True and status["metrics"]["val_loss"] > 0  # every replica's output read to its end
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


def test_two_processes_trained_together_and_each_says_who_it_is(quickstart: FinishedRun) -> None:
    master_log = (quickstart.folder / "logs" / "master-0.log").read_text()
    assert "world size 2" in master_log
    worker_lines = (quickstart.folder / "logs" / "worker-0.log").read_text().splitlines()
    # Rank 1 reports no metrics, but says who it is when it starts and ends (it does not look dead).
    assert [re.sub(r"at .*", "at T", line) for line in worker_lines] == [
        f"trainrun_trainer: rank 1 of 2 (local rank 0 on {socket.gethostname()}, cpu) starting at T",
        f"trainrun_trainer: rank 1 of 2 (local rank 0 on {socket.gethostname()}, cpu) finished at T",
    ]
    assert master_log.splitlines()[0].startswith("trainrun_trainer: rank 0 of 2 ")
    assert master_log.splitlines()[-1].startswith("trainrun_trainer: rank 0 of 2 ")


def test_the_console_shows_each_metric_once_in_readable_numbers(quickstart: FinishedRun) -> None:
    lines = quickstart.result.stdout.splitlines()
    # The log file keeps the machine's lines; people read these:
    assert not any("trainrun:metric" in line or "trainrun:progress" in line for line in lines)
    assert "[master-0] progress: epoch 1 of 3 · step 0 of 576" in lines
    assert "[master-0] progress: exporting model" in lines
    metric_lines = [line for line in lines if line.startswith("[master-0] epoch ") and " · " in line]
    records = metric_records(quickstart.folder / "metrics.jsonl")
    assert len(metric_lines) == len({json.dumps({k: v for k, v in r.items() if k != "time"}) for r in records})
    assert metric_lines[0].startswith("[master-0] epoch 1 · step 8 · train_loss ")
    # No exponents (images_per_sec 1.193e+04 was one); only a learning rate near zero may need one.
    assert not any(re.search(r"\de[+-]\d\d", re.sub(r"lr \S+", "", line)) for line in metric_lines)
    assert re.search(r"images_per_sec \d{1,3}(,\d{3})+ ", metric_lines[0])
    assert {line.split("]")[0] + "] " + line.split(") ")[-1].split(" at ")[0] for line in lines
            if "trainrun_trainer: rank" in line} == {
        "[master-0] starting", "[master-0] finished", "[worker-0] starting", "[worker-0] finished"}


def test_phases_are_shown(quickstart: FinishedRun) -> None:
    assert "quickstart: Preparing" in quickstart.result.stdout
    assert "quickstart: Running" in quickstart.result.stdout
    assert "quickstart: Uploading" in quickstart.result.stdout
    assert "quickstart: Completed" in quickstart.result.stdout


def test_the_loss_falls_over_the_whole_run(quickstart: FinishedRun) -> None:
    """A task that teaches: not solved in a few steps, still learning in the last epoch, a decade in all."""
    records = metric_records(quickstart.folder / "metrics.jsonl")
    windows = [record["train_loss"] for record in records if "val_loss" not in record]
    assert len(windows) == 72  # 3 epochs x 192 steps, a line every 8 steps
    thirds = [sum(part) / len(part) for part in (windows[:24], windows[24:48], windows[48:])]
    assert thirds[0] > 1.5 * thirds[1] > 1.5 * 1.5 * thirds[2], thirds
    assert windows[7] > windows[0] / 2  # after a tenth of the run, still far from solved
    assert windows[-1] < windows[0] / 10
    validation = [record["val_loss"] for record in records if "val_loss" in record]
    assert validation == sorted(validation, reverse=True) and len(set(validation)) == 3


def test_metric_records_carry_position_and_replica(quickstart: FinishedRun) -> None:
    first = metric_records(quickstart.folder / "metrics.jsonl")[0]
    assert first["replica"] == "master-0"
    assert isinstance(first["epoch"], int) and isinstance(first["step"], int)


def test_artifacts_reach_the_output_uri_with_the_manifest_last(quickstart: FinishedRun) -> None:
    artifacts = quickstart.artifacts
    for name in ("model.pt", "model.ts", "model.pt2", "model.onnx", "metrics.jsonl", "run.json", "logs/master-0.log",
                 "logs/worker-0.log"):
        assert (artifacts / name).is_file(), name
    manifest = json.loads((artifacts / "manifest.json").read_text())
    copied = [path for path in artifacts.rglob("*") if path.is_file() and path.name != "manifest.json"]
    assert (artifacts / "manifest.json").stat().st_mtime_ns >= max(path.stat().st_mtime_ns for path in copied)
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
