"""The pure parts (flag/env parsing and defaults, learning-rate schedule, early stopping, metric
line format) and transfer learning from weights already in the torch hub cache."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
import torchvision
from trainer_harness import run_trainer
from trainrun_trainer.config import parse_config
from trainrun_trainer.optim import learning_rate_factor
from trainrun_trainer.reporting import Reporter
from trainrun_trainer.training import Progress


@pytest.mark.parametrize(("dataset", "model"), [("fashion-mnist", "mlp"), ("cifar10", "cnn"),
                                                ("imagefolder", "resnet18"), ("synthetic", "resnet18")])
def test_default_model_depends_on_the_dataset(dataset: str, model: str) -> None:
    assert parse_config(["--dataset", dataset, "--data-dir", "/data"], environ={}).model == model


def test_env_fills_in_absent_flags_and_flags_win() -> None:
    environ = {"TRAINRUN_EPOCHS": "7", "TRAINRUN_BATCH_SIZE": "64", "TRAINRUN_PRETRAINED": "true",
               "TRAINRUN_MODEL": "resnet34", "OUTPUT_DIR": "/out", "TRAINRUN_CHECKPOINT_DIR": "/ckpt"}
    config = parse_config(["--batch-size=8", "--no-pretrained"], environ=environ)
    assert (config.epochs, config.batch_size, config.pretrained, config.model) == (7, 8, False, "resnet34")
    assert (config.output_dir, config.checkpoint_dir) == (Path("/out"), Path("/ckpt"))


def test_schedule_warms_up_linearly_then_decays_to_zero() -> None:
    factors = [learning_rate_factor(step, warmup_steps=4, total_steps=12) for step in range(13)]
    assert factors[0] == pytest.approx(0.1)
    assert factors[:5] == sorted(factors[:5]) and factors[4] == 1.0
    assert factors[4:] == sorted(factors[4:], reverse=True)
    assert factors[12] == 0.0
    no_warmup = [learning_rate_factor(step, warmup_steps=0, total_steps=10) for step in range(10)]
    assert no_warmup[0] == 1.0 and no_warmup[5] == pytest.approx(0.5)


def test_pretrained_weights_from_the_local_hub_cache(tmp_path: Path, output_dir: Path) -> None:
    """A resnet18 weights file in $TORCH_HOME/hub/checkpoints is used (no download can happen
    here); the ImageNet head is swapped for one with the run's number of classes."""
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(0)
    imagenet_like = torchvision.models.resnet18(num_classes=1000)
    torch.save(imagenet_like.state_dict(), checkpoints / "resnet18-f37072fd.pth")
    run = run_trainer(["--model", "resnet18", "--pretrained", "--image-size", "32", "--synthetic-samples", "16",
                       "--num-classes", "4", "--batch-size", "8", "--epochs", "1"],
                      output_dir=output_dir, TORCH_HOME=str(tmp_path / "torch")).check()
    assert "ImageNet weights" in run.process.stdout
    state = torch.load(output_dir / "model.pt", weights_only=True)
    assert state["fc.weight"].shape == (4, 512)
    # The features started from the cached weights: the first convolution moved only a little.
    start = imagenet_like.state_dict()["conv1.weight"]
    assert (state["conv1.weight"] - start).abs().max() < 0.1 * start.abs().max()


def test_early_stopping_counts_epochs_without_a_lower_validation_loss() -> None:
    progress = Progress()
    history = [(1, 0.9), (2, 0.7), (3, 0.75), (4, float("nan")), (5, 0.71)]
    improved = [progress.record_epoch(epoch, {"val_loss": loss}) for epoch, loss in history]
    assert improved == [True, True, False, False, False]
    assert (progress.best_epoch, progress.best_val_loss, progress.epochs_without_improvement) == (2, 0.7, 3)
    assert progress.should_stop(3) and not progress.should_stop(4)


def test_metric_lines_leave_out_values_json_cannot_hold(tmp_path: Path) -> None:
    stream = io.StringIO()
    reporter = Reporter(output_dir=tmp_path, enabled=True, stream=stream)
    reporter.metrics(epoch=1, step=3, samples={"train_loss": float("nan"), "lr": 0.0012345678})
    assert stream.getvalue() == 'trainrun:metric {"epoch": 1, "step": 3, "lr": 0.00123457}\n'
    assert (tmp_path / "metrics.jsonl").read_text() == '{"epoch": 1, "step": 3, "lr": 0.00123457}\n'
    Reporter(output_dir=tmp_path / "other", enabled=False, stream=stream).metrics(epoch=1, step=4, samples={})
    assert not (tmp_path / "other").exists()


def test_early_stopping_counts_epochs_without_improvement_and_zero_turns_it_off() -> None:
    from trainrun_trainer.training import Progress

    progress = Progress()
    progress.record_epoch(1, {"val_loss": 1.0})
    for epoch in (2, 3):
        progress.record_epoch(epoch, {"val_loss": 2.0})
    assert progress.should_stop(2) and not progress.should_stop(3)
    assert not progress.should_stop(0)
