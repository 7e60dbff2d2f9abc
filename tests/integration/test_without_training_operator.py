"""A cluster without the training-operator's PyTorchJob kind: the run stalls with a clear condition,
the operator keeps running, and once the kind is installed the run starts by itself.

The file sorts last among the cluster tests on purpose: it removes the PyTorchJob CRD for a while
(and restores it even when it fails).
"""

from __future__ import annotations

from typing import Any

import pytest
from cluster.harness import KubeCluster, Outcome, pod_behaviour, wait_until
from runs import OperatorProcess, condition, get_run, kubectl_apply, operator, training_run, wait_for_phase

pytestmark = pytest.mark.cluster
__all__ = ["operator"]  # a fixture, used by name

CRD_NAME = "pytorchjobs.kubeflow.org"


def test_missing_pytorchjob_kind_stalls_the_run_until_it_is_installed(
    kube_cluster: KubeCluster, operator: OperatorProcess, kube_namespace: str
) -> None:
    namespace = kube_namespace
    installed = kube_cluster.get("crd", CRD_NAME)
    assert installed is not None
    saved = {
        "apiVersion": installed["apiVersion"],
        "kind": installed["kind"],
        "metadata": {"name": CRD_NAME, "labels": installed["metadata"].get("labels", {})},
        "spec": installed["spec"],
    }
    kube_cluster.kubectl("delete", "crd", CRD_NAME, "--wait=true", timeout=120)
    try:
        kubectl_apply(kube_cluster, training_run("early", namespace, podMetadata={"annotations": pod_behaviour(Outcome.SUCCEED, after="2s")}))

        def stalled() -> dict[str, Any] | None:
            run = get_run(kube_cluster, "early", namespace)
            conditions = {item["type"]: item for item in run.get("status", {}).get("conditions", [])}
            return run if conditions.get("Stalled", {}).get("status") == "True" else None

        run = wait_until(stalled, timeout=90, what="a Stalled condition without the PyTorchJob kind")
        assert "install the Kubeflow training-operator" in condition(run, "Stalled")["message"]
        assert operator.process is not None and operator.process.poll() is None
    finally:
        kube_cluster.apply(saved, server_side=True)

        def established() -> bool:
            crd = kube_cluster.get("crd", CRD_NAME) or {}
            conditions = crd.get("status", {}).get("conditions") or []
            return any(item["type"] == "Established" and item["status"] == "True" for item in conditions)

        wait_until(established, timeout=60, what=f"{CRD_NAME} to be established again")
    run = wait_for_phase(kube_cluster, operator, "early", namespace, "Completed", timeout=180)
    assert condition(run, "Stalled")["status"] == "False"
    assert operator.process is not None and operator.process.poll() is None, operator.log_tail()
