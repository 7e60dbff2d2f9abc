"""What the API server accepts in a TrainingRun but refuses in the PyTorchJob the operator renders from it
(issue 15, item 11): the refusal ends as the run's status naming the server's words and the field, once,
not as a silent retry loop with no status; fixing the spec lets the run start. And a couple of hundred
mutated specs through the API server and the operator: each stored one ends with a status.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from cluster.harness import ClusterError, KubeCluster, wait_until
from runs import OperatorProcess, condition, events_of, get_run, kubectl_apply, operator, training_run, wait_for_phase
from spec_mutations import fuzzed_documents

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




def test_every_mutated_spec_the_api_server_stores_ends_running_or_refused_naming_the_field(
    kube_cluster: KubeCluster, operator: OperatorProcess, kube_namespace: str
) -> None:
    """Issue 15 item 11: a few hundred mutated specs (the same mutations as the validate fuzz); those the
    API server stores go to the operator, and every one gets a status: a phase of a run that goes on,
    or a refusal that names the field (or the server's words about the child). None stays silent."""
    namespace = kube_namespace
    documents = fuzzed_documents(namespace, examples=200)
    listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})
    applied = kube_cluster.kubectl("apply", "--validate=false", "-o", "name", "-f", "-", stdin=listing, check=False)
    stored = {line.rsplit("/", 1)[-1] for line in applied.stdout.split()}
    assert len(documents) > 150 and len(stored) > 20, (len(documents), len(stored))

    def statuses() -> dict[str, dict[str, Any]] | None:
        runs = kube_cluster.list_objects("trainingruns", namespace)
        found = {run["metadata"]["name"]: run.get("status") or {} for run in runs if run["metadata"]["name"] in stored}
        return found if len(found) == len(stored) and all(status.get("phase") for status in found.values()) else None

    try:
        found = wait_until(statuses, timeout=180, interval=2, what="a status on every stored run")
    except ClusterError:
        runs = kube_cluster.list_objects("trainingruns", namespace)
        silent = [run["metadata"]["name"] for run in runs if not (run.get("status") or {}).get("phase")]
        raise AssertionError(f"runs without a status: {silent}\n{operator.log_tail()}") from None
    for name, status in found.items():
        stalled = {item["type"]: item["status"] for item in status.get("conditions", [])}.get("Stalled") == "True"
        if stalled:
            message = status.get("message") or ""
            assert "spec." in message or "refused" in message or "ConfigMap" in message, (name, message)
    operator.assert_no_traceback()
