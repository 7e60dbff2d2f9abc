"""``trainrun logs`` and ``trainrun metrics``: what the replicas wrote and the numbers read from it.

Fetches through ``trainrun.Client`` (pod logs on a cluster, log files of the run folder locally); ``logs``
shows metric and progress lines in words (``trainrun.cli.lines``) unless ``--raw``;
``metrics --plot`` draws the history with ``trainrun.cli.plots``; ``metrics sweep NAME [--plot]`` a sweep's
trials (``trainrun.cli.sweepplots``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from trainrun.cli.common import (
    LocalOption,
    NameArgument,
    NamespaceOption,
    RunsDirOption,
    add_command,
    client_for,
    fail,
)
from trainrun.cli.sweeps import SWEEP_KINDS


def register(app: typer.Typer) -> None:
    """Add the verbs of this module to the CLI."""
    add_command(app, "logs", logs_command)
    add_command(app, "metrics", metrics_command)


def logs_command(
    context: typer.Context,
    name: NameArgument,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until the run ends.")] = False,
    replica: Annotated[
        str,
        typer.Option(
            "--replica", "-r", metavar="REPLICA", help="master-0, worker-0, worker-1, ... or all (each line prefixed)."
        ),
    ] = "all",
    tail: Annotated[
        int | None, typer.Option("--tail", min=0, metavar="N", help="Start at the last N lines of each replica's log.")
    ] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="The lines exactly as written (metric and progress lines as JSON).")
    ] = False,
    namespace: NamespaceOption = None,
    local: LocalOption = False,
    runs_dir: RunsDirOption = None,
) -> None:
    """Print the replicas' log lines (all of them, each prefixed with its replica, or one replica's), metric
    and progress lines in words as trainrun run shows them (--raw: as written)."""
    from trainrun.cli.lines import readable_line

    client = client_for(context, local=local, runs_dir=runs_dir, namespace=namespace)
    prefixed = replica == "all"
    try:
        for source, line in client.logs(name, follow=follow, replica=None if prefixed else replica, tail=tail):
            shown = line if raw else readable_line(line)
            print(f"[{source}] {shown}" if prefixed else shown, flush=follow)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def metrics_command(
    context: typer.Context,
    name: NameArgument,
    sweep: Annotated[str | None, typer.Argument(metavar="[SWEEP]", help="After sweep: the sweep's name.")] = None,
    history: Annotated[bool, typer.Option("--history", help="Every metric line, not only the latest values.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (latest, key and history).")] = False,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            metavar="FILE",
            help="Also draw the learning curves into this image (PNG, SVG or PDF; needs matplotlib).",
        ),
    ] = None,
    namespace: NamespaceOption = None,
    local: LocalOption = False,
    runs_dir: RunsDirOption = None,
) -> None:
    """The run's metrics: the latest value of each, or (--history) every metric line. `metrics sweep NAME`: the
    sweep's trials, best first; with --plot, every trial's objective by epoch and each parameter against it."""
    client = client_for(context, local=local, runs_dir=runs_dir, namespace=namespace)
    if name in SWEEP_KINDS:
        if sweep is None:
            fail(f"metrics {name} needs the sweep's name: trainrun metrics sweep NAME")
        sweep_metrics(client.get_sweep(sweep), client.trials(sweep), plot=plot)
        return
    if sweep is not None:
        fail(f"metrics takes one run's name; for a sweep: trainrun metrics sweep {sweep}")
    metrics = client.metrics(name)
    if plot is not None:
        from trainrun.cli.plots import plot_metrics

        drawn = plot_metrics(metrics["history"], plot, title=name)
        if not drawn:
            fail(f"{name} has no metric history to plot yet")
        print(f"wrote {plot} ({', '.join(drawn)})", file=sys.stderr)
    if as_json:
        print(json.dumps(metrics, indent=2))
        return
    from trainrun.cli.views import history_table, metrics_table, show

    if history:
        show(history_table(metrics["history"]))
    elif metrics["latest"]:
        show(metrics_table(metrics["latest"]))
    else:
        print(f"{name} has reported no metrics yet.")


def sweep_metrics(sweep: dict[str, Any], trials: list[dict[str, Any]], *, plot: Path | None) -> None:
    """A sweep's trials, best first; drawn into the image at plot when given."""
    from trainrun.cli.sweepviews import trials_table
    from trainrun.cli.views import show
    from trainrun.spec.sweepstatus import TrainingSweepStatus

    name = str(sweep["metadata"]["name"])
    if plot is not None:
        from trainrun.cli.sweepplots import plot_sweep

        drawn = plot_sweep(sweep, trials, plot)
        if not drawn:
            fail(f"sweep {name} has no trial with values to plot yet")
        print(f"wrote {plot} ({', '.join(drawn)})", file=sys.stderr)
    status = TrainingSweepStatus.model_validate(sweep.get("status") or {})
    maximize = ((sweep.get("spec") or {}).get("objective") or {}).get("goal") == "maximize"
    show(trials_table(status.trials, maximize=maximize))
