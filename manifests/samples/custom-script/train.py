"""A training script of your own, run by the custom-script sample: plain PyTorch DDP, no trainrun import.

torchrun starts it with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set. It fits a small
network to a noisy curve (y = sin 5x + x/2, noise 0.1), so its loss falls from about 0.5 to the noise
(0.01) over the first half of the run, and never reads zero. Every --print-every steps rank 0 prints two
lines: a progress line that trainrun reads the step and the total from (the percent, the ETA, hangs),
and `step=N loss=X` in its own format, which the TrainingRun's metric regex picks up. It saves the
weights in $OUTPUT_DIR (rank 0 only).
"""

import argparse
import json
import math
import os

import torch
import torch.distributed as dist

# Before init_process_group: this module's functions hold the process group it finds at import (a default
# argument), and DistributedDataParallel imports it. Imported later, destroy_process_group could not stop
# gloo's threads, and a process exiting with them running can abort at exit.
import torch.distributed.nn  # noqa: F401

NOISE = 0.1


def batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = torch.rand(size, 1) * 4 - 2
    targets = torch.sin(5 * inputs) + inputs / 2 + NOISE * torch.randn(size, 1)
    return inputs, targets


def train(rank: int, steps: int, lr: float, print_every: int) -> None:
    torch.manual_seed(rank)  # each rank its own data; DDP starts every rank from rank 0's weights
    network = torch.nn.Sequential(torch.nn.Linear(1, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                                  torch.nn.Linear(64, 1))
    model = torch.nn.parallel.DistributedDataParallel(network)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    if rank == 0:
        print("trainrun:progress " + json.dumps({"step": 0, "total_steps": steps}), flush=True)
    for step in range(1, steps + 1):
        inputs, targets = batch(256)
        loss = torch.nn.functional.mse_loss(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if rank == 0 and step % print_every == 0:
            print("trainrun:progress " + json.dumps({"step": step, "total_steps": steps}), flush=True)
            print(f"step={step} loss={loss.item():.4g}", flush=True)
    if rank == 0:
        output_dir = os.environ.get("OUTPUT_DIR", "outputs")
        os.makedirs(output_dir, exist_ok=True)
        torch.save(model.module.state_dict(), os.path.join(output_dir, "model.pt"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--print-every", type=int, default=100)
    arguments = parser.parse_args()
    dist.init_process_group("gloo")
    train(dist.get_rank(), arguments.steps, arguments.lr, arguments.print_every)  # the model goes with it
    # Every rank waits for rank 0's save, then the group goes (gloo's threads stopped) before the process exits.
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
