"""Model registration and experiment tracking against a real MLflow server, on the kwok cluster.

Real parts: the control plane and training-operator, the operator as a process, a SeaweedFS S3 server
holding the copies, and ``mlflow server`` (3.17.2, sqlite store) as the registry, read back with mlflow's
own ``MlflowClient``. As in test_artifacts.py, kwok only plays the pods: the test runs the uploader pod's
command (``trainrun upload``) itself. The operator configuration (its ConfigMap) names two registries:
``mlflow`` (the server, the default) and ``down`` (a port nothing listens on).
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster.harness import KubeCluster, Outcome, pod_behaviour, wait_until, write_cri_log
from mlflow_server import CallProxy, MlflowServer, mlflow_client
from ports import free_port
from runs import (
    OPERATOR_NAMESPACE,
    OperatorProcess,
    bucket_secret,
    condition,
    events_of,
    get_run,
    kubectl_apply,
    operator,
    training_run,
    volume_for_claim,
    wait_for_phase,
)
from seaweedfs import BUCKET, SeaweedFS
from trainrun.spec.config import CONFIG_MAP_KEY, CONFIG_MAP_NAME

pytestmark = pytest.mark.cluster
__all__ = ["operator"]  # a fixture, used by name
TRAINRUN = str(Path(sys.executable).parent / "trainrun")
EXPERIMENT = "registry-tests"
# What the Master prints: a metric series with steps, then the final line.
MASTER_LOG = [
    "epoch 1 starting",
    'trainrun:metric {"epoch": 1, "step": 10, "train_loss": 2.0}',
    'trainrun:metric {"epoch": 1, "step": 20, "train_loss": 1.5}',
    'trainrun:metric {"epoch": 1, "step": 30, "train_loss": 1.25, "val_loss": 0.75}',
    'trainrun:metric {"epoch": 1, "step": 30, "val_loss": 0.75, "final": true}',
]


@pytest.fixture(scope="module")
def registry_config(kube_cluster: KubeCluster, mlflow_server: MlflowServer) -> Iterator[dict[str, Any]]:
    """The operator configuration with the registries (and tracking) of these tests; the shipped one after."""
    found = kube_cluster.get("configmap", CONFIG_MAP_NAME, OPERATOR_NAMESPACE)
    assert found is not None, "up.sh installs the operator's ConfigMap"
    shipped = found["data"][CONFIG_MAP_KEY]
    config = yaml.safe_load(shipped) or {}
    config["registries"] = {
        "mlflow": {"type": "mlflow", "uri": mlflow_server.uri},
        "down": {"type": "mlflow", "uri": f"http://127.0.0.1:{free_port()}"},
    }
    config["defaultRegistry"] = "mlflow"
    config["tracking"] = {"registry": "mlflow", "experiment": EXPERIMENT}
    _write_config(kube_cluster, yaml.safe_dump(config))
    try:
        yield config
    finally:
        _write_config(kube_cluster, shipped)


def _write_config(cluster: KubeCluster, text: str) -> None:
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": CONFIG_MAP_NAME, "namespace": OPERATOR_NAMESPACE},
            "data": {CONFIG_MAP_KEY: text},
        }
    )


@pytest.fixture(scope="module")
def registry_operator(operator: OperatorProcess, registry_config: dict[str, Any]) -> OperatorProcess:
    """The operator (runs.py's, checked for tracebacks at the end) with the registries of these tests."""
    return operator


@pytest.fixture
def storage(kube_cluster: KubeCluster, kube_namespace: str, s3_server: SeaweedFS) -> dict[str, str]:
    """The S3 server's settings, as the Secret s3-creds of the test's namespace holds them."""
    return bucket_secret(kube_cluster, kube_namespace, s3_server.endpoint)


def start_run(
    cluster: KubeCluster, namespace: str, name: str, folder: Path, *, register: dict[str, Any], uri: str | None = None
) -> str:
    """A run whose Master prints MASTER_LOG and succeeds; its output URI."""
    uri = uri or f"s3://{BUCKET}/models/{uuid.uuid4().hex[:8]}/{name}"
    (folder / name).mkdir(parents=True, exist_ok=True)
    volume_for_claim(cluster, namespace, f"{name}-outputs", folder / name / "volume", create_claim=False)
    cluster.serve_pod_log(namespace, f"{name}-master-0", write_cri_log(folder / name / "master.log", MASTER_LOG))
    document = training_run(
        name,
        namespace,
        distribution={"workers": 0},
        output={"uri": uri, "secretName": "s3-creds", "volume": {"size": "1Gi"}, "register": register},
        podMetadata={"annotations": pod_behaviour(Outcome.SUCCEED, after="2s")},
    )
    kubectl_apply(cluster, document)
    return uri


def copy_outputs(cluster: KubeCluster, storage: dict[str, str], folder: Path, uri: str) -> None:
    """What the uploader pod does: the outputs (a model file and a folder) to the bucket, manifest last."""
    outputs = folder / "outputs"
    (outputs / "triton" / "1").mkdir(parents=True)
    (outputs / "model.pt").write_bytes(b"weights" * 100)
    (outputs / "triton" / "1" / "model.pt").write_bytes(b"traced" * 100)
    upload = subprocess.run(
        [TRAINRUN, "upload", str(outputs), uri], env={**cluster.env(), **storage}, capture_output=True, text=True, timeout=180
    )
    assert upload.returncode == 0, upload.stderr


def versions(server: MlflowServer, name: str) -> list[dict[str, Any]]:
    """The model's versions as mlflow's own client reads them, oldest first."""
    return list(
        mlflow_client(
            server,
            "result = sorted(({'version': int(v.version), 'source': v.source, 'tags': v.tags, 'run_id': v.run_id}"
            " for v in client.search_model_versions(f\"name='{name}'\")), key=lambda v: v['version'])",
            name=name,
        )
    )


def test_runs_register_versions_one_and_two(
    kube_cluster: KubeCluster,
    registry_operator: OperatorProcess,
    kube_namespace: str,
    storage: dict[str, str],
    mlflow_server: MlflowServer,
    tmp_path: Path,
) -> None:
    namespace, model = kube_namespace, f"birds-{uuid.uuid4().hex[:6]}"
    uids, uris = [], []
    for number, name in enumerate(("birds-a", "birds-b"), start=1):
        uri = start_run(kube_cluster, namespace, name, tmp_path, register={"name": model, "path": "model.pt", "tags": {"team": "vision"}})
        wait_for_phase(kube_cluster, registry_operator, name, namespace, "Uploading", timeout=120)
        copy_outputs(kube_cluster, storage, tmp_path / name, uri)
        run = wait_for_phase(kube_cluster, registry_operator, name, namespace, "Completed", timeout=180)
        status = run["status"]
        assert status["model"] == {"registry": "mlflow", "name": model, "version": str(number), "uri": f"{uri}/model.pt"}
        registered = condition(run, "Registered")
        assert registered["status"] == "True" and f"version {number}" in registered["message"]
        assert f"registered as model {model} version {number} in registry mlflow" in status["message"]
        reasons = [event["reason"] for event in events_of(kube_cluster, name, namespace)]
        assert reasons.count("ModelRegistered") == 1, reasons
        uids.append(run["metadata"]["uid"])
        uris.append(uri)

    found = versions(mlflow_server, model)
    assert [item["version"] for item in found] == [1, 2]
    for item, uid, uri, name in zip(found, uids, uris, ("birds-a", "birds-b"), strict=True):
        tags = item["tags"]
        assert item["source"] == f"{uri}/model.pt"  # the verified copy's URI, never the claim
        assert tags["trainrun.run_uid"] == uid
        assert tags["trainrun.run"] == name and tags["trainrun.namespace"] == namespace
        assert tags["trainrun.image"] == "ghcr.io/trainrun/trainer:0.1.0"
        assert tags["trainrun.manifest"] == f"{uri}/manifest.json"
        assert tags["trainrun.manifest_sha256"].startswith("sha256:")
        assert tags["metric.val_loss"] == "0.75" and tags["metric.train_loss"] == "1.25"
        assert tags["param.epochs"] == "1" and tags["team"] == "vision"
        assert item["run_id"], "a tracked run's version is linked to its MLflow run"
    # The CLI, with the registry the cluster's operator configuration names: the versions, and one downloaded.
    env = {**kube_cluster.env(), **storage}
    env.pop("MLFLOW_TRACKING_URI", None)
    listed = subprocess.run([TRAINRUN, "models", model], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    print(listed.stdout)
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["REGISTRY", "NAME", "VERSION", "RUN", "METRICS", "CREATED"]
    assert lines[1].split()[:6] == ["mlflow", model, "1", f"{namespace}/birds-a", "train_loss=1.25", "val_loss=0.75"]
    assert lines[2].split()[:4] == ["mlflow", model, "2", f"{namespace}/birds-b"]
    fetched = subprocess.run(
        [TRAINRUN, "models", "download", f"{model}:1", str(tmp_path / "fetched")], env=env, capture_output=True, text=True, timeout=120
    )
    assert fetched.returncode == 0, fetched.stderr
    assert f"verified against {uris[0]}/manifest.json" in fetched.stdout
    assert (tmp_path / "fetched" / "model.pt").read_bytes() == b"weights" * 100
    wide = subprocess.run([TRAINRUN, "-n", namespace, "get", "-o", "wide"], env=env, capture_output=True, text=True, timeout=60)
    assert wide.returncode == 0 and "MODEL" in wide.stdout.splitlines()[0] and f"{model}:2" in wide.stdout, wide.stdout
    print(wide.stdout)

    # The tracked run: params, the metric series with its steps, the final status.
    tracked = mlflow_client(
        mlflow_server,
        "run = client.get_run(run_id)\n"
        "result = {'params': run.data.params, 'tags': run.data.tags, 'status': run.info.status,"
        " 'train_loss': [(m.step, m.value) for m in client.get_metric_history(run_id, 'train_loss')],"
        " 'val_loss': [(m.step, m.value) for m in client.get_metric_history(run_id, 'val_loss')],"
        " 'experiment': client.get_experiment(run.info.experiment_id).name}",
        run_id=found[0]["run_id"],
    )
    assert tracked["experiment"] == EXPERIMENT
    assert tracked["params"]["epochs"] == "1"
    assert sorted(map(tuple, tracked["train_loss"])) == [(10, 2.0), (20, 1.5), (30, 1.25)]
    assert [step for step, _ in tracked["val_loss"]] == [30]  # the final line repeats the epoch's: sent once
    assert tracked["tags"]["trainrun.run_uid"] == uids[0] and tracked["tags"]["trainrun.phase"] == "Completed"
    assert tracked["status"] == "FINISHED"


def test_operator_killed_around_registration_makes_one_version_per_run(
    kube_cluster: KubeCluster,
    registry_operator: OperatorProcess,
    registry_config: dict[str, Any],
    kube_namespace: str,
    storage: dict[str, str],
    mlflow_server: MlflowServer,
    tmp_path: Path,
) -> None:
    """Ten runs; the operator is SIGKILLed ten times, each time right after MLflow created a version and
    before the operator heard of it (a proxy in front of the server kills it there), so each restarted
    operator must find the version by the run's uid instead of making another."""
    namespace, model = kube_namespace, f"kills-{uuid.uuid4().hex[:6]}"
    kills: list[float] = []
    kills_wanted = 10

    def kill(path: str) -> None:
        if len(kills) < kills_wanted:
            registry_operator.kill()
            kills.append(time.monotonic())

    proxy = CallProxy(mlflow_server.uri, ("model-versions/create",), kill)
    config = {**registry_config, "registries": {**registry_config["registries"], "proxied": {"type": "mlflow", "uri": proxy.uri}}}
    _write_config(kube_cluster, yaml.safe_dump(config))
    try:
        names = [f"kill-{index}" for index in range(10)]
        uris = {name: start_run(kube_cluster, namespace, name, tmp_path, register={"name": model, "registry": "proxied"}) for name in names}
        for name in names:
            wait_for_phase(kube_cluster, registry_operator, name, namespace, "Uploading", timeout=240)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda name: copy_outputs(kube_cluster, storage, tmp_path / name, uris[name]), names))

        def all_completed() -> bool:
            if not registry_operator.running():
                registry_operator.start()  # as the kubelet restarts a killed container
            phases = [(get_run(kube_cluster, name, namespace).get("status") or {}).get("phase") for name in names]
            return all(phase == "Completed" for phase in phases)

        wait_until(all_completed, timeout=600, what="the ten runs to be Completed through the kills", interval=0.5)
    finally:
        proxy.close()
        _write_config(kube_cluster, yaml.safe_dump(registry_config))

    found = versions(mlflow_server, model)
    by_uid: dict[str, list[int]] = {}
    for item in found:
        by_uid.setdefault(item["tags"]["trainrun.run_uid"], []).append(item["version"])
    assert len(kills) == kills_wanted, f"only {len(kills)} kills between a version's creation and the status write"
    assert sorted(item["version"] for item in found) == list(range(1, 11)), found
    for name in names:
        run = get_run(kube_cluster, name, namespace)
        assert by_uid[run["metadata"]["uid"]] == [int(run["status"]["model"]["version"])], (name, by_uid)
        assert run["status"]["model"]["uri"] == uris[name]  # no path: the whole output
        reasons = [event["reason"] for event in events_of(kube_cluster, name, namespace)]
        assert reasons.count("ModelRegistered") == 1, (name, reasons)
    # Each run's tracked MLflow run went through the same restarts: its series holds every step once.
    series = mlflow_client(
        mlflow_server,
        "runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)\n"
        "result = {r.data.tags.get('trainrun.run_uid'): [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, 'train_loss')]"
        " for r in runs}",
        experiment=EXPERIMENT,
    )
    for name in names:
        uid = get_run(kube_cluster, name, namespace)["metadata"]["uid"]
        assert sorted(map(tuple, series[uid])) == [(10, 2.0), (20, 1.5), (30, 1.25)], (name, series[uid])
    found_again = [line for line in registry_operator.output().splitlines() if "found the version registered before" in line]
    assert len(found_again) >= kills_wanted, "\n".join(found_again)
    print(f"{len(kills)} kills, each after a version was created; {len(found_again)} versions found again by the run's uid")


def test_bad_registration_input(
    kube_cluster: KubeCluster,
    registry_operator: OperatorProcess,
    registry_config: dict[str, Any],
    kube_namespace: str,
    storage: dict[str, str],
    tmp_path: Path,
) -> None:
    namespace = kube_namespace
    # 1. An unknown registry key: refused by trainrun validate (with the operator's configuration) ...
    document = training_run("unknown", namespace, output={"uri": f"s3://{BUCKET}/m/unknown", "register": {"name": "m", "registry": "nope"}})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(document))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(registry_config))
    judged = subprocess.run(
        [TRAINRUN, "validate", str(tmp_path / "run.yaml"), "--config", str(tmp_path / "config.yaml")], capture_output=True, text=True, timeout=60
    )
    assert judged.returncode == 1
    assert "spec.output.register.registry: unknown registry 'nope'; the operator knows: down, mlflow" in judged.stdout
    # ... and by the operator, before anything is created.
    kubectl_apply(kube_cluster, document)
    stalled = wait_until(
        lambda: (run := get_run(kube_cluster, "unknown", namespace)).get("status", {}).get("reason") == "RegistryNotFound" and run or None,
        timeout=60,
        what="the unknown registry to be refused",
    )
    assert "spec.output.register.registry: unknown registry 'nope'" in stalled["status"]["message"]
    assert condition(stalled, "Stalled")["status"] == "True"
    assert kube_cluster.get("pytorchjob", "unknown", namespace) is None

    # 2. A registry that is down: retried with back-off, the run Uploading with the registry's words.
    uri = start_run(kube_cluster, namespace, "down", tmp_path, register={"name": "m-down", "registry": "down"})
    wait_for_phase(kube_cluster, registry_operator, "down", namespace, "Uploading", timeout=120)
    copy_outputs(kube_cluster, storage, tmp_path / "down", uri)

    def retried() -> dict[str, Any] | None:
        status = get_run(kube_cluster, "down", namespace).get("status") or {}
        return status if "(attempt 2)" in (status.get("message") or "") else None

    status = wait_until(retried, timeout=90, what="the second failed try of the registration")
    assert status["phase"] == "Uploading" and status["reason"] == "RegistryUnavailable"
    assert status["message"].startswith("registering model m-down in registry down: MLflow at http://127.0.0.1:")
    assert "cannot be reached" in status["message"] and "trying again in 10 s, at " in status["message"]
    failing = [event["message"] for event in events_of(kube_cluster, "down", namespace) if event["reason"] == "RegistryFailing"]
    assert len(failing) == 1, failing  # once when the registry starts failing, not once a try

    # 3. A model path that is not in the outputs: Completed, its artifacts safe, Registered=False naming the field.
    uri = start_run(kube_cluster, namespace, "nopath", tmp_path, register={"name": "m-path", "path": "missing/model.pt"})
    wait_for_phase(kube_cluster, registry_operator, "nopath", namespace, "Uploading", timeout=120)
    copy_outputs(kube_cluster, storage, tmp_path / "nopath", uri)
    run = wait_for_phase(kube_cluster, registry_operator, "nopath", namespace, "Completed", timeout=120)
    registered = condition(run, "Registered")
    assert registered["status"] == "False" and registered["reason"] == "RegistrationRefused"
    assert registered["message"].startswith("spec.output.register.path: 'missing/model.pt' is not in the copied outputs")
    assert "model.pt, triton" in registered["message"]
    assert run["status"]["artifacts"]["fileCount"] == 4 and "model" not in run["status"]
    assert "RegistrationRefused" in [event["reason"] for event in events_of(kube_cluster, "nopath", namespace)]

    # 4. A registry that refuses: MLflow takes no local file as a version's source (file:// output).
    local_uri = f"file://{tmp_path / 'bucket' / 'local'}"
    start_run(kube_cluster, namespace, "refused", tmp_path, register={"name": "m-refused"}, uri=local_uri)
    wait_for_phase(kube_cluster, registry_operator, "refused", namespace, "Uploading", timeout=120)
    copy_outputs(kube_cluster, storage, tmp_path / "refused", local_uri)
    run = wait_for_phase(kube_cluster, registry_operator, "refused", namespace, "Completed", timeout=120)
    registered = condition(run, "Registered")
    assert registered["status"] == "False"
    assert "refused model-versions/create: INVALID_PARAMETER_VALUE: Invalid model version source" in registered["message"]
    assert "the model was not registered: MLflow at" in run["status"]["message"]

