"""``trainrun.cli.plots``: learning curves drawn from the metric history (the CLI path: tests/local/test_samples.py).

The history has the built-in trainer's shape: per-step windows, then an epoch's summary at the same step
with its means (``epoch_train_loss``) and the validation numbers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from trainrun.cli.plots import Cell, epoch_spans, learning_curves, learning_curves_figure, panel_layout, plot_metrics


def window(step: int, loss: float, throughput: float) -> dict[str, object]:
    return {"replica": "master-0", "epoch": 1 + (step - 1) // 20, "step": step, "train_loss": loss,
            "train_accuracy": 0.5, "images_per_sec": throughput, "lr": 0.1}


def epoch_summary(epoch: int, step: int, loss: float, val_loss: float) -> dict[str, object]:
    return {"replica": "master-0", "epoch": epoch, "step": step, "epoch_train_loss": loss, "epoch_train_accuracy": 0.6,
            "epoch_images_per_sec": 900.0, "val_loss": val_loss, "val_accuracy": 0.7, "val_top1": 0.7,
            "val_top5": 0.95}


HISTORY = [
    window(10, 2.3, 1000.0), window(20, 1.0, 1100.0), epoch_summary(1, 20, 1.6, 0.9),
    window(30, 0.2, 1050.0), window(40, 0.05, 1080.0), epoch_summary(2, 40, 0.12, 0.1),
]


def test_one_panel_per_quantity_with_train_and_validation_together() -> None:
    panels = {panel.quantity: panel for panel in learning_curves(HISTORY)}
    assert list(panels) == ["loss", "accuracy", "images_per_sec", "lr"]
    assert {line.label for line in panels["loss"].series} == {
        "train_loss", "epoch_train_loss (mean over the epoch)", "val_loss (per epoch)"}
    # val_top1 is val_accuracy again: drawn once; top-5 is an accuracy too.
    assert {line.metric for line in panels["accuracy"].series} == {
        "train_accuracy", "epoch_train_accuracy", "val_accuracy", "val_top5"}
    # Throughput alone.
    assert {line.metric for line in panels["images_per_sec"].series} == {"images_per_sec", "epoch_images_per_sec"}
    assert [panel.y_label for panel in panels.values()] == ["loss", "accuracy", "images per second", "learning rate"]


def test_per_epoch_means_stay_out_of_the_per_step_lines_and_span_their_epoch() -> None:
    loss = {line.metric: line for line in next(panel for panel in learning_curves(HISTORY) if panel.quantity == "loss").series}
    assert (loss["train_loss"].xs, loss["train_loss"].ys) == ([10, 20, 30, 40], [2.3, 1.0, 0.2, 0.05])
    mean = loss["epoch_train_loss"]
    assert (mean.xs, mean.ys, mean.is_epoch_mean) == ([20, 40], [1.6, 0.12], True)
    # Drawn as a flat segment over the steps it averages, not as a point far above the epoch's last steps.
    assert epoch_spans([20.0, 40.0], mean.xs) == [(0.0, 20.0), (20.0, 40.0)]
    assert loss["val_loss"].is_epoch_mean is False
    throughput = next(panel for panel in learning_curves(HISTORY) if panel.quantity == "images_per_sec")
    per_step = next(line for line in throughput.series if line.cadence == "step")
    assert 900.0 not in per_step.ys  # an epoch's mean is no jump in the per-step throughput


def test_a_loss_spanning_decades_gets_a_log_axis_and_nothing_else_does() -> None:
    scales = {panel.quantity: panel.log_scale for panel in learning_curves(HISTORY)}
    assert scales == {"loss": True, "accuracy": False, "images_per_sec": False, "lr": False}
    flat = [window(10, 0.9, 1.0), window(20, 0.5, 1.0)]
    assert [panel.log_scale for panel in learning_curves(flat) if panel.quantity == "loss"] == [False]


def test_a_record_without_a_step_is_placed_at_the_last_step_and_without_steps_the_epoch_is_the_axis() -> None:
    placed = learning_curves([window(10, 0.9, 1.0), {"epoch": 1, "val_loss": 0.45}])
    val = next(line for line in placed[0].series if line.metric == "val_loss")
    assert (val.xs, val.ys, val.cadence) == ([10.0], [0.45], "epoch")
    by_epoch = learning_curves([{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.0}, {"epoch": 3, "flag": True}])
    assert [(line.xs, line.ys) for line in by_epoch[0].series] == [([1.0, 2.0], [2.0, 1.0])]


@pytest.mark.parametrize("count", range(1, 8))
def test_the_panels_fill_their_grid_with_no_empty_cell(count: int) -> None:
    rows, width, cells = panel_layout(count)
    assert len(cells) == count
    for row in range(rows):
        spans = sorted((cell.column, cell.span) for cell in cells if cell.row == row)
        assert spans and sum(span for _, span in spans) == width  # the row is full
        assert [column for column, _ in spans] == [sum(span for _, span in spans[:index]) for index in range(len(spans))]
    assert max(sum(1 for cell in cells if cell.row == row) for row in range(rows)) <= 3


def test_four_panels_are_two_by_two_and_five_widen_the_last_row() -> None:
    assert panel_layout(4) == (2, 4, [Cell(0, 0, 2), Cell(0, 2, 2), Cell(1, 0, 2), Cell(1, 2, 2)])
    assert panel_layout(5) == (2, 6, [Cell(0, 0, 2), Cell(0, 2, 2), Cell(0, 4, 2), Cell(1, 0, 3), Cell(1, 3, 3)])


def test_every_panel_names_its_y_axis_and_a_log_axis_reads_in_plain_numbers() -> None:
    import matplotlib.pyplot as pyplot  # a test dependency (and the `plot` extra)

    drawn = learning_curves_figure(HISTORY, title="run")
    assert drawn is not None
    figure, panels = drawn
    try:
        figure.canvas.draw()
        axes = figure.get_axes()
        assert len(axes) == len(panels) == 4  # no empty cell
        assert [item.get_ylabel() for item in axes] == ["loss", "accuracy", "images per second", "learning rate"]
        loss_ticks = {label.get_text() for label in axes[0].get_yticklabels()}
        assert {"0.1", "0.2", "0.5", "1", "2"} <= loss_ticks, loss_ticks  # 0.23 can be read off
    finally:
        pyplot.close(figure)


def test_the_image_is_drawn(tmp_path: Path) -> None:
    from matplotlib import image

    drawn = plot_metrics(HISTORY, tmp_path / "curves.png", title="run")
    assert drawn == ["loss", "accuracy", "images_per_sec", "lr"]
    pixels = image.imread(tmp_path / "curves.png")
    assert pixels.std() > 0.05  # lines and text, not a blank canvas
    assert plot_metrics([], tmp_path / "empty.png", title="run") == []
    assert not (tmp_path / "empty.png").exists()
