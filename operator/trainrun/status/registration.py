"""The model registration's part of a run's status: the phase it holds back, ``status.model`` and the
``Registered`` condition.

A run with ``spec.output.register`` whose copy is verified is not Completed until its model version is
registered: it stays Uploading (reason ``Registering``, or ``RegistryUnavailable`` with the registry's
words and the next try while the registry cannot be reached). A registry that refuses (an invalid name,
forbidden, a model path not in the copy) does not hold it back: the run is Completed with
``Registered=False`` and the refusal's words, its artifacts safe. Called by ``build_status``
(``trainrun.status.build``), with a :class:`RegistrationState` the plan (``trainrun.plan.registration``)
or the local runner fills in. ``copy_registration`` builds the request from a run's verified copy, for the
run's own registration (``trainrun.plan.registration``) and for a sweep's best trial
(``trainrun.sweep.plan``). Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from trainrun.base.registry import (
    IMAGE_TAG,
    MANIFEST_TAG,
    METRIC_TAG_PREFIX,
    NAMESPACE_TAG,
    PARAM_TAG_PREFIX,
    RUN_TAG,
    RUN_UID_TAG,
    VersionRequest,
)
from trainrun.render.replica import program_hyperparameters
from trainrun.spec import TrainingRun
from trainrun.spec.model import Registration as RegistrationSpec
from trainrun.spec.status import Condition, ModelVersion, Phase, TrainingRunStatus
from trainrun.status.phase import Verdict
from trainrun.status.work import Register

REGISTERED = "Registered"  # the condition beside Ready, Reconciling and Stalled (kstatus ignores it)
REGISTERING, REGISTRY_UNAVAILABLE = "Registering", "RegistryUnavailable"
REGISTRATION_REASONS = (REGISTERING, REGISTRY_UNAVAILABLE)
REGISTRATION_REFUSED = "RegistrationRefused"


@dataclass(frozen=True)
class RegistrationState:
    """Where the registration of a run's model stands: registered, refused, failing (retried) or to do."""

    registry: str
    name: str
    model: ModelVersion | None = None
    refused: str | None = None
    problem: str | None = None  # the last try failed and the next one is due later: the registry's words and when

    @property
    def pending(self) -> bool:
        return self.model is None and self.refused is None


def registration_verdict(verdict: Verdict, state: RegistrationState | None) -> Verdict:
    """A Completed verdict held at Uploading while the model is registered, or told what became of it."""
    if state is None or verdict.phase is not Phase.COMPLETED:
        return verdict
    if state.model is not None:
        model = state.model
        return replace(verdict, message=f"{verdict.message}; registered as model {model.name} version {model.version} in registry {model.registry}")
    if state.refused is not None:
        return replace(verdict, message=f"{verdict.message}; the model was not registered: {state.refused}")
    if state.problem is not None:
        return Verdict(Phase.UPLOADING, REGISTRY_UNAVAILABLE, state.problem)
    return Verdict(
        Phase.UPLOADING, REGISTERING, f"{verdict.message}; registering model {state.name} in registry {state.registry}"
    )


def registered_condition(
    state: RegistrationState | None, *, previous: Sequence[Condition], generation: int | None, now: str
) -> Condition | None:
    """Registered: True with the version, False with the refusal; the earlier one while nothing new is known."""
    before = next((item for item in previous if item.type == REGISTERED), None)
    if state is None or state.pending:
        return before
    status = "True" if state.model is not None else "False"
    if state.model is not None:
        message = f"model {state.model.name} version {state.model.version} in registry {state.model.registry}: {state.model.uri}"
    else:
        message = state.refused or ""
    kept = before.last_transition_time if before is not None and before.status == status else None
    return Condition(
        type=REGISTERED,
        status=status,
        reason=REGISTERED if state.model is not None else REGISTRATION_REFUSED,
        message=message,
        observed_generation=generation,
        last_transition_time=kept or now,
    )


def run_params(run: TrainingRun) -> list[tuple[str, str]]:
    """The run's hyperparameters as the program gets them, by flag name (``extra`` among them)."""
    values = {**program_hyperparameters(run), **run.spec.hyperparameters.extra}
    return sorted(values.items())


def identity_tags(run: TrainingRun) -> list[tuple[str, str]]:
    """The tags that say which TrainingRun made a version or a tracked run."""
    return [(NAMESPACE_TAG, run.metadata.namespace), (RUN_TAG, run.metadata.name), (IMAGE_TAG, run.spec.image)]


def copy_registration(
    run: TrainingRun,
    status: TrainingRunStatus,
    register: RegistrationSpec,
    key: str,
    *,
    run_id: str | None = None,
    found_by: tuple[str, str] | None = None,
    more_tags: Sequence[tuple[str, str]] = (),
    field: str = "spec.output.register",
) -> Register | None:
    """The request that registers ``register``'s model from the run's verified copy (None while there is none):
    the run's own registration, and a sweep's of its best trial (``trainrun.sweep.registration``), which finds
    its version by ``found_by`` (tag, value: the sweep's uid) instead of the run's uid and adds ``more_tags``."""
    artifacts = status.artifacts
    if artifacts is None:
        return None
    source = artifacts.uri.rstrip("/") + (f"/{register.path}" if register.path else "")
    run_uid = run.metadata.uid or f"{run.metadata.namespace}/{run.metadata.name}"
    tags = [
        *identity_tags(run),
        *(((RUN_UID_TAG, run_uid),) if found_by is not None else ()),
        (MANIFEST_TAG, artifacts.manifest_uri),
        *((f"{METRIC_TAG_PREFIX}{name}", _number(value)) for name, value in sorted(status.metrics.items())),
        *((f"{PARAM_TAG_PREFIX}{name}", value) for name, value in run_params(run)),
        *more_tags,
        *sorted(register.tags.items()),
    ]
    uid_tag, uid = found_by if found_by is not None else (RUN_UID_TAG, run_uid)
    request = VersionRequest(
        name=register.name,
        source=source,
        run_uid=uid,
        tags=tuple(tags),
        description=register.description,
        run_id=run_id,
        uid_tag=uid_tag,
    )
    return Register(registry=key, request=request, manifest_uri=artifacts.manifest_uri, path=register.path, field=field)


def _number(value: float) -> str:
    return f"{value:.6g}"
