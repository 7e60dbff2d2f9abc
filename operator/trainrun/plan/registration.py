"""The plan's part of model registration and experiment tracking (pure).

Tracking: ``tracking_plan`` says whether a run is tracked (``spec.tracking``, else the configuration's
``tracking``), in which registry and experiment, with which params and tags, and once the run is over
and its logs sealed, with which final status; the controller's tracker (``trainrun.controller.tracking``)
makes it so and brings back the tracked run's id, its trouble and whether it ended (:class:`TrackingFacts`),
which ``tracked_status`` turns into ``status.tracking``. A run that had finished before it was tracked is
not tracked afterwards.

``registration_state`` says where a run's registration stands from what the status recorded and what the
last :class:`~trainrun.status.work.Register` brought (``Attempts``); ``build_status`` turns it into the
phase (Uploading until registered), ``status.model`` and the ``Registered`` condition
(``trainrun.status.registration``). When the status says Registering, ``registration_work`` builds the
request (``trainrun.status.registration.copy_registration``, shared with the sweep plan): the model's
source is the verified copy (``status.artifacts``, never the claim), its tags the run's identity, image,
manifest, final metrics and hyperparameters. Called by ``trainrun.plan.core`` and,
for local runs, by ``trainrun.local.runner``; ``run_params`` also gives a tracked run's params.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainrun.base.registry import PHASE_TAG, POOL_TAG, RUN_UID_TAG
from trainrun.spec import OperatorConfig, TrainingRun, tracking_registry
from trainrun.spec.status import Phase, Tracked, TrainingRunStatus
from trainrun.status.registration import (
    REGISTRATION_REASONS,
    RegistrationState,
    copy_registration,
    identity_tags,
    run_params,
)
from trainrun.status.work import Attempts, Register, Registration, failure_words


def registry_key(run: TrainingRun, config: OperatorConfig) -> str | None:
    """The key of the registry the run's model goes to (its own, else the configuration's default)."""
    register = run.spec.output.registration
    return None if register is None else config.registry_named(register.registry)[0]


def registration_state(
    run: TrainingRun, config: OperatorConfig, previous: TrainingRunStatus, attempts: Attempts[Registration]
) -> RegistrationState | None:
    """Where the registration of the run's model stands (None: the run registers nothing)."""
    register = run.spec.output.registration
    if register is None:
        return None
    key = registry_key(run, config) or "(none)"
    if previous.model is not None:
        return RegistrationState(key, register.name, model=previous.model)
    done = attempts.result
    if done is not None:
        return RegistrationState(key, register.name, model=done.model, refused=done.refused)
    return RegistrationState(
        key, register.name, problem=failure_words(f"registering model {register.name} in registry {key}", attempts)
    )


def registering(status: TrainingRunStatus) -> bool:
    """Whether the status waits for the model's registration."""
    return status.phase is Phase.UPLOADING and status.reason in REGISTRATION_REASONS


def registration_work(run: TrainingRun, config: OperatorConfig, status: TrainingRunStatus, *, run_id: str | None = None) -> Register | None:
    """The request that registers the run's model, from its verified copy (None while there is none)."""
    register = run.spec.output.registration
    key = registry_key(run, config)
    if register is None or key is None:
        return None
    return copy_registration(run, status, register, key, run_id=run_id)


# The MLflow status of a tracked run, by the run's final phase.
FINAL_STATUS = {Phase.COMPLETED: "FINISHED", Phase.FAILED: "FAILED", Phase.CANCELLED: "KILLED"}


@dataclass(frozen=True)
class Track:
    """The tracked run as it should be: created (found again by the run's uid), with these params and tags;
    ended with ``final`` (an MLflow status) once that is set."""

    registry: str
    experiment: str
    run_uid: str
    run_name: str
    start: str | None
    params: tuple[tuple[str, str], ...]
    tags: tuple[tuple[str, str], ...]
    final: str | None = None


@dataclass(frozen=True)
class TrackingFacts:
    """What the tracker knows: the tracked run's id, why it is behind (its words), whether it ended."""

    run_id: str | None = None
    problem: str | None = None
    ended: bool = False


def tracking_plan(
    run: TrainingRun, config: OperatorConfig, previous: TrainingRunStatus, status: TrainingRunStatus, *, logs_done: bool, created: str | None
) -> Track | None:
    """How the run is tracked now (None: not tracked, or its tracked run has ended)."""
    where = tracking_registry(run, config)
    if where is None or not _trackable(previous):
        return None
    key, experiment = where
    phase = status.phase
    tags = [
        *identity_tags(run),
        (RUN_UID_TAG, run.metadata.uid or f"{run.metadata.namespace}/{run.metadata.name}"),
        *(((PHASE_TAG, phase.value),) if phase is not None else ()),
        *(((POOL_TAG, status.pool),) if status.pool is not None else ()),
    ]
    final = FINAL_STATUS.get(phase) if phase is not None and phase.finished and logs_done else None
    return Track(
        registry=key,
        experiment=experiment,
        run_uid=dict(tags)[RUN_UID_TAG],
        run_name=run.metadata.name,
        start=created,
        params=tuple(run_params(run)),
        tags=tuple(tags),
        final=final,
    )


def tracked_status(
    run: TrainingRun, config: OperatorConfig, previous: TrainingRunStatus, facts: TrackingFacts | None
) -> Tracked | None:
    """``status.tracking``: where the run is tracked and how that stands (what was recorded, while no tracker runs)."""
    where = tracking_registry(run, config)
    if where is None or not _trackable(previous):
        return previous.tracking
    key, experiment = where
    before = previous.tracking if previous.tracking is not None and previous.tracking.registry == key else None
    run_id = (facts.run_id if facts is not None else None) or (before.run_id if before is not None else None)
    return Tracked(
        registry=key,
        experiment=experiment,
        run_id=run_id,
        message=facts.problem if facts is not None else None,
        ended=facts.ended if facts is not None else False,
    )


def _trackable(previous: TrainingRunStatus) -> bool:
    """Not when its tracked run has ended, nor when the run had finished before it was tracked."""
    if previous.tracking is not None:
        return not previous.tracking.ended
    return previous.phase is None or not previous.phase.finished


__all__ = [
    "FINAL_STATUS",
    "Track",
    "TrackingFacts",
    "identity_tags",
    "registering",
    "registration_state",
    "registration_work",
    "registry_key",
    "run_params",
    "tracked_status",
    "tracking_plan",
]
