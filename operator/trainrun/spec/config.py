"""The operator's configuration: node pools that the platform team maps to scheduling rules.

Read by the renderer (pool -> nodeSelector, tolerations, affinity, GPU resource name) and by
validation (unknown pool, more GPUs than a pool's nodes have). The operator loads it from the
ConfigMap ``trainrun-operator-config`` (key ``config.yaml``); ``trainrun render --config FILE`` and the
local runner read the same YAML from a file. Pure: parsing and checks only.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, model_validator

from trainrun.base.redact import redact
from trainrun.spec.model import (
    ApiModel,
    FreeFormObject,
    LabelMap,
    ObjectName,
    Quantity,
    ResourceName,
    StorageURI,
    Toleration,
)

CONFIG_MAP_NAME = "trainrun-operator-config"
CONFIG_MAP_KEY = "config.yaml"
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_OPERATOR_IMAGE = "ghcr.io/trainrun/operator:0.1.0"
DEFAULT_TRAINING_RUNTIME = "trainrun-torch"
HELPER_REQUESTS: dict[str, int | str] = {"cpu": "500m", "memory": "512Mi"}
HELPER_LIMITS: dict[str, int | str] = {"cpu": "2", "memory": "2Gi"}


class Pool(ApiModel):
    """A named group of nodes, e.g. a100 or t4, and how pods get there."""

    node_selector: LabelMap = Field(default_factory=dict, description="Node labels of the pool.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Tolerations for the pool's taints.")
    affinity: FreeFormObject | None = Field(default=None, description="Pod affinity for the pool.")
    gpu_resource: ResourceName = Field(default=DEFAULT_GPU_RESOURCE, description="Extended resource name of the GPUs.")
    gpus_per_node: int | None = Field(
        default=None, ge=0, description="GPUs on each node; a replica asking for more is refused up front."
    )


class HelperResources(ApiModel):
    """Requests and limits of the containers the operator adds beside the replicas: the uploader Job
    and the stage-in init container. A namespace with a ResourceQuota on cpu or memory refuses
    containers without requests, so they always have some. The uploader peaked at 116 MB copying
    a 2 GB file and 58 MB for 2,000 small ones (tests/bench/bench_upload.py)."""

    requests: dict[str, Quantity] = Field(default_factory=lambda: dict(HELPER_REQUESTS), description="Resource requests.")
    limits: dict[str, Quantity] = Field(default_factory=lambda: dict(HELPER_LIMITS), description="Resource limits.")


class LogArchiveSettings(ApiModel):
    """Where the operator archives every replica's log while a run trains (see the README's "Logs")."""

    default_uri: StorageURI | None = Field(
        default=None,
        description="Archive location of runs without spec.output.uri: their logs go to "
        "<defaultUri>/<namespace>/<run>-<uid>/ with the operator's own credentials (its environment). "
        "Unset: such runs' logs are followed for metrics but not archived. Runs with an output URI "
        "archive to <output>/logs/ with the run's credentials.",
    )
    flush_seconds: float = Field(
        default=2.0, gt=0, le=300, description="Lines read are shipped as a segment this often (or every 4 MiB)."
    )


class NamespacePolicy(ApiModel):
    """What the runs of one namespace may use. A field left out does not restrict; an empty list allows nothing."""

    output_uri_prefixes: list[str] | None = Field(
        default=None,
        description="spec.output.uri must start with one of these (a folder boundary: s3://models/team-a "
        "allows s3://models/team-a/x, not s3://models/team-ab).",
    )
    pools: list[str] | None = Field(default=None, description="Pools the runs may land on (the default pool included).")


def _checked_registry_uri(uri: str) -> str:
    """An http(s) URL without credentials in it: those go in the registry's Secret."""
    parsed = urlsplit(uri)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"{redact(uri)!r} is not an http(s) URL of a registry server, e.g. http://mlflow.mlflow:5000")
    if parsed.username is not None or parsed.password is not None:
        raise ValueError(
            f"{redact(uri)!r} carries credentials: put them in the Secret named by secretName "
            "(MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN)"
        )
    return uri.rstrip("/")


class Registry(ApiModel):
    """A model registry and experiment tracker the platform runs, which runs name by its key.

    The type is the seam of ``trainrun.registry``: mlflow (its REST API 2.0) is the one there is."""

    type: Literal["mlflow"] = Field(description="The kind of server: mlflow (an MLflow tracking server with its model registry).")
    uri: Annotated[str, AfterValidator(_checked_registry_uri)] = Field(
        description="The server's base URL, e.g. http://mlflow.mlflow:5000 (no credentials in it)."
    )
    secret_name: ObjectName | None = Field(
        default=None,
        description="Secret in the operator's namespace with the credentials as env keys: MLFLOW_TRACKING_TOKEN, "
        "or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD.",
    )


class TrackingSettings(ApiModel):
    """Every TrainingRun as a run of an experiment tracker (a run may opt out, or choose another experiment)."""

    registry: str | None = Field(default=None, description="The registry (by key) that tracks; default: defaultRegistry.")
    experiment: str | None = Field(
        default=None, min_length=1, max_length=500, description="Experiment of the runs; default: the run's namespace."
    )


class OperatorConfig(ApiModel):
    """Everything the platform team configures for the operator."""

    backend: Literal["PyTorchJob", "TrainJob"] = Field(
        default="PyTorchJob",
        description="What a run becomes: a Kubeflow training-operator v1 PyTorchJob, or a Kubeflow Trainer v2 "
        "TrainJob (on JobSet) that refers to the ClusterTrainingRuntime trainingRuntime. The platform decides; "
        "a run cannot choose.",
    )
    training_runtime: ObjectName = Field(
        default=DEFAULT_TRAINING_RUNTIME,
        description="The ClusterTrainingRuntime a TrainJob refers to (manifests/trainer-v2 ships trainrun-torch).",
    )
    pools: dict[str, Pool] = Field(default_factory=dict, description="Node pools by name.")
    default_pool: str | None = Field(default=None, description="Pool of runs that name none.")
    operator_image: str = Field(
        default=DEFAULT_OPERATOR_IMAGE, description="Image of the uploader Job and the input/code staging init containers."
    )
    helper_resources: HelperResources = Field(
        default_factory=HelperResources, description="Resources of the uploader Job and the staging init container."
    )

    replica_security: Literal["restricted", "baseline"] = Field(
        default="restricted",
        description="Security context of the replicas' pytorch container. restricted (Pod Security "
        "'restricted': non-root, no privilege escalation, all capabilities dropped, seccomp RuntimeDefault) "
        "needs images that run as a non-root user, as the trainrun images do; baseline drops the non-root and "
        "capability rules for images that must run as root. The helper containers are always restricted.",
    )
    namespaces: dict[str, NamespacePolicy] = Field(
        default_factory=dict,
        description="Per-namespace limits on output URIs and pools; a namespace not listed is not limited.",
    )
    logs: LogArchiveSettings = Field(
        default_factory=LogArchiveSettings, description="Where and how often replica logs are archived."
    )

    registries: dict[str, Registry] = Field(
        default_factory=dict, description="Model registries and experiment trackers by key (spec.output.register.registry)."
    )
    default_registry: str | None = Field(default=None, description="The registry of runs that name none.")
    tracking: TrackingSettings | None = Field(
        default=None, description="Track every run in this registry's experiment tracker (unset: only runs with spec.tracking)."
    )

    @model_validator(mode="after")
    def _registries_known(self) -> OperatorConfig:
        known = ", ".join(sorted(self.registries)) or "none are configured"
        named = [("defaultRegistry", self.default_registry)]
        if self.tracking is not None:
            named.append(("tracking.registry", self.tracking.registry))
        for where, key in named:
            if key is not None and key not in self.registries:
                raise ValueError(f"{where}: unknown registry {key!r}; registries has: {known}")
        return self

    def registry_named(self, key: str | None) -> tuple[str | None, Registry | None]:
        """The registry a run uses (its own key, else the default) and its settings; (key, None) for an unknown one."""
        chosen = key or self.default_registry
        if chosen is None:
            return None, None
        return chosen, self.registries.get(chosen)

    def pool_named(self, name: str | None) -> tuple[str | None, Pool | None]:
        """The pool a run lands on (its own, else the default) and its settings; (None, None) when none applies."""
        chosen = name or self.default_pool
        if chosen is None:
            return None, None
        return chosen, self.pools.get(chosen)


def parse_operator_config(data: dict[str, Any] | None) -> OperatorConfig:
    """Build an OperatorConfig from the YAML document's data (None or empty gives the defaults)."""
    return OperatorConfig.model_validate(data or {})
