"""A platform that lacks what the configuration or a run asks for: a one-line Stalled reason, no job, no crash.

On the plain test cluster (the training-operator, no Kubeflow Trainer, no Kueue), the operator configured
with ``backend: TrainJob``: a run waits Stalled saying which kind the cluster does not serve and what to
install; a run naming a queue waits Stalled naming ``spec.resources.queue`` and saying Kueue is not there.
Neither creates a job (one without Kueue would run unqueued), and the operator keeps running.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from cluster.harness import KubeCluster, wait_until
from runs import OperatorProcess, condition, get_run, kubectl_apply, operator_on_backend, training_run

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def trainjob_operator(kube_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    with operator_on_backend(kube_cluster, "TrainJob", tmp_path_factory.mktemp("no-platform") / "operator.log") as process:
        yield process


def stalled_run(cluster: KubeCluster, name: str, namespace: str) -> dict[str, Any]:
    def stalled() -> dict[str, Any] | None:
        run = get_run(cluster, name, namespace)
        conditions = {item["type"]: item for item in run.get("status", {}).get("conditions", [])}
        return run if conditions.get("Stalled", {}).get("status") == "True" else None

    return dict(wait_until(stalled, timeout=90, what=f"TrainingRun {name} stalled"))


def test_a_trainjob_backend_without_trainer_is_a_stalled_reason(
    kube_cluster: KubeCluster, trainjob_operator: OperatorProcess, kube_namespace: str
) -> None:
    kubectl_apply(kube_cluster, training_run("no-trainer", kube_namespace))
    run = stalled_run(kube_cluster, "no-trainer", kube_namespace)
    assert run["status"]["reason"] == "TrainerMissing"
    assert condition(run, "Stalled")["message"] == (
        "the cluster does not serve TrainJob (trainer.kubeflow.org/v1alpha1): install Kubeflow Trainer v2 (v2.3) with "
        "JobSet, and manifests/trainer-v2 (the trainrun-torch runtime), then the run starts by itself"
    )
    assert kube_cluster.get("pytorchjob", "no-trainer", kube_namespace) is None
    assert trainjob_operator.running()


def test_a_queue_on_a_cluster_without_kueue_is_a_stalled_reason(
    kube_cluster: KubeCluster, trainjob_operator: OperatorProcess, kube_namespace: str
) -> None:
    kubectl_apply(kube_cluster, training_run("no-kueue", kube_namespace, resources={"queue": "gpus"}))
    run = stalled_run(kube_cluster, "no-kueue", kube_namespace)
    message = condition(run, "Stalled")["message"]  # beside the missing TrainJob kind: both are said
    assert "spec.resources.queue: the cluster does not serve Kueue (kueue.x-k8s.io Workloads)" in message, message
    assert trainjob_operator.running()
