"""TrainingRun -> a Kubeflow Trainer v2 TrainJob (``trainer.kubeflow.org/v1alpha1``) on the shipped runtime.

The TrainJob refers to the ClusterTrainingRuntime of the operator configuration (``manifests/trainer-v2``
ships ``trainrun-torch``: the torch ML policy, one replicated job ``node`` of ``numNodes`` indexed pods,
each running torchrun, and the ``stage-in`` init container). What a PyTorchJob pod gets from its template
reaches a TrainJob pod through ``spec.trainer`` (image, command, env, nodes, processes, resources) and one
runtime patch of ours (pod labels and annotations, placement, volumes, the containers' mounts and
security, the stage-in's downloads): Trainer v2.3 lets a TrainJob patch nothing else. So the replica
contract is the PyTorchJob's: Trainer gives ``PET_*``, this adds ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``
and ``MASTER_PORT`` as the training-operator does, and every node mounts the output claim in a folder of
its own (``node-<rank>``: the Master's is the one copied). What the runtime fixes and a run cannot change
is said by :func:`trainjob_problems`, naming the field. Called through ``trainrun.render.backend``. Pure.
"""

from __future__ import annotations

from typing import Any

from trainrun.render.changes import APPLIED_SPEC_ANNOTATION
from trainrun.render.children import (
    CREDENTIALS_DIR_VARIABLE,
    REPLICA_COMPONENT,
    RUNTIME_DEFAULT_SECCOMP,
    STAGE_IN_CONTAINER,
    applied_spec,
    child_metadata,
    common_labels,
    container_resources,
    env_list,
    job_name,
    kueue_labels,
    owns_suspend,
    replica_security_context,
    scheduling,
    stage_in_env,
    staged_downloads,
    staging_mounts,
    stopped,
    volume_claim_name,
)
from trainrun.render.replica import launch_command
from trainrun.spec.config import OperatorConfig
from trainrun.spec.errors import FieldProblem
from trainrun.spec.model import DEFAULT_OUTPUT_DIR, TrainingRun

Object = dict[str, Any]
TRAINJOB_API_VERSION = "trainer.kubeflow.org/v1alpha1"
TRAINJOB_KIND = "TrainJob"
TRAINER_CONTAINER = "node"  # the runtime's trainer step: its replicated job, and its container
TRAINER_PORT = 29500  # Trainer's torch plugin: PET_MASTER_PORT
RUNTIME_PATCH_MANAGER = "trainrun.dev/operator"
COMPLETION_INDEX_FIELD = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
CREDENTIALS_PATH = "/var/run/trainrun/storage-credentials"
# What the shipped runtime fixes for every TrainJob (Trainer v2.3 lets a TrainJob change neither).
RUNTIME_RESTART_POLICY = "OnFailure"
RUNTIME_BACKOFF_LIMIT = 3
RUNTIME_IMAGE_PULL_POLICY = "IfNotPresent"



def node_job_name(run_name: str) -> str:
    """The Job JobSet makes of the runtime's replicated job (``<jobset>-<replicatedJob>-<index>``): it creates the
    nodes' pods, and its ``FailedCreate`` Events say why it cannot."""
    return f"{run_name}-{TRAINER_CONTAINER}-0"

def outputs_folder(rank: str) -> str:
    """The folder of the output claim a node mounts as $OUTPUT_DIR (``$(RANK)`` in the pods: its node rank)."""
    return f"node-{rank}"


MASTER_OUTPUTS = outputs_folder("0")


def render_trainjob(run: TrainingRun, config: OperatorConfig) -> Object:
    """The TrainJob of a run: numNodes = 1 + workers, torchrun in each, on the configured runtime."""
    spec = run.spec
    name = job_name(run)
    _, pool = config.pool_named(spec.resources.pool)
    nodes = 1 + spec.distribution.workers
    metadata = child_metadata(run, name, "training")
    metadata["annotations"] = {APPLIED_SPEC_ANNOTATION: applied_spec(run)}
    metadata["labels"].update(kueue_labels(run))
    trainer: Object = {
        "image": spec.image,
        "command": _command(run),
        "env": [*env_list(run), *_rendezvous_env(name, nodes, spec.processes_per_replica)],
        "numNodes": nodes,
        "numProcPerNode": spec.processes_per_replica,
    }
    resources = container_resources(run, pool)
    if resources:
        trainer["resourcesPerNode"] = resources
    body: Object = {
        "runtimeRef": {"name": config.training_runtime, "apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime"},
        "trainer": trainer,
        "runtimePatches": [{"manager": RUNTIME_PATCH_MANAGER, "trainingRuntimeSpec": {"template": _template_patch(run, config)}}],
    }
    body.update(trainjob_live_fields(run))
    return {"apiVersion": TRAINJOB_API_VERSION, "kind": TRAINJOB_KIND, "metadata": metadata, "spec": body}


def trainjob_live_fields(run: TrainingRun) -> Object:
    """The fields of a TrainJob's spec that a live one takes: suspend (where the operator owns it) and the deadline."""
    fields: Object = {}
    if owns_suspend(run):
        fields["suspend"] = stopped(run)
    if run.spec.run_policy.active_deadline_seconds is not None:
        fields["activeDeadlineSeconds"] = run.spec.run_policy.active_deadline_seconds
    return fields


def trainjob_problems(run: TrainingRun) -> list[FieldProblem]:
    """What a TrainJob on the shipped runtime cannot carry for this run, each naming the field and the fix."""
    spec = run.spec
    policy = spec.run_policy
    problems = []
    if spec.env_from:
        problems.append(
            FieldProblem(
                "spec.envFrom",
                "a TrainJob (Kubeflow Trainer v2.3) takes its trainer's variables one by one: name each in spec.env "
                "(valueFrom.secretKeyRef or configMapKeyRef) on the TrainJob backend",
            )
        )
    if policy.restart_policy != RUNTIME_RESTART_POLICY:
        problems.append(_fixed("spec.runPolicy.restartPolicy", policy.restart_policy, RUNTIME_RESTART_POLICY))
    if policy.backoff_limit != RUNTIME_BACKOFF_LIMIT:
        problems.append(_fixed("spec.runPolicy.backoffLimit", policy.backoff_limit, RUNTIME_BACKOFF_LIMIT))
    if "image_pull_policy" in spec.model_fields_set and spec.image_pull_policy != RUNTIME_IMAGE_PULL_POLICY:
        problems.append(_fixed("spec.imagePullPolicy", spec.image_pull_policy, RUNTIME_IMAGE_PULL_POLICY))
    if spec.resources.priority_class_name and spec.resources.queue is None:
        problems.append(
            FieldProblem(
                "spec.resources.priorityClassName",
                "a TrainJob (Kubeflow Trainer v2.3) cannot set its pods' PriorityClass; with spec.resources.queue it "
                "becomes the Kueue WorkloadPriorityClass of that name (label kueue.x-k8s.io/priority-class)",
            )
        )
    return problems


def _fixed(field: str, value: object, fixed: object) -> FieldProblem:
    return FieldProblem(
        field,
        f"{value!r}: the TrainJob backend's ClusterTrainingRuntime sets {fixed!r} for every run (Kubeflow Trainer "
        f"v2.3 lets a TrainJob not change it); leave it out, or ask the platform team for a runtime with {value!r}",
    )


def _command(run: TrainingRun) -> list[str]:
    """The launch command; in the working directory the spec names (a TrainJob has no workingDir)."""
    command = launch_command(run)
    working_dir = run.spec.working_dir or (run.spec.code.mount_path if run.spec.code else None)
    if working_dir is None:
        return command
    return ["sh", "-c", 'cd "$0" && exec "$@"', working_dir, *command]


def _rendezvous_env(name: str, nodes: int, processes: int) -> list[Object]:
    """What the training-operator gives a PyTorchJob pod and Trainer's torch plugin does not (it gives PET_*)."""
    return [
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "RANK", "valueFrom": {"fieldRef": {"fieldPath": COMPLETION_INDEX_FIELD}}},
        {"name": "WORLD_SIZE", "value": str(nodes * processes)},
        {"name": "MASTER_ADDR", "value": f"{name}-{TRAINER_CONTAINER}-0-0.{name}"},
        {"name": "MASTER_PORT", "value": str(TRAINER_PORT)},
    ]


def _template_patch(run: TrainingRun, config: OperatorConfig) -> Object:
    """The runtime patch: what each node's pod gets beside the trainer's container settings."""
    spec = run.spec
    _, pool = config.pool_named(spec.resources.pool)
    placement = {key: value for key, value in scheduling(run, pool).items() if key != "priorityClassName"}
    pod_spec: Object = {
        **placement,
        "securityContext": {"seccompProfile": dict(RUNTIME_DEFAULT_SECCOMP)},
        "volumes": _volumes(run),
        "containers": [
            {
                "name": TRAINER_CONTAINER,
                "volumeMounts": [
                    {"name": "outputs", "mountPath": DEFAULT_OUTPUT_DIR, "subPathExpr": outputs_folder("$(RANK)")},
                    *staging_mounts(run),
                ],
                "securityContext": replica_security_context(config),
            }
        ],
    }
    stage_in = _stage_in_patch(run)
    if stage_in is not None:
        pod_spec["initContainers"] = [stage_in]
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": item} for item in spec.image_pull_secrets]
    labels = {**spec.pod_metadata.labels, **common_labels(run, REPLICA_COMPONENT)}
    pod_metadata: Object = {"labels": labels}
    if spec.pod_metadata.annotations:
        pod_metadata["annotations"] = dict(spec.pod_metadata.annotations)
    node_job = {"name": TRAINER_CONTAINER, "template": {"spec": {"template": {"metadata": pod_metadata, "spec": pod_spec}}}}
    return {"spec": {"replicatedJobs": [node_job]}}


def _stage_in_patch(run: TrainingRun) -> Object | None:
    """The runtime's stage-in init container: its downloads, where they go, the run's credentials (None:
    nothing to stage, and the runtime's container does nothing). No empty list is written: a Go client
    updating the TrainJob (Kueue, when it admits it) drops them, and Trainer keeps the patch immutable."""
    if not staged_downloads(run):
        return None
    mounts = staging_mounts(run)
    env = [stage_in_env(run)]
    if run.spec.output.secret_name:
        mounts.append({"name": "storage-credentials", "mountPath": CREDENTIALS_PATH, "readOnly": True})
        env.append({"name": CREDENTIALS_DIR_VARIABLE, "value": CREDENTIALS_PATH})
    return {"name": STAGE_IN_CONTAINER, "env": env, "volumeMounts": mounts}


def _volumes(run: TrainingRun) -> list[Object]:
    """The output claim (every node's $OUTPUT_DIR, in a folder of its own), the staging folders, credentials."""
    spec = run.spec
    volumes: list[Object] = []
    if spec.output.uri is not None:
        volumes.append({"name": "outputs", "persistentVolumeClaim": {"claimName": volume_claim_name(run)}})
    else:
        volumes.append({"name": "outputs", "emptyDir": {}})
    if spec.inputs:
        volumes.append({"name": "inputs", "emptyDir": {}})
    if spec.code is not None:
        volumes.append({"name": "code", "emptyDir": {}})
    if spec.output.secret_name:
        volumes.append({"name": "storage-credentials", "secret": {"secretName": spec.output.secret_name}})
    return volumes
