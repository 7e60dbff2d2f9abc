"""``trainrun models``: the versions of registered models, and ``trainrun models download`` of one.

Over ``trainrun.Client.models`` / ``Client.download_model`` (which find the registry: see
``trainrun.client.models``); drawing is a rich table in kubectl's style, ``-o json|yaml`` prints the
versions as data.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from trainrun.cli.common import (
    ConfigOption,
    LocalOption,
    OutputFormat,
    OutputOption,
    add_command,
    client_for,
    dump_yaml,
    fail,
)

METRICS_SHOWN = 3


def register(app: typer.Typer) -> None:
    """Add the verbs of this module to the CLI."""
    add_command(app, "models", models_command)


def models_command(
    context: typer.Context,
    words: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[NAME] | download NAME[:VERSION] DIR",
            help="A model's versions (every model's without NAME); or download one version (the latest without :VERSION).",
        ),
    ] = None,
    registry: Annotated[
        str | None, typer.Option("--registry", metavar="KEY", help="A registry of the operator configuration (default: its defaultRegistry).")
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
    config: ConfigOption = None,
    local: LocalOption = False,
) -> None:
    """List registered model versions (REGISTRY NAME VERSION RUN METRICS CREATED), or download one and check
    it against the manifest of the copy it was registered from. The registry: MLFLOW_TRACKING_URI, else the
    operator configuration's (--config FILE, else the cluster's ConfigMap)."""
    # The cluster is asked only for its operator configuration: not when the registry is named otherwise.
    elsewhere = config is not None or (registry is None and bool(os.environ.get("MLFLOW_TRACKING_URI")))
    client = client_for(context, local=local or elsewhere, config=config)
    given = list(words or [])
    if given[:1] == ["download"]:
        if len(given) != 3:
            fail("trainrun models download takes NAME[:VERSION] and DIR, e.g. trainrun models download quickstart:1 ./model")
        version = client.download_model(given[1], given[2], registry=registry)
        print(f"{version['name']}:{version['version']} ({version['source']}) downloaded to {Path(given[2])}, verified against {version['manifest']}")
        return
    if len(given) > 1:
        fail("trainrun models takes at most one NAME (or: download NAME[:VERSION] DIR)")
    versions = client.models(given[0] if given else None, registry=registry)
    if output is OutputFormat.JSON:
        print(json.dumps(versions, indent=2))
    elif output is OutputFormat.YAML:
        print(dump_yaml([versions]))
    elif not versions:
        print(f"No model versions found{f' of {given[0]}' if given else ''}.")
    else:
        from trainrun.cli.views import show

        show(versions_table(versions, now=datetime.now(UTC), wide=output is OutputFormat.WIDE))


def versions_table(versions: list[dict[str, Any]], *, now: datetime, wide: bool = False) -> Any:
    """REGISTRY NAME VERSION RUN METRICS CREATED (and SOURCE with -o wide), kubectl style."""
    from rich.table import Table

    from trainrun.cli.views import age

    headers = ["REGISTRY", "NAME", "VERSION", "RUN", "METRICS", "CREATED"] + (["SOURCE"] if wide else [])
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold")
    for header in headers:
        table.add_column(header, no_wrap=True)
    for version in versions:
        metrics = sorted(version["metrics"].items())
        shown = " ".join(f"{key}={value}" for key, value in metrics[:METRICS_SHOWN]) + (" ..." if len(metrics) > METRICS_SHOWN else "")
        row = [version["registry"], version["name"], version["version"], version["run"] or "-", shown or "-", age(version["created"], now=now)]
        table.add_row(*row, *([version["source"]] if wide else []))
    return table
