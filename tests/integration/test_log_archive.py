"""Replica logs that are never lost: the operator ships them to object storage as the run trains.

Real parts: the kwok control plane and training-operator, the operator as processes (killed with SIGKILL,
as a node failure or OOM kill would), SeaweedFS. kwok serves a pod's log from a file the test appends to,
like a kubelet follows a container's log file; the test writes a Master log numbered 1..N over a minute.

(a) the operator is SIGKILLed twice while the lines are written (and the lines written meanwhile are read by
    the next one); at the end it is stopped, the run finishes and its pods are deleted (by someone else)
    while no operator runs: started again, it finds the run done, and the archive
    (``<output>/logs/master-0.log``, in the manifest) holds exactly 1..N, once each, in order, as ``trainrun
    logs`` prints it, then a marker line: what the container wrote after line N cannot be known, and the
    status, a condition and a Warning Event say so (never ``complete: true`` for an archive with a hole);
(b) the same with a leader and a standby, the leader killed: the standby resumes where the archive says;
(c) the operator owns the end of a run's pods: with ``cleanPodPolicy: All`` and the operator down while the
    Master writes the second half of its log and the job succeeds, the pods are still there when it comes
    back (the training-operator never deletes them), so the archive is complete; the operator deletes them
    itself once the archive is sealed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster.harness import KubeCluster, Outcome, pod_behaviour, wait_until, write_cri_log
from runs import (
    OperatorProcess,
    bucket_secret,
    condition,
    events_of,
    get_run,
    kubectl_apply,
    training_run,
    volume_for_claim,
    wait_for_phase,
)
from seaweedfs import BUCKET, SeaweedFS, boto3_client_for

pytestmark = pytest.mark.cluster

TRAINRUN = str(Path(sys.executable).parent / "trainrun")
LINES = 300
WRITE_SECONDS = 60.0


class NumberedLog:
    """Appends ``line 0001`` .. ``line N`` to a CRI log file at a steady pace, in a thread."""

    def __init__(self, path: Path, count: int, seconds: float) -> None:
        self.path = write_cri_log(path, [])
        self.count = count
        self.interval = seconds / count
        self.written = 0
        self.thread = threading.Thread(target=self._write, daemon=True)

    def _write(self) -> None:
        for number in range(1, self.count + 1):
            write_cri_log(self.path, [f"line {number:04d}"], append=True)
            self.written = number
            time.sleep(self.interval)

    @staticmethod
    def expected(count: int) -> list[str]:
        return [f"line {number:04d}" for number in range(1, count + 1)]


@pytest.fixture
def storage(kube_cluster: KubeCluster, kube_namespace: str, s3_server: SeaweedFS) -> Iterator[dict[str, str]]:
    """The namespace's Secret for the bucket; yields the environment that reads it."""
    yield bucket_secret(kube_cluster, kube_namespace, s3_server.endpoint)


@pytest.fixture
def own_operator(kube_cluster: KubeCluster, kube_namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The operator as a process watching only the test's namespace (the test may kill and start it again);
    stopped at the end, its output checked for tracebacks."""
    process = OperatorProcess(kube_cluster, tmp_path / "operator.log", args=["--namespace", kube_namespace])
    process.start()
    yield process
    process.stop()
    process.assert_no_traceback()


def start_run(
    cluster: KubeCluster, namespace: str, name: str, tmp_path: Path, log: NumberedLog, finish_after: str, **run_policy: Any
) -> str:
    uri = f"s3://{BUCKET}/runs/{uuid.uuid4().hex[:8]}/{name}"
    volume_for_claim(cluster, namespace, f"{name}-outputs", tmp_path / "volume", create_claim=False)
    cluster.serve_pod_log(namespace, f"{name}-master-0", log.path)
    document = training_run(
        name,
        namespace,
        distribution={"workers": 0},
        output={"uri": uri, "secretName": "s3-creds", "volume": {"size": "1Gi"}},
        podMetadata={"annotations": pod_behaviour(Outcome.SUCCEED, after=finish_after)},
        runPolicy=run_policy,
    )
    kubectl_apply(cluster, document)
    return uri


def shipped_lines(uri: str, env: dict[str, str]) -> list[str]:
    """The Master's lines in the archive as it is now (segments, or the composed log)."""
    code = (
        "import json, sys\n"
        "from trainrun.storage import StorageOptions\n"
        "from trainrun.storage.logstore import read_archived_logs\n"
        "import os\n"
        "print(json.dumps(read_archived_logs(sys.argv[1], StorageOptions.from_env(os.environ)).get('master-0', [])))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, f"{uri}/logs"], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def sealed_run(cluster: KubeCluster, name: str, namespace: str, *, timeout: float, by: str) -> dict[str, Any]:
    """The run once its status says its log archive is sealed (``status.logs.sealed``)."""

    def sealed() -> dict[str, Any] | None:
        run = get_run(cluster, name, namespace)
        return run if run.get("status", {}).get("logs", {}).get("sealed") else None

    return dict(wait_until(sealed, timeout=timeout, what=f"the log archive of {name} sealed by {by}"))


def copy_outputs_until_completed(
    cluster: KubeCluster, operator: OperatorProcess, name: str, namespace: str, uri: str, env: dict[str, str], tmp_path: Path
) -> dict[str, Any]:
    """The uploader's copy of a model file (what its pod runs, for real: kwok's uploader pod only pretends),
    then the run once Completed."""
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    (outputs / "model.pt").write_bytes(b"weights")
    upload = subprocess.run(
        [TRAINRUN, "upload", str(outputs), uri], env={**cluster.env(), **env}, capture_output=True, text=True, timeout=120
    )
    assert upload.returncode == 0, upload.stderr
    return wait_for_phase(cluster, operator, name, namespace, "Completed", timeout=120)


def object_text(uri: str, key: str, endpoint: str) -> str:
    prefix = uri.removeprefix(f"s3://{BUCKET}/")
    return str(boto3_client_for(endpoint).get_object(Bucket=BUCKET, Key=f"{prefix}/{key}")["Body"].read().decode())


def test_two_crashes_and_pods_deleted_while_down_lose_no_line_and_repeat_none(
    kube_cluster: KubeCluster, kube_namespace: str, storage: dict[str, str], s3_server: SeaweedFS, tmp_path: Path,
    own_operator: OperatorProcess,
) -> None:
    namespace = kube_namespace
    operator = own_operator
    log = NumberedLog(tmp_path / "master.log", LINES, WRITE_SECONDS)
    uri = start_run(kube_cluster, namespace, "arch", tmp_path, log, finish_after=f"{WRITE_SECONDS + 25:.0f}s")
    wait_for_phase(kube_cluster, operator, "arch", namespace, "Running", timeout=120)
    log.thread.start()
    for kill_at in (LINES // 4, LINES // 2):  # SIGKILL twice while the lines are written; down for 5 s each
        wait_until(lambda at=kill_at: log.written >= at, timeout=WRITE_SECONDS, what=f"line {kill_at} written")
        operator.kill()
        time.sleep(5)
        operator.start()
    log.thread.join(timeout=WRITE_SECONDS * 2)
    assert log.written == LINES
    # Everything reaches the archive while the run still trains.
    wait_until(lambda: len(shipped_lines(uri, storage)) == LINES, timeout=60, what=f"{LINES} lines in the archive")
    assert shipped_lines(uri, storage) == NumberedLog.expected(LINES)
    # The operator stops; the run finishes and its pods are deleted while none runs.
    operator.kill()
    wait_until(
        lambda: _condition(kube_cluster.get("pytorchjob", "arch", namespace), "Succeeded"),
        timeout=120,
        what="the PyTorchJob to succeed while no operator runs",
    )
    kube_cluster.kubectl("delete", "pods", "--all", "-n", namespace, "--force", "--grace-period=0")
    operator.start()
    run = sealed_run(kube_cluster, "arch", namespace, timeout=120, by="the restarted operator")
    logs = run["status"]["logs"]
    assert logs["uri"] == f"{uri}/logs"
    archived = object_text(uri, "logs/master-0.log", s3_server.endpoint).splitlines()
    assert archived[:-1] == NumberedLog.expected(LINES)
    # The container ran on after the last line read and its pod went while no operator ran: said, not hidden.
    assert archived[-1].startswith("[trainrun] master-0: the lines after ") and "could not be read" in archived[-1]
    assert (logs["complete"], [gap["replica"] for gap in logs["gaps"]]) == (False, ["master-0"])
    assert "master-0 after" in logs["message"]
    assert condition(run, "LogsComplete")["status"] == "False"
    assert any(event["reason"] == "LogsIncomplete" and event["type"] == "Warning" for event in events_of(kube_cluster, "arch", namespace))
    # The uploader's copy (what its pod runs, for real) and the composed log in one manifest.
    run = copy_outputs_until_completed(kube_cluster, operator, "arch", namespace, uri, storage, tmp_path)
    manifest = json.loads(object_text(uri, "manifest.json", s3_server.endpoint))
    assert [entry["path"] for entry in manifest["files"]] == ["logs/master-0.log", "model.pt"]
    assert run["status"]["artifacts"]["fileCount"] == 2
    # With the pods gone, `trainrun logs` prints the archive.
    printed = subprocess.run(
        [TRAINRUN, "-n", namespace, "logs", "arch"], env={**kube_cluster.env(), **storage}, capture_output=True, text=True, timeout=60
    )
    assert printed.returncode == 0, printed.stderr
    assert [line.split(" ", 1)[-1] for line in printed.stdout.splitlines() if "] line " in line] == NumberedLog.expected(LINES)
    assert operator.starts == 4


def test_a_standby_resumes_the_archive_where_the_killed_leader_left_it(
    kube_cluster: KubeCluster, kube_namespace: str, storage: dict[str, str], s3_server: SeaweedFS, tmp_path: Path
) -> None:
    namespace = kube_namespace
    replicas = [
        OperatorProcess(kube_cluster, tmp_path / f"operator-{name}.log", args=["--namespace", namespace], identity=f"{name}-{namespace}")
        for name in ("a", "b")
    ]
    for process in replicas:
        process.start()
    try:
        wait_until(lambda: any(process.is_leader() for process in replicas), timeout=60, what="a leader")
        leader = next(process for process in replicas if process.is_leader())
        count, seconds = LINES // 2, WRITE_SECONDS / 2
        log = NumberedLog(tmp_path / "master.log", count, seconds)
        uri = start_run(kube_cluster, namespace, "ha", tmp_path, log, finish_after=f"{seconds + 30:.0f}s")
        wait_for_phase(kube_cluster, leader, "ha", namespace, "Running", timeout=120)
        log.thread.start()
        wait_until(lambda: log.written >= count // 3, timeout=seconds, what="a third of the lines written")
        leader.kill()
        standby = next(process for process in replicas if process is not leader)
        standby.wait_until_leader(timeout=60)
        log.thread.join(timeout=seconds * 3)
        run = sealed_run(kube_cluster, "ha", namespace, timeout=180, by="the new leader")
        assert object_text(uri, "logs/master-0.log", s3_server.endpoint).splitlines() == NumberedLog.expected(count)
        assert run["status"]["phase"] == "Uploading"  # the outputs' copy is the uploader's; the logs are done
    finally:
        for process in replicas:
            process.stop()
    for process in replicas:
        process.assert_no_traceback()


def _condition(obj: dict[str, Any] | None, kind: str) -> bool:
    return any(item.get("type") == kind for item in (obj or {}).get("status", {}).get("conditions", []))


def test_logs_follow_shows_new_lines_at_once_and_the_archive_once_the_pods_are_gone(
    kube_cluster: KubeCluster,
    kube_namespace: str,
    storage: dict[str, str],
    s3_server: SeaweedFS,
    tmp_path: Path,
    own_operator: OperatorProcess,
) -> None:
    namespace, operator = kube_namespace, own_operator
    env = {**kube_cluster.env(), **storage}
    master = write_cri_log(tmp_path / "master.log", ["master up"])
    worker = write_cri_log(tmp_path / "worker.log", ["worker up"])
    kube_cluster.serve_pod_log(namespace, "tail-master-0", master)
    kube_cluster.serve_pod_log(namespace, "tail-worker-0", worker)
    uri = f"s3://{BUCKET}/runs/{uuid.uuid4().hex[:8]}/tail"
    volume_for_claim(kube_cluster, namespace, "tail-outputs", tmp_path / "volume", create_claim=False)
    kubectl_apply(
        kube_cluster,
        training_run(
            "tail",
            namespace,
            output={"uri": uri, "secretName": "s3-creds", "volume": {"size": "1Gi"}},
            podMetadata={"annotations": pod_behaviour(Outcome.SUCCEED, after="40s")},
        ),
    )
    wait_for_phase(kube_cluster, operator, "tail", namespace, "Running", timeout=120)
    follower = subprocess.Popen(
        [TRAINRUN, "-n", namespace, "logs", "-f", "tail"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen: list[tuple[float, str]] = []
    reader = threading.Thread(
        target=lambda: [seen.append((time.monotonic(), line.rstrip("\n"))) for line in follower.stdout or []], daemon=True
    )
    reader.start()
    try:
        wait_until(lambda: {"[master-0] master up", "[worker-0] worker up"} <= {text for _, text in seen}, timeout=60, what="the first lines")
        delays = []
        for number in range(1, 4):
            written = time.monotonic()
            write_cri_log(master, [f"master line {number}"], append=True)
            write_cri_log(worker, [f"worker line {number}"], append=True)
            expected = {f"[master-0] master line {number}", f"[worker-0] worker line {number}"}
            wait_until(lambda e=expected: e <= {text for _, text in seen}, timeout=30, what=f"line {number} of both replicas")
            delays.append(max(at for at, text in seen if text in expected) - written)
            time.sleep(1)
        print(f"trainrun logs -f: a new line of each replica shown {', '.join(f'{d:.2f}' for d in delays)} s after it was written")
        assert max(delays) < 3.0, delays  # "within about a second"; the bound leaves room for a loaded CI machine
    finally:
        follower.terminate()
        follower.wait(timeout=30)
    live = subprocess.run([TRAINRUN, "-n", namespace, "logs", "tail"], env=env, capture_output=True, text=True, timeout=60)
    assert live.returncode == 0, live.stderr
    sealed_run(kube_cluster, "tail", namespace, timeout=120, by="the operator")
    kube_cluster.kubectl("delete", "pods", "--all", "-n", namespace, "--force", "--grace-period=0")
    wait_until(lambda: not kube_cluster.list_objects("pods", namespace), timeout=60, what="the pods to be gone")
    for extra in ([], ["-f"]):
        archived = subprocess.run([TRAINRUN, "-n", namespace, "logs", *extra, "tail"], env=env, capture_output=True, text=True, timeout=60)
        assert archived.returncode == 0, archived.stderr
        assert archived.stdout == live.stdout, (extra, archived.stdout, live.stdout)
    assert "[worker-0] worker line 3" in live.stdout


def test_the_pods_wait_for_their_logs_whatever_the_clean_pod_policy(
    kube_cluster: KubeCluster, kube_namespace: str, storage: dict[str, str], s3_server: SeaweedFS, tmp_path: Path,
    own_operator: OperatorProcess,
) -> None:
    namespace = kube_namespace
    operator = own_operator
    log = NumberedLog(tmp_path / "master.log", LINES, WRITE_SECONDS)
    uri = start_run(kube_cluster, namespace, "own", tmp_path, log, f"{WRITE_SECONDS + 10:.0f}s", cleanPodPolicy="All")
    wait_for_phase(kube_cluster, operator, "own", namespace, "Running", timeout=120)
    job = kube_cluster.get("pytorchjob", "own", namespace)
    assert job is not None and job["spec"]["runPolicy"]["cleanPodPolicy"] == "None"  # the job keeps its pods
    log.thread.start()
    wait_until(lambda: log.written >= 140, timeout=WRITE_SECONDS, what="line 140 written")
    operator.kill()  # down while lines 141..300 are written and the job succeeds
    wait_until(
        lambda: _condition(kube_cluster.get("pytorchjob", "own", namespace), "Succeeded"),
        timeout=120,
        what="the PyTorchJob to succeed while no operator runs",
    )
    assert kube_cluster.get("pod", "own-master-0", namespace) is not None  # still there: its log too
    operator.start()
    run = sealed_run(kube_cluster, "own", namespace, timeout=120, by="the restarted operator")
    assert object_text(uri, "logs/master-0.log", s3_server.endpoint).splitlines() == NumberedLog.expected(LINES)
    assert (run["status"]["logs"]["complete"], run["status"]["logs"]["gaps"]) == (True, [])
    run = copy_outputs_until_completed(kube_cluster, operator, "own", namespace, uri, storage, tmp_path)
    assert condition(run, "LogsComplete")["status"] == "True"
    # Now the operator applies spec.runPolicy.cleanPodPolicy: All itself.
    wait_until(lambda: kube_cluster.get("pod", "own-master-0", namespace) is None, timeout=60, what="the operator to delete the pod")
    assert kube_cluster.get("pytorchjob", "own", namespace) is not None  # no TTL: the job stays
