"""Progress, hangs and restarts by cause (issue 17) against the real control plane, with the operator as a process.

kwok's pods run no program: what a replica "prints" is a CRI log file the test writes (the kubelet's
timestamps are the moments the test wrote each line) and serves for the replica's pod name, and what a
replica "does" is chosen by pod annotations (``cluster.harness.pod_behaviour``). So the pace the test
writes steps at is the pace the operator must measure, and a file the test stops writing is a silent
replica. A restarted run's new pods have the old names; the test serves them a new log, which begins
the way the built-in trainer resumes (``resuming after epoch 1 ... (step 40, ...)``).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster.harness import REPO_ROOT, KubeCluster, Outcome, pod_behaviour, wait_until, write_cri_log
from runs import (
    JOB_LABEL,
    OperatorProcess,
    events_of,
    get_run,
    kubectl_apply,
    operator,
    reconciled_after_now,
    training_run,
    wait_for_phase,
)
from trainrun.metrics.progress import PACE_WINDOW

pytestmark = pytest.mark.cluster
__all__ = ["operator"]  # a fixture, used by name

TOTAL_STEPS = 400
STEPS_PER_LINE = 10
SECONDS_PER_LINE = 1.0


def metric_line(step: int) -> str:
    return f'trainrun:metric {{"epoch": 1, "step": {step}, "train_loss": {1.0 / step:.4f}, "images_per_sec": 1234.0}}'


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def columns(cluster: KubeCluster, name: str, namespace: str) -> dict[str, str]:
    """The columns of ``kubectl get tr NAME`` by header, cut at the headers' positions (an empty one is "")."""
    header, row = cluster.kubectl("get", "tr", name, "-n", namespace).stdout.rstrip().splitlines()
    starts = [index for index, char in enumerate(header) if char != " " and (index == 0 or header[index - 1] == " ")]
    ends = [*starts[1:], None]
    return {header[start:end].strip(): row[start:end].strip() for start, end in zip(starts, ends, strict=True)}


def test_progress_column_moves_and_the_eta_follows_the_logs_pace(
    kube_cluster: KubeCluster, operator: OperatorProcess, kube_namespace: str, tmp_path: Path
) -> None:
    namespace = kube_namespace
    log = write_cri_log(tmp_path / "master.log", [f'trainrun:progress {{"step": 0, "total_steps": {TOTAL_STEPS}}}'])
    written: list[tuple[int, datetime]] = [(0, datetime.now(UTC))]
    kube_cluster.serve_pod_log(namespace, "paced-master-0", log)
    kube_cluster.serve_pod_log(namespace, "paced-worker-0", write_cri_log(tmp_path / "worker.log", ["worker up"]))
    kubectl_apply(kube_cluster, training_run("paced", namespace, podMetadata={"annotations": pod_behaviour(Outcome.RUN)}))
    wait_for_phase(kube_cluster, operator, "paced", namespace, "Running")

    shown: list[str] = []
    step = 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(set(shown)) < 3 and step < TOTAL_STEPS - STEPS_PER_LINE:
        step += STEPS_PER_LINE
        write_cri_log(log, [metric_line(step)], append=True)
        written.append((step, datetime.now(UTC)))
        progress = columns(kube_cluster, "paced", namespace)["PROGRESS"]
        if progress.endswith("%") and (not shown or shown[-1] != progress):
            shown.append(progress)
        time.sleep(SECONDS_PER_LINE)
    assert len(set(shown)) >= 3, f"PROGRESS did not move: {shown}"
    assert [float(value.rstrip("%")) for value in shown] == sorted(float(value.rstrip("%")) for value in shown)

    # The ETA: the last step's time plus what is left at the pace the lines were written (over the last
    # PACE_WINDOW steps, the progress line's step 0 among them).
    status = get_run(kube_cluster, "paced", namespace)["status"]["progress"]
    last_step, last_time = next(item for item in written if item[0] == status["step"])
    first_step, first_time = written[max(0, written.index((last_step, last_time)) - PACE_WINDOW + 1)]
    pace = (last_step - first_step) / (last_time - first_time).total_seconds()
    expected = last_time.timestamp() + (TOTAL_STEPS - last_step) / pace
    assert status["totalSteps"] == TOTAL_STEPS and status["percent"] == pytest.approx(100 * last_step / TOTAL_STEPS)
    # The kubelet's timestamps are the moments the lines were written; the margin is for a loaded machine.
    assert status["stepsPerSecond"] == pytest.approx(pace, rel=0.25)
    assert moment(status["eta"]).timestamp() == pytest.approx(expected, abs=10), (status, pace)
    assert status["samplesPerSecond"] == 1234.0
    assert moment(columns(kube_cluster, "paced", namespace)["ETA"]).timestamp() == pytest.approx(expected, abs=15)


def test_a_silent_log_is_a_hang_restarted_from_the_checkpoint_until_the_cap(
    kube_cluster: KubeCluster, operator: OperatorProcess, kube_namespace: str, tmp_path: Path
) -> None:
    namespace = kube_namespace
    first = write_cri_log(tmp_path / "first.log", ["trainrun_trainer: rank 0 of 2 starting"])
    kube_cluster.serve_pod_log(namespace, "silent-master-0", first)
    kube_cluster.serve_pod_log(namespace, "silent-worker-0", write_cri_log(tmp_path / "worker.log", ["worker up"]))
    # The backoff leaves the test time to serve the new pods their own log before they start.
    policy = {"hangTimeoutSeconds": 10, "onHang": "Restart", "maxRestarts": 1, "restartBackoffSeconds": 8}
    document = training_run("silent", namespace, runPolicy=policy, podMetadata={"annotations": pod_behaviour(Outcome.RUN)})
    kubectl_apply(kube_cluster, document)
    wait_for_phase(kube_cluster, operator, "silent", namespace, "Running")
    steps = ['trainrun:progress {"step": 0, "total_steps": 100}', *(metric_line(step) for step in (10, 20, 30, 40))]
    write_cri_log(first, steps, append=True)  # then nothing more

    def progressed() -> dict[str, Any] | None:
        status = get_run(kube_cluster, "silent", namespace)["status"]
        return status if (status.get("progress") or {}).get("step") == 40 else None

    wait_until(progressed, timeout=90, what="the steps read before the log went silent", interval=0.5)
    old_job = kube_cluster.get("pytorchjob", "silent", namespace)
    assert old_job is not None
    old_claims = claims_of(kube_cluster, namespace)

    def restarted() -> dict[str, Any] | None:
        run = get_run(kube_cluster, "silent", namespace)
        return run if run["status"].get("restarts") else None

    run = wait_until(restarted, timeout=90, what="the silent run restarted", interval=0.3)
    # The new job's replicas (same names) get a log of their own, written once they run.
    second = write_cri_log(tmp_path / "second.log", ["trainrun_trainer: rank 0 of 2 starting"])
    kube_cluster.serve_pod_log(namespace, "silent-master-0", second)
    (restart,) = run["status"]["restarts"]
    assert restart["cause"] == "Hang"
    # "no new step since <time> (step 40)": on a loaded machine the operator may also have seen the replicas
    # start late, and then says it saw no step from them (the rule before the first step).
    assert restart["message"].startswith("hung: no "), restart
    assert "silent: master-0 since" in restart["message"] and "hangTimeoutSeconds=10" in restart["message"], restart
    events = events_of(kube_cluster, "silent", namespace)
    assert any(event["reason"] == "Restarting" and event["type"] == "Warning" for event in events), events

    def new_job() -> dict[str, Any] | None:
        job = kube_cluster.get("pytorchjob", "silent", namespace)
        return job if job is not None and job["metadata"]["uid"] != old_job["metadata"]["uid"] else None

    job = wait_until(new_job, timeout=90, what="a second PyTorchJob", interval=0.3)
    assert job["metadata"]["creationTimestamp"] >= restart["time"]
    pods = kube_cluster.wait_for_pods(
        namespace, f"{JOB_LABEL}=silent", count=2, ready=lambda pod: pod["status"].get("phase") == "Running", timeout=90
    )
    assert all(pod["metadata"]["creationTimestamp"] >= restart["time"] for pod in pods)
    # They resume from the checkpoint: their log says so (as the built-in trainer does), and goes on from there.
    resume = [
        "trainrun_trainer: resuming after epoch 1 from /outputs/checkpoints/epoch-1.pt (step 40, best val_loss 0.5000)",
        'trainrun:progress {"step": 40, "total_steps": 100, "epoch": 2, "epochs": 2}',
        *(metric_line(step) for step in (50, 60)),
    ]
    write_cri_log(second, resume, append=True)
    master_log = kube_cluster.kubectl("logs", "silent-master-0", "-n", namespace).stdout
    assert "resuming after epoch 1" in master_log and "(step 40" in master_log
    assert claims_of(kube_cluster, namespace) == old_claims  # the same output (and checkpoints) as before

    def resumed() -> dict[str, Any] | None:
        status = get_run(kube_cluster, "silent", namespace)["status"]
        return status if (status.get("progress") or {}).get("step") == 60 else None

    status = wait_until(resumed, timeout=90, what="progress from the resumed replicas", interval=0.5)
    assert status["phase"] == "Running" and status["progress"]["summary"] == "60%"

    # The new job goes silent too: the one restart allowed is used, so the run fails saying so.
    run = wait_for_phase(kube_cluster, operator, "silent", namespace, "Failed", timeout=90)
    assert run["status"]["reason"] == "RestartLimitExceeded", run["status"]
    assert "all 1 restarts used (spec.runPolicy.maxRestarts=1)" in run["status"]["message"]
    assert run["status"]["message"].startswith("hung: no ")
    assert len(run["status"]["restarts"]) == 1


def claims_of(cluster: KubeCluster, namespace: str) -> list[str]:
    return sorted(claim["metadata"]["uid"] for claim in cluster.list_objects("persistentvolumeclaims", namespace))


def test_oomkilled_with_fail_on_fails_at_once_without_a_restart(
    kube_cluster: KubeCluster, operator: OperatorProcess, kube_namespace: str
) -> None:
    namespace = kube_namespace
    document = training_run(
        "oomer",
        namespace,
        runPolicy={"failOn": ["OOMKilled"], "backoffLimit": 10},  # the training-operator would retry 10 times
        resources={"memory": "2Gi"},
        podMetadata={"annotations": pod_behaviour(Outcome.OOM, after="3s")},
    )
    kubectl_apply(kube_cluster, document)
    run = wait_for_phase(kube_cluster, operator, "oomer", namespace, "Failed", timeout=90)
    status = run["status"]
    assert status["reason"] == "OOMKilled", status
    assert "was OOMKilled (memory limit 2Gi)" in status["message"] and "spec.runPolicy.failOn" in status["message"]
    assert not status.get("restarts")
    # Failed at the first OOM: the training-operator restarted no replica in place, and the job is going.
    restarts = [
        item.get("restartCount", 0)
        for pod in kube_cluster.list_objects("pods", namespace, f"{JOB_LABEL}=oomer")
        for item in pod["status"].get("containerStatuses", [])
    ]
    assert all(count <= 1 for count in restarts), restarts
    wait_until(lambda: kube_cluster.get("pytorchjob", "oomer", namespace) is None, timeout=30, what="the job deleted")
    assert reconciled_after_now(kube_cluster, "oomer", namespace)["status"]["phase"] == "Failed"
    assert kube_cluster.get("pytorchjob", "oomer", namespace) is None  # not created again by any reconcile since


def test_a_node_deleted_under_a_replica_restarts_the_run_with_cause_node_lost(
    kube_cluster: KubeCluster, operator: OperatorProcess, kube_namespace: str
) -> None:
    namespace = kube_namespace
    document = training_run(
        "nodeless",
        namespace,
        resources={"pool": "a100", "gpus": 8},
        runPolicy={"restartBackoffSeconds": 1},
        podMetadata={"annotations": pod_behaviour(Outcome.RUN)},
    )
    kubectl_apply(kube_cluster, document)
    wait_for_phase(kube_cluster, operator, "nodeless", namespace, "Running")
    worker = kube_cluster.get("pod", "nodeless-worker-0", namespace)
    assert worker is not None
    node = worker["spec"]["nodeName"]
    old_job = kube_cluster.get("pytorchjob", "nodeless", namespace)
    assert old_job is not None
    kube_cluster.kubectl("delete", "node", node)
    try:
        # The pod garbage collector deletes pods bound to a node that no longer exists (after about 40 s).
        run = wait_for_phase_with_restart(kube_cluster, operator, "nodeless", namespace)
        (restart,) = run["status"]["restarts"]
        assert restart["cause"] == "NodeLost", restart
        assert "replica worker-0 lost its node" in restart["message"], restart

        def running_again() -> dict[str, Any] | None:
            job = kube_cluster.get("pytorchjob", "nodeless", namespace)
            current = get_run(kube_cluster, "nodeless", namespace)
            fresh = job is not None and job["metadata"]["uid"] != old_job["metadata"]["uid"]
            running = current["status"].get("reason") == "Running" and current["status"]["phase"] == "Running"
            return current if fresh and running else None

        wait_until(running_again, timeout=90, what="the run running again on a new PyTorchJob", interval=0.5)
        pods = kube_cluster.list_objects("pods", namespace, f"{JOB_LABEL}=nodeless")
        assert node not in {pod["spec"].get("nodeName") for pod in pods}
    finally:
        restore_node(kube_cluster, node)


def wait_for_phase_with_restart(cluster: KubeCluster, operator: OperatorProcess, name: str, namespace: str) -> dict[str, Any]:
    def restarted() -> dict[str, Any] | None:
        run = get_run(cluster, name, namespace)
        return run if run["status"].get("restarts") else None

    try:
        return wait_until(restarted, timeout=150, what=f"TrainingRun {name} restarted", interval=0.5)
    except Exception as error:
        raise AssertionError(f"{error}\nstatus: {get_run(cluster, name, namespace).get('status')}\n{operator.log_tail()}") from None


def restore_node(cluster: KubeCluster, name: str) -> None:
    """Put a simulated node of tests/cluster/nodes.yaml back as up.sh made it."""
    for document in yaml.safe_load_all((REPO_ROOT / "tests" / "cluster" / "nodes.yaml").read_text()):
        if document and document["metadata"]["name"] == name:
            cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(document))
            wait_until(lambda: cluster.get("node", name), timeout=30, what=f"node {name} back")
            return
    raise AssertionError(f"node {name} is not in tests/cluster/nodes.yaml")
