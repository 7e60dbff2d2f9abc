"""Runs a TrainingRun's replicas as processes on this machine and supervises them to the end.

Phases as on a cluster: Preparing -> Running -> Uploading -> Completed, Failed or Cancelled, written
to the run folder's status.json at each change, with an Event in events.jsonl. Once the replicas run,
the status comes from the operator's own status function: ``trainrun.local.observe`` writes what the
runner sees of its processes and of the copy as the PyTorchJob, pods and uploader Job that
``trainrun.status.compute_status`` reads, so a run reads as on a cluster (``replica worker-0 exited
with code 1: RuntimeError: ...``). The runner records itself only what has no cluster counterpart:
staging, a replica that cannot start, a cancel. Every line of every replica goes to its log file as
written and to the observer (the CLI's display); metric lines are parsed with ``trainrun.metrics`` and
appended to metrics.jsonl. A replica that fails stops the others; SIGINT/SIGTERM stop all of them
(each replica is a process group: SIGTERM, a grace period, then SIGKILL, torchrun's own workers
included) and the run is Cancelled. Artifacts go to spec.output.uri (else the run folder's artifacts/)
through ``trainrun.storage``, the code path of the cluster's uploader Job.

Called by ``trainrun.client.local`` (in the foreground for ``trainrun run --local``, or in a detached
``python -m trainrun.local`` for ``Client.create``).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

from trainrun.local.folder import RunFolder
from trainrun.local.observe import (
    ArtifactCopy,
    CopyState,
    Outcome,
    ReplicaProcess,
    observed_status,
    replica_statuses,
    training_outcome,
)
from trainrun.local.plan import LocalPlan, ReplicaLaunch, build_plan
from trainrun.metrics import MetricParser, MetricSummary, is_master
from trainrun.metrics.observer import RunObserver, SilentObserver, metric_record
from trainrun.metrics.progress import ProgressTracker
from trainrun.spec import TrainingRun, validate_training_run
from trainrun.spec.status import Artifacts, Phase, TrainingRunStatus
from trainrun.status import phase_event
from trainrun.status.conditions import kstatus_conditions
from trainrun.status.failure import error_line
from trainrun.status.phase import Verdict
from trainrun.status.shapes import utc_now

STOP_GRACE_SECONDS = 5.0
# Once the Master has succeeded the run has (Succeeded = Master succeeded, as in the training-operator);
# Workers still running this long afterwards are stopped.
WORKER_LINGER_SECONDS = 30.0
STATUS_WRITE_INTERVAL_SECONDS = 2.0


class ReplicaStartError(RuntimeError):
    """A replica's program could not be started (not found, not executable)."""


@dataclass
class _Replica:
    launch: ReplicaLaunch
    process: subprocess.Popen[bytes]
    reader: threading.Thread


def prepare_run_folder(document: Mapping[str, Any], *, runs_dir: Path) -> RunFolder:
    """Check the document with the operator's own validation and give it a run folder (phase Preparing)."""
    run = validate_training_run(document, local=True)
    folder = RunFolder.create(runs_dir, run.metadata.name)
    folder.write_manifest(dict(document))
    record_phase(
        folder,
        TrainingRunStatus(),
        phase=Phase.PREPARING,
        reason="Preparing",
        message="staging inputs and starting the replicas",
        run_name=run.metadata.name,
    )
    return folder


def record_phase(
    folder: RunFolder, status: TrainingRunStatus, *, phase: Phase, reason: str, message: str, run_name: str
) -> None:
    """Set a phase the runner decides itself (preparing, a start that failed, a cancel) with the operator's
    kstatus conditions, and record it."""
    previous = status.model_copy(deep=True)
    now = utc_now()
    status.phase, status.reason, status.message = phase, reason, message
    status.conditions = kstatus_conditions(
        verdict=Verdict(phase=phase, reason=reason, message=message),
        previous=previous.conditions,
        generation=None,
        now=now,
        pending_changes=[],
    )
    record_status(folder, previous, status, run_name=run_name, at=now)


def record_status(
    folder: RunFolder, previous: TrainingRunStatus, status: TrainingRunStatus, *, run_name: str, at: str
) -> None:
    """Write status.json, after an Event (in events.jsonl) when the phase changed, as the operator posts one."""
    event = phase_event(previous, status)
    if event is not None:
        folder.append_event(kind=event.type, reason=event.reason, message=event.message, run_name=run_name, at=at)
    folder.write_status(status)


class LocalRunner:
    """Supervises one run in one prepared run folder; ``run()`` returns its final status."""

    def __init__(self, folder: RunFolder, *, observer: RunObserver | None = None) -> None:
        self.folder = folder
        self.observer: RunObserver = observer or SilentObserver()
        self.run_spec: TrainingRun = validate_training_run(folder.read_manifest(), local=True)
        self.status = folder.read_status()
        self.parser = MetricParser.from_definitions(self.run_spec.spec.metrics)
        self.summary = MetricSummary()
        self.progress = ProgressTracker(since=datetime.now(UTC))  # steps and silences: progress, ETA, hangs
        self._cancel = threading.Event()
        self._lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self._last_status_write = 0.0
        # What the status function is told: the replica processes as seen, and the copy once it started.
        self._processes: dict[str, ReplicaProcess] = {}
        self._copy: ArtifactCopy | None = None
        # The run as the status function sees it: locally the copy always happens, without
        # spec.output.uri into the run folder's artifacts/.
        output = self.run_spec.spec.output.model_copy(update={"uri": self.output_uri})
        self._observed_run = self.run_spec.model_copy(
            update={"spec": self.run_spec.spec.model_copy(update={"output": output})}
        )

    def cancel(self) -> None:
        """Stop the replicas and finish as Cancelled (safe from a signal handler or another thread)."""
        self._cancel.set()

    def run(self) -> TrainingRunStatus:
        """Start the replicas, follow them to the end, copy the artifacts; the final status."""
        self.folder.pid_path.write_text(f"{os.getpid()}\n")
        try:
            with self._signals_cancel():
                self._set_phase(Phase.PREPARING, "Preparing", "staging inputs and starting the replicas")
                try:
                    staged_inputs, staged_code = self._stage()
                except Exception as error:  # noqa: BLE001 - a staging error fails the run with its message
                    return self._finish(Phase.FAILED, "StagingFailed", str(error))
                if self._cancel.is_set():
                    return self._finish(Phase.CANCELLED, "Cancelled", "stopped before the replicas started")
                plan = self._plan(staged_inputs=staged_inputs, staged_code=staged_code)
                for text in plan.notices:
                    self.observer.notice(text)
                if plan.problem is not None:
                    return self._finish(Phase.FAILED, "StartFailed", plan.problem)
                try:
                    replicas = self._start(plan)
                except ReplicaStartError as error:
                    return self._finish(Phase.FAILED, "StartFailed", str(error))
                if self._supervise(replicas):
                    return self._finish(Phase.CANCELLED, "Cancelled", "stopped by a signal or by trainrun cancel")
                return self._copy_outputs()
        finally:
            self.folder.pid_path.unlink(missing_ok=True)

    @property
    def output_uri(self) -> str:
        """Where the copy goes: spec.output.uri, else the run folder's artifacts/ (the same manifest and
        logs as a cluster run's, in a local folder)."""
        return self.run_spec.spec.output.uri or self.folder.default_artifacts_uri

    # -- steps ---------------------------------------------------------------------------------------

    def _stage(self) -> tuple[dict[str, Path], Path | None]:
        """Download the inputs and the code snapshot into the run folder, as the cluster's stage-in does."""
        spec = self.run_spec.spec
        inputs = {}
        for item in spec.inputs:
            self.observer.notice(f"staging input {item.name!r} from {item.uri}")
            inputs[item.name] = stage_in(item.uri, self.folder.path / "inputs" / item.name)
        code = None
        if spec.code is not None:
            self.observer.notice(f"staging code from {spec.code.uri}")
            code = stage_in(spec.code.uri, self.folder.path / "code")
        return inputs, code

    def _plan(self, *, staged_inputs: Mapping[str, Path], staged_code: Path | None) -> LocalPlan:
        python = sys.executable
        return build_plan(
            self.run_spec,
            folder=self.folder,
            master_port=free_port(),
            base_env=os.environ,
            python=python,
            cpu_count=os.cpu_count() or 1,
            gpu_ids=visible_gpus(os.environ, nvidia_smi=shutil.which("nvidia-smi")),
            cwd=Path.cwd(),
            staged_inputs=staged_inputs,
            staged_code=staged_code,
        )

    def _start(self, plan: LocalPlan) -> list[_Replica]:
        replicas: list[_Replica] = []
        for launch in plan.replicas:
            launch.output_dir.mkdir(parents=True, exist_ok=True)
            try:
                process = subprocess.Popen(
                    launch.command,
                    env=launch.env,
                    cwd=launch.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    # Its own process group: Ctrl-C in the terminal reaches only us, and we can stop the
                    # replica and everything it started with one killpg.
                    start_new_session=True,
                )
            except OSError as error:
                stop_replicas([item.process for item in replicas], grace_seconds=STOP_GRACE_SECONDS)
                raise ReplicaStartError(
                    f"{launch.name} could not start {launch.command[0]!r}: {error.strerror or error}"
                ) from None
            self._processes[launch.name] = ReplicaProcess(name=launch.name, started_at=datetime.now(UTC))
            assert process.stdout is not None
            reader = threading.Thread(
                target=_copy_lines,
                args=(launch.name, process.stdout, launch.log_path, self._lines),
                name=f"log-{launch.name}",
                daemon=True,
            )
            reader.start()
            replicas.append(_Replica(launch=launch, process=process, reader=reader))
        self._observe()
        return replicas

    def _supervise(self, replicas: list[_Replica]) -> bool:
        """Follow the replicas until training has succeeded or failed; whether the run was cancelled instead."""
        master_done_at: float | None = None
        try:
            while True:
                self._drain(timeout=0.1)
                if self._cancel.is_set():
                    return True
                self._see_exits(replicas, read_logs=True)
                outcome = training_outcome(list(self._processes.values()))
                if outcome is Outcome.FAILED or self.status.phase is Phase.FAILED:  # a replica, or a hang (onHang: Fail)
                    return False
                if outcome is Outcome.SUCCEEDED:
                    # The run has succeeded with its Master; Workers still running this long afterwards are stopped.
                    master_done_at = master_done_at or time.monotonic()
                    others_running = any(item.process.poll() is None for item in replicas)
                    if not others_running or time.monotonic() - master_done_at > WORKER_LINGER_SECONDS:
                        return False
                self._observe()
        finally:
            if any(item.process.poll() is None for item in replicas):
                self.observer.stopping()  # what they print while stopped goes to their logs, not the screen
            stop_replicas([item.process for item in replicas], grace_seconds=STOP_GRACE_SECONDS)
            self._drain_until_closed(replicas)
            self._see_exits(replicas, read_logs=False)

    def _see_exits(self, replicas: Sequence[_Replica], *, read_logs: bool) -> None:
        """Note the replicas that exited since the last look; a failed one's last words from its log."""
        now = datetime.now(UTC)
        exited = []
        for replica in replicas:
            seen = self._processes[replica.launch.name]
            code = replica.process.poll()
            if seen.exit_code is None and code is not None:
                self._processes[seen.name] = replace(seen, exit_code=code, finished_at=now)
                exited.append(replica)
        failed = [replica for replica in exited if replica.process.returncode != 0]
        if read_logs and failed:
            self._drain_until_closed(failed)  # its whole output is in its log file
            for replica in failed:
                name = replica.launch.name
                self._processes[name] = replace(
                    self._processes[name], last_words=last_error_line(replica.launch.log_path)
                )

    def _copy_outputs(self) -> TrainingRunStatus:
        """Copy $OUTPUT_DIR when the status function says so (training succeeded, or failed with copyOnFailure)."""
        if self._observed_status().phase is Phase.UPLOADING:
            self._copy = ArtifactCopy(CopyState.COPYING, started_at=datetime.now(UTC))
            self._observe()
            try:
                self.status.artifacts = upload_artifacts(self.folder, self.output_uri)
                self._copy = replace(self._copy, state=CopyState.SUCCEEDED, finished_at=datetime.now(UTC))
            except Exception as error:  # noqa: BLE001 - any storage error fails the run with its message
                self._copy = replace(
                    self._copy, state=CopyState.FAILED, finished_at=datetime.now(UTC), error=str(error)
                )
        self._observe(force=True)
        return self.status

    def _finish(self, phase: Phase, reason: str, message: str) -> TrainingRunStatus:
        """End the run in a phase the runner decided itself (staging or start failed, cancelled)."""
        if self._processes:
            self.status.replicas = replica_statuses(list(self._processes.values()))
        self.status.completion_time = utc_now()
        self._set_phase(phase, reason, message)
        return self.status

    # -- status ----------------------------------------------------------------------------------------

    def _observed_status(self) -> TrainingRunStatus:
        """The status ``compute_status`` gives for the replicas and the copy as seen now."""
        return observed_status(
            run=self._observed_run,
            replicas=list(self._processes.values()),
            copy=self._copy,
            previous=self.status,
            now=utc_now(),
            progress=self.progress.snapshot(),
        )

    def _observe(self, *, force: bool = False) -> None:
        """Take the observed status; write it when it changed what a reader sees, or now and then for the metrics."""
        previous, status = self.status, self._observed_status()
        changed = (status.phase, status.reason, status.message, status.replicas) != (
            previous.phase,
            previous.reason,
            previous.message,
            previous.replicas,
        )
        self.status = status
        # Metrics change many times a second; `trainrun get` on a detached run needs them now and then.
        if force or changed or time.monotonic() - self._last_status_write > STATUS_WRITE_INTERVAL_SECONDS:
            record_status(self.folder, previous, status, run_name=self.run_spec.metadata.name, at=utc_now())
            self._last_status_write = time.monotonic()
        if status.phase != previous.phase:
            self.observer.phase(status.model_copy(deep=True))
        elif status.reason == "Hung" and previous.reason != "Hung" and status.message:
            self.observer.notice(status.message)

    # -- output ----------------------------------------------------------------------------------------

    def _drain(self, *, timeout: float) -> None:
        """Handle the lines waiting (waiting up to timeout for the first)."""
        try:
            item = self._lines.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            replica, text = item
            if text is not None:
                self._handle_line(replica, text)
            try:
                item = self._lines.get_nowait()
            except queue.Empty:
                return

    def _drain_until_closed(self, replicas: Sequence[_Replica]) -> None:
        """Show what the replicas wrote before they exited (their readers see end-of-file soon after)."""
        for replica in replicas:
            replica.reader.join(timeout=STOP_GRACE_SECONDS)
        self._drain(timeout=0)

    def _handle_line(self, replica: str, text: str) -> None:
        self.observer.line(replica, text)
        samples = self.parser.parse(text)
        self.progress.take(replica, text, samples, datetime.now(UTC))
        if not samples:
            return
        record = metric_record(replica, samples, at=utc_now())
        with self.folder.metrics_path.open("a") as sink:
            sink.write(json.dumps(record) + "\n")
        if self.summary.add(samples, from_master=is_master(replica)):
            self.status.metrics = dict(self.summary.latest)
            self.status.key_metric = self.summary.key_metric()
        self.observer.metrics(record, self.summary)

    def _set_phase(self, phase: Phase, reason: str, message: str) -> None:
        record_phase(
            self.folder, self.status, phase=phase, reason=reason, message=message, run_name=self.run_spec.metadata.name
        )
        self._last_status_write = time.monotonic()
        self.observer.phase(self.status.model_copy(deep=True))

    @contextmanager
    def _signals_cancel(self) -> Iterator[None]:
        """SIGINT, SIGTERM and SIGHUP (terminal closed) cancel the run while it is supervised (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handle(signum: int, frame: FrameType | None) -> None:
            self.cancel()

        previous = {number: signal.signal(number, handle) for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)


def _copy_lines(replica: str, stream: IO[bytes], log_path: Path, lines: queue.Queue[tuple[str, str | None]]) -> None:
    """Copy a replica's output to its log file byte for byte, and each line to the runner's queue."""
    with stream, log_path.open("ab") as log:
        for raw in iter(stream.readline, b""):
            log.write(raw)
            log.flush()
            lines.put((replica, raw.decode(errors="replace").rstrip("\r\n")))
    lines.put((replica, None))


def last_error_line(log_path: Path) -> str | None:
    """The exception a replica died of, from its log (see trainrun.status.failure.error_line)."""
    try:
        return error_line(log_path.read_text(errors="replace"))
    except FileNotFoundError:
        return None


def stop_replicas(processes: Sequence[subprocess.Popen[bytes]], *, grace_seconds: float) -> None:
    """SIGTERM every replica's process group and descendants, wait, then SIGKILL what is left.

    Descendants are collected first because torchrun starts its workers in sessions of their own,
    which a signal to the replica's group does not reach.
    """
    import psutil

    running = [process for process in processes if process.poll() is None]
    members: list[psutil.Process] = []
    for process in running:
        try:
            parent = psutil.Process(process.pid)
            members.extend([parent, *parent.children(recursive=True)])
        except psutil.NoSuchProcess:
            continue
    _signal_all(running, members, signal.SIGTERM)
    _, alive = psutil.wait_procs(members, timeout=grace_seconds)
    if alive:
        _signal_all(running, alive, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=grace_seconds)
    for process in processes:
        process.wait()


def _signal_all(groups: Sequence[subprocess.Popen[bytes]], members: Sequence[Any], number: signal.Signals) -> None:
    for process in groups:
        try:
            os.killpg(process.pid, number)
        except (ProcessLookupError, PermissionError):
            pass
    for member in members:
        try:
            member.send_signal(number)
        except Exception:  # noqa: BLE001 - psutil.NoSuchProcess and friends: it is gone already
            pass


def free_port() -> int:
    """A TCP port nobody listens on now, for the Master's rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def visible_gpus(env: Mapping[str, str], *, nvidia_smi: str | None) -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES when set, else those nvidia-smi lists."""
    declared = env.get("CUDA_VISIBLE_DEVICES")
    if declared is not None:
        return [item.strip() for item in declared.split(",") if item.strip() and item.strip() != "-1"]
    if nvidia_smi is None:
        return []
    try:
        listing = subprocess.run([nvidia_smi, "-L"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(index) for index, line in enumerate(listing.splitlines()) if line.startswith("GPU ")]


def stage_in(uri: str, destination: Path) -> Path:
    """Download uri into destination with the code of ``trainrun download`` (the cluster's stage-in)."""
    from trainrun.storage import StorageOptions, download

    download(uri, destination, options=StorageOptions.from_env(os.environ))
    return destination


def upload_artifacts(folder: RunFolder, uri: str) -> Artifacts:
    """Copy outputs/ and logs/ to uri with the uploader Job's code; the manifest is written last."""
    from trainrun.storage import StorageOptions, upload_directory

    logs = {f"logs/{path.name}": path for path in sorted(folder.logs_dir.glob("*.log"))}
    result = upload_directory(folder.outputs_dir, uri, options=StorageOptions.from_env(os.environ), extra_files=logs)
    return Artifacts(
        uri=result.uri,
        manifest_uri=result.manifest_uri,
        file_count=result.manifest.file_count,
        bytes=result.manifest.total_bytes,
    )
