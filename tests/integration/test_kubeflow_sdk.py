"""The Kubeflow SDK reads our TrainJobs like any other: what it lists, the pods and logs it finds, the status it shows.

The real SDK of Kubeflow Trainer v2 (PyPI ``kubeflow`` 0.5.0, ``kubeflow.trainer.TrainerClient`` on the cluster's
kubeconfig) reads the platform cluster (``platform_cluster``: Trainer v2.3 on JobSet v0.11, Kueue v0.19), where the
operator runs with ``backend: TrainJob``. Beside a TrainingRun's TrainJob, in the same namespace, is a TrainJob written
by hand on the same runtime (trainrun-torch) with the same shape: two nodes of one GPU on the a100 pool. What must
hold, and does for both alike: ``list_jobs`` lists them, with the runtime filter too; ``get_job`` shows the
ClusterTrainingRuntime trainrun-torch (framework torch), 2 nodes, the steps ``node-0`` and ``node-1`` (one GPU each)
on the pods JobSet made (``<job>-node-0-<index>-<suffix>``: node-0 is the run's master-0, node-1 its worker-0), status
Running while both run and Complete once they succeeded, then the JobSet's completion among its events;
``get_job_logs`` reads each step's container ``node`` (the lines served). One limit is the SDK's: it derives Running
only for a TrainJob without status conditions, so one that was ever suspended (a run resumed after
``runPolicy.suspend``, a TrainJob Kueue held then admitted) keeps Trainer's condition Suspended=False (Resumed) and
reads Created while its nodes run, ours and a hand-written one alike. Pods run until a test ends them (their kwok
outcome re-annotated), so nothing races a timer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from cluster.harness import OUTCOME_ANNOTATION, KubeCluster, Outcome, pod_behaviour, wait_until, write_cri_log
from kubeflow.trainer import KubernetesBackendConfig, RuntimeKind, TrainerClient
from kubeflow.trainer.types.types import TrainJob
from kubernetes import client, config
from runs import TRAINER_IMAGE, OperatorProcess, kubectl_apply, operator_on_backend, training_run, wait_for_phase

pytestmark = pytest.mark.cluster

RUNTIME = "trainrun-torch"
JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"
RANK_LABEL = "batch.kubernetes.io/job-completion-index"
A100 = {"pool": "a100", "gpus": 1}
RUNNING = pod_behaviour(Outcome.RUN)


@pytest.fixture(scope="module")
def trainjob_operator(platform_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The operator on the platform cluster, its configuration choosing the TrainJob backend."""
    log = tmp_path_factory.mktemp("sdk-operator") / "operator.log"
    with operator_on_backend(platform_cluster, "TrainJob", log) as process:
        yield process


def trainer_client(cluster: KubeCluster, namespace: str) -> TrainerClient:
    """The SDK's client of the cluster's kubeconfig, in one namespace (its own configuration, not the global one)."""
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=configuration)
    return TrainerClient(KubernetesBackendConfig(namespace=namespace, client_configuration=configuration))


def hand_written_trainjob(name: str, namespace: str, *, suspend: bool = False) -> dict[str, Any]:
    """What a user writes for the runtime: the image and its command, two nodes of one GPU, and through a runtime
    patch of their own the a100 pool's placement and the pods' kwok behaviour (run until re-annotated)."""
    pod_template = {
        "metadata": {"annotations": RUNNING},
        "spec": {
            "nodeSelector": {"trainrun.dev/pool": "a100"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }
    node_job = {"name": "node", "template": {"spec": {"template": pod_template}}}
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "runtimeRef": {"name": RUNTIME},
            "suspend": suspend,
            "trainer": {
                "image": TRAINER_IMAGE,
                "command": ["python", "-m", "trainrun_trainer"],
                "numNodes": 2,
                "resourcesPerNode": {"limits": {"nvidia.com/gpu": "1"}},
            },
            "runtimePatches": [
                {"manager": "example.com/by-hand", "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [node_job]}}}}
            ],
        },
    }


def node_pods(cluster: KubeCluster, job: str, namespace: str, *, phase: str | None = None) -> list[dict[str, Any]] | None:
    """The two node pods JobSet made for TrainJob ``job``, by rank; None until there are two (in ``phase``)."""
    pods = cluster.list_objects("pods", namespace, f"{JOBSET_LABEL}={job}")
    if len(pods) != 2 or (phase is not None and any(pod["status"].get("phase") != phase for pod in pods)):
        return None
    return sorted(pods, key=lambda pod: int(pod["metadata"]["labels"][RANK_LABEL]))


def running_pods(cluster: KubeCluster, job: str, namespace: str) -> list[dict[str, Any]]:
    return wait_until(lambda: node_pods(cluster, job, namespace, phase="Running"), timeout=180, what=f"TrainJob {job}'s 2 pods Running")


def end_pods(cluster: KubeCluster, job: str, namespace: str) -> None:
    """The TrainJob's running pods succeed now (their kwok outcome `run` becomes `succeed`)."""
    cluster.kubectl(
        "annotate", "pods", "-n", namespace, "-l", f"{JOBSET_LABEL}={job}", "--overwrite",
        f"{OUTCOME_ANNOTATION}={Outcome.SUCCEED.value}", "kwok.trainrun.dev/after=0s",
    )


def shown(job: TrainJob) -> dict[str, Any]:
    """What the SDK shows of a TrainJob, less its name and pods' names (those are compared on their own)."""
    runtime = job.runtime
    return {
        "runtime": (runtime.name, runtime.kind, runtime.trainer.framework, runtime.trainer.image),
        "num_nodes": job.num_nodes,
        "status": job.status,
        "steps": [(step.name, step.status, step.device, step.device_count) for step in job.steps],
    }


def test_the_sdk_lists_gets_and_reads_the_logs_of_our_trainjob_as_of_a_hand_written_one(
    platform_cluster: KubeCluster, trainjob_operator: OperatorProcess, platform_namespace: str, tmp_path: Path
) -> None:
    cluster, namespace = platform_cluster, platform_namespace
    served = ["node up", 'trainrun:metric {"step": 10, "loss": 0.5}']
    cluster.serve_namespace_logs(namespace, write_cri_log(tmp_path / "node.log", served))
    kubectl_apply(cluster, training_run("ours", namespace, resources=A100, podMetadata={"annotations": RUNNING}))
    kubectl_apply(cluster, hand_written_trainjob("theirs", namespace))
    run = wait_for_phase(cluster, trainjob_operator, "ours", namespace, "Running", timeout=180)
    assert run["status"]["message"] == "training: 2 of 2 replicas running"
    pods = {job: running_pods(cluster, job, namespace) for job in ("ours", "theirs")}
    # Our run's pods are JobSet's: the run's master-0 is rank 0, its worker-0 rank 1.
    ours_by_run = cluster.list_objects("pods", namespace, "trainrun.dev/run=ours")
    assert sorted(pod["metadata"]["name"] for pod in ours_by_run) == sorted(pod["metadata"]["name"] for pod in pods["ours"])

    sdk = trainer_client(cluster, namespace)
    assert RUNTIME in [runtime.name for runtime in sdk.list_runtimes()]
    listed = {job.name: job for job in sdk.list_jobs()}
    assert sorted(listed) == ["ours", "theirs"]
    assert sorted(job.name for job in sdk.list_jobs(runtime=sdk.get_runtime(RUNTIME))) == ["ours", "theirs"]
    jobs = {name: sdk.get_job(name) for name in ("ours", "theirs")}
    running = {
        "runtime": (RUNTIME, RuntimeKind.CLUSTER_TRAINING_RUNTIME, "torch", TRAINER_IMAGE),
        "num_nodes": 2,
        "status": "Running",
        "steps": [("node-0", "Running", "gpu", "1"), ("node-1", "Running", "gpu", "1")],
    }
    for name, job in jobs.items():
        assert shown(job) == running, name
        assert shown(listed[name]) == running, name
        # The steps' pods are the ones JobSet made, by rank, named <job>-<replicated job>-<job index>-<rank>-<suffix>.
        assert [step.pod_name for step in job.steps] == [pod["metadata"]["name"] for pod in pods[name]], name
        assert all(re.fullmatch(rf"{name}-node-0-{rank}-[a-z0-9]{{5}}", step.pod_name) for rank, step in enumerate(job.steps)), name

    # get_job_logs reads a step's container `node`: node-0 by default, node-1 the pod of rank 1 (our worker-0).
    assert list(sdk.get_job_logs("ours")) == served
    worker_lines = ["worker-0 up"]
    cluster.serve_pod_log(namespace, jobs["ours"].steps[1].pod_name, write_cri_log(tmp_path / "worker.log", worker_lines), container="node")
    wait_until(lambda: list(sdk.get_job_logs("ours", step="node-1")) == worker_lines, timeout=60, what="the SDK reading node-1's log")
    assert list(sdk.get_job_logs("ours", step="node-0")) == served
    assert list(sdk.get_job_logs("theirs", step="node-1")) == served

    for name in ("ours", "theirs"):
        end_pods(cluster, name, namespace)
    done = {name: sdk.wait_for_job_status(name, timeout=180) for name in ("ours", "theirs")}
    complete = {**running, "status": "Complete", "steps": [("node-0", "Succeeded", "gpu", "1"), ("node-1", "Succeeded", "gpu", "1")]}
    assert {name: shown(job) for name, job in done.items()} == {"ours": complete, "theirs": complete}
    wait_for_phase(cluster, trainjob_operator, "ours", namespace, "Completed", timeout=180)
    assert shown(sdk.get_job("ours")) == complete  # the run's end (its logs sealed) changes nothing the SDK reads

    def completion_events(name: str) -> list[tuple[str, str, str]] | None:
        events = [(event.involved_object_kind, event.involved_object_name, event.reason) for event in sdk.get_job_events(name)]
        return events if ("JobSet", name, "AllJobsCompleted") in events else None

    for name in ("ours", "theirs"):
        wait_until(partial(completion_events, name), timeout=60, what=f"the SDK's events of {name} naming its JobSet's completion")


def test_a_trainjob_once_suspended_reads_created_while_it_runs_ours_as_a_hand_written_one(
    platform_cluster: KubeCluster, trainjob_operator: OperatorProcess, platform_namespace: str
) -> None:
    cluster, namespace = platform_cluster, platform_namespace
    document = training_run("paused", namespace, resources=A100, runPolicy={"suspend": True}, podMetadata={"annotations": RUNNING})
    kubectl_apply(cluster, document)
    kubectl_apply(cluster, hand_written_trainjob("held", namespace, suspend=True))
    wait_for_phase(cluster, trainjob_operator, "paused", namespace, "Suspended", timeout=180)
    for name in ("paused", "held"):
        cluster.wait_for_condition("trainjob", name, namespace, "Suspended", timeout=120)  # Trainer saw it suspended
    document["spec"]["runPolicy"] = {"suspend": False}
    kubectl_apply(cluster, document)
    cluster.kubectl("patch", "trainjob", "held", "-n", namespace, "--type=merge", "-p", json.dumps({"spec": {"suspend": False}}))
    wait_for_phase(cluster, trainjob_operator, "paused", namespace, "Running", timeout=180)
    sdk = trainer_client(cluster, namespace)
    for name in ("paused", "held"):
        running_pods(cluster, name, namespace)
        resumed = cluster.wait_for_condition("trainjob", name, namespace, "Suspended", status="False", timeout=120)
        assert [item["reason"] for item in resumed["status"]["conditions"]] == ["Resumed"], name
        job = sdk.get_job(name)
        assert [(step.name, step.status) for step in job.steps] == [("node-0", "Running"), ("node-1", "Running")], name
        assert job.status == "Created", name  # not Running: the SDK derives Running only when there is no condition
        end_pods(cluster, name, namespace)
    assert [sdk.wait_for_job_status(name, timeout=180).status for name in ("paused", "held")] == ["Complete", "Complete"]
