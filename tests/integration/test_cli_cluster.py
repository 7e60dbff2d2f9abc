"""The ``trainrun`` CLI and ``trainrun.Client`` against the real cluster, the way a user works a run.

submit -> get -> wait -> logs -> metrics -> describe -> cancel -> delete, each a real ``trainrun``
process with KUBECONFIG pointing at the kwok control plane where the operator runs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from cluster.harness import KubeCluster, Outcome, pod_behaviour, wait_until, write_cri_log
from ports import free_port
from runs import TRAINRUN, OperatorProcess, operator, training_run
from runs import trainrun_cli as trainrun
from trainrun import Client

pytestmark = pytest.mark.cluster
__all__ = ["operator"]  # a fixture, used by name



def test_a_user_works_a_run_with_the_cli_and_the_client(
    kube_cluster: KubeCluster, operator: OperatorProcess, kube_namespace: str, tmp_path: Path
) -> None:
    namespace = kube_namespace
    master_log = write_cri_log(
        tmp_path / "master.log", ["loading data", 'trainrun:metric {"epoch": 1, "step": 5, "train_loss": 0.7, "val_loss": 0.5}']
    )
    kube_cluster.serve_pod_log(namespace, "cli-master-0", master_log)
    kube_cluster.serve_pod_log(namespace, "cli-worker-0", write_cri_log(tmp_path / "worker.log", ["worker ready"]))
    document = training_run("cli", namespace, resources={"pool": "t4", "gpus": 1}, podMetadata={"annotations": pod_behaviour(Outcome.RUN)})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(document))

    submitted = trainrun(kube_cluster, "submit", str(path))
    assert submitted.returncode == 0, submitted.stderr
    assert "cli" in submitted.stdout

    waited = trainrun(kube_cluster, "wait", "cli", "-n", namespace, "--for", "Running", "--timeout", "90s")
    assert waited.returncode == 0, waited.stdout + waited.stderr

    table = trainrun(kube_cluster, "get", "-n", namespace)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.strip().splitlines()[:2]
    assert header.split()[:6] == ["NAME", "PHASE", "POOL", "WORKERS", "GPUS", "METRIC"]
    assert row.split()[:5] == ["cli", "Running", "t4", "1", "1"]

    logs = trainrun(kube_cluster, "logs", "cli", "-n", namespace)
    assert logs.returncode == 0, logs.stderr
    assert "loading data" in logs.stdout and "worker ready" in logs.stdout
    assert "master-0" in logs.stdout and "worker-0" in logs.stdout
    tail = trainrun(kube_cluster, "logs", "cli", "-n", namespace, "-r", "master-0", "--tail", "1", "--raw")
    assert tail.returncode == 0, tail.stderr
    assert tail.stdout.splitlines() == ['trainrun:metric {"epoch": 1, "step": 5, "train_loss": 0.7, "val_loss": 0.5}']
    tail = trainrun(kube_cluster, "logs", "cli", "-n", namespace, "-r", "master-0", "--tail", "1")
    assert tail.stdout.splitlines() == ["epoch 1 · step 5 · train_loss 0.7 · val_loss 0.5"]  # as trainrun run shows it

    def metrics_shown() -> str | None:
        shown = trainrun(kube_cluster, "metrics", "cli", "-n", namespace)
        return shown.stdout if shown.returncode == 0 and "val_loss" in shown.stdout else None

    assert "0.5" in wait_until(metrics_shown, timeout=60, what="val_loss in `trainrun metrics`")

    described = trainrun(kube_cluster, "describe", "cli", "-n", namespace)
    assert described.returncode == 0, described.stderr
    for words in ("Running", "Ready", "Reconciling", "Stalled", "Master", "Worker"):
        assert words in described.stdout, (words, described.stdout)

    client = Client(kubeconfig=str(kube_cluster.kubeconfig), namespace=namespace)
    assert client.get("cli")["status"]["phase"] == "Running"
    assert [run["metadata"]["name"] for run in client.list()] == ["cli"]

    cancelled = trainrun(kube_cluster, "cancel", "cli", "-n", namespace)
    assert cancelled.returncode == 0, cancelled.stderr
    waited = trainrun(kube_cluster, "wait", "cli", "-n", namespace, "--for", "Cancelled", "--timeout", "90s")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    # Waiting for a phase the finished run can no longer reach fails at once with exit code 1.
    assert trainrun(kube_cluster, "wait", "cli", "-n", namespace, "--for", "Completed", "--timeout", "30s").returncode == 1

    deleted = trainrun(kube_cluster, "delete", "cli", "-n", namespace)
    assert deleted.returncode == 0, deleted.stderr
    wait_until(lambda: kube_cluster.get("trainingrun", "cli", namespace) is None, timeout=60, what="the run to be deleted")
    missing = trainrun(kube_cluster, "get", "cli", "-n", namespace)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr and "cli" in missing.stderr


def test_invalid_file_is_refused_before_it_reaches_the_cluster(kube_cluster: KubeCluster, kube_namespace: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(training_run("bad", kube_namespace, distribution={"workers": -2})))
    refused = trainrun(kube_cluster, "submit", str(path))
    assert refused.returncode == 1
    assert "spec.distribution.workers" in refused.stderr and "Traceback" not in refused.stderr
    assert kube_cluster.get("trainingrun", "bad", kube_namespace) is None


def test_an_unreachable_api_server_is_one_clear_line(tmp_path: Path) -> None:
    """A kubeconfig whose server does not answer (a cluster that is down, a VPN not connected)."""
    port = free_port()  # nothing listens on it
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "down", "cluster": {"server": f"https://127.0.0.1:{port}", "insecure-skip-tls-verify": True}}],
                "users": [{"name": "me", "user": {"token": "t"}}],
                "contexts": [{"name": "down", "context": {"cluster": "down", "user": "me"}}],
                "current-context": "down",
            }
        )
    )
    result = subprocess.run(
        [TRAINRUN, "--kubeconfig", str(kubeconfig), "get"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot reach the API server:"), result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
