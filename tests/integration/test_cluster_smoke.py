"""Smoke tests of the local test cluster itself: the training-operator, the scheduler, the GPU pools,
the kwok stages and pod logs behave as the other integration tests assume.

Run with: .venv/bin/pytest -m cluster tests/integration/test_cluster_smoke.py
Uses the session fixture kube_cluster (tests/integration/conftest.py). PyTorchJobs are submitted
directly with kubectl, without the trainrun operator.
"""

from __future__ import annotations

import queue
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from cluster.harness import (
    GPU_RESOURCE,
    GPU_TOLERATION,
    POOL_LABEL,
    KubeCluster,
    Outcome,
    pod_behaviour,
    pod_condition,
    wait_until,
    write_cri_log,
)

pytestmark = pytest.mark.cluster

JOB_NAME_LABEL = "training.kubeflow.org/job-name"
ADD_ON_GROUPS = ("jobset.x-k8s.io", "trainer.kubeflow.org", "kueue.x-k8s.io")


def replica_spec(
    annotations: dict[str, str], *, gpus: int, pool: str = "a100", replicas: int = 1
) -> dict[str, Any]:
    """A PyTorchJob replica spec on POOL asking for GPUS GPUs per pod, never restarted."""
    return {
        "replicas": replicas,
        "restartPolicy": "Never",
        "template": {
            "metadata": {"annotations": annotations},
            "spec": {
                "nodeSelector": {POOL_LABEL: pool},
                "tolerations": [GPU_TOLERATION],
                "containers": [
                    {
                        "name": "pytorch",
                        "image": "registry.invalid/trainrun/trainer:test",
                        "command": ["python", "-m", "trainrun_trainer"],
                        "resources": {"limits": {GPU_RESOURCE: str(gpus)}},
                    }
                ],
            },
        },
    }


def pytorchjob(
    name: str, namespace: str, replica_specs: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"pytorchReplicaSpecs": replica_specs},
    }


def is_scheduled(pod: dict[str, Any]) -> bool:
    return bool(pod["spec"].get("nodeName"))


def container_env(pod: dict[str, Any], container: str = "pytorch") -> dict[str, str]:
    for spec in pod["spec"]["containers"]:
        if spec["name"] == container:
            return {item["name"]: item.get("value", "") for item in spec.get("env", [])}
    raise AssertionError(f"pod {pod['metadata']['name']} has no container {container}")


def terminated_state(pod: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = pod["status"]["containerStatuses"][0]["state"]
    assert "terminated" in state, (
        f"container of {pod['metadata']['name']} is not terminated: {state}"
    )
    return state["terminated"]  # type: ignore[no-any-return]


def test_kwok_manages_only_the_nodes_annotated_as_fake(kube_cluster: KubeCluster) -> None:
    """A real kubelet's node can join beside the simulated ones: kwok leaves it alone (up.sh starts kwok
    with manage-all-nodes=false and the kwok.x-k8s.io/node=fake selector that nodes.yaml's nodes carry)."""
    annotated = kube_cluster.get("node", "a100-0")
    assert annotated is not None and annotated["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    assert (pod_condition(annotated, "Ready") or {}).get("status") == "True"
    name, later = "real-node-smoke", "fake-node-smoke"
    kube_cluster.apply({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"type": "real"}}})
    try:
        # A known later event: a node annotated as fake, created after it, that kwok takes up.
        kube_cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": later, "annotations": {"kwok.x-k8s.io/node": "fake"}},
                "spec": {"taints": [{"key": "trainrun.dev/smoke", "effect": "NoSchedule"}]},  # no other test's pods
                "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "1"}, "capacity": {"cpu": "1", "memory": "1Gi", "pods": "1"}},
            }
        )
        wait_until(
            lambda: (pod_condition(kube_cluster.get("node", later), "Ready") or {}).get("status") == "True",
            timeout=60,
            what="kwok to take up a fake node created later",
        )
        node = kube_cluster.get("node", name)
        assert node is not None
        assert not node.get("status", {}).get("conditions"), node["status"]
    finally:
        kube_cluster.kubectl("delete", "node", name, later, "--wait=false", check=False)


def test_no_daemon_of_the_cluster_holds_the_creation_lock(kube_cluster: KubeCluster) -> None:
    """up.sh takes a lock only while it creates a cluster: a daemon that inherited it would keep every
    other cluster of this machine waiting until this one stops."""
    pids = [int(path.read_text()) for path in (kube_cluster.state_dir / "kwok" / "clusters").glob("*/pids/*.pid")]
    assert len(pids) >= 5, pids  # etcd, kube-apiserver, controller-manager, scheduler, kwok
    holders = []
    for pid in pids:
        for descriptor in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = descriptor.readlink()
            except FileNotFoundError:
                continue  # closed since the listing (a daemon's connections come and go)
            if target.name == "cluster-create.lock":
                holders.append(pid)
    assert holders == []


def test_pytorchjob_runs_on_the_a100_pool_and_succeeds(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    job = "smoke-ok"
    behaviour = pod_behaviour(Outcome.SUCCEED, after="3s")
    kube_cluster.apply(
        pytorchjob(
            job,
            kube_namespace,
            {
                "Master": replica_spec(behaviour, gpus=8),
                "Worker": replica_spec(behaviour, gpus=8),
            },
        )
    )

    pods = kube_cluster.wait_for_pods(
        kube_namespace,
        f"{JOB_NAME_LABEL}={job}",
        count=2,
        ready=is_scheduled,
        what="scheduled replica pods",
    )
    nodes = {pod["spec"]["nodeName"] for pod in pods}
    assert len(nodes) == 2, f"8 GPUs each cannot share an 8-GPU node, got {nodes}"
    for node_name in nodes:
        node = kube_cluster.get("node", node_name)
        assert node is not None
        assert node["metadata"]["labels"][POOL_LABEL] == "a100"

    finished = kube_cluster.wait_for_condition(
        "pytorchjob", job, kube_namespace, "Succeeded", timeout=60
    )
    assert finished["status"]["replicaStatuses"]["Master"].get("succeeded") == 1
    # The job succeeds with its Master; the Worker, started a moment later, ends a moment later.
    def both_succeeded() -> list[dict[str, Any]] | None:
        pods = kube_cluster.list_objects("pods", kube_namespace, f"{JOB_NAME_LABEL}={job}")
        return pods if len(pods) == 2 and all(pod["status"]["phase"] == "Succeeded" for pod in pods) else None

    for pod in wait_until(both_succeeded, timeout=30, what="both replica pods Succeeded"):
        assert terminated_state(pod)["exitCode"] == 0


def test_training_operator_sets_the_documented_env(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    """The env contract of shared/PYTORCHJOB.md and the brief's CONTRACT.md, read from real pods."""
    job = "smoke-env"
    behaviour = pod_behaviour(Outcome.RUN)
    manifest = pytorchjob(
        job,
        kube_namespace,
        {
            "Master": replica_spec(behaviour, gpus=1, pool="t4"),
            "Worker": replica_spec(behaviour, gpus=1, pool="t4"),
        },
    )
    manifest["spec"]["nprocPerNode"] = "2"
    manifest["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = 2
    kube_cluster.apply(manifest)

    pods = kube_cluster.wait_for_pods(
        kube_namespace, f"{JOB_NAME_LABEL}={job}", count=3, what="replica pods"
    )
    env_by_pod = {pod["metadata"]["name"]: container_env(pod) for pod in pods}
    common = {
        "PYTHONUNBUFFERED": "1",
        "MASTER_ADDR": f"{job}-master-0",
        "PET_MASTER_ADDR": f"{job}-master-0",
        "MASTER_PORT": "23456",
        "PET_MASTER_PORT": "23456",
        "WORLD_SIZE": "6",
        "PET_NNODES": "3",
        "PET_NPROC_PER_NODE": "2",
    }
    expected_rank = {
        f"{job}-master-0": "0",
        f"{job}-worker-0": "1",
        f"{job}-worker-1": "2",
    }
    for pod_name, env in env_by_pod.items():
        for key, value in common.items():
            assert env.get(key) == value, (
                f"{pod_name}: {key}={env.get(key)!r}, expected {value!r}; env {env}"
            )
        assert env.get("RANK") == expected_rank[pod_name], f"{pod_name}: env {env}"
        assert env.get("PET_NODE_RANK") == expected_rank[pod_name], (
            f"{pod_name}: env {env}"
        )
        assert "LOCAL_RANK" not in env


def test_replica_exit_code_3_fails_the_job(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    job = "smoke-fail"
    kube_cluster.apply(
        pytorchjob(
            job,
            kube_namespace,
            {
                "Master": replica_spec(pod_behaviour(Outcome.RUN), gpus=8),
                "Worker": replica_spec(
                    pod_behaviour(Outcome.FAIL, after="2s", exit_code=3), gpus=8
                ),
            },
        )
    )

    failed = kube_cluster.wait_for_condition(
        "pytorchjob", job, kube_namespace, "Failed", timeout=60
    )
    assert failed["status"]["replicaStatuses"]["Worker"].get("failed") == 1
    worker = kube_cluster.get("pod", f"{job}-worker-0", kube_namespace)
    assert worker is not None
    assert worker["status"]["phase"] == "Failed"
    terminated = terminated_state(worker)
    assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")


def test_crash_loop_under_on_failure_hits_the_backoff_limit(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    """With restartPolicy OnFailure a failing container restarts in place until backoffLimit."""
    job = "smoke-crashloop"
    master = replica_spec(
        pod_behaviour(Outcome.FAIL, after="1s", exit_code=3), gpus=1, pool="t4"
    )
    master["restartPolicy"] = "OnFailure"
    manifest = pytorchjob(job, kube_namespace, {"Master": master})
    manifest["spec"]["runPolicy"] = {"backoffLimit": 2}
    kube_cluster.apply(manifest)

    failed = kube_cluster.wait_for_condition(
        "pytorchjob", job, kube_namespace, "Failed", timeout=60
    )
    condition = pod_condition(failed, "Failed")
    assert condition is not None
    assert "backoff limit" in condition["message"], condition
    pod = kube_cluster.get("pod", f"{job}-master-0", kube_namespace)
    assert pod is not None
    status = pod["status"]["containerStatuses"][0]
    assert status["restartCount"] >= 2
    last = status["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"]) == (3, "Error")


def test_more_gpus_than_any_node_stays_pending_unschedulable(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    job = "smoke-too-big"
    kube_cluster.apply(
        pytorchjob(
            job,
            kube_namespace,
            {"Master": replica_spec(pod_behaviour(Outcome.SUCCEED), gpus=16)},
        )
    )

    def unschedulable_master() -> dict[str, Any] | None:
        pod = kube_cluster.get("pod", f"{job}-master-0", kube_namespace)
        condition = pod_condition(pod, "PodScheduled") if pod else None
        if (
            condition
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            return pod
        return None

    pod = wait_until(
        unschedulable_master,
        timeout=60,
        what="the master pod to be reported Unschedulable",
    )
    condition = pod_condition(pod, "PodScheduled")
    assert condition is not None
    assert "nvidia.com/gpu" in condition.get("message", ""), condition
    # Nothing starts it later (kwok leaves pods without a node alone): a known later event first, a pod
    # created after it that the scheduler places and kwok runs to its end.
    kube_cluster.apply(pytorchjob(f"{job}-later", kube_namespace, {"Master": replica_spec(pod_behaviour(Outcome.SUCCEED), gpus=1)}))
    wait_until(
        lambda: (kube_cluster.get("pod", f"{job}-later-master-0", kube_namespace) or {}).get("status", {}).get("phase") == "Succeeded",
        timeout=120,
        what="a pod created later to be placed and run to its end",
    )
    pod_later = kube_cluster.get("pod", f"{job}-master-0", kube_namespace)
    assert pod_later is not None
    assert pod_later["status"]["phase"] == "Pending"
    assert not pod_later["spec"].get("nodeName")
    job_object = kube_cluster.get("pytorchjob", job, kube_namespace)
    assert job_object is not None
    assert pod_condition(job_object, "Running") is None


@pytest.mark.parametrize(
    ("outcome", "phase", "reason", "exit_code"),
    [
        (Outcome.SUCCEED, "Succeeded", "Completed", 0),
        (Outcome.FAIL, "Failed", "Error", 1),
        (Outcome.OOM, "Failed", "OOMKilled", 137),
    ],
)
def test_stage_ends_a_pod_as_its_annotation_says(
    kube_cluster: KubeCluster,
    kube_namespace: str,
    outcome: Outcome,
    phase: str,
    reason: str,
    exit_code: int,
) -> None:
    kube_cluster.apply(
        plain_pod("ends", kube_namespace, pod_behaviour(outcome, after="1s"))
    )

    pod = kube_cluster.wait_for_pods(
        kube_namespace,
        "app=smoke",
        count=1,
        ready=lambda pod: pod["status"].get("phase") == phase,
        what=f"{phase} pod",
    )[0]
    terminated = terminated_state(pod)
    assert (terminated["reason"], terminated["exitCode"]) == (reason, exit_code)


def test_oom_under_on_failure_restarts_the_container_in_place(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    pod_manifest = plain_pod(
        "oomer", kube_namespace, pod_behaviour(Outcome.OOM, after="1s")
    )
    pod_manifest["spec"]["restartPolicy"] = "OnFailure"
    kube_cluster.apply(pod_manifest)

    def restarted(pod: dict[str, Any]) -> bool:
        statuses = pod["status"].get("containerStatuses") or [{}]
        return bool(statuses[0].get("restartCount", 0) >= 1)

    pod = kube_cluster.wait_for_pods(
        kube_namespace, "app=smoke", count=1, ready=restarted, what="restarted pod"
    )[0]
    assert pod["status"]["phase"] == "Running"
    last = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"]) == (137, "OOMKilled")


def test_image_pull_failure_stage_keeps_the_pod_pending(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    kube_cluster.apply(
        plain_pod("no-image", kube_namespace, pod_behaviour(Outcome.IMAGE_PULL_BACKOFF))
    )

    def waiting_reason(pod: dict[str, Any]) -> str | None:
        statuses = pod["status"].get("containerStatuses") or [{}]
        return statuses[0].get("state", {}).get("waiting", {}).get("reason")  # type: ignore[no-any-return]

    pod = kube_cluster.wait_for_pods(
        kube_namespace,
        "app=smoke",
        count=1,
        ready=lambda pod: waiting_reason(pod) == "ImagePullBackOff",
        what="pod",
    )[0]
    assert pod["status"]["phase"] == "Pending"


def test_kubectl_logs_serves_the_attached_file(
    kube_cluster: KubeCluster, kube_namespace: str, tmp_path: Path
) -> None:
    log_file = write_cri_log(
        tmp_path / "trainer.log",
        ["epoch 1 loss 0.9", 'trainrun:metric {"epoch": 1, "step": 3}'],
    )
    kube_cluster.serve_pod_log(kube_namespace, "talker", log_file)
    kube_cluster.apply(plain_pod("talker", kube_namespace, pod_behaviour(Outcome.RUN)))
    kube_cluster.wait_for_pods(
        kube_namespace,
        "app=smoke",
        count=1,
        ready=lambda pod: pod["status"].get("phase") == "Running",
        what="running pod",
    )

    logs = kube_cluster.kubectl("logs", "-n", kube_namespace, "talker").stdout
    assert logs.splitlines() == [
        "epoch 1 loss 0.9",
        'trainrun:metric {"epoch": 1, "step": 3}',
    ]

    # kubectl logs -f streams lines appended later.
    follower = subprocess.Popen(
        [
            str(kube_cluster.kubectl_binary),
            "logs",
            "-f",
            "-n",
            kube_namespace,
            "talker",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=kube_cluster.env(),
    )
    lines: queue.Queue[str] = queue.Queue()
    assert follower.stdout is not None
    stdout = follower.stdout

    def read_lines() -> None:
        for line in stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=read_lines, daemon=True).start()
    try:
        assert [lines.get(timeout=20) for _ in range(2)] == [
            "epoch 1 loss 0.9",
            'trainrun:metric {"epoch": 1, "step": 3}',
        ]
        write_cri_log(log_file, ["epoch 2 loss 0.5"], append=True)
        assert lines.get(timeout=20) == "epoch 2 loss 0.5"
    finally:
        follower.kill()
        follower.wait(timeout=10)


def plain_pod(name: str, namespace: str, annotations: dict[str, str]) -> dict[str, Any]:
    """A bare pod on the cpu pool."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": "smoke"},
            "annotations": annotations,
        },
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {POOL_LABEL: "cpu"},
            "containers": [{"name": "main", "image": "registry.invalid/smoke:test"}],
        },
    }


def test_a_cluster_that_asks_for_no_add_ons_runs_none(kube_cluster: KubeCluster) -> None:
    """up.sh starts JobSet, Trainer v2 and Kueue only when TRAINRUN_CLUSTER_ADDONS asks (the platform_cluster
    fixture of test_platform.py): this cluster serves none of their APIs and runs none of their processes."""
    versions = kube_cluster.kubectl("api-versions").stdout.split()
    assert [version for version in versions if version.split("/")[0] in ADD_ON_GROUPS] == []
    assert sorted(path.name for path in kube_cluster.state_dir.glob("*.pid")) == ["owner.pid", "supervisor.pid", "training-operator.pid"]
