"""The training run: resume, train and validate each epoch, stop early, export.

Called by `trainrun_trainer.__main__.main` with a parsed `TrainConfig`. Every rank runs the same
code; DistributedDataParallel averages gradients, sums of loss/accuracy are all-reduced so the
logged numbers cover all ranks, and only rank 0 writes files and prints.

Speed choices: the loss and accuracy are summed on the device and read back only when a line is
printed (a `.item()` per step would stall the GPU every step); batches arrive as uint8 and become
floats on the device; convolutional models run channels_last, under bf16 autocast on GPUs.
"""

from __future__ import annotations

import dataclasses
import math
import socket
import time
from datetime import UTC, datetime
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as functional
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from trainrun_trainer import artifacts
from trainrun_trainer.config import TrainConfig
from trainrun_trainer.data import (
    BatchSource,
    LoadedDataset,
    load_dataset,
    split_size,
    train_batches,
    validation_batches,
)
from trainrun_trainer.errors import TrainerError
from trainrun_trainer.models import ImageClassifier, build_classifier, uses_convolutions
from trainrun_trainer.optim import build_optimizer, build_scheduler
from trainrun_trainer.reporting import Reporter
from trainrun_trainer.runtime import Runtime, start_runtime
from trainrun_trainer.throughput import Throughput

TOP_K = 5


@dataclasses.dataclass
class Progress:
    """What survives a restart besides the weights (saved in every checkpoint)."""

    epochs_done: int = 0
    global_step: int = 0
    best_val_loss: float = math.inf
    best_epoch: int = 0
    best_step: int = 0
    epochs_without_improvement: int = 0
    best_metrics: dict[str, float] = dataclasses.field(default_factory=dict)

    def record_epoch(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Note a finished epoch; True when its validation loss is the best so far (NaN never is)."""
        self.epochs_done = epoch
        if metrics["val_loss"] < self.best_val_loss:
            self.best_val_loss = metrics["val_loss"]
            self.best_epoch = epoch
            self.best_step = self.global_step
            self.best_metrics = dict(metrics)
            self.epochs_without_improvement = 0
            return True
        self.epochs_without_improvement += 1
        return False

    def should_stop(self, patience: int) -> bool:
        """Early stopping: `patience` epochs in a row without a lower validation loss (0 turns it off)."""
        return patience > 0 and self.epochs_without_improvement >= patience


@dataclasses.dataclass
class Session:
    """The pieces one run trains with."""

    config: TrainConfig
    runtime: Runtime
    reporter: Reporter
    dataset: LoadedDataset
    classifier: ImageClassifier
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    train_source: BatchSource
    validation_source: BatchSource
    channels_last: bool
    throughput: Throughput = dataclasses.field(default_factory=Throughput)  # images_per_sec, smoothed


def run_training(config: TrainConfig) -> dict[str, Any]:
    """Train as configured; returns the run summary that run.json holds.

    Every process says who it is when it starts and when it ends (only rank 0 reports metrics), so a
    Worker's log shows it took part rather than looking dead."""
    runtime = start_runtime()
    started = time.monotonic()
    _say_on_this_rank(runtime, "starting")
    outcome = "stopped by an error"
    try:
        summary = _run(config, runtime)
        outcome = "finished"
        return summary
    finally:
        runtime.shutdown()
        _say_on_this_rank(runtime, outcome, after=time.monotonic() - started)


def _say_on_this_rank(runtime: Runtime, what: str, *, after: float | None = None) -> None:
    """``trainrun_trainer: rank 1 of 2 (local rank 0 on node-a, cpu) finished at 05:18:09 UTC, after 8.1 s``."""
    where = f"local rank {runtime.local_rank} on {socket.gethostname()}, {runtime.device}"
    when = datetime.now(UTC).strftime("%H:%M:%S UTC") + ("" if after is None else f", after {after:.1f} s")
    print(f"trainrun_trainer: rank {runtime.rank} of {runtime.world_size} ({where}) {what} at {when}", flush=True)


def _run(config: TrainConfig, runtime: Runtime) -> dict[str, Any]:
    torch.manual_seed(config.seed)
    reporter = Reporter(output_dir=config.output_dir, enabled=runtime.is_main)
    dataset = load_dataset(config)
    if split_size(dataset.train) == 0 or split_size(dataset.validation) == 0:
        raise TrainerError(f"--dataset {config.dataset}: the train or validation split has no images")
    classifier = build_classifier(config.model, input_shape=dataset.input_shape,
                                  num_classes=len(dataset.class_names), pretrained=config.pretrained)
    channels_last = uses_convolutions(config.model)
    classifier = classifier.to(runtime.device)
    if channels_last:
        classifier = classifier.to(memory_format=torch.channels_last)
    train_source = train_batches(dataset.train, runtime=runtime, batch_size=config.batch_size,
                                 seed=config.seed)
    validation_source = validation_batches(dataset.validation, runtime=runtime,
                                           batch_size=2 * config.batch_size, seed=config.seed)
    optimizer = build_optimizer(classifier, learning_rate=config.learning_rate,
                                world_size=runtime.world_size)
    scheduler = build_scheduler(optimizer, steps_per_epoch=len(train_source),
                                warmup_epochs=config.warmup_epochs, epochs=config.epochs)
    progress = _resume(config=config, runtime=runtime, reporter=reporter, classifier=classifier,
                       optimizer=optimizer, scheduler=scheduler)

    model: nn.Module = classifier
    if runtime.distributed:
        device_ids = [runtime.device] if runtime.device.type == "cuda" else None
        model = DistributedDataParallel(classifier, device_ids=device_ids)
    if config.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    session = Session(config=config, runtime=runtime, reporter=reporter, dataset=dataset,
                      classifier=classifier, model=model, optimizer=optimizer, scheduler=scheduler,
                      train_source=train_source, validation_source=validation_source,
                      channels_last=channels_last)
    _announce(session)
    reporter.progress(step=progress.global_step, total_steps=config.epochs * len(train_source),
                      epoch=min(progress.epochs_done + 1, config.epochs), epochs=config.epochs)

    stopped_early = progress.should_stop(config.patience)
    for epoch in range(progress.epochs_done + 1, config.epochs + 1):
        if stopped_early:
            break
        epoch_metrics = _train_epoch(session, progress=progress, epoch=epoch)
        epoch_metrics.update(_validate(session))
        improved = progress.record_epoch(epoch, epoch_metrics)
        epoch_metrics.update(_device_metrics(runtime))
        reporter.metrics(epoch=epoch, step=progress.global_step, samples=epoch_metrics)
        # The numbers are on the metric line just above: said once.
        reporter.say(f"epoch {epoch}/{config.epochs} done" + (" (best so far)" if improved else ""))
        if runtime.is_main:
            _save_checkpoint(session, progress)
        stopped_early = progress.should_stop(config.patience)
        if stopped_early:
            reporter.say(f"early stop: validation loss has not improved for {config.patience} epochs "
                         f"(best {progress.best_val_loss:.4f} at epoch {progress.best_epoch})")

    summary = _summary(session, progress, stopped_early=stopped_early)
    if runtime.is_main:
        _finish(session, progress, summary)
    runtime.barrier()
    return summary


def _announce(session: Session) -> None:
    config, runtime, dataset = session.config, session.runtime, session.dataset
    parameters = sum(parameter.numel() for parameter in session.classifier.parameters())
    session.reporter.say(
        f"trainrun_trainer: model {config.model} ({parameters / 1e6:.2f}M parameters"
        f"{', ImageNet weights' if config.pretrained else ''}), dataset {config.dataset} "
        f"({split_size(dataset.train)} train / {split_size(dataset.validation)} val images, "
        f"{len(dataset.class_names)} classes, input {'x'.join(map(str, dataset.input_shape))}), "
        f"world size {runtime.world_size}, device {runtime.device} ({runtime.cpu_threads} CPU threads), "
        f"batch {config.batch_size} per process, {len(session.train_source)} steps per epoch, "
        f"peak learning rate {config.learning_rate * runtime.world_size:g}"
    )


def _resume(*, config: TrainConfig, runtime: Runtime, reporter: Reporter, classifier: ImageClassifier,
            optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR) -> Progress:
    """Load the newest checkpoint, if any. Rank 0 reads it and sends it to the others, so
    replicas with their own (empty) disks resume in step with rank 0."""
    state: dict[str, Any] | None = None
    path = artifacts.newest_checkpoint(config.checkpoint_dir) if runtime.is_main else None
    if path is not None:
        state = artifacts.load_checkpoint(path)
        written_for = (state.get("model_name"), state.get("num_classes"))
        wanted = (config.model, classifier.num_classes)
        if written_for != wanted:
            raise TrainerError(
                f"checkpoint {path} was written for model {written_for[0]} with {written_for[1]} classes, "
                f"but this run trains {wanted[0]} with {wanted[1]}: use another OUTPUT_DIR or "
                "TRAINRUN_CHECKPOINT_DIR, or delete the old checkpoints"
            )
    if runtime.distributed:
        holder: list[Any] = [state]
        dist.broadcast_object_list(holder, src=0, device=runtime.device)
        state = holder[0]
    if state is None:
        return Progress()
    classifier.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    progress = Progress(**state["progress"])
    reporter.say(f"resuming after epoch {progress.epochs_done} from {path or 'rank 0'}"
                 f" (step {progress.global_step}, best val_loss {progress.best_val_loss:.4f})")
    return progress


def _save_checkpoint(session: Session, progress: Progress) -> None:
    state = {
        "epoch": progress.epochs_done,
        "model_name": session.config.model,
        "num_classes": session.classifier.num_classes,
        "model": session.classifier.state_dict(),
        "optimizer": session.optimizer.state_dict(),
        "scheduler": session.scheduler.state_dict(),
        "best_val_loss": progress.best_val_loss,
        "progress": dataclasses.asdict(progress),
    }
    artifacts.save_checkpoint(artifacts.checkpoint_path(session.config.checkpoint_dir, progress.epochs_done), state)


def _as_float_images(session: Session, images: torch.Tensor) -> torch.Tensor:
    """uint8 batch -> float in [0, 1], in the memory layout the model runs fastest with."""
    layout = torch.channels_last if session.channels_last else torch.contiguous_format
    return images.to(dtype=torch.float32, memory_format=layout).div_(255)


def _autocast(session: Session) -> torch.autocast:
    # bf16 pays on GPUs (tensor cores); on these CPUs it measured slower, so CPU stays float32.
    on_gpu = session.runtime.device.type == "cuda"
    return torch.autocast(device_type=session.runtime.device.type, dtype=torch.bfloat16, enabled=on_gpu)


def _train_epoch(session: Session, *, progress: Progress, epoch: int) -> dict[str, float]:
    """One pass over this rank's share; prints window metrics every print-frequency steps (train_loss,
    train_accuracy, images_per_sec, lr) and returns the epoch's (all-rank) means under names of their own,
    epoch_train_loss, epoch_train_accuracy and epoch_images_per_sec: at the epoch's last step a window's
    train_loss and the epoch's mean are two different numbers."""
    config, runtime, reporter = session.config, session.runtime, session.reporter
    session.model.train()
    device = runtime.device
    # [loss sum, correct] summed on the device; image counts are known on the host already.
    epoch_sums = torch.zeros(2, device=device, dtype=torch.float64)
    window_sums = torch.zeros(2, device=device, dtype=torch.float64)
    epoch_seen = window_seen = 0
    epoch_start = window_start = time.perf_counter()
    for images, labels in session.train_source.batches(epoch):
        with _autocast(session):
            logits = session.model(_as_float_images(session, images))
            loss = functional.cross_entropy(logits, labels)
        session.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        session.optimizer.step()
        session.scheduler.step()
        progress.global_step += 1
        batch = labels.shape[0]
        window_seen += batch
        window_sums[0] += loss.detach().double() * batch
        window_sums[1] += (logits.detach().argmax(dim=1) == labels).sum()
        if progress.global_step % config.print_frequency == 0:
            samples = _train_samples(session, window_sums, seen=window_seen, since=window_start, smoothed=True)
            samples["lr"] = float(session.scheduler.get_last_lr()[0])
            samples.update(_device_metrics(runtime))
            reporter.metrics(epoch=epoch, step=progress.global_step, samples=samples)
            epoch_sums += window_sums
            epoch_seen += window_seen
            window_sums.zero_()
            window_seen = 0
            window_start = time.perf_counter()
    epoch_sums += window_sums
    means = _train_samples(session, epoch_sums, seen=epoch_seen + window_seen, since=epoch_start)
    return {f"epoch_{name}": value for name, value in means.items()}


def _global_totals(runtime: Runtime, sums: torch.Tensor, *, seen: int) -> list[float]:
    """This rank's device-side sums plus its image count, summed over all ranks and read back:
    the one host-device sync of a logging window or a validation pass."""
    totals = torch.cat((sums, torch.tensor([float(seen)], dtype=torch.float64, device=sums.device)))
    values: list[float] = runtime.sum_across_ranks(totals).tolist()
    values[-1] = max(values[-1], 1.0)  # an empty window must not divide by zero
    return values


def _train_samples(
    session: Session, sums: torch.Tensor, *, seen: int, since: float, smoothed: bool = False
) -> dict[str, float]:
    """All-rank train_loss, train_accuracy and throughput from this rank's [loss sum, correct]; smoothed: the
    throughput over the last seconds of training (a print window), else over these images alone (an epoch)."""
    loss_sum, correct, images = _global_totals(session.runtime, sums, seen=seen)
    elapsed = time.perf_counter() - since
    rate = session.throughput.add(images, elapsed) if smoothed else images / elapsed
    return {"train_loss": loss_sum / images, "train_accuracy": correct / images, "images_per_sec": rate}


def _validate(session: Session) -> dict[str, float]:
    """Loss and top-1/top-5 accuracy over the whole validation split (all ranks summed)."""
    classifier = session.classifier  # not the DDP wrapper: evaluation needs no gradient sync
    classifier.eval()
    device = session.runtime.device
    # [loss sum, top-1 hits, top-k hits] on the device; the image count on the host.
    sums = torch.zeros(3, device=device, dtype=torch.float64)
    seen = 0
    top_k = min(TOP_K, classifier.num_classes)
    with torch.no_grad():
        for images, labels in session.validation_source.batches(0):
            with _autocast(session):
                logits = classifier(_as_float_images(session, images))
            logits = logits.float()
            ranked = logits.topk(top_k, dim=1).indices
            hits = ranked == labels.unsqueeze(1)
            sums[0] += functional.cross_entropy(logits, labels, reduction="sum").double()
            sums[1] += hits[:, 0].sum()
            sums[2] += hits.any(dim=1).sum()
            seen += labels.shape[0]
    loss_sum, top1, top_k_hits, count = _global_totals(session.runtime, sums, seen=seen)
    return {"val_loss": loss_sum / count, "val_accuracy": top1 / count, "val_top1": top1 / count,
            "val_top5": top_k_hits / count}


def _device_metrics(runtime: Runtime) -> dict[str, float]:
    """GPU memory high-water mark and utilisation, when on a GPU (utilisation needs pynvml)."""
    if runtime.device.type != "cuda":
        return {}
    metrics = {"gpu_memory_gb": torch.cuda.max_memory_allocated(runtime.device) / 2**30}
    try:
        metrics["gpu_utilization"] = float(torch.cuda.utilization(runtime.device))
    except Exception:  # no NVML library in the image: leave the sample out rather than fail
        pass
    return metrics


def _summary(session: Session, progress: Progress, *, stopped_early: bool) -> dict[str, Any]:
    config, runtime, dataset = session.config, session.runtime, session.dataset
    return {
        "hyperparameters": config.as_json(),
        "world_size": runtime.world_size,
        "device": str(runtime.device.type),
        "peak_learning_rate": config.learning_rate * runtime.world_size,
        "global_batch_size": config.batch_size * runtime.world_size,
        "class_names": dataset.class_names,
        "num_classes": len(dataset.class_names),
        "input_shape": list(dataset.input_shape),
        "input": "float32 images scaled to [0, 1], shape (N, C, H, W); model.ts, model.pt2 and model.onnx "
                 "normalise themselves",
        "epochs_completed": progress.epochs_done,
        "best_epoch": progress.best_epoch,
        "stopped_early": stopped_early,
        "final_metrics": progress.best_metrics,
        "torch_version": torch.__version__,
    }


def _finish(session: Session, progress: Progress, summary: dict[str, Any]) -> None:
    """Rank 0: export the best epoch's weights, write run.json, print the final metric line."""
    config, reporter = session.config, session.reporter
    best = artifacts.checkpoint_path(config.checkpoint_dir, progress.best_epoch)
    if progress.best_epoch and best.is_file():
        session.classifier.load_state_dict(artifacts.load_checkpoint(best)["model"])
    elif progress.best_epoch:
        reporter.say(f"best checkpoint {best} is gone; exporting the last weights instead")
    else:
        reporter.say("no epoch reached a finite validation loss; exporting the last weights")
    reporter.stage("exporting model")
    artifacts.export_model(session.classifier, output_dir=config.output_dir,
                           input_shape=session.dataset.input_shape)
    artifacts.write_triton_repository(config.output_dir, model_name=config.serving_name,
                                      input_shape=session.dataset.input_shape,
                                      class_names=session.dataset.class_names)
    artifacts.write_run_summary(config.output_dir, summary)
    # The exported model's numbers: the best epoch's line again, at its own position, marked final (the
    # status keeps them; a history drops the repeat).
    reporter.metrics(epoch=progress.best_epoch, step=progress.best_step,
                     samples={"final": True, **progress.best_metrics})
    reporter.say(f"done: best epoch {progress.best_epoch} of {progress.epochs_done}; "
                 f"model.pt, model.ts, model.pt2, model.onnx, triton/, run.json in {config.output_dir}")
