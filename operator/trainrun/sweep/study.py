"""A sweep's Optuna study, rebuilt from its trials: the next suggestions and the pruning decisions.

Called by the sweep planner (``trainrun.sweep.plan``) on every reconcile. The study lives in memory only:
it is made again each time from the trials as their objects say (``TrialView``: parameters, Optuna's notes,
state, value, the objective's values by position), through Optuna's ask-and-tell interface, so an
operator that restarted or a new leader continues the same study. The sampler is seeded from the sweep's
uid and the trial's number: the same history gives the same suggestion. Pure: nothing here does I/O.
The planner imports this module at its first study: Optuna (numpy with it) is 16 MB that an operator or a
CLI that never plans a sweep does not hold.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from trainrun.spec.sweep import Parameter, Scalar, TrainingSweepSpec
from trainrun.spec.sweepstatus import TrialState as SweepTrialState
from trainrun.sweep.trials import Suggestion, TrialView

optuna.logging.set_verbosity(logging.WARNING)
# Optuna's notes it would unpickle when it reads them back (CMA-ES's optimizer): never taken from an object
# anyone who may annotate a TrainingRun can write. CMA-ES then starts its search distribution afresh.
UNSAFE_NOTES = ("cma:optimizer",)
STUDY_NAME = "trainrun-sweep"  # Hyperband's brackets hash it with the trial's number: fixed, so they stay put


def distributions(spec: TrainingSweepSpec) -> dict[str, BaseDistribution]:
    """Each parameter as an Optuna distribution."""
    return {name: distribution(parameter) for name, parameter in spec.parameters.items()}


def distribution(parameter: Parameter) -> BaseDistribution:
    if parameter.values is not None:
        return CategoricalDistribution(parameter.values)
    assert parameter.low is not None and parameter.high is not None
    if parameter.type == "int":
        return IntDistribution(int(parameter.low), int(parameter.high), step=int(parameter.step or 1))
    return FloatDistribution(parameter.low, parameter.high, log=parameter.type == "logUniform", step=parameter.step)


def trial_seed(uid: str, number: int) -> int:
    """The sampler's seed for one trial: from the sweep's uid and the trial's number (same inputs, same seed)."""
    return int.from_bytes(hashlib.sha256(f"{uid}/{number}".encode()).digest()[:4], "big")


def sampler(spec: TrainingSweepSpec, seed: int) -> optuna.samplers.BaseSampler:
    """Optuna's sampler of the sweep's algorithm, seeded."""
    if spec.algorithm == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.algorithm == "grid":
        space = {name: parameter.choices() for name, parameter in spec.parameters.items()}
        return optuna.samplers.GridSampler(space, seed=seed)
    if spec.algorithm == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    with warnings.catch_warnings():
        # The constant liar (running trials count as bad ones, so parallel trials spread out) is marked experimental.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, constant_liar=spec.parallelism > 1)


def pruner(spec: TrainingSweepSpec) -> optuna.pruners.BasePruner:
    """Optuna's pruner of spec.earlyStopping (none: never prune)."""
    stopping = spec.early_stopping
    if stopping is None:
        return optuna.pruners.NopPruner()
    if stopping.type == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, stopping.min_steps), max_resource="auto")
    return optuna.pruners.MedianPruner(n_startup_trials=stopping.startup_trials, n_warmup_steps=stopping.min_steps)


_STATES = {
    SweepTrialState.RUNNING: TrialState.RUNNING,
    SweepTrialState.COMPLETED: TrialState.COMPLETE,
    SweepTrialState.PRUNED: TrialState.PRUNED,
    SweepTrialState.FAILED: TrialState.FAIL,
    SweepTrialState.CANCELLED: TrialState.FAIL,  # no result: the samplers ignore it, as a failure
}


def frozen(trial: TrialView, spaces: Mapping[str, BaseDistribution]) -> FrozenTrial:
    """The trial as Optuna records it."""
    state = _STATES[trial.state]
    value = trial.value if state is TrialState.COMPLETE else None
    # A value the space no longer holds (the sweep's bounds or values changed since) is left out, not refused.
    parameters = {
        name: trial.parameters[name] for name in spaces if name in trial.parameters and _holds(spaces[name], trial.parameters[name])
    }
    return optuna.trial.create_trial(
        state=state,
        value=value,
        params=parameters,
        distributions={name: spaces[name] for name in parameters},
        system_attrs=safe_notes(trial.notes),
        intermediate_values=dict(trial.intermediate) if state is not TrialState.FAIL else None,
    )


def _holds(space: BaseDistribution, value: Scalar) -> bool:
    """Whether the distribution can have given the value."""
    try:
        return bool(space._contains(space.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def safe_notes(notes: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna's notes without the ones it would unpickle."""
    return {key: value for key, value in notes.items() if not key.startswith(UNSAFE_NOTES)}


class SweepStudy:
    """The study of a sweep's trials, rebuilt (see the module's docstring); ask it for trials, or whether to
    stop one."""

    def __init__(self, spec: TrainingSweepSpec, trials: Sequence[TrialView], *, uid: str) -> None:
        self.spec = spec
        self.uid = uid
        self.spaces = distributions(spec)
        direction = "maximize" if spec.objective.goal == "maximize" else "minimize"
        self.study = optuna.create_study(
            study_name=STUDY_NAME, direction=direction, sampler=sampler(spec, 0), pruner=pruner(spec)
        )
        # Optuna numbers trials in the order they are added: by the trial's number, so each keeps its rank.
        self.rank: dict[int, int] = {}
        for trial in sorted(trials, key=lambda item: item.number):
            self.rank[trial.number] = len(self.rank)
            self.study.add_trial(frozen(trial, self.spaces))

    def suggest(self, number: int) -> Suggestion:
        """Ask for trial ``number``'s parameters with a sampler seeded for it; the asked trial stays in the
        study as running (a second suggestion in the same pass sees it, as a rebuild would)."""
        # A grid's order is drawn once for the sweep (its trials take the combinations in that order); the
        # other samplers draw afresh for each trial.
        seed = trial_seed(self.uid, -1 if self.spec.algorithm == "grid" else number)
        self.study.sampler = sampler(self.spec, seed)
        asked = self.study.ask(self.spaces)
        self.rank[number] = asked.number
        parameters = {name: _plain(value) for name, value in asked.params.items()}
        notes = safe_notes(self.study.get_trials(deepcopy=False)[asked.number].system_attrs)
        return Suggestion(number=number, parameters=parameters, notes=notes)

    def should_prune(self, trial: TrialView) -> Pruning:
        """The pruner's verdict on a running trial, from the values it reported by position."""
        rank = self.rank[trial.number]
        recorded = self.study.get_trials(deepcopy=False)[rank]
        if not recorded.intermediate_values:
            return Pruning(prune=False, notes=safe_notes(recorded.system_attrs))
        decision = self.study.pruner.prune(self.study, recorded)
        after = self.study.get_trials(deepcopy=False)[rank]
        return Pruning(prune=bool(decision), notes=safe_notes(after.system_attrs))


def _plain(value: Any) -> Scalar:
    """numpy's scalars as Python's (JSON, YAML and the template take them)."""
    if hasattr(value, "item"):
        value = value.item()
    assert isinstance(value, (bool, int, float, str))
    return value


@dataclass(frozen=True)
class Pruning:
    """Whether to stop a running trial, and Optuna's notes after deciding (the pruner may keep some)."""

    prune: bool
    notes: dict[str, Any]
