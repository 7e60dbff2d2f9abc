"""``trainrun get`` (alias ``list``) and ``trainrun describe``: what runs and sweeps there are and how they stand.

Fetches through ``trainrun.Client`` and draws with ``trainrun.cli.views`` (``trainrun.cli.sweepviews`` for
sweeps: ``get trs [NAME]``, ``describe sweep NAME``, as kubectl names a kind first); ``-o yaml|json`` prints
the objects themselves, ``-o wide`` adds columns, ``-A`` lists every namespace.
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
    fail,
)
from trainrun.cli.sweeps import SWEEP_KINDS


def register(app: typer.Typer) -> None:
    """Add the verbs of this module to the CLI."""
    add_command(app, "get", get_command)
    add_command(app, "list", list_command)
    add_command(app, "describe", describe_command)


def get_command(
    context: typer.Context,
    name: Annotated[
        str | None, typer.Argument(metavar="NAME", help="One run; all runs when left out; trs: the sweeps.")
    ] = None,
    sweep: Annotated[str | None, typer.Argument(metavar="[SWEEP]", help="After trs: one sweep.")] = None,
    output: OutputOption = OutputFormat.TABLE,
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A", help="Runs of every namespace.")] = False,
    namespace: NamespaceOption = None,
    local: LocalOption = False,
    runs_dir: RunsDirOption = None,
) -> None:
    """Show runs as a table (NAME PHASE POOL WORKERS GPUS METRIC AGE), or as YAML/JSON; `get trs` shows the
    sweeps (NAME PHASE TRIALS BEST PROGRESS AGE)."""
    if sweep is not None and name not in SWEEP_KINDS:
        fail(f"get takes one run's name; for a sweep: trainrun get trs {sweep}")
    client = client_for(context, local=local, runs_dir=runs_dir, namespace=namespace)
    if name in SWEEP_KINDS:
        sweeps = [client.get_sweep(sweep)] if sweep is not None else client.list_sweeps(all_namespaces=all_namespaces)
        if not sweeps and output in (OutputFormat.TABLE, OutputFormat.WIDE):
            print(f"No TrainingSweeps found {client.where(all_namespaces=all_namespaces)}.")
            return
        if output in (OutputFormat.YAML, OutputFormat.JSON):
            show_objects(sweeps, output=output, single=sweep is not None)
            return
        from trainrun.cli.sweepviews import sweeps_table
        from trainrun.cli.views import show

        show(sweeps_table(sweeps, with_namespace=all_namespaces))
        return
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
        show_objects(runs, output=output, single=single)
        return
    from trainrun.cli.views import runs_table, show

    show(runs_table(runs, wide=output is OutputFormat.WIDE, with_namespace=with_namespace))


def show_objects(objects: list[dict[str, Any]], *, output: OutputFormat, single: bool) -> None:
    """Print objects as YAML or JSON: the one, or a List of them."""
    document: Any = objects[0] if single else {"apiVersion": "v1", "kind": "List", "items": objects}
    print(dump_yaml([document]) if output is OutputFormat.YAML else json.dumps(document, indent=2))


def describe_command(
    context: typer.Context,
    name: NameArgument,
    sweep: Annotated[str | None, typer.Argument(metavar="[SWEEP]", help="After sweep: the sweep's name.")] = None,
    namespace: NamespaceOption = None,
    local: LocalOption = False,
    runs_dir: RunsDirOption = None,
) -> None:
    """Phase, conditions, replicas, metrics, artifacts and recent events of one run; `describe sweep NAME`:
    a sweep's state, its best trial and its trials, best first."""
    from trainrun.cli.views import describe, show
    from trainrun.client import run_dir_of

    if sweep is not None and name not in SWEEP_KINDS:
        fail(f"describe takes one run's name; for a sweep: trainrun describe sweep {sweep}")
    client = client_for(context, local=local, runs_dir=runs_dir, namespace=namespace)
    if name in SWEEP_KINDS:
        if sweep is None:
            fail(f"describe {name} needs the sweep's name: trainrun describe sweep NAME")
        from trainrun.cli.sweepviews import describe_sweep

        show(describe_sweep(client.get_sweep(sweep)))
        return
    run = client.get(name)
    show(describe(run, events=client.events(name), run_dir=run_dir_of(run)))
