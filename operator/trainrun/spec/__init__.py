"""The TrainingRun and TrainingSweep APIs: parse a document, apply defaults, validate it against the
operator's pools, and name the legal values that are probably slips (``suspicious_values``: warnings).

The one entry point every caller uses (operator, ``trainrun validate``, ``trainrun render``, the local
runner), so a file is judged the same way everywhere. Pure.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import ValidationError

from trainrun.base.redact import redact
from trainrun.base.uri import parse_uri
from trainrun.spec.config import NamespacePolicy, OperatorConfig, Pool, parse_operator_config
from trainrun.spec.errors import FieldProblem, InvalidTrainingRun, InvalidTrainingSweep, problems_from_validation_error
from trainrun.spec.model import API_VERSION, KIND, LOCAL_IMAGE, TrainingRun, TrainingRunSpec
from trainrun.spec.suspicious import suspicious_values
from trainrun.spec.sweep import SWEEP_KIND, TrainingSweep, sweep_problems


def load_training_run(document: Mapping[str, Any], *, local: bool = False) -> TrainingRun:
    """Parse a TrainingRun document (apiVersion, kind, metadata, spec) with defaults applied.

    local: the run is for this machine (``--local``), where spec.image is not used: a spec without one
    reads as ``LOCAL_IMAGE``. Elsewhere a missing image is a problem that says so."""
    problems = _header_problems(document, KIND)
    if problems:
        raise InvalidTrainingRun(problems)
    body = {key: document[key] for key in ("apiVersion", "kind", "metadata", "spec") if key in document}
    spec = body.get("spec")
    if local and isinstance(spec, Mapping) and "image" not in spec:
        body["spec"] = {**spec, "image": LOCAL_IMAGE}
    try:
        return TrainingRun.model_validate(body)
    except ValidationError as error:
        raise InvalidTrainingRun([_image_hint(problem) for problem in problems_from_validation_error(error)]) from None


# The metadata fields a TrainingRun keeps for the operator's passes (spec.model.ObjectMeta's own): the rest (its
# resourceVersion, managedFields, ...) changes with every status write and is not read.
_PASS_METADATA = ("name", "namespace", "uid", "generation", "labels", "annotations")
# The runs parsed for passes that something still holds (a log follower, a tracker), by a digest of what was parsed.
_held_runs: weakref.WeakValueDictionary[bytes, TrainingRun] = weakref.WeakValueDictionary()


def load_training_run_for_pass(document: Mapping[str, Any]) -> TrainingRun:
    """:func:`load_training_run` for the operator's reconcile passes, which parse their run's document at every
    pass (8 or 9 in a run's life, most for a status write or a child's change): while the run parsed from the same
    spec and read metadata is still held (by its log follower, its tracker), that run is given again instead of
    a new parse (its readers do not change it), and no run is kept for this alone. Its metadata holds the read
    fields only. A document that does not parse raises as ever."""
    body = {key: document[key] for key in ("apiVersion", "kind", "metadata", "spec") if key in document}
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping):
        body["metadata"] = {key: metadata[key] for key in _PASS_METADATA if key in metadata}
    try:
        digest = hashlib.blake2b(orjson.dumps(body, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()
    except TypeError:  # not JSON's values (a document built in Python): parsed every time
        return load_training_run(body)
    run = _held_runs.get(digest)
    if run is None:
        run = _held_runs[digest] = load_training_run(body)
    return run


def load_training_sweep(document: Mapping[str, Any], *, local: bool = False) -> TrainingSweep:
    """Parse and check a TrainingSweep (apiVersion, kind, metadata, spec): its fields, then the rules across
    them (``trainrun.spec.sweep.sweep_problems``); raise InvalidTrainingSweep naming every field at fault.
    local: trials run on this machine, where the template needs no image (see :func:`load_training_run`)."""
    problems = _header_problems(document, SWEEP_KIND)
    if problems:
        raise InvalidTrainingSweep(problems)
    body = {key: document[key] for key in ("apiVersion", "kind", "metadata", "spec") if key in document}
    spec = body.get("spec")
    template = spec.get("template") if isinstance(spec, Mapping) else None
    if local and isinstance(spec, Mapping) and isinstance(template, Mapping) and "image" not in template:
        template = {**template, "image": LOCAL_IMAGE}
        body["spec"] = {**spec, "template": template}
    try:
        sweep = TrainingSweep.model_validate(body)
    except ValidationError as error:
        raise InvalidTrainingSweep(
            [_image_hint(problem, "spec.template.image") for problem in problems_from_validation_error(error)]
        ) from None
    assert isinstance(template, Mapping)  # the model took it: a mapping
    found = [FieldProblem(field, message) for field, message in sweep_problems(sweep, template)]
    if found:
        raise InvalidTrainingSweep(found)
    return sweep


def _header_problems(document: object, kind: str) -> list[FieldProblem]:
    """What is wrong with a document of KIND before its fields are read: not a mapping, or another
    apiVersion or kind (both said at once)."""
    if not isinstance(document, Mapping):
        return [FieldProblem("<root>", f"a {kind} must be a YAML mapping with apiVersion, kind, metadata and spec")]
    problems = []
    if document.get("apiVersion") != API_VERSION:
        problems.append(FieldProblem("apiVersion", f"must be {API_VERSION}; got {document.get('apiVersion')!r}"))
    if document.get("kind") != kind:
        problems.append(FieldProblem("kind", f"must be {kind}; got {document.get('kind')!r}"))
    return problems


def _image_hint(problem: FieldProblem, field: str = "spec.image") -> FieldProblem:
    """A missing spec.image says where it is needed: a run on this machine goes without."""
    if problem.field == field and problem.message == "is required":
        return FieldProblem(problem.field, "is required on a cluster (trainrun run --local needs none)")
    return problem


def problems_with_config(run: TrainingRun, config: OperatorConfig, *, local: bool = False) -> list[FieldProblem]:
    """What stops this run from being placed with this operator configuration: an unknown pool, too many
    GPUs, or a pool or output URI its namespace may not use (``namespaces`` in the config)."""
    registry_problems = problems_with_registries(run, config, local=local)
    policy = config.namespaces.get(run.metadata.namespace)
    if policy is not None:
        problems = _problems_with_namespace_policy(run, config, policy)
        if problems:
            return [*problems, *registry_problems]
    return [*_problems_with_pool(run, config), *registry_problems]


def problems_with_registries(run: TrainingRun, config: OperatorConfig, *, local: bool = False) -> list[FieldProblem]:
    """A registry the run names (spec.output.register, spec.tracking) that the configuration does not have,
    or a registration with nothing to register (no spec.output.uri on a cluster: no verified copy)."""
    problems: list[FieldProblem] = []
    known = ", ".join(sorted(config.registries)) or "none are configured"
    register = run.spec.output.registration
    if register is not None:
        key, registry = config.registry_named(register.registry)
        where = "spec.output.register.registry"
        if key is None:
            problems.append(
                FieldProblem(where, f"names no registry and the operator configuration has no defaultRegistry; name one of: {known}")
            )
        elif registry is None:
            problems.append(FieldProblem(where, f"unknown registry {key!r}; the operator knows: {known} (ConfigMap trainrun-operator-config, registries)"))
        if run.spec.output.uri is None and not local:
            problems.append(
                FieldProblem(
                    "spec.output.register",
                    "needs spec.output.uri: the version points to the verified copy of the outputs; set spec.output.uri "
                    "(and secretName), or leave spec.output.register out",
                )
            )
    tracking = run.spec.tracking
    if tracking is not None and tracking.enabled and tracking.registry is not None and tracking.registry not in config.registries:
        problems.append(
            FieldProblem("spec.tracking.registry", f"unknown registry {tracking.registry!r}; the operator knows: {known} (ConfigMap trainrun-operator-config, registries)")
        )
    elif tracking is not None and tracking.enabled and tracking_registry(run, config) is None:
        problems.append(
            FieldProblem("spec.tracking", f"names no registry and the operator configuration has no default; name one of: {known}")
        )
    return problems


def tracking_registry(run: TrainingRun, config: OperatorConfig) -> tuple[str, str] | None:
    """(registry key, experiment) where this run is tracked, or None when it is not: spec.tracking, else the
    configuration's tracking; an experiment defaults to the run's namespace."""
    own = run.spec.tracking
    if own is not None and not own.enabled:
        return None
    platform = config.tracking
    if own is None and platform is None:
        return None
    key = (own.registry if own is not None else None) or (platform.registry if platform is not None else None) or config.default_registry
    if key is None or key not in config.registries:
        return None
    experiment = (own.experiment if own is not None else None) or (platform.experiment if platform is not None else None)
    return key, experiment or run.metadata.namespace


def _problems_with_namespace_policy(run: TrainingRun, config: OperatorConfig, policy: NamespacePolicy) -> list[FieldProblem]:
    namespace = run.metadata.namespace
    problems: list[FieldProblem] = []
    pool_name, _ = config.pool_named(run.spec.resources.pool)
    if policy.pools is not None and pool_name is not None and pool_name not in policy.pools:
        allowed = ", ".join(policy.pools) or "none"
        field = "spec.resources.pool" if run.spec.resources.pool is not None else "spec.resources.pool (the default pool)"
        problems.append(
            FieldProblem(field, f"pool {pool_name!r} is not open to namespace {namespace!r}; it may use: {allowed}")
        )
    uri = run.spec.output.uri
    if policy.output_uri_prefixes is not None and uri is not None:
        if not any(uri_is_under(uri, prefix) for prefix in policy.output_uri_prefixes):
            allowed = ", ".join(policy.output_uri_prefixes) or "none"
            problems.append(
                FieldProblem(
                    "spec.output.uri",
                    f"{redact(uri)} is outside the output locations of namespace {namespace!r}: {allowed}",
                )
            )
    return problems


def uri_is_under(uri: str, prefix: str) -> bool:
    """``s3://models/a/x`` is under ``s3://models/a`` and ``s3://models/a/``; ``s3://models/ab`` is not."""
    base = prefix.rstrip("/")
    return uri.rstrip("/") == base or uri.startswith(base + "/")


def _problems_with_pool(run: TrainingRun, config: OperatorConfig) -> list[FieldProblem]:
    resources = run.spec.resources
    pool_name, pool = config.pool_named(resources.pool)
    if resources.pool is not None and pool is None:
        known = ", ".join(sorted(config.pools)) or "none are configured"
        return [
            FieldProblem(
                "spec.resources.pool",
                f"unknown pool {resources.pool!r}; the operator knows: {known} "
                f"(ConfigMap trainrun-operator-config)",
            )
        ]
    if pool is None or pool.gpus_per_node is None:
        return []
    if resources.gpus > pool.gpus_per_node:
        return [
            FieldProblem(
                "spec.resources.gpus",
                f"{resources.gpus} GPUs per replica, but nodes of pool {pool_name!r} have {pool.gpus_per_node}; "
                f"ask for at most {pool.gpus_per_node} and add workers instead",
            )
        ]
    return []


def storage_problems(run: TrainingRun) -> list[FieldProblem]:
    """Storage URIs a cluster run cannot use whatever the store says: an Azure URI that names no account when
    the run names no Secret to give one (its uploader and stage-in containers get their variables from
    spec.output.secretName alone, and Azure's workload identity names no account)."""
    if run.spec.output.secret_name is not None:
        return []
    uris = [
        ("spec.output.uri", run.spec.output.uri),
        ("spec.code.uri", run.spec.code.uri if run.spec.code is not None else None),
        *((f"spec.inputs[{index}].uri", item.uri) for index, item in enumerate(run.spec.inputs)),
    ]
    problems = []
    for field, uri in uris:
        location = parse_uri(uri) if uri is not None else None
        if location is not None and location.scheme == "az" and location.account is None:
            problems.append(
                FieldProblem(
                    field,
                    f"{redact(location.uri)} names no Azure storage account and the run names no Secret that could: "
                    f"write {location.bucket}@ACCOUNT.blob.core.windows.net in place of {location.bucket!r}, or set "
                    "spec.output.secretName to a Secret with AZURE_STORAGE_ACCOUNT_NAME (or AZURE_STORAGE_CONNECTION_STRING)",
                )
            )
    return problems


def validate_training_run(
    document: Mapping[str, Any], config: OperatorConfig | None = None, *, local: bool = False
) -> TrainingRun:
    """Parse and check a TrainingRun; raise InvalidTrainingRun naming every field at fault. local: judged
    for this machine (see :func:`load_training_run`)."""
    run = load_training_run(document, local=local)
    problems = [] if local else storage_problems(run)  # a local run's stores use the shell's own variables
    if config is not None:
        problems += problems_with_config(run, config, local=local)
    if problems:
        raise InvalidTrainingRun(problems)
    return run


__all__ = [
    "FieldProblem",
    "InvalidTrainingRun",
    "InvalidTrainingSweep",
    "LOCAL_IMAGE",
    "NamespacePolicy",
    "OperatorConfig",
    "Pool",
    "TrainingRun",
    "TrainingRunSpec",
    "TrainingSweep",
    "load_training_run",
    "load_training_run_for_pass",
    "load_training_sweep",
    "parse_operator_config",
    "problems_with_config",
    "problems_with_registries",
    "storage_problems",
    "tracking_registry",
    "suspicious_values",
    "validate_training_run",
]
