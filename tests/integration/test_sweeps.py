"""A TrainingSweep against the real control plane (kwok), with the operator as a process SIGKILLed 10 times.

12 trials, 3 at a time, median early stopping. kwok's pods run no program: each trial's Master "prints"
a CRI log file the test writes as the trial goes (one ``trainrun:metric`` line of val_loss per epoch, every
2 s, until the trial is told to stop, as its killed program would), chosen by the trial's number: trials 4, 5, 7, 9 and 10 are clearly worse (10x the loss), trial 8 the
best (half the loss), each other one a little better than the one before (never worse than the median). While the operator is killed and started again 10 times during the sweep, a watch of
the trials records every version: never more than 3 unfinished at once, one uid per name. At the end:
exactly 12 trials, the median pruner stopped some of the worse ones before their pods ended (Cancelled,
marked pruned, fewer epochs than the others), none of the good ones, and the best is trial 8. The sweep is
created with ``trainrun sweep`` and read back with ``trainrun get trs``, ``describe sweep`` (trial 8 first)
and ``metrics sweep --plot``.

A sweep whose objective no trial reports fails (Stalled, MetricNotReported, naming the metrics the trial does
report) as soon as its first trial completes, and starts no trial after it.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster.harness import ClusterError, KubeCluster, Outcome, pod_behaviour, wait_until, write_cri_log
from faults import ObjectWatch
from runs import TRAINER_IMAGE, OperatorProcess, training_sweep
from runs import trainrun_cli as trainrun

pytestmark = pytest.mark.cluster

TRIALS, PARALLELISM, EPOCHS = 12, 3, 8
WORSE = {4, 5, 7, 9, 10}
BEST = 8
SECONDS_PER_EPOCH = 2.0
KILLS = 10
FINISHED = ("Completed", "Failed", "Cancelled")


def val_loss(number: int, epoch: int) -> float:
    scale = 10.0 if number in WORSE else 0.5 if number == BEST else 1.0 - number / 100  # each good one a little better
    return round(scale / epoch, 5)


def sweep(namespace: str) -> dict[str, Any]:
    behaviour = {**pod_behaviour(Outcome.SUCCEED, after=f"{int(EPOCHS * SECONDS_PER_EPOCH) + 8}s"), "kwok.trainrun.dev/start-after": "1s"}
    template = {
        "image": TRAINER_IMAGE,
        "distribution": {"workers": 0},
        "hyperparameters": {"epochs": EPOCHS},
        "resources": {"pool": "cpu", "cpu": "100m", "memory": "64Mi"},
        "runPolicy": {"restartPolicy": "Never", "backoffLimit": 0},
        "podMetadata": {"annotations": behaviour},
    }
    return training_sweep(
        "tune", namespace, template,
        algorithm="tpe", earlyStopping={"type": "median", "startupTrials": 3}, parallelism=PARALLELISM, maxTrials=TRIALS,
    )


class TrialLogs:
    """Writes each trial's Master log as it trains: a val_loss line per epoch, every SECONDS_PER_EPOCH, from when
    the trial appears (kwok serves the file for the pod's name, created before or after the pod)."""

    def __init__(self, cluster: KubeCluster, namespace: str, folder: Path) -> None:
        self.cluster, self.namespace, self.folder = cluster, namespace, folder
        self.started: dict[int, float] = {}
        self.killed: set[int] = set()  # trials told to stop: their program prints no more (as a killed one would)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def trial_appeared(self, number: int) -> None:
        if number not in self.started:
            path = write_cri_log(self.folder / f"tune-{number}.log", ["starting"])
            self.cluster.serve_pod_log(self.namespace, f"tune-{number}-master-0", path)
            self.started[number] = time.monotonic()

    def trial_stopped(self, number: int) -> None:
        self.killed.add(number)

    def _loop(self) -> None:
        written: dict[int, int] = {}
        while not self.stopped.is_set():
            for number, since in list(self.started.items()):
                if number in self.killed:
                    continue
                due = min(EPOCHS, int((time.monotonic() - since) / SECONDS_PER_EPOCH))
                for epoch in range(written.get(number, 0) + 1, due + 1):
                    line = f'trainrun:metric {{"epoch": {epoch}, "step": {10 * epoch}, "val_loss": {val_loss(number, epoch)}}}'
                    write_cri_log(self.folder / f"tune-{number}.log", [line], append=True)
                    written[number] = epoch
            time.sleep(0.2)


@pytest.mark.timeout(900)
def test_a_sweep_of_12_trials_survives_10_sigkills_prunes_losers_and_finds_the_best(
    kube_cluster: KubeCluster, kube_namespace: str, tmp_path: Path
) -> None:
    namespace = kube_namespace
    logs = TrialLogs(kube_cluster, namespace, tmp_path)
    phases: dict[str, str | None] = {}
    most_unfinished = [0]
    lock = threading.Lock()

    def see(trial: dict[str, Any]) -> None:
        with lock:
            name = trial["metadata"]["name"]
            phases[name] = (trial.get("status") or {}).get("phase")
            most_unfinished[0] = max(most_unfinished[0], sum(1 for phase in phases.values() if phase not in FINISHED))
        number = json.loads(trial["metadata"].get("annotations", {}).get("trainrun.dev/trial", "null"))
        if isinstance(number, int):
            logs.trial_appeared(number)
            if (trial.get("spec") or {}).get("cancel"):
                logs.trial_stopped(number)

    watch = ObjectWatch(kube_cluster, namespace, "trainingruns", see, group="trainrun.dev", version="v1alpha1")
    operator = OperatorProcess(kube_cluster, tmp_path / "operator.log", args=["--namespace", namespace], identity=f"sweeps-{namespace}")
    operator.start()
    logs.thread.start()
    chance = random.Random(26)
    delays: list[float] = []
    try:
        path = tmp_path / "sweep.yaml"
        path.write_text(yaml.safe_dump(sweep(namespace)))
        created = trainrun(kube_cluster, "sweep", str(path), "-n", namespace)
        assert created.returncode == 0 and "trainingsweep.trainrun.dev/tune created" in created.stdout, created.stderr
        for _ in range(KILLS):  # spread over the sweep's first minute or so
            delays.append(round(chance.uniform(3.0, 8.0), 1))
            time.sleep(delays[-1])
            operator.kill()
            operator.start()

        def finished() -> dict[str, Any] | None:
            found = kube_cluster.get("trainingsweep", "tune", namespace) or {}
            return found if (found.get("status") or {}).get("phase") in ("Completed", "Failed") else None

        try:
            done = wait_until(finished, timeout=480, what="the sweep to finish", interval=1)
        except ClusterError as error:
            status = (kube_cluster.get("trainingsweep", "tune", namespace) or {}).get("status")
            raise AssertionError(f"{error}: {json.dumps(status, indent=1)}\noperator log:\n{operator.log_tail(80)}") from None
    finally:
        logs.stopped.set()
        watch.stop()
        operator.stop()
    context = f"(kill delays {delays}; operator log {operator.log_path})"
    status = done["status"]
    trials = {trial["metadata"]["name"]: trial for trial in kube_cluster.list_objects("trainingruns", namespace)}
    assert sorted(trials) == sorted(f"tune-{number}" for number in range(TRIALS)), context
    assert all(len(uids) == 1 for uids in watch.uids.values()) and not watch.deleted, f"a trial made twice {watch.uids} {context}"
    assert most_unfinished[0] <= PARALLELISM, f"{most_unfinished[0]} trials ran at once {context}"
    assert status["phase"] == "Completed", status
    assert status["best"]["trial"] == f"tune-{BEST}" and status["best"]["value"] == val_loss(BEST, EPOCHS), status["best"]
    pruned = {
        int(name.rsplit("-", 1)[1]): trial
        for name, trial in trials.items()
        if "trainrun.dev/pruned" in trial["metadata"].get("annotations", {})
    }
    assert len(pruned) >= 2 and set(pruned) <= WORSE, f"pruned {sorted(pruned)}, worse {sorted(WORSE)} {context}"
    for number, trial in pruned.items():
        assert trial["status"]["phase"] == "Cancelled" and trial["spec"]["cancel"] is True
        epochs = [point.get("epoch") for point in trial["status"].get("series", {}).get("points", [])]
        assert max(epochs, default=0) < EPOCHS, f"tune-{number} was stopped only after its last epoch: {epochs}"
    completed = [name for name, trial in trials.items() if trial["status"].get("phase") == "Completed"]
    assert status["counts"]["pruned"] == len(pruned) and status["counts"]["completed"] == len(completed) == TRIALS - len(pruned)
    assert status["trialsSummary"] == f"{len(completed)}/0/{len(pruned)}/0 of {TRIALS}"
    columns = kube_cluster.kubectl("get", "trs", "tune", "-n", namespace).stdout.splitlines()[0].split()
    assert columns == ["NAME", "PHASE", "TRIALS", "BEST", "PROGRESS", "AGE"]
    header, row = trainrun(kube_cluster, "get", "trs", "-n", namespace).stdout.strip().splitlines()
    assert header.split() == columns and row.split()[:3] == ["tune", "Completed", status["trialsSummary"].split()[0]]
    described = trainrun(kube_cluster, "describe", "sweep", "tune", "-n", namespace).stdout
    trial_rows = [line.split() for line in described.splitlines() if line.strip().startswith("tune-")]
    assert trial_rows[0][:2] == [f"tune-{BEST}", "Completed"] and len(trial_rows) == TRIALS, described
    plotted = trainrun(kube_cluster, "metrics", "sweep", "tune", "-n", namespace, "--plot", str(tmp_path / "tune.png"))
    assert plotted.returncode == 0 and (tmp_path / "tune.png").stat().st_size > 10_000, plotted.stderr
    operator.assert_no_traceback()
    assert operator.starts == KILLS + 1
    print(
        f"sweep: {status['trialsSummary']}, best {status['bestSummary']}, pruned {sorted(pruned)}, at most "
        f"{most_unfinished[0]} unfinished at once, {operator.starts} operator starts {context}"
    )


@pytest.mark.timeout(300)
def test_an_objective_no_trial_reports_fails_the_sweep_once_the_first_trial_ends(
    kube_cluster: KubeCluster, kube_namespace: str, tmp_path: Path
) -> None:
    namespace = kube_namespace
    line = 'trainrun:metric {"epoch": 1, "step": 10, "val_loss": 0.5}'
    kube_cluster.serve_namespace_logs(namespace, write_cri_log(tmp_path / "replica.log", [line]))
    document = sweep(namespace)
    document["spec"].update(objective={"metric": "val_accuracy", "goal": "maximize"}, maxTrials=4, parallelism=2, earlyStopping=None)
    document["spec"]["template"]["podMetadata"]["annotations"] = pod_behaviour(Outcome.SUCCEED, after="3s")
    operator = OperatorProcess(kube_cluster, tmp_path / "operator.log", args=["--namespace", namespace])
    operator.start()
    try:
        kube_cluster.apply(document)

        def failed() -> dict[str, Any] | None:
            found = kube_cluster.get("trainingsweep", "tune", namespace) or {}
            return found if (found.get("status") or {}).get("phase") == "Failed" else None

        status = wait_until(failed, timeout=180, what="the sweep to fail", interval=1)["status"]
    finally:
        operator.stop()
    assert status["reason"] == "MetricNotReported", status
    assert "completed without reporting val_accuracy (it reports: val_loss)" in status["message"], status["message"]
    assert next(item for item in status["conditions"] if item["type"] == "Stalled")["status"] == "True"
    trials = kube_cluster.list_objects("trainingruns", namespace)
    assert len(trials) == 2, "no trial started after the first one ended without the metric"
    operator.assert_no_traceback()
