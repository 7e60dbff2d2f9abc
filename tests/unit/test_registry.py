"""Model registration and experiment tracking, the pure parts: the spec and configuration, the plan's
decisions (when to register, what, when to try again, what the status and Events say), the request bodies
sent to MLflow, and the tracker's choice of metric rows. The server itself: tests/integration/test_model_registry.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from factories import NOW, pytorchjob, uploader_job
from run_factory import document, pools
from trainrun.base.registry import RUN_UID_TAG, SENT_TAG, VersionRequest, manifest_digest, path_problem
from trainrun.plan import Attempts, Observed, Register, Registration, SealedLogs, plan
from trainrun.plan.registration import TrackingFacts
from trainrun.registry.mlflow import (
    create_version_body,
    error_words,
    log_batch_bodies,
    metric_rows,
    quoted,
    tracked_rows,
    version_filter,
    version_info,
)
from trainrun.spec import InvalidTrainingRun, load_training_run, parse_operator_config, validate_training_run
from trainrun.spec.status import Artifacts, ModelVersion, Phase
from trainrun.storage.manifest import FileRecord, Manifest

ARTIFACTS = Artifacts(uri="s3://models/run", manifest_uri="s3://models/run/manifest.json", file_count=3, bytes=1234)
SEALED = SealedLogs(metrics={"val_loss": 0.25}, key_metric="val_loss=0.25")
MLFLOW = {"registries": {"mlflow": {"type": "mlflow", "uri": "http://mlflow.mlflow:5000"}}, "defaultRegistry": "mlflow"}


def config(**extra: Any) -> Any:
    base = pools().model_dump(by_alias=True, exclude_none=True)
    return parse_operator_config({**base, **MLFLOW, **extra})


def body(status: dict[str, Any] | None = None, register: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    output: dict[str, Any] = {"uri": "s3://models/run"}
    if register is not None:
        output["register"] = register
    document_ = document(image="ghcr.io/acme/trainer:1.0", output=output, **spec)
    document_["metadata"] = {"name": "run", "namespace": "team-a", "uid": "uid-1", "generation": 1}
    if status is not None:
        document_["status"] = status
    return document_


def copied(**facts: Any) -> Observed:
    """Training succeeded, the copy is made and its manifest read."""
    return Observed(
        job=pytorchjob().succeeded().started(),
        uploader=uploader_job().succeeded(),
        manifest=Attempts(result=ARTIFACTS),
        seal=Attempts(result=SEALED),
        **facts,
    )


UPLOADING = {"phase": "Uploading", "observedGeneration": 1}


# ---- spec and configuration ----


def test_register_and_tracking_parse_with_their_defaults() -> None:
    run = load_training_run(body(register={"name": "birds", "path": "triton/birds/", "tags": {"team": "vision"}}))
    registration = run.spec.output.registration
    assert registration is not None
    assert (registration.name, registration.registry, registration.path) == ("birds", None, "triton/birds")
    assert load_training_run(body(tracking={"experiment": "e"})).spec.tracking is not None


@pytest.mark.parametrize(
    ("register", "field", "words"),
    [
        ({"name": "has space"}, "spec.output.register.name", "pattern"),
        ({"name": "m", "path": "/abs/model.pt"}, "spec.output.register.path", "not a path inside the outputs"),
        ({"name": "m", "path": "a/../b"}, "spec.output.register.path", "without '.' or '..'"),
        ({"name": "m", "registry": "Not_A_Key"}, "spec.output.register.registry", "lower-case"),
        ({"name": "m", "tags": {"trainrun.run_uid": "x"}}, "spec.output.register.tags", "the operator's own"),
        ({"name": "m", "extra": 1}, "spec.output.register.extra", "unknown field"),
    ],
)
def test_bad_register_fields_are_named(register: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(InvalidTrainingRun) as raised:
        load_training_run(body(register=register))
    assert any(problem.field == field and words in str(problem) for problem in raised.value.problems), raised.value.problems


@pytest.mark.parametrize(
    ("spec", "registries", "expected"),
    [
        ({"register": {"name": "m", "registry": "nope"}}, MLFLOW, "spec.output.register.registry: unknown registry 'nope'; the operator knows: mlflow"),
        ({"register": {"name": "m"}}, {}, "spec.output.register.registry: names no registry and the operator configuration has no defaultRegistry"),
        ({"tracking": {"registry": "nope"}}, MLFLOW, "spec.tracking.registry: unknown registry 'nope'"),
    ],
)
def test_registries_the_configuration_lacks_are_refused(spec: dict[str, Any], registries: dict[str, Any], expected: str) -> None:
    document_ = body(register=spec.get("register"), **({"tracking": spec["tracking"]} if "tracking" in spec else {}))
    settings = parse_operator_config({**pools().model_dump(by_alias=True, exclude_none=True), **registries})
    with pytest.raises(InvalidTrainingRun) as raised:
        validate_training_run(document_, settings)
    assert expected in str(raised.value)


def test_register_needs_an_output_uri_on_a_cluster_not_locally() -> None:
    document_ = document(image="x", output={"register": {"name": "m"}})
    with pytest.raises(InvalidTrainingRun, match="spec.output.register: needs spec.output.uri"):
        validate_training_run(document_, config())
    assert validate_training_run(document_, config(), local=True).spec.output.registration is not None


@pytest.mark.parametrize(
    ("registries", "words"),
    [
        ({"registries": {"m": {"type": "mlflow", "uri": "http://user:secret@h:5000"}}}, "carries credentials"),
        ({"registries": {"m": {"type": "mlflow", "uri": "mlflow.local"}}}, "is not an http(s) URL"),
        ({"registries": {"m": {"type": "hub", "uri": "http://h"}}}, "'mlflow'"),
        ({"defaultRegistry": "absent"}, "defaultRegistry: unknown registry 'absent'"),
        ({"registries": MLFLOW["registries"], "tracking": {"registry": "absent"}}, "tracking.registry: unknown registry"),
    ],
)
def test_bad_registry_configuration(registries: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")) as raised:
        parse_operator_config(registries)
    assert "secret@" not in str(raised.value).split("input_value")[0]


# ---- the plan ----


def test_a_verified_copy_is_registered_before_the_run_is_completed() -> None:
    decided = plan(body(UPLOADING, register={"name": "birds", "path": "model.pt"}), config(), copied(), now=NOW)
    assert decided.status.phase is Phase.UPLOADING and decided.status.reason == "Registering"
    assert decided.status.message is not None and decided.status.message.endswith("registering model birds in registry mlflow")
    [work] = [item for item in decided.storage if isinstance(item, Register)]
    assert work.registry == "mlflow" and work.path == "model.pt" and work.manifest_uri == ARTIFACTS.manifest_uri
    request = work.request
    assert (request.name, request.source, request.run_uid) == ("birds", "s3://models/run/model.pt", "uid-1")
    tags = dict(request.tags)
    assert tags["trainrun.run"] == "run" and tags["trainrun.namespace"] == "team-a"
    assert tags["trainrun.image"] == "ghcr.io/acme/trainer:1.0" and tags["trainrun.manifest"] == ARTIFACTS.manifest_uri
    assert tags["metric.val_loss"] == "0.25" and tags["param.epochs"] == "5"


def test_a_registration_under_way_is_not_started_twice() -> None:
    observed = copied(registration=Attempts(running=True))
    decided = plan(body(UPLOADING, register={"name": "birds"}), config(), observed, now=NOW)
    assert decided.status.reason == "Registering" and not [item for item in decided.storage if isinstance(item, Register)]


def test_registered_completes_the_run_with_the_version_an_event_and_a_condition() -> None:
    model = ModelVersion(registry="mlflow", name="birds", version="7", uri="s3://models/run")
    decided = plan(body(UPLOADING, register={"name": "birds"}), config(), copied(registration=Attempts(result=Registration(model=model))), now=NOW)
    status = decided.status
    assert status.phase is Phase.COMPLETED and status.model == model
    assert status.message is not None and status.message.endswith("registered as model birds version 7 in registry mlflow")
    registered = next(item for item in status.conditions if item.type == "Registered")
    assert (registered.status, registered.reason) == ("True", "Registered")
    assert [event.reason for event in decided.events] == ["Completed", "ModelRegistered"]
    # Planned again from the status it wrote (the fact forgotten, as after a restart): nothing new.
    again = plan(body(status.to_patch(), register={"name": "birds"}), config(), copied(), now=NOW)
    assert again.status.model == model and not again.events and not again.status_patch
    assert not [item for item in again.storage if isinstance(item, Register)]


def test_a_refusal_completes_the_run_with_registered_false() -> None:
    refused = Registration(refused="MLflow at http://h refused model-versions/create: INVALID_PARAMETER_VALUE: no")
    decided = plan(body(UPLOADING, register={"name": "birds"}), config(), copied(registration=Attempts(result=refused)), now=NOW)
    status = decided.status
    assert status.phase is Phase.COMPLETED and status.model is None
    registered = next(item for item in status.conditions if item.type == "Registered")
    assert (registered.status, registered.reason, registered.message) == ("False", "RegistrationRefused", refused.refused)
    assert "the model was not registered: MLflow at http://h refused" in (status.message or "")
    assert [event.reason for event in decided.events] == ["Completed", "RegistrationRefused"]
    again = plan(body(status.to_patch(), register={"name": "birds"}), config(), copied(), now=NOW)
    assert next(item for item in again.status.conditions if item.type == "Registered").status == "False"
    assert not again.events and not again.storage


def test_a_registry_that_is_down_is_tried_again_with_back_off() -> None:
    failed = Attempts[Registration](failures=2, error="MLflow at http://h:5000 cannot be reached: refused", failed_at=NOW)
    decided = plan(body(UPLOADING, register={"name": "birds"}), config(), copied(registration=failed), now=NOW)
    status = decided.status
    assert status.phase is Phase.UPLOADING and status.reason == "RegistryUnavailable"
    assert status.message == (
        "registering model birds in registry mlflow: MLflow at http://h:5000 cannot be reached: refused (attempt 2); "
        "trying again in 10 s, at 2026-01-01T12:00:10Z"
    )
    assert not [item for item in decided.storage if isinstance(item, Register)]
    assert decided.requeue_after == pytest.approx(10.0)
    assert "RegistryFailing" in [event.reason for event in decided.events]


def test_without_register_the_run_completes_as_before() -> None:
    decided = plan(body(UPLOADING), config(), copied(), now=NOW)
    assert decided.status.phase is Phase.COMPLETED and decided.status.model is None
    assert not any(item.type == "Registered" for item in decided.status.conditions)


def test_an_unknown_registry_stalls_the_run_before_its_job() -> None:
    decided = plan(body(register={"name": "m", "registry": "nope"}), config(), Observed(), now=NOW)
    assert decided.status.reason == "RegistryNotFound" and not decided.actions
    assert "spec.output.register.registry: unknown registry 'nope'" in (decided.status.message or "")


def test_tracking_follows_the_run_and_ends_with_its_final_status() -> None:
    tracked = config(tracking={"experiment": "birds"})
    running = plan(body({"phase": "Running", "observedGeneration": 1}), tracked, Observed(job=pytorchjob().started()), now=NOW)
    track = running.tracking
    assert track is not None and (track.registry, track.experiment, track.run_uid, track.final) == ("mlflow", "birds", "uid-1", None)
    assert ("epochs", "5") in track.params and (RUN_UID_TAG, "uid-1") in track.tags
    done = plan(body(UPLOADING), tracked, copied(tracking=TrackingFacts(run_id="r1")), now=NOW)
    assert done.tracking is not None and done.tracking.final == "FINISHED"
    assert done.status.tracking is not None and done.status.tracking.run_id == "r1"
    ended = plan(body(done.status.to_patch()), tracked, copied(tracking=TrackingFacts(run_id="r1", ended=True)), now=NOW)
    assert ended.status.tracking is not None and ended.status.tracking.ended
    assert plan(body(ended.status.to_patch()), tracked, copied(), now=NOW).tracking is None


def test_a_run_finished_before_tracking_was_configured_is_not_tracked() -> None:
    finished = {"phase": "Completed", "observedGeneration": 1, "reason": "Completed", "message": "done"}
    assert plan(body(finished), config(tracking={}), Observed(), now=NOW).tracking is None
    assert plan(body(tracking={"enabled": False}), config(tracking={}), Observed(), now=NOW).tracking is None


def test_a_tracked_run_links_its_version_to_the_tracked_run() -> None:
    tracked = config(tracking={})
    # The tracker has not created the MLflow run yet: the version waits for it (the tracker requeues the run).
    waiting = plan(body(UPLOADING, register={"name": "birds"}), tracked, copied(tracking=TrackingFacts()), now=NOW)
    assert waiting.status.reason == "Registering" and not [item for item in waiting.storage if isinstance(item, Register)]
    # A tracker in trouble does not hold the registration: the version goes unlinked.
    failing = plan(body(UPLOADING, register={"name": "birds"}), tracked, copied(tracking=TrackingFacts(problem="down")), now=NOW)
    [work] = [item for item in failing.storage if isinstance(item, Register)]
    assert work.request.run_id is None
    status = {**UPLOADING, "tracking": {"registry": "mlflow", "experiment": "team-a", "runId": "r9"}}
    decided = plan(body(status, register={"name": "birds"}), tracked, copied(), now=NOW)
    [work] = [item for item in decided.storage if isinstance(item, Register)]
    assert work.request.run_id == "r9"


# ---- the manifest check, before a registry is asked ----


def test_the_model_path_must_be_in_the_manifest() -> None:
    manifest = Manifest(files=(FileRecord("model.pt", 1, "a"), FileRecord("triton/m/1/model.pt", 1, "b")), created="t")
    paths = [record.path for record in manifest.files]
    assert path_problem(paths, None, "m") is None
    assert path_problem(paths, "model.pt", "m") is None and path_problem(paths, "triton/m", "m") is None
    problem = path_problem(paths, "triton/mo", "s3://b/manifest.json")
    assert problem is not None and problem.startswith("spec.output.register.path: 'triton/mo' is not in the copied outputs")
    assert "s3://b/manifest.json lists: model.pt, triton" in problem
    digest = manifest_digest(manifest.to_json())
    assert digest.startswith("sha256:") and len(digest) == 71


# ---- MLflow request bodies ----


def test_the_version_search_filter_finds_a_run_by_its_uid_tag() -> None:
    assert version_filter("birds", "uid-1") == "name = 'birds' and tags.`trainrun.run_uid` = 'uid-1'"
    assert version_filter(None) == "" and quoted("it's") == "'it\\'s'"


def test_a_version_is_created_with_its_uid_tag_in_the_same_request() -> None:
    request = VersionRequest(name="b", source="s3://m/r", run_uid="u", tags=(("k", "v"),), description="d", run_id="r")
    assert create_version_body(request) == {
        "name": "b",
        "source": "s3://m/r",
        "tags": [{"key": "k", "value": "v"}, {"key": RUN_UID_TAG, "value": "u"}],
        "run_id": "r",
        "description": "d",
    }


def test_metric_records_become_mlflow_metrics_with_their_steps_and_times() -> None:
    records = [
        {"time": "2026-11-30T10:00:00Z", "replica": "master-0", "epoch": 1, "step": 10, "loss": 2.0, "lr": 0.1},
        {"time": "2026-11-30T10:00:01.5Z", "replica": "master-0", "loss": 1.0, "final": True},
    ]
    assert metric_rows(records) == [
        {"key": "loss", "value": 2.0, "timestamp": 1796032800000, "step": 10},
        {"key": "lr", "value": 0.1, "timestamp": 1796032800000, "step": 10},
        {"key": "loss", "value": 1.0, "timestamp": 1796032801500, "step": 0},
    ]


def test_the_tracker_sends_the_masters_records_without_the_final_repeat() -> None:
    lines = [
        json.dumps({"time": "2026-11-30T10:00:00Z", "replica": "master-0", "step": 1, "loss": 2.0}),
        json.dumps({"time": "2026-11-30T10:00:00Z", "replica": "worker-0", "step": 1, "loss": 2.1}),
        json.dumps({"time": "2026-11-30T10:00:01Z", "replica": "master-0", "step": 1, "loss": 2.0, "final": True}),
        "not json",
    ]
    assert [(row["key"], row["value"], row["step"]) for row in tracked_rows(lines)] == [("loss", 2.0, 1)]


def test_log_batches_keep_within_the_servers_limits_and_carry_the_mark_with_the_last_metrics() -> None:
    metrics = [{"key": "m", "value": float(i), "timestamp": i, "step": i} for i in range(2000)]
    params = [(f"p{i}", "v" * 7000) for i in range(150)]
    bodies = log_batch_bodies("r", metrics=metrics, params=params, tags=[(SENT_TAG, "42")])
    assert [len(body.get("params", ())) for body in bodies[:2]] == [100, 50]
    assert all(len(value["value"]) == 6000 for body in bodies for value in body.get("params", ()))
    metric_bodies = [body for body in bodies if "metrics" in body]
    assert [len(body["metrics"]) for body in metric_bodies] == [900, 900, 200]
    assert bodies[-1]["tags"] == [{"key": SENT_TAG, "value": "42"}] and "metrics" in bodies[-1]
    assert all(len(body.get("metrics", ())) + len(body.get("params", ())) + len(body.get("tags", ())) <= 1000 for body in bodies)
    assert log_batch_bodies("r", tags=[("a", "b")]) == [{"run_id": "r", "tags": [{"key": "a", "value": "b"}]}]


def test_answers_are_read_into_versions_and_words() -> None:
    version = version_info(
        {"name": "b", "version": "3", "source": "s3://m", "creation_timestamp": 1796032800000, "run_id": "", "tags": [{"key": "k", "value": "v"}]}
    )
    assert (version.version, version.created, version.run_id, version.tags) == ("3", "2026-11-30T10:00:00Z", None, {"k": "v"})
    assert error_words(400, '{"error_code": "INVALID_PARAMETER_VALUE", "message": "bad"}') == "INVALID_PARAMETER_VALUE: bad"
    assert error_words(502, "<html>bad gateway</html>") == "HTTP 502: <html>bad gateway</html>"
