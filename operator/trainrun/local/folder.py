"""The run folder of a local run: ``<runs dir>/<name>-<timestamp>/`` and the files in it.

Layout (the local backend's whole "control plane": the runner writes it, the Client reads it back):

  trainingrun.yaml   the TrainingRun as submitted, with metadata.creationTimestamp
  status.json        a TrainingRunStatus (camelCase, as on a cluster), rewritten at each phase change
  metrics.jsonl      one JSON object per metric line of any replica (epoch, step, values, replica, time)
  events.jsonl       one Kubernetes-shaped Event per phase change (what `describe` lists)
  logs/<replica>.log every line of every replica, as written
  outputs/           $OUTPUT_DIR of the Master
  artifacts/         the verified copy (outputs, logs/, manifest.json last) when the spec names no output URI
  scratch/<replica>/ $OUTPUT_DIR of each Worker (never copied)
  runner.pid         pid of the process supervising the replicas, while it runs

Written by ``trainrun.local.runner``; read by ``trainrun.client.local`` (get, list, logs, metrics).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from trainrun.spec.annotations import RUN_DIR_ANNOTATION
from trainrun.spec.status import TrainingRunStatus
from trainrun.status.observe import replica_sort_key
from trainrun.status.shapes import utc_now

MANIFEST_FILE = "trainingrun.yaml"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
EVENTS_FILE = "events.jsonl"
PID_FILE = "runner.pid"
LOGS_DIR = "logs"
OUTPUTS_DIR = "outputs"
ARTIFACTS_DIR = "artifacts"
SCRATCH_DIR = "scratch"
DEFAULT_RUNS_DIR = Path("runs")


@dataclass(frozen=True)
class RunFolder:
    """One local run's folder and the paths inside it."""

    path: Path

    @classmethod
    def create(cls, runs_dir: Path, name: str) -> RunFolder:
        """A new, empty folder ``<runs_dir>/<name>-<timestamp>`` (suffixed -2, -3... when taken)."""
        runs_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{name}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
        candidate, attempt = runs_dir / stem, 1
        while True:
            try:
                candidate.mkdir()
                break
            except FileExistsError:
                attempt += 1
                candidate = runs_dir / f"{stem}-{attempt}"
        folder = cls(candidate.resolve())
        folder.logs_dir.mkdir()
        folder.outputs_dir.mkdir()
        return folder

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_FILE

    @property
    def status_path(self) -> Path:
        return self.path / STATUS_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def pid_path(self) -> Path:
        return self.path / PID_FILE

    @property
    def logs_dir(self) -> Path:
        return self.path / LOGS_DIR

    @property
    def outputs_dir(self) -> Path:
        return self.path / OUTPUTS_DIR

    @property
    def default_artifacts_uri(self) -> str:
        """Where artifacts go when the spec names no output URI: a folder of the run, as a file:// URI."""
        return (self.path / ARTIFACTS_DIR).resolve().as_uri()

    def log_path(self, replica: str) -> Path:
        return self.logs_dir / f"{replica}.log"

    def scratch_dir(self, replica: str) -> Path:
        return self.path / SCRATCH_DIR / replica

    def write_manifest(self, document: dict[str, Any]) -> None:
        """Keep the TrainingRun as run, stamped with its creation time and this folder."""
        metadata = document.setdefault("metadata", {})
        metadata.setdefault("creationTimestamp", utc_now())
        metadata.setdefault("annotations", {})[RUN_DIR_ANNOTATION] = str(self.path)
        written = self.manifest_path.with_suffix(".writing")
        written.write_text(yaml.safe_dump(document, sort_keys=False))
        written.replace(self.manifest_path)  # a reader never sees half of it (a sweep marks a running trial)

    def read_manifest(self) -> dict[str, Any]:
        loaded = yaml.safe_load(self.manifest_path.read_text())
        if not isinstance(loaded, dict):
            raise ValueError(f"{self.manifest_path} does not hold a TrainingRun")
        return loaded

    def write_status(self, status: TrainingRunStatus) -> None:
        # Write then rename, so that a reader (trainrun get, Client.wait) never sees half a file.
        temporary = self.status_path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(status.to_patch(), indent=2) + "\n")
        os.replace(temporary, self.status_path)

    def read_status(self) -> TrainingRunStatus:
        if not self.status_path.exists():
            return TrainingRunStatus()
        return TrainingRunStatus.model_validate_json(self.status_path.read_text())

    def read_pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def metric_records(self) -> list[dict[str, Any]]:
        """Every record of metrics.jsonl, oldest first."""
        if not self.metrics_path.exists():
            return []
        with self.metrics_path.open() as lines:
            return [json.loads(line) for line in lines if line.strip()]

    @property
    def events_path(self) -> Path:
        return self.path / EVENTS_FILE

    def append_event(self, *, kind: str, reason: str, message: str, run_name: str, at: str) -> None:
        """Keep an Event in the shape of core/v1 Events, so ``describe`` shows both backends alike."""
        event = {
            "type": kind,
            "reason": reason,
            "message": message,
            "lastTimestamp": at,
            "involvedObject": {"kind": "TrainingRun", "name": run_name},
        }
        with self.events_path.open("a") as sink:
            sink.write(json.dumps(event) + "\n")

    def events(self) -> list[dict[str, Any]]:
        """The run's Events, oldest first."""
        if not self.events_path.exists():
            return []
        with self.events_path.open() as lines:
            return [json.loads(line) for line in lines if line.strip()]

    def replicas(self) -> list[str]:
        """Replica names that have a log, Master first (master-0, worker-0, worker-1, ...)."""
        names = [path.stem for path in self.logs_dir.glob("*.log")]
        return sorted(names, key=replica_sort_key)


def run_folders(runs_dir: Path) -> Iterator[RunFolder]:
    """Every run folder under runs_dir, oldest first."""
    if not runs_dir.is_dir():
        return
    for path in sorted(runs_dir.iterdir(), key=lambda item: item.name):
        if (path / MANIFEST_FILE).is_file():
            yield RunFolder(path.resolve())


def nearest_runs_dir(start: Path) -> Path | None:
    """The runs folder the reading verbs use when none is named: ``runs/`` of start or of the nearest folder
    above it that holds a run (as git finds its repository), None when there is none."""
    for folder in (start, *start.parents):
        candidate = folder / DEFAULT_RUNS_DIR
        if next(run_folders(candidate), None) is not None:
            return candidate
    return None


def find_run_folder(runs_dir: Path, name: str) -> RunFolder | None:
    """The folder called name, else the newest folder of the run called name."""
    pattern = re.compile(rf"^{re.escape(name)}-(\d{{8}}-\d{{6}})(?:-(\d+))?$")
    newest: tuple[str, int] | None = None
    found: RunFolder | None = None
    for folder in run_folders(runs_dir):
        if folder.path.name == name:
            return folder
        match = pattern.match(folder.path.name)
        if match is None:
            continue
        order = (match.group(1), int(match.group(2) or 1))
        if newest is None or order > newest:
            newest, found = order, folder
    return found

