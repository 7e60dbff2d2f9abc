"""Where this process runs: device, rank, world size, process group and CPU threads.

Called once by `trainrun_trainer.training.run_training`. Reads the variables torchrun sets
(RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT); with none of them
the program runs as one ordinary process with no process group. TRAINRUN_CPU_THREADS, when set,
fixes the CPU thread count.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

# Imported before the process group exists, on purpose: its functions take ``group=group.WORLD`` as a
# default argument, evaluated at import. Imported later (DistributedDataParallel does) they hold the
# process group for the life of the process, destroy_process_group cannot stop gloo's threads, and a
# process exiting with them still running can abort ("terminate called without an active exception").
import torch.distributed.nn  # noqa: F401

from trainrun_trainer.errors import TrainerError


@dataclasses.dataclass(frozen=True)
class Runtime:
    """The process's place in the job and the device it computes on."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    cpu_threads: int

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes files and prints metrics."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def sum_across_ranks(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum of `values` over all ranks (the tensor itself when alone)."""
        if self.distributed:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def shutdown(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise TrainerError(f"environment variable {name}={raw!r} must be an integer") from None


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota.

    In a Kubernetes pod with a CPU limit the node may show many more cores than the pod is
    allowed; running that many threads would only make them wait for each other.
    """
    count = len(os.sched_getaffinity(0))
    quota_file = Path("/sys/fs/cgroup/cpu.max")
    try:
        quota, period = quota_file.read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return count


def start_runtime(environ: Mapping[str, str] | None = None) -> Runtime:
    """Join the process group (NCCL on GPUs, Gloo on CPU) when WORLD_SIZE > 1, pick the device,
    and size the CPU thread pool to this process's share of the machine."""
    env = os.environ if environ is None else environ
    world_size = _env_int(env, "WORLD_SIZE", 1)
    rank = _env_int(env, "RANK", 0)
    local_rank = _env_int(env, "LOCAL_RANK", 0)
    local_world_size = _env_int(env, "LOCAL_WORLD_SIZE", 1)
    if world_size < 1 or not 0 <= rank < world_size:
        raise TrainerError(f"RANK={rank} and WORLD_SIZE={world_size} do not fit: need 0 <= RANK < WORLD_SIZE")
    if world_size > 1:
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not env.get(name)]
        if missing:
            raise TrainerError(
                f"WORLD_SIZE={world_size} but {' and '.join(missing)} unset: launch through torchrun "
                "(torchrun --nnodes=... --nproc-per-node=... -m trainrun_trainer)"
            )

    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"

    # Each process gets its share of the CPUs. TRAINRUN_CPU_THREADS (or the usual OMP_NUM_THREADS, which
    # the local runner sets) overrides that for launchers that put several "nodes" on one machine: each
    # torchrun there thinks the machine is its own, and oversubscribed threads crawl.
    cpu_share = max(1, available_cpus() // max(1, local_world_size))
    cpu_threads = _env_int(env, "TRAINRUN_CPU_THREADS", 0) or _env_int(env, "OMP_NUM_THREADS", 0) or cpu_share
    torch.set_num_threads(cpu_threads)
    if device.type == "cpu":
        # Denormal floats make CPU kernels crawl as weights get small; treating them as zero
        # changes nothing a classifier can notice.
        torch.set_flush_denormal(True)
    else:
        # Fixed input shapes: let cuDNN pick the fastest kernels once. TF32 for what stays float32.
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")

    if world_size > 1:
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world_size,
            timeout=timedelta(minutes=30),
            device_id=device if backend == "nccl" else None,
        )
    return Runtime(rank=rank, local_rank=local_rank, world_size=world_size, device=device,
                   cpu_threads=cpu_threads)
