"""Apply -> first training step on a real node: the quick start as a TrainingRun vs the same job applied directly,
on each backend.

Starts the local control plane with the real node (tests/cluster/node.sh: a kubelet, containerd and runc, the
images of images.sh imported, so every image is present) and JobSet + Kubeflow Trainer v2 (up.sh's add-on
trainer). The run is the quick start sample (manifests/samples/quickstart.yaml: a Master and a Worker, torchrun,
the built-in trainer) without an output, so nothing but the start is measured. For each backend and repeat,
interleaved:

  direct:    the job ``trainrun render`` prints for it (a PyTorchJob, or a TrainJob of the runtime
             trainrun-torch), applied with kubectl and no operator running;
  trainrun:  the TrainingRun applied with kubectl, the operator running (started and leading before the clock).

The clock starts just before ``kubectl apply`` and stops at the Master's first metric line (the sample prints
one every 8 steps), by the container runtime's timestamp of that line. Between measurements the job or run is
deleted and its pods are gone. Needs root (the real node).

Where the time goes, from two watches the bench holds open (jobs and pods of the namespace): apply -> the job
exists (the operator's own share: it sees the run, renders and applies the job; for a direct job, the apply
itself), -> the Master's pod is created (the training-operator, or Trainer, JobSet and the Job controller), ->
the Master's container runs (scheduling, the kubelet, containerd: the node's share), -> its first metric line
(torch's import, torchrun's rendezvous, the first 8 steps: the program's share).

Usage: python tests/bench/bench_realnode_startup.py [--repeats 3] [--backend PyTorchJob TrainJob]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "integration"), str(REPO / "operator")]

from cluster.harness import Addon, ClusterError, KubeCluster, node_images, start_cluster, stop_cluster, wait_until  # noqa: E402
from runs import OPERATOR_NAMESPACE, OperatorProcess, set_backend  # noqa: E402
from trainrun.render.backend import BACKENDS  # noqa: E402
from trainrun.spec import parse_operator_config, validate_training_run  # noqa: E402
from trainrun.spec.config import CONFIG_MAP_KEY, CONFIG_MAP_NAME  # noqa: E402
from trainrun.status.observe import replica_name  # noqa: E402

QUICKSTART = REPO / "manifests" / "samples" / "quickstart.yaml"
OVERLAY_CONFIG = REPO / "tests" / "realpod" / "operator-overlay" / "config.yaml"
NAMESPACE = "bench-start"
METRIC_LINE = "trainrun:metric "
TIMEOUT_S = 900.0


def quickstart(name: str) -> dict[str, Any]:
    document = dict(yaml.safe_load(QUICKSTART.read_text()))
    document["metadata"] = {"name": name, "namespace": NAMESPACE}
    return document


def direct_job(cluster: KubeCluster, document: dict[str, Any], backend: str) -> dict[str, Any]:
    """The job the operator would create for DOCUMENT (the cluster's operator configuration, this backend)."""
    found = cluster.get("configmap", CONFIG_MAP_NAME, OPERATOR_NAMESPACE)
    assert found is not None
    config = parse_operator_config(yaml.safe_load(found["data"][CONFIG_MAP_KEY])).model_copy(update={"backend": backend})
    job = BACKENDS[backend].render_job(validate_training_run(document, config), config)
    job["metadata"].pop("ownerReferences", None)
    return job


def first_metric_seconds(cluster: KubeCluster, applied_at: float) -> float:
    """Seconds from APPLIED_AT (Unix time) to the Master's first metric line, waiting for it."""

    def first_line() -> float | None:
        masters = [pod for pod in cluster.list_objects("pods", NAMESPACE) if replica_name(pod) == "master-0"]
        running = [pod for pod in masters if (pod.get("status") or {}).get("phase") in ("Running", "Succeeded")]
        if not running:
            return None
        logs = cluster.kubectl("logs", running[0]["metadata"]["name"], "-n", NAMESPACE, "--timestamps", check=False).stdout
        stamp = next((line.split(" ", 1)[0] for line in logs.splitlines() if METRIC_LINE in line), None)
        return None if stamp is None else datetime.fromisoformat(stamp).timestamp() - applied_at

    return float(wait_until(first_line, timeout=TIMEOUT_S, what="the Master's first metric line", interval=0.5))


def clean(cluster: KubeCluster) -> None:
    kinds = "trainingruns,pytorchjobs,trainjobs"
    cluster.kubectl("delete", kinds, "--all", "-n", NAMESPACE, "--wait=true", timeout=300)
    wait_until(lambda: not cluster.list_objects("pods", NAMESPACE), timeout=300, what="the pods to go", interval=1)


JOB_PLURALS = {"PyTorchJob": ("kubeflow.org", "v1", "pytorchjobs"), "TrainJob": ("trainer.kubeflow.org", "v1alpha1", "trainjobs")}


@dataclass(frozen=True)
class Timing:
    """Seconds from the apply to each step of one start."""

    job_created: float
    master_created: float
    master_running: float
    first_metric: float


class FirstSeen:
    """One watch of the bench namespace in a thread: when (time.time()) an object first matched."""

    def __init__(self, lister: Callable[..., Any], matches: Callable[[dict[str, Any]], bool]) -> None:
        self.lister, self.matches = lister, matches
        self.at: float | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        from kubernetes import watch

        follower = watch.Watch(return_type="object")
        self.ready.set()
        for event in follower.stream(self.lister, NAMESPACE, timeout_seconds=int(TIMEOUT_S), deserialize=False):
            if event["type"] in ("ADDED", "MODIFIED") and self.matches(event["object"]):
                self.at = time.time()
                follower.stop()
                return


def is_master(pod: dict[str, Any]) -> bool:
    return replica_name(pod) == "master-0"


def master_runs(pod: dict[str, Any]) -> bool:
    states = (pod.get("status") or {}).get("containerStatuses") or []
    return is_master(pod) and any("running" in (item.get("state") or {}) or "terminated" in (item.get("state") or {}) for item in states)


def measure(cluster: KubeCluster, document: dict[str, Any], backend: str) -> Timing:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    jobs = FirstSeen(
        lambda namespace, **query: client.CustomObjectsApi(api).list_namespaced_custom_object(
            *JOB_PLURALS[backend][:2], namespace, JOB_PLURALS[backend][2], **query
        ),
        lambda job: True,
    )
    pods = [FirstSeen(lambda namespace, **query: client.CoreV1Api(api).list_namespaced_pod(namespace, **query), test)
            for test in (is_master, master_runs)]
    for watcher in (jobs, *pods):
        watcher.ready.wait()
    time.sleep(1.0)  # the watches are open
    applied_at = time.time()
    cluster.apply(document, server_side=True)
    took = first_metric_seconds(cluster, applied_at)
    for watcher in (jobs, *pods):
        watcher.thread.join(timeout=30)
    seen = [watcher.at - applied_at if watcher.at is not None else float("nan") for watcher in (jobs, *pods)]
    clean(cluster)
    return Timing(*seen, first_metric=took)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", nargs="+", choices=sorted(BACKENDS), default=sorted(BACKENDS))
    arguments = parser.parse_args()
    cluster = start_cluster(real_node_images=node_images(), addons=(Addon.TRAINER,))
    work = Path(f"/tmp/bench-realnode-{cluster.name}")
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, list[Timing]]] = {}
    try:
        cluster.kubectl("apply", "-f", str(OVERLAY_CONFIG))
        cluster.create_namespace(NAMESPACE)
        for backend in arguments.backend:
            set_backend(cluster, backend)
            times = results.setdefault(backend, {"direct": [], "trainrun": []})
            measure(cluster, direct_job(cluster, quickstart("warm-up"), backend), backend)  # the page cache, torch's first import
            for repeat in range(arguments.repeats):
                times["direct"].append(measure(cluster, direct_job(cluster, quickstart(f"direct-{repeat}"), backend), backend))
                operator = OperatorProcess(cluster, work / f"operator-{backend}-{repeat}.log")
                operator.start()
                try:
                    operator.wait_until_leader(timeout=120)
                    times["trainrun"].append(measure(cluster, quickstart(f"trainrun-{repeat}"), backend))
                finally:
                    operator.stop()
                if operator.tracebacks():
                    raise ClusterError(f"a traceback in the operator's output: {operator.log_path}")
                print(
                    f"{backend} repeat {repeat + 1}: direct {steps(times['direct'][-1])}; TrainingRun {steps(times['trainrun'][-1])}",
                    flush=True,
                )
    finally:
        stop_cluster(cluster.name)
    print("\napply -> the Master's first metric line (step 8) of the quick start on the real node; medians")
    print(f"{'backend':12} {'direct job':>11} {'TrainingRun':>12} {'ratio':>7}  repeats")
    for backend, times in results.items():
        direct, through = (statistics.median([item.first_metric for item in times[side]]) for side in ("direct", "trainrun"))
        print(f"{backend:12} {direct:10.1f}s {through:11.1f}s {through / direct:7.2f}  {len(times['direct'])}")
    print("\nwhere it goes (medians of each step's seconds): job created | Master pod created | Master runs | first metric line")
    for backend, times in results.items():
        for side in ("direct", "trainrun"):
            parts = [statistics.median([getattr(item, name) for item in times[side]]) for name in Timing.__dataclass_fields__]
            shares = [parts[0], *(later - earlier for earlier, later in zip(parts, parts[1:], strict=False))]
            print(f"{backend:12} {side:9} " + " | ".join(f"{share:5.1f}s" for share in shares))


def steps(timing: Timing) -> str:
    return (
        f"job {timing.job_created:.1f} s, Master pod {timing.master_created:.1f} s, runs {timing.master_running:.1f} s, "
        f"first metric {timing.first_metric:.1f} s"
    )


if __name__ == "__main__":
    main()
