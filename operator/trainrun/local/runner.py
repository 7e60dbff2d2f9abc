"""Runs a TrainingRun's replicas as processes on this machine and supervises them to the end.

The runner only observes and acts; it never decides a phase. It stages the inputs and the code, starts
one process per replica (the same command and environment as a pod's, from ``trainrun.local.launch``),
reads every line they write, notes how each one exits, and copies the outputs. What it observed goes
to ``trainrun.local.observe.assess``, which writes it as the objects a cluster would show and hands them
to the operator's own supervision and status builder: so phases (Preparing -> Running -> Uploading ->
Completed, Failed or Cancelled), their reasons and messages, hangs (``spec.runPolicy.onHang``) and
whole-run restarts by cause (``restartOn``, ``maxRestarts``) are decided as on a cluster and read in the
same words. The runner acts on what comes back: it stops the replicas of a finished or restarting run,
starts a new set when a restart's back-off is over (every replica resumes from $OUTPUT_DIR's checkpoint),
and copies $OUTPUT_DIR when the status says Uploading. The status goes to the run folder's status.json
at each change, with an Event in events.jsonl. Every line of every replica goes to its log file as
written and to the observer (the CLI's display); metric lines are parsed with ``trainrun.metrics`` and
appended to metrics.jsonl. SIGINT/SIGTERM cancel the run (its spec.cancel, as ``trainrun cancel`` sets
it on a cluster): each replica is a process group: SIGTERM, a grace period, then SIGKILL, torchrun's own
workers included. Artifacts go to spec.output.uri (else the run folder's artifacts/) through
``trainrun.storage``, the code path of the cluster's uploader Job.

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
from trainrun.local.launch import Launches, ReplicaLaunch, build_launches
from trainrun.local.observe import (
    ArtifactCopy,
    Assessment,
    CopyState,
    LocalJob,
    LocalWorld,
    Outcome,
    ReplicaProcess,
    Staging,
    assess,
    training_outcome,
)
from trainrun.local.registry import LocalRegistry
from trainrun.metrics import MetricParser, MetricSummary, is_master
from trainrun.metrics.observer import RunObserver, SilentObserver, metric_record
from trainrun.metrics.progress import ProgressTracker
from trainrun.spec import TrainingRun, validate_training_run
from trainrun.spec.annotations import SERIES_ANNOTATION
from trainrun.spec.status import Artifacts, Phase, Tracked, TrainingRunStatus
from trainrun.status import PhaseEvent, phase_event
from trainrun.status.failure import error_line
from trainrun.status.observe import replica_names
from trainrun.status.registration import RegistrationState
from trainrun.status.shapes import utc_now

STOP_GRACE_SECONDS = 5.0
# Once the Master has succeeded the run has (Succeeded = Master succeeded, as in the training-operator);
# Workers still running this long afterwards are stopped.
WORKER_LINGER_SECONDS = 30.0
STATUS_WRITE_INTERVAL_SECONDS = 2.0
POLL_SECONDS = 0.1


@dataclass
class _Replica:
    launch: ReplicaLaunch
    process: subprocess.Popen[bytes]
    reader: threading.Thread


def prepare_run_folder(document: Mapping[str, Any], *, runs_dir: Path) -> RunFolder:
    """Check the document with the operator's own validation and give it a run folder, with the status of a
    run whose replicas are being created (as a cluster shows a new job's pods)."""
    run = validate_training_run(document, local=True)
    folder = RunFolder.create(runs_dir, run.metadata.name)
    folder.write_manifest(dict(document))
    now = datetime.now(UTC)
    world = LocalWorld(run, LocalJob(created_at=now, replicas=_replicas_to_start(run)))
    status = assess(world, previous=TrainingRunStatus(), now=utc_now()).status
    record_status(folder, TrainingRunStatus(), status, events=[], run_name=run.metadata.name, at=utc_now())
    return folder


def record_status(
    folder: RunFolder,
    previous: TrainingRunStatus,
    status: TrainingRunStatus,
    *,
    events: Sequence[PhaseEvent],
    run_name: str,
    at: str,
) -> None:
    """Write status.json, after the Events (in events.jsonl): the phase change's, as the operator posts one,
    and ``events`` (supervision's: a hang, a restart)."""
    change = phase_event(previous, status)
    for event in [*((change,) if change is not None else ()), *events]:
        folder.append_event(kind=event.type, reason=event.reason, message=event.message, run_name=run_name, at=at)
    folder.write_status(status)


def _replicas_to_start(run: TrainingRun) -> tuple[ReplicaProcess, ...]:
    return tuple(ReplicaProcess(name) for name in replica_names(run.spec.distribution.workers))


class LocalRunner:
    """Supervises one run in one prepared run folder; ``run()`` returns its final status."""

    def __init__(self, folder: RunFolder, *, observer: RunObserver | None = None) -> None:
        self.folder = folder
        self.observer: RunObserver = observer or SilentObserver()
        self.run_spec: TrainingRun = validate_training_run(folder.read_manifest(), local=True)
        self.status = folder.read_status()
        self.parser = MetricParser.from_definitions(self.run_spec.spec.metrics)
        self.summary = MetricSummary(series_metric=self.run_spec.metadata.annotations.get(SERIES_ANNOTATION))
        self.progress = ProgressTracker(since=datetime.now(UTC))  # steps and silences: progress, ETA, hangs
        self._cancel = threading.Event()
        self._lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self._last_status_write = 0.0
        self._events_recorded: set[PhaseEvent] = set()
        # The phase the observer was last shown; a finished phase waits until the replicas have stopped, so
        # that what they print while stopping is summed up before it (RunObserver.stopping).
        self._shown_phase: Phase | None = None
        self._running: Sequence[_Replica] = ()
        # What is observed: the current job (its staging and replica processes) and the copy once it started.
        self._job: LocalJob | None = None
        self._copy: ArtifactCopy | None = None
        self._registration: RegistrationState | None = None
        self._tracked: Tracked | None = None
        # The run as supervision sees it: locally the copy always happens, without spec.output.uri into the
        # run folder's artifacts/; spec.cancel once it was cancelled.
        output = self.run_spec.spec.output.model_copy(update={"uri": self.output_uri})
        self._observed_run = self.run_spec.model_copy(
            update={"spec": self.run_spec.spec.model_copy(update={"output": output})}
        )

    def cancel(self) -> None:
        """Stop the replicas and finish as Cancelled (safe from a signal handler or another thread)."""
        self._cancel.set()

    def run(self) -> TrainingRunStatus:
        """Stage, start the replicas, follow them to the end (through restarts), copy the outputs; the final status."""
        self.folder.pid_path.write_text(f"{os.getpid()}\n")
        self._shown_phase = self.status.phase
        self.observer.phase(self.status.model_copy(deep=True))  # where the run starts from (its folder's status)
        try:
            with self._signals_cancel():
                staged = self._stage_in()
                if staged is not None:
                    self._train(*staged)
                if self.status.phase is Phase.UPLOADING:
                    self._copy_outputs()
                    self._track()  # the MLflow run with its series first: the version links to it
                    self._register()
                self._observe(force=True)
                self._track()
                return self.status
        finally:
            self.folder.pid_path.unlink(missing_ok=True)

    @property
    def output_uri(self) -> str:
        """Where the copy goes: spec.output.uri, else the run folder's artifacts/ (the same manifest and
        logs as a cluster run's, in a local folder)."""
        return self.run_spec.spec.output.uri or self.folder.default_artifacts_uri

    # -- steps ---------------------------------------------------------------------------------------

    def _stage_in(self) -> tuple[dict[str, Path], Path | None] | None:
        """Create the job and stage its inputs and code, as the cluster's stage-in init containers do; None
        when staging failed or the run was cancelled meanwhile."""
        spec = self.run_spec.spec
        staging = Staging(datetime.now(UTC)) if spec.inputs or spec.code is not None else None
        self._job = LocalJob(created_at=datetime.now(UTC), replicas=_replicas_to_start(self.run_spec), staging=staging)
        self._observe()
        if staging is None:
            return {}, None
        try:
            staged = self._stage()
        except Exception as error:  # noqa: BLE001 - a staging error fails the run with its message
            self._job = replace(self._job, staging=replace(staging, finished_at=datetime.now(UTC), error=str(error)))
            self._observe()
            return None
        self._job = replace(self._job, staging=replace(staging, finished_at=datetime.now(UTC)))
        return None if self._observe().status.phase is Phase.CANCELLED else staged

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

    def _train(self, staged_inputs: dict[str, Path], staged_code: Path | None) -> None:
        """Start the job's replicas and supervise them; after a whole-run restart, a new job's, until the run
        has trained, failed or was cancelled."""
        while True:
            launches = self._launches(staged_inputs=staged_inputs, staged_code=staged_code)
            for text in launches.notices:
                self.observer.notice(text)
            replicas = self._start(launches)
            if replicas is None or not self._supervise(replicas) or not self._await_new_job():
                return

    def _launches(self, *, staged_inputs: Mapping[str, Path], staged_code: Path | None) -> Launches:
        return build_launches(
            self.run_spec,
            folder=self.folder,
            master_port=free_port(),
            base_env=os.environ,
            python=sys.executable,
            cpu_count=os.cpu_count() or 1,
            gpu_ids=visible_gpus(os.environ, nvidia_smi=shutil.which("nvidia-smi")),
            cwd=Path.cwd(),
            staged_inputs=staged_inputs,
            staged_code=staged_code,
        )

    def _start(self, launches: Launches) -> list[_Replica] | None:
        """Start every replica's process; None when one could not start (observed as its container's StartError)."""
        assert self._job is not None
        if launches.problem is not None:
            self._set_replica(replace(self._job.replicas[0], start_error=launches.problem, finished_at=datetime.now(UTC)))
            self._observe()
            return None
        replicas: list[_Replica] = []
        for launch in launches.replicas:
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
                words = f"could not start {launch.command[0]!r}: {error.strerror or error}"
                self._set_replica(ReplicaProcess(launch.name, start_error=words, finished_at=datetime.now(UTC)))
                self._observe()
                return None
            self._set_replica(ReplicaProcess(name=launch.name, started_at=datetime.now(UTC)))
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
        """Follow the replicas until the run has trained, failed or was cancelled (False), or supervision
        stops them for a whole-run restart (True)."""
        master_done_at: float | None = None
        self._running = replicas
        try:
            while True:
                self._drain(timeout=POLL_SECONDS)
                self._see_exits(replicas, read_logs=True)
                assessment = self._observe()
                phase = assessment.status.phase
                if phase is None or phase.finished:
                    return False
                if assessment.supervised.delete_job:
                    return True
                if phase is Phase.UPLOADING:
                    assert self._job is not None
                    if training_outcome(self._job) is not Outcome.SUCCEEDED:
                        return False  # failed, with a copy of what it wrote (spec.output.copyOnFailure)
                    # Succeeded with its Master; Workers still running this long afterwards are stopped.
                    master_done_at = master_done_at or time.monotonic()
                    others_running = any(item.process.poll() is None for item in replicas)
                    if not others_running or time.monotonic() - master_done_at > WORKER_LINGER_SECONDS:
                        return False
        finally:
            if any(item.process.poll() is None for item in replicas):
                self.observer.stopping()  # what they print while stopped goes to their logs, not the screen
            stop_replicas([item.process for item in replicas], grace_seconds=STOP_GRACE_SECONDS)
            self._drain_until_closed(replicas)
            self._see_exits(replicas, read_logs=False)
            self._running = ()
            self._show_phase()

    def _await_new_job(self) -> bool:
        """After a restart stopped the replicas (their job is gone): wait until supervision's back-off is over,
        then make the new job; False when the run ended meanwhile (cancelled)."""
        self._job = None
        while True:
            assessment = self._observe()
            phase = assessment.status.phase
            if phase is None or phase.finished:
                return False
            if not assessment.supervised.hold_job:
                self._job = LocalJob(created_at=datetime.now(UTC), replicas=_replicas_to_start(self.run_spec))
                return True
            self._cancel.wait(POLL_SECONDS)

    def _set_replica(self, replica: ReplicaProcess) -> None:
        assert self._job is not None
        kept = tuple(item for item in self._job.replicas if item.name != replica.name)
        order = {name: index for index, name in enumerate(item.name for item in self._job.replicas)}
        self._job = replace(self._job, replicas=tuple(sorted((*kept, replica), key=lambda item: order.get(item.name, 0))))

    def _see_exits(self, replicas: Sequence[_Replica], *, read_logs: bool) -> None:
        """Note the replicas that exited since the last look; a failed one's last words from its log."""
        assert self._job is not None
        seen = {replica.name: replica for replica in self._job.replicas}
        now = datetime.now(UTC)
        for replica in replicas:
            known = seen.get(replica.launch.name)
            code = replica.process.poll()
            if known is None or known.exit_code is not None or code is None:
                continue
            if code != 0 and read_logs:
                self._drain_until_closed([replica])  # its whole output is in its log file
            last_words = last_error_line(replica.launch.log_path) if code != 0 and read_logs else None
            self._set_replica(replace(known, exit_code=code, finished_at=now, last_words=last_words))

    def _copy_outputs(self) -> None:
        """Copy $OUTPUT_DIR (the status says Uploading: training succeeded, or failed with copyOnFailure)."""
        self._copy = ArtifactCopy(CopyState.COPYING, started_at=datetime.now(UTC))
        self._observe()
        try:
            artifacts = upload_artifacts(self.folder, self.output_uri)
            self._copy = replace(self._copy, state=CopyState.SUCCEEDED, finished_at=datetime.now(UTC), artifacts=artifacts)
        except Exception as error:  # noqa: BLE001 - any storage error fails the run with its message
            self._copy = replace(self._copy, state=CopyState.FAILED, finished_at=datetime.now(UTC), error=str(error))

    def _register(self) -> None:
        """Register the verified copy (spec.output.register) before the run is Completed."""
        if self.run_spec.spec.output.registration is None or self._copy is None or self._copy.artifacts is None:
            return
        registry = self._registry()
        register = self.run_spec.spec.output.registration
        self._registration = RegistrationState(registry.key, register.name)  # Registering, until it answers
        status = self._observe().status

        def failed_try(state: RegistrationState) -> None:
            self._registration = state
            self._observe()

        self._registration = registry.register(status, failed_try)

    def _registry(self) -> LocalRegistry:
        """The run's registry side; a local run's uid (which finds its version and MLflow run again) names
        this machine and its run folder."""
        run = self._observed_run
        if run.metadata.uid is None:
            uid = f"local:{socket.gethostname()}:{self.folder.path.name}"
            run = run.model_copy(update={"metadata": run.metadata.model_copy(update={"uid": uid})})
        return LocalRegistry(run)

    def _track(self) -> None:
        """The run as an MLflow run, when it is tracked (spec.tracking and MLFLOW_TRACKING_URI): its params and
        metric series, and once it has finished its final status (found again by its uid: nothing twice)."""
        if self.run_spec.spec.tracking is None or self.status.phase is None:
            return
        created = self.folder.read_manifest().get("metadata", {}).get("creationTimestamp")
        tracked = self._registry().track(self.status, self.folder.metrics_path, created=created)
        if tracked is not None:
            self._tracked = tracked
            self._observe(force=True)

    # -- status ----------------------------------------------------------------------------------------

    def _world(self) -> LocalWorld:
        run = self._observed_run
        if self._cancel.is_set():
            run = run.model_copy(update={"spec": run.spec.model_copy(update={"cancel": True})})
        return LocalWorld(
            run,
            self._job,
            self._copy,
            progress=self.progress.snapshot(),
            metrics=dict(self.summary.latest) if self.summary.latest else None,
            key_metric=self.summary.key_metric(),
            logs_read=not self._running,  # the replicas followed were read to the end of their output
            series=self.summary.series,
            registration=self._registration,
            tracking=self._tracked,
        )

    def _observe(self, *, force: bool = False) -> Assessment:
        """Assess what is observed now; record the status when it changed what a reader sees, or now and then
        for the metrics."""
        previous = self.status
        assessment = assess(self._world(), previous=previous, now=utc_now())
        status = assessment.status
        events = [assessment.supervised.event] if assessment.supervised.event is not None else []
        events = [event for event in events if event not in self._events_recorded]
        self._events_recorded.update(events)
        changed = (status.phase, status.reason, status.message, status.replicas) != (
            previous.phase,
            previous.reason,
            previous.message,
            previous.replicas,
        )
        self.status = status
        # Metrics change many times a second; `trainrun get` on a detached run needs them now and then.
        if force or changed or events or time.monotonic() - self._last_status_write > STATUS_WRITE_INTERVAL_SECONDS:
            record_status(self.folder, previous, status, events=events, run_name=self.run_spec.metadata.name, at=utc_now())
            self._last_status_write = time.monotonic()
        if status.phase == previous.phase and status.reason == "Hung" and previous.reason != "Hung" and status.message:
            self.observer.notice(status.message)
        self._show_phase()
        return assessment

    def _show_phase(self) -> None:
        """Show the observer a phase it has not seen; a finished one once no replica is still stopping."""
        phase = self.status.phase
        if phase == self._shown_phase:
            return
        if phase is not None and phase.finished and any(item.process.poll() is None for item in self._running):
            return
        self._shown_phase = phase
        self.observer.phase(self.status.model_copy(deep=True))

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
        self.summary.add(samples, from_master=is_master(replica))
        self.observer.metrics(record, self.summary)

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
