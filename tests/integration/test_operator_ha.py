"""The operator under failure: SIGKILLed again and again, a leader and a standby, the API server gone.

Each test starts its own operator processes (``python -m trainrun.controller --namespace NS``, with a
POD_NAME of its own for leader election) and checks their output for Python tracebacks:

(a) SIGKILLed at 30 random moments while 10 runs go through every phase (some succeed, some fail):
    every run ends Completed or Failed as its pods did, with exactly one PyTorchJob (one uid from
    first sight to the end, recorded by a watch), no phase Event posted twice and none of its final
    phase lost;
(b) two processes: the Lease names the leader; SIGKILL it, apply a run: it reaches Running within the
    Lease's 15 s (+ the 2 s retry) + the time a run takes to reach Running with a live leader;
(c) kube-apiserver killed mid-run and started again 20 s later with its own command line: the operator
    is the same process afterwards (no restart) and the run completes; one started during the outage
    says it waits for the API server and becomes ready once it answers. kube-controller-manager and
    kube-scheduler exit when they lose their own Leases meanwhile; the cluster's supervisor starts them again.

The file sorts after test_operator.py; (c) runs last in it and leaves the API server running (it
restores it even when it fails).
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster.harness import ClusterError, KubeCluster, Outcome, pod_behaviour, wait_until, write_cri_log
from faults import (
    ApiServerOutage,
    ObjectWatch,
    api_ready,
    control_plane_running,
    duplicate_events,
    supervisor_restarts,
)
from runs import (
    OperatorProcess,
    events_of,
    get_run,
    kubectl_apply,
    lease_holder,
    lease_renewal,
    reconciled_after_now,
    training_run,
    wait_for_phase,
)

pytestmark = pytest.mark.cluster

TERMINAL = ("Completed", "Failed")
LEASE_S = 15.0  # the Lease's duration: a standby takes over at most this long after the leader's last renewal
RETRY_S = 2.0  # how often a standby tries to acquire it
SMALL = {"pool": "cpu", "cpu": "100m", "memory": "64Mi"}
NEVER_AGAIN = {"restartPolicy": "Never", "backoffLimit": 0}


@pytest.fixture
def operators(kube_cluster: KubeCluster, kube_namespace: str, tmp_path: Path) -> Iterator[list[OperatorProcess]]:
    """A list to put this test's operator processes in (each watching only the test's namespace):
    stopped at the end, and their output checked for tracebacks."""
    started: list[OperatorProcess] = []
    yield started
    for process in started:
        process.stop()
    for process in started:
        process.assert_no_traceback()


def new_operator(
    kube_cluster: KubeCluster, namespace: str, folder: Path, identity: str, operators: list[OperatorProcess]
) -> OperatorProcess:
    process = OperatorProcess(
        kube_cluster, folder / f"operator-{identity}.log", args=["--namespace", namespace], identity=f"{identity}-{namespace}"
    )
    operators.append(process)
    process.start()
    return process


def phase_of(kube_cluster: KubeCluster, name: str, namespace: str) -> str | None:
    return get_run(kube_cluster, name, namespace).get("status", {}).get("phase")


# --- (a) ------------------------------------------------------------------------------------------


@pytest.mark.timeout(900)
def test_sigkilled_at_30_random_moments_every_run_ends_once_with_one_job(
    kube_cluster: KubeCluster, kube_namespace: str, tmp_path: Path, operators: list[OperatorProcess]
) -> None:
    namespace = kube_namespace
    seed = int(os.environ.get("TRAINRUN_CHAOS_SEED") or time.time())
    chance = random.Random(seed)
    kube_cluster.serve_namespace_logs(namespace, write_cri_log(tmp_path / "replica.log", ["step=1 loss=0.5"]))
    # Runs of 5 to 50 s that start 2 s after they are scheduled (Preparing); 6 succeed, 4 fail. The first
    # three are one 24-CPU replica each: the two 32-CPU nodes of the cpu pool hold two of them, the third
    # is Queued until one ends. Half the runs are applied at the start, half half way through the kills.
    plan: dict[str, str] = {}
    documents = []
    for index in range(10):
        outcome = Outcome.FAIL if index % 5 in (1, 3) else Outcome.SUCCEED
        after = f"{5 + 5 * index}s"
        name = f"chaos-{index}-{outcome.value}"
        plan[name] = "Failed" if outcome is Outcome.FAIL else "Completed"
        annotations = {**pod_behaviour(outcome, after=after), "kwok.trainrun.dev/start-after": "2s"}
        shape: dict[str, Any] = (
            {"resources": {**SMALL, "cpu": "24"}, "distribution": {"workers": 0}} if index < 3 else {"resources": SMALL}
        )
        documents.append(
            training_run(name, namespace, runPolicy=NEVER_AGAIN, podMetadata={"annotations": annotations}, **shape)
        )
    uids = ObjectWatch(kube_cluster, namespace, "pytorchjobs")
    operator = new_operator(kube_cluster, namespace, tmp_path, "chaos", operators)
    phases: dict[str, list[str]] = {name: [] for name in plan}

    def note_phases() -> None:
        for run in kube_cluster.list_objects("trainingruns", namespace):
            seen = phases.setdefault(run["metadata"]["name"], [])
            phase = run.get("status", {}).get("phase")
            if phase and (not seen or seen[-1] != phase):
                seen.append(phase)

    try:
        kube_cluster.apply(*documents[:5])
        delays = []
        for kill in range(30):
            if kill == 15:
                kube_cluster.apply(*documents[5:])
            delay = chance.uniform(0.2, 3.0)
            delays.append(round(delay, 2))
            time.sleep(delay)
            operator.kill()
            operator.start()
            note_phases()

        def all_terminal() -> bool:
            note_phases()
            return all(seen and seen[-1] in TERMINAL for seen in phases.values())

        try:
            wait_until(all_terminal, timeout=240, what="every run Completed or Failed", interval=1)
        except ClusterError as error:
            raise AssertionError(
                f"{error} (seed {seed}); phases seen: {phases}\noperator log:\n{operator.log_tail(80)}"
            ) from None
        for name in plan:  # a known later event: what any earlier reconcile posted or created has arrived
            reconciled_after_now(kube_cluster, name, namespace)
    finally:
        uids.stop()
    context = f"(seed {seed}, kill delays {delays}; operator log {operator.log_path})"
    ended = {name: seen[-1] for name, seen in phases.items()}
    assert ended == plan, f"runs ended otherwise than their pods {context}: {phases}"
    flapping = {name: seen for name, seen in phases.items() if len(set(seen)) != len(seen)}
    assert not flapping, f"runs went back to a phase they had left {context}: {flapping}"
    runs = {run["metadata"]["name"]: run for run in kube_cluster.list_objects("trainingruns", namespace)}
    jobs = {job["metadata"]["name"]: job for job in kube_cluster.list_objects("pytorchjobs", namespace)}
    assert sorted(jobs) == sorted(plan), f"PyTorchJobs {sorted(jobs)} for runs {sorted(plan)} {context}"
    for name, job in jobs.items():
        assert uids.uids.get(name) == {job["metadata"]["uid"]}, f"{name}: job uids seen {uids.uids.get(name)} {context}"
        assert [owner["uid"] for owner in job["metadata"].get("ownerReferences", [])] == [runs[name]["metadata"]["uid"]]
    assert not uids.deleted, f"PyTorchJobs deleted while their runs lived: {uids.deleted} {context}"
    twice = {name: found for name in plan if (found := duplicate_events(kube_cluster, name, namespace))}
    assert not twice, f"phase Events posted twice {context}: {twice}"
    # ... and none lost: each run's Events end its story with its final phase ("Running -> Completed: ...").
    lost = {
        name: [event.get("message") for event in events_of(kube_cluster, name, namespace)]
        for name, final in plan.items()
        if not any(re.match(rf"(.* -> )?{final}\b", event.get("message") or "") for event in events_of(kube_cluster, name, namespace))
    }
    assert not lost, f"runs without the Event of their final phase {context}: {lost}"
    print(f"seed {seed}; phases seen: {phases}")
    assert operator.starts == 31


# --- (b) ------------------------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_the_standby_takes_over_when_the_leader_is_killed(
    kube_cluster: KubeCluster, kube_namespace: str, tmp_path: Path, operators: list[OperatorProcess]
) -> None:
    namespace = kube_namespace
    kube_cluster.serve_namespace_logs(namespace, write_cri_log(tmp_path / "replica.log", ["step=1 loss=0.5"]))
    first = new_operator(kube_cluster, namespace, tmp_path, "one", operators)
    wait_until(lambda: lease_holder(kube_cluster) == first.identity, timeout=60, what="the first process to lead")
    second = new_operator(kube_cluster, namespace, tmp_path, "two", operators)
    # Known later events: the second one is up (ready: its caches synced) and the first renewed the Lease twice
    # since, while the second one tried for it.
    wait_until(second.ready, timeout=60, what="the second process to be ready")
    renewals: set[str] = set()

    def renewed_twice() -> bool:
        renewals.add(lease_renewal(kube_cluster))
        return len(renewals) >= 3

    wait_until(renewed_twice, timeout=60, what="two renewals of the Lease", interval=0.5)
    assert first.running() and second.running(), second.log_tail()
    assert lease_holder(kube_cluster) == first.identity

    def time_to_running(name: str) -> float:
        annotations = {**pod_behaviour(Outcome.RUN), "kwok.trainrun.dev/start-after": "2s"}
        started = time.monotonic()
        kubectl_apply(kube_cluster, training_run(name, namespace, resources=SMALL, podMetadata={"annotations": annotations}))
        wait_for_phase(kube_cluster, second, name, namespace, "Running", timeout=120)
        return time.monotonic() - started

    with_leader = time_to_running("before")  # the pods' own time, and the operator's with a live leader
    leader, standby = first, second
    takeover: list[float] = []

    def watch_lease() -> None:
        while not takeover and time.monotonic() - killed < 120:
            if lease_holder(kube_cluster) == standby.identity:
                takeover.append(time.monotonic() - killed)
            time.sleep(0.2)

    leader.kill()
    killed = time.monotonic()
    watcher = threading.Thread(target=watch_lease, daemon=True)
    watcher.start()
    took = time_to_running("after")
    watcher.join(timeout=130)
    assert takeover, f"the standby never took the Lease; it is held by {lease_holder(kube_cluster)!r}"
    bound = LEASE_S + RETRY_S + with_leader + 1.0  # 1 s: this test's polling
    print(
        f"Running with a live leader {with_leader:.1f} s; the standby leads {takeover[0]:.1f} s after the leader's "
        f"SIGKILL; a run applied then reached Running in {took:.1f} s (bound {bound:.1f} s)"
    )
    assert takeover[0] <= LEASE_S + RETRY_S + 1.0, f"the standby took the Lease {takeover[0]:.1f} s after the SIGKILL"
    assert took <= bound, (
        f"the run applied after the leader's SIGKILL took {took:.1f} s to reach Running, more than "
        f"{LEASE_S:.0f} s Lease + {RETRY_S:.0f} s retry + {with_leader:.1f} s with a live leader\n"
        f"standby log:\n{standby.log_tail(40)}"
    )
    for name in ("before", "after"):
        assert len(kube_cluster.list_objects("pytorchjobs", namespace, f"training.kubeflow.org/job-name={name}")) <= 1
        assert kube_cluster.get("pytorchjob", name, namespace) is not None
        twice = duplicate_events(kube_cluster, name, namespace)
        assert not twice, f"{name}: phase Events posted twice: {twice}"
    # SIGTERM: the leader hands the Lease back at once.
    standby.stop()
    assert lease_holder(kube_cluster) != standby.identity, "the Lease is still held after the leader's SIGTERM"


# --- (c) ------------------------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_the_api_server_gone_for_20_s_the_operator_carries_on(
    kube_cluster: KubeCluster, kube_namespace: str, tmp_path: Path, operators: list[OperatorProcess]
) -> None:
    namespace = kube_namespace
    kube_cluster.serve_namespace_logs(namespace, write_cri_log(tmp_path / "replica.log", ["step=1 loss=0.5"]))
    operator = new_operator(kube_cluster, namespace, tmp_path, "outage", operators)
    annotations = pod_behaviour(Outcome.SUCCEED, after="40s")
    kubectl_apply(kube_cluster, training_run("steady", namespace, resources=SMALL, podMetadata={"annotations": annotations}))
    wait_for_phase(kube_cluster, operator, "steady", namespace, "Running", timeout=120)
    pid = operator.pid
    restarted_before = len(supervisor_restarts(kube_cluster))
    outage = ApiServerOutage(kube_cluster)
    try:
        assert not api_ready(kube_cluster), "the API server still answers after its SIGKILL"
        time.sleep(max(0.0, 20 - (time.monotonic() - outage.began)))
        assert not api_ready(kube_cluster)
        assert operator.running(), f"the operator exited while the API server was down:\n{operator.log_tail(40)}"
        # A process started meanwhile (a restarted pod) waits for the server, past kopf's own 54 s of retries.
        late = new_operator(kube_cluster, namespace, tmp_path, "late", operators)
        wait_until(
            lambda: "waiting for the API server" in late.output(), timeout=30, what="the late process to say it waits"
        )
    finally:
        print(f"API server down {outage.end():.1f} s")
    wait_until(late.ready, timeout=90, what="the process started during the outage to be ready")
    run = wait_for_phase(kube_cluster, operator, "steady", namespace, "Completed", timeout=180)
    assert run["status"]["phase"] == "Completed"
    assert operator.running() and operator.pid == pid and operator.starts == 1, (
        f"the operator did not carry on as the same process:\n{operator.log_tail(40)}"
    )
    assert not duplicate_events(kube_cluster, "steady", namespace)
    # kube-controller-manager and kube-scheduler exit when they cannot renew their Leases for 10 s; the cluster's
    # supervisor starts them again, as a kubelet would.
    wait_until(lambda: all(control_plane_running(kube_cluster).values()), timeout=60, what="every control-plane process")
    print("the supervisor meanwhile:", supervisor_restarts(kube_cluster)[restarted_before:])
