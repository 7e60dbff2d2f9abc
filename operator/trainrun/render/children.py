"""TrainingRun + operator configuration -> the Kubernetes objects that carry it out.

Builds the PyTorchJob (one Master, N Workers), the per-run output volume claim and the uploader Job,
with deterministic names, labels and owner references. Called by the operator's handlers, by
``trainrun render`` and, for the replica command and env, by the local runner. Pure: plain dicts in the
shape of kubeflow-training's ``KubeflowOrgV1PyTorchJob`` (a unit test round-trips them through it).
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping
from typing import Any

from trainrun.render.changes import (
    APPLIED_SPEC_ANNOTATION,
    applied_annotation,
    decode_applied_spec,
    encode_applied_spec,
    pending_changes,
)
from trainrun.render.replica import (
    DEFAULT_MASTER_PORT,
    INPUTS_ROOT,
    input_path,
    launch_command,
    trainrun_env,
)
from trainrun.spec.config import OperatorConfig, Pool
from trainrun.spec.model import API_VERSION, DEFAULT_OUTPUT_DIR, KIND, Toleration, TrainingRun

Object = dict[str, Any]

PYTORCHJOB_API_VERSION = "kubeflow.org/v1"
PYTORCHJOB_KIND = "PyTorchJob"
CONTAINER_NAME = "pytorch"  # the training-operator finds the rendezvous port on the container with this name
PORT_NAME = "pytorchjob-port"
RUN_LABEL = "trainrun.dev/run"
# Labels the training-operator puts on the pods of a PyTorchJob.
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
REPLICA_INDEX_LABEL = "training.kubeflow.org/replica-index"
COMPONENT_LABEL = "app.kubernetes.io/component"
UPLOADER_COMPONENT = "uploader"  # the component label of the uploader Job and its pods
REPLICA_COMPONENT = "replica"  # ... and of the replica pods, whatever the backend
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
FIELD_MANAGER = "trainrun-operator"
OWNER_UID_PLACEHOLDER = "<uid of the TrainingRun, set when it is created>"
# The user of the operator image (images/operator/Dockerfile), which the helper containers run.
HELPER_USER_ID = 10001
HELPER_TMP_VOLUME = "helper-tmp"  # /tmp of the helper containers: their root filesystem is read-only
RUNTIME_DEFAULT_SECCOMP = {"type": "RuntimeDefault"}
# Checks of the manifest linter (kube-score, tests/lint/) that do not apply to the uploader Job, and why:
# pod-networkpolicy: NetworkPolicies are the namespace owner's; the operator creates none (no RBAC for it).
# container-image-pull-policy: the operator image is pinned by tag and pulled with IfNotPresent, so a run
#   does not depend on the registry being reachable when it ends.
# container-ephemeral-storage-request-and-limit: the uploader's only writable place is its /tmp emptyDir,
#   whose sizeLimit bounds it already; a request would make it unschedulable on nodes that report no
#   ephemeral storage (virtual kubelets, kwok), and the platform team can still set one in helperResources.
STAGE_IN_CONTAINER = "stage-in"  # the init container that stages inputs and code (trainrun stage-in)
STAGE_IN_VARIABLE = "TRAINRUN_STAGE_IN"
CREDENTIALS_DIR_VARIABLE = "TRAINRUN_CREDENTIALS_DIR"  # a mounted Secret whose files are storage variables
LINT_IGNORE_ANNOTATION = "kube-score/ignore"
UPLOADER_LINT_IGNORES = "pod-networkpolicy,container-image-pull-policy,container-ephemeral-storage-request-and-limit"


def canonical_spec(run: TrainingRun) -> dict[str, Any]:
    """The spec with defaults, as JSON: what the applied-spec annotation records and changes compare."""
    return run.spec.model_dump(mode="json", by_alias=True, exclude_none=True)


# applied_spec of each parsed run while it lives (by its id: a run's spec is not changed once parsed; the entry
# goes with the run). The operator's passes reuse a run while its follower holds it and ask at every pass whether
# the job has changes to apply: dumping and encoding the spec each time was 3% of the operator's CPU at 1,000
# runs. Only the text is kept (0.8 KB a run; the dumped spec would be 4 KB more).
_applied_specs: dict[int, str] = {}


def applied_spec(run: TrainingRun) -> str:
    """The applied-spec annotation's value for the run: its canonical spec, encoded."""
    key = id(run)
    encoded = _applied_specs.get(key)
    if encoded is None:
        encoded = _applied_specs[key] = encode_applied_spec(canonical_spec(run))
        weakref.finalize(run, _applied_specs.pop, key, None)
    return encoded


def changes_since_applied(job: Mapping[str, Any], run: TrainingRun) -> list[str]:
    """:func:`pending_changes` between the spec the job was rendered from and the run's: none at a glance when its
    annotation is the run's :func:`applied_spec` (every reconcile of an unchanged run)."""
    if applied_annotation(job) == applied_spec(run):
        return []
    return pending_changes(decode_applied_spec(job) or {}, canonical_spec(run))


def job_name(run: TrainingRun) -> str:
    """The PyTorchJob is named after the run, so a crash and a retry can never make a second one."""
    return run.metadata.name


def volume_claim_name(run: TrainingRun) -> str:
    """The per-run output volume claim (or the user's own claim)."""
    return run.spec.output.volume.claim_name or f"{run.metadata.name}-outputs"


def uploader_job_name(run: TrainingRun) -> str:
    """The Job that copies $OUTPUT_DIR to the output URI."""
    return f"{run.metadata.name}-upload"


def master_pod_name(run: TrainingRun) -> str:
    """The training-operator names pods ``<job>-<replica type>-<index>``."""
    return f"{job_name(run)}-master-0"


def common_labels(run: TrainingRun, component: str) -> dict[str, str]:
    """Labels on every child: which run, which part, who manages it."""
    return {
        RUN_LABEL: run.metadata.name,
        COMPONENT_LABEL: component,
        "app.kubernetes.io/managed-by": "trainrun",
        "app.kubernetes.io/part-of": "trainrun",
    }


def owner_reference(run: TrainingRun) -> Object:
    """Children are garbage-collected with their run; ``controller: true`` marks the one owner."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": run.metadata.name,
        "uid": run.metadata.uid or OWNER_UID_PLACEHOLDER,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(run: TrainingRun, name: str, component: str) -> Object:
    """Metadata of a child object: its name, the run's namespace, labels and the owner reference."""
    return {
        "name": name,
        "namespace": run.metadata.namespace,
        "labels": common_labels(run, component),
        "ownerReferences": [owner_reference(run)],
    }


def _toleration(toleration: Toleration) -> Object:
    return toleration.model_dump(by_alias=True, exclude_none=True)


def scheduling(run: TrainingRun, pool: Pool | None) -> Object:
    """nodeSelector, tolerations, affinity and priority of replica pods: the pool's, then the run's overrides."""
    resources = run.spec.resources
    node_selector = {**(pool.node_selector if pool else {}), **resources.node_selector}
    tolerations = [_toleration(item) for item in (pool.tolerations if pool else [])]
    for extra in resources.tolerations:
        rendered = _toleration(extra)
        if rendered not in tolerations:
            tolerations.append(rendered)
    affinity = resources.affinity if resources.affinity is not None else (pool.affinity if pool else None)
    placement: Object = {}
    if node_selector:
        placement["nodeSelector"] = node_selector
    if tolerations:
        placement["tolerations"] = tolerations
    if affinity:
        placement["affinity"] = affinity
    if resources.priority_class_name:
        placement["priorityClassName"] = resources.priority_class_name
    return placement


def container_resources(run: TrainingRun, pool: Pool | None) -> Object:
    """Requests = limits (Guaranteed QoS for CPU/memory; GPUs are only ever limits = requests)."""
    resources = run.spec.resources
    amounts: dict[str, Any] = {}
    if resources.cpu is not None:
        amounts["cpu"] = str(resources.cpu)
    if resources.memory is not None:
        amounts["memory"] = str(resources.memory)
    if resources.gpus > 0:
        gpu_resource = resources.gpu_resource or (pool.gpu_resource if pool else "nvidia.com/gpu")
        amounts[gpu_resource] = str(resources.gpus)
    return {"limits": dict(amounts), "requests": dict(amounts)} if amounts else {}


def helper_security_context() -> Object:
    """The uploader's and the stage-in container's: Pod Security "restricted", and a read-only root."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": HELPER_USER_ID,
        "runAsGroup": HELPER_USER_ID,
        "seccompProfile": dict(RUNTIME_DEFAULT_SECCOMP),
    }


def replica_security_context(config: OperatorConfig) -> Object:
    """The ``pytorch`` container's: Pod Security "restricted" unless the platform team chose baseline
    (``replicaSecurity``) for images that must run as root. The user's image decides its user id."""
    context: Object = {"allowPrivilegeEscalation": False, "seccompProfile": dict(RUNTIME_DEFAULT_SECCOMP)}
    if config.replica_security == "restricted":
        context["capabilities"] = {"drop": ["ALL"]}
        context["runAsNonRoot"] = True
    return context


def helper_tmp_mount() -> Object:
    return {"name": HELPER_TMP_VOLUME, "mountPath": "/tmp"}


def helper_tmp_volume() -> Object:
    return {"name": HELPER_TMP_VOLUME, "emptyDir": {"sizeLimit": "1Gi"}}


def env_list(run: TrainingRun) -> list[Object]:
    rendered = [{"name": name, "value": value} for name, value in trainrun_env(run).items()]
    user_names = {variable.name for variable in run.spec.env}
    # The user's own value wins over ours (a deliberate override of OUTPUT_DIR, say).
    rendered = [item for item in rendered if item["name"] not in user_names]
    rendered.extend(variable.model_dump(by_alias=True, exclude_none=True) for variable in run.spec.env)
    return rendered


def staged_downloads(run: TrainingRun) -> list[dict[str, str]]:
    """What the stage-in container downloads before training: each input, then the code snapshot."""
    spec = run.spec
    downloads = [{"uri": item.uri, "path": input_path(item.name, item.path)} for item in spec.inputs]
    if spec.code is not None:
        downloads.append({"uri": spec.code.uri, "path": spec.code.mount_path})
    return downloads


def stage_in_env(run: TrainingRun) -> Object:
    """The variable ``trainrun stage-in`` reads its downloads from (JSON: [{"uri", "path"}, ...])."""
    return {"name": STAGE_IN_VARIABLE, "value": json.dumps(staged_downloads(run), separators=(",", ":"))}


def _staging_init_containers(run: TrainingRun, config: OperatorConfig) -> list[Object]:
    """The init container that downloads the inputs and the code snapshot with ``trainrun stage-in``."""
    if not staged_downloads(run):
        return []
    container: Object = {
        "name": STAGE_IN_CONTAINER,
        "image": config.operator_image,
        "command": ["trainrun", "stage-in"],
        "env": [stage_in_env(run)],
        "resources": helper_resources(config),
        "securityContext": helper_security_context(),
        "volumeMounts": [*staging_mounts(run), helper_tmp_mount()],
    }
    if run.spec.output.secret_name:
        container["envFrom"] = [{"secretRef": {"name": run.spec.output.secret_name}}]
    return [container]


def helper_resources(config: OperatorConfig) -> Object:
    """Requests and limits of the containers the operator adds (the platform team's, from its config)."""
    resources = config.helper_resources
    return {
        key: {name: str(amount) for name, amount in amounts.items()}
        for key, amounts in (("requests", resources.requests), ("limits", resources.limits))
        if amounts
    }


def staging_mounts(run: TrainingRun) -> list[Object]:
    mounts: list[Object] = []
    if run.spec.inputs:
        mounts.append({"name": "inputs", "mountPath": INPUTS_ROOT})
        mounts.extend(
            {"name": "inputs", "mountPath": item.path, "subPath": item.name} for item in run.spec.inputs if item.path
        )
    if run.spec.code is not None:
        mounts.append({"name": "code", "mountPath": run.spec.code.mount_path})
    return mounts


def _volumes(run: TrainingRun, *, is_master: bool) -> list[Object]:
    volumes: list[Object] = []
    if is_master and run.spec.output.uri is not None:
        volumes.append({"name": "outputs", "persistentVolumeClaim": {"claimName": volume_claim_name(run)}})
    else:
        volumes.append({"name": "outputs", "emptyDir": {}})
    if run.spec.inputs:
        volumes.append({"name": "inputs", "emptyDir": {}})
    if run.spec.code is not None:
        volumes.append({"name": "code", "emptyDir": {}})
    if run.spec.inputs or run.spec.code is not None:
        volumes.append(helper_tmp_volume())  # for the stage-in init container
    return volumes


def pod_template(run: TrainingRun, config: OperatorConfig, pool: Pool | None, *, is_master: bool) -> Object:
    """The pod of one replica type: the ``pytorch`` container, volumes, staging and placement."""
    spec = run.spec
    container: Object = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": launch_command(run),
        "env": env_list(run),
        # The last lines of a crashed program become the termination message the status quotes.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "ports": [{"name": PORT_NAME, "containerPort": DEFAULT_MASTER_PORT, "protocol": "TCP"}],
        "volumeMounts": [{"name": "outputs", "mountPath": DEFAULT_OUTPUT_DIR}, *staging_mounts(run)],
        "securityContext": replica_security_context(config),
    }
    working_dir = spec.working_dir or (spec.code.mount_path if spec.code else None)
    if working_dir:
        container["workingDir"] = working_dir
    if spec.env_from:
        container["envFrom"] = list(spec.env_from)
    resources = container_resources(run, pool)
    if resources:
        container["resources"] = resources
    pod_spec: Object = {
        "containers": [container],
        "volumes": _volumes(run, is_master=is_master),
        "securityContext": {"seccompProfile": dict(RUNTIME_DEFAULT_SECCOMP)},
    }
    init_containers = _staging_init_containers(run, config)
    if init_containers:
        pod_spec["initContainers"] = init_containers
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in spec.image_pull_secrets]
    pod_spec.update(scheduling(run, pool))
    labels = {**spec.pod_metadata.labels, **common_labels(run, REPLICA_COMPONENT)}
    metadata: Object = {"labels": labels}
    if spec.pod_metadata.annotations:
        metadata["annotations"] = dict(spec.pod_metadata.annotations)
    return {"metadata": metadata, "spec": pod_spec}


def run_policy(run: TrainingRun, *, owns_suspend: bool) -> Object:
    """The PyTorchJob's runPolicy; suspend only where the operator owns it (Kueue's for a queued run).

    The job keeps its pods when it ends (cleanPodPolicy None, no TTL): the operator owns the end of a run's
    pods and applies spec.runPolicy.cleanPodPolicy and ttlSecondsAfterFinished itself once their logs are
    archived (``trainrun.plan``), so the training-operator never deletes a log before it was read."""
    policy = run.spec.run_policy
    rendered: Object = {
        "backoffLimit": policy.backoff_limit,
        "cleanPodPolicy": "None",
    }
    if owns_suspend:
        rendered["suspend"] = stopped(run)
    if policy.active_deadline_seconds is not None:
        rendered["activeDeadlineSeconds"] = policy.active_deadline_seconds
    return rendered


def stopped(run: TrainingRun) -> bool:
    """Whether the spec asks for the replicas to stop (suspended or cancelled)."""
    return run.spec.run_policy.suspend or run.spec.cancel


def owns_suspend(run: TrainingRun) -> bool:
    """Whether the operator sets the job's suspend field. A queued run's belongs to Kueue, which suspends the
    job at creation and lets it go when it admits it (an apply that set it would fight Kueue): the operator
    never writes it, and stops a queued run by deleting its job."""
    return run.spec.resources.queue is None


def render_pytorchjob(run: TrainingRun, config: OperatorConfig) -> Object:
    """The PyTorchJob for a run: Master x1 and Worker x N, launched through torchrun."""
    spec = run.spec
    _, pool = config.pool_named(spec.resources.pool)
    replica_specs: Object = {
        "Master": {
            "replicas": 1,
            "restartPolicy": spec.run_policy.restart_policy,
            "template": pod_template(run, config, pool, is_master=True),
        }
    }
    if spec.distribution.workers > 0:
        replica_specs["Worker"] = {
            "replicas": spec.distribution.workers,
            "restartPolicy": spec.run_policy.restart_policy,
            "template": pod_template(run, config, pool, is_master=False),
        }
    metadata = child_metadata(run, job_name(run), "training")
    metadata["annotations"] = {APPLIED_SPEC_ANNOTATION: applied_spec(run)}
    metadata["labels"].update(kueue_labels(run))
    return {
        "apiVersion": PYTORCHJOB_API_VERSION,
        "kind": PYTORCHJOB_KIND,
        "metadata": metadata,
        "spec": {
            "nprocPerNode": str(spec.processes_per_replica),
            "pytorchReplicaSpecs": replica_specs,
            "runPolicy": run_policy(run, owns_suspend=owns_suspend(run)),
        },
    }


def kueue_labels(run: TrainingRun) -> dict[str, str]:
    """A queued run's job: its LocalQueue, and its priority as Kueue's WorkloadPriorityClass of the name of
    spec.resources.priorityClassName (on either backend, so one TrainingRun queues alike on both)."""
    resources = run.spec.resources
    if resources.queue is None:
        return {}
    labels = {KUEUE_QUEUE_LABEL: resources.queue}
    if resources.priority_class_name:
        labels[KUEUE_PRIORITY_LABEL] = resources.priority_class_name
    return labels


def render_volume_claim(run: TrainingRun, *, shared: bool = False) -> Object | None:
    """The per-run output claim; None when the run copies nothing or brings its own claim. ``shared``: every
    replica mounts it (the TrainJob backend), so several nodes must be able to (ReadWriteMany)."""
    output = run.spec.output
    if output.uri is None or output.volume.claim_name is not None:
        return None
    claim_spec: Object = {
        "accessModes": ["ReadWriteMany" if shared else "ReadWriteOnce"],
        "resources": {"requests": {"storage": str(output.volume.size)}},
    }
    if output.volume.storage_class_name is not None:
        claim_spec["storageClassName"] = output.volume.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": child_metadata(run, volume_claim_name(run), "outputs"),
        "spec": claim_spec,
    }


def render_uploader_job(run: TrainingRun, config: OperatorConfig, *, outputs_subpath: str | None = None) -> Object:
    """The Job that copies the output volume (its folder ``outputs_subpath``, where the Master's
    $OUTPUT_DIR is) to the output URI and writes the manifest last."""
    output = run.spec.output
    if output.uri is None:
        raise ValueError("render_uploader_job needs spec.output.uri")
    container: Object = {
        "name": "upload",
        "image": config.operator_image,
        "command": ["trainrun", "upload", DEFAULT_OUTPUT_DIR, output.uri],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": helper_resources(config),
        "securityContext": helper_security_context(),
        "volumeMounts": [
            {
                "name": "outputs",
                "mountPath": DEFAULT_OUTPUT_DIR,
                "readOnly": True,
                **({"subPath": outputs_subpath} if outputs_subpath else {}),
            },
            helper_tmp_mount(),
        ],
    }
    if output.secret_name:
        container["envFrom"] = [{"secretRef": {"name": output.secret_name}}]
    metadata = child_metadata(run, uploader_job_name(run), UPLOADER_COMPONENT)
    metadata["annotations"] = {LINT_IGNORE_ANNOTATION: UPLOADER_LINT_IGNORES}
    # On the run's pool, as the Master that wrote the claim: a node-local volume is readable only there,
    # and a pool's taint would otherwise keep it off the only nodes that can mount it.
    _, pool = config.pool_named(run.spec.resources.pool)
    placement = scheduling(run, pool)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": 3,
            "template": {
                "metadata": {"labels": common_labels(run, UPLOADER_COMPONENT)},
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": dict(RUNTIME_DEFAULT_SECCOMP)},
                    # The uploader reads the claim and object storage: it has no use for a token.
                    "automountServiceAccountToken": False,
                    **{key: placement[key] for key in ("nodeSelector", "tolerations") if key in placement},
                    "containers": [container],
                    "volumes": [
                        {"name": "outputs", "persistentVolumeClaim": {"claimName": volume_claim_name(run)}},
                        helper_tmp_volume(),
                    ],
                },
            },
        },
    }
