"""The local backend of ``trainrun.Client``: runs as processes on this machine, each in a run folder.

``create`` prepares the run folder and starts a detached ``python -m trainrun.local`` that supervises
the replicas; ``run`` supervises them in this process (``trainrun run --local``). Everything else
reads the run folders back (``trainrun.local.folder``), so a run started by the CLI can be watched
from a notebook and the other way round. Objects are returned in the cluster's shape (apiVersion,
kind, metadata, spec, status) so that callers never care which backend answered.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from trainrun.client.errors import ClientError, RunNotFound
from trainrun.local import (
    DEFAULT_RUNS_DIR,
    LocalRunner,
    RunFolder,
    find_run_folder,
    nearest_runs_dir,
    prepare_run_folder,
    run_folders,
)
from trainrun.metrics.observer import RunObserver
from trainrun.spec import OperatorConfig
from trainrun.spec.annotations import RUN_DIR_ANNOTATION
from trainrun.spec.status import Phase, TrainingRunStatus
from trainrun.status.observe import replica_sort_key

Object = dict[str, Any]
Objects = list[Object]  # spelled out: inside the classes, ``list`` is the method
# A local sweep is no object kept anywhere: it runs in the foreground, its trials are local runs.
LOCAL_SWEEP_WORDS = (
    "a sweep on this machine runs in the foreground (trainrun sweep FILE --local) and keeps no sweep object; "
    "its trials are local runs: trainrun get --local"
)
FOLLOW_POLL_SECONDS = 0.2
# A run folder whose runner never wrote its pid this long after the last status is taken as abandoned.
ABANDONED_AFTER_SECONDS = 30.0
RUNNER_LOG = "runner.log"


class LocalBackend:
    """Runs and reads local runs under one runs folder.

    Without a runs folder named, new runs go to ``./runs`` and runs are read from the nearest ``runs/``
    that holds any, here or in a folder above (``trainrun get --local`` from a sub-folder of a project)."""

    def __init__(self, *, runs_dir: str | Path | None = None) -> None:
        self.named_runs_dir = Path(runs_dir) if runs_dir is not None else None
        self.runs_dir = self.named_runs_dir or DEFAULT_RUNS_DIR  # where new runs go

    @property
    def read_dir(self) -> Path:
        """Where runs are read from: the runs folder named, else the nearest one with runs, else ./runs."""
        return self.named_runs_dir or nearest_runs_dir(Path.cwd()) or DEFAULT_RUNS_DIR

    def where(self, *, all_namespaces: bool = False) -> str:
        """Where runs were looked for, for a message that found none: ``in /home/me/project/runs``."""
        if self.named_runs_dir is not None:
            return f"in {self.named_runs_dir.resolve()}"
        nearest = nearest_runs_dir(Path.cwd())
        if nearest is not None:
            return f"in {nearest.resolve()}"
        return (
            f"in {Path.cwd() / DEFAULT_RUNS_DIR} nor in a runs/ folder above it "
            "(--runs-dir or TRAINRUN_RUNS_DIR names another)"
        )

    def create(self, document: Object) -> Object:
        """Start the run in a detached supervisor process; return it (phase Preparing)."""
        folder = prepare_run_folder(document, runs_dir=self.runs_dir)
        with (folder.path / RUNNER_LOG).open("ab") as runner_log:
            process = subprocess.Popen(
                [sys.executable, "-m", "trainrun.local", str(folder.path)],
                stdin=subprocess.DEVNULL,
                stdout=runner_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # Written here as well as by the runner, so that cancel works from the first instant.
        folder.pid_path.write_text(f"{process.pid}\n")
        return run_object(folder)

    def stage_code(self, document: Object, directory: Path, uri: str | None, max_bytes: int) -> str:
        """Snapshot the folder as a cluster run would (.trainrunignore honoured, size capped), by default
        under ``<runs dir>/.code-snapshots/``; return its URI, which the runner stages in."""
        from datetime import UTC, datetime

        from trainrun.storage import upload_code_snapshot

        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
        target = uri or (self.runs_dir / ".code-snapshots" / f"{document['metadata']['name']}-{stamp}").resolve().as_uri()
        return upload_code_snapshot(directory, target, max_bytes=max_bytes).uri

    def run(self, document: Object, *, observer: RunObserver | None = None) -> Object:
        """Run in this process until it finishes (Ctrl-C cancels it); return the finished run."""
        folder = prepare_run_folder(document, runs_dir=self.runs_dir)
        LocalRunner(folder, observer=observer).run()
        return run_object(folder)

    def get(self, name: str) -> Object:
        return run_object(self._folder(name))

    def list(self, *, all_namespaces: bool = False) -> Objects:
        return [run_object(folder) for folder in run_folders(self.read_dir)]

    def logs(
        self, name: str, *, follow: bool = False, replica: str | None = None, tail: int | None = None
    ) -> Iterator[tuple[str, str]]:
        """(replica, line) from the log files; with follow, until the run has finished and said all."""
        folder = self._folder(name)
        wanted = None if replica in (None, "all") else replica
        if wanted is not None and not folder.log_path(wanted).exists() and not follow:
            known = ", ".join(folder.replicas()) or "none yet"
            raise RunNotFound(f"run {name!r} has no replica {wanted!r} (replicas: {known})")
        offsets: dict[str, int] = {}
        while True:
            finished = _said_all(folder) if follow else True
            names = [wanted] if wanted is not None else folder.replicas()
            for replica_name in sorted(names, key=replica_sort_key):
                path = folder.log_path(replica_name)
                if tail is not None and replica_name not in offsets and path.exists():
                    offsets[replica_name] = offset_of_last_lines(path, tail)
                yield from _new_lines(path, replica_name, offsets, final=finished)
            if finished:
                return
            time.sleep(FOLLOW_POLL_SECONDS)

    def metric_history(self, name: str) -> Objects:
        return self._folder(name).metric_records()

    def events(self, name: str) -> Objects:
        """The Events the runner recorded at each phase change, oldest first."""
        return self._folder(name).events()

    def default_output_uri(self, run: Object) -> str:
        """Where a run without spec.output.uri copies its artifacts: its run folder's artifacts/ (never
        outputs/, which holds no manifest)."""
        return RunFolder(Path(run["metadata"]["annotations"][RUN_DIR_ANNOTATION])).default_artifacts_uri

    def annotate(self, name: str, annotations: Mapping[str, str]) -> Object:
        """Add annotations to the run as kept in its folder (a sweep's marks on its trial)."""
        folder = self._folder(name)
        document = folder.read_manifest()
        document.setdefault("metadata", {}).setdefault("annotations", {}).update(annotations)
        folder.write_manifest(document)
        return run_object(folder)

    def cancel(self, name: str) -> Object:
        """SIGTERM to the supervising process: it stops the replicas and writes Cancelled. The run as kept in its
        folder says spec.cancel: true from now on, as a cancelled run on a cluster does."""
        folder = self._folder(name)
        document = folder.read_manifest()
        if not (document.get("spec") or {}).get("cancel"):
            document.setdefault("spec", {})["cancel"] = True
            folder.write_manifest(document)
        pid = folder.read_pid()
        if pid is not None and not _phase_of(run_object(folder)).finished:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        return run_object(folder)

    def create_sweep(self, document: Object) -> Object:
        raise ClientError(LOCAL_SWEEP_WORDS)

    def get_sweep(self, name: str) -> Object:
        raise ClientError(LOCAL_SWEEP_WORDS)

    def list_sweeps(self, *, all_namespaces: bool = False) -> Objects:
        raise ClientError(LOCAL_SWEEP_WORDS)

    def operator_config(self) -> OperatorConfig | None:
        """This machine has no operator: registries come from MLFLOW_TRACKING_URI or the client's config."""
        return None

    def delete(self, name: str) -> bool:
        """Cancel the run if it is active, then remove its folder."""
        folder = self._folder(name)
        self.cancel(name)
        deadline = time.monotonic() + 30
        while folder.read_pid() is not None and _runner_alive(folder) and time.monotonic() < deadline:
            time.sleep(FOLLOW_POLL_SECONDS)
        shutil.rmtree(folder.path)
        return True

    def _folder(self, name: str) -> RunFolder:
        folder = find_run_folder(self.read_dir, name)
        if folder is None:
            raise RunNotFound(f"no local run called {name!r} {self.where()}")
        return folder


def run_object(folder: RunFolder) -> Object:
    """The run as a cluster would show it: the manifest with its current status."""
    document = folder.read_manifest()
    status = folder.read_status()
    if not (status.phase and status.phase.finished) and not _runner_alive(folder):
        status = status.model_copy(
            update={
                "phase": Phase.FAILED,
                "reason": "RunnerGone",
                "message": f"the local runner stopped without finishing the run (see {folder.path / RUNNER_LOG})",
            }
        )
    document["status"] = status.to_patch()
    return document


def _runner_alive(folder: RunFolder) -> bool:
    pid = folder.read_pid()
    if pid is None:
        # Between preparing the folder and the runner's start there is no pid yet: give it time.
        return time.time() - folder.status_path.stat().st_mtime < ABANDONED_AFTER_SECONDS
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _said_all(folder: RunFolder) -> bool:
    """Whether the run has finished and its runner is gone: the runner writes the final phase, then stops the
    replicas and copies what they print while they stop (a traceback, torchrun's last words) to their logs."""
    return _phase_of(run_object(folder)).finished and (folder.read_pid() is None or not _runner_alive(folder))


def _phase_of(run: Object) -> Phase:
    return TrainingRunStatus.model_validate(run.get("status") or {}).phase or Phase.PREPARING


def offset_of_last_lines(path: Path, count: int) -> int:
    """Where the last ``count`` complete lines of the file begin (read from the end, not the whole file)."""
    with path.open("rb") as log:
        end = log.seek(0, os.SEEK_END)
        if count == 0:
            return end
        position, newlines, block = end, 0, 64 * 1024
        while position > 0:
            start = max(0, position - block)
            log.seek(start)
            chunk = log.read(position - start)
            for index in range(len(chunk) - 1, -1, -1):
                if chunk[index] != ord("\n") or start + index == end - 1:
                    continue  # the newline that ends the last line starts nothing
                newlines += 1
                if newlines == count:
                    return start + index + 1
            position = start
    return 0


def _new_lines(path: Path, replica: str, offsets: dict[str, int], *, final: bool) -> Iterator[tuple[str, str]]:
    """Lines appended to path since the last call; a partial last line waits for its end unless final."""
    if not path.exists():
        return
    with path.open("rb") as log:
        log.seek(offsets.get(replica, 0))
        data = log.read()
    end = len(data) if final else data.rfind(b"\n") + 1
    offsets[replica] = offsets.get(replica, 0) + end
    for raw in data[:end].splitlines():
        yield replica, raw.decode(errors="replace")
