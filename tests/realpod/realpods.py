"""Helpers of the real-pod tests (tests/realpod): S3 as pods reach it, output volumes, the node's address.

Imported by tests/realpod/conftest.py and its test modules.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from cluster.harness import REAL_NODE, KubeCluster
from runs import volume_for_claim
from seaweedfs import BUCKET, SeaweedFS

# A real-pod test's limit, its share of the session's setup included: a cold start imports 6 GB of
# images (2-3 minutes on a busy 2-core machine) and builds them when missing (5-10 minutes).
REALPOD_TIMEOUT = 1800


def require_real_node() -> None:
    """Skips the test where a real node cannot run: clusters disabled, or not root."""
    if os.environ.get("TRAINRUN_SKIP_CLUSTER") == "1":
        pytest.skip("TRAINRUN_SKIP_CLUSTER=1: the local Kubernetes cluster is disabled")
    if os.geteuid() != 0:
        pytest.skip("a real node needs root (tests/cluster/node.sh)")


def node_ip(cluster: KubeCluster) -> str:
    """The real node's InternalIP: its bridge, where pods reach the host."""
    return cluster.kubectl("get", "node", REAL_NODE, "-o", "jsonpath={.status.addresses[?(@.type=='InternalIP')].address}").stdout.strip()


@dataclass
class PodReachableS3:
    """SeaweedFS, and the endpoint pods use for it (the node's IP, forwarded to 127.0.0.1)."""

    server: SeaweedFS
    pod_endpoint: str

    def secret_env(self) -> dict[str, str]:
        """What a run's Secret holds: the keys, and the endpoint as pods (and the operator) reach it."""
        return {**self.server.env, "AWS_ENDPOINT_URL": self.pod_endpoint}

    def create_secret(self, cluster: KubeCluster, namespace: str, name: str = "s3") -> str:
        literals = [f"--from-literal={key}={value}" for key, value in self.secret_env().items()]
        cluster.kubectl("create", "secret", "generic", name, "-n", namespace, *literals)
        return name

    def uri(self, path: str) -> str:
        return f"s3://{BUCKET}/{path}/{uuid.uuid4().hex[:8]}"


def output_volume(cluster: KubeCluster, namespace: str, claim: str, folder: Path) -> None:
    """A hostPath PersistentVolume reserved for a run's output claim; the replicas and the uploader run
    as user 10001, so the folder is open to them."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o777)
    volume_for_claim(cluster, namespace, claim, folder, create_claim=False)


def s3_client_env(s3: PodReachableS3) -> dict[str, str]:
    """This process's environment for the CLI's own storage calls (the test reaches S3 on 127.0.0.1)."""
    return {**os.environ, **s3.server.env}
