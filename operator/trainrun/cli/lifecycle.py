"""``trainrun cancel``, ``trainrun delete`` and ``trainrun wait``: change or await a run's state.

``wait NAME --for Completed --timeout 10m`` exits 0 when the phase is reached, 1 when the run finished
in another phase, 2 on timeout, so scripts and CI can branch on it.
"""

from __future__ import annotations

import re
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

WAIT_TIMEOUT_EXIT = 2
DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def register(app: typer.Typer) -> None:
    """Add the verbs of this module to the CLI."""
    add_command(app, "cancel", cancel_command)
    add_command(app, "delete", delete_command)
    add_command(app, "wait", wait_command)


def cancel_command(
    context: typer.Context,
    name: NameArgument,
    namespace: NamespaceOption = None,
    local: LocalOption = False,
    runs_dir: RunsDirOption = None,
) -> None:
    """Stop a run for good: replicas stop, logs are kept, the phase becomes Cancelled."""
    client_for(context, local=local, runs_dir=runs_dir, namespace=namespace).cancel(name)
    print(f"trainingrun.trainrun.dev/{name} cancel requested")


def delete_command(
    context: typer.Context,
    name: NameArgument,
    namespace: NamespaceOption = None,
    local: LocalOption = False,
    runs_dir: RunsDirOption = None,
) -> None:
    """Delete a run and what it made (on a cluster: its PyTorchJob and pods; locally: its run folder)."""
    if not client_for(context, local=local, runs_dir=runs_dir, namespace=namespace).delete(name):
        fail(f"trainingrun {name!r} not found")
    print(f"trainingrun.trainrun.dev/{name} deleted")


def wait_command(
    context: typer.Context,
    name: NameArgument,
    phase: Annotated[
        str, typer.Option("--for", metavar="PHASE", help="Phase to wait for: Completed, Running, Failed, ...")
    ] = "Completed",
    timeout: Annotated[
        str | None, typer.Option("--timeout", metavar="DURATION", help="Give up after this long: 90s, 10m, 1h30m.")
    ] = None,
    namespace: NamespaceOption = None,
    local: LocalOption = False,
    runs_dir: RunsDirOption = None,
) -> None:
    """Wait for a phase. Exit code 0 reached, 1 finished in another phase, 2 timed out."""
    from trainrun.client import status_of
    from trainrun.client.errors import WaitTimeout
    from trainrun.spec.status import Phase

    try:
        wanted = Phase(phase.capitalize())
    except ValueError:
        fail(f"--for {phase!r} is not a phase; use one of {', '.join(item.value for item in Phase)}")
    seconds = parse_duration(timeout) if timeout is not None else None
    client = client_for(context, local=local, runs_dir=runs_dir, namespace=namespace)
    try:
        run = client.wait(name, phases=(wanted,), timeout=seconds)
    except WaitTimeout as error:
        fail(str(error), code=WAIT_TIMEOUT_EXIT)
    reached = status_of(run)
    if reached.phase is wanted:
        print(f"trainingrun.trainrun.dev/{name} {reached.phase}")
        return
    fail(f"{name} finished as {reached.phase}, not {wanted}: {reached.message or reached.reason or ''}".rstrip(": "))


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``1h30m`` -> seconds."""
    match = DURATION.match(text.strip())
    if not text.strip() or match is None:
        fail(f"--timeout {text!r} is not a duration; write it like 90s, 10m or 1h30m")
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)
