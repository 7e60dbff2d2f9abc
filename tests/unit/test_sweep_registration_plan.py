"""A sweep's ``spec.register``: the best trial's model registered once the sweep is Completed.

Validation naming the field; each trial's own output folder; the plan's decision (only when Completed with a
verified best trial, never twice, back-off after a registry that cannot be reached, a refusal that ends the
sweep Completed with Registered=False); the request (the best trial's verified copy, its run's tags and the
sweep's, found again by the sweep's uid); the controller's one registration through a registrar.
"""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import pytest
from test_sweep import NOW, assert_one_line_naming, changed, sweep_doc, trial_with
from test_sweep_controller import FakeServer
from trainrun.base.registry import (
    RUN_UID_TAG,
    SWEEP_OBJECTIVE_TAG,
    SWEEP_PARAMETERS_TAG,
    SWEEP_TAG,
    SWEEP_UID_TAG,
    RegistryUnavailable,
)
from trainrun.controller.operator import EventRecorder
from trainrun.controller.sweeps import SweepController
from trainrun.registry.mlflow import create_version_body, version_filter
from trainrun.spec import OperatorConfig, load_training_run, load_training_sweep
from trainrun.spec.status import ModelVersion, Phase, TrainingRunStatus
from trainrun.status.work import Attempts, Register, Registration
from trainrun.sweep import plan_sweep
from trainrun.sweep.plan import SweepPlan, best_trial_registration
from trainrun.sweep.trials import projected

OUTPUT = "s3://models/tune"
LATER = "2026-12-05T10:00:03Z"  # 3 s after NOW
MUCH_LATER = "2026-12-05T10:10:00Z"
CONFIG = OperatorConfig.model_validate({"registries": {"mlflow": {"type": "mlflow", "uri": "http://mlflow:5000"}}, "defaultRegistry": "mlflow"})
MODEL = ModelVersion(registry="mlflow", name="tuned", version="3", uri=f"{OUTPUT}/tune-1/model.pt")
VALUES = {0: 0.5, 1: 0.2, 2: 0.4}  # tune-1 is the best (minimize)


def registering_doc(**register: Any) -> dict[str, Any]:
    document = sweep_doc(maxTrials=3, parallelism=3, register={"name": "tuned", "path": "model.pt", **register})
    document["spec"]["template"]["output"] = {"uri": OUTPUT}
    return document


# ---- validation: one line naming the field ----


@pytest.mark.parametrize(
    ("document", "field", "words"),
    [
        (changed("spec.register", {"name": "tuned"}), "spec.register", "needs spec.template.output.uri"),
        (
            changed("spec.template.output", {"uri": OUTPUT, "register": {"name": "each"}}, registering_doc()),
            "spec.template.output.register",
            "spec.register registers the best trial's only",
        ),
        (changed("spec.register.name", "no spaces", registering_doc()), "spec.register.name", "should match pattern"),
        (changed("spec.register.path", "../model.pt", registering_doc()), "spec.register.path", "is not a path inside the outputs"),
        (changed("spec.register.tags", {"trainrun.x": "y"}, registering_doc()), "spec.register.tags", "the operator's own"),
        (changed("spec.register.registry", "Not A Key", registering_doc()), "spec.register.registry", "must be lower-case letters"),
    ],
)
def test_bad_registration_is_one_line_naming_the_field(document: dict[str, Any], field: str, words: str) -> None:
    assert_one_line_naming(document, field, words)


def test_a_registering_sweep_loads_and_its_trials_copy_to_their_own_folders() -> None:
    sweep = load_training_sweep(registering_doc(tags={"team": "vision"}))
    assert sweep.spec.registration is not None and sweep.spec.registration.path == "model.pt"
    plan = plan_sweep(registering_doc(), [], now=NOW, config=CONFIG)
    assert [trial["spec"]["output"]["uri"] for trial in plan.creates] == [f"{OUTPUT}/tune-{n}" for n in range(3)]
    assert plan.register is None and plan.status.phase is Phase.RUNNING


# ---- the plan ----


def finished(trial: dict[str, Any], *, verified: bool = True) -> dict[str, Any]:
    number = int(trial["metadata"]["name"].rsplit("-", 1)[1])
    done = trial_with(trial, phase="Completed", values=[0.9, VALUES[number]])
    done["metadata"]["uid"] = f"run-uid-{number}"
    if verified:
        uri = trial["spec"]["output"]["uri"]
        done["status"]["artifacts"] = {"uri": uri, "manifestUri": f"{uri}/manifest.json", "fileCount": 2, "bytes": 10}
    return done


def all_done(document: dict[str, Any], *, verified: bool = True, failed: bool = False) -> list[dict[str, Any]]:
    """The sweep's three trials as the operator sees them once they finished (tune-1 the best)."""
    created = plan_sweep(document, [], now=NOW, config=CONFIG).creates
    if failed:
        return [trial_with(trial, phase="Failed") for trial in created]
    return [projected(finished(trial, verified=verified)) for trial in created]


def with_status(document: dict[str, Any], plan: SweepPlan) -> dict[str, Any]:
    return {**document, "status": plan.status_patch}


def failed_once(at: str) -> Attempts[Registration]:
    return Attempts(failures=1, error="registry http://mlflow:5000 cannot be reached: connection refused", failed_at=at)


def registered_condition(plan: SweepPlan) -> tuple[str, str] | None:
    condition = next((item for item in plan.status.conditions if item.type == "Registered"), None)
    return None if condition is None else (condition.status, condition.message or "")


@pytest.mark.parametrize(
    ("attempts", "now", "phase", "reason", "register", "words"),
    [
        pytest.param(None, NOW, Phase.RUNNING, "Registering", "tune-1", "registering model tuned", id="done: register the best"),
        pytest.param(Attempts[Registration](running=True), NOW, Phase.RUNNING, "Registering", None, "registering model tuned", id="a try under way"),
        pytest.param(failed_once(NOW), LATER, Phase.RUNNING, "RegistryUnavailable", None, "trying again in 5 s", id="down: back-off"),
        pytest.param(failed_once(NOW), MUCH_LATER, Phase.RUNNING, "RegistryUnavailable", "tune-1", "connection refused (attempt 1)", id="down: tried again"),
        pytest.param(Attempts(result=Registration(model=MODEL)), NOW, Phase.COMPLETED, "AllTrialsDone", None, "registered as model tuned version 3", id="registered"),
        pytest.param(
            Attempts(result=Registration(refused="RESOURCE_DOES_NOT_EXIST: forbidden name")),
            NOW,
            Phase.COMPLETED,
            "AllTrialsDone",
            None,
            "the model was not registered: RESOURCE_DOES_NOT_EXIST",
            id="refused",
        ),
    ],
)
def test_the_best_model_is_registered_once_the_sweep_is_done(
    attempts: Attempts[Registration] | None, now: str, phase: Phase, reason: str, register: str | None, words: str
) -> None:
    document = registering_doc()
    plan = plan_sweep(document, all_done(document), now=now, config=CONFIG, registration=attempts)
    assert (plan.status.phase, plan.status.reason) == (phase, reason), plan.status.message
    assert plan.register == register
    assert words in (plan.status.message or "")
    assert plan.status.best is not None and plan.status.best.trial == "tune-1"
    if reason == "RegistryUnavailable" and register is None:
        assert plan.requeue_after == pytest.approx(2.0)
    failing = [event.type for event in plan.events if event.reason == "RegistryFailing"]
    assert failing == (["Warning"] if reason == "RegistryUnavailable" else [])
    ready = next(item for item in plan.status.conditions if item.type == "Ready")
    assert ready.status == ("True" if phase is Phase.COMPLETED else "False")


def test_a_registered_model_is_recorded_with_an_event_and_never_registered_again() -> None:
    document = registering_doc()
    trials = all_done(document)
    plan = plan_sweep(document, trials, now=NOW, config=CONFIG, registration=Attempts(result=Registration(model=MODEL)))
    assert plan.status.model == MODEL
    assert registered_condition(plan) == ("True", f"model tuned version 3 in registry mlflow: {MODEL.uri}")
    assert [(event.type, event.reason) for event in plan.events if event.reason == "ModelRegistered"] == [("Normal", "ModelRegistered")]
    # The next pass (this process or a restarted one, without the fact): finished, the model kept, nothing to do.
    again = plan_sweep(with_status(document, plan), trials, now=MUCH_LATER, config=CONFIG)
    assert (again.status.phase, again.register, again.status.model) == (Phase.COMPLETED, None, MODEL)
    assert registered_condition(again) == registered_condition(plan)
    assert again.status.message == plan.status.message


def test_a_restart_before_the_status_write_asks_again_and_the_registry_finds_the_version() -> None:
    """Registering, then killed: the status still says Registering; the plan asks again (the request is found by
    the sweep's uid, so the registry gives the same version: see test_the_request_...)."""
    document = registering_doc()
    first = plan_sweep(document, all_done(document), now=NOW, config=CONFIG)
    restarted = plan_sweep(with_status(document, first), all_done(document), now=LATER, config=CONFIG)
    assert (restarted.status.phase, restarted.status.reason, restarted.register) == (Phase.RUNNING, "Registering", "tune-1")


def test_a_refusal_ends_the_sweep_completed_with_registered_false_and_the_registrys_words() -> None:
    document = registering_doc()
    refused = Attempts(result=Registration(refused="spec.register.path: 'model.pt' is not in the copied outputs"))
    plan = plan_sweep(document, all_done(document), now=NOW, config=CONFIG, registration=refused)
    assert plan.status.phase is Phase.COMPLETED and plan.status.model is None
    assert registered_condition(plan) == ("False", "spec.register.path: 'model.pt' is not in the copied outputs")
    assert [event.type for event in plan.events if event.reason == "RegistrationRefused"] == ["Warning"]
    again = plan_sweep(with_status(document, plan), all_done(document), now=MUCH_LATER, config=CONFIG)
    assert (again.status.phase, again.register) == (Phase.COMPLETED, None)
    assert registered_condition(again) == registered_condition(plan)


@pytest.mark.parametrize(
    ("document", "trials", "phase", "registered"),
    [
        pytest.param(registering_doc(), "unverified", Phase.COMPLETED, "False", id="the best trial has no verified copy"),
        pytest.param(registering_doc(), "failed", Phase.FAILED, None, id="a failed sweep registers nothing"),
        pytest.param(registering_doc(), "none", Phase.RUNNING, None, id="still searching"),
        pytest.param(changed("spec.cancel", True, registering_doc()), "done", Phase.CANCELLED, None, id="a cancelled sweep registers nothing"),
        pytest.param(changed("spec.register", None, registering_doc()), "done", Phase.COMPLETED, None, id="no spec.register"),
    ],
)
def test_only_a_completed_sweep_with_a_verified_best_trial_registers(document: dict[str, Any], trials: str, phase: Phase, registered: str | None) -> None:
    if document["spec"].get("register") is None:
        document["spec"].pop("register")
    observed = {
        "unverified": lambda: all_done(document, verified=False),
        "failed": lambda: all_done(document, failed=True),
        "none": lambda: [],
        "done": lambda: all_done(document),
    }[trials]()
    plan = plan_sweep(document, observed, now=NOW, config=CONFIG)
    assert plan.status.phase is phase, plan.status.message
    assert plan.register is None and plan.status.model is None
    condition = registered_condition(plan)
    assert (condition[0] if condition else None) == registered
    if registered == "False":
        assert condition is not None and "tune-1 has no verified copy" in condition[1]


# ---- the request: the best trial's verified copy, its tags and the sweep's, found by the sweep's uid ----


def best_trial(document: dict[str, Any]) -> tuple[Any, Any, Any]:
    sweep = load_training_sweep(document)
    plan = plan_sweep(document, all_done(document), now=NOW, config=CONFIG)
    created = next(trial for trial in plan_sweep(document, [], now=NOW, config=CONFIG).creates if trial["metadata"]["name"] == "tune-1")
    full = finished(copy.deepcopy(created))
    full["status"]["metrics"]["accuracy"] = 0.93
    return sweep, plan.status.best, full


def test_the_request_is_the_best_trials_copy_with_its_tags_and_the_sweeps_found_by_the_sweeps_uid() -> None:
    document = registering_doc(tags={"team": "vision"}, description="the best of tune")
    sweep, best, full = best_trial(document)
    work = best_trial_registration(sweep, best, load_training_run(full), TrainingRunStatus.model_validate(full["status"]), CONFIG)
    assert isinstance(work, Register)
    request = work.request
    assert (work.registry, work.path, work.field) == ("mlflow", "model.pt", "spec.register")
    assert work.manifest_uri == f"{OUTPUT}/tune-1/manifest.json"
    assert request.source == f"{OUTPUT}/tune-1/model.pt"
    assert (request.name, request.description) == ("tuned", "the best of tune")
    assert (request.uid_tag, request.run_uid) == (SWEEP_UID_TAG, "uid-1")
    tags = dict(request.tags)
    parameters = json.loads(tags[SWEEP_PARAMETERS_TAG])
    assert tags[RUN_UID_TAG] == "run-uid-1" and tags["trainrun.run"] == "tune-1" and tags["trainrun.namespace"] == "ml"
    assert tags[SWEEP_TAG] == "tune" and tags[SWEEP_OBJECTIVE_TAG] == "val_loss=0.2"
    assert parameters == best.parameters and set(parameters) == {"learningRate", "batchSize"}
    assert tags["metric.accuracy"] == "0.93" and tags["param.batch-size"] == str(parameters["batchSize"])
    assert tags["team"] == "vision"
    body = create_version_body(request)
    assert {"key": SWEEP_UID_TAG, "value": "uid-1"} in body["tags"]
    assert sum(1 for tag in body["tags"] if tag["key"] == RUN_UID_TAG) == 1  # the trial's, not the finder
    assert version_filter("tuned", "uid-1", tag=SWEEP_UID_TAG) == "name = 'tuned' and tags.`trainrun.sweep_uid` = 'uid-1'"


def test_without_a_registry_the_request_is_a_refusal_naming_the_field() -> None:
    sweep, best, full = best_trial(registering_doc())
    words = best_trial_registration(sweep, best, load_training_run(full), TrainingRunStatus.model_validate(full["status"]), OperatorConfig())
    assert isinstance(words, str) and words.startswith("spec.register.registry:")


# ---- the controller: one try at a time, again after a failure, the version recorded ----


class FakeRegistrar:
    """Fails its first try (the registry is down), then registers; counts the requests it was given."""

    def __init__(self) -> None:
        self.requests: list[Register] = []

    async def register(self, run: Any, work: Register, config: OperatorConfig) -> Registration:
        self.requests.append(work)
        if len(self.requests) == 1:
            raise RegistryUnavailable("registry http://mlflow:5000 cannot be reached: connection refused")
        return Registration(model=ModelVersion(registry=work.registry, name=work.request.name, version="1", uri=work.request.source))


class TrialServer(FakeServer):
    async def get(self, resource: Any, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.runs.get(name))


def test_the_controller_registers_through_the_registrar_retries_and_records_the_version() -> None:
    async def scenario() -> None:
        server = TrialServer()
        registrar = FakeRegistrar()
        controller = SweepController(
            server,  # type: ignore[arg-type]
            namespaces=[None],
            recorder=EventRecorder(server, instance="test"),  # type: ignore[arg-type]
            registrar=registrar,  # type: ignore[arg-type]
            config=lambda: CONFIG,
        )
        controller.leading(True)
        document = registering_doc()
        controller.sweep_changed(None, document)
        await controller.reconcile(("ml", "tune"))
        for name, trial in list(server.runs.items()):
            server.runs[name] = finished(trial)
            controller._on_trial(None, projected(server.runs[name]))

        async def settle() -> None:
            await controller.reconcile(("ml", "tune"))
            while controller.registering:
                await asyncio.gather(*controller.registering.values())
            controller.sweeps[("ml", "tune")]["status"] = server.status_patches[-1]

        await settle()  # the first try: the registry is down
        assert server.status_patches[-1]["phase"] == "Running"
        await settle()  # within the back-off: no second try yet
        assert len(registrar.requests) == 1
        assert server.status_patches[-1]["reason"] == "RegistryUnavailable"
        failed = controller.registrations[("ml", "tune")]
        controller.registrations[("ml", "tune")] = Attempts(failures=failed.failures, error=failed.error, failed_at="2000-01-01T00:00:00Z")
        await settle()  # the back-off passed: registered
        await settle()  # recorded
        assert len(registrar.requests) == 2
        final = server.status_patches[-1]
        assert final["phase"] == "Completed" and final["model"]["version"] == "1"
        assert final["model"]["uri"] == f"{OUTPUT}/tune-1/model.pt"
        await settle()
        assert len(registrar.requests) == 2
        assert any(event["reason"] == "ModelRegistered" for event in server.events)

    asyncio.run(scenario())


# ---- a local sweep (trainrun sweep --local): the same plan, the registration tried from this process ----


class LocalTrials:
    """A local backend whose runs complete as soon as they are created (tune-1 the best), with a verified copy."""

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}

    def create(self, trial: dict[str, Any]) -> None:
        self.runs[trial["metadata"]["name"]] = finished(copy.deepcopy(trial))

    def list(self, *, all_namespaces: bool = False) -> list[dict[str, Any]]:
        return list(self.runs.values())


@pytest.mark.parametrize(
    ("outcomes", "phase", "model", "words"),
    [
        pytest.param(["down", "ok"], Phase.COMPLETED, True, "registered as model tuned version 3", id="down once, then registered"),
        pytest.param(["down", "down", "down"], Phase.COMPLETED, False, "gave up after 3 tries", id="down: given up"),
        pytest.param(["refused"], Phase.COMPLETED, False, "the model was not registered: no such name", id="refused"),
    ],
)
def test_a_local_sweep_registers_its_best_model_from_this_process(
    outcomes: list[str], phase: Phase, model: bool, words: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainrun.local.registry as local_registry
    import trainrun.status.work as work
    from trainrun.client import Client

    tried: list[tuple[str, str]] = []

    def register(sweep: Any, best: Any, trial: Any, status: TrainingRunStatus, env: Any = None) -> Registration:
        outcome = outcomes[len(tried)]
        tried.append((best.trial, status.artifacts.uri if status.artifacts else ""))
        if outcome == "down":
            raise RegistryUnavailable("MLflow at http://127.0.0.1:1 cannot be reached")
        return Registration(model=MODEL) if outcome == "ok" else Registration(refused="no such name")

    monkeypatch.setattr(local_registry, "register_sweep_model", register)
    monkeypatch.setattr(work, "retry_delay", lambda failures: 0.0)
    client = Client(backend="local", runs_dir=tmp_path / "runs")
    client.backend = LocalTrials()  # type: ignore[assignment]
    finished_sweep = client.run_sweep(registering_doc(), poll_seconds=0.01)
    status = finished_sweep["status"]
    assert status["phase"] == phase.value and words in status["message"], status["message"]
    assert ("model" in status) is model
    assert tried == [("tune-1", f"{OUTPUT}/tune-1")] * len(outcomes)
