"""TrainingRuns in real pods: the kubelet of tests/cluster/node.sh runs every process these tests see.

The operator runs as a process (tests/integration/runs.py); the PyTorchJob's Master and Worker, the
stage-in init containers and the uploader Job run in containers of the images built from
images/trainer/Dockerfile and images/operator/Dockerfile, on the real node, with torchrun finding the
Master through cluster DNS. Nothing here is simulated: a status, a log line or an artifact can only
come from those containers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from cluster.harness import KubeCluster
from mlflow_server import MlflowServer
from realpods import (
    REALPOD_TIMEOUT,
    PodReachableS3,
    custom_run,
    folder_with,
    output_volume,
    pods_on_real_node,
    run_staged_input,
    s3_client_env,
    train_quickstart,
    trainrun,
)
from runs import OperatorProcess, wait_for_phase

pytestmark = [pytest.mark.realpod, pytest.mark.timeout(REALPOD_TIMEOUT), pytest.mark.cluster, pytest.mark.s3]


def test_quickstart_trains_in_real_pods_and_its_model_is_uploaded_and_registered(
    kube_cluster: KubeCluster,
    operator: OperatorProcess,
    kube_namespace: str,
    s3: PodReachableS3,
    mlflow_registry: MlflowServer,
    tmp_path: Path,
) -> None:
    done = train_quickstart(kube_cluster, operator, kube_namespace, s3, tmp_path, register="quickstart")
    assert kube_cluster.get("pytorchjob", "quickstart", kube_namespace) is not None
    # The Worker's init container (the training-operator's) waited for the Master's name, then exited.
    worker = done.pods["worker-0"]
    assert [status["state"]["terminated"]["exitCode"] for status in worker["status"]["initContainerStatuses"]] == [0]
    print(f"PyTorchJob: apply -> first training step {done.first_step_seconds:.1f}s, apply -> Completed {done.completed_seconds:.1f}s")


FAILING_SCRIPT = """\
import os
import time

print("reading shards", flush=True)
if os.environ["RANK"] == "1":
    raise ValueError("shard 7 is corrupt: expected 4096 records, found 12")
time.sleep(300)
"""


def test_submitted_code_reads_an_input_staged_from_s3(
    kube_cluster: KubeCluster, operator: OperatorProcess, kube_namespace: str, s3: PodReachableS3, tmp_path: Path
) -> None:
    run_staged_input(kube_cluster, operator, kube_namespace, s3, tmp_path)


def test_a_replica_that_raises_fails_the_run_with_its_exception(
    kube_cluster: KubeCluster, operator: OperatorProcess, kube_namespace: str, s3: PodReachableS3, tmp_path: Path
) -> None:
    namespace = kube_namespace
    secret = s3.create_secret(kube_cluster, namespace)
    code = folder_with(tmp_path / "code", {"train.py": FAILING_SCRIPT})
    document = custom_run(
        "crash", namespace, script="train.py", runPolicy={"restartPolicy": "Never", "backoffLimit": 0},
        output={"uri": s3.uri("crash"), "secretName": secret},
    )
    output_volume(kube_cluster, namespace, "crash-outputs", tmp_path / "volume")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(document))
    trainrun(kube_cluster, "submit", str(tmp_path / "run.yaml"), "--code", str(code), "-n", namespace, env=s3_client_env(s3))

    run = wait_for_phase(kube_cluster, operator, "crash", namespace, "Failed", timeout=300)
    # The Worker's own exception, read from its real container, under torchrun's report of it.
    expected = "replica worker-0 exited with code 1: ValueError: shard 7 is corrupt: expected 4096 records, found 12"
    assert expected in run["status"]["message"], json.dumps(run["status"], indent=1)
    worker = pods_on_real_node(kube_cluster, namespace)["worker-0"]
    terminated = worker["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 1 and "ChildFailedError" in terminated["message"], terminated
