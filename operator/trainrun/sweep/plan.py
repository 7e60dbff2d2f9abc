"""``plan_sweep``: a TrainingSweep and its trials as observed -> everything to do now, decided in one pass.

Called by the operator's sweep controller (``trainrun.controller.sweeps``) on every reconcile; the
controller only acts: it creates the trials the plan names (create-only: a name that exists is left as it
is), patches the ones it stops, posts the Events and writes the status. The study is rebuilt from the trial
objects each time (``trainrun.sweep.study``), so the plan is the same after a restart for the same trials.

Rules, in order: a sweep that does not parse fails (Stalled) naming the field; a finished sweep stays
finished; cancel, the deadline, too many failed trials, and an objective that no trial reports end it
(running trials are cancelled); otherwise losing trials are pruned, and new trials are created up to
``parallelism`` running and ``maxTrials`` in all (a grid: its combinations), until the target is reached.
A sweep with ``spec.register`` that would be Completed stays Running (reason Registering) until the best
trial's model is registered or refused (``registration_step``): the controller reads that trial and runs the
request ``best_trial_registration`` builds through the run's registrar. Pure: ``now`` is given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from trainrun.base.registry import SWEEP_OBJECTIVE_TAG, SWEEP_PARAMETERS_TAG, SWEEP_TAG, SWEEP_UID_TAG
from trainrun.spec import InvalidTrainingSweep, OperatorConfig, TrainingRun, load_training_sweep
from trainrun.spec.status import Condition, ModelVersion, Phase, TrainingRunStatus
from trainrun.spec.sweep import TrainingSweep, TrainingSweepSpec, grid_size
from trainrun.spec.sweepstatus import (
    MAX_TRIAL_SUMMARIES,
    BestTrial,
    TrainingSweepStatus,
    TrialCounts,
    TrialState,
    TrialSummary,
)
from trainrun.status.conditions import kstatus_conditions
from trainrun.status.phase import Verdict
from trainrun.status.registration import (
    RegistrationState,
    copy_registration,
    registered_condition,
    registration_verdict,
)
from trainrun.status.shapes import timestamp
from trainrun.status.transitions import PhaseEvent
from trainrun.status.work import Attempts, Register, Registration, due, failure_words
from trainrun.sweep.trials import (
    TrialView,
    notes_annotation,
    owned_by,
    pruned_mark,
    reported_metrics,
    run_finished,
    stopping,
    trial_object,
    trial_view,
)

if TYPE_CHECKING:
    from trainrun.sweep.study import SweepStudy  # Optuna: imported at the first study (_study)

Object = dict[str, Any]
# Event reasons of a sweep.
TRIAL_STARTED, TRIAL_PRUNED, TRIAL_FAILED, NEW_BEST = "TrialStarted", "TrialPruned", "TrialFailed", "NewBest"
MODEL_REGISTERED, REGISTRATION_REFUSED, REGISTRY_FAILING = "ModelRegistered", "RegistrationRefused", "RegistryFailing"
REGISTER_FIELD = "spec.register"


@dataclass(frozen=True)
class TrialPatch:
    """What to change on one trial: annotations to add (the pruned mark, Optuna's notes), and whether to stop it."""

    name: str
    annotations: Mapping[str, str] = field(default_factory=dict)
    cancel: bool = False

    @property
    def patch(self) -> Object:
        """The change as a JSON merge patch of the TrainingRun."""
        patch: Object = {"metadata": {"annotations": dict(self.annotations)}} if self.annotations else {}
        if self.cancel:
            patch["spec"] = {"cancel": True}
        return patch


@dataclass(frozen=True)
class SweepPlan:
    """What the controller does for one sweep now, in order: create, patch, post Events, write status."""

    sweep: TrainingSweep | None
    status: TrainingSweepStatus
    creates: list[Object] = field(default_factory=list)
    patches: list[TrialPatch] = field(default_factory=list)
    events: list[PhaseEvent] = field(default_factory=list)
    requeue_after: float | None = None
    register: str | None = None  # register the model of this trial (the best): ``best_trial_registration``

    @property
    def status_patch(self) -> dict[str, object]:
        return self.status.to_patch()


def _study(spec: TrainingSweepSpec, views: Sequence[TrialView], *, uid: str) -> SweepStudy:
    """The sweep's Optuna study, rebuilt from its trials; Optuna is imported here, at the first study."""
    from trainrun.sweep.study import SweepStudy

    return SweepStudy(spec, views, uid=uid)


def plan_sweep(
    body: Mapping[str, Any],
    trials: Sequence[Mapping[str, Any]],
    *,
    now: str,
    config: OperatorConfig | None = None,
    registration: Attempts[Registration] | None = None,
    local: bool = False,
) -> SweepPlan:
    """The plan for a sweep (its object as the API serves it) and the TrainingRuns labelled with its name.

    ``config``: the operator configuration (its default registry); ``registration``: what the tries of
    registering the best trial's model brought (the controller's facts; none after a restart); ``local``:
    the trials are local runs (``trainrun sweep --local``: the template needs no image)."""
    previous = TrainingSweepStatus.model_validate(body.get("status") or {})
    generation = (body.get("metadata") or {}).get("generation")
    try:
        sweep = load_training_sweep(body, local=local)
    except InvalidTrainingSweep as error:
        verdict = Verdict(Phase.FAILED, "InvalidSpec", str(error), stalled=True)
        return SweepPlan(None, _status(verdict, previous, generation, now, views=[], best=None, limit=0))
    spec = sweep.spec
    objective = spec.objective
    maximize = objective.goal == "maximize"
    owned = [trial for trial in trials if owned_by(trial, sweep.metadata.uid)]
    by_view = {
        view.number: (view, trial)
        for trial in owned
        if (view := trial_view(trial, metric=objective.metric, by=_by(sweep))) is not None
    }
    views = [view for view, _ in sorted(by_view.values(), key=lambda item: item[0].number)]
    limit = min(spec.max_trials, grid_size(spec.parameters)) if spec.algorithm == "grid" else spec.max_trials
    best = _best(sweep, views)
    events = _trial_events(views, best)

    def done(verdict: Verdict, *, cancel_running: bool = False, sticky: bool = False) -> SweepPlan:
        patches = [
            TrialPatch(view.name, cancel=True)
            for view, trial in by_view.values()
            if cancel_running and view.state is TrialState.RUNNING and not stopping(trial)
        ]
        step = None if sticky else registration_step(sweep, verdict, previous, best, owned, config, registration or Attempts(), now)
        if step is not None:
            verdict = step.verdict
            events.extend(step.events)
        status = _status(
            verdict, previous, generation, now, views=views, best=best, limit=limit, maximize=maximize, registration=step
        )
        return SweepPlan(
            sweep,
            status,
            patches=patches,
            events=events,
            register=step.register if step is not None else None,
            requeue_after=step.requeue_after if step is not None else None,
        )

    if previous.phase is not None and previous.phase.finished:
        sticky = Verdict(previous.phase, previous.reason or previous.phase.value, previous.message or "")
        return done(sticky, cancel_running=True, sticky=True)
    counts = _counts(views)
    started = previous.start_time or now
    if spec.cancel:
        return done(Verdict(Phase.CANCELLED, "Cancelled", "cancelled (spec.cancel)"), cancel_running=True)
    deadline = _deadline(sweep, started)
    clock = timestamp(now)
    if deadline is not None and clock is not None and clock >= deadline:
        words = f"spec.activeDeadlineSeconds ({spec.active_deadline_seconds}) passed"
        verdict = _ended(best, "DeadlineExceeded", words)
        return done(verdict, cancel_running=True)
    if counts.failed >= spec.max_failed_trials:
        failures = "; ".join(f"{view.name}: {view.message}" for view in views if view.state is TrialState.FAILED)
        words = f"{counts.failed} trials failed (spec.maxFailedTrials is {spec.max_failed_trials}): {failures}"
        return done(Verdict(Phase.FAILED, "TooManyFailedTrials", words, stalled=True), cancel_running=True)
    unreported = _objective_unreported(sweep, views, by_view)
    if unreported is not None:
        return done(Verdict(Phase.FAILED, "MetricNotReported", unreported, stalled=True), cancel_running=True)
    target_reached = best is not None and objective.target is not None and _better_or_equal(sweep, best.value, objective.target)
    # A trial told to stop takes its place until its run has stopped; a Completed one until its objective is read.
    occupied = sum(1 for view, trial in by_view.values() if not run_finished(trial) or view.state is TrialState.RUNNING)
    free = [number for number in range(limit) if number not in by_view]
    if not occupied and (target_reached or not free):
        if target_reached:
            assert best is not None and objective.target is not None
            return done(_ended(best, "TargetReached", f"{best.trial} reached the target {objective.metric}={objective.target:g}"))
        return done(_ended(best, "AllTrialsDone", f"all {len(views)} trials are done"))

    starting = [] if target_reached else free[: max(0, spec.parallelism - occupied)]
    # The study is rebuilt (at a cost that grows with the trials) only when it has something to decide: a pruner's
    # verdicts, or the parameters of new trials. A trial's status update while every place is taken needs neither.
    deciding = spec.early_stopping is not None or bool(starting)
    study = _study(spec, views, uid=sweep.metadata.uid or sweep.metadata.name) if deciding else None
    patches: list[TrialPatch] = []
    for view in views:
        trial = by_view[view.number][1]
        if study is None or spec.early_stopping is None or view.state is not TrialState.RUNNING or stopping(trial) or run_finished(trial):
            continue  # without a pruner nothing is ever pruned; a finished run is not
        decision = study.should_prune(view)
        if decision.prune:
            position = max(view.intermediate)
            value = view.intermediate[position]
            words = f"{objective.metric}={value:.4g} at {_by(sweep)} {position} is worse than the other trials'"
            patches.append(TrialPatch(view.name, pruned_mark(position=position, value=value, message=words), cancel=True))
            events.append(PhaseEvent("Normal", TRIAL_PRUNED, f"{view.name} pruned: {words}"))
            # It keeps its place until its run has stopped: parallelism counts what runs, not what was decided.
        elif dict(decision.notes) != dict(view.notes) and spec.early_stopping is not None:
            patches.append(TrialPatch(view.name, notes_annotation(decision.notes)))
    creates: list[Object] = []
    template = (body.get("spec") or {}).get("template") or {}
    for number in starting:
        assert study is not None
        suggestion = study.suggest(number)
        created = trial_object(sweep, template, suggestion)
        creates.append(created)
        shown = ", ".join(f"{name}={value}" for name, value in sorted(suggestion.parameters.items()))
        events.append(PhaseEvent("Normal", TRIAL_STARTED, f"{created['metadata']['name']} started: {shown}"))
    verdict = Verdict(Phase.RUNNING, "Searching", _running_words(counts, len(creates), best, target_reached))
    status = _status(verdict, previous, generation, now, views=views, best=best, limit=limit, maximize=maximize, started=started)
    # A trial whose objective is still being read comes back through the trials' watch once its status says so.
    requeue = max(0.0, (deadline - clock).total_seconds()) if deadline is not None and clock is not None else None
    return SweepPlan(sweep, status, creates=creates, patches=patches, events=events, requeue_after=requeue)


@dataclass(frozen=True)
class RegistrationStep:
    """Where the registration of the best trial's model stands this pass: the sweep's verdict (Running,
    reason Registering or RegistryUnavailable, until the version is known or refused), the state the status
    shows (``status.model``, the Registered condition), the Events, and the work to start or when to look again."""

    verdict: Verdict
    state: RegistrationState
    events: tuple[PhaseEvent, ...] = ()
    register: str | None = None
    requeue_after: float | None = None


def registration_step(
    sweep: TrainingSweep,
    verdict: Verdict,
    previous: TrainingSweepStatus,
    best: BestTrial | None,
    trials: Sequence[Mapping[str, Any]],
    config: OperatorConfig | None,
    attempts: Attempts[Registration],
    now: str,
) -> RegistrationStep | None:
    """The best trial's model is registered once the sweep is Completed (none when it failed or was cancelled,
    nor without spec.register): from its verified copy (``status.artifacts``), at most once (the recorded
    ``status.model``; a restarted operator's try finds the version by the sweep's uid), again after a failure
    once its back-off has passed; a refusal ends the sweep Completed with Registered=False."""
    register = sweep.spec.registration
    if register is None or best is None or verdict.phase is not Phase.COMPLETED:
        return None
    key = (config.registry_named(register.registry)[0] if config is not None else register.registry) or "(default)"
    result = attempts.result
    if previous.model is not None:
        state = RegistrationState(previous.model.registry, register.name, model=previous.model)
    elif result is not None:
        state = RegistrationState(key, register.name, model=result.model, refused=result.refused)
    elif not _verified(trials, best.trial):
        words = f"{best.trial} has no verified copy of its outputs (status.artifacts): there is no model to register"
        state = RegistrationState(key, register.name, refused=f"{REGISTER_FIELD}: {words}")
    else:
        what = f"registering model {register.name} of {best.trial} in registry {key}"
        state = RegistrationState(key, register.name, problem=failure_words(what, attempts))
        start, wait = due(attempts, timestamp(now) or datetime.min)
        held = registration_verdict(verdict, state)  # Uploading for a run: a sweep says Running
        running = Verdict(Phase.RUNNING, held.reason, held.message)
        failing = state.problem is not None and previous.reason != running.reason
        warned = (PhaseEvent("Warning", REGISTRY_FAILING, held.message),) if failing else ()
        return RegistrationStep(running, state, events=warned, register=best.trial if start else None, requeue_after=wait)
    ended = registration_verdict(verdict, state)
    events: tuple[PhaseEvent, ...] = ()
    if state.model is not None and previous.model is None:
        model = state.model
        words = f"registered {best.trial}'s model as {model.name} version {model.version} in registry {model.registry}: {model.uri}"
        events = (PhaseEvent("Normal", MODEL_REGISTERED, words),)
    elif state.refused is not None:
        events = (PhaseEvent("Warning", REGISTRATION_REFUSED, f"the model of {best.trial} was not registered: {state.refused}"),)
    return RegistrationStep(ended, state, events=events)


def _verified(trials: Sequence[Mapping[str, Any]], name: str) -> bool:
    for trial in trials:
        if (trial.get("metadata") or {}).get("name") == name:
            artifacts = (trial.get("status") or {}).get("artifacts") or {}
            return bool(artifacts.get("uri") and artifacts.get("manifestUri"))
    return False


def best_trial_registration(
    sweep: TrainingSweep, best: BestTrial, trial: TrainingRun, status: TrainingRunStatus, config: OperatorConfig
) -> Register | str:
    """The request that registers the best trial's model (``spec.register``) from its verified copy, or why it
    cannot be: the run's own request (``copy_registration``: its identity, run uid, manifest, metrics and
    hyperparameters as tags) found again by the sweep's uid, with the sweep's name, the trial's parameters and
    objective value as tags."""
    register = sweep.spec.registration
    if register is None:
        return f"{REGISTER_FIELD} is not set"
    key = config.registry_named(register.registry)[0]
    if key is None:
        return f"{REGISTER_FIELD}.registry: none is named and the operator configuration has no defaultRegistry"
    uid = sweep.metadata.uid or f"{sweep.metadata.namespace}/{sweep.metadata.name}"
    more = [
        (SWEEP_TAG, sweep.metadata.name),
        (SWEEP_PARAMETERS_TAG, json.dumps(best.parameters, sort_keys=True)),
        (SWEEP_OBJECTIVE_TAG, f"{best.metric}={best.value:.6g}"),
    ]
    work = copy_registration(trial, status, register, key, found_by=(SWEEP_UID_TAG, uid), more_tags=more, field=REGISTER_FIELD)
    if work is None:
        return f"{REGISTER_FIELD}: {best.trial} has no verified copy of its outputs (status.artifacts)"
    return work


def _by(sweep: TrainingSweep) -> str:
    stopping_rule = sweep.spec.early_stopping
    return stopping_rule.by if stopping_rule is not None else "epoch"


def _deadline(sweep: TrainingSweep, started: str) -> datetime | None:
    seconds = sweep.spec.active_deadline_seconds
    start = timestamp(started)
    return start + timedelta(seconds=seconds) if seconds is not None and start is not None else None


def _better_or_equal(sweep: TrainingSweep, value: float, than: float) -> bool:
    return value >= than if sweep.spec.objective.goal == "maximize" else value <= than


def _best(sweep: TrainingSweep, views: Sequence[TrialView]) -> BestTrial | None:
    """The best completed trial (the lowest number among equals)."""
    best: TrialView | None = None
    for view in views:
        if view.state is not TrialState.COMPLETED or view.value is None:
            continue
        if best is None or (best.value is not None and _better(sweep, view.value, best.value)):
            best = view
    if best is None or best.value is None:
        return None
    return BestTrial(trial=best.name, parameters=dict(best.parameters), metric=sweep.spec.objective.metric, value=best.value)


def _better(sweep: TrainingSweep, value: float, than: float) -> bool:
    return value > than if sweep.spec.objective.goal == "maximize" else value < than


def _ended(best: BestTrial | None, reason: str, words: str) -> Verdict:
    """Completed with a best trial; Failed without one (no trial completed)."""
    if best is None:
        return Verdict(Phase.FAILED, "NoTrialCompleted", f"{words}, and no trial completed", stalled=True)
    return Verdict(Phase.COMPLETED, reason, f"{words}; best: {best.trial} {best.metric}={best.value:.4g}")


def _objective_unreported(
    sweep: TrainingSweep, views: Sequence[TrialView], by_view: Mapping[int, tuple[TrialView, Mapping[str, Any]]]
) -> str | None:
    """Words for a sweep whose finished trials never reported the objective (None: one did, or none finished)."""
    metric = sweep.spec.objective.metric
    unreported = [view for view in views if view.message == f"completed without reporting {metric}"]
    if not unreported or any(view.value is not None or view.intermediate for view in views):
        return None
    first = unreported[0]
    reports = ", ".join(reported_metrics(by_view[first.number][1])) or "no metrics"
    return f"{first.name} completed without reporting {metric} (it reports: {reports}); set spec.objective.metric to one of them"


def _counts(views: Sequence[TrialView]) -> TrialCounts:
    def count(state: TrialState) -> int:
        return sum(1 for view in views if view.state is state)

    return TrialCounts(
        created=len(views),
        running=count(TrialState.RUNNING),
        completed=count(TrialState.COMPLETED),
        pruned=count(TrialState.PRUNED),
        failed=count(TrialState.FAILED),
        cancelled=count(TrialState.CANCELLED),
    )


def _running_words(counts: TrialCounts, creating: int, best: BestTrial | None, target: bool) -> str:
    words = f"{counts.running + creating} running, {counts.completed} completed, {counts.pruned} pruned, {counts.failed} failed"
    if best is not None:
        words += f"; best so far: {best.trial} {best.metric}={best.value:.4g}"
    if target:
        words += "; the target is reached: waiting for the running trials"
    return words


def _trial_events(views: Sequence[TrialView], best: BestTrial | None) -> list[PhaseEvent]:
    """An Event for every failed trial and for the best trial (posted once each: the recorder's names say what
    they say)."""
    events = [
        PhaseEvent("Warning", TRIAL_FAILED, f"{view.name} failed: {view.message}")
        for view in views
        if view.state is TrialState.FAILED
    ]
    if best is not None:
        events.append(PhaseEvent("Normal", NEW_BEST, f"new best: {best.trial} {best.metric}={best.value:.6g}"))
    return events


def _status(
    verdict: Verdict,
    previous: TrainingSweepStatus,
    generation: int | None,
    now: str,
    *,
    views: Sequence[TrialView],
    best: BestTrial | None,
    limit: int,
    maximize: bool = False,
    started: str | None = None,
    registration: RegistrationStep | None = None,
) -> TrainingSweepStatus:
    counts = _counts(views)
    finished = counts.completed + counts.pruned + counts.failed + counts.cancelled
    conditions = kstatus_conditions(
        verdict=verdict, previous=previous.conditions, generation=generation, now=now, pending_changes=()
    )
    state = registration.state if registration is not None else None
    registered: Condition | None = registered_condition(state, previous=previous.conditions, generation=generation, now=now)
    if registered is not None:
        conditions.append(registered)
    model: ModelVersion | None = (state.model if state is not None else None) or previous.model
    completion = previous.completion_time or now if verdict.phase.finished else None
    return TrainingSweepStatus(
        phase=verdict.phase,
        reason=verdict.reason,
        message=verdict.message,
        observed_generation=generation,
        conditions=conditions,
        counts=counts,
        trials_summary=f"{counts.completed}/{counts.running}/{counts.pruned}/{counts.failed} of {limit}",
        best=best,
        best_summary=f"{best.metric}={best.value:.4g} ({best.trial})" if best is not None else None,
        progress=f"{100 * finished // limit}%" if limit else None,
        trials=_summaries(views, maximize=maximize),
        start_time=previous.start_time or started or now,
        completion_time=completion,
        model=model,
    )


def _summaries(views: Sequence[TrialView], *, maximize: bool) -> list[TrialSummary]:
    """The trials by number, at most ``MAX_TRIAL_SUMMARIES``: the running ones, then the best finished ones."""
    running = [view for view in views if view.state is TrialState.RUNNING]
    sign = -1.0 if maximize else 1.0
    finished = sorted(
        (view for view in views if view.state is not TrialState.RUNNING),
        key=lambda view: (view.state is not TrialState.COMPLETED, sign * (view.value or 0.0), view.number),
    )
    kept = sorted([*running, *finished][:MAX_TRIAL_SUMMARIES], key=lambda view: view.number)
    return [
        TrialSummary(
            name=view.name,
            number=view.number,
            state=view.state,
            value=view.value,
            position=max(view.intermediate) if view.intermediate else None,
            parameters=dict(view.parameters),
            message=view.message,
        )
        for view in kept
    ]


__all__ = [
    "MODEL_REGISTERED",
    "REGISTRATION_REFUSED",
    "REGISTRY_FAILING",
    "RegistrationStep",
    "best_trial_registration",
    "registration_step",
    "NEW_BEST", "TRIAL_FAILED", "TRIAL_PRUNED", "TRIAL_STARTED", "SweepPlan", "TrialPatch", "plan_sweep"]
