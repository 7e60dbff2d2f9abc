"""Your own program, run locally: a spec with no image, and the custom-script sample as the README runs it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from localrun import TRAINRUN, cli_env, run_folder, write_run

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
    result = subprocess.run([*TRAINRUN, "run", str(manifest), "--local", "--runs-dir", str(runs_dir)],
                            capture_output=True, text=True, env=cli_env(), cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[master-0] hello from 0" in result.stdout
    assert "spec.image" not in result.stdout + result.stderr  # no notice about an image that is not there
    assert json.loads((run_folder(runs_dir) / "status.json").read_text())["phase"] == "Completed"
