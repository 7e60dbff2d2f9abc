"""The TrainJob backend on the real Kubeflow Trainer v2 and JobSet: the same runs, the same words.

The operator runs against the platform cluster (``platform_cluster``: JobSet v0.11, Trainer v2.3 and Kueue
v0.19 beside the training-operator) with ``backend: TrainJob`` in its configuration. A run becomes a TrainJob
of the shipped runtime (manifests/trainer-v2), Trainer makes the JobSet, JobSet the Job and the pods, kwok
runs them on the GPU pools; nothing in between is faked. What must hold, as on the PyTorchJob backend:
a run goes Queued -> Running -> Uploading -> Completed with its logs archived and its copy verified; a
failing run is Failed at the backoff limit naming the replica and its exit; a hung run is restarted as a new TrainJob once
(its uid changes), then fails at its restart limit. The environment every node's program sees is the
PyTorchJob's: tests/integration/test_replica_contract.py checks it on both backends.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster.harness import KubeCluster, Outcome, pod_behaviour, wait_until, write_cri_log
from runs import (
    OperatorProcess,
    bucket_secret,
    events_of,
    get_run,
    kubectl_apply,
    operator_on_backend,
    training_run,
    volume_for_claim,
    wait_for_phase,
)
from seaweedfs import BUCKET, SeaweedFS, boto3_client_for

pytestmark = pytest.mark.cluster

TRAINRUN = str(Path(sys.executable).parent / "trainrun")
RANK_LABEL = "batch.kubernetes.io/job-completion-index"


@pytest.fixture(scope="module")
def trainjob_operator(platform_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The operator on the platform cluster, its configuration choosing the TrainJob backend."""
    log = tmp_path_factory.mktemp("trainjob-operator") / "operator.log"
    with operator_on_backend(platform_cluster, "TrainJob", log) as process:
        yield process


@pytest.fixture
def namespace(platform_cluster: KubeCluster) -> Iterator[str]:
    with platform_cluster.scratch_namespace("trainjob") as name:
        yield name


def trainjob_uid(cluster: KubeCluster, name: str, namespace: str) -> str | None:
    found = cluster.get("trainjob", name, namespace)
    return str(found["metadata"]["uid"]) if found is not None else None


def node_pods(cluster: KubeCluster, name: str, namespace: str) -> list[dict[str, Any]]:
    pods = cluster.list_objects("pods", namespace, f"trainrun.dev/run={name},app.kubernetes.io/component=replica")
    return sorted(pods, key=lambda pod: int(pod["metadata"]["labels"][RANK_LABEL]))


def test_a_run_completes_as_a_trainjob_with_its_logs_archived_and_its_copy_verified(
    platform_cluster: KubeCluster, trainjob_operator: OperatorProcess, namespace: str, s3_server: SeaweedFS, tmp_path: Path
) -> None:
    cluster, operator = platform_cluster, trainjob_operator
    uri = f"s3://{BUCKET}/runs/{uuid.uuid4().hex[:8]}/tj"
    secret_env = bucket_secret(cluster, namespace, s3_server.endpoint)
    volume_for_claim(cluster, namespace, "tj-outputs", tmp_path / "volume", create_claim=False)
    cluster.serve_namespace_logs(namespace, write_cri_log(tmp_path / "node.log", ["node up", 'trainrun:metric {"val_loss": 0.2}']))
    annotations = {**pod_behaviour(Outcome.SUCCEED, after="6s"), "kwok.trainrun.dev/start-after": "2s"}
    document = training_run(
        "tj",
        namespace,
        resources={"pool": "a100", "gpus": 1},
        output={"uri": uri, "secretName": "s3-creds", "volume": {"size": "5Gi"}},
        podMetadata={"annotations": annotations},
    )
    kubectl_apply(cluster, document)
    seen: list[str] = []
    run = wait_for_phase(cluster, operator, "tj", namespace, "Running", timeout=180, seen=seen)
    trainjob = cluster.get("trainjob", "tj", namespace)
    assert trainjob is not None and trainjob["spec"]["runtimeRef"]["name"] == "trainrun-torch"
    assert cluster.get("pytorchjob", "tj", namespace) is None
    assert run["status"]["jobName"] == "tj" and run["status"]["message"] == "training: 2 of 2 replicas running"
    pods = node_pods(cluster, "tj", namespace)
    assert [pod["spec"]["nodeSelector"]["trainrun.dev/pool"] for pod in pods] == ["a100", "a100"]
    assert [pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] for pod in pods] == ["1", "1"]

    wait_for_phase(cluster, operator, "tj", namespace, "Uploading", timeout=180, seen=seen)
    uploader = wait_until(lambda: cluster.get("job", "tj-upload", namespace), timeout=30, what="the uploader Job")
    mount = uploader["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]
    assert (mount["mountPath"], mount["subPath"]) == ("/outputs", "node-0")  # the Master's $OUTPUT_DIR
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    (outputs / "model.pt").write_bytes(b"weights")
    upload = subprocess.run([TRAINRUN, "upload", str(outputs), uri], env={**cluster.env(), **secret_env}, capture_output=True, text=True, timeout=120)
    assert upload.returncode == 0, upload.stderr
    run = wait_for_phase(cluster, operator, "tj", namespace, "Completed", timeout=180, seen=seen)
    assert seen[-3:] == ["Running", "Uploading", "Completed"], seen
    status = run["status"]
    assert status["logs"] == {"uri": f"{uri}/logs", "sealed": True, "complete": True, "gaps": [], "started": ["master-0", "worker-0"]}
    assert status["replicas"] == {"Master": {"active": 0, "succeeded": 1, "failed": 0}, "Worker": {"active": 0, "succeeded": 1, "failed": 0}}
    assert status["metrics"] == {"val_loss": 0.2}
    prefix = uri.removeprefix(f"s3://{BUCKET}/")
    manifest = json.loads(boto3_client_for(s3_server.endpoint).get_object(Bucket=BUCKET, Key=f"{prefix}/manifest.json")["Body"].read())
    # The uploader pod's log is archived too, under its pod's name.
    paths = [entry["path"] for entry in manifest["files"]]
    uploader_logs = [path for path in paths if path.startswith("logs/tj-upload-")]
    assert len(uploader_logs) == 1, paths
    assert paths == sorted(["logs/master-0.log", "logs/metrics.jsonl", *uploader_logs, "logs/worker-0.log", "model.pt"])
    assert status["artifacts"]["fileCount"] == 5
    messages = [event["message"] for event in events_of(cluster, "tj", namespace)]
    assert any(message.startswith("Uploading -> Completed: training succeeded; 5 files") for message in messages), messages
    # `trainrun logs` finds either backend's pods (by the run's labels) and names them as replicas.
    printed = subprocess.run([TRAINRUN, "-n", namespace, "logs", "tj"], env={**cluster.env(), **secret_env}, capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    assert "[master-0] node up" in printed.stdout and "[worker-0] node up" in printed.stdout


def test_a_failing_node_fails_the_run_at_the_backoff_limit_naming_the_replica(
    platform_cluster: KubeCluster, trainjob_operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    cluster, operator = platform_cluster, trainjob_operator
    cluster.serve_namespace_logs(namespace, write_cri_log(tmp_path / "node.log", ["node up"]))
    fails = pod_behaviour(Outcome.FAIL, after="2s", exit_code=3)
    kubectl_apply(cluster, training_run("bad", namespace, distribution={"workers": 0}, podMetadata={"annotations": fails}))
    run = wait_for_phase(cluster, operator, "bad", namespace, "Failed", timeout=300)
    status = run["status"]
    assert status["reason"] == "BackoffLimitExceeded", status
    assert "(spec.runPolicy.backoffLimit=3)" in status["message"]
    assert "first failure: replica master-0 exited with code 3" in status["message"]  # as on a PyTorchJob (test_operator)
    stalled = next(item for item in status["conditions"] if item["type"] == "Stalled")
    assert stalled["status"] == "True"


def test_a_hung_run_is_restarted_as_a_new_trainjob_once_then_fails_at_its_limit(
    platform_cluster: KubeCluster, trainjob_operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    cluster, operator = platform_cluster, trainjob_operator
    steps = ['trainrun:progress {"step": 0, "total_steps": 100}', *(f'trainrun:metric {{"step": {step}, "loss": 0.5}}' for step in (10, 20))]
    cluster.serve_namespace_logs(namespace, write_cri_log(tmp_path / "node.log", steps))  # then nothing more
    policy = {"hangTimeoutSeconds": 10, "onHang": "Restart", "maxRestarts": 1, "restartBackoffSeconds": 2}
    kubectl_apply(cluster, training_run("hung", namespace, runPolicy=policy, podMetadata={"annotations": pod_behaviour(Outcome.RUN)}))
    wait_for_phase(cluster, operator, "hung", namespace, "Running", timeout=180)
    first = trainjob_uid(cluster, "hung", namespace)
    uids = {first}

    def failed() -> dict[str, Any] | None:
        uids.add(trainjob_uid(cluster, "hung", namespace))
        run = get_run(cluster, "hung", namespace)
        return run if run["status"].get("phase") == "Failed" else None

    run = wait_until(failed, timeout=300, what="the hung run restarted once and failed", interval=0.5)
    status = run["status"]
    assert status["reason"] == "RestartLimitExceeded", status
    assert [restart["cause"] for restart in status["restarts"]] == ["Hang"]
    created = {uid for uid in uids if uid is not None}
    assert len(created) == 2, created  # the first TrainJob and the one the restart made
    assert any(event["reason"] == "Restarting" for event in events_of(cluster, "hung", namespace))


def test_pods_the_cluster_refuses_are_named_with_its_words(
    platform_cluster: KubeCluster, trainjob_operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    """A TrainJob's pods come from JobSet's Job: its FailedCreate Events are the run's status, as the
    training-operator's are on a PyTorchJob (a quota of no pods here)."""
    cluster = platform_cluster
    cluster.apply(
        {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods", "namespace": namespace}, "spec": {"hard": {"pods": "0"}}}
    )
    kubectl_apply(cluster, training_run("refused", namespace, distribution={"workers": 0}))

    def refused() -> dict[str, Any] | None:
        status = get_run(cluster, "refused", namespace).get("status") or {}
        return status if status.get("reason") == "FailedCreatePod" else None

    try:
        status = wait_until(refused, timeout=120, what="the run to report the refusal")
    except Exception as error:
        raise AssertionError(f"{error}: {get_run(cluster, 'refused', namespace).get('status')}\n{trainjob_operator.log_tail()}") from None
    assert status["phase"] == "Queued"
    assert status["message"].startswith("JobSet's Job cannot create the pods: "), status["message"]
    assert "exceeded quota: no-pods" in status["message"], status["message"]
