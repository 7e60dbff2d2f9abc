"""``trainrun logs`` and ``trainrun metrics``: what the replicas wrote and the numbers read from it.

Fetches through ``trainrun.Client`` (pod logs on a cluster, log files of the run folder locally); ``logs``
shows metric and progress lines in words (``trainrun.cli.lines``) unless ``--raw``;
``metrics --plot`` draws the history with ``trainrun.cli.plots``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

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
    """The run's metrics: the latest value of each, or (--history) every metric line."""
    client = client_for(context, local=local, runs_dir=runs_dir, namespace=namespace)
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
