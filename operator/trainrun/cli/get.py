"""``trainrun get`` (alias ``list``) and ``trainrun describe``: what runs there are and how they stand.

Fetches through ``trainrun.Client`` and draws with ``trainrun.cli.views``; ``-o yaml|json`` prints the
objects themselves, ``-o wide`` adds columns, ``-A`` lists every namespace.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from trainrun.cli.common import (
    LocalOption,
    NameArgument,
    NamespaceOption,
    OutputFormat,
    OutputOption,
    RunsDirOption,
    add_command,
    client_for,
    dump_yaml,
)


def register(app: typer.Typer) -> None:
    """Add the verbs of this module to the CLI."""
    add_command(app, "get", get_command)
    add_command(app, "list", list_command)
    add_command(app, "describe", describe_command)


def get_command(
    context: typer.Context,
    name: Annotated[str | None, typer.Argument(metavar="NAME", help="One run; all runs when left out.")] = None,
    output: OutputOption = OutputFormat.TABLE,
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A", help="Runs of every namespace.")] = False,
    namespace: NamespaceOption = None,
    local: LocalOption = False,
    runs_dir: RunsDirOption = None,
) -> None:
    """Show runs as a table (NAME PHASE POOL WORKERS GPUS METRIC AGE), or as YAML/JSON."""
    client = client_for(context, local=local, runs_dir=runs_dir, namespace=namespace)
    if name is not None:
        runs = [client.get(name)]
    else:
        runs = client.list(all_namespaces=all_namespaces)
    if not runs and output in (OutputFormat.TABLE, OutputFormat.WIDE):
        print(f"No TrainingRuns found {client.where(all_namespaces=all_namespaces)}.")
        return
    show_runs(runs, output=output, single=name is not None, with_namespace=all_namespaces)


def list_command(
    context: typer.Context,
    output: OutputOption = OutputFormat.TABLE,
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A", help="Runs of every namespace.")] = False,
    namespace: NamespaceOption = None,
    local: LocalOption = False,
    runs_dir: RunsDirOption = None,
) -> None:
    """List runs (same as `trainrun get` without a name)."""
    get_command(
        context, None, output=output, all_namespaces=all_namespaces, namespace=namespace, local=local, runs_dir=runs_dir
    )


def show_runs(runs: list[dict[str, Any]], *, output: OutputFormat, single: bool, with_namespace: bool) -> None:
    """Print runs in the chosen format."""
    if output in (OutputFormat.YAML, OutputFormat.JSON):
        document: Any = runs[0] if single else {"apiVersion": "v1", "kind": "List", "items": runs}
        print(dump_yaml([document]) if output is OutputFormat.YAML else json.dumps(document, indent=2))
        return
    from trainrun.cli.views import runs_table, show

    show(runs_table(runs, wide=output is OutputFormat.WIDE, with_namespace=with_namespace))


def describe_command(
    context: typer.Context,
    name: NameArgument,
    namespace: NamespaceOption = None,
    local: LocalOption = False,
    runs_dir: RunsDirOption = None,
) -> None:
    """Phase, conditions, replicas, metrics, artifacts and recent events of one run."""
    from trainrun.cli.views import describe, show
    from trainrun.client import run_dir_of

    client = client_for(context, local=local, runs_dir=runs_dir, namespace=namespace)
    run = client.get(name)
    show(describe(run, events=client.events(name), run_dir=run_dir_of(run)))
