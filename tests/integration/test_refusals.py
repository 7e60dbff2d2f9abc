"""What the API server accepts in a TrainingRun but refuses in the PyTorchJob the operator renders from it
(issue 15, item 11): the refusal ends as the run's status naming the server's words and the field, once,
not as a silent retry loop with no status; fixing the spec lets the run start. And a couple of hundred
mutated specs through the API server and the operator: each stored one ends with a status. Then what the
cluster refuses in the pods (issue 24): a missing PriorityClass stalls the run (kstatus: Failed) until it
exists, and a claim that never binds keeps it in progress, saying how long it has waited.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from cluster.harness import ClusterError, KubeCluster, Outcome, pod_behaviour, wait_until
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


def _conditions(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["type"]: item for item in (run.get("status") or {}).get("conditions", [])}


def test_a_missing_priority_class_stalls_the_run_until_it_exists(
    kube_cluster: KubeCluster, operator: OperatorProcess, kube_namespace: str
) -> None:
    """Issue 24: pods naming a PriorityClass that does not exist are refused at every retry; the run said so
    but stayed Stalled=False, so Flux and Argo CD waited to their timeout. Now it is Stalled (kstatus: Failed)
    with the reason, and starts once the class exists."""
    namespace = kube_namespace
    priority = f"missing-{namespace}"
    document = training_run(
        "no-class", namespace, resources={"priorityClassName": priority}, podMetadata={"annotations": pod_behaviour(Outcome.RUN)}
    )
    kubectl_apply(kube_cluster, document)

    def stalled() -> dict[str, Any] | None:
        run = get_run(kube_cluster, "no-class", namespace)
        return run if _conditions(run).get("Stalled", {}).get("status") == "True" else None

    run = wait_until(stalled, timeout=90, what="a Stalled run naming the missing PriorityClass")
    status = run["status"]
    assert (status["phase"], status["reason"]) == ("Queued", "PriorityClassNotFound"), status
    assert f"no PriorityClass with name {priority} was found" in status["message"], status["message"]
    assert "change spec.resources.priorityClassName" in status["message"], status["message"]
    conditions = _conditions(run)
    assert conditions["Reconciling"]["status"] == "False" and conditions["Ready"]["status"] == "False"

    kube_cluster.apply({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": priority}, "value": 1000})
    try:
        run = wait_for_phase(kube_cluster, operator, "no-class", namespace, "Running", timeout=240)
        assert _conditions(run)["Stalled"]["status"] == "False"
    finally:
        kube_cluster.kubectl("delete", "priorityclass", priority, "--ignore-not-found")
    operator.assert_no_traceback()


def test_a_claim_that_never_binds_keeps_the_run_in_progress_saying_how_long_it_waited(
    kube_cluster: KubeCluster, operator: OperatorProcess, kube_namespace: str
) -> None:
    """Issue 24: a wait that may end (no provisioner yet, so the output claim is unbound) is InProgress, not
    Stalled, and its message says how long the replica has waited and since when."""
    namespace = kube_namespace
    document = training_run(
        "unbound",
        namespace,
        output={"uri": "s3://models/unbound/", "volume": {"size": "1Gi", "storageClassName": "no-provisioner"}},
        podMetadata={"annotations": pod_behaviour(Outcome.RUN)},
    )
    kubectl_apply(kube_cluster, document)

    def waiting() -> dict[str, Any] | None:
        run = get_run(kube_cluster, "unbound", namespace)
        return run if (run.get("status") or {}).get("reason") == "WaitingForVolume" else None

    run = wait_until(waiting, timeout=90, what="a run waiting for its volume")
    status = run["status"]
    assert status["phase"] == "Queued"
    assert re.search(r"^replica master-0 has waited \d+(s|m\d\ds) \(since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\) for its volume: ", status["message"]), status["message"]
    assert "unbound immediate PersistentVolumeClaims" in status["message"], status["message"]
    conditions = _conditions(run)
    assert conditions["Stalled"]["status"] == "False" and conditions["Reconciling"]["status"] == "True"
    claim = kube_cluster.get("persistentvolumeclaim", "unbound-outputs", namespace)
    assert claim is not None and claim["status"]["phase"] == "Pending"
    operator.assert_no_traceback()
