"""How sweeps look on the terminal: the ``get trs`` table, ``describe sweep`` (its trials, best first) and the
lines ``trainrun sweep`` prints as the study goes, from sweep objects and plans.

Pure presentation, beside ``trainrun.cli.views`` (the runs'): fetching stays in ``trainrun.cli.sweeps``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from trainrun.base.redact import redact_optional
from trainrun.cli.views import age, cell, fields_table
from trainrun.spec.sweepstatus import TrainingSweepStatus, TrialState, TrialSummary

Object = dict[str, Any]


def sweeps_table(sweeps: Sequence[Object], *, with_namespace: bool = False) -> Table:
    """``trainrun get trs``: NAME PHASE TRIALS BEST PROGRESS AGE, as ``kubectl get trs``."""
    headers = ["NAME", "PHASE", "TRIALS", "BEST", "PROGRESS", "AGE"]
    if with_namespace:
        headers.insert(0, "NAMESPACE")
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold")
    for header in headers:
        table.add_column(header, no_wrap=True)
    now = datetime.now(UTC)
    for sweep in sweeps:
        metadata = sweep.get("metadata") or {}
        status = TrainingSweepStatus.model_validate(sweep.get("status") or {})
        row = [
            str(metadata.get("name")),
            str(status.phase or "Pending"),
            status.trials_summary or "-",
            status.best_summary or "-",
            status.progress or "-",
            age(metadata.get("creationTimestamp"), now=now),
        ]
        if with_namespace:
            row.insert(0, str(metadata.get("namespace", "default")))
        table.add_row(*row)
    return table


def trials_table(trials: Sequence[TrialSummary], *, maximize: bool) -> Table:
    """The trials, best first: completed by value, then pruned, running, failed and cancelled ones."""
    order = [TrialState.COMPLETED, TrialState.PRUNED, TrialState.RUNNING, TrialState.FAILED, TrialState.CANCELLED]
    sign = -1.0 if maximize else 1.0

    def rank(trial: TrialSummary) -> tuple[int, float, int]:
        return order.index(trial.state), sign * (trial.value if trial.value is not None else 0.0), trial.number

    names = sorted({name for trial in trials for name in trial.parameters})
    table = Table("TRIAL", "STATE", "VALUE", "AT", *(name.upper() for name in names), "MESSAGE", box=None, header_style="bold")
    for trial in sorted(trials, key=rank):
        table.add_row(
            trial.name,
            str(trial.state),
            cell(trial.value),
            cell(trial.position),
            *(cell(trial.parameters.get(name)) for name in names),
            trial.message or "",
        )
    return table


def describe_sweep(sweep: Object) -> RenderableType:
    """``trainrun describe sweep NAME``: where the sweep stands, its best trial and every trial, best first."""
    metadata = sweep.get("metadata") or {}
    spec = sweep.get("spec") or {}
    objective = spec.get("objective") or {}
    status = TrainingSweepStatus.model_validate(sweep.get("status") or {})
    best = status.best
    model = status.model
    register = spec.get("register") or {}
    registered = (
        f"{model.name} version {model.version} in registry {model.registry}: {model.uri}"
        if model is not None
        else (f"{register.get('name')} (the best trial's, once the sweep is Completed)" if register.get("name") else None)
    )
    fields: list[tuple[str, object]] = [
        ("Name", metadata.get("name")),
        ("Namespace", metadata.get("namespace", "default")),
        ("Created", metadata.get("creationTimestamp")),
        ("Phase", status.phase or "Pending"),
        ("Reason", status.reason),
        ("Message", redact_optional(status.message)),
        ("Objective", f"{objective.get('goal', 'minimize')} {objective.get('metric')}"),
        ("Algorithm", spec.get("algorithm", "tpe")),
        ("Trials", status.trials_summary),
        ("Best", status.best_summary),
        ("Best parameters", ", ".join(f"{key}={value}" for key, value in best.parameters.items()) if best else None),
        ("Model", registered),
        ("Started", status.start_time),
        ("Finished", status.completion_time),
    ]
    parts: list[RenderableType] = [fields_table(fields)]
    if status.trials:
        maximize = objective.get("goal") == "maximize"
        parts.extend([Text("\nTrials (best first):", style="bold"), trials_table(status.trials, maximize=maximize)])
    if status.conditions:
        conditions = Table("TYPE", "STATUS", "REASON", "MESSAGE", box=None, header_style="bold")
        for condition in status.conditions:
            conditions.add_row(condition.type, condition.status, condition.reason, redact_optional(condition.message))
        parts.extend([Text("\nConditions:", style="bold"), conditions])
    return Group(*parts)
