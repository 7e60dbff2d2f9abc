"""``trainrun.plan.plan``: what one reconcile decides, for every phase and transition, without a cluster.

Table-driven: each case is a run (its body and current status), what the watches observed, and what
the plan must do (actions, phase, Events, whether to read the manifest or follow logs).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from factories import NOW, PyTorchJobBuilder, at, event, pod, pytorchjob, uploader_job
from run_factory import document, pools
from trainrun.plan import NO_TRAINING_OPERATOR, Apply, Delete, ManifestRead, MergePatch, Observed, plan, projections
from trainrun.plan.core import RESYNC_SECONDS
from trainrun.render import render_pytorchjob
from trainrun.spec import load_training_run
from trainrun.spec.config import LogArchiveSettings
from trainrun.spec.status import Artifacts, Phase

ARTIFACTS = Artifacts(uri="s3://models/run/", manifest_uri="s3://models/run/manifest.json", file_count=3, bytes=1234)


def body(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """A TrainingRun named run in namespace default, as the API server serves it."""
    spec = {"image": "ghcr.io/acme/trainer:1.0", "distribution": {"workers": 1}, **spec}
    document_ = document(**spec)
    document_["metadata"] = {"name": "run", "namespace": "default", "uid": "uid-1", "generation": 1}
    if status is not None:
        document_["status"] = status
    return document_


def with_output(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return body(status, output={"uri": "s3://models/run/"}, **spec)


def job(**spec: Any) -> PyTorchJobBuilder:
    """The PyTorchJob as rendered from the run with these spec fields (its applied-spec annotation)."""
    built = pytorchjob()
    rendered = render_pytorchjob(load_training_run(body(**spec)), pools())
    built["metadata"]["annotations"] = rendered["metadata"]["annotations"]
    built["spec"]["runPolicy"] = rendered["spec"]["runPolicy"]
    return built


def running_pods() -> list[dict[str, Any]]:
    return [pod("run-master-0").running(), pod("run-worker-0").running()]


def previous(phase: Phase, **fields: Any) -> dict[str, Any]:
    return {"phase": phase.value, "observedGeneration": 1, **fields}



@dataclass
class Case:
    name: str
    run: dict[str, Any]
    observed: Observed
    actions: list[str]  # "apply PyTorchJob", "patch PyTorchJob", "delete PersistentVolumeClaim"
    phase: Phase
    event: str | None = None  # the reason of the one Event posted, if any
    read_manifest: bool = False
    follow_logs: bool = False
    seal_logs: bool = False
    message_has: list[str] = field(default_factory=list)


def describe(action: Apply | MergePatch | Delete) -> str:
    if isinstance(action, Apply):
        return f"apply {action.obj['kind']}"
    return f"{'patch' if isinstance(action, MergePatch) else 'delete'} {action.kind}"


CASES = [
    Case("new run: create its PyTorchJob", body(), Observed(), ["apply PyTorchJob"], Phase.QUEUED, event="Creating"),
    Case(
        "new run with an output: its claim first, then the job",
        with_output(),
        Observed(),
        ["apply PersistentVolumeClaim", "apply PyTorchJob"],
        Phase.QUEUED,
        event="Creating",
    ),
    Case(
        "the claim exists already: only the job",
        with_output(),
        Observed(claim_present=True),
        ["apply PyTorchJob"],
        Phase.QUEUED,
        event="Creating",
    ),
    Case(
        "job created, pods unscheduled: Queued, nothing to do",
        body(previous(Phase.QUEUED)),
        Observed(job=job().created(), pods=[pod("run-master-0").pending_unschedulable("0/3 nodes are available")]),
        [],
        Phase.QUEUED,
        follow_logs=True,
        message_has=["0/3 nodes are available"],
    ),
    Case(
        "pods run: Running, follow the logs",
        body(previous(Phase.PREPARING)),
        Observed(job=job().running().started(), pods=running_pods()),
        [],
        Phase.RUNNING,
        event="Running",
        follow_logs=True,
    ),
    Case(
        "a live change (backoffLimit) is patched into the running job",
        body(previous(Phase.RUNNING), runPolicy={"backoffLimit": 7}),
        Observed(job=job().running().started(), pods=running_pods()),
        ["patch PyTorchJob"],
        Phase.RUNNING,
        follow_logs=True,
    ),
    Case(
        "a change a live job cannot take waits, reported as pending",
        body(previous(Phase.RUNNING), image="ghcr.io/acme/trainer:2.0"),
        Observed(job=job().running().started(), pods=running_pods()),
        [],
        Phase.RUNNING,
        follow_logs=True,
    ),
    Case(
        "suspended job with a pending change: re-applied",
        body(previous(Phase.SUSPENDED), image="ghcr.io/acme/trainer:2.0", runPolicy={"suspend": True}),
        Observed(job=job(runPolicy={"suspend": True}).suspended()),
        ["apply PyTorchJob"],
        Phase.SUSPENDED,
        follow_logs=True,
    ),
    Case(
        "training succeeded with an output: start the uploader",
        with_output(previous(Phase.RUNNING)),
        Observed(job=job(output={"uri": "s3://models/run/"}).succeeded().started(), claim_present=True),
        ["apply Job"],
        Phase.UPLOADING,
        event="Uploading",
        seal_logs=True,
    ),
    Case(
        "the uploader succeeded, the logs not composed yet: seal them first, the manifest waits",
        with_output(previous(Phase.UPLOADING)),
        Observed(job=job(output={"uri": "s3://models/run/"}).succeeded().started(), uploader=uploader_job().succeeded(), claim_present=True),
        [],
        Phase.UPLOADING,
        seal_logs=True,
    ),
    Case(
        "the uploader succeeded and the logs are composed: read the manifest before deciding",
        with_output(previous(Phase.UPLOADING)),
        Observed(
            job=job(output={"uri": "s3://models/run/"}).succeeded().started(),
            uploader=uploader_job().succeeded(),
            claim_present=True,
            logs_archived=True,
        ),
        [],
        Phase.UPLOADING,
        read_manifest=True,
    ),
    Case(
        "manifest read: Completed with artifacts, the per-run claim released",
        with_output(previous(Phase.UPLOADING)),
        Observed(
            job=job(output={"uri": "s3://models/run/"}).succeeded().started(),
            uploader=uploader_job().succeeded(),
            claim_present=True,
            manifest=ManifestRead(ARTIFACTS),
            logs_archived=True,
        ),
        ["delete PersistentVolumeClaim"],
        Phase.COMPLETED,
        event="Completed",
    ),
    Case(
        "no manifest although the uploader succeeded: never Completed",
        with_output(previous(Phase.UPLOADING)),
        Observed(
            job=job(output={"uri": "s3://models/run/"}).succeeded().started(),
            uploader=uploader_job().succeeded(),
            manifest=ManifestRead(None, "the uploader finished but wrote no s3://models/run/manifest.json"),
            logs_archived=True,
        ),
        [],
        Phase.UPLOADING,
        message_has=["wrote no s3://models/run/manifest.json"],
    ),
    Case(
        "job gone after it finished (TTL): never trained again",
        body(previous(Phase.COMPLETED, reason="Succeeded", message="done")),
        Observed(),
        [],
        Phase.COMPLETED,
    ),
    Case(
        "replica failed: Failed, the logs are archived (no longer followed)",
        body(previous(Phase.RUNNING)),
        Observed(
            job=job().failed().started(),
            pods=[pod("run-master-0").running(), pod("run-worker-0").terminated(3, finished_at=at(19))],
        ),
        [],
        Phase.FAILED,
        event="ReplicaFailed",
        message_has=["worker-0", "3"],
    ),
    Case(
        "replica failed with an output: the logs are sealed into it (no copy of the outputs)",
        with_output(previous(Phase.RUNNING)),
        Observed(
            job=job(output={"uri": "s3://models/run/"}).failed().started(),
            pods=[pod("run-master-0").terminated(1, finished_at=at(19))],
            claim_present=True,
        ),
        [],
        Phase.FAILED,
        event="ReplicaFailed",
        seal_logs=True,
    ),
    Case(
        "finished with its logs composed: nothing more (even with the job gone)",
        with_output(previous(Phase.FAILED, reason="ReplicaFailed", message="x", logs={"uri": "s3://models/run/logs", "complete": True})),
        Observed(),
        [],
        Phase.FAILED,
    ),
    Case(
        "no training-operator: stalled, nothing created",
        body(),
        Observed(job_kind_served=False),
        [],
        Phase.QUEUED,
        event="TrainingOperatorMissing",
        message_has=[NO_TRAINING_OPERATOR],
    ),
    Case(
        "the API server refused the child: the refusal is the status, nothing retried at once",
        body(),
        Observed(refusal="the API server refused the run's PyTorchJob: .spec.x: field not declared in schema"),
        [],
        Phase.QUEUED,
        event="InvalidConfiguration",
        message_has=["field not declared in schema"],
    ),
    Case(
        "an unknown pool: refused with the pool named",
        body(resources={"pool": "h100"}),
        Observed(),
        [],
        Phase.QUEUED,
        event="PoolNotFound",
        message_has=["h100"],
    ),
    Case(
        "cancelled while running: the job is suspended through its run policy",
        body(previous(Phase.RUNNING), cancel=True),
        Observed(job=job().running().started(), pods=running_pods()),
        ["patch PyTorchJob"],
        Phase.CANCELLED,
        event="Cancelled",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_plan(case: Case) -> None:
    decided = plan(case.run, pools(), case.observed, now=NOW)
    assert [describe(action) for action in decided.actions] == case.actions
    assert decided.status.phase is case.phase, decided.status.message
    assert [change.reason for change in decided.events] == ([case.event] if case.event else [])
    assert decided.read_manifest is case.read_manifest
    assert decided.follow_logs is case.follow_logs
    assert decided.seal_logs is case.seal_logs
    for words in case.message_has:
        assert words in (decided.status.message or ""), decided.status.message
    assert decided.requeue_after == (None if case.phase.finished else RESYNC_SECONDS)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_plan_is_idempotent(case: Case) -> None:
    """Planning again with the status written and the same observations changes nothing more."""
    first = plan(case.run, pools(), case.observed, now=NOW)
    written = copy.deepcopy(case.run)
    written["status"] = first.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    again = plan(written, pools(), case.observed, now=NOW)
    assert again.status_patch == {}
    assert again.events == ()
    assert again.status == first.status


def test_the_live_patch_carries_only_what_changed() -> None:
    decided = plan(
        body(previous(Phase.RUNNING), runPolicy={"backoffLimit": 7}),
        pools(),
        Observed(job=job().running().started(), pods=running_pods()),
        now=NOW,
    )
    (patch,) = decided.actions
    assert isinstance(patch, MergePatch)
    assert patch.patch == {"spec": {"runPolicy": {"backoffLimit": 7}}}


def test_pending_changes_are_reported() -> None:
    decided = plan(
        body(previous(Phase.RUNNING), image="ghcr.io/acme/trainer:2.0"),
        pools(),
        Observed(job=job().running().started(), pods=running_pods()),
        now=NOW,
    )
    assert decided.status.pending_changes == ["spec.image"]


def test_metrics_from_the_follower_go_into_status() -> None:
    observed = Observed(job=job().running().started(), pods=running_pods(), metrics={"loss": 0.5}, key_metric="loss=0.5")
    decided = plan(body(previous(Phase.RUNNING)), pools(), observed, now=NOW)
    assert decided.status.metrics == {"loss": 0.5}
    assert decided.status.key_metric == "loss=0.5"
    assert decided.status_patch["metrics"] == {"loss": 0.5}
    assert decided.status_patch["keyMetric"] == "loss=0.5"


def test_an_invalid_run_is_refused_naming_the_field() -> None:
    broken = body()
    broken["spec"]["distribution"] = {"workers": -1}
    decided = plan(broken, pools(), Observed(), now=NOW)
    assert decided.actions == ()
    assert "distribution.workers" in (decided.status.message or "")
    assert decided.run is None


def test_the_plan_from_projections_is_the_plan_from_whole_objects() -> None:
    """What the operator keeps in memory is enough: the same plan as from the objects the API serves."""
    failed = job().failed().started()
    failed["metadata"]["managedFields"] = [{"manager": "training-operator"}]
    pods = [pod("run-master-0").running(), pod("run-worker-0").terminated(3, finished_at=at(19))]
    events = [event("FailedScheduling", "0/3 nodes are available", name="run-worker-0", when=at(2))]
    whole = Observed(job=failed, pods=pods, events=events)
    trimmed = replace(
        whole,
        job=projections.pytorchjob(failed),
        pods=[projections.pod(item) for item in pods],
        events=[projections.event(item) for item in events],
    )
    run = body(previous(Phase.RUNNING))
    assert plan(run, pools(), whole, now=NOW) == plan(projections.training_run(run), pools(), trimmed, now=NOW)


@pytest.mark.parametrize(
    ("spec", "default_uri", "archive"),
    [
        ({"output": {"uri": "s3://models/run/"}}, None, "s3://models/run/logs"),
        ({"output": {"uri": "s3://models/run"}}, "s3://logs/all", "s3://models/run/logs"),
        ({}, "s3://logs/all/", "s3://logs/all/default/run-uid-1"),
        ({}, None, None),
    ],
    ids=["beside-the-outputs", "output-wins-over-default", "default-location", "nowhere"],
)
def test_where_the_logs_are_archived(spec: dict[str, Any], default_uri: str | None, archive: str | None) -> None:
    config = pools().model_copy(update={"logs": LogArchiveSettings(default_uri=default_uri)})
    decided = plan(body(previous(Phase.RUNNING), **spec), config, Observed(job=job(**spec).running().started(), pods=running_pods()), now=NOW)
    assert decided.log_archive == archive
    assert (decided.status.logs.uri if decided.status.logs else None) == archive
    assert decided.status.logs is None or decided.status.logs.complete is False
