"""Shared by the integration tests: the operator as a subprocess and helpers to drive TrainingRuns with kubectl.

The operator runs as the Deployment's console script ``trainrun-operator`` does (``python -m
trainrun.controller``, all namespaces), so a test can SIGKILL and restart it; the operator fixtures
fail a test module whose operator printed a Python traceback.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
import yaml
from cluster.harness import ClusterError, KubeCluster, wait_until
from ports import free_port
from trainrun.spec.config import CONFIG_MAP_KEY, CONFIG_MAP_NAME

REPO = Path(__file__).resolve().parents[2]
TRAINRUN = str(Path(sys.executable).parent / "trainrun")  # the CLI of this virtualenv (this checkout's package)


def trainrun_cli(cluster: KubeCluster, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``trainrun ARGS`` against CLUSTER (its kubeconfig in the environment); the caller checks the result."""
    return subprocess.run([TRAINRUN, *args], env=cluster.env(), capture_output=True, text=True, timeout=timeout)
TRAINER_IMAGE = "ghcr.io/trainrun/trainer:0.1.0"
JOB_LABEL = "training.kubeflow.org/job-name"


OPERATOR_NAMESPACE = "trainrun-system"
LEASE_NAME = "trainrun-operator"
TRACEBACK = "Traceback (most recent call last)"


class OperatorProcess:
    """The operator as a child process (``python -m trainrun.controller ARGS``) with its output in a log file.

    identity is its POD_NAME, the leader-election identity: two processes with different identities
    run side by side as a leader and a standby. A restart after kill() keeps the identity, as a container
    restarted in the same pod does. command replaces ``python -m trainrun.controller`` (the benchmark
    measures an older operator with it), extra_env is added to its environment. Every start appends to
    the same log, so tracebacks() covers all of its lives.
    """

    def __init__(
        self,
        cluster: KubeCluster,
        log_path: Path,
        *,
        args: Sequence[str] = (),
        identity: str | None = None,
        command: Sequence[str] | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.cluster = cluster
        self.log_path = log_path
        self.args = list(args)
        self.identity = identity or f"trainrun-test-{uuid.uuid4().hex[:8]}"
        self.command = list(command) if command is not None else [sys.executable, "-m", "trainrun.controller"]
        self.extra_env = dict(extra_env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.metrics_port = free_port()  # for its Prometheus metrics

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int:
        assert self.process is not None, "the operator was never started"
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        env = {
            **self.cluster.env(),
            "TRAINRUN_OPERATOR_NAMESPACE": OPERATOR_NAMESPACE,
            "TRAINRUN_METRICS_PORT": str(self.metrics_port),
            "POD_NAME": self.identity,
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"=== test harness: start {self.starts} of {self.identity} ({time.strftime('%H:%M:%S')})\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [*self.command, *self.args], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO
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

    def ready(self) -> bool:
        """Whether its /readyz answers 200: every watch cache synced (a standby is ready too)."""
        try:
            with urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=5) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def is_leader(self) -> bool:
        """True when the leader-election Lease names this process's identity as its holder."""
        return lease_holder(self.cluster) == self.identity

    def wait_until_leader(self, timeout: float = 60) -> float:
        """Waits until this process holds the Lease; returns the seconds waited."""
        started = time.monotonic()
        wait_until(self.is_leader, timeout=timeout, what=f"{self.identity} to hold the Lease", interval=0.2)
        return time.monotonic() - started

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tracebacks(self, context: int = 25) -> list[str]:
        """Each Python traceback in its output, with the lines that follow it."""
        lines = self.output().splitlines()
        return ["\n".join(lines[index : index + context]) for index, line in enumerate(lines) if TRACEBACK in line]

    def assert_no_traceback(self) -> None:
        found = self.tracebacks()
        assert not found, f"{len(found)} Python traceback(s) in the output of operator {self.identity} ({self.log_path}):\n" + (
            "\n---\n".join(found[:3])
        )

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.output().splitlines()[-lines:])


def lease_holder(cluster: KubeCluster) -> str:
    """The holderIdentity of the operator's leader-election Lease ("" when there is none or nobody holds it)."""
    result = cluster.kubectl(
        "get", "lease", LEASE_NAME, "-n", OPERATOR_NAMESPACE, "-o", "jsonpath={.spec.holderIdentity}", check=False
    )
    return result.stdout.strip() if result.returncode == 0 else ""


def set_backend(cluster: KubeCluster, backend: str) -> None:
    """Choose the operator configuration's backend (PyTorchJob or TrainJob) in the cluster's ConfigMap."""
    edit_operator_config(cluster, backend=backend)


def edit_operator_config(cluster: KubeCluster, **entries: Any) -> None:
    """Set ENTRIES (top-level keys: backend, registries...) in the operator configuration of the cluster's
    ConfigMap, keeping the rest; the running operator reads it again."""
    found = cluster.get("configmap", CONFIG_MAP_NAME, OPERATOR_NAMESPACE)
    assert found is not None, "up.sh installs the operator's ConfigMap"
    config = yaml.safe_load(found["data"][CONFIG_MAP_KEY]) or {}
    config.update(entries)
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": CONFIG_MAP_NAME, "namespace": OPERATOR_NAMESPACE},
            "data": {CONFIG_MAP_KEY: yaml.safe_dump(config)},
        }
    )


@contextmanager
def operator_on_backend(cluster: KubeCluster, backend: str, log_path: Path) -> Iterator[OperatorProcess]:
    """The operator (all namespaces) started once the configuration chose ``backend``; the PyTorchJob
    default is back afterwards. Its output is checked for tracebacks."""
    set_backend(cluster, backend)
    process = OperatorProcess(cluster, log_path)
    process.start()
    try:
        yield process
    finally:
        process.stop()
        set_backend(cluster, "PyTorchJob")
        process.assert_no_traceback()


def lease_renewal(cluster: KubeCluster) -> str:
    """The renewTime of the operator's leader-election Lease ("" when there is none)."""
    result = cluster.kubectl(
        "get", "lease", LEASE_NAME, "-n", OPERATOR_NAMESPACE, "-o", "jsonpath={.spec.renewTime}", check=False
    )
    return result.stdout.strip() if result.returncode == 0 else ""


def training_run(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"image": TRAINER_IMAGE, "distribution": {"workers": 1}, "hyperparameters": {"epochs": 1}}
    body.update(spec)
    return {"apiVersion": "trainrun.dev/v1alpha1", "kind": "TrainingRun", "metadata": {"name": name, "namespace": namespace}, "spec": body}


def training_sweep(name: str, namespace: str, template: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """A TrainingSweep of TEMPLATE over a learning rate and a batch size, minimising val_loss; SPEC's fields
    (algorithm, parallelism, maxTrials, ...) added, or replacing those."""
    body: dict[str, Any] = {
        "template": template,
        "parameters": {
            "learningRate": {"type": "logUniform", "low": 0.0001, "high": 0.1},
            "batchSize": {"type": "categorical", "values": [32, 64, 128]},
        },
        "objective": {"metric": "val_loss", "goal": "minimize"},
        **spec,
    }
    return {"apiVersion": "trainrun.dev/v1alpha1", "kind": "TrainingSweep", "metadata": {"name": name, "namespace": namespace}, "spec": body}


def kubectl_apply(cluster: KubeCluster, document: dict[str, Any], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(document), check=check)


def get_run(cluster: KubeCluster, name: str, namespace: str) -> dict[str, Any]:
    found = cluster.get("trainingrun", name, namespace)
    assert found is not None
    return found


def wait_for_phase(
    cluster: KubeCluster, operator: OperatorProcess, name: str, namespace: str, phase: str, *, timeout: float = 90, seen: list[str] | None = None
) -> dict[str, Any]:
    """Waits until the run (made by the test, or yet to be made by a sweep) reports PHASE; returns it."""

    def reached() -> dict[str, Any] | None:
        run = cluster.get("trainingrun", name, namespace)
        current = run.get("status", {}).get("phase") if run is not None else None
        if seen is not None and current and (not seen or seen[-1] != current):
            seen.append(current)
        return run if current == phase else None

    try:
        return wait_until(reached, timeout=timeout, what=f"TrainingRun {name} phase {phase}", interval=0.3)
    except ClusterError as error:
        run = cluster.get("trainingrun", name, namespace)
        status = json.dumps(run.get("status"), indent=1) if run is not None else "(the run does not exist)"
        raise AssertionError(f"{error}\nstatus: {status}\noperator log:\n{operator.log_tail()}") from None


def events_of(cluster: KubeCluster, name: str, namespace: str) -> list[dict[str, Any]]:
    listing = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name},involvedObject.kind=TrainingRun", "-o", "json"
    )
    return sorted(json.loads(listing.stdout)["items"], key=lambda event: event.get("lastTimestamp") or "")


def condition(run: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(item for item in run["status"]["conditions"] if item["type"] == kind)


def service_account_kubeconfig(cluster: KubeCluster, folder: Path) -> KubeCluster:
    """The cluster as the operator's ServiceAccount sees it: its token instead of the admin's credentials."""
    token = cluster.kubectl("create", "token", "trainrun-operator", "-n", "trainrun-system", "--duration", "2h")
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": token.stdout.strip()}
    kubeconfig = folder / "kubeconfig-trainrun-operator"
    kubeconfig.write_text(yaml.safe_dump(config))
    return KubeCluster(name=cluster.name, kubeconfig=kubeconfig)


def service_account_cluster(cluster: KubeCluster, folder: Path) -> KubeCluster:
    """The cluster as the operator's ServiceAccount sees it, with only the RBAC of ``manifests/`` (installed
    here as the README says; the Deployment is removed, the operator runs as a local process instead)."""
    cluster.kubectl("apply", "--server-side", "-k", str(REPO / "manifests"))
    cluster.kubectl("delete", "deployment", "trainrun-operator", "-n", "trainrun-system", "--ignore-not-found")
    return service_account_kubeconfig(cluster, folder)


def reconciled_after_now(cluster: KubeCluster, name: str, namespace: str, *, timeout: float = 60) -> dict[str, Any]:
    """A known later event, to assert that something did not happen: the run's spec changes (a marker in
    ``hyperparameters.extra``) and this waits until its status describes that generation. A run is never
    reconciled by two workers at once, so every reconcile before this one has ended: what it would have
    created, deleted or posted is there. The run as it is then."""
    generation = int(get_run(cluster, name, namespace)["metadata"]["generation"]) + 1
    mark = {"spec": {"hyperparameters": {"extra": {"trainrun-test-mark": str(generation)}}}}
    cluster.kubectl("patch", "trainingrun", name, "-n", namespace, "--type", "merge", "-p", json.dumps(mark))

    def described() -> dict[str, Any] | None:
        run = get_run(cluster, name, namespace)
        return run if (run.get("status") or {}).get("observedGeneration") == generation else None

    return wait_until(described, timeout=timeout, what=f"TrainingRun {name} reconciled at generation {generation}")


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
        process.assert_no_traceback()
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
        process.assert_no_traceback()


BUCKET_SECRET = "s3-creds"


def bucket_secret(cluster: KubeCluster, namespace: str, endpoint: str) -> dict[str, str]:
    """The Secret ``s3-creds`` in NAMESPACE with the test S3 server's credentials and ENDPOINT, as a run's
    ``output.secretName`` names it; the environment it holds (for the CLI and boto3 on this side)."""
    from seaweedfs import ACCESS_KEY, SECRET_KEY

    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_ENDPOINT_URL": endpoint}
    cluster.kubectl(
        "create", "secret", "generic", BUCKET_SECRET, "-n", namespace, *[f"--from-literal={key}={value}" for key, value in env.items()]
    )
    return env


def volume_for_claim(cluster: KubeCluster, namespace: str, claim: str, host_path: Path, *, create_claim: bool) -> None:
    """A PersistentVolume reserved for a claim (the test cluster has no provisioner), and the claim itself
    when the run brings its own; otherwise the operator's per-run claim binds to it (ReadWriteOnce, or
    ReadWriteMany: the TrainJob backend's claim of a run with workers, which every node mounts)."""
    storage_class = "manual" if create_claim else ""
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"{namespace}-{claim}"},
            "spec": {
                "capacity": {"storage": "20Gi"},
                "accessModes": ["ReadWriteOnce", "ReadWriteMany"],
                "storageClassName": storage_class,
                "hostPath": {"path": str(host_path)},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        }
    ]
    if create_claim:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": namespace},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": storage_class,
                    "volumeName": f"{namespace}-{claim}",
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
        )
    cluster.apply(*objects)
