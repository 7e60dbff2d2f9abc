"""The artifact copy in the cluster: PyTorchJob Succeeded -> Uploading -> the uploader Job -> Completed.

Real parts throughout: the kwok control plane and training-operator, the operator as a process with
only its ServiceAccount's rights (the RBAC of manifests/), and a SeaweedFS S3 server. kwok only simulates the uploader pod's outcome, so the test runs the very
command that pod runs (``trainrun upload /outputs <uri>`` with the Secret's variables) against the
S3 server itself; the operator then reads the manifest from the bucket into ``status.artifacts``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from cluster.harness import ClusterError, KubeCluster, Outcome, pod_behaviour, wait_until, write_cri_log
from runs import (
    OperatorProcess,
    bucket_secret,
    get_run,
    kubectl_apply,
    operator_with_shipped_rbac,
    training_run,
    volume_for_claim,
    wait_for_phase,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "storage"))
from seaweedfs import ACCESS_KEY, BUCKET, SECRET_KEY, SeaweedFS, boto3_client_for  # noqa: E402

pytestmark = pytest.mark.cluster
__all__ = ["operator_with_shipped_rbac"]  # a fixture, used by name


@pytest.mark.parametrize("own_claim", [True, False], ids=["users-claim-kept", "per-run-claim-released"])
def test_succeeded_training_is_uploaded_and_recorded(
    kube_cluster: KubeCluster,
    operator_with_shipped_rbac: OperatorProcess,
    kube_namespace: str,
    s3_server: SeaweedFS,
    tmp_path: Path,
    own_claim: bool,
) -> None:
    # The operator authenticates as its ServiceAccount here: the whole flow (job, claim, Secret, uploader
    # Job, pod logs, Events, claim release) must work with only the RBAC that manifests/ installs.
    operator = operator_with_shipped_rbac
    namespace = kube_namespace
    uri = f"s3://{BUCKET}/runs/{uuid.uuid4().hex[:8]}/art"
    secret_env = bucket_secret(kube_cluster, namespace, s3_server.endpoint)
    volume_for_claim(kube_cluster, namespace, "art-outputs", tmp_path / "volume", create_claim=own_claim)
    kube_cluster.serve_pod_log(namespace, "art-master-0", write_cri_log(tmp_path / "master.log", ["epoch 1 done", 'trainrun:metric {"val_loss": 0.2}']))
    document = training_run(
        "art",
        namespace,
        output={"uri": uri, "secretName": "s3-creds", "volume": {"claimName": "art-outputs"} if own_claim else {"size": "5Gi"}},
        podMetadata={"annotations": pod_behaviour(Outcome.SUCCEED, after="3s")},
    )
    kubectl_apply(kube_cluster, document)
    wait_for_phase(kube_cluster, operator, "art", namespace, "Uploading", timeout=120)

    uploader = wait_until(lambda: kube_cluster.get("job", "art-upload", namespace), timeout=30, what="the uploader Job")
    pod_spec = uploader["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    assert container["command"] == ["trainrun", "upload", "/outputs", uri]
    assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert {"name": "outputs", "mountPath": "/outputs", "readOnly": True} in container["volumeMounts"]
    assert pod_spec["volumes"][0] == {"name": "outputs", "persistentVolumeClaim": {"claimName": "art-outputs"}}
    assert uploader["metadata"]["ownerReferences"][0]["name"] == "art"

    # What the uploader pod does, for real: the trainer's output folder to the bucket.
    outputs = tmp_path / "outputs"
    (outputs / "checkpoints").mkdir(parents=True)
    (outputs / "model.pt").write_bytes(b"weights" * 1000)
    (outputs / "checkpoints" / "epoch-0001.pt").write_bytes(b"checkpoint")
    (outputs / "run.json").write_text(json.dumps({"epochs": 1}))
    upload = subprocess.run(
        [str(Path(sys.executable).parent / "trainrun"), "upload", str(outputs), uri],
        env={**kube_cluster.env(), **secret_env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert upload.returncode == 0, upload.stderr
    assert ACCESS_KEY not in upload.stdout + upload.stderr and SECRET_KEY not in upload.stdout + upload.stderr

    run = wait_for_phase(kube_cluster, operator, "art", namespace, "Completed", timeout=120)
    artifacts = run["status"]["artifacts"]
    ready = next(item for item in run["status"]["conditions"] if item["type"] == "Ready")
    assert ready["status"] == "True"
    assert run["status"]["logs"] == {"uri": f"{uri}/logs", "sealed": True, "complete": True, "gaps": [], "started": ["master-0", "worker-0"]}

    s3 = boto3_client_for(s3_server.endpoint)
    prefix = uri.removeprefix(f"s3://{BUCKET}/")
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{prefix}/manifest.json")["Body"].read())
    # The outputs the uploader copied and the logs the operator composed, in one manifest.
    paths = [entry["path"] for entry in manifest["files"]]
    assert paths == ["checkpoints/epoch-0001.pt", "logs/master-0.log", "logs/metrics.jsonl", "model.pt", "run.json"], paths
    assert artifacts == {
        "uri": uri,
        "manifestUri": f"{uri}/manifest.json",
        "fileCount": 5,
        "bytes": sum(entry["size"] for entry in manifest["files"]),
    }
    for entry in manifest["files"]:
        body = s3.get_object(Bucket=BUCKET, Key=f"{prefix}/{entry['path']}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == entry["sha256"] and len(body) == entry["size"]
    # A user reads and fetches them by the run's name (the URI comes from its status).
    cli = [str(Path(sys.executable).parent / "trainrun"), "-n", namespace, "artifacts", "art"]
    listed = subprocess.run([*cli, "-o", "json"], env={**kube_cluster.env(), **secret_env}, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == {"uri": uri, "manifest": manifest}
    fetched = subprocess.run(
        [*cli, "--download", str(tmp_path / "fetched")], env={**kube_cluster.env(), **secret_env}, capture_output=True, text=True, timeout=60
    )
    assert fetched.returncode == 0, fetched.stderr
    assert "verified against manifest.json" in fetched.stdout
    assert (tmp_path / "fetched" / "model.pt").read_bytes() == b"weights" * 1000
    # The operator archived the followed replica log beside the artifacts, and the download has it.
    assert _object(s3, f"{prefix}/logs/master-0.log") == 'epoch 1 done\ntrainrun:metric {"val_loss": 0.2}\n'
    assert (tmp_path / "fetched" / "logs" / "master-0.log").read_text().startswith("epoch 1 done\n")
    series = [json.loads(line) for line in (tmp_path / "fetched" / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [(record["replica"], record["val_loss"]) for record in series] == [("master-0", 0.2)]
    # The per-run claim is deleted after the verified copy (Kubernetes' pvc-protection keeps it until
    # the finished pods that mounted it are cleaned up); the user's own claim stays.
    claim = kube_cluster.get("pvc", "art-outputs", namespace)
    if own_claim:
        assert claim is not None and "deletionTimestamp" not in claim["metadata"]
    else:
        wait_until(
            lambda: (kube_cluster.get("pvc", "art-outputs", namespace) or {"metadata": {"deletionTimestamp": "gone"}})[
                "metadata"
            ].get("deletionTimestamp"),
            timeout=60,
            what="the per-run claim to be deleted",
        )
    # Nothing secret leaked into status or Events.
    events = kube_cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert SECRET_KEY not in json.dumps(get_run(kube_cluster, "art", namespace)) and SECRET_KEY not in events


def _object(s3: Any, key: str) -> str | None:
    try:
        return str(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode())
    except s3.exceptions.NoSuchKey:
        return None


def test_pods_refused_by_a_resource_quota_are_explained(
    kube_cluster: KubeCluster, operator_with_shipped_rbac: OperatorProcess, kube_namespace: str, tmp_path: Path
) -> None:
    namespace = kube_namespace
    # A quota on the memory that pods with requests ask for. The API server refuses those pods outright,
    # so the only trace is an Event on the object that tried to create them: the run must relay it.
    kube_cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "compute", "namespace": namespace},
            "spec": {"hard": {"requests.memory": "100Mi"}, "scopes": ["NotBestEffort"]},
        }
    )

    def status(name: str) -> dict[str, Any]:
        return dict(get_run(kube_cluster, name, namespace).get("status") or {})

    def wait_for_reason(name: str, reason: str, what: str, message_starts: str = "") -> dict[str, Any]:
        def said() -> dict[str, Any] | None:
            now = status(name)
            return now if now.get("reason") == reason and str(now.get("message")).startswith(message_starts) else None

        try:
            return wait_until(said, timeout=120, what=what)
        except ClusterError as error:
            events = kube_cluster.kubectl("get", "events", "-n", namespace).stdout
            raise AssertionError(f"{error}\nstatus: {status(name)}\nevents:\n{events}") from None

    # 1. The training-operator gives each Worker an init container with limits, so the Worker pod falls under
    #    the quota and needs memory requests the run did not set: the Master starts, the Worker never exists.
    kubectl_apply(kube_cluster, training_run("no-memory", namespace, podMetadata={"annotations": pod_behaviour(Outcome.SUCCEED, after="2s")}))
    #    No retry passes until the spec sets memory (or the quota changes): the run is stalled (issue 24).
    #    (Until the watch lists the Master's pod the message speaks of "the pods": wait for the settled one.)
    refused = wait_for_reason(
        "no-memory",
        "ResourcesRequired",
        "the run to say why its Worker has no pod",
        message_starts="the training-operator cannot create replica worker-0: ",
    )
    assert refused["phase"] == "Queued"
    assert "must specify requests.memory" in refused["message"]
    assert {item["type"]: item["status"] for item in refused["conditions"]}["Stalled"] == "True"

    # 2. With memory set the replicas fit and train; then the uploader (helper containers ask 512Mi) is refused.
    volume_for_claim(kube_cluster, namespace, "quota-outputs", tmp_path / "volume", create_claim=False)
    document = training_run(
        "quota",
        namespace,
        resources={"memory": "10Mi"},
        output={"uri": f"s3://{BUCKET}/runs/{uuid.uuid4().hex[:8]}/quota", "volume": {"size": "1Gi"}},
        podMetadata={"annotations": pod_behaviour(Outcome.SUCCEED, after="2s")},
    )
    kubectl_apply(kube_cluster, document)
    refused = wait_for_reason("quota", "UploaderNotCreated", "the run to say why its uploader has no pod")
    assert refused["phase"] == "Uploading"
    assert refused["message"].startswith("training succeeded, but the uploader pod cannot be created: ")
    assert "exceeded quota: compute" in refused["message"] and "requests.memory=512Mi" in refused["message"]

    # Once the quota is gone the Job controller creates the pod, and the message says so.
    kube_cluster.kubectl("delete", "resourcequota", "compute", "-n", namespace)
    copying = wait_for_reason("quota", "Uploading", "the uploader pod to be created after the quota was removed")
    assert copying["message"].startswith("copying $OUTPUT_DIR to s3://")
