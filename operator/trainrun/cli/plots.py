"""``trainrun metrics NAME --plot FILE``: the learning curves of a run as an image (matplotlib).

Called by ``trainrun.cli.logs`` with the history records of ``Client.metrics`` (the same shape for a
cluster run, read from the Master's log, and a local one, read from ``metrics.jsonl``). Drawn as a
person compares them: one panel per quantity (loss, accuracy, throughput, learning rate...) holding its
train and validation series together; the per-step series as lines and the per-epoch points as markers,
never joined into one line (an epoch's summary is not one more step: joined, it draws a false spike at
each epoch end); a logarithmic axis where a loss spans more than a decade; throughput in a panel of its
own. :func:`learning_curves` decides all of that (pure); :func:`plot_metrics` only draws it.
matplotlib is an optional dependency (``pip install 'trainrun[plot]'``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# Fields of a history record that place it rather than measure something.
POSITION_FIELDS = frozenset({"time", "replica", "epoch", "step"})
# A record with a value of these prefixes is an epoch's summary (validation runs once an epoch).
EPOCH_PREFIXES = ("val_",)
# The split a metric belongs to, by its prefix; the rest of its name is the quantity (its panel).
SPLITS = {"train_": "train", "val_": "val"}
# Quantities that are one panel under another name: top-1 and top-5 accuracy are accuracies.
SAME_PANEL = {"top1": "accuracy", "top5": "accuracy"}
PANEL_ORDER = ("loss", "accuracy")  # first; then the others by name
LOG_SCALE_SPAN = 10.0  # a loss whose largest value is more than this times its smallest gets a log axis
PANEL_COLUMNS = 3

Cadence = Literal["step", "epoch"]


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


@dataclass
class Series:
    """One metric at one cadence: ``train_loss`` per step, ``train_loss`` per epoch, ``val_loss`` per epoch."""

    metric: str
    cadence: Cadence
    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.metric} (per {self.cadence})"


@dataclass
class Panel:
    """One quantity's axes: its series, and whether its y axis is logarithmic."""

    quantity: str
    series: list[Series]
    log_scale: bool


def x_axis(history: Sequence[Mapping[str, Any]]) -> str:
    """What the curves are drawn against: the step when any record has one, else the epoch."""
    return "step" if any("step" in record for record in history) else "epoch"


def quantity_of(metric: str) -> str:
    """``val_loss`` -> ``loss``, ``train_accuracy`` -> ``accuracy``, ``val_top5`` -> ``accuracy``."""
    for prefix in SPLITS:
        if metric.startswith(prefix):
            metric = metric[len(prefix) :]
            break
    return SAME_PANEL.get(metric, metric)


def learning_curves(history: Sequence[Mapping[str, Any]]) -> list[Panel]:
    """The panels to draw from the history records, in order (loss, accuracy, then by name).

    A record without a step (an end-of-epoch line) is placed at the last step seen before it; without
    any step in the history, the epoch is the axis. A series identical to another of its panel (val_top1
    is val_accuracy) is drawn once.
    """
    has_steps = x_axis(history) == "step"
    series: dict[tuple[str, Cadence], Series] = {}
    position = 0.0
    for index, record in enumerate(history):
        position = float(record.get("step", position)) if has_steps else float(record.get("epoch", index))
        values = {
            name: float(value)
            for name, value in record.items()
            if name not in POSITION_FIELDS and isinstance(value, int | float) and not isinstance(value, bool)
        }
        cadence: Cadence = "epoch" if any(name.startswith(EPOCH_PREFIXES) for name in values) else "step"
        for name, value in values.items():
            line = series.setdefault((name, cadence), Series(metric=name, cadence=cadence))
            line.xs.append(position)
            line.ys.append(value)
    panels: dict[str, list[Series]] = {}
    for line in series.values():
        members = panels.setdefault(quantity_of(line.metric), [])
        if not any((other.xs, other.ys) == (line.xs, line.ys) for other in members):
            members.append(line)
    ordered = sorted(panels, key=lambda name: (PANEL_ORDER.index(name) if name in PANEL_ORDER else len(PANEL_ORDER), name))
    return [Panel(quantity=name, series=panels[name], log_scale=_spans_decades(name, panels[name])) for name in ordered]


def _spans_decades(quantity: str, series: Sequence[Series]) -> bool:
    values = [value for line in series for value in line.ys]
    return "loss" in quantity and min(values) > 0 and max(values) > LOG_SCALE_SPAN * min(values)


def epoch_ends(panels: Sequence[Panel]) -> list[float]:
    """Where the epochs end on the x axis: the positions of the per-epoch points."""
    return sorted({x for panel in panels for line in panel.series if line.cadence == "epoch" for x in line.xs})


def plot_metrics(history: Sequence[Mapping[str, Any]], path: Path, *, title: str) -> list[str]:
    """Draw the learning curves of history into the image at path (format from its suffix); the panels drawn."""
    panels = learning_curves(history)
    if not panels:
        return []
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as pyplot
    except ImportError as error:
        raise PlotUnavailable("--plot needs matplotlib: pip install 'trainrun[plot]'") from error
    axis = x_axis(history)
    columns = min(PANEL_COLUMNS, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = pyplot.subplots(rows, columns, figsize=(5.0 * columns, 3.6 * rows), squeeze=False)
    colours = {"train": "tab:blue", "val": "tab:orange"}
    boundaries = epoch_ends(panels)
    try:
        for panel, axes_of_panel in zip(panels, axes.flat, strict=False):
            for line in panel.series:
                split = next((name for prefix, name in SPLITS.items() if line.metric.startswith(prefix)), "")
                colour = colours.get(split, "tab:green") if not line.metric.endswith("top5") else "tab:red"
                if line.cadence == "step":
                    axes_of_panel.plot(line.xs, line.ys, color=colour, linewidth=1.2, alpha=0.85, label=line.label)
                else:
                    marker = "s" if split == "train" else "o"
                    # Validation points are joined (dashed: they are all there is of it); others stand alone.
                    axes_of_panel.plot(line.xs, line.ys, color=colour, linestyle="--" if split == "val" else "none",
                                       linewidth=1.0, marker=marker, markersize=6, markeredgecolor="black",
                                       markeredgewidth=0.6, label=line.label, zorder=3)
            for boundary in boundaries:
                axes_of_panel.axvline(boundary, color="grey", linewidth=0.6, linestyle=":", zorder=0)
            if panel.log_scale:
                axes_of_panel.set_yscale("log")
            axes_of_panel.set_title(panel.quantity + (" (log scale)" if panel.log_scale else ""), fontsize=10)
            axes_of_panel.set_xlabel(axis + ("  (dotted: end of an epoch)" if boundaries and axis == "step" else ""),
                                     fontsize=8)
            axes_of_panel.tick_params(labelsize=8)
            axes_of_panel.grid(alpha=0.3, which="both")
            axes_of_panel.legend(fontsize=7, loc="best")
        for unused in list(axes.flat)[len(panels) :]:
            unused.set_visible(False)
        figure.suptitle(title)
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
    finally:
        pyplot.close(figure)
    return [panel.quantity for panel in panels]
