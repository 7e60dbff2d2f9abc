"""The sample TrainingSweep in real pods: its trials are TrainingRuns whose Masters train on the real node.

The sample (manifests/samples/sweep.yaml: the quick start's MLP, TPE over the learning rate and batch size,
median pruning, 2 trials at a time), cut to 4 trials of 2 epochs on a smaller data set so it fits the lane,
is created with ``trainrun sweep`` and read back as a user would (``trainrun get trs``, ``describe sweep``).
Every value the sweep compares comes from a trial's real training log, parsed by the operator.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster.harness import REAL_NODE, ClusterError, KubeCluster, wait_until
from realpods import REALPOD_TIMEOUT, trainrun
from runs import REPO, OperatorProcess
from trainrun.spec.annotations import SWEEP_LABEL

pytestmark = [pytest.mark.realpod, pytest.mark.timeout(REALPOD_TIMEOUT), pytest.mark.cluster]

SAMPLE = REPO / "manifests" / "samples" / "sweep.yaml"
TRIALS = 4


def test_the_sample_sweep_runs_its_trials_in_real_pods_to_completed(
    kube_cluster: KubeCluster, operator: OperatorProcess, kube_namespace: str, tmp_path: Path
) -> None:
    cluster, namespace = kube_cluster, kube_namespace
    document = yaml.safe_load(SAMPLE.read_text())
    name = document["metadata"]["name"]
    document["metadata"]["namespace"] = namespace
    spec = document["spec"]
    spec["maxTrials"] = TRIALS
    spec["template"]["hyperparameters"].update({"epochs": 2, "extra": {"image-size": "28", "synthetic-samples": "4096"}})
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(document))
    created = trainrun(cluster, "sweep", str(tmp_path / "sweep.yaml"), "-n", namespace)
    assert f"trainingsweep.trainrun.dev/{name} created" in created.stdout, created.stdout

    most_at_once = [0]
    nodes: dict[str, str | None] = {}  # pod -> the node it ran on

    def finished() -> dict[str, Any] | None:
        trials = cluster.list_objects("trainingruns", namespace, f"{SWEEP_LABEL}={name}")
        unfinished = [trial for trial in trials if (trial.get("status") or {}).get("phase") not in ("Completed", "Failed", "Cancelled")]
        most_at_once[0] = max(most_at_once[0], len(unfinished))
        nodes.update({pod["metadata"]["name"]: pod["spec"].get("nodeName") for pod in cluster.list_objects("pods", namespace)})
        found = cluster.get("trainingsweep", name, namespace) or {}
        return found if (found.get("status") or {}).get("phase") in ("Completed", "Failed") else None

    try:
        sweep = wait_until(finished, timeout=1500, what="the sweep to finish", interval=2)
    except ClusterError as error:
        status = (cluster.get("trainingsweep", name, namespace) or {}).get("status")
        raise AssertionError(f"{error}: {json.dumps(status, indent=1)}\noperator log:\n{operator.log_tail(60)}") from None
    status = sweep["status"]
    assert status["phase"] == "Completed", json.dumps(status, indent=1)

    trials = {trial["metadata"]["name"]: trial for trial in cluster.list_objects("trainingruns", namespace, f"{SWEEP_LABEL}={name}")}
    assert sorted(trials) == [f"{name}-{number}" for number in range(TRIALS)]
    assert most_at_once[0] <= spec["parallelism"], most_at_once
    values: dict[str, float] = {}
    for trial_name, trial in trials.items():
        trial_status = trial["status"]
        assert trial_status["phase"] in ("Completed", "Cancelled"), (trial_name, trial_status)
        if trial_status["phase"] == "Completed":
            values[trial_name] = trial_status["metrics"]["val_loss"]
        else:  # pruned by the median rule: cancelled by the sweep, never failed
            assert "trainrun.dev/pruned" in trial["metadata"]["annotations"], trial["metadata"]
    assert len(values) >= 2, values  # the median rule starts after 2 trials: those two finish
    best = min(values, key=values.__getitem__)
    assert status["best"]["trial"] == best and status["best"]["value"] == values[best], status["best"]
    assert set(status["best"]["parameters"]) == {"learningRate", "batchSize"}
    # A Master per trial ran on the real node, with the parameters the sweep chose.
    assert {pod.rsplit("-master-0", 1)[0] for pod in nodes if "-master-0" in pod} == set(trials), sorted(nodes)
    assert set(nodes.values()) == {REAL_NODE}, nodes
    assert trials[best]["spec"]["hyperparameters"]["learningRate"] == status["best"]["parameters"]["learningRate"]

    header, row = trainrun(cluster, "get", "trs", "-n", namespace).stdout.strip().splitlines()
    assert header.split() == ["NAME", "PHASE", "TRIALS", "BEST", "PROGRESS", "AGE"]
    assert row.split()[:2] == [name, "Completed"]
    described = trainrun(cluster, "describe", "sweep", name, "-n", namespace).stdout
    rows = [line.split() for line in described.splitlines() if line.strip().startswith(f"{name}-")]
    assert rows[0][:2] == [best, "Completed"] and len(rows) == TRIALS, described
    print(f"sweep in real pods: {status['trialsSummary']}, best {status['bestSummary']}")
