"""A chaos soak: 50 runs of mixed outcomes while the cluster and the operator fail at random.

Real parts: the kwok control plane and training-operator, SeaweedFS, the operator as two processes (a leader
and a standby, each SIGKILLed and started again). While the runs go (30 succeed, some of them with
``cleanPodPolicy: All`` and a TTL the operator applies itself; 10 fail; 10 run until they are cancelled), at
random moments (``TRAINRUN_CHAOS_SEED`` repeats a schedule):

- the leader is SIGKILLed 4 times (started again a few seconds later; the standby takes over meanwhile);
- kube-apiserver is SIGKILLed and started again 20 s later (the cluster's supervisor restarts the
  controllers that exit meanwhile);
- the object store is stopped (SIGKILL) for 30 s;
- a node of the runs' pool is deleted and comes back 90 s later (PodGC deletes its pods meanwhile: a
  whole-run restart of cause NodeLost, as ``restartOn`` says by default).

Then every run must be terminal with the phase its pods' outcome gives, with exactly one PyTorchJob per
attempt (uids seen by a watch, against ``status.restarts``), its log archive sealed, and in it each
container start's lines exactly once and in order (every replica serves the same 200 numbered lines), or
the gap declared (a marker line in the archive, ``status.logs.complete: false`` naming the replica); every
Completed run's manifest verifies (``trainrun download``). The figures are printed for tests/bench/README.md.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster.harness import ClusterError, KubeCluster, Outcome, pod_behaviour, wait_until, write_cri_log
from faults import ApiServerOutage, ObjectWatch, control_plane_running, supervisor_restarts
from runs import REPO, OperatorProcess, bucket_secret, kubectl_apply, training_run, volume_for_claim
from seaweedfs import BUCKET, SeaweedFS

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

TRAINRUN = str(Path(sys.executable).parent / "trainrun")
RUNS = 50
LINES = 200
SMALL = {"pool": "cpu", "cpu": "100m", "memory": "64Mi"}
NODE = "cpu-1"
GAP_MARKER = "[trainrun]"
TERMINAL = ("Completed", "Failed", "Cancelled")


@dataclass
class Planned:
    """One run of the soak: its document, the phase its pods' outcome gives, when it is applied and cancelled."""

    name: str
    document: dict[str, Any]
    expected: str
    uri: str
    apply_at: float
    cancel_at: float | None = None


@dataclass
class Fault:
    at: float
    what: str
    action: Callable[[], None]


@dataclass
class Tally:
    """What the soak injected and found, for the figures."""

    faults: list[str] = field(default_factory=list)
    lines_written: int = 0
    lines_archived: int = 0
    lines_declared_lost: int = 0
    duplicates: int = 0
    gaps: int = 0
    starts_lost: list[str] = field(default_factory=list)  # run/replica (its expected phase): why, by its markers


def plan_runs(namespace: str, chance: random.Random) -> list[Planned]:
    planned = []
    for index in range(RUNS):
        name = f"soak-{index:02d}"
        uri = f"s3://{BUCKET}/soak/{uuid.uuid4().hex[:8]}/{name}"
        output = {"uri": uri, "secretName": "s3-creds", "volume": {"size": "1Gi"}}
        kind = index % 10
        spec: dict[str, Any] = {"resources": SMALL, "output": output, "distribution": {"workers": index % 2}}
        cancel_at = None
        if kind <= 5:  # succeeds, default policy (whole-run restarts on NodeLost)
            outcome, after, expected = Outcome.SUCCEED, f"{chance.randint(20, 70)}s", "Completed"
        elif kind == 6:  # succeeds; the operator deletes its pods and its job once the logs are sealed
            outcome, after, expected = Outcome.SUCCEED, f"{chance.randint(20, 50)}s", "Completed"
            spec["runPolicy"] = {"cleanPodPolicy": "All", "ttlSecondsAfterFinished": 20}
        elif kind in (7, 8):
            outcome, after, expected = Outcome.FAIL, f"{chance.randint(5, 40)}s", "Failed"
            spec["runPolicy"] = {"restartPolicy": "Never", "backoffLimit": 0}
        else:
            outcome, after, expected = Outcome.RUN, None, "Cancelled"
        apply_at = 0.0 if index < RUNS // 2 else 60.0
        if outcome is Outcome.RUN:
            cancel_at = apply_at + chance.uniform(30, 150)
        annotations = {**pod_behaviour(outcome, after=after), "kwok.trainrun.dev/start-after": "2s"}
        document = training_run(name, namespace, podMetadata={"annotations": annotations}, **spec)
        planned.append(Planned(name, document, expected, uri, apply_at, cancel_at))
    return planned


class PodStarts:
    """Container starts per replica (``master-0``, ``worker-0``; the uploader's pod by its name) of each run,
    from a watch of the pods: the pod uids whose first container ran, with their highest restart count."""

    def __init__(self) -> None:
        self.starts: dict[tuple[str, str], dict[str, int]] = {}
        self.lock = threading.Lock()

    def see(self, pod: dict[str, Any]) -> None:
        labels = pod["metadata"].get("labels") or {}
        kind, index = labels.get("training.kubeflow.org/replica-type"), labels.get("training.kubeflow.org/replica-index")
        run = labels.get("trainrun.dev/run")
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        if run is None or not statuses:
            return
        # A replica's log is archived under its name; another pod's of the run (the uploader's) under the pod's.
        replica = pod["metadata"]["name"] if kind is None or index is None else f"{str(kind).lower()}-{index}"
        first = statuses[0]
        started = first.get("restartCount", 0) + (1 if ("running" in (first.get("state") or {}) or "terminated" in (first.get("state") or {})) else 0)
        if started == 0:
            return
        with self.lock:
            by_uid = self.starts.setdefault((str(run), replica), {})
            by_uid[pod["metadata"]["uid"]] = max(by_uid.get(pod["metadata"]["uid"], 0), started)

    def of(self, run: str) -> dict[str, int]:
        with self.lock:
            return {replica: sum(by_uid.values()) for (name, replica), by_uid in self.starts.items() if name == run}

    def by_pod(self, run: str, replica: str) -> dict[str, int]:
        """The replica's container starts by pod uid (for a failure's message: which pod's start is missing)."""
        with self.lock:
            return dict(self.starts.get((run, replica), {}))


def pieces(lines: list[str]) -> tuple[list[list[int]], int]:
    """A replica's archived log cut into container starts (the numbers of each start's lines: a start begins at
    line 1), and the number of gap markers in it. A marker is written when its start is declared (when its pod
    was found gone, or the run's logs were sealed), after whatever was archived by then: not always right after
    that start's lines, and a start read to its end may be declared too when the follower that read it was
    killed before it recorded so ("some may be missing")."""
    found: list[list[int]] = []
    markers = 0
    for line in lines:
        if line.startswith(GAP_MARKER):
            markers += 1
            continue
        number = int(line.removeprefix("line "))
        if number == 1 or not found:
            found.append([])
        found[-1].append(number)
    return found, markers


def operators_on(problems: list[str], operators: list[OperatorProcess], most: int = 12) -> str:
    """What the operators logged about the runs with problems (the CI log is all a failed run leaves behind)."""
    names = sorted({problem.split("/")[0].split(":")[0] for problem in problems})
    told = []
    for operator in operators:
        lines = operator.output().splitlines()
        for name in names[:6]:
            about = [line[:300] for line in lines if f"{name} " in line or f"{name}/" in line or f"{name}-" in line]
            if about:
                told.append(f"-- operator {operator.identity} on {name} (last {min(most, len(about))} of {len(about)} lines):")
                told += about[-most:]
    return "\n" + "\n".join(told) if told else ""


@pytest.fixture
def s3_env(kube_cluster: KubeCluster, kube_namespace: str, s3_server: SeaweedFS) -> dict[str, str]:
    return bucket_secret(kube_cluster, kube_namespace, s3_server.endpoint)


@pytest.fixture
def operator_pair(kube_cluster: KubeCluster, kube_namespace: str, tmp_path: Path) -> Iterator[list[OperatorProcess]]:
    pair = [
        OperatorProcess(
            kube_cluster, tmp_path / f"operator-{letter}.log", args=["--namespace", kube_namespace], identity=f"soak-{letter}-{kube_namespace}"
        )
        for letter in "ab"
    ]
    for process in pair:
        process.start()
    yield pair
    for process in pair:
        process.stop()
    for process in pair:
        process.assert_no_traceback()


def retrying(what: str, action: Callable[[], Any], timeout: float = 420) -> None:
    """ACTION until it succeeds (the API server may be down when a fault or a cancel is due, and take minutes to
    come back on a loaded machine); fails with its last error."""
    errors: list[str] = []

    def done() -> bool:
        try:
            action()
        except (ClusterError, subprocess.SubprocessError) as error:
            errors.append(str(error).strip()[-500:])
            return False
        return True

    try:
        wait_until(done, timeout=timeout, what=what, interval=2)
    except ClusterError as error:
        raise AssertionError(f"{error}; the last error: {errors[-1] if errors else None}") from None


def node_document(name: str) -> dict[str, Any]:
    documents = yaml.safe_load_all((REPO / "tests" / "cluster" / "nodes.yaml").read_text())
    return next(document for document in documents if document and document["metadata"]["name"] == name)


def archived_logs(uri: str, env: dict[str, str]) -> dict[str, list[str]]:
    code = (
        "import json, os, sys\n"
        "from trainrun.storage import StorageOptions\n"
        "from trainrun.storage.logstore import read_archived_logs\n"
        "print(json.dumps(read_archived_logs(sys.argv[1], StorageOptions.from_env(os.environ))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, f"{uri}/logs"], env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


@pytest.mark.timeout(2400)
def test_fifty_runs_through_random_faults_end_right_with_nothing_lost_silently(
    kube_cluster: KubeCluster,
    kube_namespace: str,
    s3_server: SeaweedFS,
    s3_env: dict[str, str],
    operator_pair: list[OperatorProcess],
    tmp_path: Path,
) -> None:
    namespace = kube_namespace
    seed = int(os.environ.get("TRAINRUN_CHAOS_SEED") or time.time())
    chance = random.Random(seed)
    tally = Tally()
    numbered = [f"line {number:04d}" for number in range(1, LINES + 1)]
    kube_cluster.serve_namespace_logs(namespace, write_cri_log(tmp_path / "replica.log", numbered))
    planned = plan_runs(namespace, chance)
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    (outputs / "model.pt").write_bytes(os.urandom(4096))
    (outputs / "config.json").write_text('{"layers": 2}')

    def prepare(run: Planned) -> None:
        volume_for_claim(kube_cluster, namespace, f"{run.name}-outputs", tmp_path / "volumes" / run.name, create_claim=False)
        if run.expected == "Completed":  # the uploader pod only pretends: the copy its pod would make
            upload = subprocess.run(
                [TRAINRUN, "upload", str(outputs), run.uri], env={**os.environ, **s3_env}, capture_output=True, text=True, timeout=120
            )
            assert upload.returncode == 0, upload.stderr

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(prepare, planned))

    leader_kills = 4
    node = node_document(NODE)
    faults: list[Fault] = []
    outage: list[ApiServerOutage] = []

    processes = threading.Lock()  # kills and starts of the operator's processes, one at a time

    def kill_leader() -> None:
        with processes:
            alive = [process for process in operator_pair if process.running()]
            if not alive:  # both down at this moment: the next kill finds one
                return
            leaders = [process for process in alive if process.is_leader()]
            victim = leaders[0] if leaders else chance.choice(alive)
            victim.kill()
        tally.faults.append(f"SIGKILL {victim.identity}{'' if leaders else ' (leader unknown)'}")
        restart_at = time.monotonic() + chance.uniform(2, 8)
        faults.append(Fault(restart_at - started, f"start {victim.identity}", lambda: start_again(victim)))

    def start_again(process: OperatorProcess) -> None:
        with processes:
            if not process.running():
                process.start()

    def api_down() -> None:
        outage.append(ApiServerOutage(kube_cluster))
        tally.faults.append("kube-apiserver SIGKILLed")
        faults.append(Fault(time.monotonic() - started + 20, "kube-apiserver started", api_up))

    def api_up() -> None:
        tally.faults.append(f"kube-apiserver back after {outage.pop().end():.0f} s")

    def store_down() -> None:
        s3_server.stop(hard=True)
        tally.faults.append("object store SIGKILLed")
        faults.append(Fault(time.monotonic() - started + 30, "object store started", store_up))

    def store_up() -> None:
        s3_server.start()
        tally.faults.append("object store back")

    def delete_node() -> None:
        retrying(f"deleting node {NODE}", lambda: kube_cluster.kubectl("delete", "node", NODE, "--wait=false"))
        tally.faults.append(f"node {NODE} deleted")
        faults.append(Fault(time.monotonic() - started + 90, f"node {NODE} back", node_back))

    def node_back() -> None:
        retrying(f"node {NODE} back", lambda: kube_cluster.apply(node))
        tally.faults.append(f"node {NODE} back")

    for _ in range(leader_kills):
        faults.append(Fault(chance.uniform(10, 220), "kill the leader", kill_leader))
    faults.append(Fault(chance.uniform(30, 180), "API server down", api_down))
    faults.append(Fault(chance.uniform(20, 180), "object store down", store_down))
    faults.append(Fault(chance.uniform(20, 120), f"delete node {NODE}", delete_node))
    for run in planned:
        faults.append(Fault(run.apply_at, f"apply {run.name}", lambda run=run: retrying(f"applying {run.name}", lambda: kubectl_apply(kube_cluster, run.document))))
        if run.cancel_at is not None:
            patch = json.dumps({"spec": {"cancel": True}})
            faults.append(
                Fault(
                    run.cancel_at,
                    f"cancel {run.name}",
                    lambda run=run, patch=patch: retrying(
                        f"cancelling {run.name}",
                        lambda: kube_cluster.kubectl("patch", "trainingrun", run.name, "-n", namespace, "--type", "merge", "-p", patch),
                    ),
                )
            )

    jobs = ObjectWatch(kube_cluster, namespace, "pytorchjobs")
    starts = PodStarts()
    pods = ObjectWatch(kube_cluster, namespace, "pods", see=starts.see)
    restarted_before = len(supervisor_restarts(kube_cluster))
    started = time.monotonic()
    submitted: set[int] = set()
    actions: list[Future[None]] = []
    # Each action in a thread of its own: one that waits for the API server (a cancel due during the outage)
    # must not hold back the one that ends the outage. So the pool has room for every action of the schedule at
    # once (the runs' applies and cancels and the faults, scheduled already, and the ends the faults add later):
    # with fewer, the applies and cancels due during an outage can take every thread and keep the API server
    # down until their retries give up.
    acting = ThreadPoolExecutor(len(faults) + 16)
    try:
        # The schedule grows as faults schedule their own ends.
        while len(submitted) < len(faults) or not all(action.done() for action in actions):
            due = [(index, fault) for index, fault in enumerate(faults) if index not in submitted]
            if not due:
                time.sleep(0.2)
                continue
            index, fault = min(due, key=lambda item: item[1].at)
            if fault.at > time.monotonic() - started:
                time.sleep(min(0.2, fault.at - (time.monotonic() - started)))
                continue
            submitted.add(index)
            actions.append(acting.submit(fault.action))
        for action in actions:
            action.result()  # an action that failed fails the test

        def all_sealed() -> bool:
            runs = kube_cluster.list_objects("trainingruns", namespace)
            return len(runs) == RUNS and all(
                (run.get("status") or {}).get("phase") in TERMINAL and ((run.get("status") or {}).get("logs") or {}).get("sealed")
                for run in runs
            )

        try:
            wait_until(all_sealed, timeout=900, what="every run terminal with its log archive sealed", interval=3)
        except ClusterError as error:
            states = {
                run["metadata"]["name"]: ((run.get("status") or {}).get("phase"), (run.get("status") or {}).get("message"))
                for run in kube_cluster.list_objects("trainingruns", namespace)
            }
            raise AssertionError(f"{error} (seed {seed}; faults {tally.faults}): {states}") from None
    finally:
        acting.shutdown(wait=True)
        jobs.stop()
        pods.stop()
        while outage:
            outage.pop().end()
        if s3_server.process is None:
            s3_server.start()
        if kube_cluster.get("node", NODE) is None:
            kube_cluster.apply(node)
    took = time.monotonic() - started
    context = f"(seed {seed}; faults: {tally.faults})"
    runs = {run["metadata"]["name"]: run for run in kube_cluster.list_objects("trainingruns", namespace)}

    wrong = {run.name: runs[run.name]["status"]["phase"] for run in planned if runs[run.name]["status"]["phase"] != run.expected}
    assert not wrong, f"runs ended otherwise than their pods' outcome {context}: {wrong}"

    extra_jobs = {}
    for run in planned:
        attempts = 1 + len(runs[run.name]["status"].get("restarts") or [])
        seen = jobs.uids.get(run.name, set())
        # A run cancelled while a restart waits (its old job deleted, the new one not created yet) ends with
        # one job fewer than attempts; never more.
        fewest = attempts - 1 if run.expected == "Cancelled" else attempts
        if not max(fewest, 1) <= len(seen) <= attempts:
            extra_jobs[run.name] = f"{len(seen)} PyTorchJobs for {attempts} attempts"
    assert not extra_jobs, f"not one child per attempt {context}: {extra_jobs}"

    problems: list[str] = []
    for run in planned:
        status = runs[run.name]["status"]
        logs = status["logs"]
        declared = {gap["replica"] for gap in logs.get("gaps") or []}
        archive = archived_logs(run.uri, s3_env)
        container_starts = starts.of(run.name)
        for replica, lines in sorted(archive.items()):
            cut, markers = pieces(lines)
            tally.lines_archived += sum(len(numbers) for numbers in cut)
            short = [numbers for numbers in cut if len(numbers) != LINES]
            for numbers in cut:
                if numbers != list(range(1, len(numbers) + 1)):
                    tally.duplicates += len(numbers) - len(set(numbers))
                    problems.append(f"{run.name}/{replica}: lines out of order or repeated: {numbers[:12]}...")
            tally.gaps += markers
            tally.lines_declared_lost += sum(LINES - len(numbers) for numbers in short)
            if markers and (replica not in declared or logs.get("complete")):
                problems.append(f"{run.name}/{replica}: a gap marker, but the status does not declare it: {logs}")
            if len(short) > markers:
                problems.append(f"{run.name}/{replica}: {len(short)} starts cut short ({[len(numbers) for numbers in short]} of {LINES} lines), {markers} gaps declared")
            if len(cut) > container_starts.get(replica, 0):
                problems.append(f"{run.name}/{replica}: {len(cut)} starts in the archive, {container_starts.get(replica, 0)} seen")
        for replica, count in container_starts.items():
            tally.lines_written += count * LINES
            cut, markers = pieces(archive.get(replica, []))
            if count > len(cut):  # starts of which no line was archived
                tally.lines_declared_lost += (count - len(cut)) * LINES
                why = sorted({line.partition("could not be read (")[2].partition(")")[0] for line in archive.get(replica, []) if line.startswith(GAP_MARKER)})
                tally.starts_lost.append(f"{run.name}/{replica} ({run.expected}): {'; '.join(why)}")
            if len(cut) + markers < count:  # a start neither archived nor declared
                problems.append(
                    f"{run.name}/{replica}: {count} container starts, {len(cut)} in the archive and {markers} declared "
                    f"(starts by pod uid: {starts.by_pod(run.name, replica)}; archived starts' lengths: {[len(numbers) for numbers in cut]})"
                )
        if declared and logs.get("complete"):
            problems.append(f"{run.name}: gaps {sorted(declared)} yet logs.complete is true")
        if run.expected == "Completed":
            download = subprocess.run(
                [TRAINRUN, "download", run.uri, str(tmp_path / "check" / run.name)],
                env={**os.environ, **s3_env},
                capture_output=True,
                text=True,
                timeout=120,
            )
            if download.returncode != 0:
                problems.append(f"{run.name}: the manifest does not verify: {download.stderr.strip()[-300:]}")
    # The first line names the problems: it is what a CI summary keeps of a failure.
    assert not problems, (
        f"{len(problems)} problems: {'; '.join(problem[:200] for problem in problems[:5])} {context}:\n"
        + "\n".join(problems[:40])
        + operators_on(problems, operator_pair)
    )
    assert wait_until(lambda: all(control_plane_running(kube_cluster).values()), timeout=60, what="every control-plane process")
    restarts = sum(len(runs[run.name]["status"].get("restarts") or []) for run in planned)
    print(
        f"\nchaos soak, seed {seed}: {RUNS} runs in {took:.0f} s; faults: {len(tally.faults)} ({'; '.join(tally.faults)}); "
        f"whole-run restarts {restarts}; PyTorchJobs {sum(len(uids) for uids in jobs.uids.values())}; "
        f"lines written {tally.lines_written}, archived {tally.lines_archived}, declared lost {tally.lines_declared_lost} "
        f"in {tally.gaps} declared gaps, duplicates {tally.duplicates}; starts of which no line was archived: {tally.starts_lost}; "
        f"the supervisor restarted: {supervisor_restarts(kube_cluster)[restarted_before:]}; watch errors {len(jobs.errors) + len(pods.errors)}"
    )
