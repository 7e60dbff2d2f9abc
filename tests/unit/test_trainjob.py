"""The TrainJob backend without a cluster: every sample rendered as a Kubeflow Trainer v2 TrainJob carries what
its PyTorchJob carries, what a TrainJob cannot carry is refused naming the field, and the plan, the watch
projection and the status read a TrainJob as they read a PyTorchJob.

Table-driven over the samples (manifests/samples): for each, the TrainJob and the PyTorchJob of the same run
are compared field by field (image, command, environment, nodes and processes, resources, placement, pod
metadata, volumes and mounts, the stage-in downloads, suspend, deadline, queue).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from factories import NOW, event, pod
from run_factory import pools, training_run
from trainrun.plan import Apply, Delete, MergePatch, Observed, plan, projections
from trainrun.plan.triggers import job_change_at_once, pod_change_at_once
from trainrun.render.backend import PYTORCHJOB, TRAINJOB
from trainrun.render.children import staged_downloads
from trainrun.render.trainjob import COMPLETION_INDEX_FIELD, render_trainjob, trainjob_problems
from trainrun.spec import load_training_run
from trainrun.spec.config import OperatorConfig
from trainrun.spec.model import DEFAULT_OUTPUT_DIR
from trainrun.spec.status import Phase
from trainrun.status import replica_name

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"
SAMPLE_FILES = sorted(path.name for path in SAMPLES.glob("*.yaml") if "\nkind: TrainingRun\n" in path.read_text())


def trainjob_config() -> OperatorConfig:
    return pools().model_copy(update={"backend": "TrainJob"})


def sample_run(name: str) -> Any:
    document = yaml.safe_load((SAMPLES / name).read_text())
    document["metadata"].update(namespace="team-a", uid="uid-1", generation=1)
    return load_training_run(document)


def node_patch(trainjob: dict[str, Any]) -> dict[str, Any]:
    """The pod template of the runtime patch (our one patch, for the replicated job node)."""
    (patch,) = trainjob["spec"]["runtimePatches"]
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert node["name"] == "node"
    return dict(node["template"]["spec"]["template"])


def empty_lists(value: Any, path: str = "spec") -> list[str]:
    """Where an object holds an empty list."""
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in empty_lists(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [path] if not value else [found for index, item in enumerate(value) for found in empty_lists(item, f"{path}[{index}]")]
    return []


def values(env: list[dict[str, Any]]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in env}


@pytest.mark.parametrize("sample", SAMPLE_FILES)
def test_every_sample_as_a_trainjob_carries_what_its_pytorchjob_carries(sample: str) -> None:
    run = sample_run(sample)
    config = trainjob_config()
    assert trainjob_problems(run) == []
    trainjob, pytorchjob = TRAINJOB.render_job(run, config), PYTORCHJOB.render_job(run, config)
    master = pytorchjob["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    container = master["spec"]["containers"][0]
    trainer = trainjob["spec"]["trainer"]
    assert trainjob["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and trainjob["kind"] == "TrainJob"
    assert trainjob["metadata"]["name"] == pytorchjob["metadata"]["name"] == run.metadata.name
    assert trainjob["metadata"]["labels"] == pytorchjob["metadata"]["labels"]
    assert trainjob["metadata"]["annotations"] == pytorchjob["metadata"]["annotations"]  # the applied spec
    assert trainjob["spec"]["runtimeRef"] == {
        "name": "trainrun-torch", "apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime"
    }
    assert trainer["image"] == container["image"]
    assert trainer["numNodes"] == 1 + run.spec.distribution.workers
    assert trainer["numProcPerNode"] == run.spec.processes_per_replica == int(pytorchjob["spec"]["nprocPerNode"])
    assert trainer.get("resourcesPerNode") == container.get("resources")
    # The program and its own variables are the same; the rendezvous ones are what the training-operator sets.
    working_dir = container.get("workingDir")
    command = trainer["command"]
    assert command == (container["command"] if working_dir is None else ["sh", "-c", 'cd "$0" && exec "$@"', working_dir, *container["command"]])
    ours = values(trainer["env"])
    assert {key: value for key, value in ours.items() if key in values(container["env"])} == values(container["env"])
    assert ours["RANK"] == {"fieldRef": {"fieldPath": COMPLETION_INDEX_FIELD}}
    assert ours["WORLD_SIZE"] == str(trainer["numNodes"] * trainer["numProcPerNode"])
    assert ours["MASTER_ADDR"] == f"{run.metadata.name}-node-0-0.{run.metadata.name}" and ours["MASTER_PORT"] == "29500"
    assert not [name for name in ours if name.startswith("PET_")]  # Trainer's own: a TrainJob may not set them
    # Each node's pod: the Master's labels, annotations, placement and volumes.
    template = node_patch(trainjob)
    assert template["metadata"]["labels"] == master["metadata"]["labels"]
    assert template["metadata"].get("annotations") == master["metadata"].get("annotations")
    for key in ("nodeSelector", "tolerations", "affinity", "imagePullSecrets", "securityContext"):
        assert template["spec"].get(key) == master["spec"].get(key), key
    assert template["spec"]["volumes"] == [volume for volume in master["spec"]["volumes"] if volume["name"] != "helper-tmp"] + (
        [{"name": "storage-credentials", "secret": {"secretName": run.spec.output.secret_name}}] if run.spec.output.secret_name else []
    )
    (node,) = template["spec"]["containers"]
    assert node["name"] == "node" and node["securityContext"] == container["securityContext"]
    outputs, *staging = node["volumeMounts"]
    assert outputs == {"name": "outputs", "mountPath": DEFAULT_OUTPUT_DIR, "subPathExpr": "node-$(RANK)"}
    assert staging == [mount for mount in container["volumeMounts"] if mount["name"] != "outputs"]
    if staged_downloads(run):
        (stage_in,) = template["spec"]["initContainers"]
        assert stage_in["name"] == "stage-in" and json.loads(values(stage_in["env"])["TRAINRUN_STAGE_IN"]) == staged_downloads(run)
    else:
        assert "initContainers" not in template["spec"]
    assert empty_lists(trainjob["spec"]) == []  # a Go client updating the TrainJob would drop them
    assert trainjob["spec"]["suspend"] is False
    claim = TRAINJOB.render_claim(run)
    if claim is not None:
        assert claim["spec"]["accessModes"] == ["ReadWriteMany" if run.spec.distribution.workers else "ReadWriteOnce"]
    if run.spec.output.uri is not None:
        uploader = TRAINJOB.render_uploader(run, config)
        mount = uploader["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]
        assert mount["subPath"] == "node-0"  # the Master's $OUTPUT_DIR


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"envFrom": [{"secretRef": {"name": "s"}}]}, "spec.envFrom", "one by one"),
        ({"runPolicy": {"restartPolicy": "Never"}}, "spec.runPolicy.restartPolicy", "'OnFailure' for every run"),
        ({"runPolicy": {"backoffLimit": 10}}, "spec.runPolicy.backoffLimit", "3 for every run"),
        ({"imagePullPolicy": "Always"}, "spec.imagePullPolicy", "'IfNotPresent' for every run"),
        ({"resources": {"priorityClassName": "high"}}, "spec.resources.priorityClassName", "WorkloadPriorityClass"),
    ],
    ids=["envFrom", "restartPolicy", "backoffLimit", "imagePullPolicy", "priority-without-queue"],
)
def test_what_a_trainjob_cannot_carry_stalls_the_run_naming_the_field(spec: dict[str, Any], field: str, words: str) -> None:
    run = training_run(**spec)
    (problem,) = trainjob_problems(run)
    assert problem.field == field and words in str(problem)
    document = run.model_dump(mode="json", by_alias=True, exclude_none=True)
    document["metadata"].update(uid="uid-1", generation=1)
    decided = plan(document, trainjob_config(), Observed(), now=NOW)
    assert decided.actions == () and decided.status.phase is Phase.QUEUED
    stalled = next(item for item in decided.status.conditions if item.type == "Stalled")
    assert stalled.status == "True" and field in stalled.message


def test_a_queued_trainjob_gets_kueues_labels_and_never_its_suspend() -> None:
    run = training_run(resources={"queue": "team-a", "priorityClassName": "high"})
    assert trainjob_problems(run) == []
    rendered = render_trainjob(run, trainjob_config())
    assert rendered["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert rendered["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "high"
    assert "suspend" not in rendered["spec"]


def trainjob_as_trainer_reports_it(name: str, *conditions: tuple[str, str, str], suspend: bool | None = None) -> dict[str, Any]:
    """A TrainJob as the API serves it: our render, with Trainer's status."""
    rendered = copy.deepcopy(render_trainjob(training_run(), trainjob_config()))
    rendered["metadata"].update(name=name, namespace="default", uid="tj-1", creationTimestamp="2026-01-01T10:00:00Z")
    if suspend is not None:
        rendered["spec"]["suspend"] = suspend
    rendered["status"] = {
        "conditions": [
            {"type": kind, "status": "True", "reason": reason, "message": message, "lastTransitionTime": "2026-01-01T10:30:00Z"}
            for kind, reason, message in conditions
        ],
        "jobsStatus": [{"name": "node", "active": 2}],
    }
    return rendered


def node_pod(name: str, rank: int) -> Any:
    built = pod(f"{name}-node-0-{rank}-x7k2p").running()
    built["metadata"]["labels"] = {
        "trainrun.dev/run": name,
        "jobset.sigs.k8s.io/jobset-name": name,
        "jobset.sigs.k8s.io/replicatedjob-name": "node",
        "batch.kubernetes.io/job-completion-index": str(rank),
    }
    built["spec"]["containers"][0]["name"] = "node"
    built["status"]["containerStatuses"][0]["name"] = "node"
    return built


def test_a_trainjobs_nodes_are_named_as_a_pytorchjobs_replicas() -> None:
    assert [replica_name(node_pod("run", rank)) for rank in range(3)] == ["master-0", "worker-0", "worker-1"]


@pytest.mark.parametrize(
    ("conditions", "phase", "reason", "words"),
    [
        ((), Phase.RUNNING, "Running", "2 of 2 replicas running"),
        ((("Complete", "AllJobsCompleted", "jobset completed successfully"),), Phase.COMPLETED, "Completed", "no spec.output.uri"),
        (
            (("Failed", "DeadlineExceeded", "TrainJob run is active longer than specified deadline"),),
            Phase.FAILED, "DeadlineExceeded", "deadline",
        ),
    ],
    ids=["running", "complete", "deadline"],
)
def test_the_plan_reads_a_trainjob_as_a_pytorchjob(
    conditions: tuple[tuple[str, str, str], ...], phase: Phase, reason: str, words: str
) -> None:
    job = projections.trainjob(trainjob_as_trainer_reports_it("run", *conditions))
    document = training_run().model_dump(mode="json", by_alias=True, exclude_none=True)
    document["metadata"].update(name="run", namespace="default", uid="uid-1", generation=1)
    document["status"] = {"phase": "Running", "observedGeneration": 1}
    observed = Observed(job=job, pods=[projections.pod(node_pod("run", 0)), projections.pod(node_pod("run", 1))])
    decided = plan(document, trainjob_config(), observed, now=NOW)
    assert (decided.status.phase, decided.status.reason) == (phase, reason), decided.status.message
    assert words in (decided.status.message or "")
    assert not [action for action in decided.actions if isinstance(action, Apply)]  # never a second job


def test_a_run_keeps_the_backend_of_its_job_when_the_configuration_changes() -> None:
    """A PyTorchJob created before the platform moved to TrainJob stays the run's job: no TrainJob beside it."""
    from factories import pytorchjob

    document = training_run(runPolicy={"backoffLimit": 7}).model_dump(mode="json", by_alias=True, exclude_none=True)
    document["metadata"].update(name="run", namespace="default", uid="uid-1", generation=1)
    document["status"] = {"phase": "Running", "observedGeneration": 1}
    decided = plan(document, trainjob_config(), Observed(job=pytorchjob().running().started()), now=NOW)
    assert [type(action) for action in decided.actions] == [MergePatch]
    assert decided.actions[0].kind == "PyTorchJob"  # type: ignore[union-attr]


def test_a_queued_run_is_stopped_by_deleting_its_job() -> None:
    """Kueue owns a queued job's suspend: a cancel deletes the TrainJob (its quota goes back)."""
    document = training_run(resources={"queue": "team-a"}, cancel=True).model_dump(mode="json", by_alias=True, exclude_none=True)
    document["metadata"].update(name="run", namespace="default", uid="uid-1", generation=1)
    document["status"] = {"phase": "Running", "observedGeneration": 1}
    job = projections.trainjob(trainjob_as_trainer_reports_it("run"))
    decided = plan(document, trainjob_config(), Observed(job=job), now=NOW)
    assert [(type(action), getattr(action, "kind", None)) for action in decided.actions] == [(Delete, "TrainJob")]
    assert decided.status.phase is Phase.CANCELLED


def test_a_cluster_without_trainer_says_what_to_install() -> None:
    document = training_run().model_dump(mode="json", by_alias=True, exclude_none=True)
    document["metadata"].update(name="run", namespace="default", uid="uid-1", generation=1)
    decided = plan(document, trainjob_config(), Observed(job_kind_served=False), now=NOW)
    assert decided.actions == ()
    assert "does not serve TrainJob (trainer.kubeflow.org/v1alpha1): install Kubeflow Trainer v2" in (decided.status.message or "")


@pytest.mark.parametrize(
    ("message", "reason", "stalled"),
    [
        (
            'Error creating: pods "run-node-0-0-x7k2p" is forbidden: violates PodSecurity "restricted:latest": '
            'runAsNonRoot != true (pod or container "node" must set securityContext.runAsNonRoot=true)',
            "PodSecurityViolation",
            True,
        ),
        ('Error creating: pods "run-node-0-0-x7k2p" is forbidden: exceeded quota: gpus, requested: nvidia.com/gpu=1', "FailedCreatePod", False),
    ],
    ids=["pod-security", "quota"],
)
def test_a_refusal_of_a_trainjobs_pods_is_read_off_jobsets_job(message: str, reason: str, stalled: bool) -> None:
    """A TrainJob's pods come from the Job JobSet makes of it (``<run>-node-0``): its FailedCreate Events say
    why there are none, as the training-operator's do on a PyTorchJob."""
    job = projections.trainjob(trainjob_as_trainer_reports_it("run"))
    document = training_run().model_dump(mode="json", by_alias=True, exclude_none=True)
    document["metadata"].update(name="run", namespace="default", uid="uid-1", generation=1)
    document["status"] = {"phase": "Queued", "observedGeneration": 1}
    refusal = projections.event(event("FailedCreate", message, name=TRAINJOB.pod_creator_objects("run")[0], kind="Job"))
    decided = plan(document, trainjob_config(), Observed(job=job, events=[refusal]), now=NOW)
    assert (decided.status.phase, decided.status.reason) == (Phase.QUEUED, reason)
    assert (decided.status.message or "").startswith(f"JobSet's Job cannot create the pods: {message}")
    stalled_condition = next(condition for condition in decided.status.conditions if condition.type == "Stalled")
    assert stalled_condition.status == ("True" if stalled else "False")
    # The uploader is a Job too: its refusals are about the copy, not the replicas.
    uploader_refusal = projections.event(event("FailedCreate", message, name="run-upload", kind="Job"))
    decided = plan(document, trainjob_config(), Observed(job=job, events=[uploader_refusal]), now=NOW)
    assert decided.status.reason != reason


def test_a_trainjobs_end_and_its_last_node_running_are_reconciled_at_once() -> None:
    """The controller's triggers read a TrainJob as the watch keeps it (projected): Complete and Failed end it,
    and the node pod that makes numNodes of them Running starts the run's Running at once."""
    running = projections.trainjob(trainjob_as_trainer_reports_it("run"))
    complete = projections.trainjob(trainjob_as_trainer_reports_it("run", ("Complete", "AllJobsCompleted", "done")))
    failed = projections.trainjob(trainjob_as_trainer_reports_it("run", ("Failed", "FailedJobs", "Job failed")))
    assert job_change_at_once(running, complete, []) and job_change_at_once(running, failed, [])
    assert job_change_at_once(None, complete, []) and not job_change_at_once(complete, complete, [])
    assert not job_change_at_once(None, running, [])
    first, second = (projections.pod(node_pod("run", rank)) for rank in range(2))
    second_pending = {**second, "status": {"phase": "Pending"}}
    assert not pod_change_at_once(None, first, running, [first, second_pending])
    assert pod_change_at_once(second_pending, second, running, [first, second])
