"""A training script of your own, run by the custom-script sample: plain PyTorch DDP, no trainrun import.

torchrun starts it with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set; it fits a line
and prints `step=N loss=X`, which the TrainingRun's metric regexes pick up, and saves the weights in
$OUTPUT_DIR (rank 0 only).
"""

import argparse
import os

import torch
import torch.distributed as dist

# Before init_process_group: this module's functions hold the process group it finds at import (a default
# argument), and DistributedDataParallel imports it. Imported later, destroy_process_group could not stop
# gloo's threads, and a process exiting with them running can abort at exit.
import torch.distributed.nn  # noqa: F401


def train(rank: int, steps: int, lr: float) -> None:
    torch.manual_seed(rank)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(1, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for step in range(1, steps + 1):
        inputs = torch.randn(64, 1)
        loss = torch.nn.functional.mse_loss(model(inputs), 3 * inputs + 1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if rank == 0 and step % 20 == 0:
            print(f"step={step} loss={loss.item():.5f}", flush=True)
    if rank == 0:
        output_dir = os.environ.get("OUTPUT_DIR", "outputs")
        os.makedirs(output_dir, exist_ok=True)
        torch.save(model.module.state_dict(), os.path.join(output_dir, "model.pt"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=0.05)
    arguments = parser.parse_args()
    dist.init_process_group("gloo")
    train(dist.get_rank(), arguments.steps, arguments.lr)  # the model goes with it: nothing holds the group
    # Every rank waits for rank 0's save, then the group goes (gloo's threads stopped) before the process exits.
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
