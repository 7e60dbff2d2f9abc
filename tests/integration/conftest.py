"""Fixtures of the integration tests: the local Kubernetes cluster (kube_cluster), a fresh namespace
(kube_namespace), a second cluster with the platform add-ons (platform_cluster: JobSet, Trainer v2,
Kueue) and an S3 server (s3_server, SeaweedFS, one per test module).

pytest loads this for every test under tests/integration/. Each cluster is started once per test
session, on first use, by tests/cluster/up.sh (building the binaries first with build.sh when
they are missing), and always stopped at the end: fixture teardown, and atexit plus a SIGTERM
handler for a session that is interrupted. TRAINRUN_SKIP_CLUSTER=1 skips the tests that need one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/cluster/harness.py is imported as cluster.harness (tests/ is not a package).
TESTS_DIR = Path(__file__).resolve().parents[1]
for folder in (TESTS_DIR, TESTS_DIR / "storage"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from cluster.harness import Addon, KubeCluster, session_cluster
from seaweedfs import SeaweedFS, start_seaweedfs


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
