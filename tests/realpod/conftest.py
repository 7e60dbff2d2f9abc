"""Fixtures of the real-pod tests: a control plane with a real node, our images on it, and S3 for its pods.

pytest loads this for every test under tests/realpod/ (each marked ``realpod``). The session's cluster is
the one of tests/integration plus a real node (tests/cluster/node.sh: kubelet, containerd, runc, a
bridge, CoreDNS) that has imported the images tests/cluster/images.sh builds from images/*/Dockerfile
(built here when missing, cached under ~/.cache/trainrun/images), and the add-on ``trainer`` (JobSet and
Kubeflow Trainer v2 beside the training-operator, so one real node serves both backends: a second one
may not fit beside it on a 2-core machine). Pods there run for real: torchrun, the built-in trainer,
the stage-in init container and the uploader Job. The SeaweedFS S3 server
listens on 127.0.0.1; a forwarder makes it reachable from pods at the node's IP. Needs root (the
node changes the host's network and cgroups); TRAINRUN_SKIP_CLUSTER=1 skips these tests too.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parents[1]
for folder in (TESTS_DIR, TESTS_DIR / "integration", TESTS_DIR / "storage", TESTS_DIR / "registry", Path(__file__).resolve().parent):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from cluster.harness import Addon, KubeCluster, node_images, session_cluster, wait_until  # noqa: E402
from mlflow_server import MlflowServer, require_mlflow, start_mlflow  # noqa: E402
from realpods import PodReachableS3, node_ip, require_real_node  # noqa: E402
from runs import edit_operator_config, operator  # noqa: E402
from seaweedfs import BUCKET, start_seaweedfs  # noqa: E402

OVERLAY = Path(__file__).resolve().parent / "operator-overlay"
__all__ = ["operator"]  # a fixture of tests/integration/runs.py, used by name


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    """A running cluster with the real node real-0, JobSet and Trainer v2, and the operator configuration
    naming the node's pool."""
    require_real_node()
    with session_cluster(real_node_images=node_images(), addons=(Addon.TRAINER,)) as cluster:
        cluster.kubectl("apply", "-f", str(OVERLAY / "config.yaml"))
        yield cluster


@pytest.fixture
def kube_namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    """A namespace of its own for one test, deleted afterwards (its pods on the real node with it)."""
    with kube_cluster.scratch_namespace("rp") as name:
        yield name


@pytest.fixture(scope="session")
def s3(kube_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodReachableS3]:
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    address = node_ip(kube_cluster)
    port = server.ports["s3"]
    forwarder = subprocess.Popen(
        ["socat", f"TCP-LISTEN:{port},bind={address},reuseaddr,fork", f"TCP:127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: subprocess.run(["bash", "-c", f"exec 3<>/dev/tcp/{address}/{port}"], check=False).returncode == 0, timeout=10, what="the S3 forwarder")
        yield PodReachableS3(server=server, pod_endpoint=f"http://{address}:{port}")
    finally:
        forwarder.terminate()
        forwarder.wait(timeout=10)
        server.stop()


@pytest.fixture(scope="session")
def mlflow_registry(kube_cluster: KubeCluster, s3: PodReachableS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real MLflow server (its artifacts in the session's S3 server), named ``mlflow`` and the default registry
    in the operator configuration: a run with ``spec.output.register`` is registered there."""
    require_mlflow()
    env = {**s3.server.env, "MLFLOW_S3_ENDPOINT_URL": s3.server.endpoint}
    server = start_mlflow(tmp_path_factory.mktemp("mlflow"), env=env, artifacts=f"s3://{BUCKET}/mlflow-artifacts")
    try:
        edit_operator_config(kube_cluster, registries={"mlflow": {"type": "mlflow", "uri": server.uri}}, defaultRegistry="mlflow")
        yield server
    finally:
        edit_operator_config(kube_cluster, registries={}, defaultRegistry=None)
        server.stop()
