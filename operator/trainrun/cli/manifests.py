"""``trainrun validate``, ``trainrun render`` and ``trainrun crd``: judge and expand manifests, offline.

``validate`` and ``render`` use the operator's own code (``trainrun.spec.validate_training_run`` and
``trainrun.render``), so a file that passes here is judged the same by the cluster. No cluster needed.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from trainrun.base.redact import redact
from trainrun.cli.common import ConfigOption, FileArgument, SetOption, add_command, dump_yaml, fail


def register(app: typer.Typer) -> None:
    """Add the verbs of this module to the CLI."""
    add_command(app, "validate", validate_command)
    add_command(app, "render", render_command)
    add_command(app, "crd", crd_command)


def validate_command(
    files: Annotated[
        list[str],
        typer.Argument(metavar="FILE", help="TrainingRun YAML files ('-' reads stdin); several documents allowed."),
    ],
    config: ConfigOption = None,
    overrides: SetOption = None,
    local: Annotated[
        bool, typer.Option("--local", help="Judge them as trainrun run --local does (no spec.image needed).")
    ] = False,
) -> None:
    """Check every TrainingRun of FILES as the operator would; print each problem (field: what to do), exit 1.
    A legal value that is probably a slip (memory: 1 is one byte) is printed as a warning; it fails nothing."""
    from trainrun.client.documents import load_operator_config, training_run_documents
    from trainrun.spec import InvalidTrainingRun, suspicious_values, validate_training_run

    operator_config = load_operator_config(config)
    failed = False
    for file in files:
        for document in training_run_documents(file, overrides or ()):
            name = (document.get("metadata") or {}).get("name", "<no name>")
            try:
                run = validate_training_run(document, operator_config, local=local)
            except InvalidTrainingRun as error:
                failed = True
                for problem in error.problems:
                    print(str(problem))
                print(f"{file}: TrainingRun {name!r} has {len(error.problems)} problem(s)", file=sys.stderr)
            else:
                warnings = suspicious_values(run)
                for warning in warnings:
                    print(f"warning: {warning}")
                noted = f", with {len(warnings)} warning(s)" if warnings else ""
                print(f"{file}: TrainingRun {name!r} is valid{noted}")
    if failed:
        raise typer.Exit(1)


def render_command(file: FileArgument, config: ConfigOption = None, overrides: SetOption = None) -> None:
    """Print what the operator would create for FILE: the job (a PyTorchJob, or a TrainJob with --config
    naming backend: TrainJob), the output claim, the uploader Job."""
    from trainrun.client.documents import example_operator_config, load_operator_config, training_run_documents
    from trainrun.render.backend import backend_of
    from trainrun.spec import validate_training_run

    operator_config = load_operator_config(config)
    note = ""
    if operator_config is None:
        note = "# Rendered with the example pools a100, t4, cpu: pass --config for your cluster's own.\n"
        operator_config = example_operator_config()
    children: list[dict[str, Any]] = []
    for document in training_run_documents(file, overrides or ()):
        run = validate_training_run(document, operator_config)
        backend = backend_of(operator_config)
        problems = backend.problems(run)
        if problems:
            fail("; ".join(str(problem) for problem in problems))
        children.append(backend.render_job(run, operator_config))
        claim = backend.render_claim(run)
        if claim is not None:
            children.append(claim)
        if run.spec.output.uri is not None:
            children.append(backend.render_uploader(run, operator_config))
    # Credentials belong in the Secret a run names (spec.output.secretName); one written into a URI of
    # the spec is masked here as everywhere else the CLI prints.
    print(note + redact(dump_yaml(children)), end="")


def crd_command(
    sweep: Annotated[bool, typer.Option("--sweep", help="The TrainingSweep's CRD instead of the TrainingRun's.")] = False,
) -> None:
    """Print the TrainingRun CustomResourceDefinition, or the TrainingSweep's (kubectl apply -f - installs it)."""
    from trainrun.spec.crd import training_run_crd, training_sweep_crd

    print(dump_yaml([training_sweep_crd() if sweep else training_run_crd()]), end="")
