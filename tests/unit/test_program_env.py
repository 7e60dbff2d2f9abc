"""Which ``TRAINRUN_*`` hyperparameters a replica's program is told, on a cluster and locally.

The built-in trainer is told every hyperparameter, defaults included (its flags carry them too); a
custom command or script only those the spec sets, never the built-in trainer's defaults. The CRD must
not fill the defaults in either, or a cluster run could not tell the two apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from run_factory import pools, training_run
from trainrun.local.folder import RunFolder
from trainrun.local.launch import build_launches
from trainrun.render import render_pytorchjob
from trainrun.spec.crd import training_run_crd


def trainrun_variables(**spec: Any) -> dict[str, str]:
    """The TRAINRUN_<hyperparameter> variables of the Master's container, as the operator renders it."""
    job = render_pytorchjob(training_run(**spec), pools())
    container = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    ignored = {"TRAINRUN_RUN_NAME", "TRAINRUN_NAMESPACE"}
    return {
        item["name"]: item["value"]
        for item in container["env"]
        if item["name"].startswith("TRAINRUN_") and item["name"] not in ignored
    }


@pytest.mark.parametrize("program", [{"command": ["bash", "train.sh"]}, {"script": "train.py"}])
def test_a_custom_program_gets_only_the_hyperparameters_the_spec_sets(program: dict[str, Any]) -> None:
    assert trainrun_variables(**program) == {}
    chosen = trainrun_variables(**program, hyperparameters={"epochs": 7, "learningRate": 0.01, "extra": {"d": "1"}})
    assert chosen == {"TRAINRUN_EPOCHS": "7", "TRAINRUN_LEARNING_RATE": "0.01"}


def test_a_value_equal_to_the_default_still_counts_when_the_user_wrote_it() -> None:
    assert trainrun_variables(command=["bash", "train.sh"], hyperparameters={"epochs": 5}) == {"TRAINRUN_EPOCHS": "5"}


def test_the_built_in_trainer_gets_every_hyperparameter_with_its_default() -> None:
    told = trainrun_variables()
    assert told["TRAINRUN_EPOCHS"] == "5" and told["TRAINRUN_DATASET"] == "synthetic"
    assert told["TRAINRUN_PRETRAINED"] == "false"


def test_the_local_replicas_are_told_the_same(tmp_path: Path) -> None:
    run = training_run(command=["bash", "train.sh"], hyperparameters={"seed": 4})
    launches = build_launches(
        run, folder=RunFolder(tmp_path), master_port=29555, base_env={}, python="python", cpu_count=2, gpu_ids=[], cwd=tmp_path
    )
    told = {name for name in launches.replicas[0].env if name.startswith("TRAINRUN_")}
    assert told == {"TRAINRUN_RUN_NAME", "TRAINRUN_NAMESPACE", "TRAINRUN_SEED"}


def test_the_api_server_fills_in_no_hyperparameter() -> None:
    """A default in the CRD would be written into every run by the API server, as if the user chose it."""
    spec = training_run_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    hyperparameters = spec["properties"]["hyperparameters"]["properties"]
    assert [name for name, field in hyperparameters.items() if "default" in field] == []
    assert hyperparameters["epochs"]["description"].endswith("Default: 5.")  # still what kubectl explain says
