"""The operator itself in real pods: the shipped install (`kubectl apply -k`), run from its image.

tests/realpod/operator-overlay is manifests/ with what this machine needs (the imported image is not
pulled, the pods go to the real node, the config names its pool): the Deployment's two replicas run
the image built from images/operator/Dockerfile as its ServiceAccount, with its RBAC, probes and
security context, reach the API server through the kubernetes Service, elect a leader, and drive a
run to Completed. No operator process runs outside the cluster in this module.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cluster.harness import REAL_NODE, ClusterError, KubeCluster, wait_until
from realpods import REALPOD_TIMEOUT, PodReachableS3, output_volume
from runs import LEASE_NAME, OPERATOR_NAMESPACE, TRACEBACK, get_run, kubectl_apply, training_run

pytestmark = [pytest.mark.realpod, pytest.mark.timeout(REALPOD_TIMEOUT), pytest.mark.cluster, pytest.mark.s3]

OVERLAY = Path(__file__).resolve().parent / "operator-overlay"
SELECTOR = "app.kubernetes.io/name=trainrun,app.kubernetes.io/component=operator"


def test_the_operator_installed_with_kubectl_apply_k_drives_a_run_to_completed(
    kube_cluster: KubeCluster, kube_namespace: str, s3: PodReachableS3, tmp_path: Path
) -> None:
    cluster = kube_cluster
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(OVERLAY))
    try:
        done = cluster.kubectl("rollout", "status", "deployment/trainrun-operator", "-n", OPERATOR_NAMESPACE, "--timeout=180s", check=False)
        pods = cluster.list_objects("pods", OPERATOR_NAMESPACE, SELECTOR)
        assert done.returncode == 0, f"{done.stderr}\n{json.dumps([pod['status'] for pod in pods], indent=1)[:4000]}"
        assert len(pods) == 2 and all(pod["spec"]["nodeName"] == REAL_NODE for pod in pods)
        # Ready means /readyz answered the kubelet's probe: its watches synced through the Service.
        holder = wait_until(
            lambda: cluster.kubectl("get", "lease", LEASE_NAME, "-n", OPERATOR_NAMESPACE, "-o", "jsonpath={.spec.holderIdentity}", check=False).stdout.strip(),
            timeout=60,
            what="a leader",
        )
        assert holder in {pod["metadata"]["name"] for pod in pods}

        namespace = kube_namespace
        secret = s3.create_secret(cluster, namespace)
        output_volume(cluster, namespace, "installed-outputs", tmp_path / "volume")
        uri = s3.uri("installed")
        # Master + Worker at 500m each beside the operator's two replicas on the node's 2 CPUs.
        document = training_run(
            "installed", namespace,
            hyperparameters={"model": "mlp", "dataset": "synthetic", "epochs": 1, "extra": {"image-size": "28", "synthetic-samples": "2048"}},
            resources={"cpu": "500m", "memory": "1Gi"},
            output={"uri": uri, "secretName": secret},
        )
        kubectl_apply(cluster, document)

        def finished() -> dict[str, object] | None:
            run = get_run(cluster, "installed", namespace)
            return run if run.get("status", {}).get("phase") in {"Completed", "Failed"} else None

        try:
            run = wait_until(finished, timeout=400, what="the run to finish", interval=1)
        except ClusterError:
            raise AssertionError(f"{json.dumps(get_run(cluster, 'installed', namespace).get('status'), indent=1)}\n{operator_logs(cluster)}") from None
        status = run["status"]
        assert isinstance(status, dict)
        assert status["phase"] == "Completed", f"{json.dumps(status, indent=1)}\n{operator_logs(cluster)}"
        assert status["artifacts"]["uri"].rstrip("/") == uri
        logs = operator_logs(cluster)
        assert TRACEBACK not in logs, logs
        # An RBAC denial, not e.g. "forbidden: ... because it is being terminated" (a namespace going away).
        assert not re.search(r'forbidden: User "[^"]+" cannot', logs), logs
        restarts = [status["restartCount"] for pod in cluster.list_objects("pods", OPERATOR_NAMESPACE, SELECTOR) for status in pod["status"]["containerStatuses"]]
        assert restarts == [0, 0], restarts
    finally:
        cluster.kubectl("delete", "deployment", "trainrun-operator", "-n", OPERATOR_NAMESPACE, "--ignore-not-found", "--wait=true", check=False)


def operator_logs(cluster: KubeCluster) -> str:
    """Both operator replicas' output (the leader's shows the reconciles)."""
    return cluster.kubectl("logs", "-n", OPERATOR_NAMESPACE, "-l", SELECTOR, "--tail=-1", "--prefix", check=False).stdout
