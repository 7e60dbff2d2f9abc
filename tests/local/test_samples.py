"""The CPU samples of manifests/samples run with --local (inputs staged, scripts found, metrics parsed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from localrun import REPO, SAMPLES, TRAINRUN, cli_env, metric_records, run_folder, run_local, sample, write_run

sys.path.insert(0, str(REPO / "tests" / "training"))
from dataset_files import write_cifar10  # noqa: E402 - the training tests' writer of a tiny CIFAR-10

pytestmark = pytest.mark.slow  # real training processes


def test_cifar10_cnn_stages_its_input_and_trains(tmp_path: Path) -> None:
    dataset = tmp_path / "cifar10-source"
    write_cifar10(dataset, per_batch=32)
    document = sample("cifar10-cnn.yaml")
    document["spec"]["inputs"][0]["uri"] = f"file://{dataset}"
    document["spec"]["output"]["uri"] = str(tmp_path / "artifacts")
    document["spec"]["hyperparameters"].update({"epochs": 2, "batchSize": 16})
    runs_dir = tmp_path / "runs"
    result = run_local(write_run(tmp_path / "cifar.yaml", document), runs_dir, "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    folder = run_folder(runs_dir)
    assert (folder / "inputs" / "cifar10" / "cifar-10-batches-py" / "data_batch_1").is_file()
    # The trainer found the data only because /inputs/cifar10 in its --data-dir flag was rewritten.
    records = metric_records(folder / "metrics.jsonl")
    assert any("val_accuracy_pct" in record for record in records), "the spec's regex metric was not read"
    assert (tmp_path / "artifacts" / "model.ts").is_file()
    assert (tmp_path / "artifacts" / "manifest.json").is_file()
    # --quiet: phases and metrics, no replica lines.
    assert "[master-0]" not in result.stdout
    assert "cifar10-cnn: Completed" in result.stdout


def test_custom_script_runs_with_regex_metrics(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    # --set changes the file's fields for this run only: 600 steps print 6 losses (one per 100 steps), not 20.
    # Started in the sample's folder, where spec.script is, the run needs no --code.
    result = run_local(
        SAMPLES / "custom-script.yaml", runs_dir, "--quiet", "--set", "hyperparameters.extra.steps=600", cwd=SAMPLES
    )
    assert result.returncode == 0, result.stdout + result.stderr
    folder = run_folder(runs_dir)
    losses = [record["loss"] for record in metric_records(folder / "metrics.jsonl") if "loss" in record]
    assert len(losses) == 6
    assert losses[-1] < losses[0]
    assert (folder / "outputs" / "model.pt").is_file()
    status = json.loads((folder / "status.json").read_text())
    assert status["phase"] == "Completed"
    assert status["keyMetric"].startswith("loss=")
    # Its progress lines give the run's size: the PROGRESS column reads 100% at the end, not "-".
    assert (status["progress"]["step"], status["progress"]["totalSteps"], status["progress"]["summary"]) == (600, 600, "100%")
    # No output URI in the sample: the verified copy lands in the run folder, manifest and logs included.
    manifest = json.loads((folder / "artifacts" / "manifest.json").read_text())
    assert {"model.pt", "logs/master-0.log"} <= {entry["path"] for entry in manifest["files"]}
    assert status["artifacts"]["uri"] == (folder / "artifacts").resolve().as_uri()
    # The learning curve of the run, drawn from the same history.
    plotted = subprocess.run(
        [*TRAINRUN, "metrics", folder.name, "--local", "--runs-dir", str(runs_dir), "--plot", str(tmp_path / "loss.svg")],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )
    assert plotted.returncode == 0, plotted.stderr
    assert "wrote" in plotted.stderr and "(loss)" in plotted.stderr
    assert (tmp_path / "loss.svg").read_text().lstrip().startswith("<?xml")


def test_a_code_folder_is_staged_and_becomes_the_working_directory(tmp_path: Path) -> None:
    document = sample("custom-script.yaml")
    document["spec"]["script"] = "train.py"
    document["spec"]["hyperparameters"]["extra"]["steps"] = "40"
    runs_dir = tmp_path / "runs"
    result = run_local(
        write_run(tmp_path / "code.yaml", document), runs_dir, "--quiet", "--code", str(SAMPLES / "custom-script"), cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    folder = run_folder(runs_dir)
    assert (folder / "code" / "train.py").read_text() == (SAMPLES / "custom-script" / "train.py").read_text()
    assert "staging code from" in result.stdout
