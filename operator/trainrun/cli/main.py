"""The ``trainrun`` command: typer app, global options, verb registration, one-line errors.

``trainrun = "trainrun.cli.main:run"`` is the console script. Each verb group lives in its own module
(``runs``, ``sweeps``, ``get``, ``logs``, ``lifecycle``, ``manifests``, the storage verbs of ``transfer``, ``models``) and
sits on ``trainrun.Client``. Any error is printed as one line on stderr with exit code 1
(``TRAINRUN_DEBUG=1`` shows the traceback); a usage error (a typo'd verb) is one line too, exit code 2.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from typer._click import exceptions as usage_errors

from trainrun.cli import get, lifecycle, logs, manifests, models, runs, sweeps, transfer
from trainrun.cli.common import GlobalOptions

app = typer.Typer(
    name="trainrun",
    help="Run PyTorch training as TrainingRuns: on a Kubernetes cluster (Kubeflow PyTorchJob) or locally (--local).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Help as click writes it: wrapped to the terminal's width, never cut short; flags with no value shown.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def main(
    context: typer.Context,
    kubeconfig: Annotated[
        str | None,
        typer.Option("--kubeconfig", envvar="KUBECONFIG", metavar="FILE", help="Path of the kubeconfig file."),
    ] = None,
    kube_context: Annotated[
        str | None, typer.Option("--context", metavar="NAME", help="kubeconfig context to use.")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", metavar="NS", help="Namespace of the runs (default: default).")
    ] = None,
) -> None:
    """Options that apply to every verb."""
    context.obj = GlobalOptions(kubeconfig=kubeconfig, context=kube_context, namespace=namespace)


for module in (runs, sweeps, get, logs, lifecycle, manifests, transfer, models):
    module.register(app)


def run() -> None:
    """Console-script entry point. A usage error (a typo'd verb, a missing argument, a bad option) is one
    line on stderr, exit code 2, as every other error is one line: ``error: No such command 'gett'. Did
    you mean 'get'? (trainrun -h lists what it takes)``."""
    try:
        code = app(standalone_mode=False, prog_name="trainrun")
    except usage_errors.NoArgsIsHelpError as error:
        print(error.ctx.get_help())  # `trainrun` alone: the help text
        sys.exit(error.exit_code)
    except usage_errors.UsageError as error:
        where = error.ctx.command_path if error.ctx is not None else "trainrun"
        print(f"error: {usage_line(error)} ({where} -h lists what it takes)", file=sys.stderr)
        sys.exit(error.exit_code)
    except usage_errors.ClickException as error:
        print(f"error: {usage_line(error)}", file=sys.stderr)
        sys.exit(error.exit_code)
    except typer.Abort:
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def usage_line(error: usage_errors.ClickException) -> str:
    """click's message on one line ("Missing argument 'name'.", a "did you mean" list)."""
    return " ".join(error.format_message().split())
