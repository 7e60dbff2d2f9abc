"""Table-driven tests of TrainingSweeps: the search space and its validation (one line naming the field),
the CRD, the study rebuilt from trial objects (same suggestions for the same history), pruning decisions
from the objective's values by position, the sweep's status and plan from its trials, and status.series."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from trainrun.metrics import MetricSample
from trainrun.spec import InvalidTrainingSweep, load_training_run, load_training_sweep
from trainrun.spec.annotations import PRUNED_ANNOTATION, SERIES_ANNOTATION, SWEEP_LABEL
from trainrun.spec.crd import training_sweep_crd
from trainrun.spec.status import MetricSeries, Phase, SeriesPoint
from trainrun.spec.sweepstatus import TrialState
from trainrun.status.build import series_status
from trainrun.sweep import plan_sweep
from trainrun.sweep.study import SweepStudy
from trainrun.sweep.trials import TrialView, run_finished

NOW = "2026-12-05T10:00:00Z"
LATER = "2026-12-05T11:00:00Z"
CRD_FILE = Path(__file__).parents[2] / "crds" / "trainrun.dev_trainingsweeps.yaml"


def sweep_doc(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "template": {"image": "ghcr.io/acme/trainer:1", "hyperparameters": {"epochs": 4}},
        "parameters": {
            "learningRate": {"type": "logUniform", "low": 1e-4, "high": 1e-1},
            "batchSize": {"type": "categorical", "values": [32, 64, 128]},
        },
        "objective": {"metric": "val_loss", "goal": "minimize"},
        "maxTrials": 6,
        "parallelism": 2,
    }
    body.update(spec)
    return {
        "apiVersion": "trainrun.dev/v1alpha1",
        "kind": "TrainingSweep",
        "metadata": {"name": "tune", "namespace": "ml", "uid": "uid-1", "generation": 1},
        "spec": body,
    }


def changed(path: str, value: Any, document: dict[str, Any] | None = None) -> dict[str, Any]:
    """The sweep with one field set (a dotted path; a key with dots in brackets)."""
    document = copy.deepcopy(document or sweep_doc())
    node = document
    keys = [quoted or plain for quoted, plain in re.findall(r"\[['\"]([^'\"]+)['\"]\]|([^.\[]+)", path)]
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return document


# ---- the search space and its validation ----


@pytest.mark.parametrize(
    ("document", "field", "words"),
    [
        (changed("spec.parameters.learningrate", {"type": "uniform", "low": 0.1, "high": 0.2}), 'spec.parameters["learningrate"]', "did you mean learningRate?"),
        (changed("spec.parameters.dropout", {"type": "uniform", "low": 0.1, "high": 0.2}), 'spec.parameters["dropout"]', "extra.<key> or env.<NAME>"),
        (changed("spec.parameters.learningRate", {"type": "uniform", "low": 0.2, "high": 0.1}), 'spec.parameters["learningRate"]', "low (0.2) must be below high (0.1); swap them"),
        (changed("spec.parameters.learningRate", {"type": "logUniform", "low": 0, "high": 0.1}), 'spec.parameters["learningRate"]', "needs low above 0"),
        (changed("spec.parameters.learningRate", {"type": "uniform", "low": 0.1, "high": 20}), 'spec.parameters["learningRate"]', "20 is not a valid spec.template.hyperparameters.learningRate"),
        (changed("spec.parameters.batchSize", {"type": "uniform", "low": 8, "high": 64}), 'spec.parameters["batchSize"]', "make the parameter type int"),
        (changed("spec.parameters.batchSize", {"type": "int", "low": 8.5, "high": 64}), 'spec.parameters["batchSize"]', "whole numbers"),
        (changed("spec.parameters.batchSize", {"type": "categorical"}), 'spec.parameters["batchSize"]', "needs values"),
        (changed("spec.parameters.batchSize", {"type": "categorical", "values": [32, 32]}), 'spec.parameters["batchSize"].values', "more than once"),
        (changed("spec.parameters.batchSize", {"type": "grid", "values": [32, 64]}), 'spec.parameters["batchSize"]', "type grid needs spec.algorithm: grid"),
        (changed("spec.parameters['extra.drop out']", {"type": "uniform", "low": 0.1, "high": 0.2}), 'spec.parameters["extra.drop out"]', "is not a flag name"),
        (changed("spec.maxTrials", 0), "spec.maxTrials", "greater than or equal to 1"),
        (changed("spec.parallelism", 9), "spec.parallelism", "more than spec.maxTrials (6)"),
        (changed("spec.algorithm", "grid"), 'spec.parameters["learningRate"]', "algorithm grid tries listed values only"),
        (
            changed("spec.parameters", {"batchSize": {"type": "grid", "values": [16, 32, 64, 128]}, "epochs": {"type": "grid", "values": [1, 2]}}, changed("spec.algorithm", "grid")),
            "spec.maxTrials",
            "the grid has 8 combinations but spec.maxTrials is 6",
        ),
        (changed("spec.objective.metric", "val loss"), "spec.objective.metric", "should match pattern"),
        (changed("spec.objective.goal", "lowest"), "spec.objective.goal", "'minimize' or 'maximize'"),
        (changed("spec.maxTrial", 5), "spec.maxTrial", "did you mean maxTrials?"),
        (changed("metadata.name", "a" * 49), "metadata.name", "at most 48 characters"),
    ],
)
def test_bad_input_is_one_line_naming_the_field(document: dict[str, Any], field: str, words: str) -> None:
    assert_one_line_naming(document, field, words)


def assert_one_line_naming(document: dict[str, Any], field: str, words: str) -> None:
    """Loading DOCUMENT fails with one problem, on FIELD, in one line that says WORDS."""
    with pytest.raises(InvalidTrainingSweep) as raised:
        load_training_sweep(document)
    problems = raised.value.problems
    assert len(problems) == 1, problems
    assert problems[0].field == field, problems
    assert words in problems[0].message, problems
    assert "\n" not in str(problems[0])


@pytest.mark.parametrize(
    ("parameters", "algorithm"),
    [
        ({"learningRate": {"type": "uniform", "low": 0.001, "high": 0.1, "step": 0.001}}, "random"),
        ({"batchSize": {"type": "int", "low": 16, "high": 128, "step": 16}}, "tpe"),
        ({"extra.dropout": {"type": "uniform", "low": 0.0, "high": 0.5}, "env.WARMUP": {"type": "categorical", "values": ["0", "100"]}}, "cmaes"),
        ({"batchSize": {"type": "grid", "values": [32, 64]}, "learningRate": {"type": "categorical", "values": [0.01, 0.001]}}, "grid"),
        ({"pretrained": {"type": "categorical", "values": [True, False]}}, "random"),
    ],
)
def test_good_search_spaces_load(parameters: dict[str, Any], algorithm: str) -> None:
    sweep = load_training_sweep(sweep_doc(parameters=parameters, algorithm=algorithm, parallelism=1))
    assert set(sweep.spec.parameters) == set(parameters)


def test_a_local_sweep_needs_no_image() -> None:
    document = sweep_doc()
    del document["spec"]["template"]["image"]
    with pytest.raises(InvalidTrainingSweep, match="spec.template.image"):
        load_training_sweep(document)
    assert load_training_sweep(document, local=True).spec.template.image == "local"


def test_committed_sweep_crd_matches_the_models() -> None:
    assert yaml.safe_load(CRD_FILE.read_text()) == training_sweep_crd(), (
        "regenerate it: trainrun crd --sweep > crds/trainrun.dev_trainingsweeps.yaml"
    )
    crd = training_sweep_crd()
    assert crd["spec"]["names"]["shortNames"] == ["trs"]
    columns = [column["name"] for column in crd["spec"]["versions"][0]["additionalPrinterColumns"] if "priority" not in column]
    assert columns == ["Phase", "Trials", "Best", "Progress", "Age"]
    template = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["template"]
    assert "default" not in template["properties"]["hyperparameters"]["properties"]["epochs"]


# ---- trials: made from the plan, observed as the cluster would show them ----


def trial_with(created: dict[str, Any], *, phase: str | None = None, values: list[float] = (), final: float | None = None, cancel: bool = False) -> dict[str, Any]:  # type: ignore[assignment]
    """A created trial as the operator would later see it: its phase, its objective by epoch (1, 2, ...)."""
    trial = copy.deepcopy(created)
    status: dict[str, Any] = {}
    if phase is not None:
        status["phase"] = phase
    if phase in ("Completed", "Failed", "Cancelled"):
        status["metricsFinal"] = True  # the operator read its logs to their end
    if values:
        status["series"] = {"metric": "val_loss", "points": [{"epoch": index + 1, "step": 10 * (index + 1), "value": value} for index, value in enumerate(values)]}
        status["metrics"] = {"val_loss": values[-1] if final is None else final}
    trial["status"] = status
    if cancel:
        trial["spec"]["cancel"] = True
    return trial


MOST_UNFINISHED: list[int] = []  # of the latest run_sweep: the most trials whose runs had not finished at once


def run_sweep(document: dict[str, Any], script: Callable[[int, dict[str, Any]], dict[str, Any]], *, rounds: int = 20) -> tuple[dict[str, dict[str, Any]], list[Any]]:
    """Plan, create, let the script say what each trial did, plan again: the trials and every plan."""
    trials: dict[str, dict[str, Any]] = {}
    plans = []
    MOST_UNFINISHED[:] = [0]
    for _ in range(rounds):
        plan = plan_sweep(document, list(trials.values()), now=NOW)
        plans.append(plan)
        for created in plan.creates:
            trials.setdefault(created["metadata"]["name"], created)
        for patch in plan.patches:
            trial = trials[patch.name]
            trial["metadata"]["annotations"].update(patch.patch.get("metadata", {}).get("annotations", {}))
            trial["spec"].update(patch.patch.get("spec", {}))
        MOST_UNFINISHED[0] = max(MOST_UNFINISHED[0], sum(1 for trial in trials.values() if not run_finished(trial)))
        for name, trial in list(trials.items()):
            trials[name] = script(int(name.rsplit("-", 1)[1]), trial)
        document = {**document, "status": plan.status_patch}
        if plan.status.phase is not None and plan.status.phase.finished:
            break
    return trials, plans


def test_trials_are_training_runs_owned_by_the_sweep_with_their_parameters() -> None:
    plan = plan_sweep(sweep_doc(), [], now=NOW)
    assert [created["metadata"]["name"] for created in plan.creates] == ["tune-0", "tune-1"]
    created = plan.creates[0]
    assert created["metadata"]["labels"] == {SWEEP_LABEL: "tune"}
    assert created["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert created["metadata"]["annotations"][SERIES_ANNOTATION] == "val_loss"
    parameters = json.loads(created["metadata"]["annotations"]["trainrun.dev/parameters"])
    assert created["spec"]["hyperparameters"] == {"epochs": 4, **parameters}
    run = load_training_run(created)  # a valid TrainingRun
    assert run.spec.hyperparameters.batch_size in (32, 64, 128)
    assert [event.reason for event in plan.events] == ["TrialStarted", "TrialStarted"]


@pytest.mark.parametrize("algorithm", ["random", "tpe", "cmaes", "grid"])
def test_the_same_history_gives_the_same_suggestions(algorithm: str) -> None:
    parameters = (
        {"batchSize": {"type": "grid", "values": [32, 64, 128]}, "learningRate": {"type": "categorical", "values": [0.01, 0.001]}}
        if algorithm == "grid"
        else {"learningRate": {"type": "logUniform", "low": 1e-4, "high": 1e-1}, "epochs": {"type": "int", "low": 1, "high": 8}}
    )
    document = sweep_doc(parameters=parameters, algorithm=algorithm, maxTrials=6, parallelism=1)

    def finish(number: int, trial: dict[str, Any]) -> dict[str, Any]:
        if trial.get("status", {}).get("phase") == "Completed":
            return trial
        return trial_with(trial, phase="Completed", values=[1.0 / (number + 2)])

    first, _ = run_sweep(document, finish)
    second, _ = run_sweep(document, finish)
    assert len(first) == 6
    names = sorted(first)
    assert [first[name]["metadata"]["annotations"]["trainrun.dev/parameters"] for name in names] == [
        second[name]["metadata"]["annotations"]["trainrun.dev/parameters"] for name in names
    ]
    suggested = {first[name]["metadata"]["annotations"]["trainrun.dev/parameters"] for name in names}
    assert len(suggested) == 6, "every trial gets parameters of its own"
    # A rebuild from the objects (a restarted operator) asks the same for the next trial as the first pass did.
    history = [trial for name, trial in first.items() if name != "tune-5"]
    again = plan_sweep({**document, "status": {}}, history, now=NOW)
    assert again.creates[0]["metadata"]["annotations"]["trainrun.dev/parameters"] == first["tune-5"]["metadata"]["annotations"]["trainrun.dev/parameters"]


def test_another_sweep_uid_suggests_differently() -> None:
    one = plan_sweep(sweep_doc(algorithm="random"), [], now=NOW).creates[0]
    other_doc = sweep_doc(algorithm="random")
    other_doc["metadata"]["uid"] = "uid-2"
    other = plan_sweep(other_doc, [], now=NOW).creates[0]
    assert one["spec"]["hyperparameters"] != other["spec"]["hyperparameters"]


def test_grid_tries_every_combination_once_and_then_completes() -> None:
    document = sweep_doc(
        algorithm="grid",
        parameters={"batchSize": {"type": "grid", "values": [32, 64, 128]}, "learningRate": {"type": "categorical", "values": [0.01, 0.001]}},
        maxTrials=10,
        parallelism=3,
    )
    trials, plans = run_sweep(document, lambda number, trial: trial_with(trial, phase="Completed", values=[float(number)]))
    combos = {(trial["spec"]["hyperparameters"]["batchSize"], trial["spec"]["hyperparameters"]["learningRate"]) for trial in trials.values()}
    assert len(trials) == 6 and len(combos) == 6
    assert plans[-1].status.phase is Phase.COMPLETED and plans[-1].status.reason == "AllTrialsDone"
    assert plans[-1].status.best is not None and plans[-1].status.best.trial == "tune-0"


# ---- pruning decisions from the objective's values by position ----


def view(number: int, state: TrialState, values: list[float], value: float | None = None) -> TrialView:
    return TrialView(
        number=number,
        name=f"tune-{number}",
        parameters={"learningRate": 0.01, "batchSize": 32},
        state=state,
        value=value if value is not None else (values[-1] if values and state is TrialState.COMPLETED else None),
        intermediate={index + 1: item for index, item in enumerate(values)},
    )


DONE = [view(0, TrialState.COMPLETED, [1.0, 0.8, 0.6, 0.5]), view(1, TrialState.COMPLETED, [1.1, 0.9, 0.7, 0.6]), view(2, TrialState.COMPLETED, [0.9, 0.7, 0.5, 0.4])]


@pytest.mark.parametrize(
    ("early", "others", "running", "prune"),
    [
        pytest.param({"type": "median", "startupTrials": 3}, DONE, [2.0, 1.9], True, id="clearly worse than the median at epoch 2"),
        pytest.param({"type": "median", "startupTrials": 3}, DONE, [0.9, 0.7], False, id="at the median"),
        pytest.param({"type": "median", "startupTrials": 3}, DONE, [0.5], False, id="better than all"),
        pytest.param({"type": "median", "startupTrials": 3}, DONE, [], False, id="nothing reported yet"),
        pytest.param({"type": "median", "startupTrials": 4}, DONE, [2.0, 1.9], False, id="fewer finished trials than startupTrials"),
        pytest.param({"type": "median", "startupTrials": 3, "minSteps": 3}, DONE, [2.0, 1.9], False, id="before minSteps"),
        pytest.param({"type": "median", "startupTrials": 3, "minSteps": 3}, DONE, [2.0, 1.9, 1.8], True, id="at minSteps"),
        pytest.param({"type": "median", "startupTrials": 1}, DONE[:1] + [view(1, TrialState.PRUNED, [3.0, 3.0])], [2.0, 1.9], True, id="a pruned trial is no finished one"),
        pytest.param({"type": "median", "startupTrials": 3}, DONE, [2.0, 0.3], False, id="best value so far counts"),
    ],
)
def test_pruning_decisions(early: dict[str, Any], others: list[TrialView], running: list[float], prune: bool) -> None:
    sweep = load_training_sweep(sweep_doc(earlyStopping=early, maxTrials=10)).spec
    trial = view(len(others), TrialState.RUNNING, running)
    study = SweepStudy(sweep, [*others, trial], uid="uid-1")
    assert study.should_prune(trial).prune is prune


def test_maximize_prunes_the_low_ones() -> None:
    sweep = load_training_sweep(sweep_doc(earlyStopping={"type": "median", "startupTrials": 3}, objective={"metric": "val_accuracy", "goal": "maximize"})).spec
    low = view(3, TrialState.RUNNING, [0.1, 0.2])
    high = view(4, TrialState.RUNNING, [2.0, 2.0])
    study = SweepStudy(sweep, [*DONE, low, high], uid="uid-1")
    assert study.should_prune(low).prune and not study.should_prune(high).prune


def test_hyperband_decides_from_the_recorded_rungs() -> None:
    sweep = load_training_sweep(sweep_doc(earlyStopping={"type": "hyperband", "minSteps": 1}, maxTrials=10)).spec
    trial = view(3, TrialState.RUNNING, [5.0, 5.0, 5.0, 5.0])
    decision = SweepStudy(sweep, [*DONE, trial], uid="uid-1").should_prune(trial)
    again = SweepStudy(sweep, [*DONE, trial], uid="uid-1").should_prune(trial)
    assert decision == again


# ---- the plan and the sweep's status from its trials ----


def scripted(worse: set[int], *, epochs: int = 4) -> Callable[[int, dict[str, Any]], dict[str, Any]]:
    """Each round a trial reports one more epoch; the ones in ``worse`` report 10x the loss; a trial the
    sweep stopped is Cancelled; a trial that reported every epoch is Completed."""

    def step(number: int, trial: dict[str, Any]) -> dict[str, Any]:
        status = trial.get("status") or {}
        if status.get("phase") in ("Completed", "Cancelled", "Failed"):
            return trial
        if trial["spec"].get("cancel"):
            points = (status.get("series") or {}).get("points") or []
            return trial_with(trial, phase="Cancelled", values=[point["value"] for point in points])
        done = len((status.get("series") or {}).get("points") or [])
        scale = 10.0 if number in worse else 1.0 - number / 1000  # each good trial a little better
        values = [scale / (epoch + 1) for epoch in range(done + 1)]
        return trial_with(trial, phase="Completed" if len(values) == epochs else "Running", values=values)

    return step


def test_a_sweep_prunes_losers_never_runs_more_than_parallelism_and_finds_the_best() -> None:
    document = sweep_doc(maxTrials=12, parallelism=3, earlyStopping={"type": "median", "startupTrials": 3}, algorithm="random")
    worse = {4, 5, 7, 9, 10}
    trials, plans = run_sweep(document, scripted(worse), rounds=60)
    assert len(trials) == 12
    assert MOST_UNFINISHED[0] == 3, "a pruned trial keeps its place until its run has stopped"
    final = plans[-1].status
    assert final.phase is Phase.COMPLETED, final.message
    assert final.best is not None and final.best.trial == "tune-11"
    pruned = {name for name, trial in trials.items() if PRUNED_ANNOTATION in trial["metadata"]["annotations"]}
    assert pruned and pruned <= {f"tune-{number}" for number in worse}
    assert final.counts.pruned == len(pruned) and final.counts.completed == 12 - len(pruned)
    assert final.trials_summary == f"{12 - len(pruned)}/0/{len(pruned)}/0 of 12"
    assert final.best_summary == f"val_loss={final.best.value:.4g} (tune-11)"
    conditions = {condition.type: condition.status for condition in final.conditions}
    assert conditions == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}
    reasons = {event.reason for plan in plans for event in plan.events}
    assert {"TrialStarted", "TrialPruned", "NewBest"} <= reasons


def test_a_trial_update_while_every_place_is_taken_rebuilds_no_study(monkeypatch: pytest.MonkeyPatch) -> None:
    """The study's rebuild grows with the trials (bench_sweep_scale.py): it is made only when it decides something."""
    import trainrun.sweep.plan as plan_module

    built: list[int] = []
    real = plan_module._study

    def counting(*args: Any, **kwargs: Any) -> SweepStudy:
        built.append(len(args[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(plan_module, "_study", counting)
    document = sweep_doc(maxTrials=6, parallelism=2)
    first = plan_sweep(document, [], now=NOW)
    document = {**document, "status": first.status_patch}
    running = [trial_with(created, phase="Running", values=[0.5]) for created in first.creates]
    busy = plan_sweep(document, running, now=NOW)
    assert built == [0], "no place free and no pruner: nothing for a study to decide"
    assert not busy.creates and not busy.patches and busy.status.phase is Phase.RUNNING
    assert busy.status.message == "2 running, 0 completed, 0 pruned, 0 failed"
    freed = plan_sweep(document, [trial_with(first.creates[0], phase="Completed", values=[0.4]), running[1]], now=NOW)
    assert built == [0, 2] and [trial["metadata"]["name"] for trial in freed.creates] == ["tune-2"]
    pruning = changed("spec.earlyStopping", {"type": "median"}, document)
    plan_sweep(pruning, running, now=NOW)
    assert built == [0, 2, 2], "a pruner looks at the running trials on every pass"


@pytest.mark.parametrize(
    ("outcome", "spec", "phase", "reason", "words"),
    [
        pytest.param(lambda n, t: trial_with(t, phase="Failed"), {"maxFailedTrials": 2}, Phase.FAILED, "TooManyFailedTrials", "2 trials failed", id="too many failures"),
        pytest.param(
            lambda n, t: {**t, "status": {"phase": "Completed", "metricsFinal": True, "metrics": {"loss": 0.1, "accuracy": 0.9}}},
            {},
            Phase.FAILED,
            "MetricNotReported",
            "tune-0 completed without reporting val_loss (it reports: accuracy, loss)",
            id="a metric no trial reports",
        ),
        pytest.param(lambda n, t: trial_with(t, phase="Completed", values=[0.05]), {"objective": {"metric": "val_loss", "target": 0.1}}, Phase.COMPLETED, "TargetReached", "reached the target", id="target reached"),
        pytest.param(lambda n, t: trial_with(t, phase="Running", values=[0.5]), {"cancel": True}, Phase.CANCELLED, "Cancelled", "cancelled", id="cancelled"),
    ],
)
def test_how_a_sweep_ends(outcome: Callable[[int, dict[str, Any]], dict[str, Any]], spec: dict[str, Any], phase: Phase, reason: str, words: str) -> None:
    trials, plans = run_sweep(sweep_doc(**spec), outcome)
    final = plans[-1].status
    assert (final.phase, final.reason) == (phase, reason), final.message
    assert words in (final.message or "")
    stalled = next(condition for condition in final.conditions if condition.type == "Stalled")
    assert stalled.status == ("True" if phase is Phase.FAILED else "False")


def test_the_deadline_cancels_running_trials_and_keeps_the_best() -> None:
    document = sweep_doc(activeDeadlineSeconds=600)
    first = plan_sweep(document, [], now=NOW)
    done = trial_with(first.creates[0], phase="Completed", values=[0.3])
    running = trial_with(first.creates[1], phase="Running", values=[0.5])
    later = plan_sweep({**document, "status": first.status_patch}, [done, running], now=LATER)
    assert later.status.phase is Phase.COMPLETED and later.status.reason == "DeadlineExceeded"
    assert [patch.name for patch in later.patches] == ["tune-1"] and later.patches[0].patch == {"spec": {"cancel": True}}
    assert first.requeue_after == 600


@pytest.mark.parametrize(
    ("metrics_final", "phase", "reason"),
    [
        pytest.param(None, Phase.RUNNING, "Searching", id="its logs are still being read: its objective may still come"),
        pytest.param(True, Phase.FAILED, "MetricNotReported", id="read to their end without it: the sweep says so"),
    ],
)
def test_a_trial_completed_before_its_objective_was_read_is_waited_for(metrics_final: bool | None, phase: Phase, reason: str) -> None:
    """A run is Completed when its job succeeded, while the operator may still be reading its logs' end (it was
    away, say): until the trial's status says its metrics are final the sweep waits for the objective instead of
    failing the trial, however long that takes, and the trial keeps its place in parallelism."""
    document = sweep_doc(parallelism=1, maxTrials=3)
    first = plan_sweep(document, [], now=NOW)
    status = {"phase": "Completed", "completionTime": NOW, **({"metricsFinal": metrics_final} if metrics_final else {})}
    completed = {**trial_with(first.creates[0]), "status": status}
    a_day_later = (datetime(2026, 12, 5, 10, 0, 0, tzinfo=UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    later = plan_sweep({**document, "status": first.status_patch}, [completed], now=a_day_later)
    assert (later.status.phase, later.status.reason) == (phase, reason), later.status.message
    assert later.creates == []  # the waited-for trial keeps its place
    assert later.requeue_after is None  # its status's change comes through the trials' watch


def test_an_invalid_sweep_is_stalled_naming_the_field() -> None:
    plan = plan_sweep(changed("spec.maxTrials", 0), [], now=NOW)
    assert plan.creates == [] and plan.status.phase is Phase.FAILED and plan.status.reason == "InvalidSpec"
    assert (plan.status.message or "").startswith("spec.maxTrials:")


def test_trials_of_another_sweep_of_that_name_do_not_count() -> None:
    created = plan_sweep(sweep_doc(), [], now=NOW).creates[0]
    stranger = copy.deepcopy(created)
    stranger["metadata"]["ownerReferences"][0]["uid"] = "old-uid"
    plan = plan_sweep(sweep_doc(), [trial_with(stranger, phase="Completed", values=[0.1])], now=NOW)
    assert plan.status.counts.created == 0


# ---- status.series: the objective's values by position, kept across restarts ----


@pytest.mark.parametrize(
    ("previous", "samples", "expected"),
    [
        (None, [MetricSample("val_loss", 0.9, epoch=1, step=10)], [(1, 10, 0.9)]),
        (None, [MetricSample("loss", 0.9, epoch=1, step=10)], []),
        (
            MetricSeries(metric="val_loss", points=[SeriesPoint(epoch=1, step=10, value=0.9)]),
            [MetricSample("val_loss", 0.9, epoch=1, step=10), MetricSample("val_loss", 0.7, epoch=2, step=20)],
            [(1, 10, 0.9), (2, 20, 0.7)],
        ),
        (MetricSeries(metric="train_loss", points=[SeriesPoint(epoch=1, step=10, value=2.0)]), [], []),
        (None, [MetricSample("val_loss", float(n), epoch=n, step=n) for n in range(150)], [(n, n, float(n)) for n in range(50, 150)]),
    ],
)
def test_series_status_merges_and_bounds(previous: MetricSeries | None, samples: list[MetricSample], expected: list[tuple[int, int, float]]) -> None:
    run = load_training_run(plan_sweep(sweep_doc(), [], now=NOW).creates[0])
    series = series_status(run, previous, samples)
    assert series is not None and series.metric == "val_loss"
    assert [(point.epoch, point.step, point.value) for point in series.points] == expected


def test_a_run_without_the_annotation_keeps_no_series() -> None:
    run = load_training_run(plan_sweep(sweep_doc(), [], now=NOW).creates[0])
    run.metadata.annotations.pop(SERIES_ANNOTATION)
    assert series_status(run, None, [MetricSample("val_loss", 0.9, epoch=1)]) is None


def test_a_trial_whose_value_the_space_no_longer_holds_is_rebuilt_without_it() -> None:
    """The sweep's bounds changed after the trial was made: the study is still rebuilt, and asks on."""
    sweep = load_training_sweep(sweep_doc(maxTrials=10)).spec
    old = TrialView(number=0, name="tune-0", parameters={"learningRate": 0.5, "batchSize": 256}, state=TrialState.COMPLETED, value=0.3)
    study = SweepStudy(sweep, [old], uid="uid-1")
    assert study.study.trials[0].params == {}
    assert set(study.suggest(1).parameters) == {"learningRate", "batchSize"}
