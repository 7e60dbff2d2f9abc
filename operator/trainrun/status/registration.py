"""The model registration's part of a run's status: the phase it holds back, ``status.model`` and the
``Registered`` condition.

A run with ``spec.output.register`` whose copy is verified is not Completed until its model version is
registered: it stays Uploading (reason ``Registering``, or ``RegistryUnavailable`` with the registry's
words and the next try while the registry cannot be reached). A registry that refuses (an invalid name,
forbidden, a model path not in the copy) does not hold it back: the run is Completed with
``Registered=False`` and the refusal's words, its artifacts safe. Called by ``build_status``
(``trainrun.status.build``), with a :class:`RegistrationState` the plan (``trainrun.plan.registration``)
or the local runner fills in. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from trainrun.spec.status import Condition, ModelVersion, Phase
from trainrun.status.phase import Verdict

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
