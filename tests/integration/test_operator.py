"""The operator against the real control plane: kube-apiserver, kube-scheduler, kwok GPU pools and the
training-operator, driven with the real kubectl the way a user drives it.

The operator runs as a subprocess, as the Deployment's ``trainrun-operator`` starts it (``python -m
trainrun.controller``, all namespaces), so it can be SIGKILLed and restarted.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from cluster.harness import KubeCluster, Outcome, pod_behaviour, wait_until, write_cri_log
from runs import (
    JOB_LABEL,
    REPO,
    OperatorProcess,
    condition,
    events_of,
    get_run,
    kubectl_apply,
    operator,
    training_run,
    wait_for_phase,
)

pytestmark = pytest.mark.cluster
__all__ = ["operator"]  # a fixture, used by name

def test_a_run_walks_queued_preparing_running_completed_on_the_a100_pool(
    kube_cluster: KubeCluster, operator: OperatorProcess, kube_namespace: str
) -> None:
    namespace = kube_namespace
    annotations = {**pod_behaviour(Outcome.SUCCEED, after="8s"), "kwok.trainrun.dev/start-after": "3s"}
    document = training_run(
        "resnet", namespace, resources={"pool": "a100", "gpus": 8}, podMetadata={"annotations": annotations}
    )
    kubectl_apply(kube_cluster, document)
    seen: list[str] = []
    wait_for_phase(kube_cluster, operator, "resnet", namespace, "Running", seen=seen)
    table = kube_cluster.kubectl("get", "tr", "resnet", "-n", namespace).stdout
    assert table.split("\n")[0].split() == ["NAME", "PHASE", "POOL", "WORKERS", "GPUS", "METRIC", "PROGRESS", "ETA", "AGE"]
    assert table.split("\n")[1].split()[:5] == ["resnet", "Running", "a100", "1", "8"]

    pods = kube_cluster.list_objects("pods", namespace, f"{JOB_LABEL}=resnet")
    assert sorted(pod["metadata"]["name"] for pod in pods) == ["resnet-master-0", "resnet-worker-0"]
    for pod in pods:
        node = kube_cluster.get("node", pod["spec"]["nodeName"])
        assert node is not None and node["metadata"]["labels"]["trainrun.dev/pool"] == "a100"
        container = pod["spec"]["containers"][0]
        assert container["name"] == "pytorch" and container["resources"]["limits"]["nvidia.com/gpu"] == "8"
        env = {item["name"]: item.get("value") for item in container["env"]}
        assert env["WORLD_SIZE"] == "16" and env["PET_NPROC_PER_NODE"] == "8" and env["PET_NNODES"] == "2" and env["MASTER_ADDR"] == "resnet-master-0"

    run = wait_for_phase(kube_cluster, operator, "resnet", namespace, "Completed", seen=seen)
    assert seen[0] == "Queued" or seen[0] == "Preparing", seen
    assert seen[-2:] == ["Running", "Completed"], seen
    assert "Preparing" in seen, seen
    assert condition(run, "Ready")["status"] == "True"
    assert condition(run, "Reconciling")["status"] == "False"
    assert condition(run, "Stalled")["status"] == "False"
    assert all(item["observedGeneration"] == run["metadata"]["generation"] for item in run["status"]["conditions"])
    assert run["status"]["jobName"] == "resnet" and run["status"]["masterPod"] == "resnet-master-0"
    reasons = [event["reason"] for event in events_of(kube_cluster, "resnet", namespace)]
    assert "Running" in reasons and "Completed" in reasons, reasons
    job = kube_cluster.get("pytorchjob", "resnet", namespace)
    assert job is not None and job["metadata"]["ownerReferences"][0]["uid"] == run["metadata"]["uid"]
    # The operator's own Prometheus metrics saw it too.
    samples = scrape(operator.metrics_url)
    assert samples[("trainrun_phase_changes_total", (("phase", "Completed"),))] >= 1
    assert samples[("trainrun_phase_changes_total", (("phase", "Running"),))] >= 1
    assert sum(value for (name, labels), value in samples.items()
               if name == "trainrun_reconciles_total" and ("result", "ok") in labels) >= 3
    assert samples[("trainrun_reconcile_duration_seconds_count", ())] >= 3
    assert ("trainrun_log_followers", ()) in samples


def thread_count(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no Threads line in /proc/{pid}/status")


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples at a Prometheus endpoint, by (name, sorted labels)."""
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    with urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.parametrize(
    ("outcome", "words"),
    [(pod_behaviour(Outcome.FAIL, after="2s", exit_code=3), "exited with code 3"), (pod_behaviour(Outcome.OOM, after="2s"), "OOMKilled")],
    ids=["exit-code", "oom"],
)
def test_a_failing_replica_fails_the_run_naming_it(
    kube_cluster: KubeCluster, operator: OperatorProcess, kube_namespace: str, outcome: dict[str, str], words: str
) -> None:
    namespace = kube_namespace
    document = training_run(
        "broken",
        namespace,
        runPolicy={"restartPolicy": "Never", "backoffLimit": 0},
        resources={"memory": "2Gi"},
        podMetadata={"annotations": outcome},
    )
    kubectl_apply(kube_cluster, document)
    run = wait_for_phase(kube_cluster, operator, "broken", namespace, "Failed")
    message = run["status"]["message"]
    assert words in message, message
    assert "master-0" in message or "worker-0" in message, message
    assert condition(run, "Stalled")["status"] == "True"
    assert condition(run, "Ready")["status"] == "False"
    assert any(event["type"] == "Warning" and event["reason"] != "" for event in events_of(kube_cluster, "broken", namespace))


def test_spec_changes_wait_for_suspend_and_resume(kube_cluster: KubeCluster, operator: OperatorProcess, kube_namespace: str) -> None:
    namespace = kube_namespace
    document = training_run("elastic", namespace, podMetadata={"annotations": pod_behaviour(Outcome.RUN)})
    kubectl_apply(kube_cluster, document)
    wait_for_phase(kube_cluster, operator, "elastic", namespace, "Running")
    document["spec"]["distribution"] = {"workers": 2}
    kubectl_apply(kube_cluster, document)

    def pending() -> dict[str, Any] | None:
        run = get_run(kube_cluster, "elastic", namespace)
        return run if run["status"].get("pendingChanges") == ["spec.distribution.workers"] else None

    run = wait_until(pending, timeout=60, what="the worker change reported as pending")
    assert "spec.distribution.workers" in condition(run, "Reconciling")["message"]
    job = kube_cluster.get("pytorchjob", "elastic", namespace)
    assert job is not None and job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1  # not applied to live pods

    document["spec"]["runPolicy"] = {"suspend": True}
    kubectl_apply(kube_cluster, document)
    wait_for_phase(kube_cluster, operator, "elastic", namespace, "Suspended")
    wait_until(lambda: not kube_cluster.list_objects("pods", namespace, f"{JOB_LABEL}=elastic"), timeout=60, what="pods gone")
    document["spec"]["runPolicy"] = {"suspend": False}
    kubectl_apply(kube_cluster, document)
    wait_for_phase(kube_cluster, operator, "elastic", namespace, "Running", timeout=120)
    pods = kube_cluster.wait_for_pods(namespace, f"{JOB_LABEL}=elastic", count=3, timeout=60)
    assert sorted(pod["metadata"]["name"] for pod in pods) == ["elastic-master-0", "elastic-worker-0", "elastic-worker-1"]
    assert get_run(kube_cluster, "elastic", namespace)["status"].get("pendingChanges", []) == []
    kube_cluster.kubectl("delete", "tr", "elastic", "-n", namespace, "--wait=false")


def test_cancel_stops_the_replicas_for_good(kube_cluster: KubeCluster, operator: OperatorProcess, kube_namespace: str) -> None:
    namespace = kube_namespace
    document = training_run("stopme", namespace, podMetadata={"annotations": pod_behaviour(Outcome.RUN)})
    kubectl_apply(kube_cluster, document)
    wait_for_phase(kube_cluster, operator, "stopme", namespace, "Running")
    kube_cluster.kubectl("patch", "tr", "stopme", "-n", namespace, "--type=merge", "-p", '{"spec": {"cancel": true}}')
    run = wait_for_phase(kube_cluster, operator, "stopme", namespace, "Cancelled")
    wait_until(lambda: not kube_cluster.list_objects("pods", namespace, f"{JOB_LABEL}=stopme"), timeout=60, what="pods gone")
    assert condition(run, "Reconciling")["status"] == "False"


@pytest.mark.parametrize("sample", sorted((REPO / "manifests" / "samples").glob("*.yaml")), ids=lambda path: path.name)
def test_every_sample_is_accepted_by_the_api_server(kube_cluster: KubeCluster, kube_namespace: str, sample: Path) -> None:
    result = kube_cluster.kubectl("apply", "--dry-run=server", "-n", kube_namespace, "-f", str(sample))
    assert "trainingrun.trainrun.dev/" in result.stdout or "trainingsweep.trainrun.dev/" in result.stdout, result.stdout


def test_no_node_with_enough_gpus_stays_queued_naming_the_pool(
    kube_cluster: KubeCluster, operator: OperatorProcess, kube_namespace: str
) -> None:
    namespace = kube_namespace
    # Five replicas of 8 GPUs on a pool of four 8-GPU nodes: one can never be placed.
    document = training_run(
        "toobig",
        namespace,
        distribution={"workers": 4},
        resources={"pool": "a100", "gpus": 8},
        podMetadata={"annotations": pod_behaviour(Outcome.RUN)},
    )
    kubectl_apply(kube_cluster, document)

    def unschedulable() -> dict[str, Any] | None:
        run = get_run(kube_cluster, "toobig", namespace)
        status = run.get("status", {})
        return run if status.get("phase") == "Queued" and status.get("reason") == "Unschedulable" else None

    run = wait_until(unschedulable, timeout=90, what="an Unschedulable Queued run")
    assert "a100" in run["status"]["message"] and "nvidia.com/gpu" in run["status"]["message"], run["status"]["message"]
    kube_cluster.kubectl("delete", "tr", "toobig", "-n", namespace, "--wait=false")


def test_delete_garbage_collects_the_job_and_pods(kube_cluster: KubeCluster, operator: OperatorProcess, kube_namespace: str) -> None:
    namespace = kube_namespace
    kubectl_apply(kube_cluster, training_run("doomed", namespace, podMetadata={"annotations": pod_behaviour(Outcome.RUN)}))
    wait_for_phase(kube_cluster, operator, "doomed", namespace, "Running")
    kube_cluster.kubectl("delete", "tr", "doomed", "-n", namespace, "--timeout=60s")
    wait_until(lambda: kube_cluster.get("pytorchjob", "doomed", namespace) is None, timeout=60, what="the PyTorchJob to go")
    wait_until(lambda: not kube_cluster.list_objects("pods", namespace, f"{JOB_LABEL}=doomed"), timeout=60, what="the pods to go")


def test_operator_killed_mid_run_finishes_the_run_with_one_job(
    kube_cluster: KubeCluster, operator: OperatorProcess, kube_namespace: str
) -> None:
    namespace = kube_namespace
    kubectl_apply(kube_cluster, training_run("survivor", namespace, podMetadata={"annotations": pod_behaviour(Outcome.SUCCEED, after="15s")}))
    wait_for_phase(kube_cluster, operator, "survivor", namespace, "Running")
    job = kube_cluster.get("pytorchjob", "survivor", namespace)
    assert job is not None
    first_uid = job["metadata"]["uid"]
    operator.kill()
    operator.start()
    run = wait_for_phase(kube_cluster, operator, "survivor", namespace, "Completed", timeout=120)
    jobs = kube_cluster.list_objects("pytorchjobs", namespace)
    assert [item["metadata"]["uid"] for item in jobs] == [first_uid]
    assert run["status"]["phase"] == "Completed"


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"resources": {"pool": "h100"}}, "spec.resources.pool: unknown pool 'h100'"),
        ({"metrics": [{"name": "loss", "regex": "loss=("}]}, "spec.metrics[0].regex"),
        ({"resources": {"pool": "t4", "gpus": 4}}, "spec.resources.gpus: 4 GPUs per replica"),
    ],
    ids=["unknown-pool", "bad-regex", "more-gpus-than-the-pool-has"],
)
def test_what_only_the_operator_can_judge_is_a_stalled_condition_not_a_crash(
    kube_cluster: KubeCluster, operator: OperatorProcess, kube_namespace: str, spec: dict[str, Any], words: str
) -> None:
    namespace = kube_namespace
    kubectl_apply(kube_cluster, training_run("lost", namespace, **spec))

    def stalled() -> dict[str, Any] | None:
        run = get_run(kube_cluster, "lost", namespace)
        conditions = {item["type"]: item for item in run.get("status", {}).get("conditions", [])}
        return run if conditions.get("Stalled", {}).get("status") == "True" else None

    run = wait_until(stalled, timeout=60, what="a Stalled condition")
    assert words in condition(run, "Stalled")["message"], condition(run, "Stalled")["message"]
    assert words in run["status"]["message"]
    assert condition(run, "Ready")["status"] == "False"
    assert kube_cluster.get("pytorchjob", "lost", namespace) is None
    assert operator.process is not None and operator.process.poll() is None


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"distribution": {"workers": -1}}, "spec.distribution.workers"),
        ({"resources": {"gpus": 1.5}}, "spec.resources.gpus"),
        ({"command": ["python"], "script": "train.py"}, "set either spec.command or spec.script"),
        ({"resources": {"gpus": 2}, "distribution": {"nprocPerNode": 4}}, "must not exceed spec.resources.gpus"),
        ({"runPolicy": {"restartPolicy": "Sometimes"}}, "spec.runPolicy.restartPolicy"),
        ({"resources": {"memory": "lots"}}, "spec.resources.memory"),
        ({"image": None}, "spec.image"),
    ],
)
def test_the_api_server_refuses_invalid_runs(kube_cluster: KubeCluster, kube_namespace: str, spec: dict[str, Any], words: str) -> None:
    namespace = kube_namespace
    document = training_run("invalid", namespace, **spec)
    if spec.get("image", "") is None:
        del document["spec"]["image"]
    result = kubectl_apply(kube_cluster, document, check=False)
    assert result.returncode != 0
    assert words in result.stderr, result.stderr


def test_kubectl_explain_and_wide_output(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    namespace = kube_namespace
    explained = kube_cluster.kubectl("explain", "trainingrun.spec").stdout
    for field in ("distribution", "hyperparameters", "resources", "runPolicy", "output", "metrics"):
        assert field in explained
    assert "Node pool by name" in kube_cluster.kubectl("explain", "trainingrun.spec.resources.pool").stdout
    kubectl_apply(kube_cluster, training_run("wide", namespace, runPolicy={"suspend": True}))
    wide = kube_cluster.kubectl("get", "tr", "-n", namespace, "-o", "wide").stdout
    assert wide.split("\n")[0].split() == ["NAME", "PHASE", "POOL", "WORKERS", "GPUS", "METRIC", "PROGRESS", "ETA", "AGE", "JOB", "MODEL", "VERSION", "MESSAGE"]


def test_readme_install_command_applies_the_manifests(kube_cluster: KubeCluster) -> None:
    result = kube_cluster.kubectl("apply", "--server-side", "-k", str(REPO / "manifests"))
    assert "customresourcedefinition.apiextensions.k8s.io/trainingruns.trainrun.dev serverside-applied" in result.stdout
    for kind, name in [("clusterrole", "trainrun-operator"), ("clusterrolebinding", "trainrun-operator")]:
        assert kube_cluster.get(kind, name) is not None
    deployment = kube_cluster.get("deployment", "trainrun-operator", "trainrun-system")
    assert deployment is not None
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    # The operator's console script (pyproject's [project.scripts]: python -m trainrun.controller), all namespaces.
    assert container["command"][0] == "trainrun-operator", container["command"]
    assert kube_cluster.get("serviceaccount", "trainrun-operator", "trainrun-system") is not None
    # The install must leave the test cluster's operator configuration as the tests expect it.
    kube_cluster.kubectl("delete", "deployment", "trainrun-operator", "-n", "trainrun-system")


def test_replica_logs_become_status_metrics_while_the_run_trains(
    kube_cluster: KubeCluster, operator: OperatorProcess, kube_namespace: str, tmp_path: Path
) -> None:
    namespace = kube_namespace
    master_log = write_cri_log(
        tmp_path / "master.log",
        ["starting", 'trainrun:metric {"epoch": 1, "step": 10, "train_loss": 0.9}', 'trainrun:metric {"epoch": 1, "val_loss": 0.45}'],
    )
    worker_log = write_cri_log(tmp_path / "worker.log", ["worker up", "throughput: 812.5 img/s"])
    kube_cluster.serve_pod_log(namespace, "logs-master-0", master_log)
    kube_cluster.serve_pod_log(namespace, "logs-worker-0", worker_log)
    document = training_run(
        "logs",
        namespace,
        metrics=[{"name": "worker_throughput", "regex": r"throughput: ([0-9.]+)"}],
        podMetadata={"annotations": pod_behaviour(Outcome.RUN)},
    )
    kubectl_apply(kube_cluster, document)

    def metrics_reported(expected: dict[str, float]) -> dict[str, Any] | None:
        run = get_run(kube_cluster, "logs", namespace)
        metrics = run.get("status", {}).get("metrics", {})
        return run if all(metrics.get(name) == value for name, value in expected.items()) else None

    run = wait_until(
        lambda: metrics_reported({"train_loss": 0.9, "val_loss": 0.45, "worker_throughput": 812.5}),
        timeout=90,
        what="metrics from both replicas' logs in status",
    )
    assert run["status"]["keyMetric"] == "val_loss=0.45"
    assert "val_loss=0.45" in kube_cluster.kubectl("get", "tr", "logs", "-n", namespace).stdout
    # Lines written later arrive through the same follow stream.
    write_cri_log(master_log, ['trainrun:metric {"epoch": 2, "val_loss": 0.31}'], append=True)
    run = wait_until(lambda: metrics_reported({"val_loss": 0.31}), timeout=60, what="a metric appended to a followed log")
    assert run["status"]["keyMetric"] == "val_loss=0.31"
    kube_cluster.kubectl("delete", "tr", "logs", "-n", namespace, "--wait=false")


def test_many_active_runs_keep_the_operator_thread_count_flat(
    kube_cluster: KubeCluster, operator: OperatorProcess, kube_namespace: str, tmp_path: Path
) -> None:
    """Each active run has a log follower for its whole life; its waiting runs on the event loop, so the
    operator's thread count does not grow with the number of runs (and no run waits for a free thread)."""
    count = 20
    kube_cluster.serve_namespace_logs(kube_namespace, write_cri_log(tmp_path / "replica.log", ["step=1 loss=0.5"]))
    documents = [
        training_run(
            f"many-{index}",
            kube_namespace,
            distribution={"workers": 0},
            resources={"pool": "cpu", "cpu": "100m", "memory": "64Mi"},
            podMetadata={"annotations": pod_behaviour(Outcome.RUN)},
        )
        for index in range(count)
    ]
    kube_cluster.apply(*documents)
    threads: list[int] = []

    def all_running() -> bool:
        threads.append(thread_count(operator.pid))
        runs = kube_cluster.list_objects("trainingruns", kube_namespace)
        return sum(run.get("status", {}).get("phase") == "Running" for run in runs) == count

    wait_until(all_running, timeout=240, what=f"{count} TrainingRuns Running", interval=1)
    for _ in range(5):  # the log followers of all of them are up by now
        time.sleep(1)
        threads.append(thread_count(operator.pid))
    assert max(threads) < 12, f"operator threads while {count} runs went to Running: {threads}"
    kube_cluster.kubectl("delete", "trainingruns", "--all", "-n", kube_namespace, "--wait=false")
