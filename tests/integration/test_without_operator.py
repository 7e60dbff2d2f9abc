"""A TrainingRun submitted where no trainrun operator runs (CRD installed, operator not deployed or down).

No ``operator`` fixture in this module, so nothing serves the run: ``Client.run`` (``trainrun run``)
must say so instead of waiting in silence.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from cluster.harness import KubeCluster, wait_until
from runs import training_run
from trainrun import Client
from trainrun.client import cluster as cluster_backend
from trainrun.client.errors import ClientError
from trainrun.spec.status import TrainingRunStatus

pytestmark = pytest.mark.cluster


class Notices:
    """A RunObserver that keeps the notices."""

    def __init__(self) -> None:
        self.notices: list[str] = []

    def notice(self, text: str) -> None:
        self.notices.append(text)

    def phase(self, status: TrainingRunStatus) -> None:
        raise AssertionError(f"no operator runs, yet the run reached {status.phase}")

    def line(self, replica: str, text: str) -> None:
        return None

    def metrics(self, record: Any, summary: Any) -> None:
        return None

    def stopping(self) -> None:
        return None


def test_a_run_no_operator_takes_up_is_reported(
    kube_cluster: KubeCluster, kube_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster_backend, "OPERATOR_SILENCE_SECONDS", 3.0)
    client = Client(kubeconfig=str(kube_cluster.kubeconfig), namespace=kube_namespace)
    observer = Notices()
    ended: list[BaseException] = []

    def follow() -> None:
        try:
            client.run(training_run("orphan", kube_namespace), observer=observer)
        except ClientError as error:  # the run is deleted below: following it ends
            ended.append(error)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    wait_until(lambda: len(observer.notices) > 0, timeout=60, what="the no-operator notice")
    assert len(observer.notices) == 1
    assert "no operator has taken up trainingrun orphan" in observer.notices[0]
    assert "kubectl apply --server-side -k manifests/" in observer.notices[0]
    client.delete("orphan")
    thread.join(timeout=60)
    assert not thread.is_alive() and ended
