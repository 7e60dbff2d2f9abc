"""A TrainingSweep of N trials against the same N TrainingRuns applied directly: what the sweep controller adds.

Starts the local control plane (tests/cluster: etcd, kube-apiserver, scheduler, controller-manager, kwok,
the real training-operator) and, in the same cluster, with the operator of this checkout (a fresh process
for each side, holding the Lease before the clock starts), runs N short trials of one Master each (the cpu
pool, 100m; kwok's pod succeeds TRIAL_SECONDS after it starts, and every pod's log, served by kwok for the
namespace, holds a couple of ``trainrun:metric`` lines of val_loss, so each run completes with the
objective in its status):

  baseline:  N TrainingRuns of the sweep's template, each with parameters drawn from the sweep's space with
             a seeded ``random.Random`` (as ``algorithm: random`` would), applied by this script at the
             pace the sweep allows: P at first, then a new one as soon as one is Completed (it watches the
             runs); the clock stops when all N are Completed;
  sweep:     one TrainingSweep (maxTrials N, parallelism P, the same template and space, ``--algorithm``,
             no early stopping unless ``--early-stopping median``); the operator creates the trials; the
             clock stops when the sweep reports Completed (every trial done).

Paced at P on both sides, not all N at once: the sweep never runs more than P trials, so its time per
trial is (what a trial takes) + (what the controller takes to notice a finished trial and create the
next); the baseline's pacing is the same loop with this script as the controller, reacting to the watch.
Both sides run the same TrainingRun reconciles, log follows and job creations, so the difference in the
operator's CPU is the sweep controller's (its trial watch, a plan per reconcile with the Optuna study
rebuilt from every trial, the creates, Events and status patches).

Measured per side: wall time, the operator's CPU seconds (user+system from /proc/PID/stat, over the window),
peak RSS (VmHWM) and threads (sampled every 0.2 s); per trial; ratios sweep/baseline; the sweep
controller's added CPU and time per trial ((sweep - baseline) / N). The script only watches (one watch per
kind), it never polls the API server.

Usage: python tests/bench/bench_sweep_scale.py [--trials 200] [--parallelism 10] [--repeats 1]
         [--algorithm tpe|random|cmaes] [--early-stopping none|median] [--trial-seconds 2]
         [--operator-tree CHECKOUT]   (another checkout's operator, e.g. main's, to measure a change before/after)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "integration"), str(REPO / "tests" / "bench"), str(REPO / "operator")]

from bench_operator_scale import NAMESPACE, ProcessSample, Watched, cpu_seconds  # noqa: E402
from cluster.harness import (  # noqa: E402
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
from runs import TRAINER_IMAGE, OperatorProcess  # noqa: E402
from trainrun.spec.sweep import with_parameters  # noqa: E402

TIMEOUT_S = 1800.0
FINISHED = ("Completed", "Failed", "Cancelled")
SWEEP = "sweep"
BASE = "base"
METRIC_LINES = [
    'trainrun:metric {"epoch": 1, "step": 10, "val_loss": 0.8}',
    'trainrun:metric {"epoch": 2, "step": 20, "val_loss": 0.5}',
]
PARAMETERS: dict[str, Any] = {
    "learningRate": {"type": "logUniform", "low": 0.0001, "high": 0.1},
    "batchSize": {"type": "categorical", "values": [32, 64, 128]},
}


# --- the documents: the template, the sweep, the baseline's runs -----------------------------------


def template(trial_seconds: float) -> dict[str, Any]:
    behaviour = {**pod_behaviour(Outcome.SUCCEED, after=f"{trial_seconds:g}s")}
    return {
        "image": TRAINER_IMAGE,
        "distribution": {"workers": 0},
        "hyperparameters": {"epochs": 2},
        "resources": {"pool": "cpu", "cpu": "100m", "memory": "64Mi"},
        "runPolicy": {"restartPolicy": "Never", "backoffLimit": 0},
        "podMetadata": {"annotations": behaviour},
    }


def sweep_document(trials: int, parallelism: int, algorithm: str, early_stopping: str, trial_seconds: float) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "template": template(trial_seconds),
        "parameters": PARAMETERS,
        "objective": {"metric": "val_loss", "goal": "minimize"},
        "algorithm": algorithm,
        "parallelism": parallelism,
        "maxTrials": trials,
        "maxFailedTrials": trials,
    }
    if early_stopping != "none":
        spec["earlyStopping"] = {"type": early_stopping}
    return {"apiVersion": "trainrun.dev/v1alpha1", "kind": "TrainingSweep", "metadata": {"name": SWEEP, "namespace": NAMESPACE}, "spec": spec}


def drawn_parameters(chance: random.Random) -> dict[str, Any]:
    """One point of PARAMETERS, drawn as Optuna's RandomSampler would (log-uniform, uniform choice)."""
    low, high = PARAMETERS["learningRate"]["low"], PARAMETERS["learningRate"]["high"]
    return {
        "learningRate": float(10 ** chance.uniform(math.log10(low), math.log10(high))),
        "batchSize": chance.choice(PARAMETERS["batchSize"]["values"]),
    }


def baseline_runs(trials: int, trial_seconds: float) -> list[dict[str, Any]]:
    chance = random.Random(26)
    return [
        {
            "apiVersion": "trainrun.dev/v1alpha1",
            "kind": "TrainingRun",
            "metadata": {"name": f"{BASE}-{number}", "namespace": NAMESPACE},
            "spec": with_parameters(template(trial_seconds), drawn_parameters(chance)),
        }
        for number in range(trials)
    ]


# --- watching and the operator --------------------------------------------------------------------


def run_finished(run: dict[str, Any]) -> bool:
    return (run.get("status") or {}).get("phase") in FINISHED


def run_completed(run: dict[str, Any]) -> bool:
    return (run.get("status") or {}).get("phase") == "Completed"


@dataclass
class Watches:
    finished: Watched  # TrainingRuns: finished in any phase
    completed: Watched  # TrainingRuns: Completed
    sweeps: Watched  # TrainingSweeps: Completed or Failed

    def all(self) -> list[Watched]:
        return [self.finished, self.completed, self.sweeps]

    def sweep_finished(self) -> bool:
        with self.sweeps.lock:
            return self.sweeps.state.get(SWEEP, False)

    def created(self, prefix: str) -> int:
        with self.finished.lock:
            return sum(1 for name in self.finished.state if name.startswith(f"{prefix}-"))


def watches(cluster: KubeCluster) -> Watches:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    custom = client.CustomObjectsApi(api)
    runs = partial(custom.list_namespaced_custom_object, "trainrun.dev", "v1alpha1", plural="trainingruns")
    sweeps = partial(custom.list_namespaced_custom_object, "trainrun.dev", "v1alpha1", plural="trainingsweeps")
    found = Watches(
        Watched("trainingruns", runs, run_finished),
        Watched("trainingruns-completed", runs, run_completed),
        Watched("trainingsweeps", sweeps, lambda sweep: (sweep.get("status") or {}).get("phase") in ("Completed", "Failed")),
    )
    for watched in found.all():
        watched.start()
    wait_until(lambda: all(item.requests >= 2 for item in found.all()), timeout=60, what="the bench's watches")
    return found


def start_operator(cluster: KubeCluster, log_path: Path) -> OperatorProcess:
    """The operator of this checkout (all namespaces, as the Deployment), once it serves /metrics and holds the Lease."""
    operator = OperatorProcess(cluster, log_path)
    operator.start()

    def ready() -> bool:
        if not operator.running():
            raise ClusterError(f"the operator exited at start:\n{operator.log_tail()}")
        return operator.ready() and operator.is_leader()

    wait_until(ready, timeout=120, what="the operator to be ready and hold the Lease", interval=0.5)
    time.sleep(3)  # its watches have listed the namespace, its queues are idle
    return operator


def clean(cluster: KubeCluster) -> None:
    cluster.kubectl("delete", "trainingsweeps,trainingruns,pytorchjobs", "--all", "-n", NAMESPACE, "--wait=true", timeout=900)
    wait_until(lambda: not cluster.list_objects("pods", NAMESPACE), timeout=900, what="pods to go", interval=2)
    for kind in ("services", "endpointslices"):
        wait_until(lambda kind=kind: not cluster.list_objects(kind, NAMESPACE), timeout=300, what=f"{kind} to go", interval=2)


# --- one side ---------------------------------------------------------------------------------------


@dataclass
class Side:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    peak_threads: int
    completed: int
    most_at_once: int
    tracebacks: int


def measure(
    cluster: KubeCluster, watched: Watches, operator: OperatorProcess, trials: int, parallelism: int, sweep: dict[str, Any] | None,
    trial_seconds: float,
) -> Side:
    from kubernetes import client, config

    custom = client.CustomObjectsApi(config.new_client_from_config(config_file=str(cluster.kubeconfig)))
    documents = baseline_runs(trials, trial_seconds) if sweep is None else []
    prefix = BASE if sweep is None else SWEEP
    sample = ProcessSample(operator.pid)
    sampler = threading.Thread(target=sample.run, daemon=True)
    cpu_before = cpu_seconds(operator.pid)
    sampler.start()
    started = time.monotonic()
    deadline = started + TIMEOUT_S
    most = 0
    if sweep is not None:
        custom.create_namespaced_custom_object("trainrun.dev", "v1alpha1", NAMESPACE, "trainingsweeps", sweep)
    applied = 0
    while True:
        finished = watched.finished.count(prefix)
        created = watched.created(prefix)
        most = max(most, created - finished)
        if sweep is None:
            # The baseline's controller: keep P unfinished, as the sweep does (counted from what this script created:
            # the watch may not have brought the newest yet).
            while applied < trials and applied - finished < parallelism:
                custom.create_namespaced_custom_object("trainrun.dev", "v1alpha1", NAMESPACE, "trainingruns", documents[applied])
                applied += 1
            if watched.completed.count(prefix) >= trials:
                break
        elif watched.sweep_finished():
            break
        if finished >= trials and watched.completed.count(prefix) < trials and sweep is None:
            raise ClusterError(f"{trials - watched.completed.count(prefix)} baseline runs ended other than Completed")
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {TIMEOUT_S:.0f} s: {finished}/{trials} {prefix} runs finished")
        time.sleep(0.02)
    wall = time.monotonic() - started
    cpu = cpu_seconds(operator.pid) - cpu_before
    sample.stop.set()
    sampler.join()
    return Side(
        wall_s=wall,
        cpu_s=cpu,
        peak_rss_mb=sample.peak_rss_kb / 1024,
        peak_threads=sample.peak_threads,
        completed=watched.completed.count(prefix),
        most_at_once=most,
        tracebacks=len(operator.tracebacks()),
    )


def sweep_status(cluster: KubeCluster) -> dict[str, Any]:
    found = cluster.get("trainingsweep", SWEEP, NAMESPACE) or {}
    return dict(found.get("status") or {})


# --- main and report ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--parallelism", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--algorithm", choices=("tpe", "random", "cmaes"), default="tpe")
    parser.add_argument("--early-stopping", choices=("none", "median"), default="none")
    parser.add_argument("--trial-seconds", type=float, default=2.0, help="how long each kwok pod runs before it succeeds")
    parser.add_argument(
        "--operator-tree", type=Path, default=REPO, help="the checkout whose operator to run (default: this one; e.g. an older one to compare)"
    )
    arguments = parser.parse_args()
    tree = arguments.operator_tree.resolve()
    # The operator process imports that checkout, whatever package the virtualenv has installed.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(tree / "operator"), str(tree / "training"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    )
    trials, parallelism = arguments.trials, min(arguments.parallelism, arguments.trials)
    build_binaries()
    cluster = start_cluster()
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    operator: OperatorProcess | None = None
    watched: Watches | None = None
    results: list[tuple[Side, Side]] = []
    statuses: list[dict[str, Any]] = []
    try:
        cluster.create_namespace(NAMESPACE)
        cluster.serve_namespace_logs(NAMESPACE, write_cri_log(work / "trial.log", METRIC_LINES))
        watched = watches(cluster)
        for repeat in range(arguments.repeats):
            sides: dict[str, Side] = {}
            for side in ("baseline", "sweep"):
                operator = start_operator(cluster, work / f"operator-{side}-{repeat}.log")
                document = (
                    None
                    if side == "baseline"
                    else sweep_document(trials, parallelism, arguments.algorithm, arguments.early_stopping, arguments.trial_seconds)
                )
                sides[side] = measure(cluster, watched, operator, trials, parallelism, document, arguments.trial_seconds)
                if side == "sweep":
                    statuses.append(sweep_status(cluster))
                operator.stop()
                operator = None
                print(f"repeat {repeat + 1} {side}: {describe(sides[side], trials)}", flush=True)
                clean(cluster)
            results.append((sides["baseline"], sides["sweep"]))
        report(results, statuses, trials, parallelism, arguments, tree)
        print(f"operator logs: {work}")
    finally:
        if operator is not None:
            operator.stop()
        if watched is not None:
            for item in watched.all():
                item.stopped.set()
        stop_cluster(cluster.name)


def describe(side: Side, trials: int) -> str:
    return (
        f"{side.wall_s:.1f} s, operator CPU {side.cpu_s:.1f} s ({1000 * side.cpu_s / trials:.0f} ms/trial), peak RSS "
        f"{side.peak_rss_mb:.0f} MB, peak threads {side.peak_threads}, {side.completed}/{trials} Completed, at most "
        f"{side.most_at_once} unfinished at once" + (f", {side.tracebacks} TRACEBACKS in the operator's log" if side.tracebacks else "")
    )


def report(
    results: list[tuple[Side, Side]], statuses: list[dict[str, Any]], trials: int, parallelism: int, arguments: Any, tree: Path
) -> None:
    def median(values: list[float]) -> float:
        return statistics.median(values)

    base_wall = median([base.wall_s for base, _ in results])
    sweep_wall = median([sweep.wall_s for _, sweep in results])
    base_cpu = median([base.cpu_s for base, _ in results])
    sweep_cpu = median([sweep.cpu_s for _, sweep in results])
    base_rss = median([base.peak_rss_mb for base, _ in results])
    sweep_rss = median([sweep.peak_rss_mb for _, sweep in results])
    commit = subprocess.run(["git", "-C", str(tree), "log", "-1", "--format=%h %cI"], capture_output=True, text=True).stdout.strip()
    print(
        f"\n{trials} trials, parallelism {parallelism}, algorithm {arguments.algorithm}, early stopping "
        f"{arguments.early_stopping}, pods succeed {arguments.trial_seconds:g} s after they start; the operator of "
        f"{tree} at {commit or '(not a git checkout)'}; medians of {len(results)} ({os.cpu_count()}-core machine, whole control plane on it, "
        f"load average {os.getloadavg()[0]:.1f} at the end)"
    )
    print(f"{'':34} {'baseline':>10} {'sweep':>10} {'ratio':>7}")
    print(f"{'wall time (s)':34} {base_wall:10.1f} {sweep_wall:10.1f} {sweep_wall / base_wall:7.2f}")
    print(f"{'wall time per trial (s)':34} {base_wall / trials:10.3f} {sweep_wall / trials:10.3f}")
    print(f"{'operator CPU (s)':34} {base_cpu:10.1f} {sweep_cpu:10.1f} {sweep_cpu / base_cpu:7.2f}")
    print(f"{'operator CPU per trial (ms)':34} {1000 * base_cpu / trials:10.1f} {1000 * sweep_cpu / trials:10.1f}")
    print(f"{'operator peak RSS (MB)':34} {base_rss:10.0f} {sweep_rss:10.0f} {sweep_rss / base_rss:7.2f}")
    print(f"sweep controller's added time per trial: {1000 * (sweep_wall - base_wall) / trials:.0f} ms")
    print(f"sweep controller's added CPU per trial:  {1000 * (sweep_cpu - base_cpu) / trials:.1f} ms")
    last = statuses[-1] if statuses else {}
    print(f"the sweep's last status: {last.get('phase')} {last.get('trialsSummary')} {last.get('message')}")
    print(f"  counts {json.dumps(last.get('counts'))}")


if __name__ == "__main__":
    main()
