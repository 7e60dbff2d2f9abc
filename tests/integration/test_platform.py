"""The platform add-ons of the test cluster, checked with real controllers: Kubeflow Trainer v2 on JobSet
runs a TrainJob of the runtime we ship (manifests/trainer-v2) through JobSet, Jobs and pods on the kwok GPU
pools to Complete or Failed; Kueue queues, admits and preempts TrainJobs and PyTorchJobs (the
training-operator beside it) on a ClusterQueue of 8 GPUs.

Run with: pytest tests/integration/test_platform.py
Uses the session fixture platform_cluster (tests/integration/conftest.py: up.sh with the add-ons trainer
and kueue). Jobs are written by hand and applied with kubectl; no trainrun operator runs. What the pods do
comes from their kwok annotations (stages.yaml): a pod of outcome `run` runs until a test re-annotates it
to succeed, so that a test decides when a job ends instead of racing a timer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cluster.harness import (
    GPU_RESOURCE,
    GPU_TOLERATION,
    OUTCOME_ANNOTATION,
    POOL_LABEL,
    JsonObject,
    KubeCluster,
    Outcome,
    pod_behaviour,
    pod_condition,
    wait_until,
)
from queues import Queue

pytestmark = pytest.mark.cluster

RUNTIME = "trainrun-torch"  # manifests/trainer-v2
TRAINER_API = "trainer.kubeflow.org/v1alpha1"
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
PYTORCHJOB_NAME_LABEL = "training.kubeflow.org/job-name"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
PATCH_MANAGER = "trainrun.dev/tests"  # our runtimePatches entry (a manager must be a domain-prefixed path)
KUEUE_PATCH_MANAGER = "kueue.x-k8s.io/manager"
POOL = "a100"  # nodes.yaml: 4 nodes of 8 GPUs
IMAGE = "ghcr.io/trainrun/trainer:0.1.0"
COMMAND = ["torchrun", "-m", "trainrun_trainer"]
COMPLETION_INDEX_ANNOTATION_PATH = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
COMPLETION_INDEX_LABEL_PATH = "metadata.labels['batch.kubernetes.io/job-completion-index']"
APPLIER = "trainrun-tests"  # the field manager of the tests' server-side applies


def per_node_resources(gpus: int) -> JsonObject:
    return {"requests": {"cpu": "8", "memory": "64Gi", GPU_RESOURCE: str(gpus)}, "limits": {GPU_RESOURCE: str(gpus)}}


def trainjob(
    name: str,
    *,
    nodes: int,
    gpus: int,
    annotations: dict[str, str],
    labels: dict[str, str] | None = None,
    pod_labels: dict[str, str] | None = None,
    pod_spec: JsonObject | None = None,
) -> JsonObject:
    """A TrainJob of the runtime we ship on the a100 pool: NODES pods of GPUS GPUs each. The pods' ANNOTATIONS (what
    kwok makes them do) and POD_LABELS, the pool's nodeSelector and toleration and the fields of POD_SPEC (a v2.3
    PodSpecPatch) reach them through our entry of spec.runtimePatches."""
    pod_patch = {
        "metadata": {"annotations": annotations, "labels": pod_labels or {}},
        "spec": {"nodeSelector": {POOL_LABEL: POOL}, "tolerations": [GPU_TOLERATION], **(pod_spec or {})},
    }
    return {
        "apiVersion": TRAINER_API,
        "kind": "TrainJob",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "runtimeRef": {"name": RUNTIME},
            "trainer": {
                "image": IMAGE,
                "command": COMMAND,
                "numNodes": nodes,
                "numProcPerNode": gpus,
                "resourcesPerNode": per_node_resources(gpus),
            },
            "runtimePatches": [
                {
                    "manager": PATCH_MANAGER,
                    "trainingRuntimeSpec": {
                        "template": {
                            "spec": {
                                "replicatedJobs": [
                                    {"name": "node", "template": {"spec": {"template": pod_patch}}}
                                ]
                            }
                        }
                    },
                }
            ],
        },
    }


def pytorchjob(name: str, *, gpus: int, annotations: dict[str, str], labels: dict[str, str]) -> JsonObject:
    """A PyTorchJob of one Master pod of GPUS GPUs on the a100 pool (the training-operator runs it)."""
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "pytorchReplicaSpecs": {
                "Master": {
                    "replicas": 1,
                    "restartPolicy": "OnFailure",
                    "template": {
                        "metadata": {"annotations": annotations},
                        "spec": {
                            "nodeSelector": {POOL_LABEL: POOL},
                            "tolerations": [GPU_TOLERATION],
                            "containers": [
                                {
                                    "name": "pytorch",
                                    "image": IMAGE,
                                    "command": COMMAND,
                                    "resources": per_node_resources(gpus),
                                }
                            ],
                        },
                    },
                }
            }
        },
    }


def condition_of(obj: JsonObject | None, condition_type: str) -> JsonObject | None:
    condition = pod_condition(obj, condition_type) if obj else None
    return dict(condition) if condition is not None else None


def events_of(cluster: KubeCluster, namespace: str, name: str) -> list[tuple[str, str, str]]:
    """(kind, reason, message) of the Events about the objects named NAME in NAMESPACE."""
    found = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json"
    )
    return [
        (event["involvedObject"]["kind"], event["reason"], event["message"])
        for event in json.loads(found.stdout)["items"]
    ]


def kueue_keys(mapping: dict[str, str]) -> dict[str, str]:
    """The entries of labels or annotations that are Kueue's."""
    return {key: value for key, value in mapping.items() if key.startswith("kueue.x-k8s.io/")}


def is_running(pod: JsonObject) -> bool:
    return bool(pod.get("status", {}).get("phase") == "Running")


def env_of(container: JsonObject) -> dict[str, Any]:
    """A container's env: name -> value, or the valueFrom object for a variable without a value."""
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container.get("env", [])}


def end_pods(cluster: KubeCluster, namespace: str, selector: str) -> None:
    """Makes the running pods of SELECTOR succeed now (their kwok outcome `run` becomes `succeed`)."""
    cluster.kubectl(
        "annotate", "pods", "-n", namespace, "-l", selector, "--overwrite",
        f"{OUTCOME_ANNOTATION}={Outcome.SUCCEED.value}", "kwok.trainrun.dev/after=0s",
    )


def field_owners(cluster: KubeCluster, kind: str, name: str, namespace: str, path: tuple[str, ...]) -> list[str]:
    """The field managers (manager/operation) that own the field at PATH of an object (its managedFields)."""
    found = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", "--show-managed-fields").stdout
    owners = []
    for entry in json.loads(found)["metadata"].get("managedFields", []):
        fields = entry.get("fieldsV1", {})
        for key in path:
            if not isinstance(fields, dict) or f"f:{key}" not in fields:
                break
            fields = fields[f"f:{key}"]
        else:
            owners.append(f"{entry['manager']}/{entry['operation']}")
    return owners


# --- Trainer v2 and JobSet -----------------------------------------------------------------------------------


def test_trainjob_runs_through_jobset_on_the_gpu_pool_to_complete(
    platform_cluster: KubeCluster, platform_namespace: str
) -> None:
    cluster, namespace, name = platform_cluster, platform_namespace, "tj"
    cluster.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "trainer", "namespace": namespace}})
    scratch_mount = {"name": "scratch", "mountPath": "/scratch"}
    job = trainjob(
        name,
        nodes=2,
        gpus=8,
        annotations=pod_behaviour(Outcome.RUN),
        pod_labels={"app.kubernetes.io/name": "tj-test"},
        pod_spec={
            "serviceAccountName": "trainer",
            "volumes": [{"name": "scratch", "emptyDir": {}}],
            "containers": [{"name": "node", "volumeMounts": [scratch_mount]}],
        },
    )
    cluster.apply({**job, "metadata": {**job["metadata"], "namespace": namespace}})

    jobset = wait_until(lambda: cluster.get("jobset", name, namespace), timeout=60, what="the JobSet of the TrainJob")
    owner = jobset["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("TrainJob", name, True)
    wait_until(
        lambda: cluster.list_objects("jobs", namespace, f"{JOBSET_NAME_LABEL}={name}") or None,
        timeout=60, what="the Job of the JobSet",
    )
    jobs = cluster.list_objects("jobs", namespace, f"{JOBSET_NAME_LABEL}={name}")
    assert [j["metadata"]["name"] for j in jobs] == [f"{name}-node-0"]
    assert (jobs[0]["spec"]["parallelism"], jobs[0]["spec"]["completions"]) == (2, 2)
    assert (jobs[0]["spec"]["completionMode"], jobs[0]["spec"]["backoffLimit"]) == ("Indexed", 3)
    assert jobs[0]["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"

    pods = cluster.wait_for_pods(
        namespace, f"{JOBSET_NAME_LABEL}={name}", count=2, ready=is_running, timeout=120, what="TrainJob pods"
    )
    # Pods: <trainjob>-node-<job index>-<completion index>-<random>, hostname without the random part, in
    # the subdomain <trainjob> (JobSet's headless Service), on the GPU pool.
    for index, pod in enumerate(pods):
        hostname = f"{name}-node-0-{index}"
        assert re.fullmatch(rf"{hostname}-[a-z0-9]{{5}}", pod["metadata"]["name"])
        assert (pod["spec"]["hostname"], pod["spec"]["subdomain"]) == (hostname, name)
        assert pod["spec"]["nodeName"].startswith(f"{POOL}-")
        assert pod["spec"]["nodeSelector"] == {POOL_LABEL: POOL}
        assert GPU_TOLERATION in pod["spec"]["tolerations"]
        assert pod["spec"]["restartPolicy"] == "OnFailure"  # the runtime's
        assert pod["spec"]["serviceAccountName"] == "trainer"
        assert {"name": "scratch", "emptyDir": {}} in pod["spec"]["volumes"]
        assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "tj-test"
        labels, annotations = pod["metadata"]["labels"], pod["metadata"]["annotations"]
        assert labels[JOBSET_NAME_LABEL] == name
        assert labels["jobset.sigs.k8s.io/replicatedjob-name"] == "node"
        assert labels["jobset.sigs.k8s.io/job-index"] == "0"
        assert labels["batch.kubernetes.io/job-completion-index"] == str(index)
        assert not [key for key in labels if key.startswith("trainer.kubeflow.org/")]
        assert annotations["batch.kubernetes.io/job-completion-index"] == str(index)
        assert annotations[OUTCOME_ANNOTATION] == Outcome.RUN.value
        [container] = pod["spec"]["containers"]
        assert (container["name"], container["image"], container["command"]) == ("node", IMAGE, COMMAND)
        assert container["resources"]["limits"] == {GPU_RESOURCE: "8"}
        assert container["ports"] == [{"containerPort": 29500, "protocol": "TCP"}]
        assert scratch_mount in container["volumeMounts"]
        # The torch plugin's torchrun variables (no RANK, WORLD_SIZE, MASTER_ADDR: torchrun sets those in the
        # processes it starts) and the Job controller's JOB_COMPLETION_INDEX.
        assert env_of(container) == {
            "PET_NNODES": "2",
            "PET_NPROC_PER_NODE": "8",
            "PET_NODE_RANK": {"fieldRef": {"apiVersion": "v1", "fieldPath": COMPLETION_INDEX_ANNOTATION_PATH}},
            "PET_MASTER_ADDR": f"{name}-node-0-0.{name}",
            "PET_MASTER_PORT": "29500",
            "JOB_COMPLETION_INDEX": {"fieldRef": {"apiVersion": "v1", "fieldPath": COMPLETION_INDEX_LABEL_PATH}},
        }
    service = cluster.get("service", name, namespace)
    assert service is not None and service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {JOBSET_NAME_LABEL: name}
    assert service["spec"]["publishNotReadyAddresses"] is True  # rank 0's name resolves before it is Ready

    end_pods(cluster, namespace, f"{JOBSET_NAME_LABEL}={name}")
    done = cluster.wait_for_condition("trainjob", name, namespace, "Complete", timeout=120)
    complete = condition_of(done, "Complete")
    assert complete is not None and complete["reason"] == "AllJobsCompleted"
    assert complete["message"] == "jobset completed successfully"
    assert condition_of(done, "Failed") is None
    [status] = done["status"]["jobsStatus"]
    assert (status["name"], status["succeeded"], status["failed"], status["active"]) == ("node", 1, 0, 0)
    snapshot = cluster.get("configmap", f"{name}-runtime-snapshot", namespace)
    assert snapshot is not None and f"name: {RUNTIME}" in snapshot["data"]["runtime"]


def test_failing_trainjob_fails_after_the_runtime_backoff_limit(
    platform_cluster: KubeCluster, platform_namespace: str
) -> None:
    cluster, namespace, name = platform_cluster, platform_namespace, "tj-fails"
    job = trainjob(name, nodes=2, gpus=8, annotations=pod_behaviour(Outcome.FAIL, after="1s", exit_code=3))
    cluster.apply({**job, "metadata": {**job["metadata"], "namespace": namespace}})

    failed = cluster.wait_for_condition("trainjob", name, namespace, "Failed", timeout=240)
    condition = condition_of(failed, "Failed")
    assert condition is not None and condition["reason"] == "FailedJobs"
    assert condition["message"] == f"jobset failed due to one or more job failures (first failed job: {name}-node-0)"
    assert condition_of(failed, "Complete") is None
    job_failed = condition_of(cluster.get("job", f"{name}-node-0", namespace), "Failed")
    assert job_failed is not None and job_failed["reason"] == "BackoffLimitExceeded"


def test_a_runtime_patch_cannot_add_a_working_init_container(
    platform_cluster: KubeCluster, platform_namespace: str
) -> None:
    """v2.3's runtimePatches patch only what the runtime's containers have (env, volumeMounts, securityContext):
    an init container there has no image or command. Trainer's webhook checks the template with the patches
    applied, so a new init container of a name alone passes it, and the JobSet cannot create its Job."""
    cluster, namespace, name = platform_cluster, platform_namespace, "tj-init"
    warm_cache = {"name": "warm-cache", "image": IMAGE, "command": ["true"]}
    job = trainjob(name, nodes=1, gpus=1, annotations={}, pod_spec={"initContainers": [warm_cache]})
    refused = cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(job), check=False)
    assert refused.returncode != 0
    field = "spec.runtimePatches[0].trainingRuntimeSpec.template.spec.replicatedJobs[0].template.spec.template.spec"
    assert f'strict decoding error: unknown field "{field}.initContainers[0].command"' in refused.stderr

    # trainrun-torch has an init container of its own (stage-in): a patch of that name merges into it, a new one
    # comes first, with a name and nothing else.
    job = trainjob(name, nodes=1, gpus=1, annotations={}, pod_spec={"initContainers": [{"name": "warm-cache"}]})
    cluster.apply({**job, "metadata": {**job["metadata"], "namespace": namespace}})
    # JobSet may first be refused by its own webhook while its cache lacks the new JobSet ("JobSet ... not found"):
    # a JobCreationFailed Event too. Wait for the one about the init container.
    invalid = f'Job.batch "{name}-node-0" is invalid: spec.template.spec.initContainers[0].image: Required value'
    failures = wait_until(
        lambda: [message for _, reason, message in events_of(cluster, namespace, name) if reason == "JobCreationFailed"] or None,
        timeout=60, what="the JobSet's JobCreationFailed event",
    )
    wait_until(
        lambda: any(invalid in message for _, reason, message in events_of(cluster, namespace, name) if reason == "JobCreationFailed"),
        timeout=60, what=f"a JobCreationFailed event saying {invalid!r}; the first said {failures[0]!r}",
    )


def test_suspending_a_trainjob_deletes_its_pods_and_resuming_creates_them_again(
    platform_cluster: KubeCluster, platform_namespace: str
) -> None:
    cluster, namespace, name = platform_cluster, platform_namespace, "tj-pause"
    job = trainjob(name, nodes=2, gpus=8, annotations=pod_behaviour(Outcome.RUN))
    cluster.apply({**job, "metadata": {**job["metadata"], "namespace": namespace}})
    selector = f"{JOBSET_NAME_LABEL}={name}"
    first_pods = cluster.wait_for_pods(namespace, selector, count=2, ready=is_running, timeout=120)

    cluster.kubectl("patch", "trainjob", name, "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    paused = cluster.wait_for_condition("trainjob", name, namespace, "Suspended", timeout=60)
    suspended = condition_of(paused, "Suspended")
    assert suspended is not None and (suspended["reason"], suspended["message"]) == ("Suspended", "TrainJob is suspended")
    wait_until(lambda: cluster.list_objects("pods", namespace, selector) == [], timeout=60, what="no pods")
    jobset = cluster.get("jobset", name, namespace)
    assert jobset is not None and jobset["spec"]["suspend"] is True
    jobset_suspended = condition_of(jobset, "Suspended")
    assert jobset_suspended is not None and jobset_suspended["status"] == "True"
    assert (jobset_suspended["reason"], jobset_suspended["message"]) == ("SuspendedJobs", "jobset is suspended")

    cluster.kubectl("patch", "trainjob", name, "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    resumed = cluster.wait_for_condition("trainjob", name, namespace, "Suspended", status="False", timeout=60)
    condition = condition_of(resumed, "Suspended")
    assert condition is not None and (condition["reason"], condition["message"]) == ("Resumed", "TrainJob is resumed")
    again = cluster.wait_for_pods(namespace, selector, count=2, ready=is_running, timeout=120)
    # New pods under the same names' prefixes: the Job is the same (suspended and resumed), the pods are not.
    assert {pod["metadata"]["uid"] for pod in again}.isdisjoint(pod["metadata"]["uid"] for pod in first_pods)
    assert [pod["spec"]["hostname"] for pod in again] == [f"{name}-node-0-0", f"{name}-node-0-1"]


# --- Kueue ------------------------------------------------------------------------------------------------------


def kueue_runtime_patch_pod_template(job: JsonObject) -> JsonObject:
    """The pod template of replicated job `node` in Kueue's runtimePatches entry of a TrainJob (Kueue's webhook adds
    the entry to every TrainJob; empty until an admission fills it)."""
    [patch] = [patch for patch in job["spec"]["runtimePatches"] if patch["manager"] == KUEUE_PATCH_MANAGER]
    replicated_jobs = patch["trainingRuntimeSpec"]["template"]["spec"].get("replicatedJobs", [])
    template: JsonObject = replicated_jobs[0]["template"]["spec"]["template"] if replicated_jobs else {}
    return template


@dataclass(frozen=True)
class Backend:
    """How a test writes, selects and reads one kind of job that Kueue queues."""

    kind: str
    api_version: str
    build: Callable[[str, dict[str, str], dict[str, str]], JsonObject]  # name, labels, pod annotations
    suspend_path: tuple[str, ...]
    pod_name_label: str
    pod_set: str  # the name of its pods' pod set in the Workload
    suspended_reason: str  # of its Suspended condition
    suspended_message: str  # the same, {name} standing for the job's name
    pod_template: Callable[[JsonObject], JsonObject]  # where Kueue writes what an admission gives the pods

    def suspended(self, obj: JsonObject) -> bool:
        value: Any = obj
        for key in self.suspend_path:
            value = value.get(key, {})
        return value is True

    def set_suspend(self, obj: JsonObject, suspend: bool) -> None:
        parent = obj
        for key in self.suspend_path[:-1]:
            parent = parent.setdefault(key, {})
        parent[self.suspend_path[-1]] = suspend

    def pods(self, name: str) -> str:
        return f"{self.pod_name_label}={name}"


TRAINJOB = Backend(
    "trainjob",
    TRAINER_API,
    lambda name, labels, annotations: trainjob(name, nodes=1, gpus=8, annotations=annotations, labels=labels),
    ("spec", "suspend"),
    JOBSET_NAME_LABEL,
    "node",
    "Suspended",
    "TrainJob is suspended",
    kueue_runtime_patch_pod_template,
)
PYTORCHJOB = Backend(
    "pytorchjob",
    "kubeflow.org/v1",
    lambda name, labels, annotations: pytorchjob(name, gpus=8, annotations=annotations, labels=labels),
    ("spec", "runPolicy", "suspend"),
    PYTORCHJOB_NAME_LABEL,
    "master",
    "PyTorchJobSuspended",
    "PyTorchJob {name} is suspended.",
    lambda job: job["spec"]["pytorchReplicaSpecs"]["Master"]["template"],
)


def workload_of(cluster: KubeCluster, namespace: str, job: JsonObject) -> JsonObject | None:
    """The Workload Kueue made for JOB (labelled with the job's uid), or None."""
    found = cluster.list_objects("workloads", namespace, f"{JOB_UID_LABEL}={job['metadata']['uid']}")
    return found[0] if found else None


def wait_for_workload_condition(
    cluster: KubeCluster, namespace: str, job: JsonObject, condition_type: str, status: str = "True"
) -> JsonObject:
    def with_condition() -> JsonObject | None:
        workload = workload_of(cluster, namespace, job)
        condition = condition_of(workload, condition_type)
        return workload if condition is not None and condition["status"] == status else None

    return wait_until(
        with_condition, timeout=120, what=f"the Workload of {job['metadata']['name']}: {condition_type}={status}"
    )


def server_side_apply(
    cluster: KubeCluster, namespace: str, backend: Backend, name: str, labels: dict[str, str], suspend: bool | None
) -> str:
    """Applies job NAME (pods of outcome `run`) server-side as APPLIER, with SUSPEND unless None; returns kubectl's
    error output ("" when it applied)."""
    job = backend.build(name, labels, pod_behaviour(Outcome.RUN))
    job["metadata"]["namespace"] = namespace
    if suspend is not None:
        backend.set_suspend(job, suspend)
    applied = cluster.kubectl(
        "apply", "--server-side", f"--field-manager={APPLIER}", "-f", "-", stdin=json.dumps(job), check=False
    )
    return applied.stderr.strip() if applied.returncode else ""


def submit(
    cluster: KubeCluster, namespace: str, backend: Backend, name: str, queue: Queue, priority: str | None = None
) -> JsonObject:
    """Job NAME on QUEUE (with a WorkloadPriorityClass), applied without suspend, as a job of trainrun's is."""
    labels = {QUEUE_LABEL: queue.local_queue}
    if priority is not None:
        labels[PRIORITY_LABEL] = priority
    assert server_side_apply(cluster, namespace, backend, name, labels, suspend=None) == ""
    created = cluster.get(backend.kind, name, namespace)
    assert created is not None
    return created


def wait_running(cluster: KubeCluster, namespace: str, backend: Backend, name: str) -> list[JsonObject]:
    return cluster.wait_for_pods(
        namespace, backend.pods(name), count=1, ready=is_running, timeout=120, what=f"pods of {name}"
    )


@pytest.mark.parametrize("backend", [TRAINJOB, PYTORCHJOB], ids=lambda backend: backend.kind)
def test_kueue_holds_a_job_beyond_the_quota_until_the_first_ends(
    platform_cluster: KubeCluster, platform_namespace: str, kueue_queue: Queue, backend: Backend
) -> None:
    cluster, namespace = platform_cluster, platform_namespace
    first = submit(cluster, namespace, backend, "first", kueue_queue)
    workload = wait_for_workload_condition(cluster, namespace, first, "Admitted")
    assert re.fullmatch(rf"{backend.kind}-first-[0-9a-f]{{5}}", workload["metadata"]["name"])
    [pod] = wait_running(cluster, namespace, backend, "first")
    assert pod["spec"]["nodeSelector"] == {POOL_LABEL: POOL}
    assert kueue_keys(pod["metadata"]["labels"]) == {
        "kueue.x-k8s.io/podset": backend.pod_set,
        "kueue.x-k8s.io/local-queue-name": kueue_queue.local_queue,
        "kueue.x-k8s.io/cluster-queue-name": kueue_queue.cluster_queue,
    }
    assert kueue_keys(pod["metadata"]["annotations"]) == {"kueue.x-k8s.io/workload": workload["metadata"]["name"]}

    second = submit(cluster, namespace, backend, "second", kueue_queue)
    pending = wait_for_workload_condition(cluster, namespace, second, "QuotaReserved", status="False")
    reserved = condition_of(pending, "QuotaReserved")
    assert reserved is not None and reserved["reason"] == "Pending"
    assert reserved["message"] == (
        f"couldn't assign flavors to pod set {backend.pod_set}: insufficient unused quota for {GPU_RESOURCE} "
        f"in flavor {kueue_queue.flavor}, 8 more needed"
    )
    held = cluster.get(backend.kind, "second", namespace)
    assert held is not None and backend.suspended(held)
    assert cluster.list_objects("pods", namespace, backend.pods("second")) == []
    # Kueue's webhook suspended the job as it was created; the field has no owner, so applies without it are
    # harmless (they neither own nor clear it).
    assert field_owners(cluster, backend.kind, "second", namespace, backend.suspend_path) == []
    print(f"{backend.kind} waiting, its Workload: {json.dumps(pending['status']['conditions'], indent=1)}")
    # The ClusterQueue in Kueue's older API too: its conversion webhook answers at its URL.
    old_api = cluster.kubectl("get", "clusterqueues.v1beta1.kueue.x-k8s.io", kueue_queue.cluster_queue, "-o", "json")
    assert json.loads(old_api.stdout)["apiVersion"] == "kueue.x-k8s.io/v1beta1"

    end_pods(cluster, namespace, backend.pods("first"))
    admitted = wait_for_workload_condition(cluster, namespace, second, "Admitted")
    wait_running(cluster, namespace, backend, "second")
    resumed = cluster.get(backend.kind, "second", namespace)
    assert resumed is not None and not backend.suspended(resumed)
    template = backend.pod_template(resumed)
    assert template["spec"]["nodeSelector"] == {POOL_LABEL: POOL}  # the flavor's nodeLabels
    assert kueue_keys(template["metadata"]["labels"]) == {
        "kueue.x-k8s.io/podset": backend.pod_set,
        "kueue.x-k8s.io/local-queue-name": kueue_queue.local_queue,
        "kueue.x-k8s.io/cluster-queue-name": kueue_queue.cluster_queue,
    }
    finished = condition_of(workload_of(cluster, namespace, first), "Finished")
    assert finished is not None and finished["status"] == "True"
    print(f"{backend.kind} admitted, its Workload: {json.dumps(admitted['status'], indent=1)}")
    # Kueue unsuspends with an update (manager "kueue"): an apply that says suspend: true now conflicts.
    assert field_owners(cluster, backend.kind, "second", namespace, backend.suspend_path) == ["kueue/Update"]
    conflict = server_side_apply(
        cluster, namespace, backend, "second", {QUEUE_LABEL: kueue_queue.local_queue}, suspend=True
    )
    assert f'conflict with "kueue" using {backend.api_version}: .{".".join(backend.suspend_path)}' in conflict


@pytest.mark.parametrize("backend", [TRAINJOB, PYTORCHJOB], ids=lambda backend: backend.kind)
def test_kueue_preempts_a_lower_priority_job(
    platform_cluster: KubeCluster, platform_namespace: str, kueue_queue: Queue, backend: Backend
) -> None:
    cluster, namespace = platform_cluster, platform_namespace
    low = submit(cluster, namespace, backend, "low", kueue_queue, kueue_queue.low)
    wait_for_workload_condition(cluster, namespace, low, "Admitted")
    wait_running(cluster, namespace, backend, "low")

    high = submit(cluster, namespace, backend, "high", kueue_queue, kueue_queue.high)
    wait_for_workload_condition(cluster, namespace, high, "Admitted")
    wait_running(cluster, namespace, backend, "high")
    evicted = wait_for_workload_condition(cluster, namespace, low, "Admitted", status="False")
    high_workload = workload_of(cluster, namespace, high)
    assert high_workload is not None
    cause = (
        f"Preempted to accommodate a workload (UID: {high_workload['metadata']['uid']}, JobUID: "
        f"{high['metadata']['uid']}) due to prioritization in the ClusterQueue; preemptor path: "
        f"/{kueue_queue.cluster_queue}; preemptee path: /{kueue_queue.cluster_queue}"
    )
    conditions = {condition["type"]: condition for condition in evicted["status"]["conditions"]}
    assert (conditions["Evicted"]["status"], conditions["Evicted"]["reason"]) == ("True", "Preempted")
    assert (conditions["Preempted"]["status"], conditions["Preempted"]["reason"]) == ("True", "InClusterQueue")
    assert conditions["Evicted"]["message"] == conditions["Preempted"]["message"] == cause
    assert (conditions["QuotaReserved"]["status"], conditions["Requeued"]["status"]) == ("False", "True")
    print(f"{backend.kind} preempted, its Workload: {json.dumps(evicted['status'], indent=1)}")

    suspended = cluster.get(backend.kind, "low", namespace)
    assert suspended is not None and backend.suspended(suspended)
    assert kueue_keys(backend.pod_template(suspended).get("metadata", {}).get("labels", {})) == {}
    assert cluster.list_objects("pods", namespace, backend.pods("low")) == []
    suspended_condition = condition_of(suspended, "Suspended")
    assert suspended_condition is not None and suspended_condition["status"] == "True"
    assert suspended_condition["reason"] == backend.suspended_reason
    assert suspended_condition["message"] == backend.suspended_message.format(name="low")
    print(f"{backend.kind} preempted, its status: {json.dumps(suspended.get('status'), indent=1)}")
    stopped = [message for kind, reason, message in events_of(cluster, namespace, "low") if reason == "Stopped"]
    assert stopped == [cause]

    end_pods(cluster, namespace, backend.pods("high"))
    readmitted = wait_for_workload_condition(cluster, namespace, low, "Admitted")
    wait_running(cluster, namespace, backend, "low")
    print(f"{backend.kind} admitted again, its Workload: {json.dumps(readmitted['status'], indent=1)}")


@pytest.mark.parametrize("backend", [TRAINJOB, PYTORCHJOB], ids=lambda backend: backend.kind)
def test_deleting_an_admitted_job_releases_its_quota(
    platform_cluster: KubeCluster, platform_namespace: str, kueue_queue: Queue, backend: Backend
) -> None:
    cluster, namespace = platform_cluster, platform_namespace
    first = submit(cluster, namespace, backend, "first", kueue_queue)
    wait_for_workload_condition(cluster, namespace, first, "Admitted")
    wait_running(cluster, namespace, backend, "first")
    second = submit(cluster, namespace, backend, "second", kueue_queue)
    wait_for_workload_condition(cluster, namespace, second, "QuotaReserved", status="False")

    cluster.kubectl("delete", backend.kind, "first", "-n", namespace, "--wait=false")
    wait_for_workload_condition(cluster, namespace, second, "Admitted")
    wait_running(cluster, namespace, backend, "second")
    # The Workload is the job's (an owner reference): the garbage collector deletes it with the job.
    wait_until(
        lambda: workload_of(cluster, namespace, first) is None, timeout=60, what="the Workload of the deleted job gone"
    )
