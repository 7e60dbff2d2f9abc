"""``trainrun run`` and ``trainrun submit``: start TrainingRuns, on this machine or on the cluster.

``run FILE --local`` trains here in the foreground (Ctrl-C cancels, exit code 130); ``run FILE``
submits to the cluster and follows the run; ``--detach`` returns at once. ``submit FILE`` creates every
TrainingRun of the file. All of it goes through ``trainrun.Client``.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from trainrun.cli.common import (
    CodeLimitOption,
    CodeOption,
    CodeUriOption,
    ConfigOption,
    FileArgument,
    LocalOption,
    NamespaceOption,
    RunsDirOption,
    SetOption,
    add_command,
    again,
    client_for,
)


def register(app: typer.Typer) -> None:
    """Add the verbs of this module to the CLI."""
    add_command(app, "run", run_command)
    add_command(app, "submit", submit_command)


def run_command(
    context: typer.Context,
    file: FileArgument,
    local: Annotated[
        bool, typer.Option("--local", help="Run the replicas as processes on this machine (no cluster).")
    ] = False,
    follow: Annotated[
        bool, typer.Option("--follow/--detach", help="Follow the run to its end, or return once it started.")
    ] = True,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Show only phases and metrics, not the replicas' lines.")
    ] = False,
    config: ConfigOption = None,
    runs_dir: RunsDirOption = None,
    namespace: NamespaceOption = None,
    code: CodeOption = None,
    code_uri: CodeUriOption = None,
    code_limit_mb: CodeLimitOption = 300,
    overrides: SetOption = None,
) -> None:
    """Run a TrainingRun and follow it: --local on this machine, else on the cluster.

    Exit code: 0 Completed, 1 Failed, 130 Cancelled (Ctrl-C).
    """
    from trainrun.client.documents import single_training_run
    from trainrun.metrics.observer import exit_code

    document = single_training_run(file, overrides or ())  # a broken file is named before any cluster is asked
    client = client_for(context, local=local, runs_dir=runs_dir, config=config, namespace=namespace)
    name = str((document.get("metadata") or {}).get("name"))
    if not follow:
        created = client.create(document, code=code, code_uri=code_uri, code_limit_bytes=code_limit_mb * 1000 * 1000)
        _print_created(created, local=local)
        return
    from trainrun.cli.display import RunDisplay
    from trainrun.client import run_dir_of, status_of

    try:
        with RunDisplay(name=name, quiet=quiet) as display:
            finished = client.run(
                document, observer=display, code=code, code_uri=code_uri, code_limit_bytes=code_limit_mb * 1000 * 1000
            )
    except KeyboardInterrupt:
        # Only the cluster follow gets here: locally, SIGINT cancels the run and the runner returns.
        cancel = again(context, "cancel", name, local=False, namespace=namespace)
        print(f"stopped following; {name} goes on ({cancel} stops it)")
        raise typer.Exit(130) from None
    status = status_of(finished)
    if local:
        print(f"run folder: {run_dir_of(finished)}")
    if status.artifacts is not None:
        print(
            f"artifacts: {status.artifacts.uri} ({status.artifacts.file_count} files, {status.artifacts.bytes} bytes)"
        )
    raise typer.Exit(exit_code(status.phase))


def submit_command(
    context: typer.Context,
    file: FileArgument,
    namespace: NamespaceOption = None,
    local: LocalOption = False,
    config: ConfigOption = None,
    runs_dir: RunsDirOption = None,
    code: CodeOption = None,
    code_uri: CodeUriOption = None,
    code_limit_mb: CodeLimitOption = 300,
    overrides: SetOption = None,
) -> None:
    """Create every TrainingRun of FILE and return (the operator, or a local runner, takes over)."""
    client = client_for(context, local=local, runs_dir=runs_dir, config=config, namespace=namespace)
    for document in client.validate(file, overrides or ()):
        _print_created(
            client.create(document, code=code, code_uri=code_uri, code_limit_bytes=code_limit_mb * 1000 * 1000),
            local=local,
        )


def _print_created(run: dict[str, Any], *, local: bool) -> None:
    from trainrun.client import run_dir_of

    metadata = run["metadata"]
    where = f" in {run_dir_of(run)}" if local else ""
    print(f"trainingrun.trainrun.dev/{metadata['name']} created{where}")
