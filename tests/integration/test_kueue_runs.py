"""TrainingRuns that wait their turn in Kueue, on both backends: the same file, the same words.

Real parts: the platform cluster (Kueue v0.19 with its TrainJob and PyTorchJob integrations, Kubeflow Trainer
v2.3 on JobSet, the training-operator), the operator as a process, and per test a LocalQueue on a ClusterQueue
of 8 GPUs (``kueue_queue``). Every test runs once with ``backend: PyTorchJob`` and once with ``backend:
TrainJob``. What must hold: a run beyond the quota waits Queued with Kueue's own reason and runs when the
first ends; a higher-priority run preempts a lower one, which records cause Preempted, goes back to Queued
and runs again once the quota frees up; deleting an admitted run gives its quota back; a LocalQueue that does
not exist is a Stalled reason naming the field, and no job is made. Pods run until a test ends them (their
kwok outcome re-annotated), so no test races a timer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from cluster.harness import OUTCOME_ANNOTATION, KubeCluster, Outcome, pod_behaviour, wait_until
from queues import Queue
from runs import OperatorProcess, get_run, kubectl_apply, operator_on_backend, training_run, wait_for_phase

pytestmark = pytest.mark.cluster

KINDS = {"PyTorchJob": "pytorchjob", "TrainJob": "trainjob"}


@pytest.fixture(scope="module", params=sorted(KINDS))
def backend_operator(
    request: pytest.FixtureRequest, platform_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, OperatorProcess]]:
    """(backend, the operator on the platform cluster with that backend configured)."""
    backend = str(request.param)
    with operator_on_backend(platform_cluster, backend, tmp_path_factory.mktemp(f"kueue-{backend}") / "operator.log") as process:
        yield backend, process


def queued_run(name: str, namespace: str, queue: Queue, *, priority: str | None = None) -> dict[str, Any]:
    """One replica of 8 GPUs on the a100 pool in the test's LocalQueue, running until the test ends it."""
    resources: dict[str, Any] = {"pool": "a100", "gpus": 8, "queue": queue.local_queue}
    if priority is not None:
        resources["priorityClassName"] = priority
    return training_run(
        name, namespace, distribution={"workers": 0}, resources=resources, podMetadata={"annotations": pod_behaviour(Outcome.RUN)}
    )


def end_pods(cluster: KubeCluster, namespace: str, run: str) -> None:
    """The run's running pods succeed now (their kwok outcome `run` becomes `succeed`)."""
    cluster.kubectl(
        "annotate", "pods", "-n", namespace, "-l", f"trainrun.dev/run={run}", "--overwrite",
        f"{OUTCOME_ANNOTATION}={Outcome.SUCCEED.value}", "kwok.trainrun.dev/after=0s",
    )


def status_of(cluster: KubeCluster, name: str, namespace: str) -> dict[str, Any]:
    return dict(get_run(cluster, name, namespace).get("status") or {})


def test_a_run_beyond_the_quota_waits_with_kueues_reason_then_runs(
    platform_cluster: KubeCluster, backend_operator: tuple[str, OperatorProcess], platform_namespace: str, kueue_queue: Queue
) -> None:
    backend, operator = backend_operator
    cluster, namespace = platform_cluster, platform_namespace
    kubectl_apply(cluster, queued_run("first", namespace, kueue_queue))
    wait_for_phase(cluster, operator, "first", namespace, "Running", timeout=180)
    assert cluster.get(KINDS[backend], "first", namespace) is not None
    kubectl_apply(cluster, queued_run("second", namespace, kueue_queue))

    def waiting() -> dict[str, Any] | None:
        status = status_of(cluster, "second", namespace)
        return status if "insufficient unused quota" in (status.get("message") or "") else None

    status = wait_until(waiting, timeout=120, what="the second run waiting with Kueue's reason")
    assert (status["phase"], status["reason"]) == ("Queued", "WaitingForAdmission")
    assert status["message"].startswith(f"waiting for Kueue to admit the {backend} (LocalQueue {kueue_queue.local_queue}): ")
    assert f"insufficient unused quota for nvidia.com/gpu in flavor {kueue_queue.flavor}, 8 more needed" in status["message"]
    stalled = next(item for item in status["conditions"] if item["type"] == "Stalled")
    assert stalled["status"] == "False"  # it waits for quota, which comes
    end_pods(cluster, namespace, "first")
    wait_for_phase(cluster, operator, "first", namespace, "Completed", timeout=180)
    wait_for_phase(cluster, operator, "second", namespace, "Running", timeout=180)


def test_a_higher_priority_run_preempts_a_lower_one_which_runs_again_later(
    platform_cluster: KubeCluster, backend_operator: tuple[str, OperatorProcess], platform_namespace: str, kueue_queue: Queue
) -> None:
    backend, operator = backend_operator
    cluster, namespace = platform_cluster, platform_namespace
    kubectl_apply(cluster, queued_run("low", namespace, kueue_queue, priority=kueue_queue.low))
    wait_for_phase(cluster, operator, "low", namespace, "Running", timeout=180)
    first_job = cluster.get(KINDS[backend], "low", namespace)
    assert first_job is not None
    kubectl_apply(cluster, queued_run("high", namespace, kueue_queue, priority=kueue_queue.high))
    wait_for_phase(cluster, operator, "high", namespace, "Running", timeout=180)

    def preempted() -> dict[str, Any] | None:
        status = status_of(cluster, "low", namespace)
        return status if status.get("restarts") and status.get("phase") == "Queued" else None

    status = wait_until(preempted, timeout=120, what="the low-priority run preempted and back in the queue")
    (restart,) = status["restarts"]
    assert restart["cause"] == "Preempted" and "Kueue preempted the run (Preempted to accommodate a workload" in restart["message"]
    assert any(
        event["reason"] == "Restarting" and "(Preempted)" in event["message"]
        for event in cluster.list_objects("events", namespace)
        if event["involvedObject"].get("name") == "low"
    )
    end_pods(cluster, namespace, "high")
    wait_for_phase(cluster, operator, "high", namespace, "Completed", timeout=180)
    wait_for_phase(cluster, operator, "low", namespace, "Running", timeout=240)
    again = cluster.get(KINDS[backend], "low", namespace)
    assert again is not None and again["metadata"]["uid"] != first_job["metadata"]["uid"]  # the run's new job


def test_deleting_an_admitted_run_gives_its_quota_back(
    platform_cluster: KubeCluster, backend_operator: tuple[str, OperatorProcess], platform_namespace: str, kueue_queue: Queue
) -> None:
    _, operator = backend_operator
    cluster, namespace = platform_cluster, platform_namespace
    kubectl_apply(cluster, queued_run("holder", namespace, kueue_queue))
    wait_for_phase(cluster, operator, "holder", namespace, "Running", timeout=180)
    kubectl_apply(cluster, queued_run("waiter", namespace, kueue_queue))
    wait_until(
        lambda: "insufficient unused quota" in (status_of(cluster, "waiter", namespace).get("message") or ""),
        timeout=120,
        what="the second run waiting for quota",
    )
    cluster.kubectl("delete", "trainingrun", "holder", "-n", namespace, "--wait=false")
    wait_for_phase(cluster, operator, "waiter", namespace, "Running", timeout=180)


def test_a_localqueue_that_does_not_exist_is_a_stalled_reason_and_no_job(
    platform_cluster: KubeCluster, backend_operator: tuple[str, OperatorProcess], platform_namespace: str
) -> None:
    backend, operator = backend_operator
    cluster, namespace = platform_cluster, platform_namespace
    document = training_run("lost", namespace, resources={"queue": "no-such-queue"})
    kubectl_apply(cluster, document)

    def stalled() -> dict[str, Any] | None:
        status = status_of(cluster, "lost", namespace)
        condition = next((item for item in status.get("conditions", []) if item["type"] == "Stalled"), None)
        return status if condition is not None and condition["status"] == "True" else None

    status = wait_until(stalled, timeout=120, what="the run stalled on its LocalQueue")
    assert status["message"] == (
        f"spec.resources.queue: LocalQueue 'no-such-queue' does not exist in namespace {namespace}: name one that "
        "does (kubectl get localqueues), or ask the platform team to create it"
    )
    assert cluster.get(KINDS[backend], "lost", namespace) is None
