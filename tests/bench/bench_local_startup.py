"""Start-up cost of `trainrun run --local` against a bare torchrun of the same program and arguments.

Measures, for the quickstart sample (Master + 1 Worker, CPU), the time from launching the command to
the first training step (the first ``trainrun:metric`` line, printFrequency 1):

  trainrun:   python -m trainrun.cli run quickstart.yaml --local   (validation, run folder, 2 torchruns)
  baseline:   two `torchrun --nnodes=2 --node-rank=i ... -m trainrun_trainer <same flags>` started by hand

Each is run ROUNDS times, alternating; the script prints the medians and their ratio (goal <= 1.5x).
Usage: python tests/bench/bench_local_startup.py [ROUNDS]
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "operator"), str(REPO / "training")]

from trainrun.render.replica import program  # noqa: E402 - the same flags the runner passes
from trainrun.spec import validate_training_run  # noqa: E402

MARKER = "trainrun:metric "
TIMEOUT_SECONDS = 180.0


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "operator"), str(REPO / "training"), env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def quickstart_document() -> dict[str, object]:
    document = yaml.safe_load((REPO / "manifests" / "samples" / "quickstart.yaml").read_text())
    document["spec"]["hyperparameters"]["printFrequency"] = 1
    return dict(document)


def time_to_marker(process: subprocess.Popen[str], started: float) -> float:
    """Seconds from started until process prints the marker line."""
    assert process.stdout is not None
    for line in process.stdout:
        if MARKER in line:
            return time.monotonic() - started
        if time.monotonic() - started > TIMEOUT_SECONDS:
            break
    raise RuntimeError("no metric line: the run failed or took too long")


def stop(processes: list[subprocess.Popen[str]]) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def measure_trainrun(workdir: Path, manifest: Path) -> float:
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "trainrun.cli", "run", str(manifest), "--local", "--runs-dir", str(workdir / "runs")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment(),
        cwd=workdir,
        start_new_session=True,
    )
    try:
        return time_to_marker(process, started)
    finally:
        stop([process])


def measure_bare_torchrun(workdir: Path, flags: list[str]) -> float:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = environment()
    env["OMP_NUM_THREADS"] = str(max((os.cpu_count() or 1) // 2, 1))
    started = time.monotonic()
    processes = []
    for rank in (0, 1):
        command = [
            torchrun,
            "--nnodes=2",
            "--nproc-per-node=1",
            f"--node-rank={rank}",
            "--master-addr=localhost",
            f"--master-port={port}",
            *flags,
        ]
        processes.append(
            subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env={**env, "OUTPUT_DIR": str(workdir / f"bare-{rank}")},
                cwd=workdir,
                start_new_session=True,
            )
        )
    try:
        return time_to_marker(processes[0], started)
    finally:
        stop(processes)


def main(rounds: int) -> None:
    document = quickstart_document()
    run = validate_training_run(document)
    flags = program(run)[1:]  # drop "python": torchrun runs the module itself
    trainrun_times, bare_times = [], []
    with tempfile.TemporaryDirectory() as temporary:
        workdir = Path(temporary)
        manifest = workdir / "quickstart.yaml"
        manifest.write_text(yaml.safe_dump(document))
        for round_number in range(rounds):
            bare_times.append(measure_bare_torchrun(workdir, flags))
            trainrun_times.append(measure_trainrun(workdir, manifest))
            bare_last, ours_last = bare_times[-1], trainrun_times[-1]
            print(f"round {round_number + 1}: bare torchrun {bare_last:.2f}s, trainrun --local {ours_last:.2f}s")
    bare, ours = statistics.median(bare_times), statistics.median(trainrun_times)
    print(
        f"time to first training step (median of {rounds}): bare torchrun {bare:.2f}s, trainrun run --local {ours:.2f}s"
    )
    print(f"ratio trainrun/bare: {ours / bare:.2f}x (goal <= 1.5x)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
