"""Many runs at once: TrainingRuns through the operator vs the same jobs (PyTorchJobs, or TrainJobs with
``--backend TrainJob``) applied directly.

Starts the local control plane (tests/cluster: etcd, kube-apiserver, scheduler, controller-manager, kwok,
the real training-operator), adds M simulated 8-GPU nodes to the a100 pool (labels, taint and annotations
as in tests/cluster/nodes.yaml; deleted at the end), then, in the same cluster, for N runs of 1 Master +
W Workers with 1 GPU per replica:

  baseline:  the N PyTorchJobs that the operator would create (``trainrun.render``), applied in one
             server-side apply with no operator running; the clocks stop when every replica pod is
             Running and when every PyTorchJob reports Running (what the training-operator and kwok cost);
  trainrun:  the N TrainingRuns applied the same way with the operator running (started fresh and
             ready before the clock starts); the clocks stop when every replica pod is Running and when
             every TrainingRun's status says Running (what the operator adds).

Every pod's log is served by kwok (one ClusterLogs for the namespace), so the operator follows every
replica's stream while it works. The bench watches pods, PyTorchJobs and TrainingRuns (one watch each,
no polling of the API server), and samples the operator's /proc/PID/status every 0.2 s: peak RSS
(VmHWM), peak thread count, CPU seconds (user+system) over the measured window. API requests per run:
``apiserver_request_total`` (every client: the operator, training-operator, scheduler, controller-manager,
kwok; the bench's own watches subtracted) scraped with ``kubectl get --raw /metrics`` before the apply and
once every run reports Running, divided by N; the request kinds that differ most are listed too.
Ratios are against the baseline.

With ``--backend TrainJob`` the cluster also runs JobSet and Kubeflow Trainer v2 (up.sh's add-on trainer),
the baseline applies the TrainJobs the operator would create (Trainer makes the JobSets, JobSet the Jobs),
and the operator's configuration chooses the TrainJob backend; a TrainJob has no Running condition, so
its "reports Running" is its JobSet's Job being active.

With ``--kueue`` the cluster also runs Kueue, a ClusterQueue holds every GPU of the extra nodes (so every run
can be admitted at once), and both sides' jobs carry its LocalQueue (the runs through ``resources.queue``):
Kueue suspends each job, admits it and lets it start; the bench also stops a clock when every job's Workload
is admitted.

With ``--finish-after S`` every replica succeeds S seconds after it starts, and the clocks run on until every
job (direct) or every TrainingRun (trainrun) has finished: the operator's CPU then covers whole lives (apply to
Completed, with the end of each run's logs read and its pods cleaned up). Either way the bench reports, per run,
the lag from its last replica pod Running to the run reporting Running, and (with --finish-after) from its job's
end to the run's final phase, as p50 / p99 / max; the times are when the bench's watches saw each change.
With --finish-after it also splits the operator's CPU by what its runs were doing: its CPU rate over 5 s windows
fitted (least squares) as a rate whatever they do, plus one per run waiting for its pods, one per run running, and
a cost per start or end; with how long a run waited and ran on average, that says how much of a run's CPU is
paid for the time it spends (which grows with the number of runs, the training-operator's pace being fixed) and
how much for what happens to it.

The operator's CPU is also measured for 20 s after it starts, before any run is applied (lease renewals and
its timers): the report gives that rate, its reconcile passes per run (its own trainrun_reconciles_total), and
the CPU per run less what the operator would have spent idle over the same time.

With ``--profile FILE`` py-spy (pip install py-spy) samples the operator while the runs go and writes its stacks
to FILE (folded, one "frame;...;frame count" a line): where the operator's CPU goes; its figures still count only
the operator's process, though sampling slows it a little.

With ``--tracemalloc FILE`` the operator traces its Python heap (``tracemalloc_peak/sitecustomize.py``) and
leaves at FILE a snapshot from within 4 MB of its peak; the bench then prints what held that memory: by the
operator's own line that allocated it (the innermost frame in ``operator/trainrun``) and the line that did, with
what imports hold apart. Tracing
doubles the operator's CPU and adds to its memory: its figures are not the untraced ones.

With ``--operator-only`` the direct baseline is not run (half the time): the operator's own figures only (its
CPU and memory, passes, the lags), which the baseline does not enter into.

Usage: python tests/bench/bench_operator_scale.py [--runs 100] [--workers 3] [--nodes M] [--repeats 1]
         [--backend PyTorchJob|TrainJob] [--kueue] [--finish-after SECONDS] [--profile FILE] [--tracemalloc FILE] [--operator-only]
         [--old-operator WORKTREE]    (an older checkout's operator: python -m trainrun.controller, or kopf run
                                      --standalone --all-namespaces where it has no such entry point)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "integration"), str(REPO / "operator")]

from cluster.harness import (  # noqa: E402
    GPU_RESOURCE,
    POOL_LABEL,
    Addon,
    ClusterError,
    KubeCluster,
    Outcome,
    build_binaries,
    pod_behaviour,
    start_cluster,
    stop_cluster,
    wait_until,
    write_cri_log,
)
from runs import OperatorProcess, set_backend, training_run  # noqa: E402
from trainrun.client.documents import example_operator_config  # noqa: E402
from trainrun.render.backend import BACKENDS  # noqa: E402
from trainrun.render.children import RUN_LABEL  # noqa: E402
from trainrun.spec import validate_training_run  # noqa: E402

REPLICA_LABEL = "app.kubernetes.io/component=replica"  # the replica pods of either backend
JOB_PLURALS = {"PyTorchJob": ("kubeflow.org", "v1", "pytorchjobs"), "TrainJob": ("trainer.kubeflow.org", "v1alpha1", "trainjobs")}
BENCH_NODE_LABEL = "bench.trainrun.dev/scale"
NAMESPACE = "bench"
GPUS_PER_NODE = 8
POOL = "a100"
TIMEOUT_S = 1800.0
IDLE_S = 20.0  # the operator's CPU is measured this long with no run, before the runs are applied
SAMPLE_S = 0.2
CPU_SAMPLE_S = 5.0  # the windows of the CPU's split by what the runs were doing (cpu_by_state)
Key = tuple[str, str, str]  # verb, resource, subresource


# --- the cluster: extra nodes, documents ---------------------------------------------------------


def bench_nodes(count: int) -> list[dict[str, Any]]:
    """COUNT kwok nodes like nodes.yaml's a100 pool (8 GPUs, the GPU taint, kwok's fake-node annotation)."""
    capacity = {"cpu": "96", "memory": "1000Gi", "pods": "110", GPU_RESOURCE: str(GPUS_PER_NODE)}
    return [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": f"bench-{POOL}-{index}",
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {
                    POOL_LABEL: POOL,
                    BENCH_NODE_LABEL: "true",
                    "kubernetes.io/hostname": f"bench-{POOL}-{index}",
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                    "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
                    "nvidia.com/gpu.count": str(GPUS_PER_NODE),
                },
            },
            "spec": {"taints": [{"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}]},
            "status": {"capacity": capacity, "allocatable": capacity},
        }
        for index in range(count)
    ]


def add_nodes(cluster: KubeCluster, count: int) -> None:
    nodes = bench_nodes(count)
    for start in range(0, len(nodes), 100):
        cluster.apply(*nodes[start : start + 100])
    cluster.kubectl("wait", "--for=condition=Ready", "node", "-l", BENCH_NODE_LABEL, "--timeout=300s", timeout=330)


def delete_nodes(cluster: KubeCluster) -> None:
    cluster.kubectl("delete", "nodes", "-l", BENCH_NODE_LABEL, "--wait=false", check=False, timeout=120)


def run_documents(
    prefix: str, count: int, workers: int, queue: str | None = None, finish_after: float | None = None
) -> list[dict[str, Any]]:
    resources: dict[str, Any] = {"pool": POOL, "gpus": 1, "cpu": "1", "memory": "4Gi"}
    if queue is not None:
        resources["queue"] = queue
    return [
        training_run(
            f"{prefix}-{index}",
            NAMESPACE,
            distribution={"workers": workers},
            resources=resources,
            podMetadata={
                "annotations": pod_behaviour(Outcome.RUN)
                if finish_after is None
                else pod_behaviour(Outcome.SUCCEED, after=f"{finish_after:g}s")
            },
        )
        for index in range(count)
    ]


def direct_jobs(documents: list[dict[str, Any]], backend: str) -> list[dict[str, Any]]:
    """What the operator would create, without the owner reference (no TrainingRun owns them here)."""
    config = example_operator_config().model_copy(update={"backend": backend})
    jobs = []
    for document in documents:
        job = BACKENDS[backend].render_job(validate_training_run(document, config), config)
        job["metadata"].pop("ownerReferences", None)
        jobs.append(job)
    return jobs


def kueue_queue(cluster: KubeCluster, gpus: int) -> str:
    """A ResourceFlavor of the a100 pool, a ClusterQueue of GPUS (and room in CPU and memory), and a LocalQueue
    in the bench namespace on it; the LocalQueue's name."""
    cluster.apply(
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": "bench-a100"},
         "spec": {"nodeLabels": {POOL_LABEL: POOL}}},
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "ClusterQueue",
            "metadata": {"name": "bench"},
            "spec": {
                "namespaceSelector": {},
                "resourceGroups": [
                    {
                        "coveredResources": ["cpu", "memory", GPU_RESOURCE],
                        "flavors": [
                            {
                                "name": "bench-a100",
                                "resources": [
                                    {"name": "cpu", "nominalQuota": str(2 * gpus)},
                                    {"name": "memory", "nominalQuota": f"{8 * gpus}Gi"},
                                    {"name": GPU_RESOURCE, "nominalQuota": str(gpus)},
                                ],
                            }
                        ],
                    }
                ],
            },
        },
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue", "metadata": {"name": "bench", "namespace": NAMESPACE},
         "spec": {"clusterQueue": "bench"}},
    )
    return "bench"


def apply_in_one_go(cluster: KubeCluster, objects: list[dict[str, Any]]) -> None:
    cluster.apply(*objects, server_side=True)


def clean(cluster: KubeCluster) -> None:
    kinds = "trainingruns,pytorchjobs" + (",trainjobs" if cluster.get("crd", "trainjobs.trainer.kubeflow.org") else "")
    cluster.kubectl("delete", kinds, "--all", "-n", NAMESPACE, "--wait=true", timeout=900)
    wait_until(lambda: not cluster.list_objects("pods", NAMESPACE), timeout=900, what="pods to go", interval=2)
    # The jobs' Services and EndpointSlices too, or their garbage collection is counted in the next window.
    for kind in ("services", "endpointslices"):
        wait_until(lambda kind=kind: not cluster.list_objects(kind, NAMESPACE), timeout=300, what=f"{kind} to go", interval=2)


# --- watching: pods, PyTorchJobs, TrainingRuns ---------------------------------------------------


class Watched:
    """The objects of one kind in the bench namespace, kept current by one watch in a thread."""

    def __init__(
        self,
        name: str,
        lister: Callable[..., Any],
        summary: Callable[[dict[str, Any]], bool],
        key: Callable[[dict[str, Any]], str] = lambda item: str(item["metadata"]["name"]),
    ) -> None:
        self.name = name
        self.lister = lister
        self.summary = summary  # object -> "counts" (e.g. the pod is Running)
        self.key = key  # object -> the name its run's prefix is matched against
        self.state: dict[str, bool] = {}
        self.became: dict[str, float] = {}  # key -> when (time.monotonic) the watch first saw it count
        self.runs: dict[str, str] = {}  # key -> the run it belongs to (its trainrun.dev/run label, else the key)
        self.lock = threading.Lock()
        self.requests = 0  # LIST and WATCH requests this made (subtracted from the API server's count)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"watch-{name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def count(self, prefix: str) -> int:
        """How many objects of this prefix have counted (once counted, an object that ends or goes still does)."""
        with self.lock:
            return sum(1 for name in self.became if name.startswith(f"{prefix}-"))

    def _see(self, item: dict[str, Any], at: float) -> None:
        name = self.key(item)
        counts = self.summary(item)
        self.state[name] = counts
        if counts:
            self.became.setdefault(name, at)
            self.runs[name] = str(((item["metadata"].get("labels") or {}).get(RUN_LABEL)) or name)

    def _loop(self) -> None:
        from kubernetes import watch

        while not self.stopped.is_set():
            try:
                self.requests += 1
                listing = json.loads(self.lister(NAMESPACE, _preload_content=False).data)
                with self.lock:
                    self.state = {}
                    for item in listing["items"]:
                        self._see(item, time.monotonic())
                self.requests += 1
                # Plain dicts, not the client's model classes: they would cost more CPU than the bench should.
                stream = watch.Watch(return_type="object").stream(
                    self.lister,
                    NAMESPACE,
                    resource_version=listing["metadata"]["resourceVersion"],
                    timeout_seconds=300,
                    deserialize=False,
                )
                for event in stream:
                    if self.stopped.is_set():
                        return
                    if event["type"] not in ("ADDED", "MODIFIED", "DELETED"):
                        continue
                    item = event["object"]
                    with self.lock:
                        if event["type"] == "DELETED":
                            self.state.pop(self.key(item), None)
                        else:
                            self._see(item, time.monotonic())
            except Exception as error:  # a dropped or expired watch: list again
                if not self.stopped.is_set():
                    print(f"  (watch of {self.name} restarts: {str(error).splitlines()[0][:120]})", file=sys.stderr)
                    time.sleep(0.5)


def pod_running(pod: dict[str, Any]) -> bool:
    """Running (or already past it: with --finish-after a pod may end before the last one runs)."""
    return (pod.get("status") or {}).get("phase") in ("Running", "Succeeded")


def job_running(job: dict[str, Any]) -> bool:
    """A PyTorchJob's Running condition; a TrainJob (which has none) with its JobSet's Job active; or finished."""
    status = job.get("status") or {}
    if job_finished(job):
        return True
    if job.get("kind") == "TrainJob":
        return any((item.get("active") or 0) > 0 for item in status.get("jobsStatus") or [])
    return any(item.get("type") == "Running" and item.get("status") == "True" for item in status.get("conditions") or [])


def job_finished(job: dict[str, Any]) -> bool:
    """The job's own word that it ended: a Succeeded or Failed condition (Complete or Failed on a TrainJob)."""
    ends = ("Complete", "Failed") if job.get("kind") == "TrainJob" else ("Succeeded", "Failed")
    return any(item.get("type") in ends and item.get("status") == "True" for item in (job.get("status") or {}).get("conditions") or [])


def run_running(run: dict[str, Any]) -> bool:
    return (run.get("status") or {}).get("phase") in ("Running", "Uploading", "Completed")


def run_finished(run: dict[str, Any]) -> bool:
    return (run.get("status") or {}).get("phase") in ("Completed", "Failed", "Cancelled")


def workload_admitted(workload: dict[str, Any]) -> bool:
    conditions = (workload.get("status") or {}).get("conditions") or []
    return any(item.get("type") == "Admitted" and item.get("status") == "True" for item in conditions)


def workload_owner(workload: dict[str, Any]) -> str:
    """The name of the job a Workload is Kueue's record of (its owner)."""
    owners = workload["metadata"].get("ownerReferences") or [{}]
    return str(owners[0].get("name") or workload["metadata"]["name"])


def watchers(cluster: KubeCluster, backend: str, kueue: bool) -> dict[str, Watched]:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    jobs = partial(custom.list_namespaced_custom_object, *JOB_PLURALS[backend][:2], plural=JOB_PLURALS[backend][2])
    runs = partial(custom.list_namespaced_custom_object, "trainrun.dev", "v1alpha1", plural="trainingruns")
    found = {
        "pods": Watched("pods", partial(core.list_namespaced_pod, label_selector=REPLICA_LABEL), pod_running),
        "jobs": Watched("jobs", jobs, job_running),
        "trainingruns": Watched("trainingruns", runs, run_running),
        "jobs finished": Watched("jobs finished", jobs, job_finished),
        "trainingruns finished": Watched("trainingruns finished", runs, run_finished),
    }
    if kueue:
        found["workloads"] = Watched(
            "workloads",
            partial(custom.list_namespaced_custom_object, "kueue.x-k8s.io", "v1beta2", plural="workloads"),
            workload_admitted,
            key=workload_owner,
        )
    for watched in found.values():
        watched.start()
    return found


# --- the operator's process and the API server's request counter --------------------------------


@dataclass
class ProcessSample:
    pid: int
    peak_threads: int = 0
    peak_rss_kb: int = 0
    cpu: list[tuple[float, float]] = field(default_factory=list)  # (time.monotonic(), CPU seconds) every CPU_SAMPLE_S
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                status = proc_status(self.pid)
                if not self.cpu or time.monotonic() - self.cpu[-1][0] >= CPU_SAMPLE_S:
                    self.cpu.append((time.monotonic(), cpu_seconds(self.pid)))
            except OSError:
                return
            self.peak_threads = max(self.peak_threads, int(status["Threads"]))
            self.peak_rss_kb = max(self.peak_rss_kb, int(status["VmHWM"].split()[0]))
            self.stop.wait(SAMPLE_S)


def proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def api_requests(cluster: KubeCluster) -> tuple[Counter[Key], Counter[Key]]:
    """apiserver_request_total by (verb, resource, subresource), summed over its other labels, and the same
    of apiserver_longrunning_requests (watches and log streams open now: the total counts them only once
    they end)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = cluster.kubectl("get", "--raw", "/metrics", timeout=120).stdout
    counts: Counter[Key] = Counter()
    open_now: Counter[Key] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name not in ("apiserver_request", "apiserver_longrunning_requests"):  # counters lose _total
            continue
        for sample in family.samples:
            if sample.name not in ("apiserver_request_total", "apiserver_longrunning_requests"):
                continue
            labels = sample.labels
            key = (labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""))
            (counts if sample.name == "apiserver_request_total" else open_now)[key] += int(sample.value)
    return counts, open_now


# --- one measurement ------------------------------------------------------------------------------


@dataclass
class Result:
    pods_running_s: float
    runs_running_s: float
    requests: Counter[Key]
    total_requests: int
    opened: dict[Key, int] = field(default_factory=dict)
    cpu_s: float | None = None
    peak_rss_mb: float | None = None
    peak_threads: int | None = None
    passes: float | None = None  # the operator's reconcile passes (trainrun_reconciles_total) over the measure
    watch_events: Counter[str] = field(default_factory=Counter)  # what its watches delivered meanwhile, by kind
    idle_cpu_per_s: float | None = None  # the operator's CPU seconds per second before any run (leases, resyncs)
    measured_s: float | None = None  # how long the measure ran (apply to the last clock)
    admitted_s: float | None = None  # every Workload admitted (with --kueue)
    finished_s: float | None = None  # every job (direct) or run (trainrun) finished (with --finish-after)
    running_lags: list[float] = field(default_factory=list)  # per run: its last pod Running -> it reports Running
    final_lags: list[float] = field(default_factory=list)  # per run: its job ended -> it reports its final phase
    by_state: StateCosts | None = None  # the operator's CPU split by what its runs were doing (cpu_by_state)


def measure(
    cluster: KubeCluster,
    watched: dict[str, Watched],
    objects: list[dict[str, Any]],
    prefix: str,
    pods: int,
    runs: int,
    run_kind: str,
    operator_pid: int | None,
    finish: bool = False,
) -> Result:
    own_before = sum(item.requests for item in watched.values())
    before, open_before = api_requests(cluster)
    sample = ProcessSample(operator_pid) if operator_pid is not None else None
    sampler = threading.Thread(target=sample.run, daemon=True) if sample is not None else None
    cpu_before = cpu_seconds(operator_pid) if operator_pid is not None else 0.0
    if sampler is not None:
        sampler.start()
    started = time.monotonic()
    apply_in_one_go(cluster, objects)
    pods_at = runs_at = None
    admitted_at = None if "workloads" in watched else 0.0
    deadline = started + TIMEOUT_S
    finished_at = None if finish else 0.0
    while pods_at is None or runs_at is None or admitted_at is None or finished_at is None:
        now = time.monotonic()
        if finished_at is None and watched[f"{run_kind} finished"].count(prefix) >= runs:
            finished_at = now - started
        if admitted_at is None and watched["workloads"].count(prefix) >= runs:
            admitted_at = now - started
        if pods_at is None and watched["pods"].count(prefix) >= pods:
            pods_at = now - started
        if runs_at is None and watched[run_kind].count(prefix) >= runs:
            runs_at = now - started
        if now > deadline:
            raise ClusterError(
                f"timed out after {TIMEOUT_S:.0f} s: {watched['pods'].count(prefix)}/{pods} pods Running, "
                f"{watched[run_kind].count(prefix)}/{runs} {run_kind} Running, "
                f"{watched[f'{run_kind} finished'].count(prefix)}/{runs} finished"
            )
        time.sleep(0.05)
    cpu_after = cpu_seconds(operator_pid) if operator_pid is not None else 0.0
    measured = time.monotonic() - started
    after, open_after = api_requests(cluster)
    own = sum(item.requests for item in watched.values()) - own_before
    requests = after - before
    opened = {key: open_after[key] - open_before[key] for key in open_after.keys() | open_before.keys()}
    result = Result(pods_at, runs_at, requests, sum(requests.values()) - own, {k: v for k, v in opened.items() if v})
    result.measured_s = measured
    result.admitted_s = admitted_at if "workloads" in watched else None
    result.finished_s = finished_at if finish else None
    if run_kind == "trainingruns":
        result.running_lags, result.final_lags = lags(watched, prefix)
    if sample is not None and sampler is not None:
        sample.stop.set()
        sampler.join()
        if finish and run_kind == "trainingruns":
            result.by_state = cpu_by_state(sample.cpu, watched, prefix, runs, started)
        result.cpu_s = cpu_after - cpu_before
        result.peak_rss_mb = sample.peak_rss_kb / 1024
        result.peak_threads = sample.peak_threads
    return result


@dataclass
class StateCosts:
    """The operator's CPU rate fitted, by least squares over the CPU_SAMPLE_S windows of a measure, as
    ``base + per_waiting * runs waiting + per_running * runs running + per_change * runs changing per second``:
    what a run costs while it waits for its pods, while it runs, and for each start or end, apart from one
    another. A run's whole cost grows with how long it waits and runs, which grows with the number of runs while
    the training-operator's pace is what it is: this says which share that is."""

    base_ms_per_s: float
    per_waiting_us_per_s: float
    per_running_us_per_s: float
    per_change_ms: float
    mean_waiting_s: float  # apply -> reports Running
    mean_running_s: float  # reports Running -> final phase
    windows: int
    r_squared: float


def cpu_by_state(
    cpu: list[tuple[float, float]], watched: dict[str, Watched], prefix: str, runs: int, applied_at: float
) -> StateCosts | None:
    import numpy

    with watched["trainingruns"].lock:
        running_at = {name: at for name, at in watched["trainingruns"].became.items() if name.startswith(f"{prefix}-")}
    with watched["trainingruns finished"].lock:
        finished_at = {name: at for name, at in watched["trainingruns finished"].became.items() if name.startswith(f"{prefix}-")}
    rows, rates = [], []
    for (start, cpu_start), (end, cpu_end) in zip(cpu, cpu[1:], strict=False):
        middle = (start + end) / 2
        running = sum(1 for at in running_at.values() if at <= middle)
        finished = sum(1 for at in finished_at.values() if at <= middle)
        changes = sum(1 for at in [*running_at.values(), *finished_at.values()] if start <= at < end)
        rows.append([1.0, runs - running, running - finished, changes / (end - start)])
        rates.append((cpu_end - cpu_start) / (end - start))
    if len(rows) < 8 or not running_at or not finished_at:
        return None
    matrix, target = numpy.array(rows), numpy.array(rates)
    fitted, *_ = numpy.linalg.lstsq(matrix, target, rcond=None)
    residual = float(((target - matrix @ fitted) ** 2).sum())
    total = float(((target - target.mean()) ** 2).sum()) or 1.0
    lives = [(finished_at[name] - running_at[name]) for name in finished_at if name in running_at]
    return StateCosts(
        base_ms_per_s=1000 * float(fitted[0]),
        per_waiting_us_per_s=1e6 * float(fitted[1]),
        per_running_us_per_s=1e6 * float(fitted[2]),
        per_change_ms=1000 * float(fitted[3]),
        mean_waiting_s=statistics.mean(at - applied_at for at in running_at.values()),
        mean_running_s=statistics.mean(lives) if lives else 0.0,
        windows=len(rows),
        r_squared=1 - residual / total,
    )


def lags(watched: dict[str, Watched], prefix: str) -> tuple[list[float], list[float]]:
    """Per run, as the bench's watches saw it: from its last replica pod Running to its status saying Running,
    and from its job's end to its status's final phase (seconds; the watches' own delays included)."""
    pods, running, job_ended, run_ended = (watched[name] for name in ("pods", "trainingruns", "jobs finished", "trainingruns finished"))
    last_pod: dict[str, float] = {}
    with pods.lock:
        for name, at in pods.became.items():
            if name.startswith(f"{prefix}-"):
                run = pods.runs[name]
                last_pod[run] = max(last_pod.get(run, at), at)
    with running.lock:
        to_running = [running.became[run] - at for run, at in last_pod.items() if run in running.became]
    with job_ended.lock, run_ended.lock:
        to_final = [run_ended.became[run] - at for run, at in job_ended.became.items() if run.startswith(f"{prefix}-") and run in run_ended.became]
    return to_running, to_final


def spread(values: list[float]) -> str:
    """p50 / p99 / max of VALUES in seconds (a dash when there are none)."""
    if not values:
        return "-"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    return f"{statistics.median(ordered):.2f} / {p99:.2f} / {ordered[-1]:.2f} s"


TRACEMALLOC_HOOK = Path(__file__).resolve().parent / "tracemalloc_peak"


def start_operator(cluster: KubeCluster, work: Path, old_worktree: Path | None, repeat: int, heap: Path | None) -> OperatorProcess:
    traced = {"TRAINRUN_TRACEMALLOC_FILE": str(heap)} if heap is not None else {}
    hooks = [str(TRACEMALLOC_HOOK), *filter(None, [os.environ.get("PYTHONPATH")])] if heap is not None else []
    if old_worktree is not None:
        # Its own entry point where it has one (as the Deployment runs it: its loop, its logging); else kopf's CLI.
        entry = (old_worktree / "operator" / "trainrun" / "controller" / "__main__.py").exists()
        command = ["-m", "trainrun.controller"] if entry else ["-m", "kopf", "run", "--standalone", "--all-namespaces", "-m", "trainrun.controller.handlers"]
        operator = OperatorProcess(
            cluster,
            work / f"operator-{repeat}.log",
            command=[sys.executable, *command],
            extra_env={**traced, "PYTHONPATH": os.pathsep.join([str(old_worktree / "operator"), *hooks])},
        )
    else:
        operator = OperatorProcess(cluster, work / f"operator-{repeat}.log", extra_env={**traced, "PYTHONPATH": os.pathsep.join(hooks)} if hooks else None)  # all namespaces, as the Deployment
    operator.start()

    def ready() -> bool:
        if not operator.running():
            raise ClusterError(f"the operator exited at start:\n{operator.log_tail()}")
        from urllib.error import URLError
        from urllib.request import urlopen

        try:
            with urlopen(operator.metrics_url, timeout=2) as response:
                up = response.status == 200
        except (URLError, OSError):
            return False
        return up and (old_worktree is not None or operator.is_leader())

    wait_until(ready, timeout=120, what="the operator to serve /metrics (and hold the Lease)", interval=0.5)
    time.sleep(3)  # its watches have listed the (empty) namespace
    return operator


def operator_counts(metrics_url: str) -> Counter[str]:
    """The operator's reconcile passes so far ("passes", its trainrun_reconciles_total, every trigger and result) and
    the changes its watches delivered ("pods changed", "events same", ...: trainrun_watch_events_total)."""
    from urllib.request import urlopen

    with urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample.startswith("trainrun_reconciles_total{"):
            counts["passes"] += float(value)
        elif sample.startswith("trainrun_watch_events_total{"):
            labels = dict(part.split("=", 1) for part in sample[sample.index("{") + 1 : -1].split(","))
            counts[f"{labels['resource'].strip(chr(34))} {labels['effect'].strip(chr(34))}"] += float(value)
    return counts


def numbered(path: Path, repeat: int) -> Path:
    """PATH for the first repeat, PATH with the repeat's number after its stem for the others."""
    return path if repeat == 0 else path.with_name(f"{path.stem}-{repeat}{path.suffix}")


def start_profiler(pid: int, output: Path, repeat: int) -> subprocess.Popen[bytes]:
    """py-spy recording the operator's stacks (it does not stop the process to read them) into OUTPUT (with the
    repeat's number after the first): raw folded stacks, one "frame;frame;... count" a line."""
    path = numbered(output, repeat)
    command = ["py-spy", "record", "--pid", str(pid), "--nonblocking", "--rate", "100", "--format", "raw", "--output", str(path)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(profiler: subprocess.Popen[bytes]) -> None:
    """Ends the recording the way Ctrl-C does, so py-spy writes what it sampled."""
    profiler.send_signal(signal.SIGINT)
    profiler.wait(timeout=60)


def heap_report(snapshot_file: Path, top: int = 25) -> list[str]:
    """What held the operator's traced heap at the snapshot: by the operator's own line that allocated it (the
    innermost frame in ``operator/trainrun``) and the line that did (in a library, say: "own <- site"; the site
    alone when no operator code is on the stack, kopf's and aiohttp's own tasks), and what imports hold
    (modules' code and dictionaries)."""
    import tracemalloc

    def short(frame: tracemalloc.Frame) -> str:
        return f"{frame.filename.split('/site-packages/')[-1].split('/operator/')[-1].split('/python3.11/')[-1]}:{frame.lineno}"

    snapshot = tracemalloc.Snapshot.load(str(snapshot_file))
    by_where: Counter[str] = Counter()
    for trace in snapshot.traces:
        frames = list(reversed(trace.traceback))  # the allocation's own frame first (a Traceback lists the oldest first)
        if any(frame.filename.startswith("<frozen importlib") for frame in frames):
            by_where["imports: modules' code and dictionaries"] += trace.size
            continue
        own = next((frame for frame in frames if "/operator/trainrun/" in frame.filename), None)
        site = frames[0] if frames else None
        where = " <- ".join(dict.fromkeys(short(frame) for frame in (own, site) if frame is not None))  # once if the same
        by_where[where or "?"] += trace.size
    total = sum(by_where.values())
    lines = [f"\nheap at its snapshot: {total / 1e6:.1f} MB traced in Python objects (where RSS peaked untraced is the figure above less tracing's own)"]
    lines.extend(f"  {size / 1e6:7.2f} MB  {where}" for where, size in by_where.most_common(top))
    return lines


# --- report --------------------------------------------------------------------------------------


def per_run(result: Result, runs: int) -> float:
    return result.total_requests / runs


def breakdown(direct: Result, through: Result, runs: int, top: int = 12) -> list[str]:
    keys = set(direct.requests) | set(through.requests)
    rows = sorted(keys, key=lambda key: (-abs(through.requests[key] - direct.requests[key]), -through.requests[key]))
    lines = [f"  {'verb':8} {'resource':28} {'subresource':12} {'direct/run':>10} {'trainrun/run':>12}"]
    for key in rows[:top]:
        verb, resource, subresource = key
        lines.append(
            f"  {verb:8} {resource:28} {subresource:12} {direct.requests[key] / runs:10.2f} {through.requests[key] / runs:12.2f}"
        )
    return lines


INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=None, help="extra 8-GPU nodes (default: room for every replica)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--old-operator", type=Path, default=None, help="a worktree whose kopf operator to measure")
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="PyTorchJob", help="the kind of job of the runs")
    parser.add_argument("--kueue", action="store_true", help="every job through a Kueue LocalQueue (quota for all)")
    parser.add_argument(
        "--profile", type=Path, default=None, metavar="FILE",
        help="py-spy samples the operator while the runs go (raw stacks to FILE: where its CPU goes)",
    )
    parser.add_argument(
        "--tracemalloc", type=Path, default=None, metavar="FILE",
        help="the operator traces its Python heap; a snapshot near its peak to FILE, and what held it printed",
    )
    parser.add_argument(
        "--finish-after", type=float, default=None, metavar="SECONDS",
        help="replicas succeed this long after they start; the clocks run until every job (run) has finished",
    )
    parser.add_argument(
        "--operator-only", action="store_true",
        help="no direct baseline: the operator's CPU, memory, passes and lags only (half the time)",
    )
    arguments = parser.parse_args()
    runs, workers = arguments.runs, arguments.workers
    replicas = runs * (1 + workers)
    nodes = arguments.nodes if arguments.nodes is not None else math.ceil(replicas / GPUS_PER_NODE)
    build_binaries()
    # kwok (like a kubelet) holds one inotify instance per followed log: with fewer than the replicas,
    # streams past the limit end at once and are reopened every second. Raised for the bench, restored after.
    inotify_before = int(INOTIFY_INSTANCES.read_text())
    inotify_wanted = 2 * replicas + 1024
    if inotify_before < inotify_wanted:
        INOTIFY_INSTANCES.write_text(str(inotify_wanted))
        print(f"fs.inotify.max_user_instances {inotify_before} -> {inotify_wanted} for the bench", flush=True)
    if arguments.old_operator is not None:  # its own CRDs too
        os.environ["TRAINRUN_CRDS_DIR"] = str(arguments.old_operator / "crds")
    addons = ((Addon.TRAINER,) if arguments.backend == "TrainJob" else ()) + ((Addon.KUEUE,) if arguments.kueue else ())
    cluster = start_cluster(addons=addons)
    set_backend(cluster, arguments.backend)
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    operator: OperatorProcess | None = None
    results: list[tuple[Result | None, Result]] = []
    watched: dict[str, Watched] = {}
    try:
        cluster.create_namespace(NAMESPACE)
        cluster.serve_namespace_logs(NAMESPACE, write_cri_log(work / "replica.log", ["step=1 loss=0.5"]))
        started = time.monotonic()
        add_nodes(cluster, nodes)
        print(f"{nodes} extra nodes of {GPUS_PER_NODE} GPUs Ready in {time.monotonic() - started:.0f} s", flush=True)
        queue = kueue_queue(cluster, nodes * GPUS_PER_NODE) if arguments.kueue else None
        watched = watchers(cluster, arguments.backend, arguments.kueue)
        wait_until(lambda: all(item.requests >= 2 for item in watched.values()), timeout=60, what="the bench's watches")
        measured = code_of(arguments.old_operator)  # before any operator starts: what they load
        for repeat in range(arguments.repeats):
            prefix = f"direct{repeat}"
            documents = run_documents(prefix, runs, workers, queue, arguments.finish_after)
            finish = arguments.finish_after is not None
            direct = None
            if not arguments.operator_only:
                direct = measure(cluster, watched, direct_jobs(documents, arguments.backend), prefix, replicas, runs, "jobs", None, finish)
                clean(cluster)
            heap = numbered(arguments.tracemalloc, repeat) if arguments.tracemalloc else None
            operator = start_operator(cluster, work, arguments.old_operator, repeat, heap)
            prefix = f"trainrun{repeat}"
            profiler = start_profiler(operator.pid, arguments.profile, repeat) if arguments.profile else None
            idle_from = cpu_seconds(operator.pid)
            time.sleep(IDLE_S)
            idle_cpu_per_s = (cpu_seconds(operator.pid) - idle_from) / IDLE_S
            counts_before = operator_counts(operator.metrics_url)
            through = measure(
                cluster,
                watched,
                run_documents(prefix, runs, workers, queue, arguments.finish_after),
                prefix,
                replicas,
                runs,
                "trainingruns",
                operator.pid,
                finish,
            )
            counts = operator_counts(operator.metrics_url)
            counts.subtract(counts_before)
            through.passes = counts.pop("passes", 0.0)
            through.watch_events = counts
            through.idle_cpu_per_s = idle_cpu_per_s
            if profiler is not None:
                stop_profiler(profiler)
            if repeat + 1 < arguments.repeats:  # the cluster goes at the end anyway
                clean(cluster)
            operator.stop()
            tracebacks = operator.tracebacks()
            operator = None
            if heap is not None:
                print("\n".join(heap_report(heap)), flush=True)
            results.append((direct, through))
            print(
                f"repeat {repeat + 1}: "
                + (
                    f"direct pods {direct.pods_running_s:.1f} s, jobs Running {direct.runs_running_s:.1f} s, "
                    f"{per_run(direct, runs):.1f} requests/run | "
                    if direct is not None
                    else ""
                )
                + f"trainrun pods {through.pods_running_s:.1f} s, "
                f"runs Running {through.runs_running_s:.1f} s, {per_run(through, runs):.1f} requests/run, "
                f"operator CPU {through.cpu_s:.1f} s, peak RSS {through.peak_rss_mb:.0f} MB, "
                f"peak threads {through.peak_threads}"
                + (f" | every job finished {direct.finished_s:.1f} s" if finish and direct is not None else "")
                + (f", every run {through.finished_s:.1f} s" if finish else "")
                + (f", {len(tracebacks)} TRACEBACKS in its log" if tracebacks else ""),
                flush=True,
            )
        report(results, runs, workers, nodes, measured, arguments.backend, arguments.kueue)
        print(f"operator logs: {work}")
    finally:
        if operator is not None:
            operator.stop()
        for item in watched.values():
            item.stopped.set()
        delete_nodes(cluster)
        stop_cluster(cluster.name)
        if inotify_before < inotify_wanted:
            INOTIFY_INSTANCES.write_text(str(inotify_before))


def code_of(old: Path | None) -> str:
    """The operator's code as it is started: its tree, commit (and whether the tree had changes not committed),
    and command. Read when the operator starts: a commit made while the bench runs is not the code it measured."""
    tree = old if old is not None else REPO
    commit = subprocess.run(["git", "-C", str(tree), "log", "-1", "--format=%h %cI"], capture_output=True, text=True).stdout.strip()
    changed = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
    own_entry = old is None or (old / "operator" / "trainrun" / "controller" / "__main__.py").exists()
    command = "python -m trainrun.controller" if own_entry else "kopf run --standalone --all-namespaces"
    return f"the operator of {tree} at {commit}{' with changes not committed' if changed else ''} ({command})"


def report(
    results: list[tuple[Result | None, Result]], runs: int, workers: int, nodes: int, which: str, backend: str, kueue: bool
) -> None:
    def median(values: list[float]) -> float:
        return statistics.median(values)

    pairs = [(direct, through) for direct, through in results if direct is not None]
    print(
        f"\n{runs} runs x (1 Master + {workers} Workers), 1 GPU per replica, {nodes} extra nodes of {GPUS_PER_NODE} GPUs; "
        f"{which}; medians of {len(results)} ({os.cpu_count()}-core machine, whole control plane on it)"
        + ("; every job through a Kueue LocalQueue" if kueue else "")
        + ("" if pairs else "; no direct baseline (--operator-only)")
    )
    pods = median([through.pods_running_s for _, through in results])
    running = median([through.runs_running_s for _, through in results])
    requests = median([per_run(through, runs) for _, through in results])
    if not pairs:
        print(f"{'every pod Running (s)':38} {'':>18} {pods:13.1f}")
        print(f"{'every run reports Running (s)':38} {'':>18} {running:13.1f}")
        ends = [through.finished_s for _, through in results if through.finished_s]
        if ends:
            print(f"{'every run finished (s)':38} {'':>18} {median(ends):13.1f}")
    else:
        direct_pods = median([direct.pods_running_s for direct, _ in pairs])
        direct_runs = median([direct.runs_running_s for direct, _ in pairs])
        direct_requests = median([per_run(direct, runs) for direct, _ in pairs])
        print(f"{'':38} {'direct ' + backend + 's':>18} {'TrainingRuns':>13} {'ratio':>7}")
        if kueue:
            direct_admitted = median([direct.admitted_s or 0.0 for direct, _ in pairs])
            admitted = median([through.admitted_s or 0.0 for _, through in pairs])
            print(f"{'every Workload admitted by Kueue (s)':38} {direct_admitted:18.1f} {admitted:13.1f} {admitted / direct_admitted:7.2f}")
        print(f"{'every pod Running (s)':38} {direct_pods:18.1f} {pods:13.1f} {pods / direct_pods:7.2f}")
        print(f"{'every run reports Running (s)':38} {direct_runs:18.1f} {running:13.1f} {running / direct_runs:7.2f}")
        print(f"{'  the same against direct pods Running':38} {direct_pods:18.1f} {running:13.1f} {running / direct_pods:7.2f}")
        print(f"{'API requests per run':38} {direct_requests:18.1f} {requests:13.1f} {requests / direct_requests:7.2f}")
        finished = [(direct.finished_s, through.finished_s) for direct, through in pairs if direct.finished_s and through.finished_s]
        if finished:
            direct_end, end = median([item[0] for item in finished]), median([item[1] for item in finished])
            print(f"{'every job (run) finished (s)':38} {direct_end:18.1f} {end:13.1f} {end / direct_end:7.2f}")
    cpu = median([t.cpu_s or 0.0 for _, t in results])
    print(f"{'operator CPU seconds':38} {'':>18} {cpu:13.1f}")
    print(f"{'  per run (ms)':38} {'':>18} {1000 * cpu / runs:13.1f}")
    idle = median([t.idle_cpu_per_s or 0.0 for _, t in results])
    busy = median([(t.cpu_s or 0.0) - (t.idle_cpu_per_s or 0.0) * (t.measured_s or 0.0) for _, t in results])
    print(f"{'  with no run, per second (ms)':38} {'':>18} {1000 * idle:13.1f}")
    print(f"{'  per run, less that (ms)':38} {'':>18} {1000 * busy / runs:13.1f}")
    passes = median([t.passes or 0.0 for _, t in results])
    print(f"{'reconcile passes per run':38} {'':>18} {passes / runs:13.1f}")
    print(f"{'  CPU per pass, all of it (ms)':38} {'':>18} {1000 * cpu / max(passes, 1.0):13.2f}")
    delivered = results[-1][1].watch_events
    if delivered:
        told = ", ".join(f"{key} {count / runs:.1f}" for key, count in sorted(delivered.items()) if count)
        print(f"changes the operator's watches delivered per run (last repeat; changed: what it keeps changed): {told}")
    running_lags = [lag for _, through in results for lag in through.running_lags]
    final_lags = [lag for _, through in results for lag in through.final_lags]
    print(f"lag, last replica pod Running -> the run reports Running (p50 / p99 / max, {len(running_lags)} runs): {spread(running_lags)}")
    if final_lags:
        print(f"lag, its job ended -> the run reports its final phase (p50 / p99 / max, {len(final_lags)} runs): {spread(final_lags)}")
    costs = results[-1][1].by_state
    if costs is not None:
        waiting, running = costs.per_waiting_us_per_s * costs.mean_waiting_s / 1000, costs.per_running_us_per_s * costs.mean_running_s / 1000
        print(
            f"operator CPU by what its runs did (last repeat; least squares over {costs.windows} windows of {CPU_SAMPLE_S:.0f} s, "
            f"R^2 {costs.r_squared:.2f}): {costs.base_ms_per_s:.1f} ms/s whatever they do; "
            f"{costs.per_waiting_us_per_s:.0f} us/s a run waiting (for {costs.mean_waiting_s:.0f} s on average: {waiting:.1f} ms a run); "
            f"{costs.per_running_us_per_s:.0f} us/s a run running (for {costs.mean_running_s:.0f} s: {running:.1f} ms a run); "
            f"{costs.per_change_ms:.1f} ms a start or end (two a run: {2 * costs.per_change_ms:.1f} ms)"
        )
    print(f"{'operator peak RSS (VmHWM, MB)':38} {'':>18} {median([t.peak_rss_mb or 0.0 for _, t in results]):13.0f}")
    print(f"{'operator peak threads':38} {'':>18} {median([float(t.peak_threads or 0) for _, t in results]):13.0f}")
    direct, through = results[-1]
    if direct is None:
        return
    print("API requests by kind (last repeat; every client of the API server):")
    print("\n".join(breakdown(direct, through, runs)))
    for label, result in (("direct", direct), ("trainrun", through)):
        opened = ", ".join(f"{' '.join(part for part in key if part)} {count:+d}" for key, count in sorted(result.opened.items()))
        print(f"long-running requests opened meanwhile and still open ({label}; not in the counts above): {opened or 'none'}")


if __name__ == "__main__":
    main()
