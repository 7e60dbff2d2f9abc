"""The TrainingRun API (``trainrun.dev/v1alpha1``) as pydantic models: the one place that knows its shape.

Every other part reads a TrainingRun through these models: the renderer, the status function, the
local runner, ``trainrun validate`` and the operator. The CRD's OpenAPI schema in ``crds/`` is
generated from them (``trainrun.spec.crd``), descriptions included, so both stay in step. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from trainrun.base.errors import InvalidStorageURI
from trainrun.base.uri import parse_uri
from trainrun.spec.kubevalidation import (
    DNS_SUBDOMAIN,
    LABEL_VALUE_MAX,
    LABEL_VALUE_PATTERN,
    QUALIFIED_NAME_MAX,
    QUALIFIED_NAME_PATTERN,
    RESOURCE_NAME_PATTERN,
    TOLERATION_RULES,
    key_rule,
    label_value_problem,
    qualified_name_problem,
    toleration_problems,
)
from trainrun.spec.quantity import QUANTITY_MAX, QUANTITY_MAX_TEXT, parse_quantity

GROUP = "trainrun.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "TrainingRun"
PLURAL = "trainingruns"
SHORT_NAMES = ["tr"]

DEFAULT_IMAGE_NOTE = "the trainer image built from images/trainer/Dockerfile"
# What spec.image reads as in a run judged for this machine (``--local``) that names no image: local
# replicas run with the Python that runs trainrun, so the image is needed only on a cluster.
LOCAL_IMAGE = "local"
DEFAULT_TRAINER_MODULE = "trainrun_trainer"
DEFAULT_OUTPUT_DIR = "/outputs"

# Why a run failed, as spec.runPolicy.restartOn and failOn name it (``trainrun.plan.causes`` tells them apart).
FailureCause = Literal["NodeLost", "Preempted", "Evicted", "CommunicationError", "OOMKilled", "CudaOOM", "UserError"]
FAILURE_CAUSES: tuple[str, ...] = get_args(FailureCause)
DEFAULT_RESTART_ON: tuple[FailureCause, ...] = ("NodeLost", "Preempted", "Evicted")

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# The name of a Secret, claim or class the run refers to (RFC 1123 subdomain): the operator puts it in a
# URL path, so a '/' in it would address another resource.
OBJECT_NAME_PATTERN = rf"^{DNS_SUBDOMAIN}$"
ObjectName = Annotated[str, Field(pattern=OBJECT_NAME_PATTERN, max_length=253)]
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
# A container image reference as the kubelet parses it (github.com/distribution/reference), ASCII only:
# [registry[:port]/]lowercase/path[:tag][@algorithm:hex]. The CRD carries the same pattern.
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_PATTERN = rf"^(?:{_DOMAIN}/)?{_PATH_PART}(?:/{_PATH_PART})*(?::{_TAG})?(?:@{_DIGEST})?$"


def _quantity_input(value: object) -> object:
    """A whole number or a string, as the CRD's int-or-string takes it (YAML's 2.0 is 2); one message for
    anything else, instead of one per member of the int | str union."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63):
        return value
    raise ValueError(f"must be a quantity: a whole number or a string such as 500m or 16Gi; got {value!r}")


def _checked_quantity(value: int | str) -> int | str:
    amount = parse_quantity(str(value))
    if amount is None:
        raise ValueError(f"{value!r} is not a Kubernetes quantity; write it like 8, 500m or 16Gi")
    if amount.sign <= 0:
        raise ValueError(f"must be more than 0; got {value!r}")
    if amount.exceeds(QUANTITY_MAX):
        raise ValueError(
            f"{value!r} is too large: Kubernetes counts resources in thousandths in 64 bits, so at most "
            f"{QUANTITY_MAX_TEXT} (about 9.2 x 10^15); a larger amount overflows and no node can match it"
        )
    return value


# A positive quantity that Kubernetes can count, checked alike here and by the API server (CEL's
# isQuantity is the parser that ``parse_quantity`` follows).
Quantity = Annotated[
    int | str,
    BeforeValidator(_quantity_input),
    AfterValidator(_checked_quantity),
    Field(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"type(self) == int ? self > 0 && self <= {int(QUANTITY_MAX)} : isQuantity(self) && "
                    f"quantity(self).isGreaterThan(quantity('0')) && "
                    f"quantity(self).compareTo(quantity('{QUANTITY_MAX_TEXT}')) <= 0",
                    "message": f"must be a quantity more than 0 and at most {QUANTITY_MAX_TEXT}, such as 8, 500m or 16Gi",
                }
            ]
        },
    ),
]


def _checked_image(image: str) -> str:
    if not re.fullmatch(IMAGE_PATTERN, image):
        raise ValueError(
            f"{image!r} is not an image reference: write [registry/]name[:tag][@sha256:digest] in ASCII, "
            "the name in lowercase, e.g. ghcr.io/acme/trainer:1.0"
        )
    return image


FreeFormObject = Annotated[dict[str, Any], Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})]


def _refusing(problem_of: Callable[[str], str | None]) -> AfterValidator:
    """A validator that raises the problem ``problem_of`` finds in a text (``trainrun.spec.kubevalidation``)."""

    def check(text: str) -> str:
        problem = problem_of(text)
        if problem is not None:
            raise ValueError(problem)
        return text

    return AfterValidator(check)


# Labels, annotations and node selectors as a pod carries them: keys are qualified names ([prefix/]name)
# and label values at most 63 characters of a small alphabet (``trainrun.spec.kubevalidation``). The
# CRD checks keys with CEL (a schema cannot constrain a map's keys) and values with a pattern.
QualifiedName = Annotated[str, _refusing(qualified_name_problem)]
# A key that is a value of its own, such as a toleration's (a pattern on a map's key type would make pydantic
# write patternProperties, which a structural schema does not have).
QualifiedNameValue = Annotated[
    QualifiedName, Field(json_schema_extra={"pattern": QUALIFIED_NAME_PATTERN, "maxLength": QUALIFIED_NAME_MAX})
]
LabelValue = Annotated[
    str,
    _refusing(label_value_problem),
    Field(json_schema_extra={"pattern": LABEL_VALUE_PATTERN, "maxLength": LABEL_VALUE_MAX}),
]
# An extended resource, such as the GPU: a domain prefix and a name.
ResourceName = Annotated[str, Field(pattern=RESOURCE_NAME_PATTERN, max_length=QUALIFIED_NAME_MAX)]
# Entries of a label or annotation map: bounded so that the CRD's CEL rule over its keys stays within the API
# server's cost budget (an unbounded map is refused when the CRD is installed).
MAX_MAP_ENTRIES = 64
LabelMap = Annotated[
    dict[QualifiedName, LabelValue],
    Field(max_length=MAX_MAP_ENTRIES, json_schema_extra={"x-kubernetes-validations": [key_rule("label")]}),
]
AnnotationMap = Annotated[
    dict[QualifiedName, str],
    Field(max_length=MAX_MAP_ENTRIES, json_schema_extra={"x-kubernetes-validations": [key_rule("annotation")]}),
]


def _checked_absolute_path(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(
            f"{path!r} is a relative path; write an absolute one (starting with /), e.g. /workspace/{path.lstrip('./')}"
        )
    return path


# A path inside the container that must not depend on where the container starts (a working directory, a
# mount point): the runtime refuses a relative one when it creates the container.
AbsolutePath = Annotated[str, AfterValidator(_checked_absolute_path), Field(json_schema_extra={"pattern": "^/"})]
# What the API server can tell of a storage URI: a supported scheme (any case) with a bucket, or an absolute
# path, file:// or not, below the root. ``checked_uri`` says the rest (bucket names, '..').
STORAGE_URI_PATTERN = (
    r"^(([sS]3|[gG][sS]|[aA][zZ]|[aA][bB][fF][sS][sS]?)://[^/]|([fF][iI][lL][eE]://(localhost)?)?/+[^/])"
)
STORAGE_URI_FORMS = "s3://bucket/prefix, gs://bucket/prefix, az://container/prefix, file:///absolute/path or /absolute/path"


def checked_uri(uri: str) -> str:
    """``uri`` when it is a storage URI this package reads and writes, the same from any machine (else
    ``ValueError`` saying why): a relative path would be read from wherever the reader runs."""
    if uri != uri.strip():
        raise ValueError(f"{uri!r} has spaces around it; remove them")
    try:
        location = parse_uri(uri)
    except InvalidStorageURI as error:
        raise ValueError(str(error)) from error
    if "://" not in uri and not uri.startswith("/"):
        raise ValueError(f"{uri!r} is neither a URI nor an absolute path: write {STORAGE_URI_FORMS}")
    if location.scheme == "file" and not location.prefix.strip("/"):
        raise ValueError(f"{uri!r} names the root folder /: write the folder itself, e.g. file:///data/run-1")
    return uri


StorageURI = Annotated[str, AfterValidator(checked_uri), Field(json_schema_extra={"pattern": STORAGE_URI_PATTERN})]


class ApiModel(BaseModel):
    """Base of every spec model: camelCase on the wire, unknown fields refused, values validated on assignment."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=True,
        frozen=False,
        # JSON types as the API server checks them: no true for 1, no "8" for 8, no 3 for "3".
        strict=True,
    )


class EnvVar(ApiModel):
    """One environment variable of the training container, as in a Pod's ``env``."""

    name: str = Field(
        description="Variable name, e.g. WANDB_PROJECT.",
        pattern=ENV_NAME_PATTERN,
    )
    value: str | None = Field(default=None, description="Literal value. Leave out when valueFrom is set.")
    value_from: FreeFormObject | None = Field(
        default=None,
        description="Where the value comes from (secretKeyRef, configMapKeyRef, fieldRef), as in a Pod's env.",
    )


class PodMetadata(ApiModel):
    """Extra labels and annotations for every replica pod."""

    labels: LabelMap = Field(default_factory=dict, description="Labels added to every replica pod.")
    annotations: AnnotationMap = Field(default_factory=dict, description="Annotations added to every replica pod.")


class CodeSource(ApiModel):
    """A snapshot of the user's code, uploaded by ``trainrun submit --code DIR``."""

    uri: StorageURI = Field(description="Object-storage URI of the code snapshot (a folder), e.g. s3://bucket/code/run-1/.")
    mount_path: AbsolutePath = Field(
        default="/workspace/code",
        description="Where the replicas find the code; it becomes the working directory unless workingDir is set.",
    )


class Hyperparameters(ApiModel):
    """Settings of the training program, passed as ``--flag value`` arguments and ``TRAINRUN_*`` env vars."""

    model: Literal["mlp", "cnn", "resnet18", "resnet34", "resnet50", "densenet121"] | None = Field(
        default=None,
        description="Network to train. Default: mlp for fashion-mnist, cnn for cifar10, resnet18 otherwise.",
    )
    dataset: Literal["synthetic", "fashion-mnist", "cifar10", "imagefolder"] = Field(
        default="synthetic",
        description="Training data: synthetic (made from the seed), fashion-mnist, cifar10, or imagefolder "
        "(a labelled folder with train/ and val/).",
    )
    data_dir: str | None = Field(
        default=None,
        description="Folder holding the dataset inside the container (an input's path, for example).",
    )
    epochs: int = Field(default=5, ge=1, le=100000, description="Number of passes over the training data.")
    batch_size: int = Field(default=16, ge=1, le=65536, description="Batch size of each process.")
    learning_rate: float = Field(
        default=0.001, gt=0, le=10, description="Base learning rate; the program scales it by the world size."
    )
    warmup_epochs: int = Field(default=0, ge=0, description="Epochs of linear learning-rate warm-up.")
    seed: int = Field(default=1, ge=0, description="Random seed for data order and initial weights.")
    patience: int = Field(
        default=3, ge=0, description="Stop early after this many epochs without a lower validation loss; 0 turns it off."
    )
    print_frequency: int = Field(default=10, ge=1, description="Log a metric line every this many steps.")
    pretrained: bool = Field(default=False, description="Start from pretrained torchvision weights (transfer learning).")
    extra: dict[str, str] = Field(
        default_factory=dict,
        description="Further flags for a custom program: each key becomes --key value.",
    )

    @field_validator("extra")
    @classmethod
    def _extra_keys_are_flags(cls, extra: dict[str, str]) -> dict[str, str]:
        for key in extra:
            if not re.fullmatch(r"[a-zA-Z][-a-zA-Z0-9_]*", key):
                raise ValueError(f"key {key!r} is not a flag name: use letters, digits, '-' and '_', e.g. 'dropout'")
        return extra


class Distribution(ApiModel):
    """How many replicas and processes train together."""

    workers: int = Field(
        default=1, ge=0, le=1024, description="Worker replicas beside the single Master (0 trains on the Master alone)."
    )
    nproc_per_node: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Processes per replica, started by torchrun. Default: the GPUs per replica, or 1 on CPU.",
    )


class Toleration(ApiModel):
    """A Pod toleration, as in the Pod spec (and as the API server checks it)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": TOLERATION_RULES})

    key: QualifiedNameValue | None = Field(
        default=None, description="Taint key to tolerate; empty with Exists tolerates all."
    )
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: LabelValue | None = Field(default=None, description="Taint value for Equal; empty for Exists.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate; empty tolerates all."
    )
    toleration_seconds: int | None = Field(default=None, description="For NoExecute: how long the pod stays bound.")

    @model_validator(mode="after")
    def _as_the_api_server_checks_it(self) -> Toleration:
        problems = toleration_problems(self.key, self.operator, self.value, self.effect, self.toleration_seconds)
        if problems:
            raise ValueError("; ".join(problems))
        return self


class Resources(ApiModel):
    """Compute per replica and where it runs."""

    pool: str | None = Field(
        default=None,
        description="Node pool by name, from the operator's configuration (ConfigMap trainrun-operator-config). "
        "It sets nodeSelector, tolerations, affinity and the GPU resource name. Default: the configured defaultPool.",
        pattern=DNS_LABEL_PATTERN,
    )
    gpus: int = Field(default=0, ge=0, le=64, description="GPUs per replica (a whole number).")
    cpu: Quantity | None = Field(default=None, description="CPU per replica, e.g. 8 or 7500m (request = limit).")
    memory: Quantity | None = Field(default=None, description="Memory per replica, e.g. 64Gi (request = limit).")
    gpu_resource: ResourceName | None = Field(
        default=None, description="Extended resource name of the GPU, overriding the pool's (e.g. amd.com/gpu)."
    )
    node_selector: LabelMap = Field(
        default_factory=dict, description="Node labels the replicas need, added to (and overriding) the pool's."
    )
    tolerations: list[Toleration] = Field(default_factory=list, description="Tolerations added to the pool's.")
    affinity: FreeFormObject | None = Field(default=None, description="Pod affinity; replaces the pool's when set.")
    priority_class_name: ObjectName | None = Field(default=None, description="PriorityClass of the replica pods.")
    queue: str | None = Field(
        default=None,
        pattern=OBJECT_NAME_PATTERN,
        max_length=LABEL_VALUE_MAX,
        description="Kueue LocalQueue: the job is created suspended with label kueue.x-k8s.io/queue-name and "
        "Kueue admits it.",
    )


class RunPolicy(ApiModel):
    """Retries, limits and clean-up, as the PyTorchJob's runPolicy; hangs and whole-run restarts by cause."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.restartOn) || !has(self.failOn) || self.failOn.all(c, !(c in self.restartOn))",
                    "message": "a cause is in both spec.runPolicy.restartOn and failOn; list each cause in one of them",
                }
            ]
        }
    )

    backoff_limit: int = Field(default=3, ge=0, le=1000, description="Pod restarts allowed before the run fails.")
    restart_policy: Literal["OnFailure", "Never", "ExitCode", "Always"] = Field(
        default="OnFailure",
        description="When a failed replica is restarted: OnFailure, Never, ExitCode (only exit codes >= 128), Always.",
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Fail the run after this many seconds of running."
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete the PyTorchJob this many seconds after it finished."
    )
    clean_pod_policy: Literal["None", "Running", "All"] = Field(
        default="None", description="Pods deleted when the job finishes: None, Running, All."
    )
    suspend: bool = Field(
        default=False, description="Pause the run: its pods are deleted; false again restarts them from checkpoints."
    )
    hang_timeout_seconds: int = Field(
        default=1800,
        ge=10,
        le=604800,
        description="A run whose replicas run but whose step (or, before the first step, whose log) has not moved "
        "for this long is hung; before the first step the limit is 3 times this (start-up, data loading).",
    )
    on_hang: Literal["Report", "Restart", "Fail"] = Field(
        default="Report",
        description="What a hang does: Report (a Stalled condition and an Event), Restart (the whole run, from "
        "its last checkpoint; counts against maxRestarts) or Fail.",
    )
    restart_on: list[FailureCause] = Field(
        default_factory=lambda: list(DEFAULT_RESTART_ON),
        max_length=len(FAILURE_CAUSES),
        description="Failure causes that restart the whole run from its last checkpoint (a new PyTorchJob): "
        + ", ".join(FAILURE_CAUSES)
        + ". Default: NodeLost, Preempted, Evicted.",
    )
    fail_on: list[FailureCause] = Field(
        default_factory=list,
        max_length=len(FAILURE_CAUSES),
        description="Failure causes that fail the run at once, never retried (not even by backoffLimit): "
        + ", ".join(FAILURE_CAUSES)
        + ".",
    )
    max_restarts: int = Field(
        default=3, ge=0, le=100, description="Whole-run restarts (restartOn, onHang: Restart) before the run fails."
    )
    restart_backoff_seconds: int = Field(
        default=30,
        ge=0,
        le=3600,
        description="Wait before the first restart's new PyTorchJob; doubled for each later restart (at most 1 hour).",
    )

    @model_validator(mode="after")
    def _causes_apart(self) -> RunPolicy:
        both = sorted(set(self.restart_on) & set(self.fail_on))
        if both:
            raise ValueError(
                f"spec.runPolicy: {', '.join(both)} is in both restartOn and failOn; list each cause in one of them"
            )
        return self


class Input(ApiModel):
    """A dataset staged into the replicas before training starts."""

    name: str = Field(description="Name of the input.", pattern=DNS_LABEL_PATTERN)
    uri: StorageURI = Field(description="Object-storage URI of a file or folder, e.g. s3://datasets/fashion-mnist/.")
    path: AbsolutePath | None = Field(
        default=None, description="Where the replicas find it. Default: /inputs/<name>. Exported as INPUT_<NAME>."
    )


class OutputVolume(ApiModel):
    """The volume at $OUTPUT_DIR on the Master, copied to the output URI after training."""

    size: Quantity = Field(default="10Gi", description="Size of the per-run PersistentVolumeClaim.")
    storage_class_name: ObjectName | None = Field(
        default=None, description="StorageClass of the claim; the cluster default if unset."
    )
    claim_name: ObjectName | None = Field(
        default=None, description="Use this existing PersistentVolumeClaim instead of creating one per run."
    )


# A registered model's name: letters, digits, '-', '_' and '.', as every model registry accepts them
# (MLflow's names are freer; these are also safe in a URL path and a filter string).
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# A registry or tracking key of the operator configuration (``registries``).
REGISTRY_KEY_PATTERN = DNS_LABEL_PATTERN
TAG_KEY_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$"


def _checked_model_path(path: str) -> str:
    """A path inside the copied outputs: relative, '/'-separated, no '.' or '..' and no empty part."""
    parts = path.rstrip("/").split("/")
    if path.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(
            f"{path!r} is not a path inside the outputs: write it relative to $OUTPUT_DIR, '/'-separated, "
            "without '.' or '..', e.g. model.pt or triton/quickstart"
        )
    return path.rstrip("/")


class Registration(ApiModel):
    """The trained model, registered as a new version of a named model once its copy is verified."""

    name: str = Field(
        min_length=1,
        max_length=200,
        pattern=MODEL_NAME_PATTERN,
        description="Registered model name, e.g. pytorch-birds: each completed run adds a version of it.",
    )
    registry: str | None = Field(
        default=None,
        max_length=63,
        pattern=REGISTRY_KEY_PATTERN,
        description="A registry of the operator configuration (registries), by key. Default: its defaultRegistry.",
    )
    path: Annotated[str, AfterValidator(_checked_model_path)] | None = Field(
        default=None,
        max_length=1024,
        json_schema_extra={"pattern": r"^[^/]"},
        description="The file or folder inside the outputs that is the model, e.g. model.pt or triton/quickstart. "
        "Default: the whole output. It must be in the copy's manifest.",
    )
    description: str | None = Field(default=None, max_length=5000, description="The new version's description.")
    tags: dict[str, str] = Field(
        default_factory=dict,
        max_length=MAX_MAP_ENTRIES,
        description="Tags of the new version, beside the ones the operator sets (trainrun.*: run, image, digest, metrics).",
    )

    @field_validator("tags")
    @classmethod
    def _tag_keys(cls, tags: dict[str, str]) -> dict[str, str]:
        for key in tags:
            if not re.fullmatch(TAG_KEY_PATTERN, key) or len(key) > 250:
                raise ValueError(f"tag key {key!r} is not valid: letters, digits, '_', '.', '/' and '-', at most 250, e.g. team")
            if key.startswith("trainrun."):
                raise ValueError(f"tag key {key!r}: keys starting with trainrun. are the operator's own; choose another")
        return tags


class Tracking(ApiModel):
    """This run in an experiment tracker: params, the metric series and its final status (see the README)."""

    registry: str | None = Field(
        default=None,
        max_length=63,
        pattern=REGISTRY_KEY_PATTERN,
        description="A registry of the operator configuration (registries), by key. Default: the configuration's "
        "tracking.registry, else its defaultRegistry.",
    )
    experiment: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="Experiment name. Default: the configuration's tracking.experiment, else the run's namespace.",
    )
    enabled: bool = Field(default=True, description="false: this run is not tracked, even when the configuration tracks every run.")


class Output(ApiModel):
    """Where the model artifacts and logs go."""

    uri: StorageURI | None = Field(
        default=None,
        description="Object-storage URI for artifacts and logs: s3://, gs://, az://, file:// or an absolute path.",
    )
    secret_name: ObjectName | None = Field(
        default=None,
        description="Secret in the same namespace holding storage credentials as env keys: S3's "
        "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL), GCS's (GOOGLE_SERVICE_ACCOUNT_KEY: a service "
        "account's JSON) or Azure's (AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY or "
        "AZURE_STORAGE_SAS_TOKEN, or AZURE_STORAGE_CONNECTION_STRING); AWS_CA_BUNDLE for a private CA.",
    )
    copy_on_failure: bool = Field(default=False, description="Also copy $OUTPUT_DIR when training fails (checkpoints).")
    keep_volume: bool = Field(default=False, description="Keep the output volume after a verified copy.")
    volume: OutputVolume = Field(default_factory=OutputVolume, description="The output volume.")
    registration: Registration | None = Field(
        default=None,
        alias="register",
        description="Register the model in a model registry once its copy is verified, before the run is Completed "
        "(status.model says which version).",
    )


class MetricDefinition(ApiModel):
    """A metric read from the logs with a regular expression, as SageMaker's metric definitions."""

    name: str = Field(description="Metric name, e.g. val_loss.", pattern=r"^[A-Za-z_][A-Za-z0-9_./-]*$")
    regex: str = Field(
        description="Python regular expression; its group 'value' (or its first group) is the number, "
        "e.g. 'val_loss=([0-9.eE+-]+)'."
    )

    @field_validator("regex")
    @classmethod
    def _regex_has_value_group(cls, regex: str) -> str:
        try:
            compiled = re.compile(regex)
        except Exception as error:  # noqa: BLE001 - not only re.error: x{99999999999} raises OverflowError
            raise ValueError(f"is not a valid regular expression ({error}); escape special characters") from error
        if compiled.groups == 0:
            raise ValueError("needs a capture group for the number, e.g. 'loss=([0-9.eE+-]+)'")
        return regex


class TrainingRunSpec(ApiModel):
    """What to train, with what, on which machines, and where the results go."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!(has(self.command) && has(self.script))",
                    "message": "set either spec.command or spec.script, not both",
                },
                {
                    "rule": "!has(self.distribution) || !has(self.distribution.nprocPerNode) || "
                    "!has(self.resources) || !has(self.resources.gpus) || self.resources.gpus == 0 || "
                    "self.distribution.nprocPerNode <= self.resources.gpus",
                    "message": "spec.distribution.nprocPerNode must not exceed spec.resources.gpus "
                    "(one process per GPU)",
                },
                {
                    "rule": "!has(self.launcher) || self.launcher == 'torchrun' || "
                    "!has(self.distribution) || !has(self.distribution.nprocPerNode) || "
                    "self.distribution.nprocPerNode == 1",
                    "message": "spec.distribution.nprocPerNode > 1 needs spec.launcher: torchrun",
                },
            ]
        }
    )

    image: Annotated[str, AfterValidator(_checked_image)] = Field(
        min_length=1,
        json_schema_extra={"pattern": IMAGE_PATTERN},
        description="Container image of every replica, e.g. ghcr.io/acme/trainer:1.0 "
        f"({DEFAULT_IMAGE_NOTE} runs the built-in program). Ignored by --local.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="When the kubelet pulls the image."
    )
    image_pull_secrets: list[ObjectName] = Field(default_factory=list, description="Secrets for a private registry.")
    command: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Program and arguments to run instead of the built-in trainer, e.g. [python, train.py].",
    )
    script: str | None = Field(
        default=None,
        min_length=1,
        description="A Python script to run (relative to workingDir), instead of the built-in trainer.",
    )
    args: list[str] = Field(default_factory=list, description="Arguments after the program and before the hyperparameter flags.")
    launcher: Literal["torchrun", "none"] = Field(
        default="torchrun",
        description="torchrun starts nprocPerNode processes per replica and sets RANK, WORLD_SIZE and LOCAL_RANK; "
        "none runs the program directly (one process per replica).",
    )
    working_dir: AbsolutePath | None = Field(
        default=None, description="Working directory of the training program (an absolute path)."
    )
    env: list[EnvVar] = Field(default_factory=list, description="Extra environment variables of the training program.")
    env_from: list[FreeFormObject] = Field(
        default_factory=list, description="Sources of environment variables (secretRef, configMapRef), as in a Pod."
    )
    code: CodeSource | None = Field(default=None, description="Code snapshot made available before training starts.")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters, description="Settings of the training program.")
    distribution: Distribution = Field(default_factory=Distribution, description="Replicas and processes.")
    resources: Resources = Field(default_factory=Resources, description="Compute per replica and node pool.")
    run_policy: RunPolicy = Field(default_factory=RunPolicy, description="Retries, deadlines, clean-up, suspend.")
    inputs: list[Input] = Field(default_factory=list, description="Datasets staged in before training.")
    output: Output = Field(default_factory=Output, description="Where artifacts and logs go.")
    metrics: list[MetricDefinition] = Field(
        default_factory=list,
        description="Metrics read from the logs by regular expression, beside the trainrun:metric lines.",
    )
    pod_metadata: PodMetadata = Field(default_factory=PodMetadata, description="Labels and annotations of replica pods.")
    tracking: Tracking | None = Field(
        default=None,
        description="Track this run in an experiment tracker (an MLflow run): where, or enabled: false to opt out "
        "of the configuration's tracking.",
    )
    cancel: bool = Field(
        default=False,
        description="Stop the run for good: replicas are stopped, logs archived, and the phase becomes Cancelled.",
    )

    @field_validator("env", "inputs")
    @classmethod
    def _names_unique(cls, items: list[EnvVar] | list[Input]) -> list[EnvVar] | list[Input]:
        names = [item.name for item in items]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"names {duplicates} appear more than once; give each entry its own name")
        return items

    @model_validator(mode="after")
    def _cross_field_rules(self) -> TrainingRunSpec:
        if self.command is not None and self.script is not None:
            raise ValueError("set either spec.command or spec.script, not both")
        nproc = self.distribution.nproc_per_node
        if nproc is not None and self.resources.gpus > 0 and nproc > self.resources.gpus:
            raise ValueError(
                f"spec.distribution.nprocPerNode ({nproc}) exceeds spec.resources.gpus ({self.resources.gpus}): "
                "run at most one process per GPU"
            )
        if self.launcher == "none" and nproc is not None and nproc > 1:
            raise ValueError("spec.distribution.nprocPerNode > 1 needs spec.launcher: torchrun")
        return self

    @property
    def processes_per_replica(self) -> int:
        """nprocPerNode, defaulting to the GPUs per replica, or 1 on CPU."""
        if self.distribution.nproc_per_node is not None:
            return self.distribution.nproc_per_node
        return max(self.resources.gpus, 1)

    @property
    def replica_count(self) -> int:
        """The Master plus the Workers."""
        return 1 + self.distribution.workers

    @property
    def world_size(self) -> int:
        """Processes in the whole run."""
        return self.replica_count * self.processes_per_replica


class ObjectMeta(BaseModel):
    """The parts of metadata the operator reads."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)

    name: str = Field(
        min_length=1,
        max_length=52,
        pattern=DNS_LABEL_PATTERN,
        description="Run name; children are named after it.",
    )
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class TrainingRun(BaseModel):
    """A whole TrainingRun object: apiVersion, kind, metadata and spec (status is not read from here)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, alias_generator=to_camel)

    api_version: Literal["trainrun.dev/v1alpha1"] = Field(default="trainrun.dev/v1alpha1")
    kind: Literal["TrainingRun"] = Field(default="TrainingRun")
    metadata: ObjectMeta
    spec: TrainingRunSpec

