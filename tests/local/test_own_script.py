"""Your own program, run locally: a spec with no image, and the custom-script sample as the README runs it."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from localrun import REPO, TRAINRUN, cli_env, metric_records, run_folder, run_local, write_run

pytestmark = pytest.mark.slow  # real processes


def test_a_local_run_needs_no_image(tmp_path: Path) -> None:
    document = {
        "apiVersion": "trainrun.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": "no-image"},
        "spec": {"launcher": "none", "command": ["python", "-c", "print('hello from', __import__('os').environ['RANK'])"],
                 "distribution": {"workers": 0}},
    }
    manifest = write_run(tmp_path / "run.yaml", document)
    runs_dir = tmp_path / "runs"
    validated = subprocess.run([*TRAINRUN, "validate", str(manifest), "--local"], capture_output=True, text=True,
                               env=cli_env(), timeout=60)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    result = run_local(manifest, runs_dir, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[master-0] hello from 0" in result.stdout
    assert "spec.image" not in result.stdout + result.stderr  # no notice about an image that is not there
    assert json.loads((run_folder(runs_dir) / "status.json").read_text())["phase"] == "Completed"


def readme_command(pattern: str) -> list[str]:
    """The README's command that matches pattern, as a user copies it, the venv's trainrun being this one."""
    lines = [line for line in (REPO / "README.md").read_text().splitlines() if re.match(pattern, line)]
    assert len(lines) == 1, lines
    words = shlex.split(lines[0].split("#")[0])
    assert words[0] == ".venv/bin/trainrun", words
    return [*TRAINRUN, *words[1:]]


def test_the_custom_script_sample_runs_from_the_repo_root_as_the_readme_says(tmp_path: Path) -> None:
    command = readme_command(r"\.venv/bin/trainrun run manifests/samples/custom-script\.yaml ")
    runs_dir = tmp_path / "runs"
    result = subprocess.run(command, capture_output=True, text=True, env={**cli_env(), "TRAINRUN_RUNS_DIR": str(runs_dir)},
                            cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    folder = run_folder(runs_dir)
    assert (folder / "code" / "custom-script" / "train.py").is_file()  # the --code snapshot, staged in the run folder
    # A loss worth reading: it falls a decade and a half towards the noise of the data, and never reads 0.
    losses = [record["loss"] for record in metric_records(folder / "metrics.jsonl")]
    assert len(losses) == 20 and min(losses) > 0.005
    assert losses[-1] < losses[0] / 10, losses
    assert "[master-0] progress: step 1000 of 2000" in result.stdout
    status = json.loads((folder / "status.json").read_text())
    assert (status["phase"], status["progress"]["summary"], status["keyMetric"][:5]) == ("Completed", "100%", "loss=")
