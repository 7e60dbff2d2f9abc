"""The local replicas' launches (pure): the cluster's env contract, GPU split, threads, paths, programs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from localrun import sample
from trainrun.local.folder import RunFolder
from trainrun.local.launch import build_launches, remap_paths, split_gpus
from trainrun.spec import validate_training_run
from trainrun.status.observe import replica_names

PYTHON = sys.executable


def launches_for(document: dict[str, Any], tmp_path: Path, **overrides: Any) -> Any:
    arguments: dict[str, Any] = {
        "folder": RunFolder(tmp_path / "run"),
        "master_port": 29555,
        "base_env": {"PATH": "/usr/bin", "HOME": "/home/me"},
        "python": PYTHON,
        "cpu_count": 8,
        "gpu_ids": [],
        "cwd": tmp_path,
    }
    arguments.update(overrides)
    return build_launches(validate_training_run(document), **arguments)


def test_each_replica_gets_the_training_operator_contract(tmp_path: Path) -> None:
    document = sample("quickstart.yaml")
    document["spec"]["distribution"]["workers"] = 2
    launches = launches_for(document, tmp_path)
    assert [replica.name for replica in launches.replicas] == ["master-0", "worker-0", "worker-1"]
    for index, replica in enumerate(launches.replicas):
        env = replica.env
        assert (env["RANK"], env["PET_NODE_RANK"]) == (str(index), str(index))
        assert (env["WORLD_SIZE"], env["PET_NNODES"], env["PET_NPROC_PER_NODE"]) == ("3", "3", "1")
        assert env["MASTER_ADDR"] == env["PET_MASTER_ADDR"] == "localhost"
        assert env["MASTER_PORT"] == env["PET_MASTER_PORT"] == "29555"
        assert env["PYTHONUNBUFFERED"] == "1"
        assert env["TRAINRUN_EPOCHS"] == "3"
        assert env["HOME"] == "/home/me"
        assert env["OMP_NUM_THREADS"] == "2"  # 8 cores / 3 processes
        assert "CUDA_VISIBLE_DEVICES" not in env  # no GPU on this machine: nothing to hide
        assert env["PATH"].split(":")[0] == str(Path(PYTHON).parent)
        command = replica.command
        assert command[0] == str(Path(PYTHON).parent / "torchrun")
        assert f"--node-rank={index}" in command and "--nnodes=3" in command
        assert "--master-port=29555" in command and "-m" in command
        assert not any("$(" in part for part in command)
    assert launches.replicas[0].env["OUTPUT_DIR"] == str(tmp_path / "run" / "outputs")
    assert launches.replicas[1].env["OUTPUT_DIR"] == str(tmp_path / "run" / "scratch" / "worker-0")
    assert any("spec.image" in notice and "ignored" in notice for notice in launches.notices)


def test_user_env_wins_and_value_from_is_noted(tmp_path: Path) -> None:
    document = sample("quickstart.yaml")
    document["spec"]["env"] = [
        {"name": "WANDB_MODE", "value": "offline"},
        {"name": "OUTPUT_DIR", "value": "/elsewhere"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
    ]
    launches = launches_for(document, tmp_path)
    env = launches.replicas[0].env
    assert env["WANDB_MODE"] == "offline" and env["OUTPUT_DIR"] == "/elsewhere" and "TOKEN" not in env
    assert any("'TOKEN' uses valueFrom" in notice and "export TOKEN" in notice for notice in launches.notices)
    # The replicas inherit the shell's environment: a value exported there fills the secret's place.
    launches = launches_for(document, tmp_path, base_env={"PATH": "/usr/bin", "TOKEN": "from-shell"})
    assert launches.replicas[0].env["TOKEN"] == "from-shell"
    assert any("'TOKEN' uses valueFrom" in notice and "your shell's value" in notice for notice in launches.notices)


def test_launcher_none_runs_python_as_this_interpreter(tmp_path: Path) -> None:
    document = sample("quickstart.yaml")
    document["spec"]["launcher"] = "none"
    document["spec"]["command"] = ["python", "train.py", "--nodes=$(PET_NNODES)"]
    document["spec"]["hyperparameters"]["extra"] = {}
    launches = launches_for(document, tmp_path)
    assert launches.replicas[1].command == [PYTHON, "train.py", "--nodes=2"]


@pytest.mark.parametrize(
    ("available", "replicas", "per_replica", "expected", "noted"),
    [
        (["0", "1", "2", "3"], 2, 2, [["0", "1"], ["2", "3"]], False),
        (["0", "1", "2", "3"], 2, 1, [["0"], ["1"]], False),
        (["0", "1"], 2, 4, [["0"], ["1"]], True),
        (["0"], 3, 1, [["0"], ["0"], ["0"]], True),
        (["0", "1"], 2, 0, [[], []], False),
        ([], 2, 8, [[], []], False),
    ],
)
def test_gpus_are_split_among_replicas(
    available: list[str], replicas: int, per_replica: int, expected: list[list[str]], noted: bool
) -> None:
    assigned, notice = split_gpus(available, replicas=replicas, per_replica=per_replica)
    assert assigned == expected
    assert (notice is not None) == noted


def test_gpus_are_visible_only_to_their_replica_and_hidden_from_cpu_runs(tmp_path: Path) -> None:
    document = sample("quickstart.yaml")
    document["spec"]["resources"] = {"gpus": 2}
    launches = launches_for(document, tmp_path, gpu_ids=["0", "1", "2", "3"])
    assert [replica.env["CUDA_VISIBLE_DEVICES"] for replica in launches.replicas] == ["0,1", "2,3"]
    assert launches.replicas[0].env["PET_NPROC_PER_NODE"] == "2"
    cpu_launches = launches_for(sample("quickstart.yaml"), tmp_path, gpu_ids=["0", "1"])
    assert [replica.env["CUDA_VISIBLE_DEVICES"] for replica in cpu_launches.replicas] == ["", ""]


def test_staged_inputs_replace_their_cluster_paths(tmp_path: Path) -> None:
    document = sample("cifar10-cnn.yaml")
    staged = tmp_path / "run" / "inputs" / "cifar10"
    launches = launches_for(document, tmp_path, staged_inputs={"cifar10": staged})
    master = launches.replicas[0]
    assert f"--data-dir={staged}" in master.command
    assert master.env["TRAINRUN_DATA_DIR"] == str(staged)
    assert master.env["INPUT_CIFAR10"] == str(staged)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/inputs/data", "/local/data"),
        ("--data-dir=/inputs/data", "--data-dir=/local/data"),
        ("/inputs/data/train", "/local/data/train"),
        ("/inputs/database", "/inputs/database"),
        ("/x/inputs/data", "/x/inputs/data"),
        ("a:/inputs/data", "a:/local/data"),
    ],
)
def test_remap_paths_replaces_whole_path_segments_only(value: str, expected: str) -> None:
    assert remap_paths(value, {"/inputs/data": Path("/local/data")}) == expected


def test_replica_names_follow_the_pods() -> None:
    assert replica_names(0) == ["master-0"]
    assert replica_names(2) == ["master-0", "worker-0", "worker-1"]


def test_a_script_missing_where_the_replicas_start_is_a_problem_naming_the_field(tmp_path: Path) -> None:
    document = sample("custom-script.yaml")
    launches = launches_for(document, tmp_path)
    assert launches.problem is not None
    assert "spec.script 'custom-script/train.py'" in launches.problem and str(tmp_path) in launches.problem
    assert "--code DIR" in launches.problem
    (tmp_path / "custom-script").mkdir()
    (tmp_path / "custom-script" / "train.py").write_text("print('hi')\n")
    assert launches_for(document, tmp_path).problem is None
    assert launches_for(sample("quickstart.yaml"), tmp_path).problem is None  # the built-in trainer has no script
