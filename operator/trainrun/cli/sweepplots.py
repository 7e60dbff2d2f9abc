"""``trainrun metrics sweep NAME --plot FILE``: a sweep as an image (matplotlib).

Called by ``trainrun.cli.logs`` with the sweep and its trials (TrainingRuns) from ``trainrun.Client``. Two
views a person tunes by: the objective of every trial against its position (epoch or step, as the sweep's
early stopping compares them: ``status.series``), the best trial drawn thick and named, pruned trials dashed
where they were stopped; and for each parameter, its value against the trial's objective (completed trials
filled, pruned ones hollow at their last value, the best one a star), on a logarithmic axis where the values
span more than a decade. :func:`sweep_views` decides all of it (pure); :func:`plot_sweep` only draws it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainrun.cli.plots import LOG_SCALE_SPAN, PlotUnavailable, panel_layout
from trainrun.spec.annotations import PARAMETERS_ANNOTATION, PRUNED_ANNOTATION
from trainrun.spec.sweepstatus import TrainingSweepStatus
from trainrun.sweep.trials import positions


@dataclass(frozen=True)
class TrialCurve:
    """One trial's objective by position."""

    name: str
    xs: list[int]
    ys: list[float]
    best: bool = False
    pruned: bool = False


@dataclass(frozen=True)
class ParameterPoint:
    value: float | str
    objective: float
    best: bool = False
    pruned: bool = False


@dataclass
class ParameterView:
    """One parameter's values against the objective."""

    name: str
    points: list[ParameterPoint] = field(default_factory=list)

    @property
    def numeric(self) -> bool:
        return all(isinstance(point.value, (int, float)) and not isinstance(point.value, bool) for point in self.points)

    @property
    def log_scale(self) -> bool:
        values = [float(point.value) for point in self.points] if self.numeric else []
        return bool(values) and min(values) > 0 and max(values) / min(values) > LOG_SCALE_SPAN


@dataclass(frozen=True)
class SweepViews:
    metric: str
    by: str
    curves: list[TrialCurve]
    parameters: list[ParameterView]

    @property
    def log_scale(self) -> bool:
        values = [value for curve in self.curves for value in curve.ys]
        return bool(values) and min(values) > 0 and max(values) / min(values) > LOG_SCALE_SPAN


def sweep_views(sweep: Mapping[str, Any], trials: Sequence[Mapping[str, Any]]) -> SweepViews:
    """The curves and parameter views of a sweep's trials (trials that reported nothing are left out)."""
    spec = sweep.get("spec") or {}
    metric = str((spec.get("objective") or {}).get("metric"))
    by = str((spec.get("earlyStopping") or {}).get("by", "epoch"))
    status = TrainingSweepStatus.model_validate(sweep.get("status") or {})
    best = status.best.trial if status.best is not None else None
    curves: list[TrialCurve] = []
    parameters: dict[str, ParameterView] = {name: ParameterView(name) for name in spec.get("parameters") or {}}
    for trial in sorted(trials, key=lambda item: str(item["metadata"]["name"])):
        metadata, run_status = trial.get("metadata") or {}, trial.get("status") or {}
        name = str(metadata.get("name"))
        annotations = metadata.get("annotations") or {}
        pruned = PRUNED_ANNOTATION in annotations
        by_position = positions(run_status.get("series"), metric=metric, by=by)
        if by_position:
            xs = sorted(by_position)
            curves.append(TrialCurve(name, xs, [by_position[x] for x in xs], best=name == best, pruned=pruned))
        reported = (run_status.get("metrics") or {}).get(metric)
        objective = by_position[max(by_position)] if pruned and by_position else reported
        if not isinstance(objective, (int, float)) or not (pruned or run_status.get("phase") == "Completed"):
            continue
        for key, value in json.loads(annotations.get(PARAMETERS_ANNOTATION) or "{}").items():
            if key in parameters:
                parameters[key].points.append(ParameterPoint(value, float(objective), best=name == best, pruned=pruned))
    return SweepViews(metric, by, curves, [view for view in parameters.values() if view.points])


def plot_sweep(sweep: Mapping[str, Any], trials: Sequence[Mapping[str, Any]], path: Path) -> list[str]:
    """Draw the sweep into the image at path (format from its suffix); the panels drawn ([]: nothing to draw)."""
    views = sweep_views(sweep, trials)
    if not views.curves and not views.parameters:
        return []
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as pyplot
        from matplotlib.ticker import MaxNLocator
    except ImportError as error:
        raise PlotUnavailable("--plot needs matplotlib: pip install 'trainrun[plot]'") from error
    titles = [f"{views.metric} by {views.by}", *(f"{view.name} vs {views.metric}" for view in views.parameters)]
    rows, width, cells = panel_layout(len(titles))
    figure = pyplot.figure(figsize=(5.0 * (width // cells[0].span), 3.6 * rows))
    try:
        grid = figure.add_gridspec(rows, width)
        axes = [figure.add_subplot(grid[cell.row, cell.column : cell.column + cell.span]) for cell in cells]
        for curve in views.curves:
            axes[0].plot(curve.xs, curve.ys, linestyle="--" if curve.pruned else "-", marker="o", markersize=3,
                         color="tab:red" if curve.best else "grey", linewidth=2.4 if curve.best else 0.9,
                         alpha=1.0 if curve.best else 0.7, zorder=3 if curve.best else 2,
                         label=f"{curve.name} (best)" if curve.best else None)
        for view, panel in zip(views.parameters, axes[1:], strict=True):
            for point in view.points:
                x = point.value if view.numeric else str(point.value)
                if point.best:
                    panel.scatter([x], [point.objective], marker="*", s=160, color="tab:red", zorder=3, label="best")
                else:
                    panel.scatter([x], [point.objective], s=30, edgecolors="tab:blue",
                                  facecolors="none" if point.pruned else "tab:blue")
            if view.log_scale:
                panel.set_xscale("log")
            panel.set_xlabel(view.name, fontsize=8)
        for panel, title in zip(axes, titles, strict=True):
            if views.log_scale:
                panel.set_yscale("log")
            panel.set_title(title, fontsize=10)
            panel.set_ylabel(views.metric, fontsize=8)
            panel.tick_params(labelsize=8)
            panel.grid(alpha=0.3, which="both")
        axes[0].set_xlabel(views.by + "  (dashed: pruned)", fontsize=8)
        axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs and steps are whole
        if any(curve.best for curve in views.curves):
            axes[0].legend(fontsize=7, loc="best")
        figure.suptitle(str((sweep.get("metadata") or {}).get("name")))
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
    finally:
        pyplot.close(figure)
    return titles
