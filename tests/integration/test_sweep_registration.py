"""A TrainingSweep with ``spec.register`` against the kwok cluster, the S3 server and a real MLflow server.

Three trials at once (scripted: each trial's Master prints its val_loss; trial 1 is the best), each with its
own output folder under the template's ``output.uri``; as in test_model_registry.py, kwok only plays the pods
and the test does the uploader's part (``trainrun upload``) for each trial. The registry is reached through a
proxy that SIGKILLs the operator right after MLflow created the version, before the operator heard of it:
the restarted operator must find that version by the sweep's uid instead of making a second. At the end:
exactly one version of the model, its source the best trial's verified copy, with the trial's tags and the
sweep's; the sweep Completed with ``status.model``, ``Registered=True``, one ModelRegistered Event and the
model in ``trainrun describe sweep``.
"""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster.harness import KubeCluster, Outcome, pod_behaviour, wait_until, write_cri_log
from mlflow_server import CallProxy, MlflowServer
from runs import (
    TRAINER_IMAGE,
    OperatorProcess,
    kubectl_apply,
    operator,
    training_sweep,
    volume_for_claim,
    wait_for_phase,
)
from runs import trainrun_cli as trainrun
from seaweedfs import BUCKET
from test_model_registry import _write_config, copy_outputs, registry_config, registry_operator, storage, versions

pytestmark = pytest.mark.cluster
__all__ = ["operator", "registry_config", "registry_operator", "storage"]  # fixtures, used by name
VALUES = {0: 0.5, 1: 0.2, 2: 0.4}  # val_loss of each trial: trial 1 is the best
BEST = "tune-1"


def sweep(namespace: str, uri: str, model: str) -> dict[str, Any]:
    template = {
        "image": TRAINER_IMAGE,
        "distribution": {"workers": 0},
        "hyperparameters": {"epochs": 1},
        "output": {"uri": uri, "secretName": "s3-creds", "volume": {"size": "1Gi"}},
        "podMetadata": {"annotations": pod_behaviour(Outcome.SUCCEED, after="2s")},
    }
    register = {"name": model, "registry": "proxied", "path": "model.pt", "tags": {"team": "vision"}}
    return training_sweep("tune", namespace, template, algorithm="random", parallelism=3, maxTrials=3, register=register)


def sweep_events(cluster: KubeCluster, namespace: str) -> list[dict[str, Any]]:
    listing = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=tune,involvedObject.kind=TrainingSweep", "-o", "json"
    )
    return list(json.loads(listing.stdout)["items"])


@pytest.mark.timeout(900)
def test_a_sweep_registers_the_best_trials_model_once_through_a_sigkill(
    kube_cluster: KubeCluster,
    registry_operator: OperatorProcess,
    registry_config: dict[str, Any],
    kube_namespace: str,
    storage: dict[str, str],
    mlflow_server: MlflowServer,
    tmp_path: Path,
) -> None:
    namespace, model = kube_namespace, f"tuned-{uuid.uuid4().hex[:6]}"
    uri = f"s3://{BUCKET}/sweeps/{uuid.uuid4().hex[:8]}"
    kills: list[float] = []

    def kill(path: str) -> None:
        if not kills:
            registry_operator.kill()
            kills.append(time.monotonic())

    proxy = CallProxy(mlflow_server.uri, ("model-versions/create",), kill)
    config = {**registry_config, "registries": {**registry_config["registries"], "proxied": {"type": "mlflow", "uri": proxy.uri}}}
    _write_config(kube_cluster, yaml.safe_dump(config))
    try:
        names = [f"tune-{number}" for number in VALUES]
        for number, name in enumerate(names):
            folder = tmp_path / name
            (folder / "volume").mkdir(parents=True)
            volume_for_claim(kube_cluster, namespace, f"{name}-outputs", folder / "volume", create_claim=False)
            value = VALUES[number]
            lines = [
                f'trainrun:metric {{"epoch": 1, "step": 10, "val_loss": {value}}}',
                f'trainrun:metric {{"epoch": 1, "step": 10, "val_loss": {value}, "final": true}}',
            ]
            kube_cluster.serve_pod_log(namespace, f"{name}-master-0", write_cri_log(folder / "master.log", lines))
        kubectl_apply(kube_cluster, sweep(namespace, uri, model))
        for name in names:
            wait_for_phase(kube_cluster, registry_operator, name, namespace, "Uploading", timeout=240)
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda name: copy_outputs(kube_cluster, storage, tmp_path / name, f"{uri}/{name}"), names))

        def completed() -> dict[str, Any] | None:
            if not registry_operator.running():
                registry_operator.start()  # as the kubelet restarts a killed container
            found = kube_cluster.get("trainingsweep", "tune", namespace) or {}
            return found if (found.get("status") or {}).get("phase") in ("Completed", "Failed") else None

        try:
            done = wait_until(completed, timeout=400, what="the sweep to be Completed with its model registered", interval=0.5)
        except Exception:
            found = kube_cluster.get("trainingsweep", "tune", namespace) or {}
            print(json.dumps(found.get("status"), indent=1), registry_operator.log_tail(80))
            raise
    finally:
        proxy.close()
        _write_config(kube_cluster, yaml.safe_dump(registry_config))

    status = done["status"]
    assert status["phase"] == "Completed", status
    assert status["best"]["trial"] == BEST
    assert len(kills) == 1, "the operator was to be killed once, between the version's creation and the status write"
    found = versions(mlflow_server, model)
    assert len(found) == 1, found  # the restarted operator found the version by the sweep's uid
    version = found[0]
    best = kube_cluster.get("trainingrun", BEST, namespace)
    assert best is not None
    assert version["source"] == f"{uri}/{BEST}/model.pt"  # the best trial's verified copy
    assert best["status"]["artifacts"]["uri"] == f"{uri}/{BEST}"
    tags = version["tags"]
    assert tags["trainrun.sweep"] == "tune" and tags["trainrun.sweep_uid"] == done["metadata"]["uid"]
    assert tags["trainrun.run"] == BEST and tags["trainrun.run_uid"] == best["metadata"]["uid"]
    assert tags["trainrun.namespace"] == namespace and tags["team"] == "vision"
    assert tags["trainrun.sweep.objective"] == "val_loss=0.2" and tags["metric.val_loss"] == "0.2"
    assert json.loads(tags["trainrun.sweep.parameters"]) == status["best"]["parameters"]
    assert tags["trainrun.manifest"] == f"{uri}/{BEST}/manifest.json" and tags["trainrun.manifest_sha256"].startswith("sha256:")
    assert status["model"] == {"registry": "proxied", "name": model, "version": "1", "uri": f"{uri}/{BEST}/model.pt"}
    registered = next(item for item in status["conditions"] if item["type"] == "Registered")
    assert registered["status"] == "True" and f"model {model} version 1" in registered["message"]
    assert f"registered as model {model} version 1 in registry proxied" in status["message"]
    reasons = [event["reason"] for event in sweep_events(kube_cluster, namespace)]
    assert reasons.count("ModelRegistered") == 1, reasons
    described = trainrun(kube_cluster, "-n", namespace, "describe", "sweep", "tune")
    assert described.returncode == 0, described.stderr
    print(described.stdout)
    assert f"{model} version 1 in registry proxied" in described.stdout.replace("\n", " ")
