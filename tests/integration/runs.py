"""Shared by the integration tests: the operator as a subprocess and helpers to drive TrainingRuns with kubectl.

The operator runs exactly as the Deployment starts it (``kopf run --standalone --all-namespaces -m
trainrun.controller.handlers``), so a test can SIGKILL and restart it.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster.harness import ClusterError, KubeCluster, wait_until

REPO = Path(__file__).resolve().parents[2]
TRAINER_IMAGE = "ghcr.io/trainrun/trainer:0.1.0"
JOB_LABEL = "training.kubeflow.org/job-name"


class OperatorProcess:
    """The operator as a child process with its output in a log file."""

    def __init__(self, cluster: KubeCluster, log_path: Path) -> None:
        self.cluster = cluster
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        with socket.socket() as probe:  # a free port for its Prometheus metrics
            probe.bind(("127.0.0.1", 0))
            self.metrics_port: int = probe.getsockname()[1]

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self) -> None:
        env = {
            **self.cluster.env(),
            "TRAINRUN_OPERATOR_NAMESPACE": "trainrun-system",
            "TRAINRUN_METRICS_PORT": str(self.metrics_port),
            "PYTHONUNBUFFERED": "1",
        }
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces", "-m", "trainrun.controller.handlers"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def training_run(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"image": TRAINER_IMAGE, "distribution": {"workers": 1}, "hyperparameters": {"epochs": 1}}
    body.update(spec)
    return {"apiVersion": "trainrun.dev/v1alpha1", "kind": "TrainingRun", "metadata": {"name": name, "namespace": namespace}, "spec": body}


def kubectl_apply(cluster: KubeCluster, document: dict[str, Any], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(document), check=check)


def get_run(cluster: KubeCluster, name: str, namespace: str) -> dict[str, Any]:
    found = cluster.get("trainingrun", name, namespace)
    assert found is not None
    return found


def wait_for_phase(
    cluster: KubeCluster, operator: OperatorProcess, name: str, namespace: str, phase: str, *, timeout: float = 90, seen: list[str] | None = None
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        run = get_run(cluster, name, namespace)
        current = run.get("status", {}).get("phase")
        if seen is not None and current and (not seen or seen[-1] != current):
            seen.append(current)
        return run if current == phase else None

    try:
        return wait_until(reached, timeout=timeout, what=f"TrainingRun {name} phase {phase}", interval=0.3)
    except ClusterError as error:
        status = get_run(cluster, name, namespace).get("status")
        raise AssertionError(f"{error}\nstatus: {json.dumps(status, indent=1)}\noperator log:\n{operator.log_tail()}") from None


def events_of(cluster: KubeCluster, name: str, namespace: str) -> list[dict[str, Any]]:
    listing = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name},involvedObject.kind=TrainingRun", "-o", "json"
    )
    return sorted(json.loads(listing.stdout)["items"], key=lambda event: event.get("lastTimestamp") or "")


def condition(run: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(item for item in run["status"]["conditions"] if item["type"] == kind)


def service_account_cluster(cluster: KubeCluster, folder: Path) -> KubeCluster:
    """The cluster as the operator's ServiceAccount sees it, with only the RBAC of ``manifests/`` (installed
    here as the README says; the Deployment is removed, the operator runs as a local process instead)."""
    cluster.kubectl("apply", "--server-side", "-k", str(REPO / "manifests"))
    cluster.kubectl("delete", "deployment", "trainrun-operator", "-n", "trainrun-system", "--ignore-not-found")
    token = cluster.kubectl("create", "token", "trainrun-operator", "-n", "trainrun-system", "--duration", "2h")
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": token.stdout.strip()}
    kubeconfig = folder / "kubeconfig-trainrun-operator"
    kubeconfig.write_text(yaml.safe_dump(config))
    return KubeCluster(name=cluster.name, kubeconfig=kubeconfig)


@pytest.fixture(scope="module")
def operator_with_shipped_rbac(
    kube_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator as a process authenticated as its ServiceAccount: what it does needs no more rights
    than manifests/base/rbac.yaml grants."""
    folder = tmp_path_factory.mktemp("operator-rbac")
    process = OperatorProcess(service_account_cluster(kube_cluster, folder), folder / "operator.log")
    process.start()
    try:
        yield process
    finally:
        process.stop()
        # An RBAC denial, not e.g. "forbidden: ... because it is being terminated" (a namespace going away).
        denial = re.compile(r'forbidden: User "[^"]+" cannot')
        forbidden = [line for line in process.log_path.read_text(errors="replace").splitlines() if denial.search(line)]
        assert not forbidden, "the shipped RBAC is missing a right:\n" + "\n".join(forbidden[:5])


@pytest.fixture(scope="module")
def operator(kube_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    process = OperatorProcess(kube_cluster, tmp_path_factory.mktemp("operator") / "operator.log")
    process.start()
    try:
        yield process
    finally:
        process.stop()
        assert process.process is not None and process.process.poll() is not None
