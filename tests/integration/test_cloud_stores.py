"""The operator's storage path on GCS and Azure Blob, on the kwok cluster: what tests/integration/test_log_archive.py
and test_artifacts.py show on S3, against fake-gcs-server (https, a private CA) and Azurite.

(a) For each store: a run whose logs are archived while it trains, the operator SIGKILLed in the middle and
    started again; the run succeeds, the archive is sealed (every line once, in order, composed into one object
    per replica), the uploader's copy (the very command its pod runs, with the Secret's variables) and the
    composed log are in one manifest, the run is Completed with status.artifacts; checked with the store's own
    client. The credentials are the cloud's own: a service account's JSON (and the CA's PEM text) for GCS, a
    connection string for Azure; none of it in the status, the Events or the operator's output.
(b) Stores the operator cannot use, as a status naming the field and the store's words, never only a log line,
    nothing crashing: an Azure Secret without an account, a GCS bucket that does not exist, wrong Azure keys
    (each Running, status.logs and LogsComplete saying so, a StorageFailing Warning), and an az:// URI with no
    account and no Secret (stopped before any job, naming spec.output.uri).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from cluster.harness import KubeCluster, Outcome, pod_behaviour, wait_until
from emulators import Azurite, FakeGcs
from runs import (
    OperatorProcess,
    condition,
    events_of,
    get_run,
    kubectl_apply,
    training_run,
    volume_for_claim,
    wait_for_phase,
)
from stores_under_test import AzureUnderTest, GcsUnderTest, StoreUnderTest
from test_log_archive import NumberedLog

pytestmark = pytest.mark.cluster

LINES = 120
WRITE_SECONDS = 24.0


@pytest.fixture
def operator_process(kube_cluster: KubeCluster, kube_namespace: str, tmp_path: Path) -> Any:
    process = OperatorProcess(kube_cluster, tmp_path / "operator.log", args=["--namespace", kube_namespace])
    process.start()
    yield process
    process.stop()
    process.assert_no_traceback()


def secret_env(store: StoreUnderTest) -> dict[str, str]:
    """The Secret a platform team writes for the store: GCS a service account's key (and the CA's PEM text),
    Azure a connection string."""
    if isinstance(store, GcsUnderTest):
        assert store.server.tls is not None
        return {**store.env, "AWS_CA_BUNDLE": store.server.tls.ca.read_text()}
    assert isinstance(store, AzureUnderTest)
    return store.with_form("connection-string").env


def create_secret(cluster: KubeCluster, namespace: str, name: str, env: dict[str, str]) -> None:
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in env.items()},
        }
    )


def store_named(name: str, request: pytest.FixtureRequest) -> StoreUnderTest:
    if name == "gcs":
        server: FakeGcs = request.getfixturevalue("gcs_server")
        return GcsUnderTest(server)
    azurite: Azurite = request.getfixturevalue("azure_server")
    return AzureUnderTest(azurite)


@pytest.mark.parametrize("store_name", ["gcs", "azure"])
def test_archive_and_artifacts_on_the_store_through_an_operator_kill(
    kube_cluster: KubeCluster,
    kube_namespace: str,
    operator_process: OperatorProcess,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    store_name: str,
) -> None:
    namespace, operator = kube_namespace, operator_process
    store = store_named(store_name, request)
    env = secret_env(store)
    create_secret(kube_cluster, namespace, "store-creds", env)
    uri = store.uri(f"cluster-{store_name}")
    log = NumberedLog(tmp_path / "master.log", LINES, WRITE_SECONDS)
    volume_for_claim(kube_cluster, namespace, "arch-outputs", tmp_path / "volume", create_claim=False)
    kube_cluster.serve_pod_log(namespace, "arch-master-0", log.path)
    kubectl_apply(
        kube_cluster,
        training_run(
            "arch",
            namespace,
            distribution={"workers": 0},
            output={"uri": uri, "secretName": "store-creds", "volume": {"size": "1Gi"}},
            podMetadata={"annotations": pod_behaviour(Outcome.SUCCEED, after=f"{WRITE_SECONDS + 15:.0f}s")},
        ),
    )
    wait_for_phase(kube_cluster, operator, "arch", namespace, "Running", timeout=120)
    log.thread.start()
    wait_until(lambda: log.written >= LINES // 2, timeout=WRITE_SECONDS, what="half the lines written")
    operator.kill()  # mid-run: the next operator resumes the archive where its newest segment says
    time.sleep(3)
    operator.start()
    log.thread.join(timeout=WRITE_SECONDS * 3)
    run = wait_for_phase(kube_cluster, operator, "arch", namespace, "Uploading", timeout=180)
    wait_until(
        lambda: get_run(kube_cluster, "arch", namespace).get("status", {}).get("logs", {}).get("sealed"),
        timeout=120,
        what="the log archive sealed",
    )
    assert store.get(uri, "logs/master-0.log").decode().splitlines() == NumberedLog.expected(LINES)
    assert not [key for key in store.listing(f"{uri}/logs") if key.endswith(".seg")]

    outputs = tmp_path / "outputs"
    outputs.mkdir()
    (outputs / "model.pt").write_bytes(b"weights" * 1000)
    upload = subprocess.run(  # what the uploader pod runs, with the Secret's variables
        [sys.executable, "-m", "trainrun.cli", "upload", str(outputs), uri],
        env={**kube_cluster.env(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert upload.returncode == 0, upload.stderr
    run = wait_for_phase(kube_cluster, operator, "arch", namespace, "Completed", timeout=120)
    manifest = json.loads(store.get(uri, "manifest.json"))
    assert [entry["path"] for entry in manifest["files"]] == ["logs/master-0.log", "model.pt"]
    assert run["status"]["artifacts"]["fileCount"] == 2 and run["status"]["artifacts"]["uri"] == uri
    assert run["status"]["logs"] == {"uri": f"{uri}/logs", "sealed": True, "complete": True, "gaps": [], "started": ["master-0"]}
    assert condition(run, "LogsComplete")["status"] == "True"
    printed = json.dumps(run) + json.dumps(events_of(kube_cluster, "arch", namespace)) + operator.output() + upload.stdout
    assert not [secret for secret in store.secrets if secret in printed]
    assert operator.starts == 2


def test_stores_the_operator_cannot_use_are_the_runs_status_naming_the_field(
    kube_cluster: KubeCluster,
    kube_namespace: str,
    operator_process: OperatorProcess,
    tmp_path: Path,
    gcs_server: FakeGcs,
    azure_server: Azurite,
) -> None:
    namespace, operator = kube_namespace, operator_process
    azure, gcs = AzureUnderTest(azure_server), GcsUnderTest(gcs_server)
    no_account = {key: value for key, value in azure.env.items() if key != "AZURE_STORAGE_ACCOUNT_NAME"}
    create_secret(kube_cluster, namespace, "azure-no-account", no_account)
    create_secret(kube_cluster, namespace, "azure-wrong-key", azure.wrong_env)
    create_secret(kube_cluster, namespace, "gcs-creds", secret_env(gcs))
    folder = uuid.uuid4().hex[:8]
    cases = {
        # name: (output, the store's words in status.logs.message)
        "no-account": (
            {"uri": f"az://trainrun-test/{folder}/a", "secretName": "azure-no-account"},
            "no Azure storage account is named",
        ),
        "no-bucket": ({"uri": f"gs://no-such-bucket/{folder}/b", "secretName": "gcs-creds"}, "bucket 'no-such-bucket' does not exist"),
        "wrong-key": ({"uri": f"az://trainrun-test/{folder}/c", "secretName": "azure-wrong-key"}, "access denied"),
    }
    for name, (output, _) in cases.items():
        volume_for_claim(kube_cluster, namespace, f"{name}-outputs", tmp_path / name, create_claim=False)
        kubectl_apply(
            kube_cluster,
            training_run(
                name,
                namespace,
                distribution={"workers": 0},
                output={**output, "volume": {"size": "1Gi"}},
                podMetadata={"annotations": pod_behaviour(Outcome.SUCCEED, after="300s")},
            ),
        )
    kubectl_apply(kube_cluster, training_run("nowhere", namespace, output={"uri": f"az://trainrun-test/{folder}/d"}))

    prefix = "spec.output.uri: the replicas' logs are not being archived: "
    for name, (_, words) in cases.items():

        def said(name: str = name, words: str = words) -> dict[str, Any] | None:
            run = get_run(kube_cluster, name, namespace)
            status = run.get("status", {})
            message = status.get("logs", {}).get("message") or ""
            # The store is tried from the moment the master pod exists, so the message may come while the
            # run is still Queued; the failing store must not stop it from going on to Running.
            return run if status.get("phase") == "Running" and message.startswith(prefix) and words in message else None

        run = wait_until(said, timeout=120, what=f"run {name} to run on and say why its logs are not archived")
        status = run["status"]
        assert (status["logs"]["sealed"], status["logs"]["complete"]) == (False, False)
        logs_condition = condition(run, "LogsComplete")
        assert (logs_condition["status"], logs_condition["reason"]) == ("False", "ArchiveFailing")
        assert "\n" not in status["logs"]["message"]
        warnings = [event for event in events_of(kube_cluster, name, namespace) if event["reason"] == "StorageFailing"]
        assert warnings and warnings[0]["type"] == "Warning" and words in warnings[0]["message"]
    nowhere = wait_until(
        lambda: (run := get_run(kube_cluster, "nowhere", namespace)).get("status", {}).get("message") and run,
        timeout=60,
        what="run nowhere to be refused",
    )
    assert nowhere["status"]["message"].startswith(f"spec.output.uri: az://trainrun-test/{folder}/d names no Azure storage account")
    assert kube_cluster.get("pytorchjob", "nowhere", namespace) is None
    printed = operator.output() + json.dumps([get_run(kube_cluster, name, namespace) for name in cases])
    assert not [secret for secret in [*azure.secrets, *gcs.secrets] if secret in printed]
