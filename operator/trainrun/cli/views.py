"""How runs look on the terminal: the ``get`` table, ``describe``, and ``metrics``, from run objects.

Pure presentation: every function takes objects that a ``trainrun.Client`` returned (the same shape
for cluster and local runs) and builds rich renderables; fetching stays in the verb modules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from trainrun.base.redact import redact, redact_optional
from trainrun.client import run_label
from trainrun.spec.status import TrainingRunStatus

Object = dict[str, Any]


class _PipeConsole(Console):
    """A console whose closed pipe is a ``BrokenPipeError`` for the verb to handle (rich's own exits 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def show(renderable: RenderableType) -> None:
    """Print without cutting lines to the terminal's width: like kubectl, long rows just wrap."""
    natural = Console(width=100_000).measure(renderable).maximum
    _PipeConsole(highlight=False, width=max(natural, 80)).print(renderable)


def run_row(run: Object, *, wide: bool, with_namespace: bool, now: datetime) -> list[str]:
    """One line of ``trainrun get``: NAME PHASE POOL WORKERS GPUS METRIC PROGRESS ETA AGE (and more with -o wide).

    A local run is named by its run folder (``quickstart-20261130-051800``): two runs of one name are two
    rows that say which is which, and the name is one every ``--local`` verb takes."""
    metadata = run.get("metadata") or {}
    spec = run.get("spec") or {}
    status = TrainingRunStatus.model_validate(run.get("status") or {})
    resources = spec.get("resources") or {}
    distribution = spec.get("distribution") or {}
    workers = int(distribution.get("workers", 1))
    gpus = int(resources.get("gpus", 0))
    row = [
        run_label(run),
        str(status.phase or "Pending"),
        status.pool or str(resources.get("pool") or "-"),
        str(workers),
        str(gpus),  # per replica, as the GPUS column of `kubectl get tr`
        status.key_metric or "-",
        (status.progress.summary if status.progress else None) or "-",
        remaining(eta_of(status), now=now),
        age(metadata.get("creationTimestamp"), now=now),
    ]
    if with_namespace:
        row.insert(0, str(metadata.get("namespace", "default")))
    if wide:
        nproc = distribution.get("nprocPerNode")
        model = f"{status.model.name}:{status.model.version}" if status.model is not None else "-"
        row.extend([str(nproc or max(gpus, 1)), str(spec.get("image", "")), model, status.message or ""])
    return row


def runs_table(runs: Sequence[Object], *, wide: bool = False, with_namespace: bool = False) -> Table:
    """The table of ``trainrun get`` / ``trainrun list``, kubectl style (no borders)."""
    headers = ["NAME", "PHASE", "POOL", "WORKERS", "GPUS", "METRIC", "PROGRESS", "ETA", "AGE"]
    if with_namespace:
        headers.insert(0, "NAMESPACE")
    if wide:
        headers.extend(["NPROC", "IMAGE", "MODEL", "MESSAGE"])
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold")
    for header in headers:
        table.add_column(header, no_wrap=header != "MESSAGE")
    now = datetime.now(UTC)
    for run in runs:
        table.add_row(*run_row(run, wide=wide, with_namespace=with_namespace, now=now))
    return table


def eta_of(status: TrainingRunStatus) -> str | None:
    """When the run should end, while it has not: a finished run has no ETA, though its status may still
    hold the last estimate made while it trained."""
    if status.progress is None or (status.phase is not None and status.phase.finished):
        return None
    return status.progress.eta


def age(timestamp: object, *, now: datetime) -> str:
    """``45s``, ``12m``, ``3h``, ``2d``, as kubectl shows ages."""
    moment = _moment(timestamp)
    return "-" if moment is None else duration((now - moment).total_seconds())


def remaining(eta: object, *, now: datetime) -> str:
    """The ETA column: how long until the estimated end (``12m``), ``-`` without an estimate."""
    moment = _moment(eta)
    return "-" if moment is None else duration((moment - now).total_seconds())


def _moment(timestamp: object) -> datetime | None:
    if not isinstance(timestamp, str):
        return None
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return None


def duration(total: float) -> str:
    """``45s``, ``12m``, ``3h``, ``2d`` (a negative one is ``0s``)."""
    seconds = max(int(total), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def describe(run: Object, *, events: Sequence[Object], run_dir: str | None) -> RenderableType:
    """``trainrun describe``: what the run is, where it stands, why, its numbers and where its results are."""
    metadata = run.get("metadata") or {}
    spec = run.get("spec") or {}
    status = TrainingRunStatus.model_validate(run.get("status") or {})
    resources = spec.get("resources") or {}
    distribution = spec.get("distribution") or {}
    fields: list[tuple[str, object]] = [
        ("Name", metadata.get("name")),
        ("Namespace", metadata.get("namespace", "default")),
        ("Created", metadata.get("creationTimestamp")),
        ("Phase", status.phase or "Pending"),
        ("Reason", status.reason),
        ("Message", redact_optional(status.message)),
        ("Image", spec.get("image")),
        ("Pool", status.pool or resources.get("pool")),
        ("Workers", distribution.get("workers", 1)),
        ("GPUs per replica", resources.get("gpus", 0)),
        ("Processes per replica", distribution.get("nprocPerNode")),
        ("Job", status.job_name),
        ("Started", status.start_time),
        ("Finished", status.completion_time),
        *progress_fields(status),
        ("Run folder", run_dir),
    ]
    parts: list[RenderableType] = [fields_table(fields)]
    if status.conditions:
        conditions = Table("TYPE", "STATUS", "REASON", "MESSAGE", box=None, header_style="bold", title_justify="left")
        for condition in status.conditions:
            conditions.add_row(condition.type, condition.status, condition.reason, redact_optional(condition.message))
        parts.extend([Text("\nConditions:", style="bold"), conditions])
    if status.replicas:
        replicas = Table("TYPE", "ACTIVE", "SUCCEEDED", "FAILED", box=None, header_style="bold")
        for kind, counts in status.replicas.items():
            replicas.add_row(kind, str(counts.active), str(counts.succeeded), str(counts.failed))
        parts.extend([Text("\nReplicas:", style="bold"), replicas])
    if status.metrics:
        parts.extend([Text("\nMetrics:", style="bold"), metrics_table(status.metrics)])
    if status.restarts:
        restarts = Table("TIME", "CAUSE", "MESSAGE", box=None, header_style="bold")
        for item in status.restarts:
            restarts.add_row(item.time, item.cause, redact(item.message))
        parts.extend([Text("\nRestarts:", style="bold"), restarts])
    if status.artifacts is not None:
        artifacts = status.artifacts
        parts.extend(
            [
                Text("\nArtifacts:", style="bold"),
                fields_table(
                    [
                        ("URI", artifacts.uri),
                        ("Manifest", artifacts.manifest_uri),
                        ("Files", artifacts.file_count),
                        ("Bytes", artifacts.bytes),
                    ]
                ),
            ]
        )
    if events:
        table = Table("LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE", box=None, header_style="bold")
        for event in events[-10:]:
            involved = event.get("involvedObject") or {}
            table.add_row(
                str(event.get("lastTimestamp") or event.get("eventTime") or ""),
                str(event.get("type", "")),
                str(event.get("reason", "")),
                f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
                redact(str(event.get("message", ""))),
            )
        parts.extend([Text("\nEvents:", style="bold"), table])
    return Group(*parts)


def progress_fields(status: TrainingRunStatus) -> list[tuple[str, object]]:
    """Progress: 42% (step 420 of 1000, epoch 2 of 5); Pace; ETA; Last step: for ``describe``."""
    progress = status.progress
    if progress is None:
        return []
    where = [
        f"{name} {value}" + (f" of {total}" if total else "")
        for name, value, total in (("step", progress.step, progress.total_steps), ("epoch", progress.epoch, progress.epochs))
        if value is not None
    ]
    pace = [
        text
        for text in (
            f"{progress.steps_per_second:.3g} steps/s" if progress.steps_per_second else None,
            f"{progress.samples_per_second:,.0f} samples/s" if progress.samples_per_second else None,
        )
        if text
    ]
    return [
        ("Progress", f"{progress.summary} ({', '.join(where)})" if where else progress.summary),
        ("Pace", ", ".join(pace) or None),
        ("ETA", eta_of(status)),
        ("Last step", progress.last_step_time),
    ]


def metrics_table(latest: Mapping[str, float]) -> Table:
    """Latest value of every metric."""
    table = Table("METRIC", "VALUE", box=None, header_style="bold")
    for name in sorted(latest):
        table.add_row(name, f"{latest[name]:.6g}")
    return table


def history_table(history: Sequence[Mapping[str, Any]]) -> Table:
    """Every metric record: position columns first, then one column per metric name."""
    positions = [key for key in ("epoch", "step") if any(key in record for record in history)]
    names = sorted({key for record in history for key in record} - {"epoch", "step", "time", "replica"})
    table = Table(*[key.upper() for key in positions], *names, box=None, header_style="bold")
    for record in history:
        cells = [str(record.get(key, "")) for key in positions]
        cells.extend(cell(record.get(name)) for name in names)
        table.add_row(*cells)
    return table


def cell(value: object) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def fields_table(fields: Sequence[tuple[str, object]]) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for label, value in fields:
        if value is not None and value != "":
            table.add_row(f"{label}:", redact(str(value)))
    return table
