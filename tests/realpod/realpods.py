"""Helpers of the real-pod tests (tests/realpod): S3 as pods reach it, output volumes, the node's address,
the ``trainrun`` CLI and its log follower, and the runs both backends must train alike in real pods: the
quick start sample, and a submitted script that reads a staged input.

Imported by tests/realpod/conftest.py and its test modules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster.harness import REAL_NODE, KubeCluster
from runs import REPO, TRAINER_IMAGE, OperatorProcess, get_run, volume_for_claim
from seaweedfs import BUCKET, SeaweedFS
from trainrun.status.observe import replica_name

# A real-pod test's limit, its share of the session's setup included: a cold start imports 6 GB of
# images (2-3 minutes on a busy 2-core machine) and builds them when missing (5-10 minutes).
REALPOD_TIMEOUT = 1800


def require_real_node() -> None:
    """Skips the test where a real node cannot run: clusters disabled, or not root."""
    if os.environ.get("TRAINRUN_SKIP_CLUSTER") == "1":
        pytest.skip("TRAINRUN_SKIP_CLUSTER=1: the local Kubernetes cluster is disabled")
    if os.geteuid() != 0:
        pytest.skip("a real node needs root (tests/cluster/node.sh)")


def node_ip(cluster: KubeCluster) -> str:
    """The real node's InternalIP: its bridge, where pods reach the host."""
    return cluster.kubectl("get", "node", REAL_NODE, "-o", "jsonpath={.status.addresses[?(@.type=='InternalIP')].address}").stdout.strip()


@dataclass
class PodReachableS3:
    """SeaweedFS, and the endpoint pods use for it (the node's IP, forwarded to 127.0.0.1)."""

    server: SeaweedFS
    pod_endpoint: str

    def secret_env(self) -> dict[str, str]:
        """What a run's Secret holds: the keys, and the endpoint as pods (and the operator) reach it."""
        return {**self.server.env, "AWS_ENDPOINT_URL": self.pod_endpoint}

    def create_secret(self, cluster: KubeCluster, namespace: str, name: str = "s3") -> str:
        literals = [f"--from-literal={key}={value}" for key, value in self.secret_env().items()]
        cluster.kubectl("create", "secret", "generic", name, "-n", namespace, *literals)
        return name

    def uri(self, path: str) -> str:
        return f"s3://{BUCKET}/{path}/{uuid.uuid4().hex[:8]}"


def output_volume(cluster: KubeCluster, namespace: str, claim: str, folder: Path) -> None:
    """A hostPath PersistentVolume reserved for a run's output claim; the replicas and the uploader run
    as user 10001, so the folder is open to them."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o777)
    volume_for_claim(cluster, namespace, claim, folder, create_claim=False)


def s3_client_env(s3: PodReachableS3) -> dict[str, str]:
    """This process's environment for the CLI's own storage calls (the test reaches S3 on 127.0.0.1)."""
    return {**os.environ, **s3.server.env}


TRAINRUN = Path(sys.executable).parent / "trainrun"
QUICKSTART = REPO / "manifests" / "samples" / "quickstart.yaml"
FINISHED = {"Completed", "Failed", "Cancelled"}
METRIC_LINE = "trainrun:metric "


def trainrun(cluster: KubeCluster, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(TRAINRUN), *args], env={**cluster.env(), **(env or {})}, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"trainrun {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


class LogFollower:
    """``trainrun logs NAME -f`` in the background: every line with the moment it arrived."""

    def __init__(self, cluster: KubeCluster, name: str, namespace: str) -> None:
        self.lines: list[tuple[float, str]] = []
        self.process = subprocess.Popen(
            [str(TRAINRUN), "logs", name, "-n", namespace, "-f"], env=cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def first(self, prefix: str) -> float | None:
        return next((moment for moment, line in self.lines if line.startswith(prefix)), None)

    def finish(self, timeout: float = 60) -> int:
        """Waits for the follow to end by itself (it returns once the run has finished)."""
        code = self.process.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return code


def phases_until(cluster: KubeCluster, operator: OperatorProcess, name: str, namespace: str, timeout: float) -> tuple[dict[str, Any], dict[str, float]]:
    """Polls the run until it finishes: its last state, and the moment each phase was first seen."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = get_run(cluster, name, namespace)
        phase = run.get("status", {}).get("phase")
        if phase:
            seen.setdefault(phase, time.monotonic())
        if phase in FINISHED:
            return run, seen
        time.sleep(0.5)
    pods = cluster.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
    raise AssertionError(f"{name} did not finish in {timeout:.0f}s: {json.dumps(run.get('status'), indent=1)}\n{pods}\n{operator.log_tail()}")


def pods_on_real_node(cluster: KubeCluster, namespace: str) -> dict[str, dict[str, Any]]:
    """The namespace's pods, all of which ran on the real node, by the replica each plays (``master-0``,
    ``worker-0``: either backend's pods, as the operator names them; other pods by their name)."""
    pods = {replica_name(pod): pod for pod in cluster.list_objects("pods", namespace)}
    assert pods, f"no pods in {namespace}"
    for name, pod in pods.items():
        assert pod["spec"].get("nodeName") == REAL_NODE, f"{name} ran on {pod['spec'].get('nodeName')}"
    return pods


def first_metric_at(cluster: KubeCluster, namespace: str, pod: str) -> float:
    """When a pod's container printed its first metric line (its first training steps done), by the
    container runtime's timestamp of the line (the Unix time, as time.time() gives it)."""
    logs = cluster.kubectl("logs", pod, "-n", namespace, "--timestamps").stdout
    stamp = next((line.split(" ", 1)[0] for line in logs.splitlines() if METRIC_LINE in line), None)
    assert stamp is not None, f"no metric line in the log of {pod}:\n{logs[-3000:]}"
    return datetime.fromisoformat(stamp).timestamp()


@dataclass
class Quickstart:
    """The quick start sample trained in real pods: the run when it ended, its pods by replica, and the
    seconds from `trainrun submit` to the Master's first training steps (its first metric line: step 8, as
    the sample prints every 8 steps) and to the run's Completed."""

    run: dict[str, Any]
    pods: dict[str, dict[str, Any]]
    first_step_seconds: float
    completed_seconds: float


def train_quickstart(
    cluster: KubeCluster, operator: OperatorProcess, namespace: str, s3: PodReachableS3, tmp_path: Path, *, register: str | None = None
) -> Quickstart:
    """Submits the quick start sample as shipped (only where its outputs go is added) to the operator's
    backend, and checks what either backend must give: Completed, both replicas' lines in `trainrun logs
    -f` while they trained, the images of the node, the artifacts, and a model that loads and learned.
    With REGISTER, the run registers its outputs as that model in the operator's default registry, and
    version 1 downloaded with `trainrun models download` matches its manifest and loads."""
    secret = s3.create_secret(cluster, namespace)
    uri = s3.uri("quickstart")
    output_volume(cluster, namespace, "quickstart-outputs", tmp_path / "volume")
    applied, applied_at = time.monotonic(), time.time()
    settings = ["--set", f"output.uri={uri}", "--set", f"output.secretName={secret}"]
    if register is not None:
        settings += ["--set", f"output.register.name={register}"]
    trainrun(cluster, "submit", str(QUICKSTART), "-n", namespace, *settings)
    follower = LogFollower(cluster, "quickstart", namespace)
    # 4-6 minutes at load 7-10 on the 2-core machine (other test sessions); 10 minutes at load 11.
    run, seen = phases_until(cluster, operator, "quickstart", namespace, timeout=1200)
    assert run["status"]["phase"] == "Completed", json.dumps(run["status"], indent=1)
    assert follower.finish() == 0

    # Both replicas' lines reached `trainrun logs -f` while they trained, not after the run ended.
    training_ended = seen.get("Uploading", seen["Completed"])
    for replica in ("master-0", "worker-0"):
        first = follower.first(f"[{replica}]")
        assert first is not None, f"no line of {replica} in trainrun logs -f:\n" + "\n".join(line for _, line in follower.lines[-30:])
        assert first < training_ended, f"{replica}'s first line came {first - training_ended:.1f}s after training ended"
    assert any("train_loss" in line for _, line in follower.lines if line.startswith("[master-0]"))

    pods = pods_on_real_node(cluster, namespace)
    images = {status["image"] for pod in pods.values() for status in pod["status"].get("containerStatuses", [])}
    assert {TRAINER_IMAGE, "ghcr.io/trainrun/operator:0.1.0"} <= {image.removeprefix("docker.io/") for image in images}, images
    first_step = first_metric_at(cluster, namespace, pods["master-0"]["metadata"]["name"]) - applied_at

    artifacts = run["status"]["artifacts"]
    assert artifacts["uri"].rstrip("/") == uri and artifacts["fileCount"] > 5 and artifacts["bytes"] > 0, artifacts
    downloaded = tmp_path / "downloaded"
    trainrun(cluster, "artifacts", "quickstart", "-n", namespace, "--download", str(downloaded), env=s3_client_env(s3), timeout=300)

    import torch

    model = torch.jit.load(str(downloaded / "model.ts"))
    with torch.no_grad():
        logits = model(torch.rand(4, 1, 28, 28))
    assert tuple(logits.shape) == (4, 10)
    # The ONNX export ran in the pod too (the trainer only warns when it cannot, so only this sees it missing).
    import numpy
    import onnxruntime

    session = onnxruntime.InferenceSession(str(downloaded / "model.onnx"), providers=["CPUExecutionProvider"])
    (scores,) = session.run(None, {"images": numpy.random.rand(3, 1, 28, 28).astype(numpy.float32)})
    assert scores.shape == (3, 10)
    if register is not None:
        assert run["status"]["model"] == {"registry": "mlflow", "name": register, "version": "1", "uri": uri}, run["status"]
        registered = tmp_path / "registered"
        fetched = trainrun(cluster, "models", "download", f"{register}:1", str(registered), env=s3_client_env(s3), timeout=300)
        assert f"verified against {uri}/manifest.json" in fetched.stdout, fetched.stdout
        assert (registered / "model.ts").read_bytes() == (downloaded / "model.ts").read_bytes()
        with torch.no_grad():
            assert torch.equal(torch.jit.load(str(registered / "model.ts"))(torch.ones(1, 1, 28, 28)), model(torch.ones(1, 1, 28, 28)))
    losses = [record["train_loss"] for record in map(json.loads, (downloaded / "metrics.jsonl").read_text().splitlines()) if "train_loss" in record]
    assert len(losses) >= 3 and losses[-1] < losses[0] / 2, losses
    return Quickstart(run=run, pods=pods, first_step_seconds=first_step, completed_seconds=seen["Completed"] - applied)


CUSTOM_SCRIPT = """\
import json
import os
from pathlib import Path

settings = json.loads(Path("settings.json").read_text())  # shipped beside this script
numbers = [int(word) for word in (Path(os.environ["INPUT_NUMBERS"]) / "numbers.txt").read_text().split()]
total = sum(numbers) * settings["scale"]
print(f"rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']}: total={total}", flush=True)
if os.environ["RANK"] == "0":
    Path(os.environ["OUTPUT_DIR"], "total.txt").write_text(str(total))
"""


def folder_with(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def custom_run(name: str, namespace: str, *, script: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "image": TRAINER_IMAGE,
        "script": script,
        "distribution": {"workers": 1},
        "resources": {"cpu": "500m", "memory": "1Gi"},
    }
    body.update(spec)
    return {"apiVersion": "trainrun.dev/v1alpha1", "kind": "TrainingRun", "metadata": {"name": name, "namespace": namespace}, "spec": body}


def run_staged_input(cluster: KubeCluster, operator: OperatorProcess, namespace: str, s3: PodReachableS3, tmp_path: Path) -> None:
    """`trainrun submit --code DIR` of a script that reads an input from S3, on the operator's backend: each
    replica's stage-in init container fetched the input and the code snapshot with the run's credentials,
    the script ran in the snapshot's folder on both replicas, and the Master's output was copied."""
    secret = s3.create_secret(cluster, namespace)
    data = folder_with(tmp_path / "data", {"numbers.txt": "1\n2\n3\n4\n"})
    input_uri = s3.uri("inputs")
    trainrun(cluster, "upload", str(data), input_uri + "/", env=s3_client_env(s3))
    code = folder_with(tmp_path / "code", {"train.py": CUSTOM_SCRIPT, "settings.json": '{"scale": 10}'})
    uri = s3.uri("custom")
    output_volume(cluster, namespace, "custom-outputs", tmp_path / "volume")
    document = custom_run(
        "custom", namespace, script="train.py", inputs=[{"name": "numbers", "uri": input_uri}], output={"uri": uri, "secretName": secret}
    )
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(document))
    trainrun(cluster, "submit", str(tmp_path / "run.yaml"), "--code", str(code), "-n", namespace, env=s3_client_env(s3))

    run, _ = phases_until(cluster, operator, "custom", namespace, timeout=300)
    assert run["status"]["phase"] == "Completed", json.dumps(run["status"], indent=1)
    assert run["spec"]["code"]["uri"].startswith(uri)
    pods = pods_on_real_node(cluster, namespace)
    for replica in ("master-0", "worker-0"):
        staged = [status for status in pods[replica]["status"]["initContainerStatuses"] if status["name"] == "stage-in"]
        assert [status["state"]["terminated"]["exitCode"] for status in staged] == [0]
    logs = trainrun(cluster, "logs", "custom", "-n", namespace).stdout
    assert "[master-0] rank 0 of 2: total=100" in logs and "[worker-0] rank 1 of 2: total=100" in logs, logs
    downloaded = tmp_path / "downloaded"
    trainrun(cluster, "artifacts", "custom", "-n", namespace, "--download", str(downloaded), env=s3_client_env(s3))
    assert (downloaded / "total.txt").read_text() == "100"
