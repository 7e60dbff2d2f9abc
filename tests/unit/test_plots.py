"""``trainrun.cli.plots``: learning curves drawn from the metric history (the CLI path: tests/local/test_samples.py)."""

from __future__ import annotations

from pathlib import Path

from trainrun.cli.plots import metric_series, plot_metrics

HISTORY = [
    {"time": "t", "replica": "master-0", "epoch": 1, "step": 10, "train_loss": 0.9, "lr": 0.1},
    {"time": "t", "replica": "master-0", "epoch": 1, "step": 20, "train_loss": 0.5, "lr": 0.05},
    {"time": "t", "replica": "master-0", "epoch": 1, "val_loss": 0.45},  # no step: drawn at step 20
    {"time": "t", "replica": "master-0", "epoch": 2, "step": 30, "train_loss": 0.3, "lr": 0.01},
    {"time": "t", "replica": "master-0", "epoch": 2, "step": 30, "train_loss": 0.3, "lr": 0.01},  # repeated
]


def test_series_follow_the_step_and_skip_repeats() -> None:
    series = metric_series(HISTORY)
    assert series["train_loss"] == ([10.0, 20.0, 30.0], [0.9, 0.5, 0.3])
    assert series["val_loss"] == ([20.0], [0.45])
    assert set(series) == {"train_loss", "lr", "val_loss"}


def test_without_steps_the_epoch_is_the_axis() -> None:
    series = metric_series([{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.0}, {"epoch": 3, "flag": True}])
    assert series == {"loss": ([1.0, 2.0], [2.0, 1.0])}


def test_the_image_has_a_panel_per_metric(tmp_path: Path) -> None:
    from matplotlib import image  # a test dependency (and the `plot` extra)

    drawn = plot_metrics(HISTORY, tmp_path / "curves.png", title="run")
    assert drawn == ["lr", "train_loss", "val_loss"]
    pixels = image.imread(tmp_path / "curves.png")
    height, width = pixels.shape[:2]
    assert width > 3 * height / 1.5  # three panels side by side
    assert pixels.std() > 0.05  # lines and text, not a blank canvas
    assert plot_metrics([], tmp_path / "empty.png", title="run") == []
    assert not (tmp_path / "empty.png").exists()
