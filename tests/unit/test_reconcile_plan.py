"""``trainrun.plan.plan``: what one reconcile decides, for every phase and transition, without a cluster.

Table-driven: each case is a run (its body and current status), what the watches observed, and what
the plan must do (actions, phase, Events, whether to read the manifest or follow logs).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from factories import NOW, PyTorchJobBuilder, at, event, pod, pytorchjob, uploader_job
from run_factory import document, pools
from trainrun.kube.body import decode_list_page, decode_watch_event
from trainrun.kube.streams import started_container_restarts, training_container_name
from trainrun.plan import (
    Apply,
    Attempts,
    Delete,
    MergePatch,
    Observed,
    ReadManifest,
    Refusal,
    SealedLogs,
    SealLogs,
    plan,
    projections,
)
from trainrun.plan.causes import worth_remembering
from trainrun.plan.core import RESYNC_SECONDS, replicas_that_ran
from trainrun.render import render_pytorchjob
from trainrun.render.backend import PYTORCHJOB
from trainrun.spec import load_training_run
from trainrun.spec.config import LogArchiveSettings
from trainrun.spec.status import Artifacts, Phase, ReplicaCounts
from trainrun.status.observe import observe_job, observe_pod

ARTIFACTS = Artifacts(uri="s3://models/run/", manifest_uri="s3://models/run/manifest.json", file_count=3, bytes=1234)
SEALED = SealedLogs(metrics={"loss": 0.25}, key_metric="loss=0.25")
STEPS = {SealLogs: "seal", ReadManifest: "manifest"}


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
    storage: list[str] = field(default_factory=list)  # "seal", "manifest": storage work started
    logs: str = "stop"  # what becomes of the log follower: follow, finish (the seal's), stop
    message_has: list[str] = field(default_factory=list)


def describe(action: Apply | MergePatch | Delete) -> str:
    if isinstance(action, Apply):
        return f"apply {action.obj['kind']}"
    return f"{'patch' if isinstance(action, MergePatch) else 'delete'} {action.kind}"


CASES = [
    Case("new run: create its PyTorchJob", body(), Observed(), ["apply PyTorchJob"], Phase.QUEUED, event="WaitingForPods"),
    Case(
        "new run with an output: its claim first, then the job",
        with_output(),
        Observed(),
        ["apply PersistentVolumeClaim", "apply PyTorchJob"],
        Phase.QUEUED,
        event="WaitingForPods",
    ),
    Case(
        "the claim exists already: only the job",
        with_output(),
        Observed(claim_present=True),
        ["apply PyTorchJob"],
        Phase.QUEUED,
        event="WaitingForPods",
    ),
    Case(
        "job created, pods unscheduled: Queued, nothing to do",
        body(previous(Phase.QUEUED)),
        Observed(job=job().created(), pods=[pod("run-master-0").pending_unschedulable("0/3 nodes are available")]),
        [],
        Phase.QUEUED,
        logs="follow",
        message_has=["0/3 nodes are available"],
    ),
    Case(
        "pods run: Running, follow the logs",
        body(previous(Phase.PREPARING)),
        Observed(job=job().running().started(), pods=running_pods()),
        [],
        Phase.RUNNING,
        event="Running",
        logs="follow",
    ),
    Case(
        "a live change (backoffLimit) is patched into the running job",
        body(previous(Phase.RUNNING), runPolicy={"backoffLimit": 7}),
        Observed(job=job().running().started(), pods=running_pods()),
        ["patch PyTorchJob"],
        Phase.RUNNING,
        logs="follow",
    ),
    Case(
        "a change a live job cannot take waits, reported as pending",
        body(previous(Phase.RUNNING), image="ghcr.io/acme/trainer:2.0"),
        Observed(job=job().running().started(), pods=running_pods()),
        [],
        Phase.RUNNING,
        logs="follow",
    ),
    Case(
        "suspended job with a pending change: re-applied",
        body(previous(Phase.SUSPENDED), image="ghcr.io/acme/trainer:2.0", runPolicy={"suspend": True}),
        Observed(job=job(runPolicy={"suspend": True}).suspended()),
        ["apply PyTorchJob"],
        Phase.SUSPENDED,
        logs="follow",
    ),
    Case(
        "training succeeded with an output: start the uploader",
        with_output(previous(Phase.RUNNING)),
        Observed(job=job(output={"uri": "s3://models/run/"}).succeeded().started(), claim_present=True),
        ["apply Job"],
        Phase.UPLOADING,
        event="Uploading",
        logs="follow",  # the uploader's pod is followed too: the seal waits for it to end
    ),
    Case(
        "the uploader copies: its log is followed, the seal waits",
        with_output(previous(Phase.UPLOADING)),
        Observed(job=job(output={"uri": "s3://models/run/"}).succeeded().started(), uploader=uploader_job(), claim_present=True),
        [],
        Phase.UPLOADING,
        logs="follow",
    ),
    Case(
        "the uploader succeeded, the logs not composed yet: seal them first, the manifest waits",
        with_output(previous(Phase.UPLOADING)),
        Observed(job=job(output={"uri": "s3://models/run/"}).succeeded().started(), uploader=uploader_job().succeeded(), claim_present=True),
        [],
        Phase.UPLOADING,
        storage=["seal"],
        logs="finish",
    ),
    Case(
        "the uploader succeeded and the logs are composed: read the manifest before deciding",
        with_output(previous(Phase.UPLOADING)),
        Observed(
            job=job(output={"uri": "s3://models/run/"}).succeeded().started(),
            uploader=uploader_job().succeeded(),
            claim_present=True,
            seal=Attempts(result=SEALED),
        ),
        [],
        Phase.UPLOADING,
        storage=["manifest"],
    ),
    Case(
        "manifest read: Completed with artifacts, the per-run claim released",
        with_output(previous(Phase.UPLOADING)),
        Observed(
            job=job(output={"uri": "s3://models/run/"}).succeeded().started(),
            uploader=uploader_job().succeeded(),
            claim_present=True,
            manifest=Attempts(result=ARTIFACTS),
            seal=Attempts(result=SEALED),
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
            manifest=Attempts(
                failures=1, error="the uploader finished but wrote no s3://models/run/manifest.json", failed_at=NOW
            ),
            seal=Attempts(result=SEALED),
        ),
        [],
        Phase.UPLOADING,
        event="StorageFailing",
        message_has=["wrote no s3://models/run/manifest.json", "attempt 1", "trying again in 5 s"],
    ),
    Case(
        "job gone after it finished (TTL): never trained again",
        body(previous(Phase.COMPLETED, reason="Succeeded", message="done", metricsFinal=True)),
        Observed(),
        [],
        Phase.COMPLETED,
    ),
    Case(
        "finished while no operator ran, logs not archived: read to their end once, for the last metrics",
        body(previous(Phase.COMPLETED, reason="Succeeded", message="done")),
        Observed(job=job().succeeded().started(), pods=[pod("run-master-0").terminated(0, finished_at=at(19))]),
        [],
        Phase.COMPLETED,
        storage=["seal"],
        logs="finish",
    ),
    Case(
        "logs not archived and read to their end: the metrics are final, nothing more",
        body(previous(Phase.COMPLETED, reason="Succeeded", message="done")),
        Observed(job=job().succeeded().started(), seal=Attempts(result=SEALED)),
        [],
        Phase.COMPLETED,
    ),
    Case(
        "replica failed: Failed, its logs read to their end for the metrics (not archived)",
        body(previous(Phase.RUNNING)),
        Observed(
            job=job().failed().started(),
            pods=[pod("run-master-0").running(), pod("run-worker-0").terminated(3, finished_at=at(19))],
        ),
        [],
        Phase.FAILED,
        event="ReplicaFailed",
        storage=["seal"],
        logs="finish",
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
        storage=["seal"],
        logs="finish",
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
        message_has=[PYTORCHJOB.missing()],
    ),
    Case(
        "the API server refused the child: the refusal is the status, nothing retried at once",
        body(),
        Observed(refusal=Refusal(1, "the API server refused the run's PyTorchJob: .spec.x: field not declared in schema", NOW)),
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
        "cancelled while running: the job is suspended through its run policy, its logs read as its pods stop",
        body(previous(Phase.RUNNING), cancel=True),
        Observed(job=job().running().started(), pods=running_pods()),
        ["patch PyTorchJob"],
        Phase.CANCELLED,
        event="Cancelled",
        storage=["seal"],
        logs="finish",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_plan(case: Case) -> None:
    decided = plan(case.run, pools(), case.observed, now=NOW)
    assert [describe(action) for action in decided.actions] == case.actions
    assert decided.status.phase is case.phase, decided.status.message
    assert [change.reason for change in decided.events] == ([case.event] if case.event else [])
    assert [STEPS[type(work)] for work in decided.storage] == case.storage
    assert decided.logs == case.logs
    for words in case.message_has:
        assert words in (decided.status.message or ""), decided.status.message
    if not case.phase.finished and not case.observed.refusal and not case.observed.manifest.failures:
        assert decided.requeue_after == RESYNC_SECONDS


@pytest.mark.parametrize("queue", [None, "team-a"])
def test_the_pass_that_creates_the_job_writes_what_the_jobs_arrival_would_say(queue: str | None) -> None:
    """The pass that creates a run's first job writes the status that holds once it exists (waiting for its
    replicas; through Kueue, for admission), with its name: the pass that the job's arrival brings has nothing
    to write, where a status saying "creating" for milliseconds cost a write and its echo a run."""
    resources = {"pool": "a100", "gpus": 1} if queue is None else {"pool": "a100", "gpus": 1, "queue": queue}
    run = body(resources=resources)
    config = pools()
    local_queue = Observed(kueue_served=True, queue_present=True) if queue is not None else Observed()
    first = plan(run, config, local_queue, now=NOW)
    created = next(action.obj for action in first.actions if isinstance(action, Apply) and action.obj["kind"] == PYTORCHJOB.kind)
    assert first.status.job_name == "run" and first.status.reason != "Creating"
    written = copy.deepcopy(run)
    written["status"] = first.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    arrived = copy.deepcopy(created)
    arrived["metadata"].update(uid="job-uid", creationTimestamp=NOW)
    second = plan(written, config, replace(local_queue, job=projections.pytorchjob(arrived)), now=NOW)
    assert second.status_patch == {} and second.events == () and second.actions == ()


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


def as_served(built: dict[str, Any]) -> dict[str, Any]:
    """A pod as the API server serves it: the fields the projection drops (managed fields, ids, readiness, probe
    times, the Ready conditions, mounts) filled in."""
    served = copy.deepcopy(built)
    served["metadata"]["managedFields"] = [{"manager": "kubelet", "operation": "Update"}]
    status = served.setdefault("status", {})
    status.setdefault("conditions", []).extend(
        {"type": kind, "status": "False", "lastProbeTime": None, "lastTransitionTime": at(1)} for kind in ("Ready", "ContainersReady", "Initialized")
    )
    for key in ("containerStatuses", "initContainerStatuses"):
        for index, item in enumerate(status.get(key) or []):
            item.update(containerID=f"containerd://{index:064d}", imageID="sha256:" + "0" * 64, started=False, ready=False)
            item["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    status.update(hostIP="10.0.0.1", podIP="10.1.0.7", qosClass="Burstable")
    return served


PODS_AS_SEEN = {
    "running and failed": [pod("run-master-0").running(), pod("run-worker-0").terminated(3, finished_at=at(19))],
    "unschedulable": [pod("run-master-0").pending_unschedulable("0/3 nodes are available: 3 Insufficient nvidia.com/gpu"), pod("run-worker-0").scheduled()],
    "image pull": [pod("run-master-0").image_pull_backoff(), pod("run-worker-0").container_creating()],
    "init containers": [pod("run-master-0").init_container().init_failed(2, "no such bucket"), pod("run-worker-0").init_container().init_running()],
    "crash loop and oom": [pod("run-master-0").crash_looping(1, finished_at=at(9)), pod("run-worker-0").oom_killed(finished_at=at(9))],
    "taken away": [pod("run-master-0").evicted("The node was low on resource: memory."), pod("run-worker-0").running().disrupted("DeletionByPodGC", "the node is gone")],
    "restarted and succeeded": [pod("run-master-0").restarted(1, finished_at=at(5)), pod("run-worker-0").succeeded()],
}


@pytest.mark.parametrize("seen", list(PODS_AS_SEEN), ids=list(PODS_AS_SEEN))
def test_the_plan_from_projections_is_the_plan_from_whole_objects(seen: str) -> None:
    """What the operator keeps in memory is enough: the same plan as from the objects the API serves, and the same
    answers for the log follower and the pods the controller remembers once deleted."""
    failed = job().failed().started().replica_status("Master", failed=1).replica_status("Worker", active=1)
    failed["metadata"]["managedFields"] = [{"manager": "training-operator"}]
    for replica_type, numbers in failed["status"]["replicaStatuses"].items():
        numbers["labelSelector"] = {"matchLabels": {"training.kubeflow.org/job-name": "run", "training.kubeflow.org/replica-type": replica_type.lower()}}
        numbers["selector"] = f"training.kubeflow.org/job-name=run,training.kubeflow.org/replica-type={replica_type.lower()}"
    pods = [as_served(item) for item in PODS_AS_SEEN[seen]]
    events = [event("FailedScheduling", "0/3 nodes are available", name="run-worker-0", when=at(2))]
    whole = Observed(job=failed, pods=pods, events=events, gone_pods=pods)
    trimmed = replace(
        whole,
        job=projections.pytorchjob(failed),
        pods=[projections.pod(item) for item in pods],
        events=[projections.event(item) for item in events],
        gone_pods=[projections.pod(item) for item in pods],
    )
    run = body(previous(Phase.RUNNING))
    assert plan(run, pools(), whole, now=NOW) == plan(projections.training_run(run), pools(), trimmed, now=NOW)
    assert observe_job(failed) == observe_job(trimmed.job)
    for served, kept in zip(pods, trimmed.pods, strict=True):
        assert observe_pod(served) == observe_pod(kept)
        assert worth_remembering(served) == worth_remembering(kept)
        assert started_container_restarts(served) == started_container_restarts(kept)
        assert training_container_name(served) == training_container_name(kept)
        assert len(json.dumps(kept)) < len(json.dumps(served))


def served_job_and_run() -> tuple[dict[str, Any], dict[str, Any]]:
    """A failed PyTorchJob and its TrainingRun as the API server serves them: managed fields, the replicas' pod
    templates, the counts' label selectors, kubectl's last-applied annotation."""
    served_job = job().failed().started().replica_status("Master", failed=1).replica_status("Worker", active=1)
    served_job["metadata"]["managedFields"] = [{"manager": "training-operator", "fieldsV1": {"f:status": {"f:conditions": {}}}}]
    for replica_type, numbers in served_job["status"]["replicaStatuses"].items():
        numbers["selector"] = f"training.kubeflow.org/job-name=run,training.kubeflow.org/replica-type={replica_type.lower()}"
    for replica_spec in served_job["spec"]["pytorchReplicaSpecs"].values():
        replica_spec["template"] = {"spec": {"containers": [{"name": "pytorch", "env": [{"name": "RANK", "value": "0"}]}]}}
    run = body(previous(Phase.RUNNING, message="training"))
    run["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": json.dumps(run["spec"])}
    run["metadata"]["managedFields"] = [{"manager": "kubectl-client-side-apply", "operation": "Update"}]
    run["metadata"]["resourceVersion"] = "4711"
    return served_job, run


@pytest.mark.parametrize("seen", list(PODS_AS_SEEN), ids=list(PODS_AS_SEEN))
def test_a_watch_event_decoded_into_its_projections_shape_projects_as_the_whole_object(seen: str) -> None:
    """The watch decodes a pod's, a PyTorchJob's and a TrainingRun's events into the fields their projections read
    (``projections.PodEvent``, ...) and reads past the rest: each projects as the whole object does, and what was
    decoded holds none of what the projection drops."""
    served_job, run = served_job_and_run()
    cases = [(as_served(item), projections.PodEvent, projections.pod) for item in PODS_AS_SEEN[seen]]
    cases += [(served_job, projections.PyTorchJobEvent, projections.pytorchjob), (run, projections.TrainingRunEvent, projections.training_run)]
    for served, shape, project in cases:
        event = decode_watch_event(json.dumps({"type": "MODIFIED", "object": served}).encode(), shape)
        assert event["type"] == "MODIFIED"
        assert project(event["object"]) == project(served)
        assert "managedFields" not in event["object"]["metadata"]
        assert event["object"]["metadata"].get("resourceVersion") == served["metadata"].get("resourceVersion")
    pod_event = decode_watch_event(json.dumps({"type": "ADDED", "object": cases[0][0]}).encode(), projections.PodEvent)
    assert "hostIP" not in pod_event["object"]["status"] and "containerID" not in json.dumps(pod_event)
    job_event = decode_watch_event(json.dumps({"type": "ADDED", "object": served_job}).encode(), projections.PyTorchJobEvent)
    assert "template" not in json.dumps(job_event) and "selector" not in json.dumps(job_event)


@pytest.mark.parametrize("seen", list(PODS_AS_SEEN), ids=list(PODS_AS_SEEN))
def test_a_list_page_decoded_into_its_kinds_shape_projects_as_the_whole_objects(seen: str) -> None:
    """The first listing and every relisting read their pages through the watch event's shape: each item projects
    as the whole object does, without what the projection drops, and the page keeps where the list goes on."""
    served_job, run = served_job_and_run()
    pods = [as_served(item) for item in PODS_AS_SEEN[seen]]
    cases = [(pods, projections.PodEvent, projections.pod), ([served_job], projections.PyTorchJobEvent, projections.pytorchjob)]
    cases.append(([run], projections.TrainingRunEvent, projections.training_run))
    for objects, shape, project in cases:
        listed = {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "77", "continue": "next"}, "items": objects}
        page = decode_list_page(json.dumps(listed).encode(), shape)
        assert page["metadata"] == {"resourceVersion": "77", "continue": "next"}
        assert [project(item) for item in page["items"]] == [project(item) for item in objects]
        assert all("managedFields" not in item["metadata"] for item in page["items"])


@pytest.mark.parametrize(
    "listed",
    [{"metadata": {"resourceVersion": "5"}, "items": None}, {"metadata": {}, "items": [{"metadata": {"name": "p"}, "spec": {"containers": None}}]}],
    ids=["null items", "an item that does not fit"],
)
def test_a_list_page_that_does_not_fit_its_shape_is_decoded_whole(listed: dict[str, Any]) -> None:
    assert decode_list_page(json.dumps(listed).encode(), projections.PodEvent) == listed


@pytest.mark.parametrize(
    "event",
    [
        {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old resource version"}},
        {"type": "MODIFIED", "object": {"metadata": {"name": "p"}, "spec": {"containers": None}}},
        {"type": "MODIFIED", "object": {"metadata": {"name": "p"}, "status": {"conditions": "not a list"}}},
    ],
    ids=["an ERROR's Status", "null where a list is declared", "a string where a list is declared"],
)
def test_a_watch_event_that_does_not_fit_its_shape_is_decoded_whole(event: dict[str, Any]) -> None:
    """What the watch's shape cannot read is not lost: an event that does not fit it, and an ERROR (whose object is
    a Status the shape knows nothing of), comes decoded whole."""
    assert decode_watch_event(json.dumps(event).encode(), projections.PodEvent) == event


@pytest.mark.parametrize(
    "event",
    [
        {"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "12345"}}},
        {"type": "DELETED", "object": {"kind": "Pod", "metadata": {"name": "p", "namespace": "n", "uid": "u", "resourceVersion": "9"}}},
    ],
    ids=["a bookmark", "a deletion"],
)
def test_a_bookmark_and_a_deletion_keep_what_the_watch_reads_of_them(event: dict[str, Any]) -> None:
    """The version a watch goes on from, and the key of an object deleted."""
    decoded = decode_watch_event(json.dumps(event).encode(), projections.PodEvent)
    assert decoded["type"] == event["type"] and decoded["object"]["metadata"] == event["object"]["metadata"]


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


# -- Retry windows: decided by the plan from the facts the background work brought and their times --------
def shifted(seconds: int) -> str:
    """NOW plus ``seconds`` (NOW is 12:00:00)."""
    minutes, rest = divmod(seconds, 60)
    return f"2026-01-01T12:{minutes:02d}:{rest:02d}Z"


def failed(times: int, *, at: str = NOW, words: str = "connection refused") -> Attempts[Any]:
    return Attempts(failures=times, error=words, failed_at=at)


@dataclass
class Retry:
    name: str
    run: dict[str, Any]
    observed: Observed
    now: str
    storage: list[str]  # storage work started now
    actions: list[str]
    requeue_after: float | None
    says: list[str] = field(default_factory=list)  # in the status message or status.logs.message


def uploading(**facts: Any) -> Observed:
    return Observed(
        job=job(output={"uri": "s3://models/run/"}).succeeded().started(),
        uploader=uploader_job().succeeded(),
        claim_present=True,
        **facts,
    )


REFUSED = Refusal(1, "the API server refused the run's PyTorchJob: spec.x: Invalid value", NOW)
RETRIES = [
    Retry(
        "a seal that failed is not tried again before its back-off (5 s after the first failure)",
        with_output(previous(Phase.UPLOADING)), uploading(seal=failed(1)), shifted(3), [], [], 2.0,
        [
            "spec.output.uri: sealing the log archive at s3://models/run/logs: connection refused (attempt 1)",
            "in 5 s, at 2026-01-01T12:00:05Z",
        ],
    ),
    Retry(
        "... and is tried again once it is over",
        with_output(previous(Phase.UPLOADING)), uploading(seal=failed(1)), shifted(5), ["seal"], [], RESYNC_SECONDS,
    ),
    Retry(
        "the back-off doubles per failure (attempt 4: 40 s)",
        with_output(previous(Phase.UPLOADING)), uploading(seal=failed(4)), shifted(30), [], [], 10.0, ["attempt 4", "in 40 s"],
    ),
    Retry(
        "... up to 5 minutes",
        with_output(previous(Phase.UPLOADING)), uploading(seal=failed(12)), shifted(299), [], [], 1.0, ["in 300 s"],
    ),
    Retry(
        "a seal under way is not started twice",
        with_output(previous(Phase.UPLOADING)), uploading(seal=Attempts(running=True, failures=2, failed_at=NOW)),
        shifted(600), [], [], RESYNC_SECONDS,
    ),
    Retry(
        "a manifest read that failed waits out its back-off too (attempt 3: 20 s)",
        with_output(previous(Phase.UPLOADING)), uploading(seal=Attempts(result=SEALED), manifest=failed(3)),
        shifted(19), [], [], 1.0, ["reading the manifest of the copy: connection refused (attempt 3)"],
    ),
    Retry(
        "... then reads it again",
        with_output(previous(Phase.UPLOADING)), uploading(seal=Attempts(result=SEALED), manifest=failed(3)),
        shifted(20), ["manifest"], [], RESYNC_SECONDS,
    ),
    Retry(
        "a refused child is not applied again for 5 minutes: the refusal is the status",
        body(), Observed(refusal=REFUSED), shifted(100), [], [], 200.0, ["spec.x: Invalid value"],
    ),
    Retry(
        "... then it is applied again",
        body(), Observed(refusal=REFUSED), shifted(300), [], ["apply PyTorchJob"], RESYNC_SECONDS,
    ),
    Retry(
        "a new generation of the spec is applied at once",
        body(), Observed(refusal=Refusal(0, REFUSED.words, NOW)), shifted(1), [], ["apply PyTorchJob"], RESYNC_SECONDS,
    ),
]


@pytest.mark.parametrize("case", RETRIES, ids=[case.name for case in RETRIES])
def test_retry_windows(case: Retry) -> None:
    decided = plan(case.run, pools(), case.observed, now=case.now)
    assert [STEPS[type(work)] for work in decided.storage] == case.storage
    assert [describe(action) for action in decided.actions] == case.actions
    assert decided.requeue_after == case.requeue_after
    said = f"{decided.status.message} | {decided.status.logs.message if decided.status.logs else ''}"
    for words in case.says:
        assert words in said, said


def test_the_store_failing_and_recovering_are_events_once() -> None:
    """A Warning when the store starts failing, a Normal Event when it works again; nothing twice."""
    run = with_output(previous(Phase.UPLOADING))
    failing = plan(run, pools(), uploading(seal=failed(1)), now=shifted(1))
    assert [(event.type, event.reason) for event in failing.events] == [("Warning", "StorageFailing")]
    assert failing.status.reason == "StorageUnavailable" and failing.status.logs is not None
    assert failing.status.logs.complete is False and "connection refused" in (failing.status.logs.message or "")
    written = copy.deepcopy(run)
    written["status"] = failing.status.to_patch()
    assert plan(written, pools(), uploading(seal=failed(2)), now=shifted(2)).events == ()
    sealed = plan(written, pools(), uploading(seal=Attempts(result=SEALED, failures=2)), now=shifted(30))
    assert [(event.type, event.reason) for event in sealed.events] == [("Normal", "StorageRecovered")]
    assert sealed.status.logs is not None and sealed.status.logs.complete and sealed.status.logs.message is None
    assert sealed.status.metrics == {"loss": 0.25} and [STEPS[type(work)] for work in sealed.storage] == ["manifest"]


def test_a_suspicious_value_is_a_warning_once_per_generation() -> None:
    """A memory of one byte is legal but surely a slip: a Warning Event names the field, once per generation."""
    first = plan(body(resources={"memory": "1"}), pools(), Observed(), now=NOW)
    warnings = [event for event in first.events if event.reason == "SuspiciousValue"]
    assert len(warnings) == 1 and warnings[0].type == "Warning" and "spec.resources.memory" in warnings[0].message
    written = body({"observedGeneration": 1, "phase": "Queued"}, resources={"memory": "1"})
    assert [event for event in plan(written, pools(), Observed(), now=NOW).events if event.reason == "SuspiciousValue"] == []


# -- The end of a run's pods: the operator's, once their logs are archived ---------------------------------
def finished_run(**run_policy: Any) -> dict[str, Any]:
    logs = {"uri": "s3://models/run/logs", "sealed": True, "complete": True}
    return with_output(previous(Phase.FAILED, reason="ReplicaFailed", message="x", logs=logs), runPolicy=run_policy)


ENDED_PODS = [
    pod("run-master-0").terminated(1, finished_at=at(19)),
    pod("run-worker-0").running(),
    pod("run-worker-1").succeeded(at(18)),
]


@pytest.mark.parametrize(
    ("run_policy", "logs_sealed", "now", "actions", "requeue_after"),
    [
        ({"cleanPodPolicy": "None"}, True, NOW, [], None),
        ({"cleanPodPolicy": "Running"}, True, NOW, ["delete Pod run-worker-0"], None),
        ({"cleanPodPolicy": "All"}, True, NOW, ["delete Pod run-master-0", "delete Pod run-worker-0", "delete Pod run-worker-1"], None),
        ({"cleanPodPolicy": "All"}, False, NOW, [], None),  # the logs are not sealed: the pods wait
        ({"ttlSecondsAfterFinished": 3600}, True, "2026-01-01T10:50:00Z", [], RESYNC_SECONDS),  # ended 10:20: 30 min left
        ({"ttlSecondsAfterFinished": 3600}, True, "2026-01-01T11:16:00Z", [], 240.0),
        ({"ttlSecondsAfterFinished": 3600}, True, "2026-01-01T11:20:00Z", ["delete PyTorchJob run"], None),
    ],
    ids=["none", "running", "all", "all-logs-not-sealed", "ttl-not-yet", "ttl-soon", "ttl-over"],
)
def test_the_operator_ends_a_finished_runs_pods_after_their_logs(
    run_policy: dict[str, Any], logs_sealed: bool, now: str, actions: list[str], requeue_after: float | None
) -> None:
    run = finished_run(**run_policy)
    if not logs_sealed:
        run["status"]["logs"] = {"uri": "s3://models/run/logs"}
    observed = Observed(job=job().failed().started(), pods=ENDED_PODS, seal=Attempts(running=True))
    decided = plan(run, pools(), observed, now=now)
    assert [f"{describe(action)} {action.name}" for action in decided.actions if isinstance(action, Delete)] == actions
    assert decided.requeue_after == requeue_after


@pytest.mark.parametrize(
    ("spec", "default_uri", "field"),
    [
        ({"output": {"uri": "az://models/run/"}}, None, "spec.output.uri"),
        ({}, "az://logs/all", "logs.defaultUri (operator configuration)"),
    ],
    ids=["beside-the-outputs", "default-location"],
)
def test_a_log_archive_the_store_refuses_is_the_runs_status_naming_the_field(
    spec: dict[str, Any], default_uri: str | None, field: str
) -> None:
    """A store that cannot be opened, read or written while the run trains (no account, no bucket, wrong keys):
    status.logs says so naming the setting, LogsComplete is False, a Warning Event once; never only a log line,
    and nothing is reported as kept. When the store works again, all of it goes."""
    config = pools().model_copy(update={"logs": LogArchiveSettings(default_uri=default_uri)})
    words = "cannot open the log archive at az://models/run/logs: az://models/run/logs: no Azure storage account is named"
    observed = Observed(job=job(**spec).running().started(), pods=running_pods(), archive_problem=words)
    run = body(previous(Phase.RUNNING), **spec)
    failing = plan(run, config, observed, now=NOW)
    assert failing.status.phase is Phase.RUNNING and failing.logs == "follow"
    logs = failing.status.logs
    assert logs is not None and (logs.sealed, logs.complete) == (False, False)
    assert logs.message == f"{field}: the replicas' logs are not being archived: {words}"
    condition = next(item for item in failing.status.conditions if item.type == "LogsComplete")
    assert (condition.status, condition.reason, condition.message) == ("False", "ArchiveFailing", logs.message)
    assert [(event.type, event.reason, event.message) for event in failing.events] == [("Warning", "StorageFailing", logs.message)]
    written = copy.deepcopy(run)
    written["status"] = failing.status.to_patch()
    assert plan(written, config, observed, now=shifted(5)).events == ()
    working = plan(written, config, replace(observed, archive_problem=None), now=shifted(10))
    assert working.status.logs is not None and working.status.logs.message is None
    assert not [item for item in working.status.conditions if item.type == "LogsComplete"]
    assert [(event.type, event.reason) for event in working.events] == [("Normal", "StorageRecovered")]


def test_an_azure_output_no_one_can_name_an_account_for_stops_the_run_naming_the_field() -> None:
    decided = plan(body(output={"uri": "az://models/run"}), pools(), Observed(), now=NOW)
    assert decided.actions == () and decided.status.phase is Phase.QUEUED
    assert (decided.status.message or "").startswith("spec.output.uri: az://models/run names no Azure storage account")


@pytest.mark.parametrize(
    ("workers", "counts", "started", "ran"),
    [
        pytest.param(2, {}, (), (), id="nothing counted yet"),
        pytest.param(2, {"Master": ReplicaCounts(active=1)}, (), (), id="running is not ended"),
        pytest.param(2, {"Master": ReplicaCounts(succeeded=1), "Worker": ReplicaCounts(succeeded=2)}, (), ("master-0", "worker-0", "worker-1"), id="all succeeded"),
        pytest.param(2, {"Master": ReplicaCounts(failed=1), "Worker": ReplicaCounts(failed=1, active=1)}, (), ("master-0",), id="one of two workers: which is not known"),
        pytest.param(0, {"Master": ReplicaCounts(succeeded=1)}, (), ("master-0",), id="a master alone"),
        pytest.param(2, {"Master": ReplicaCounts(active=1)}, ("worker-1", "master-0"), ("master-0", "worker-1"), id="seen started, in replica order"),
        pytest.param(1, {"Master": ReplicaCounts(failed=1)}, ("worker-0",), ("master-0", "worker-0"), id="seen started and counted"),
    ],
)
def test_the_replicas_that_ran_are_those_seen_started_and_those_the_counts_say_ended(
    workers: int, counts: dict[str, ReplicaCounts], started: tuple[str, ...], ran: tuple[str, ...]
) -> None:
    assert replicas_that_ran(workers, counts, started) == ran


def test_a_replica_seen_started_stays_in_the_status_and_is_named_at_the_seal_after_its_pods_went() -> None:
    """The operator that sees the replicas start records them (status.logs.started); the one that seals after their
    pods went (the first killed before it could ship a line of them, its store down) names them all the same, so
    each is declared a gap unless the archive holds its log."""
    started_job = job(output={"uri": "s3://models/run/"}).running().started()
    pods = [pod("run-master-0").running(), pod("run-worker-0").scheduled()]
    running = plan(with_output(previous(Phase.RUNNING)), pools(), Observed(job=started_job, pods=pods, claim_present=True), now=NOW)
    assert running.status.logs is not None and running.status.logs.started == ["master-0"]
    pods = [pod("run-master-0").running(), pod("run-worker-0").running()]
    both = plan(with_output(running.status.to_patch()), pools(), Observed(job=started_job, pods=pods, claim_present=True), now=shifted(1))
    assert both.status.logs is not None and both.status.logs.started == ["master-0", "worker-0"]
    written = with_output(both.status.to_patch(), cancel=True)
    gone = plan(written, pools(), Observed(job=started_job.suspended(), claim_present=True), now=shifted(5))
    assert gone.status.phase is Phase.CANCELLED
    assert gone.status.logs is not None and gone.status.logs.started == ["master-0", "worker-0"]
    assert [work.ran for work in gone.storage if isinstance(work, SealLogs)] == [("master-0", "worker-0")]


def test_the_seal_names_the_replicas_the_job_says_ended() -> None:
    """Once the job has succeeded the seal carries its replicas (the job's counts: every Master and Worker ended),
    so that one no operator ever followed is declared a gap in the archive."""
    counted = job(output={"uri": "s3://models/run/"}).succeeded().started()
    counted.replica_status("Master", succeeded=1).replica_status("Worker", succeeded=1)
    for observed, ended in ((replace(uploading(), job=counted), ("master-0", "worker-0")), (uploading(), ())):
        decided = plan(with_output(previous(Phase.UPLOADING)), pools(), observed, now=shifted(1))
        assert [work.ran for work in decided.storage if isinstance(work, SealLogs)] == [ended]
