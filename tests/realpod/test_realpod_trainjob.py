"""The quick start as a Kubeflow Trainer v2 TrainJob in real pods: the TrainJob backend on the real node.

The session's cluster runs JobSet and Trainer v2 beside the training-operator (tests/realpod/conftest.py),
and the operator, a process here, is configured with ``backend: TrainJob``: the run becomes a TrainJob of
the shipped ClusterTrainingRuntime ``trainrun-torch``, Trainer makes its JobSet, JobSet one Indexed Job
of two pods (Master and Worker) and the headless Service their torchruns meet through
(``quickstart-node-0-0.quickstart``, answered by the node's CoreDNS). Each pod's ``stage-in`` init
container runs the operator image (with nothing to stage, and with an input and a code snapshot to fetch),
each node writes its outputs in its own folder of the output claim, the uploader copies the Master's.
What the runs must show is what they show on the PyTorchJob backend (the helpers of realpods.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster.harness import KubeCluster
from realpods import REALPOD_TIMEOUT, PodReachableS3, run_staged_input, train_quickstart
from runs import OperatorProcess, operator_on_backend

pytestmark = [pytest.mark.realpod, pytest.mark.timeout(REALPOD_TIMEOUT), pytest.mark.cluster, pytest.mark.s3]

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


@pytest.fixture(scope="module")
def trainjob_operator(kube_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The operator on the real node's cluster, its configuration choosing the TrainJob backend."""
    with operator_on_backend(kube_cluster, "TrainJob", tmp_path_factory.mktemp("trainjob-operator") / "operator.log") as process:
        yield process


def test_quickstart_trains_as_a_trainjob_in_real_pods_and_its_model_is_uploaded(
    kube_cluster: KubeCluster, trainjob_operator: OperatorProcess, kube_namespace: str, s3: PodReachableS3, tmp_path: Path
) -> None:
    cluster, namespace = kube_cluster, kube_namespace
    done = train_quickstart(cluster, trainjob_operator, namespace, s3, tmp_path)
    trainjob = cluster.get("trainjob", "quickstart", namespace)
    assert trainjob is not None and trainjob["spec"]["runtimeRef"]["name"] == "trainrun-torch"
    assert cluster.get("pytorchjob", "quickstart", namespace) is None

    # Master and Worker: the two pods of the JobSet's one Indexed Job, named on its headless Service.
    master, worker = done.pods["master-0"], done.pods["worker-0"]
    assert {pod["metadata"]["labels"][JOB_NAME_LABEL] for pod in (master, worker)} == {"quickstart-node-0"}
    assert (master["spec"]["hostname"], master["spec"]["subdomain"]) == ("quickstart-node-0-0", "quickstart")
    env = {item["name"]: item.get("value") for item in worker["spec"]["containers"][0]["env"]}
    assert env["PET_MASTER_ADDR"] == "quickstart-node-0-0.quickstart", env
    # The runtime's stage-in init container ran the operator image in both pods, and had nothing to do.
    for pod in (master, worker):
        statuses = pod["status"]["initContainerStatuses"]
        assert [(status["name"], status["state"]["terminated"]["exitCode"]) for status in statuses] == [("stage-in", 0)], statuses
    # Every node had its own folder of the output claim; the Master's holds the model the uploader copied.
    volume = tmp_path / "volume"
    assert (volume / "node-0" / "model.ts").is_file() and (volume / "node-1").is_dir(), sorted(volume.rglob("*"))
    print(f"TrainJob: apply -> first training step {done.first_step_seconds:.1f}s, apply -> Completed {done.completed_seconds:.1f}s")


def test_submitted_code_reads_an_input_the_runtimes_stage_in_fetched_from_s3(
    kube_cluster: KubeCluster, trainjob_operator: OperatorProcess, kube_namespace: str, s3: PodReachableS3, tmp_path: Path
) -> None:
    """The runtime's stage-in, with downloads: the run's credentials from its Secret's files, the script run in
    the code snapshot's folder (a TrainJob has no workingDir: `cd` through sh)."""
    run_staged_input(kube_cluster, trainjob_operator, kube_namespace, s3, tmp_path)
    assert kube_cluster.get("trainjob", "custom", kube_namespace) is not None
