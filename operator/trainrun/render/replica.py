"""What runs inside one replica: the launch command, its arguments and its environment.

Shared by the PyTorchJob renderer (the ``pytorch`` container) and the local runner (a process per
replica), so a run behaves the same on a cluster and on a laptop. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from trainrun.spec.model import DEFAULT_OUTPUT_DIR, DEFAULT_TRAINER_MODULE, Hyperparameters, TrainingRun

DEFAULT_MASTER_PORT = 23456
INPUTS_ROOT = "/inputs"

# Hyperparameter fields that the built-in trainer takes as flags, in a stable order.
_HYPERPARAMETER_FIELDS = [name for name in Hyperparameters.model_fields if name != "extra"]


def flag_name(field_name: str) -> str:
    """``batch_size`` -> ``batch-size`` (the flag spelling), ``dataDir`` -> ``data-dir``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", field_name).replace("_", "-").lower()


def hyperparameter_values(hyperparameters: Hyperparameters) -> dict[str, str]:
    """The typed hyperparameters that have a value, by flag name, as strings."""
    values: dict[str, str] = {}
    for field_name in _HYPERPARAMETER_FIELDS:
        value = getattr(hyperparameters, field_name)
        if value is None:
            continue
        if isinstance(value, bool):
            values[flag_name(field_name)] = "true" if value else "false"
        else:
            values[flag_name(field_name)] = str(value)
    return values


def runs_builtin_trainer(run: TrainingRun) -> bool:
    """True when the run names no command or script: the built-in trainer runs."""
    return run.spec.command is None and run.spec.script is None


def program_hyperparameters(run: TrainingRun) -> dict[str, str]:
    """The typed hyperparameters the program is told about (as ``TRAINRUN_*`` variables), by flag name.

    The built-in trainer: every one, defaults included, as its flags say. A custom command or script: only
    those the spec sets, so that it never reads the built-in trainer's defaults (``TRAINRUN_EPOCHS=5``,
    ``TRAINRUN_DATASET=synthetic``) as if the user had chosen them.
    """
    values = hyperparameter_values(run.spec.hyperparameters)
    if runs_builtin_trainer(run):
        return values
    chosen = {flag_name(field_name) for field_name in run.spec.hyperparameters.model_fields_set}
    return {name: value for name, value in values.items() if name in chosen}


def hyperparameter_flags(run: TrainingRun) -> list[str]:
    """Flags appended after the user's args.

    The built-in trainer gets every typed hyperparameter; a custom program (command or script) gets only
    ``extra``, so that its own argument parser is never handed flags it did not ask for (the typed ones it
    set are in its ``TRAINRUN_*`` environment variables).
    """
    spec = run.spec
    flags: list[str] = []
    if runs_builtin_trainer(run):
        for name, value in hyperparameter_values(spec.hyperparameters).items():
            if name == "pretrained":
                flags.append("--pretrained" if value == "true" else "--no-pretrained")
            else:
                flags.append(f"--{name}={value}")
    flags.extend(f"--{key}={value}" for key, value in spec.hyperparameters.extra.items())
    return flags


def program(run: TrainingRun) -> list[str]:
    """The program and its arguments, before any launcher: the built-in trainer, a script or a command."""
    spec = run.spec
    if spec.command is not None:
        head = list(spec.command)
    elif spec.script is not None:
        head = ["python", spec.script]
    else:
        head = ["python", "-m", DEFAULT_TRAINER_MODULE]
    return [*head, *spec.args, *hyperparameter_flags(run)]


def launch_command(run: TrainingRun) -> list[str]:
    """The container's full command line.

    With torchrun, the rendezvous comes from the ``PET_*`` variables that the training-operator (or the
    local runner) sets, through Kubernetes' ``$(VAR)`` expansion, so RANK, WORLD_SIZE and LOCAL_RANK are
    right whatever nprocPerNode is.
    """
    spec = run.spec
    body = program(run)
    if spec.launcher == "none":
        return body
    launcher = [
        "torchrun",
        "--nnodes=$(PET_NNODES)",
        f"--nproc-per-node={spec.processes_per_replica}",
        "--node-rank=$(PET_NODE_RANK)",
        "--master-addr=$(PET_MASTER_ADDR)",
        "--master-port=$(PET_MASTER_PORT)",
    ]
    if body[0] == "python":
        return [*launcher, *body[1:]]
    return [*launcher, "--no-python", *body]


def input_path(name: str, path: str | None) -> str:
    """Where an input is staged: its own path, else /inputs/<name>."""
    return path or f"{INPUTS_ROOT}/{name}"


def input_env_name(name: str) -> str:
    """``fashion-mnist`` -> ``INPUT_FASHION_MNIST``."""
    return "INPUT_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def trainrun_env(run: TrainingRun, *, output_dir: str = DEFAULT_OUTPUT_DIR) -> dict[str, str]:
    """Variables this product sets on every replica (the training-operator adds the rendezvous ones)."""
    spec = run.spec
    env = {
        "OUTPUT_DIR": output_dir,
        "TRAINRUN_RUN_NAME": run.metadata.name,
        "TRAINRUN_NAMESPACE": run.metadata.namespace,
    }
    for name, value in program_hyperparameters(run).items():
        env["TRAINRUN_" + name.replace("-", "_").upper()] = value
    for item in spec.inputs:
        env[input_env_name(item.name)] = input_path(item.name, item.path)
    return env


def operator_env(
    *,
    replica_index: int,
    replica_count: int,
    nproc_per_node: int,
    master_addr: str,
    master_port: int = DEFAULT_MASTER_PORT,
) -> dict[str, str]:
    """The variables the training-operator v1 gives a PyTorchJob pod with a Master replica.

    Mirrors ``pkg/controller.v1/pytorch/envvar.go``: the local runner sets exactly these, so a program
    cannot tell a laptop from a cluster (on a cluster, master_addr is ``<job>-master-0``).
    """
    return {
        "PYTHONUNBUFFERED": "1",
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
        "PET_MASTER_ADDR": master_addr,
        "PET_MASTER_PORT": str(master_port),
        "WORLD_SIZE": str(replica_count * nproc_per_node),
        "RANK": str(replica_index),
        "PET_NODE_RANK": str(replica_index),
        "PET_NNODES": str(replica_count),
        "PET_NPROC_PER_NODE": str(nproc_per_node),
    }


def expand_references(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known names are replaced, ``$$`` escapes, unknown ones stay."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", replace, value)
