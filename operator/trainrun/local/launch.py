"""What each local replica process runs: command line, environment, working directory, devices.

The command and the environment come from ``trainrun.render`` (the same functions that build the
PyTorchJob's ``pytorch`` container), so a program cannot tell a laptop from a cluster: the training-
operator's variables (``operator_env``) with master_addr=localhost, ours (``trainrun_env``), then the
user's literal ``spec.env``, and Kubernetes' ``$(VAR)`` expansion of the command. Only what has to
differ on one machine differs: the Master's OUTPUT_DIR is the run folder's outputs/, Workers get a
scratch folder, GPUs are split with CUDA_VISIBLE_DEVICES, and OMP_NUM_THREADS shares the cores.

Called by ``trainrun.local.runner``. No processes are started here.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trainrun.local.folder import RunFolder
from trainrun.render import expand_references, launch_command, operator_env, trainrun_env
from trainrun.render.replica import input_env_name, input_path
from trainrun.spec import LOCAL_IMAGE, TrainingRun
from trainrun.status.observe import replica_names

LOCAL_MASTER_ADDR = "localhost"


@dataclass(frozen=True)
class ReplicaLaunch:
    """One replica as a local process."""

    name: str  # master-0, worker-0, ... (the pod name's suffix on a cluster)
    index: int  # RANK of the replica: Master 0, Worker i -> i + 1
    command: list[str]
    env: dict[str, str]
    cwd: Path
    log_path: Path
    output_dir: Path


@dataclass(frozen=True)
class Launches:
    """Every replica of a run, and what the user should know about the translation."""

    replicas: list[ReplicaLaunch]
    notices: list[str] = field(default_factory=list)
    problem: str | None = None  # why the replicas cannot start (the run fails before any starts)


def split_gpus(available: Sequence[str], *, replicas: int, per_replica: int) -> tuple[list[list[str]], str | None]:
    """GPU ids for each replica and a notice when the machine has fewer than the spec asks for.

    Each replica gets its own ``per_replica`` GPUs when there are enough; otherwise the machine's GPUs
    are dealt out evenly (at least one each, shared round-robin when there are fewer GPUs than replicas).
    """
    if per_replica == 0 or not available:
        return [[] for _ in range(replicas)], None
    wanted = replicas * per_replica
    if len(available) >= wanted:
        return [list(available[i * per_replica : (i + 1) * per_replica]) for i in range(replicas)], None
    share = max(len(available) // replicas, 1)
    assigned = [[available[(i * share + j) % len(available)] for j in range(share)] for i in range(replicas)]
    notice = (
        f"the spec asks for {wanted} GPUs ({replicas} replicas x {per_replica}); this machine has "
        f"{len(available)}: each replica gets {share}"
    )
    return assigned, notice


def build_launches(
    run: TrainingRun,
    *,
    folder: RunFolder,
    master_port: int,
    base_env: Mapping[str, str],
    python: str,
    cpu_count: int,
    gpu_ids: Sequence[str],
    cwd: Path,
    staged_inputs: Mapping[str, Path] | None = None,
    staged_code: Path | None = None,
) -> Launches:
    """The processes that run ``run`` on this machine.

    base_env is the environment the user launched trainrun from; python is the interpreter whose bin
    folder provides ``torchrun`` and whose path replaces a bare ``python``. staged_inputs maps each
    input's name to the local folder it was downloaded to: the input's cluster path (``/inputs/<name>``
    or its own path) is rewritten to it in the command and the environment. staged_code is the
    downloaded code snapshot, the working directory unless spec.workingDir exists here.
    """
    spec = run.spec
    notices: list[str] = []
    if spec.image != LOCAL_IMAGE:
        notices.append(f"spec.image {spec.image!r} is ignored locally: the replicas run with {python}")
    replica_count = spec.replica_count
    nproc = spec.processes_per_replica
    names = replica_names(spec.distribution.workers)
    gpu_sets, gpu_notice = split_gpus(gpu_ids, replicas=replica_count, per_replica=spec.resources.gpus)
    if gpu_notice:
        notices.append(gpu_notice)
    if spec.resources.gpus > 0 and not gpu_ids:
        notices.append(
            f"spec.resources.gpus is {spec.resources.gpus} but no GPU is visible: the replicas run on the CPU"
        )
    threads = max(cpu_count // (replica_count * nproc), 1)
    working_dir = local_working_dir(spec.working_dir, default=staged_code or cwd, notices=notices)
    staged = staged_inputs or {}
    path_map = {input_path(item.name, item.path): staged[item.name] for item in spec.inputs if item.name in staged}
    for variable in spec.env:
        if variable.value_from is not None:
            inherited = "your shell's value is used" if variable.name in base_env else (
                f"it is unset; export {variable.name} before trainrun run to give it a value"
            )
            notices.append(f"spec.env {variable.name!r} uses valueFrom, which only a cluster resolves: {inherited}")
    bin_dir = str(Path(python).parent)
    search_path = os.pathsep.join([bin_dir, base_env.get("PATH", os.defpath)])
    launches = []
    for index, name in enumerate(names):
        output_dir = folder.outputs_dir if index == 0 else folder.scratch_dir(name)
        contract = operator_env(
            replica_index=index,
            replica_count=replica_count,
            nproc_per_node=nproc,
            master_addr=LOCAL_MASTER_ADDR,
            master_port=master_port,
        )
        contract.update(trainrun_env(run, output_dir=str(output_dir)))
        contract.update({input_env_name(input_name): str(path) for input_name, path in staged.items()})
        contract.update({variable.name: variable.value for variable in spec.env if variable.value is not None})
        env = {**base_env, "PATH": search_path}
        env.update({key: remap_paths(value, path_map) for key, value in contract.items()})
        env["OMP_NUM_THREADS"] = str(threads)
        if gpu_ids:
            # Hide every GPU from a CPU run, as a pod without a GPU limit sees none.
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_sets[index])
        command = [remap_paths(expand_references(part, env), path_map) for part in launch_command(run)]
        launches.append(
            ReplicaLaunch(
                name=name,
                index=index,
                command=resolve_program(command, python=python, search_path=search_path),
                env=env,
                cwd=working_dir,
                log_path=folder.log_path(name),
                output_dir=output_dir,
            )
        )
    return Launches(replicas=launches, notices=notices, problem=missing_script(spec.script, working_dir, path_map))


def missing_script(script: str | None, working_dir: Path, path_map: Mapping[str, Path]) -> str | None:
    """Why spec.script cannot be found where the replicas start, or None when it can (or is not used)."""
    if script is None or "$" in script:
        return None
    if (working_dir / remap_paths(script, path_map)).is_file():
        return None
    return (
        f"spec.script {script!r} is not a file in {working_dir}, where the replicas start: run trainrun from "
        "the folder that holds it, pass --code DIR to snapshot that folder, or set spec.workingDir"
    )


def remap_paths(value: str, path_map: Mapping[str, Path]) -> str:
    """Each cluster path in value (whole, or followed by ``/``; alone or after ``=``) -> its local folder."""
    for cluster_path, local_path in path_map.items():
        value = re.sub(rf"(?<![^=:,\s]){re.escape(cluster_path)}(?=/|$|[:,\s])", str(local_path), value)
    return value


def local_working_dir(working_dir: str | None, *, default: Path, notices: list[str]) -> Path:
    """spec.workingDir when it exists here (relative to the current folder), else the current folder."""
    if working_dir is None:
        return default
    candidate = (default / working_dir).resolve()
    if candidate.is_dir():
        return candidate
    notices.append(f"spec.workingDir {working_dir!r} does not exist here: the replicas start in {default}")
    return default


def resolve_program(command: list[str], *, python: str, search_path: str) -> list[str]:
    """``python`` is this interpreter and ``torchrun`` the one beside it, whatever PATH says first."""
    head, *rest = command
    if head in ("python", "python3"):
        return [python, *rest]
    resolved = shutil.which(head, path=search_path)
    return [resolved or head, *rest]
