"""Time to Running for many runs at once: TrainingRuns through the operator vs the same PyTorchJobs applied directly.

Starts the local control plane (tests/cluster: etcd, kube-apiserver, scheduler, controller-manager, kwok,
the real training-operator), then, in the same cluster, for N runs of 1 Master + 1 Worker on the cpu pool:

  baseline:  the N PyTorchJobs that `trainrun render` makes, applied in one `kubectl apply`; the clock
             stops when every replica pod is Running (what the training-operator and kwok cost);
  trainrun:  the N TrainingRuns applied in one `kubectl apply` with the operator running; the clock
             stops when every replica pod is Running, and again when every TrainingRun says Running
             (what the operator adds: its reconcile, server-side applies and status).

Every pod's log is served by kwok, so the operator follows 2N log streams while it works. Also printed:
the operator's CPU seconds, peak RSS and thread count at the end. Ratios are against the baseline.
Usage: python tests/bench/bench_operator_scale.py [--runs 40] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "integration"), str(REPO / "operator")]

from cluster.harness import (  # noqa: E402
    KubeCluster,
    Outcome,
    build_binaries,
    pod_behaviour,
    start_cluster,
    stop_cluster,
    wait_until,
    write_cri_log,
)
from runs import OperatorProcess, training_run  # noqa: E402
from trainrun.client.documents import example_operator_config  # noqa: E402
from trainrun.render import render_pytorchjob  # noqa: E402
from trainrun.spec import validate_training_run  # noqa: E402

JOB_LABEL = "training.kubeflow.org/job-name"
TIMEOUT_S = 600.0


def run_documents(prefix: str, namespace: str, count: int) -> list[dict[str, Any]]:
    return [
        training_run(
            f"{prefix}-{index}",
            namespace,
            resources={"pool": "cpu", "cpu": "100m", "memory": "64Mi"},
            podMetadata={"annotations": pod_behaviour(Outcome.RUN)},
        )
        for index in range(count)
    ]


def direct_jobs(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the operator would create, without the owner reference (no TrainingRun owns them here)."""
    config = example_operator_config()
    jobs = []
    for document in documents:
        job = render_pytorchjob(validate_training_run(document, config), config)
        job["metadata"].pop("ownerReferences", None)
        jobs.append(job)
    return jobs


def running_pods(cluster: KubeCluster, namespace: str, prefix: str) -> int:
    pods = cluster.list_objects("pods", namespace)
    return sum(
        1
        for pod in pods
        if pod["metadata"].get("labels", {}).get(JOB_LABEL, "").startswith(f"{prefix}-")
        and pod.get("status", {}).get("phase") == "Running"
    )


def running_runs(cluster: KubeCluster, namespace: str, prefix: str) -> int:
    runs = cluster.list_objects("trainingruns", namespace)
    return sum(
        1
        for run in runs
        if run["metadata"]["name"].startswith(f"{prefix}-") and run.get("status", {}).get("phase") == "Running"
    )


def reach(counter: Callable[[], int], target: int, what: str) -> None:
    """Poll counter until it reaches target."""
    wait_until(lambda: counter() >= target, timeout=TIMEOUT_S, what=what, interval=0.2)


def timed_apply(cluster: KubeCluster, objects: list[dict[str, Any]]) -> float:
    started = time.monotonic()
    cluster.apply(*objects, server_side=True)
    return started


def proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def clean(cluster: KubeCluster, namespace: str) -> None:
    cluster.kubectl("delete", "trainingruns,pytorchjobs", "--all", "-n", namespace, "--wait=true", timeout=300)
    wait_until(lambda: not cluster.list_objects("pods", namespace), timeout=300, what="pods to go", interval=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    arguments = parser.parse_args()
    count = arguments.runs
    build_binaries()
    cluster = start_cluster()
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    operator = OperatorProcess(cluster, work / "operator.log")
    try:
        namespace = "bench"
        cluster.create_namespace(namespace)
        cluster.serve_namespace_logs(namespace, write_cri_log(work / "replica.log", ["step=1 loss=0.5"]))
        operator.start()
        assert operator.process is not None
        pid = operator.process.pid
        baseline: list[float] = []
        through_pods: list[float] = []
        through_status: list[float] = []
        operator_cpu: list[float] = []
        for repeat in range(arguments.repeats):
            prefix = f"direct{repeat}"
            started = timed_apply(cluster, direct_jobs(run_documents(prefix, namespace, count)))
            reach(partial(running_pods, cluster, namespace, prefix), 2 * count, "direct pods Running")
            baseline.append(time.monotonic() - started)
            clean(cluster, namespace)

            prefix = f"trainrun{repeat}"
            cpu_before = cpu_seconds(pid)
            started = timed_apply(cluster, run_documents(prefix, namespace, count))
            reach(partial(running_pods, cluster, namespace, prefix), 2 * count, "the operator's pods Running")
            through_pods.append(time.monotonic() - started)
            reach(partial(running_runs, cluster, namespace, prefix), count, "TrainingRuns Running")
            through_status.append(time.monotonic() - started)
            operator_cpu.append(cpu_seconds(pid) - cpu_before)
            status = proc_status(pid)
            print(
                f"repeat {repeat + 1}: direct {baseline[-1]:.1f} s, trainrun pods {through_pods[-1]:.1f} s, "
                f"TrainingRuns Running {through_status[-1]:.1f} s, operator CPU {operator_cpu[-1]:.1f} s, "
                f"RSS {status['VmRSS']}, threads {status['Threads']}",
                flush=True,
            )
            clean(cluster, namespace)
        status = proc_status(pid)
        direct = statistics.median(baseline)
        print(f"\n{count} runs x 2 replicas, medians of {arguments.repeats} (2-core machine, whole control plane on it)")
        print(f"{'path':44} {'seconds':>8} {'ratio':>7}")
        print(f"{'PyTorchJobs applied directly -> pods Running':44} {direct:8.1f} {1.0:7.2f}")
        print(f"{'TrainingRuns -> pods Running':44} {statistics.median(through_pods):8.1f} "
              f"{statistics.median(through_pods) / direct:7.2f}")
        print(f"{'TrainingRuns -> every run reports Running':44} {statistics.median(through_status):8.1f} "
              f"{statistics.median(through_status) / direct:7.2f}")
        print(f"operator: {statistics.median(operator_cpu):.1f} CPU s per {count} runs, peak RSS {status['VmHWM']}, "
              f"threads now {status['Threads']}")
    finally:
        operator.stop()
        stop_cluster(cluster.name)


if __name__ == "__main__":
    main()
