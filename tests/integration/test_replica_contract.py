"""The environment a replica's program sees, read off real pods on both backends: the same contract.

On the platform cluster, one run of three replicas (a Master and two Workers) goes through the operator
once with ``backend: PyTorchJob`` (the training-operator writes the pods' rendezvous variables) and once
with ``backend: TrainJob`` (Trainer v2 writes ``PET_*``, the operator the rest). Each pod's environment is
resolved as the kubelet resolves it (a fieldRef to the Job's completion index is the pod's rank), and must
say the same on both: RANK 0, 1, 2 in replica order and PET_NODE_RANK with it, WORLD_SIZE and PET_NNODES 3,
PET_NPROC_PER_NODE 1, MASTER_ADDR equal to PET_MASTER_ADDR (the Master's resolvable name on that backend)
and MASTER_PORT to PET_MASTER_PORT, and the run's own variables (OUTPUT_DIR, TRAINRUN_RUN_NAME, ...).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster.harness import KubeCluster, Outcome, pod_behaviour, write_cri_log
from runs import OperatorProcess, get_run, kubectl_apply, operator_on_backend, training_run, wait_for_phase
from trainrun.status import replica_name

pytestmark = pytest.mark.cluster

MASTER_ADDRESS = {"PyTorchJob": "envs-master-0", "TrainJob": "envs-node-0-0.envs"}


@pytest.fixture(scope="module", params=sorted(MASTER_ADDRESS))
def backend_operator(
    request: pytest.FixtureRequest, platform_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, OperatorProcess]]:
    backend = str(request.param)
    with operator_on_backend(platform_cluster, backend, tmp_path_factory.mktemp(f"contract-{backend}") / "operator.log") as process:
        yield backend, process


def resolved_env(pod: dict[str, Any]) -> dict[str, str]:
    """The training container's environment as the kubelet gives it (fieldRefs to the pod's annotations)."""
    env: dict[str, str] = {}
    for item in pod["spec"]["containers"][0].get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            path = item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath", "")
            prefix = "metadata.annotations['"
            if path.startswith(prefix):
                env[item["name"]] = pod["metadata"]["annotations"][path[len(prefix) : -2]]
    return env


def test_every_replica_sees_the_same_contract_on_either_backend(
    platform_cluster: KubeCluster, backend_operator: tuple[str, OperatorProcess], platform_namespace: str, tmp_path: Path
) -> None:
    backend, operator = backend_operator
    cluster, namespace = platform_cluster, platform_namespace
    cluster.serve_namespace_logs(namespace, write_cri_log(tmp_path / "replica.log", ["up"]))
    document = training_run("envs", namespace, distribution={"workers": 2, "nprocPerNode": 1}, podMetadata={"annotations": pod_behaviour(Outcome.RUN)})
    kubectl_apply(cluster, document)
    wait_for_phase(cluster, operator, "envs", namespace, "Running", timeout=180)
    pods = cluster.list_objects("pods", namespace, "trainrun.dev/run=envs,app.kubernetes.io/component=replica")
    by_replica = {replica_name(pod): resolved_env(pod) for pod in pods}
    assert sorted(by_replica) == ["master-0", "worker-0", "worker-1"]
    ordered = [by_replica[name] for name in ("master-0", "worker-0", "worker-1")]
    assert [env["RANK"] for env in ordered] == ["0", "1", "2"] == [env["PET_NODE_RANK"] for env in ordered]
    for env in ordered:
        assert (env["WORLD_SIZE"], env["PET_NNODES"], env["PET_NPROC_PER_NODE"]) == ("3", "3", "1")
        assert env["MASTER_ADDR"] == env["PET_MASTER_ADDR"] == MASTER_ADDRESS[backend]
        assert env["MASTER_PORT"] == env["PET_MASTER_PORT"] and env["MASTER_PORT"].isdigit()
        assert env["OUTPUT_DIR"] == "/outputs" and env["TRAINRUN_RUN_NAME"] == "envs"
        assert env["TRAINRUN_NAMESPACE"] == namespace and env["TRAINRUN_EPOCHS"] == "1"
    status = get_run(cluster, "envs", namespace)["status"]
    assert status["replicas"]["Master"]["active"] == 1 and status["replicas"]["Worker"]["active"] == 2
