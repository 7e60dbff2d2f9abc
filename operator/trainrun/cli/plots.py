"""``trainrun metrics NAME --plot FILE``: the learning curves of a run as an image (matplotlib).

Called by ``trainrun.cli.logs`` with the history records of ``Client.metrics`` (the same shape for a
cluster run, read from the Master's log, and a local one, read from ``metrics.jsonl``). One panel per
metric, against the training step; a record without a step (an end-of-epoch validation line) is drawn
at the last step seen before it, and a record that repeats the one before it is drawn once.
matplotlib is an optional dependency (``pip install 'trainrun[plot]'``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# Fields of a history record that place it rather than measure something.
POSITION_FIELDS = frozenset({"time", "replica", "epoch", "step"})
PANEL_COLUMNS = 3


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def x_axis(history: Sequence[Mapping[str, Any]]) -> str:
    """What the curves are drawn against: the step when any record has one, else the epoch."""
    return "step" if any("step" in record for record in history) else "epoch"


def metric_series(history: Sequence[Mapping[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    """Each metric's (x, y) points in record order; x is the step (carried forward) or else the epoch."""
    has_steps = x_axis(history) == "step"
    series: dict[str, tuple[list[float], list[float]]] = {}
    position = 0.0
    previous: dict[str, Any] | None = None
    for index, record in enumerate(history):
        measured = {name: value for name, value in record.items() if name not in POSITION_FIELDS}
        if measured == previous:
            continue  # a summary that repeats the line before it (the trainer's final line) adds no point
        previous = measured
        if has_steps:
            position = float(record.get("step", position))
        else:
            position = float(record.get("epoch", index))
        for name, value in record.items():
            if name in POSITION_FIELDS or not isinstance(value, int | float) or isinstance(value, bool):
                continue
            xs, ys = series.setdefault(name, ([], []))
            xs.append(position)
            ys.append(float(value))
    return series


def plot_metrics(history: Sequence[Mapping[str, Any]], path: Path, *, title: str) -> list[str]:
    """Draw every metric of history into the image at path (format from its suffix); the metrics drawn."""
    series = metric_series(history)
    if not series:
        return []
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as pyplot
    except ImportError as error:
        raise PlotUnavailable("--plot needs matplotlib: pip install 'trainrun[plot]'") from error
    axis = x_axis(history)
    columns = min(PANEL_COLUMNS, len(series))
    rows = math.ceil(len(series) / columns)
    figure, axes = pyplot.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows), squeeze=False)
    try:
        for panel, (name, (xs, ys)) in zip(axes.flat, sorted(series.items()), strict=False):
            panel.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, linewidth=1.4)
            panel.set_title(name, fontsize=10)
            panel.set_xlabel(axis, fontsize=8)
            panel.tick_params(labelsize=8)
            panel.grid(alpha=0.3)
        for unused in list(axes.flat)[len(series) :]:
            unused.set_visible(False)
        figure.suptitle(title)
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
    finally:
        pyplot.close(figure)
    return sorted(series)
