"""Fixtures of the integration tests: the local Kubernetes cluster (kube_cluster), a fresh namespace
(kube_namespace), a second cluster with the platform add-ons (platform_cluster: JobSet, Trainer v2,
Kueue) with a namespace of its own per test (platform_namespace) and a Kueue queue of 8 GPUs with two
priorities (kueue_queue), object stores, one per test module: S3 (s3_server, SeaweedFS), GCS
(gcs_server, fake-gcs-server) and Azure Blob (azure_server, Azurite), and an MLflow server beside the S3 one
(mlflow_server, one per test module).

pytest loads this for every test under tests/integration/. Each cluster is started once per test
session, on first use, by tests/cluster/up.sh (building the binaries first with build.sh when
they are missing), and always stopped at the end: fixture teardown, and atexit plus a SIGTERM
handler for a session that is interrupted. TRAINRUN_SKIP_CLUSTER=1 skips the tests that need one.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/cluster/harness.py is imported as cluster.harness (tests/ is not a package).
TESTS_DIR = Path(__file__).resolve().parents[1]
for folder in (TESTS_DIR, TESTS_DIR / "storage", TESTS_DIR / "registry"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from cluster.harness import GPU_RESOURCE, POOL_LABEL, Addon, JsonObject, KubeCluster, session_cluster
from emulators import Azurite, FakeGcs, start_azurite, start_fake_gcs
from mlflow_server import MlflowServer, require_mlflow, start_mlflow
from queues import KUEUE_POOL, QUEUE_GPUS, Queue
from seaweedfs import ACCESS_KEY, BUCKET, SECRET_KEY, SeaweedFS, make_tls_files, start_seaweedfs


def skip_without_clusters() -> None:
    if os.environ.get("TRAINRUN_SKIP_CLUSTER") == "1":
        pytest.skip("TRAINRUN_SKIP_CLUSTER=1: the local Kubernetes cluster is disabled")


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    """A running local cluster for the whole session (see tests/cluster/harness.py for its API)."""
    skip_without_clusters()
    with session_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def platform_cluster() -> Iterator[KubeCluster]:
    """A second session cluster that also runs JobSet, Kubeflow Trainer v2 and Kueue (up.sh's add-ons
    trainer and kueue), beside the training-operator."""
    skip_without_clusters()
    with session_cluster(addons=(Addon.TRAINER, Addon.KUEUE)) as cluster:
        yield cluster


@pytest.fixture
def kube_namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    """A namespace of its own for one test, deleted afterwards (without waiting)."""
    with kube_cluster.scratch_namespace("test") as name:
        yield name


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def mlflow_server(s3_server: SeaweedFS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real MLflow tracking server and model registry (sqlite store; artifacts in the module's S3 server)
    on a free port. Skipped only where its virtualenv is missing and this is not CI (tests/run.sh installs it)."""
    require_mlflow()
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint,
    }
    server = start_mlflow(tmp_path_factory.mktemp("mlflow"), env=env, artifacts=f"s3://{BUCKET}/mlflow-artifacts")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcs]:
    """fake-gcs-server over https behind a throwaway CA (tests/storage/emulators.py), one per test module."""
    data_dir = tmp_path_factory.mktemp("fake-gcs")
    server = start_fake_gcs(data_dir, tls=make_tls_files(data_dir / "tls"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def azure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Azurite (Blob), one per test module."""
    server = start_azurite(tmp_path_factory.mktemp("azurite"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def platform_namespace(platform_cluster: KubeCluster) -> Iterator[str]:
    with platform_cluster.scratch_namespace("platform") as name:
        yield name


@pytest.fixture
def kueue_queue(platform_cluster: KubeCluster, platform_namespace: str) -> Iterator[Queue]:
    suffix = uuid.uuid4().hex[:6]
    queue = Queue("gpus", f"gpus-{suffix}", f"a100-{suffix}", f"low-{suffix}", f"high-{suffix}")
    cluster_objects: list[JsonObject] = [
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "ResourceFlavor",
            "metadata": {"name": queue.flavor},
            "spec": {"nodeLabels": {POOL_LABEL: KUEUE_POOL}},
        },
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "ClusterQueue",
            "metadata": {"name": queue.cluster_queue},
            "spec": {
                "namespaceSelector": {},
                "preemption": {"withinClusterQueue": "LowerPriority"},
                "resourceGroups": [
                    {
                        "coveredResources": ["cpu", "memory", GPU_RESOURCE],
                        "flavors": [
                            {
                                "name": queue.flavor,
                                "resources": [
                                    {"name": "cpu", "nominalQuota": "96"},
                                    {"name": "memory", "nominalQuota": "1000Gi"},
                                    {"name": GPU_RESOURCE, "nominalQuota": str(QUEUE_GPUS)},
                                ],
                            }
                        ],
                    }
                ],
            },
        },
        *(
            {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "WorkloadPriorityClass",
             "metadata": {"name": priority}, "value": value}
            for priority, value in ((queue.low, 100), (queue.high, 1000))
        ),
        # The same names as PriorityClasses: a PyTorchJob's pods carry the run's priorityClassName too.
        *(
            {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": priority}, "value": value}
            for priority, value in ((queue.low, 100), (queue.high, 1000))
        ),
    ]
    platform_cluster.apply(*cluster_objects)
    platform_cluster.apply(
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "LocalQueue",
            "metadata": {"name": queue.local_queue, "namespace": platform_namespace},
            "spec": {"clusterQueue": queue.cluster_queue},
        }
    )
    platform_cluster.wait_for_condition("clusterqueue", queue.cluster_queue, platform_namespace, "Active")
    try:
        yield queue
    finally:
        for obj in cluster_objects:
            platform_cluster.kubectl(
                "delete", obj["kind"].lower(), obj["metadata"]["name"], "--wait=false", "--ignore-not-found"
            )
