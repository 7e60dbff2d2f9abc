"""Helpers of the local-mode tests: the CLI as a subprocess, the samples, reading a run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "manifests" / "samples"
TRAINRUN = [sys.executable, "-m", "trainrun.cli"]


def cli_env() -> dict[str, str]:
    """The environment of a trainrun subprocess: the repo's packages importable even without pip install -e."""
    env = dict(os.environ)
    paths = [str(REPO / "operator"), str(REPO / "training")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def run_local(
    manifest: Path, runs_dir: Path, *extra: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``trainrun run MANIFEST --local --runs-dir RUNS_DIR EXTRA...`` to its end: exit code, stdout, stderr."""
    return subprocess.run(
        [*TRAINRUN, "run", str(manifest), "--local", "--runs-dir", str(runs_dir), *extra],
        capture_output=True,
        text=True,
        env=env or cli_env(),
        cwd=cwd,
        timeout=timeout,
    )


def start_local_run(
    manifest: Path, runs_dir: Path, *extra: str, cwd: Path, output: int = subprocess.PIPE
) -> subprocess.Popen[str]:
    """``trainrun run MANIFEST --local ...`` in the background, stdout and stderr together in ``stdout``
    (``output=subprocess.DEVNULL``: a test that does not read it, so a full pipe never blocks the CLI)."""
    return subprocess.Popen(
        [*TRAINRUN, "run", str(manifest), "--local", "--runs-dir", str(runs_dir), *extra],
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
        env=cli_env(),
        cwd=cwd,
    )


def sample(name: str) -> dict[str, Any]:
    """A sample TrainingRun as a dict."""
    loaded = yaml.safe_load((SAMPLES / name).read_text())
    assert isinstance(loaded, dict)
    return loaded


def write_run(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def run_folder(runs_dir: Path) -> Path:
    """The one run folder under runs_dir."""
    folders = [path for path in runs_dir.iterdir() if path.is_dir() and not path.name.startswith(".")]
    assert len(folders) == 1, folders
    return folders[0]


def metric_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class FinishedRun:
    """A finished `trainrun run --local` of a sample: its process result and where it wrote."""

    result: subprocess.CompletedProcess[str]
    runs_dir: Path
    folder: Path
    artifacts: Path
