"""``trainrun metrics NAME --plot FILE``: the learning curves of a run as an image (matplotlib).

Called by ``trainrun.cli.logs`` with the history records of ``Client.metrics`` (the same shape for a
cluster run, read from the Master's log, and a local one, read from ``metrics.jsonl``). Drawn as a
person compares them: one panel per quantity (loss, accuracy, throughput, learning rate...) holding its
train and validation series together, its y axis named; the per-step series as lines, an epoch's mean
(``epoch_train_loss``) as a flat segment over the steps it averages, and the end-of-epoch validation
points as markers: never joined into one line (an epoch's summary is not one more step: joined, it draws
a false spike at each epoch end); a logarithmic axis, labelled at 1, 2 and 5 of each decade, where a
loss spans more than a decade; throughput in a panel of its own; the panels laid out with no empty cell.
:func:`learning_curves` and :func:`panel_layout` decide all of that (pure); :func:`learning_curves_figure`
only draws it. matplotlib is an optional dependency (``pip install 'trainrun[plot]'``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from matplotlib.gridspec import GridSpec

# Fields of a history record that place it rather than measure something.
POSITION_FIELDS = frozenset({"time", "replica", "epoch", "step"})
# A record with a value of these prefixes is an epoch's summary: its means (epoch_) and validation (val_).
EPOCH_MEAN_PREFIX = "epoch_"
EPOCH_PREFIXES = (EPOCH_MEAN_PREFIX, "val_")
# The split a metric belongs to, by its prefix; the rest of its name is the quantity (its panel).
SPLITS = {"train_": "train", "val_": "val"}
# Quantities that are one panel under another name: top-1 and top-5 accuracy are accuracies.
SAME_PANEL = {"top1": "accuracy", "top5": "accuracy"}
PANEL_ORDER = ("loss", "accuracy")  # first; then the others by name
# What a panel's y axis measures, where the quantity's name does not say it in words.
Y_LABELS = {"images_per_sec": "images per second", "samples_per_sec": "samples per second", "lr": "learning rate"}
LOG_SCALE_SPAN = 10.0  # a loss whose largest value is more than this times its smallest gets a log axis
PANEL_COLUMNS = 3

Cadence = Literal["step", "epoch"]


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


@dataclass
class Series:
    """One metric at one cadence: ``train_loss`` per step, ``epoch_train_loss`` and ``val_loss`` per epoch."""

    metric: str
    cadence: Cadence
    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)

    @property
    def is_epoch_mean(self) -> bool:
        return self.cadence == "epoch" and self.metric.startswith(EPOCH_MEAN_PREFIX)

    @property
    def label(self) -> str:
        if self.cadence == "step":
            return self.metric
        return f"{self.metric} (mean over the epoch)" if self.is_epoch_mean else f"{self.metric} (per epoch)"


@dataclass
class Panel:
    """One quantity's axes: its series, and whether its y axis is logarithmic."""

    quantity: str
    series: list[Series]
    log_scale: bool

    @property
    def y_label(self) -> str:
        return Y_LABELS.get(self.quantity, self.quantity)


@dataclass(frozen=True)
class Cell:
    """Where a panel sits on the figure's grid: its row, first column and how many columns it spans."""

    row: int
    column: int
    span: int


def x_axis(history: Sequence[Mapping[str, Any]]) -> str:
    """What the curves are drawn against: the step when any record has one, else the epoch."""
    return "step" if any("step" in record for record in history) else "epoch"


def quantity_of(metric: str) -> str:
    """``val_loss`` -> ``loss``, ``epoch_train_accuracy`` -> ``accuracy``, ``val_top5`` -> ``accuracy``."""
    metric = metric.removeprefix(EPOCH_MEAN_PREFIX)
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


def epoch_spans(ends: Sequence[float], xs: Sequence[float]) -> list[tuple[float, float]]:
    """The stretch of the x axis each epoch's mean stands for: from the previous epoch's end (0 before the
    first) to its own."""
    return [(max((end for end in ends if end < x), default=0.0), x) for x in xs]


def panel_layout(count: int) -> tuple[int, int, list[Cell]]:
    """Rows, grid columns and each panel's cell for ``count`` panels, with no empty cell: up to three a
    row (four make two rows of two), and a last row with fewer panels has them wider."""
    columns = 2 if count == 4 else min(PANEL_COLUMNS, count)
    rows = math.ceil(count / columns)
    last = count - (rows - 1) * columns
    width = columns * last  # the full rows' panels span `last` grid columns, the last row's span `columns`
    cells = []
    for index in range(count):
        row, place = divmod(index, columns)
        span = last if row < rows - 1 else columns
        cells.append(Cell(row=row, column=place * span, span=span))
    return rows, width, cells


def learning_curves_figure(history: Sequence[Mapping[str, Any]], *, title: str) -> tuple[Figure, list[Panel]] | None:
    """The learning curves of history as a matplotlib figure (the caller saves and closes it) and its
    panels; None when there is nothing to draw."""
    panels = learning_curves(history)
    if not panels:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as pyplot
    except ImportError as error:
        raise PlotUnavailable("--plot needs matplotlib: pip install 'trainrun[plot]'") from error
    rows, width, cells = panel_layout(len(panels))
    figure = pyplot.figure(figsize=(5.0 * (width // cells[0].span), 3.6 * rows))
    try:
        _draw(figure, figure.add_gridspec(rows, width), panels, cells, axis=x_axis(history))
    except BaseException:
        pyplot.close(figure)
        raise
    figure.suptitle(title)
    figure.tight_layout()
    return figure, panels


def _draw(figure: Figure, grid: GridSpec, panels: Sequence[Panel], cells: Sequence[Cell], *, axis: str) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    colours = {"train": "tab:blue", "val": "tab:orange"}
    boundaries = epoch_ends(panels)
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    for panel, cell in zip(panels, cells, strict=True):
        axes = figure.add_subplot(grid[cell.row, cell.column : cell.column + cell.span])
        for line in panel.series:
            measured = line.metric.removeprefix(EPOCH_MEAN_PREFIX)
            split = next((name for prefix, name in SPLITS.items() if measured.startswith(prefix)), "")
            colour = colours.get(split, "tab:green") if not line.metric.endswith("top5") else "tab:red"
            if line.cadence == "step":
                axes.plot(line.xs, line.ys, color=colour, linewidth=1.2, alpha=0.85, label=line.label)
            elif line.is_epoch_mean:
                # A mean over an epoch stands for all of its steps: a flat segment over them, not a point.
                spans = epoch_spans(boundaries, line.xs)
                axes.hlines(line.ys, [start for start, _ in spans], [end for _, end in spans], color=colour,
                            linewidth=2.4, alpha=0.6, label=line.label, zorder=3)
            else:
                # Validation points are joined (dashed: they are all there is of it); others stand alone.
                axes.plot(line.xs, line.ys, color=colour, linestyle="--" if split == "val" else "none",
                          linewidth=1.0, marker="o", markersize=6, markeredgecolor="black",
                          markeredgewidth=0.6, label=line.label, zorder=3)
        for boundary in boundaries:
            axes.axvline(boundary, color="grey", linewidth=0.6, linestyle=":", zorder=0)
        if panel.log_scale:
            axes.set_yscale("log")
            # Labelled at 1, 2 and 5 of every decade, in plain numbers (0.2, 0.5, 1), so values read off.
            axes.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axes.yaxis.set_major_formatter(plain)
            axes.yaxis.set_minor_locator(LogLocator(base=10, subs=tuple(float(sub) for sub in range(1, 10))))
            axes.yaxis.set_minor_formatter(NullFormatter())
        axes.set_title(panel.quantity + (" (log scale)" if panel.log_scale else ""), fontsize=10)
        axes.set_ylabel(panel.y_label, fontsize=8)
        axes.set_xlabel(axis + ("  (dotted: end of an epoch)" if boundaries and axis == "step" else ""), fontsize=8)
        axes.tick_params(labelsize=8)
        axes.grid(alpha=0.3, which="both")
        axes.legend(fontsize=7, loc="best")


def plot_metrics(history: Sequence[Mapping[str, Any]], path: Path, *, title: str) -> list[str]:
    """Draw the learning curves of history into the image at path (format from its suffix); the panels drawn."""
    drawn = learning_curves_figure(history, title=title)
    if drawn is None:
        return []
    figure, panels = drawn
    import matplotlib.pyplot as pyplot

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
    finally:
        pyplot.close(figure)
    return [panel.quantity for panel in panels]
