"""The ``trainrun`` command: typer app, global options, verb registration, one-line errors.

``trainrun = "trainrun.cli.main:run"`` is the console script. Each verb group lives in its own module
(``runs``, ``get``, ``logs``, ``lifecycle``, ``manifests``, and the storage verbs of ``transfer``) and
sits on ``trainrun.Client``. Any error is printed as one line on stderr with exit code 1
(``TRAINRUN_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

from typing import Annotated

import typer

from trainrun.cli import get, lifecycle, logs, manifests, runs
from trainrun.cli.common import GlobalOptions, add_command

app = typer.Typer(
    name="trainrun",
    help="Run PyTorch training as TrainingRuns: on a Kubernetes cluster (Kubeflow PyTorchJob) or locally (--local).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def main(
    context: typer.Context,
    kubeconfig: Annotated[
        str | None, typer.Option("--kubeconfig", envvar="KUBECONFIG", help="Path of the kubeconfig file.")
    ] = None,
    kube_context: Annotated[str | None, typer.Option("--context", help="kubeconfig context to use.")] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Namespace of the runs (default: default).")
    ] = None,
) -> None:
    """Options that apply to every verb."""
    context.obj = GlobalOptions(kubeconfig=kubeconfig, context=kube_context, namespace=namespace)


for module in (runs, get, logs, lifecycle, manifests):
    module.register(app)


def _register_storage_verbs() -> None:
    """``upload``, ``download`` and ``artifacts`` come from trainrun.cli.transfer (storage helpers);
    say so if absent."""
    try:
        from trainrun.cli import transfer
    except ImportError as error:
        missing = str(error)

        def unavailable() -> None:
            """Not available: trainrun.cli.transfer could not be imported."""
            raise RuntimeError(f"the storage verbs are not available: {missing}")

        add_command(app, "upload", unavailable, hidden=True)
        add_command(app, "download", unavailable, hidden=True)
        add_command(app, "artifacts", unavailable, hidden=True)

        return
    transfer.register(app)


_register_storage_verbs()


def run() -> None:
    """Console-script entry point."""
    app()
