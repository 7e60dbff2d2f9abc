"""The TrainingRun and TrainingSweep CustomResourceDefinitions, generated from the pydantic models.

``trainrun crd`` prints them and ``crds/trainrun.dev_trainingruns.yaml`` and
``crds/trainrun.dev_trainingsweeps.yaml`` are its committed output (a test fails when they differ), so the
schema, its descriptions (what ``kubectl explain`` shows), defaults, enums, minimums and CEL rules can
never drift from the code that reads the spec. Pure.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from trainrun.spec.model import GROUP, KIND, PLURAL, SHORT_NAMES, VERSION, TrainingRunSpec
from trainrun.spec.status import TrainingRunStatus
from trainrun.spec.sweep import MAX_SWEEP_NAME, SWEEP_KIND, SWEEP_PLURAL, SWEEP_SHORT_NAMES, TrainingSweepSpec
from trainrun.spec.sweepstatus import TrainingSweepStatus

JsonSchema = dict[str, Any]

# JSON-Schema keywords that a Kubernetes structural schema accepts as they are.
_KEPT_KEYWORDS = {
    "type",
    "description",
    "default",
    "enum",
    "format",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "maxProperties",
    "pattern",
    "nullable",
    "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-map-type",
}

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Where the run stands."},
    {"name": "Pool", "type": "string", "jsonPath": ".status.pool", "description": "Node pool."},
    {"name": "Workers", "type": "integer", "jsonPath": ".spec.distribution.workers", "description": "Workers beside the Master."},
    {"name": "GPUs", "type": "integer", "jsonPath": ".spec.resources.gpus", "description": "GPUs per replica."},
    {"name": "Metric", "type": "string", "jsonPath": ".status.keyMetric", "description": "Latest key metric."},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress.summary", "description": "Percent done (or the step)."},
    {"name": "ETA", "type": "string", "jsonPath": ".status.progress.eta", "description": "When training should end."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Job", "type": "string", "jsonPath": ".status.jobName", "priority": 1, "description": "The PyTorchJob."},
    {"name": "Model", "type": "string", "jsonPath": ".status.model.name", "priority": 1, "description": "The registered model."},
    {"name": "Version", "type": "string", "jsonPath": ".status.model.version", "priority": 1, "description": "Its version from this run."},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1, "description": "What is happening."},
]


SWEEP_PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Where the sweep stands."},
    {"name": "Trials", "type": "string", "jsonPath": ".status.trialsSummary", "description": "done/running/pruned/failed of maxTrials."},
    {"name": "Best", "type": "string", "jsonPath": ".status.bestSummary", "description": "The best trial: metric=value (trial)."},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress", "description": "Share of maxTrials finished."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Algorithm", "type": "string", "jsonPath": ".spec.algorithm", "priority": 1, "description": "The sampler."},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1, "description": "What is happening."},
]


def structural_schema(schema: JsonSchema, definitions: dict[str, JsonSchema]) -> JsonSchema:
    """Turn one pydantic JSON schema node into a Kubernetes structural OpenAPI v3 node ($refs inlined)."""
    node = dict(schema)
    if "$ref" in node:
        referenced = definitions[node.pop("$ref").split("/")[-1]]
        # The property's own description is more specific than the referenced model's docstring.
        node = {**referenced, **node}
    if "allOf" in node and len(node["allOf"]) == 1:
        node = {**node.pop("allOf")[0], **node}
        return structural_schema(node, definitions)
    if "anyOf" in node:
        variants = [variant for variant in node.pop("anyOf") if variant.get("type") != "null"]
        types = {variant.get("type") for variant in variants}
        if types == {"integer", "string"}:
            node["x-kubernetes-int-or-string"] = True
        elif len(variants) == 1:
            merged = structural_schema(variants[0], definitions)
            merged.update({key: value for key, value in node.items() if key in ("description", "default")})
            node = merged
        else:
            raise ValueError(f"no structural form for a union of {sorted(map(str, types))}")
    if "$ref" in node or "anyOf" in node:
        return structural_schema(node, definitions)
    if "patternProperties" in node:
        # What pydantic writes for a map whose key type has a pattern: a CRD checks keys with CEL instead.
        raise ValueError("no structural form for patternProperties: check a map's keys with x-kubernetes-validations")
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if not isinstance(node.get("exclusiveMinimum", True), bool):
        # JSON Schema 2020 writes a number; OpenAPI v3 (Kubernetes) writes minimum + a boolean (an optional
        # field's node comes here converted already).
        node["minimum"] = node.pop("exclusiveMinimum")
        node["exclusiveMinimum"] = True
    converted: JsonSchema = {key: value for key, value in node.items() if key in _KEPT_KEYWORDS}
    if "exclusiveMinimum" in node:
        converted["exclusiveMinimum"] = True
    if converted.get("default", 0) is None:
        del converted["default"]
    if "properties" in node:
        converted["type"] = "object"
        converted["properties"] = {
            name: structural_schema(child, definitions) for name, child in node["properties"].items()
        }
        if node.get("required"):
            converted["required"] = list(node["required"])
    elif isinstance(node.get("additionalProperties"), dict):
        converted["additionalProperties"] = structural_schema(node["additionalProperties"], definitions)
    elif node.get("type") == "object" and "x-kubernetes-preserve-unknown-fields" not in converted:
        converted["x-kubernetes-preserve-unknown-fields"] = True
    if "items" in node:
        converted["items"] = structural_schema(node["items"], definitions)
    return converted


def model_schema(model: type[BaseModel]) -> JsonSchema:
    """The structural schema of one pydantic model."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    definitions = schema.pop("$defs", {})
    return structural_schema(schema, definitions)


def without_defaults(schema: JsonSchema) -> JsonSchema:
    """The object schema with its properties' defaults moved into their descriptions (``Default: 5.``).

    For the hyperparameters: an API server that filled them in would make every default look chosen by
    the user, and a custom program is told only what the user chose (``trainrun.render``); the operator
    applies the same defaults itself for the built-in trainer.
    """
    properties = {}
    for name, child in schema["properties"].items():
        child = dict(child)
        if "default" in child:
            child["description"] = f"{child['description']} Default: {json.dumps(child.pop('default'))}."
        properties[name] = child
    return {**schema, "properties": properties}


def training_run_crd() -> dict[str, Any]:
    """The TrainingRun CRD object, ready for ``kubectl apply --server-side``."""
    spec_schema = model_schema(TrainingRunSpec)
    spec_schema["properties"]["hyperparameters"] = without_defaults(spec_schema["properties"]["hyperparameters"])
    return _crd(
        kind=KIND,
        plural=PLURAL,
        short_names=SHORT_NAMES,
        columns=PRINTER_COLUMNS,
        description="A TrainingRun trains a PyTorch model as a Kubeflow PyTorchJob (one Master, N Workers) on a GPU "
        "node pool, follows its logs and metrics, and copies the model artifacts to object storage when it succeeds.",
        spec=spec_schema,
        status=model_schema(TrainingRunStatus),
        name_limit=(52, "children are named after it"),
    )


def training_sweep_crd() -> dict[str, Any]:
    """The TrainingSweep CRD object, ready for ``kubectl apply --server-side``."""
    spec_schema = model_schema(TrainingSweepSpec)
    template = spec_schema["properties"]["template"]
    template["properties"]["hyperparameters"] = without_defaults(template["properties"]["hyperparameters"])
    return _crd(
        kind=SWEEP_KIND,
        plural=SWEEP_PLURAL,
        short_names=SWEEP_SHORT_NAMES,
        columns=SWEEP_PRINTER_COLUMNS,
        description="A TrainingSweep tunes the hyperparameters of a TrainingRun template: it runs trials (TrainingRuns "
        "named <sweep>-<n>) with the parameters an Optuna sampler suggests, stops losing trials early, and reports "
        "the best.",
        spec=spec_schema,
        status=model_schema(TrainingSweepStatus),
        name_limit=(MAX_SWEEP_NAME, "trials are named <sweep>-<n>"),
    )


def _crd(
    *,
    kind: str,
    plural: str,
    short_names: list[str],
    columns: list[dict[str, Any]],
    description: str,
    spec: JsonSchema,
    status: JsonSchema,
    name_limit: tuple[int, str],
) -> dict[str, Any]:
    """A CRD of this group with one served version, a status subresource and a limit on the name's length."""
    most, why = name_limit
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "trainrun", "app.kubernetes.io/part-of": "trainrun"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": ["all", "kubeflow", "training"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string", "description": "trainrun.dev/v1alpha1"},
                                "kind": {"type": "string", "description": kind},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                            "x-kubernetes-validations": [
                                {
                                    "rule": f"size(self.metadata.name) <= {most}",
                                    "message": f"metadata.name must be at most {most} characters ({why})",
                                }
                            ],
                        }
                    },
                }
            ],
        },
    }
