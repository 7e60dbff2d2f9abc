"""The trainer under torchrun with Gloo on localhost: two processes on one node, and two "nodes"
launched the way a PyTorchJob Master and Worker launch them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as functional
from ports import free_port
from trainer_harness import QUICK_FLAGS, TrainerRun, torchrun_command, trainer_env
from trainrun_trainer.config import parse_config
from trainrun_trainer.data import TensorSplit, load_dataset

TIMEOUT = 240
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


def _check_global_validation(run: TrainerRun, flags: list[str]) -> None:
    """The logged val_loss/val_top1 of the best epoch cover the whole validation split: recompute
    them in this process from model.ts (those very weights) over all of it."""
    split = load_dataset(parse_config(flags, environ={})).validation
    assert isinstance(split, TensorSplit)
    model = torch.jit.load(str(run.output_dir / "model.ts"))
    with torch.no_grad():
        logits = model(split.images.float() / 255)
    final = run.metric_lines[-1]
    assert final["final"] is True
    assert final["val_loss"] == pytest.approx(functional.cross_entropy(logits, split.labels).item(), rel=1e-3)
    accuracy = (logits.argmax(dim=1) == split.labels).float().mean().item()
    assert final["val_top1"] == pytest.approx(accuracy, abs=1e-6)


def test_two_processes_on_one_node(output_dir: Path) -> None:
    # 37 validation images, an odd count, so the two ranks get shares of different sizes.
    flags = [*QUICK_FLAGS, "--epochs", "2", "--synthetic-samples", "148"]
    command = torchrun_command(nnodes=1, nproc_per_node=2, node_rank=0, port=free_port(), flags=flags)
    process = subprocess.run(command, capture_output=True, text=True, env=trainer_env(output_dir),
                             timeout=TIMEOUT)
    run = TrainerRun(process=process, output_dir=output_dir).check()
    summary = run.run_summary
    assert summary["world_size"] == 2
    assert summary["peak_learning_rate"] == pytest.approx(2 * 0.005)
    assert summary["global_batch_size"] == 32
    # Rank 0 alone prints: one epoch line per epoch, not one per rank.
    epoch_lines = [line for line in run.metric_lines if "val_loss" in line and "final" not in line]
    assert [line["epoch"] for line in epoch_lines] == [1, 2]
    # 148 images over 2 ranks, 16 per step: 4 full steps per rank and epoch.
    assert epoch_lines[-1]["step"] == 8
    _check_global_validation(run, flags)


def test_two_nodes_like_a_pytorchjob_master_and_worker(tmp_path: Path) -> None:
    """Two torchrun launchers, one per "pod", with the env the training-operator sets."""
    port = free_port()
    flags = [*QUICK_FLAGS, "--epochs", "1"]
    launches = []
    for node_rank in (0, 1):
        output = tmp_path / f"node-{node_rank}" / "outputs"
        env = trainer_env(output, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                          PET_MASTER_ADDR="127.0.0.1", PET_MASTER_PORT=str(port), PET_NNODES="2",
                          PET_NODE_RANK=str(node_rank), PET_NPROC_PER_NODE="1",
                          WORLD_SIZE="2", RANK=str(node_rank),
                          # Both "pods" share this machine: one thread each, as the local runner would set.
                          TRAINRUN_CPU_THREADS="1")
        command = torchrun_command(nnodes=2, nproc_per_node=1, node_rank=node_rank, port=port, flags=flags)
        launches.append((subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          env=env), output))
    runs = []
    for process, output in launches:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
        runs.append(TrainerRun(process=subprocess.CompletedProcess(process.args, process.returncode, stdout,
                                                                   stderr), output_dir=output).check())
    master, worker = runs
    assert master.run_summary["world_size"] == 2
    assert "(1 CPU threads)" in master.process.stdout  # TRAINRUN_CPU_THREADS was honoured
    assert (master.output_dir / "model.ts").is_file()
    # The worker pod writes nothing and prints no metric lines: only global rank 0 does.
    assert not worker.output_dir.exists()
    assert worker.metric_lines == []
    _check_global_validation(master, flags)


# What the trainer does around its training, in a program of its own: the runtime, a DistributedDataParallel
# model trained a step and gone, the shutdown; then the process's threads, by name.
_TEARDOWN_PROGRAM = """
import os
import sys
import torch
from trainrun_trainer.runtime import start_runtime

runtime = start_runtime()
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 1))
model(torch.ones(4, 2)).sum().backward()
del model
runtime.barrier()
runtime.shutdown()
names = sorted(open(f"/proc/self/task/{task}/comm").read().strip() for task in os.listdir("/proc/self/task"))
sys.stdout.write(f"threads: {names}\\n")  # one write: the two ranks share the pipe
"""


def test_shutdown_stops_gloos_threads_before_the_process_exits(output_dir: Path, tmp_path: Path) -> None:
    """A process that exits with gloo's threads running can abort ("terminate called without an active
    exception"), failing a replica after training succeeded. DistributedDataParallel imports a module that
    keeps the group alive past destroy_process_group unless it was imported before the group existed."""
    program = tmp_path / "teardown.py"
    program.write_text(_TEARDOWN_PROGRAM)
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2",
               "--master-addr=127.0.0.1", f"--master-port={free_port()}", str(program)]
    process = subprocess.run(command, capture_output=True, text=True, env=trainer_env(output_dir), timeout=TIMEOUT)
    assert process.returncode == 0, process.stdout + process.stderr
    reports = re.findall(r"threads: \[[^]]*\]", process.stdout)
    assert len(reports) == 2, process.stdout
    for report in reports:
        assert "gloo" not in report, report
