"""Which spec changes a running PyTorchJob cannot take, found by comparing two TrainingRun specs.

The operator stores the spec a PyTorchJob was rendered from in an annotation of the job; on each
reconcile it compares that with the current spec. Changes to these paths are applied at once; any
other change waits for the job's pods to be gone (suspend, then resume) and is reported in
``status.pendingChanges`` meanwhile, never dropped in silence. Pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

APPLIED_SPEC_ANNOTATION = "trainrun.dev/applied-spec"

# Spec paths a live job takes without new pods: run-policy limits, suspend/cancel, and settings the
# operator itself reads later (metrics regexes, the copy's options, hangs and restarts).
LIVE_PATHS = (
    "spec.runPolicy.suspend",
    "spec.runPolicy.backoffLimit",
    "spec.runPolicy.activeDeadlineSeconds",
    "spec.runPolicy.ttlSecondsAfterFinished",
    "spec.runPolicy.hangTimeoutSeconds",
    "spec.runPolicy.onHang",
    "spec.runPolicy.restartOn",
    "spec.runPolicy.failOn",
    "spec.runPolicy.maxRestarts",
    "spec.runPolicy.restartBackoffSeconds",
    "spec.cancel",
    "spec.metrics",
    "spec.output.secretName",
    "spec.output.copyOnFailure",
    "spec.output.keepVolume",
)


def changed_paths(old: Any, new: Any, path: str) -> list[str]:
    """Dotted paths whose values differ between two JSON-like values (lists compare whole)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        paths: list[str] = []
        for key in sorted(set(old) | set(new)):
            paths.extend(changed_paths(old.get(key), new.get(key), f"{path}.{key}"))
        return paths
    return [] if old == new else [path]


def pending_changes(applied_spec: Mapping[str, Any], current_spec: Mapping[str, Any]) -> list[str]:
    """Spec paths changed since the job was rendered that a live job cannot take."""
    return [
        path
        for path in changed_paths(applied_spec, current_spec, "spec")
        if not any(path == live or path.startswith(live + ".") for live in LIVE_PATHS)
    ]


def applied_annotation(job: Mapping[str, Any]) -> str | None:
    """The job's applied-spec annotation as it is (the encoded spec it was rendered from)."""
    value = job.get("metadata", {}).get("annotations", {}).get(APPLIED_SPEC_ANNOTATION)
    return value if isinstance(value, str) else None


def encode_applied_spec(spec: Mapping[str, Any]) -> str:
    """The annotation value: compact, key-sorted JSON, so equal specs give equal strings."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def decode_applied_spec(job: Mapping[str, Any]) -> dict[str, Any] | None:
    """The spec a job was rendered from, or None for a job without (or with a damaged) annotation."""
    raw = applied_annotation(job)
    if not raw:
        return None
    try:
        decoded = json.loads(raw)
    except ValueError:
        return None
    return decoded if isinstance(decoded, dict) else None
