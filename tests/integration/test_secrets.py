"""Credentials never leak: recognisable fake ones in a run's Secret are found nowhere a person or a log reads.

A run copies its outputs with a Secret holding fake keys, a session token and a password inside the
endpoint URL (``http://leakuser:leakPassw0rd@...``), against a real S3 server (SeaweedFS) that refuses
them. The operator runs as its ServiceAccount (the RBAC of manifests/). Collected along the way: the
run's status at every phase it passes through, the namespace's Events, the operator's output, what the
uploader prints (its very command, run here as in test_artifacts.py, since kwok only simulates the pod),
``trainrun describe`` and ``trainrun render`` (of a spec that writes the endpoint inline). None holds any
of the secrets; the endpoint does appear, masked, so the error path that quotes it was taken.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster.harness import KubeCluster, Outcome, pod_behaviour, wait_until
from runs import OperatorProcess, get_run, kubectl_apply, operator_with_shipped_rbac, training_run, volume_for_claim

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "storage"))
from seaweedfs import BUCKET, SeaweedFS  # noqa: E402

pytestmark = pytest.mark.cluster
__all__ = ["operator_with_shipped_rbac"]  # a fixture, used by name

USER, PASSWORD = "leakuser", "leakPassw0rd"
FAKE_KEYS = {
    "AWS_ACCESS_KEY_ID": "AKIALEAKCHECK0000001",
    "AWS_SECRET_ACCESS_KEY": "leakcheckSecretKey0abcdefghijklmnopqrstu",
    "AWS_SESSION_TOKEN": "leakcheckSessionTokenIQoJb3JpZ2luX2VjEXAMPLE",
}
SECRETS = [*FAKE_KEYS.values(), USER, PASSWORD]
TRAINRUN = str(Path(sys.executable).parent / "trainrun")


def leaked(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def test_fake_credentials_appear_nowhere(
    kube_cluster: KubeCluster,
    operator_with_shipped_rbac: OperatorProcess,
    kube_namespace: str,
    s3_server: SeaweedFS,
    tmp_path: Path,
) -> None:
    cluster, operator, namespace = kube_cluster, operator_with_shipped_rbac, kube_namespace
    endpoint = s3_server.endpoint.replace("http://", f"http://{USER}:{PASSWORD}@")
    secret_env = {**FAKE_KEYS, "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1"}
    cluster.kubectl(
        "create", "secret", "generic", "fake-creds", "-n", namespace,
        *[f"--from-literal={key}={value}" for key, value in secret_env.items()],
    )
    name = "leak"
    volume_for_claim(cluster, namespace, f"{name}-outputs", tmp_path / "volume", create_claim=False)
    uri = f"s3://{BUCKET}/runs/{uuid.uuid4().hex[:8]}/leak"
    document = training_run(
        name,
        namespace,
        output={"uri": uri, "secretName": "fake-creds", "volume": {"size": "5Gi"}},
        podMetadata={"annotations": pod_behaviour(Outcome.SUCCEED, after="3s")},
    )
    kubectl_apply(cluster, document)

    statuses: list[dict[str, Any]] = []  # every distinct status the run shows

    def status_now() -> dict[str, Any]:
        status: dict[str, Any] = get_run(cluster, name, namespace).get("status") or {}
        if not statuses or statuses[-1] != status:
            statuses.append(status)
        return status

    wait_until(lambda: status_now().get("phase") == "Uploading", timeout=120, what="the run to start its copy")

    # What the uploader pod prints, for real: its command with the Secret's variables, against the server
    # that refuses these keys.
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    (outputs / "model.pt").write_bytes(b"weights")
    upload = subprocess.run(
        [TRAINRUN, "upload", str(outputs), uri], env={**cluster.env(), **secret_env}, capture_output=True, text=True, timeout=120
    )
    assert upload.returncode != 0  # the keys are fake
    uploader_output = upload.stdout + upload.stderr

    # kwok lets the uploader pod succeed; the operator then reads the manifest with the Secret's keys and
    # is refused: it says so, quoting the endpoint. Watch the status until it has moved on from "copying".
    def moved_on() -> bool:
        status = status_now()
        return status.get("phase") in ("Failed", "Completed") or "copying" not in str(status.get("message"))

    try:
        wait_until(moved_on, timeout=90, what="the operator to report the refused manifest read", interval=0.5)
    finally:
        status_now()
    events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    described = subprocess.run(
        [TRAINRUN, "describe", name, "-n", namespace], env=cluster.env(), capture_output=True, text=True, timeout=60
    )
    inline = json.loads(json.dumps(document))
    inline["spec"]["env"] = [{"name": "AWS_ENDPOINT_URL", "value": endpoint}]
    spec_file = tmp_path / "inline.yaml"
    spec_file.write_text(yaml.safe_dump(inline))
    rendered = subprocess.run([TRAINRUN, "render", str(spec_file)], capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    places = {
        "status at every phase": json.dumps(statuses),
        "Events": events,
        "operator output": operator.output(),
        "uploader output": uploader_output,
        "trainrun describe": described.stdout + described.stderr,
        "trainrun render": rendered.stdout + rendered.stderr,
        "kubectl get -o yaml": cluster.kubectl("get", "trainingrun", name, "-n", namespace, "-o", "yaml").stdout,
    }
    found = {place: leaked(text) for place, text in places.items() if leaked(text)}
    assert found == {}, f"credentials printed: {found}"
    # The endpoint was quoted, masked: the paths that print it were taken.
    masked = s3_server.endpoint.replace("http://", "http://***@")
    assert masked in places["uploader output"], uploader_output
    assert masked in places["trainrun render"]
    assert any(masked in places[place] for place in ("status at every phase", "Events", "operator output")), (
        json.dumps(statuses[-1], indent=1) + "\n" + operator.log_tail()
    )
