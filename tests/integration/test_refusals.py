"""What the API server accepts in a TrainingRun but refuses in the PyTorchJob the operator renders from it
(issue 15, item 11): the refusal ends as the run's status naming the server's words and the field, once,
not as a silent retry loop with no status; fixing the spec lets the run start.
"""

from __future__ import annotations

from typing import Any

import pytest
from cluster.harness import KubeCluster, wait_until
from runs import OperatorProcess, condition, events_of, get_run, kubectl_apply, operator, training_run, wait_for_phase

pytestmark = pytest.mark.cluster
__all__ = ["operator"]  # a fixture, used by name


def test_a_child_the_api_server_refuses_becomes_the_status(
    kube_cluster: KubeCluster, operator: OperatorProcess, kube_namespace: str
) -> None:
    namespace = kube_namespace
    # envFrom is a free-form list in the TrainingRun's schema; in a pod template its items are typed.
    kubectl_apply(kube_cluster, training_run("refused", namespace, envFrom=[{"bogus": 1}]))

    def stalled() -> dict[str, Any] | None:
        run = get_run(kube_cluster, "refused", namespace)
        conditions = {item["type"]: item for item in run.get("status", {}).get("conditions", [])}
        return run if conditions.get("Stalled", {}).get("status") == "True" else None

    run = wait_until(stalled, timeout=60, what="a Stalled condition naming the refusal")
    message = run["status"]["message"]
    assert "refused" in message and "bogus" in message, message
    assert condition(run, "Ready")["status"] == "False"
    assert kube_cluster.get("pytorchjob", "refused", namespace) is None
    warnings = [event for event in events_of(kube_cluster, "refused", namespace) if event["type"] == "Warning"]
    assert len(warnings) == 1, warnings  # said once, not at every retry

    fixed = training_run("refused", namespace, envFrom=[{"configMapRef": {"name": "settings", "optional": True}}])
    kubectl_apply(kube_cluster, fixed)
    wait_for_phase(kube_cluster, operator, "refused", namespace, "Running", timeout=90)
    operator.assert_no_traceback()
