"""Helpers for the training-program tests: run the real trainer as a process, read its output.

The trainer runs as `python -m trainrun_trainer` (or under torchrun) in a child process, exactly as
a replica runs it; nothing is mocked. When the repo is not pip-installed the package is found
through PYTHONPATH=<repo>/training.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainrun_trainer.reporting import METRIC_PREFIX

REPO = Path(__file__).resolve().parents[2]
TRAINING_SOURCE = REPO / "training"

# Small and quick: a few steps of the small CNN on synthetic data.
QUICK_FLAGS = ("--model", "cnn", "--synthetic-samples", "128", "--batch-size", "16", "--print-frequency", "2",
               "--learning-rate", "0.005")


@dataclasses.dataclass
class TrainerRun:
    """A finished trainer process and what it left behind."""

    process: subprocess.CompletedProcess[str]
    output_dir: Path

    @property
    def metric_lines(self) -> list[dict[str, Any]]:
        """The JSON objects of the `trainrun:metric` lines on stdout, in order."""
        return [json.loads(line[len(METRIC_PREFIX):]) for line in self.process.stdout.splitlines()
                if line.startswith(METRIC_PREFIX)]

    @property
    def metrics_file(self) -> list[dict[str, Any]]:
        path = self.output_dir / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]

    @property
    def run_summary(self) -> dict[str, Any]:
        return dict(json.loads((self.output_dir / "run.json").read_text()))

    def check(self) -> TrainerRun:
        assert self.process.returncode == 0, (
            f"trainer exited {self.process.returncode}\nstdout:\n{self.process.stdout}\n"
            f"stderr:\n{self.process.stderr}")
        return self


def trainer_env(output_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a replica: the caller's, minus any distributed variables, plus OUTPUT_DIR."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                          "MASTER_PORT", "OMP_NUM_THREADS")
           and not key.startswith(("TRAINRUN_", "PET_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TRAINING_SOURCE), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env["OUTPUT_DIR"] = str(output_dir)
    env.update(extra)
    return env


def _one_cpu() -> None:
    # One trainer process per test, pinned to one core: on a small shared CI machine two
    # OpenMP threads that keep waiting for each other are far slower than one.
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def run_trainer(flags: Sequence[str], *, output_dir: Path, timeout: float = 180, **env: str) -> TrainerRun:
    """`python -m trainrun_trainer FLAGS` as one plain process (no torchrun)."""
    process = subprocess.run([sys.executable, "-m", "trainrun_trainer", *flags], capture_output=True,
                             text=True, env=trainer_env(output_dir, **env), timeout=timeout,
                             preexec_fn=_one_cpu, cwd=output_dir.parent)
    return TrainerRun(process=process, output_dir=output_dir)


def torchrun_command(*, nnodes: int, nproc_per_node: int, node_rank: int, port: int,
                     flags: Sequence[str]) -> list[str]:
    """The replica command the operator renders, with a loopback master."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}",
            f"--nproc-per-node={nproc_per_node}", f"--node-rank={node_rank}", "--master-addr=127.0.0.1",
            f"--master-port={port}", "-m", "trainrun_trainer", *flags]

