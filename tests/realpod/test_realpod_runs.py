"""TrainingRuns in real pods: the kubelet of tests/cluster/node.sh runs every process these tests see.

The operator runs as a process (tests/integration/runs.py); the PyTorchJob's Master and Worker, the
stage-in init containers and the uploader Job run in containers of the images built from
images/trainer/Dockerfile and images/operator/Dockerfile, on the real node, with torchrun finding the
Master through cluster DNS. Nothing here is simulated: a status, a log line or an artifact can only
come from those containers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster.harness import REAL_NODE, KubeCluster
from realpods import REALPOD_TIMEOUT, PodReachableS3, output_volume, s3_client_env
from runs import REPO, TRAINER_IMAGE, OperatorProcess, get_run, wait_for_phase

pytestmark = [pytest.mark.realpod, pytest.mark.timeout(REALPOD_TIMEOUT), pytest.mark.cluster, pytest.mark.s3]

TRAINRUN = Path(sys.executable).parent / "trainrun"
QUICKSTART = REPO / "manifests" / "samples" / "quickstart.yaml"
FINISHED = {"Completed", "Failed", "Cancelled"}


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
    pods = {pod["metadata"]["name"]: pod for pod in cluster.list_objects("pods", namespace)}
    assert pods, f"no pods in {namespace}"
    for name, pod in pods.items():
        assert pod["spec"].get("nodeName") == REAL_NODE, f"{name} ran on {pod['spec'].get('nodeName')}"
    return pods


def test_quickstart_trains_in_real_pods_and_its_model_is_uploaded(
    kube_cluster: KubeCluster, operator: OperatorProcess, kube_namespace: str, s3: PodReachableS3, tmp_path: Path
) -> None:
    namespace = kube_namespace
    secret = s3.create_secret(kube_cluster, namespace)
    uri = s3.uri("quickstart")
    output_volume(kube_cluster, namespace, "quickstart-outputs", tmp_path / "volume")
    # The sample as shipped; only where its outputs go is added.
    trainrun(kube_cluster, "submit", str(QUICKSTART), "-n", namespace, "--set", f"output.uri={uri}", "--set", f"output.secretName={secret}")
    follower = LogFollower(kube_cluster, "quickstart", namespace)
    # 4-6 minutes at load 7-10 on the 2-core machine (other test sessions); 10 minutes at load 11.
    run, seen = phases_until(kube_cluster, operator, "quickstart", namespace, timeout=1200)
    assert run["status"]["phase"] == "Completed", json.dumps(run["status"], indent=1)
    assert follower.finish() == 0

    # Both replicas' lines reached `trainrun logs -f` while they trained, not after the run ended.
    training_ended = seen.get("Uploading", seen["Completed"])
    for replica in ("master-0", "worker-0"):
        first = follower.first(f"[{replica}]")
        assert first is not None, f"no line of {replica} in trainrun logs -f:\n" + "\n".join(line for _, line in follower.lines[-30:])
        assert first < training_ended, f"{replica}'s first line came {first - training_ended:.1f}s after training ended"
    assert any("train_loss" in line for _, line in follower.lines if line.startswith("[master-0]"))

    pods = pods_on_real_node(kube_cluster, namespace)
    images = {status["image"] for pod in pods.values() for status in pod["status"].get("containerStatuses", [])}
    assert {TRAINER_IMAGE, "ghcr.io/trainrun/operator:0.1.0"} <= {image.removeprefix("docker.io/") for image in images}, images
    worker = pods["quickstart-worker-0"]
    assert [status["state"]["terminated"]["exitCode"] for status in worker["status"]["initContainerStatuses"]] == [0]

    artifacts = run["status"]["artifacts"]
    assert artifacts["uri"].rstrip("/") == uri and artifacts["fileCount"] > 5 and artifacts["bytes"] > 0, artifacts
    downloaded = tmp_path / "downloaded"
    trainrun(kube_cluster, "artifacts", "quickstart", "-n", namespace, "--download", str(downloaded), env=s3_client_env(s3), timeout=300)

    import torch

    model = torch.jit.load(str(downloaded / "model.ts"))
    with torch.no_grad():
        logits = model(torch.rand(4, 1, 28, 28))
    assert tuple(logits.shape) == (4, 10)
    losses = [record["train_loss"] for record in map(json.loads, (downloaded / "metrics.jsonl").read_text().splitlines()) if "train_loss" in record]
    assert len(losses) >= 3 and losses[-1] < losses[0] / 2, losses


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

FAILING_SCRIPT = """\
import os
import time

print("reading shards", flush=True)
if os.environ["RANK"] == "1":
    raise ValueError("shard 7 is corrupt: expected 4096 records, found 12")
time.sleep(300)
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


def test_submitted_code_reads_an_input_staged_from_s3(
    kube_cluster: KubeCluster, operator: OperatorProcess, kube_namespace: str, s3: PodReachableS3, tmp_path: Path
) -> None:
    namespace = kube_namespace
    secret = s3.create_secret(kube_cluster, namespace)
    data = folder_with(tmp_path / "data", {"numbers.txt": "1\n2\n3\n4\n"})
    input_uri = s3.uri("inputs")
    trainrun(kube_cluster, "upload", str(data), input_uri + "/", env=s3_client_env(s3))
    code = folder_with(tmp_path / "code", {"train.py": CUSTOM_SCRIPT, "settings.json": '{"scale": 10}'})
    uri = s3.uri("custom")
    output_volume(kube_cluster, namespace, "custom-outputs", tmp_path / "volume")
    document = custom_run(
        "custom", namespace, script="train.py", inputs=[{"name": "numbers", "uri": input_uri}], output={"uri": uri, "secretName": secret}
    )
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(document))
    trainrun(kube_cluster, "submit", str(tmp_path / "run.yaml"), "--code", str(code), "-n", namespace, env=s3_client_env(s3))

    run, _ = phases_until(kube_cluster, operator, "custom", namespace, timeout=300)
    assert run["status"]["phase"] == "Completed", json.dumps(run["status"], indent=1)
    assert run["spec"]["code"]["uri"].startswith(uri)
    pods = pods_on_real_node(kube_cluster, namespace)
    for replica in ("custom-master-0", "custom-worker-0"):
        staged = [status for status in pods[replica]["status"]["initContainerStatuses"] if status["name"] == "stage-in"]
        assert [status["state"]["terminated"]["exitCode"] for status in staged] == [0]
    logs = trainrun(kube_cluster, "logs", "custom", "-n", namespace).stdout
    assert "[master-0] rank 0 of 2: total=100" in logs and "[worker-0] rank 1 of 2: total=100" in logs, logs
    downloaded = tmp_path / "downloaded"
    trainrun(kube_cluster, "artifacts", "custom", "-n", namespace, "--download", str(downloaded), env=s3_client_env(s3))
    assert (downloaded / "total.txt").read_text() == "100"


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
    worker = pods_on_real_node(kube_cluster, namespace)["crash-worker-0"]
    terminated = worker["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 1 and "ChildFailedError" in terminated["message"], terminated
