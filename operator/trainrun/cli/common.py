"""What every verb module shares: the global options, choosing the Client, shared option types, output.

The verb modules (``runs``, ``get``, ``logs``, ``lifecycle``, ``manifests``) call
:func:`client_for` to get a ``trainrun.Client`` for the cluster of ``--kubeconfig``/``--context``/``-n``,
or for the local runs folder with ``--local``. Heavy modules (the client, the Kubernetes client,
rich) are imported when a verb needs them, so that ``trainrun --help`` and ``trainrun validate`` start
fast.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, ParamSpec

import typer

if TYPE_CHECKING:
    from trainrun.client import Client

RUNS_DIR_ENV = "TRAINRUN_RUNS_DIR"
DEBUG_ENV = "TRAINRUN_DEBUG"
Parameters = ParamSpec("Parameters")


@dataclass
class GlobalOptions:
    """The options given before the verb: ``trainrun -n team-a get``."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None


LocalOption = Annotated[
    bool,
    typer.Option("--local", help="Use the runs on this machine (the runs folder) instead of the cluster."),
]
RunsDirOption = Annotated[
    Path | None,
    typer.Option(
        "--runs-dir",
        envvar=RUNS_DIR_ENV,
        metavar="DIR",
        help="Folder of local runs, one sub-folder per run (default: new runs go to ./runs; runs are read from the "
        "nearest runs/ folder, here or above).",
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        metavar="FILE",
        help="Operator configuration (ConfigMap trainrun-operator-config, or its config.yaml): pools to check.",
        exists=True,
        dir_okay=False,
    ),
]
NamespaceOption = Annotated[
    str | None,
    typer.Option(
        "--namespace", "-n", metavar="NS", help="Namespace of the run (overrides the global -n; default: default)."
    ),
]
CodeOption = Annotated[
    Path | None,
    typer.Option(
        "--code",
        metavar="DIR",
        help="Folder of your code (spec.code): the replicas start in it and find spec.script there; uploaded for a "
        "cluster, copied into the run folder with --local.",
        exists=True,
        file_okay=False,
    ),
]
CodeLimitOption = Annotated[
    int,
    typer.Option(
        "--code-limit-mb",
        metavar="MB",
        envvar="TRAINRUN_CODE_LIMIT_MB",
        min=1,
        help="Refuse a --code folder larger than this many MB (after .trainrunignore).",
    ),
]
CodeUriOption = Annotated[
    str | None,
    typer.Option("--code-uri", metavar="URI", help="Where --code is uploaded (default: <spec.output.uri>/code)."),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="PATH=VALUE",
        help="Override a field of the file: PATH=VALUE, e.g. --set hyperparameters.epochs=1 (PATH under spec "
        "unless it starts with metadata; VALUE is YAML; empty removes the field). Repeatable.",
    ),
]
FileArgument = Annotated[
    str, typer.Argument(metavar="FILE", help="TrainingRun YAML file ('-' reads stdin); several documents allowed.")
]
NameArgument = Annotated[
    str, typer.Argument(metavar="NAME", help="Name of the TrainingRun (locally: also a run folder's name).")
]


class OutputFormat(StrEnum):
    """The -o choices, as kubectl has them."""

    TABLE = "table"
    WIDE = "wide"
    YAML = "yaml"
    JSON = "json"


OutputOption = Annotated[
    OutputFormat, typer.Option("--output", "-o", metavar="FORMAT", help="table, wide, yaml or json.")
]


def global_options(context: typer.Context) -> GlobalOptions:
    """The options of the main callback (defaults when a verb is run on its own, as in tests)."""
    root = context.find_root()
    options = root.obj
    return options if isinstance(options, GlobalOptions) else GlobalOptions()


def client_for(
    context: typer.Context,
    *,
    local: bool,
    runs_dir: Path | None = None,
    config: Path | None = None,
    namespace: str | None = None,
) -> Client:
    """The Client for this command: local runs (under runs_dir, else the default runs folder), else the cluster
    of the global options."""
    from trainrun.client import Client
    from trainrun.client.documents import load_operator_config

    options = global_options(context)
    operator_config = load_operator_config(config)
    if local:
        return Client(backend="local", runs_dir=runs_dir, config=operator_config)
    return Client(
        backend="cluster",
        kubeconfig=options.kubeconfig,
        context=options.context,
        namespace=namespace or options.namespace,
        config=operator_config,
    )


def again(context: typer.Context, verb: str, name: str, *, local: bool, namespace: str | None = None) -> str:
    """The command that goes on from here with the flags that found the run: ``trainrun describe
    quickstart-20261205-101500 --local``, ``trainrun -n team-a describe resnet``."""
    namespace = namespace or global_options(context).namespace
    if local:
        return f"trainrun {verb} {name} --local"
    return f"trainrun -n {namespace} {verb} {name}" if namespace else f"trainrun {verb} {name}"


def fail(message: str, *, code: int = 1, excerpt: str | None = None) -> NoReturn:
    """One line to stderr (then the excerpt of a file it points into, as it is), then exit. Credentials
    in a URL in it are masked (an error from a library may quote an endpoint such as
    ``http://user:pass@host``)."""
    from trainrun.base.redact import redact

    print(f"error: {redact(message)}", file=sys.stderr)
    if excerpt:
        print(redact(excerpt), file=sys.stderr)
    raise typer.Exit(code)


def dump_yaml(documents: list[Any]) -> str:
    """Documents as a YAML stream (``---`` between them), keys in their natural order."""
    import yaml

    return yaml.safe_dump_all(documents, sort_keys=False, explicit_start=len(documents) > 1)


def add_command(app: typer.Typer, name: str, function: Callable[Parameters, None], *, hidden: bool = False) -> None:
    """Register a verb whose errors print as one line (``error: ...``, exit code 1), no traceback.

    ``TRAINRUN_DEBUG=1`` lets the traceback through. A closed pipe on stdout ends the verb with exit code 0.
    """

    @functools.wraps(function)
    def verb(*args: Parameters.args, **kwargs: Parameters.kwargs) -> None:
        try:
            function(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except BrokenPipeError:
            # The reader went away (`trainrun logs NAME | head`): a normal end, as for kubectl.
            close_stdout()
            raise typer.Exit(0) from None
        except Exception as error:  # noqa: BLE001 - the CLI's promise: one clear line
            if os.environ.get(DEBUG_ENV):
                raise
            fail(one_line(error), excerpt=getattr(error, "excerpt", None))

    app.command(name, hidden=hidden)(verb)


def close_stdout() -> None:
    """Point stdout at /dev/null once its reader has gone, so that the interpreter's last flush of what
    is still buffered fails neither loudly nor with an exit code of its own."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def one_line(error: BaseException) -> str:
    """The message of an error on a single line (its type when it has none)."""
    text = " ".join(str(error).split())
    return text or type(error).__name__
