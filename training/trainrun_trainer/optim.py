"""The optimizer and the learning-rate schedule: linear warm-up, then polynomial decay.

Called by `trainrun_trainer.training`. The peak rate is the configured rate times the world
size (the batch summed over all ranks grows with it, so the step may grow too). The schedule is
per step, and its state is saved in every checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

WEIGHT_DECAY = 1e-4
DECAY_POWER = 1.0  # torch.optim.lr_scheduler.PolynomialLR's default: linear to zero
# Warm-up starts at this fraction of the peak rather than at zero, so the first step moves.
WARMUP_START_FACTOR = 0.1


def build_optimizer(model: nn.Module, *, learning_rate: float, world_size: int) -> torch.optim.Optimizer:
    """AdamW at `learning_rate * world_size`."""
    return torch.optim.AdamW(model.parameters(), lr=learning_rate * world_size, weight_decay=WEIGHT_DECAY)


def learning_rate_factor(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the peak rate before optimizer step `step` (0-based)."""
    if step < warmup_steps:
        return WARMUP_START_FACTOR + (1 - WARMUP_START_FACTOR) * step / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return float((1.0 - progress) ** DECAY_POWER)


def build_scheduler(optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, warmup_epochs: int,
                    epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule over `epochs * steps_per_epoch` steps, the first `warmup_epochs` warming up."""
    warmup_steps = warmup_epochs * steps_per_epoch
    total_steps = epochs * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: learning_rate_factor(step, warmup_steps=warmup_steps, total_steps=total_steps),
    )
