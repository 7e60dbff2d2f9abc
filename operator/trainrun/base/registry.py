"""What a model registry or experiment tracker is asked, and what it answers, as plain data (pure).

The plan (``trainrun.plan``) builds a :class:`VersionRequest` when a run's copy is verified; the
controller and the local runner hand it to a registry client (``trainrun.registry``), whose errors are
:class:`RegistryUnavailable` (down, overloaded: tried again with back-off) or :class:`RegistryRefused`
(it answered no: the run says so and is not tried again). The tag names the operator sets live here, so
the client, the CLI and the tests read the same ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from trainrun.base.redact import redact

# Tags the operator sets on a model version and on a tracked run: ``RUN_UID_TAG`` finds them again.
RUN_UID_TAG = "trainrun.run_uid"
RUN_TAG = "trainrun.run"
NAMESPACE_TAG = "trainrun.namespace"
IMAGE_TAG = "trainrun.image"
MANIFEST_TAG = "trainrun.manifest"
DIGEST_TAG = "trainrun.manifest_sha256"
PHASE_TAG = "trainrun.phase"
POOL_TAG = "trainrun.pool"
# A sweep's version (spec.register of a TrainingSweep) is found again by the sweep's uid, not the trial's.
SWEEP_UID_TAG = "trainrun.sweep_uid"
SWEEP_TAG = "trainrun.sweep"
SWEEP_PARAMETERS_TAG = "trainrun.sweep.parameters"
SWEEP_OBJECTIVE_TAG = "trainrun.sweep.objective"
# The high-water mark of a tracked run: the time of the last metric record sent (written with the batch).
SENT_TAG = "trainrun.metrics_sent_through"
METRIC_TAG_PREFIX = "metric."
PARAM_TAG_PREFIX = "param."


class RegistryError(Exception):
    """A registry call failed; the message names the server (redacted) and its words."""

    def __init__(self, message: str = "") -> None:
        super().__init__(redact(message))


class RegistryUnavailable(RegistryError):
    """The registry could not be reached or answered that it cannot serve now (5xx, 429): try again later."""


class RegistryRefused(RegistryError):
    """The registry answered no (invalid name, forbidden, bad source): trying again gives the same answer."""


@dataclass(frozen=True)
class VersionRequest:
    """One run's (or one sweep's) model version: registered at most once, found again by ``run_uid`` in the
    tag ``uid_tag`` (a run's uid in ``RUN_UID_TAG``; a sweep's in ``SWEEP_UID_TAG``)."""

    name: str
    source: str  # the verified copy in object storage (the artifacts' URI, with the model's path)
    run_uid: str
    tags: tuple[tuple[str, str], ...] = ()
    description: str | None = None
    run_id: str | None = None  # the tracker's run of the same TrainingRun, when it is tracked
    uid_tag: str = RUN_UID_TAG  # the tag that carries ``run_uid`` and finds the version again


@dataclass(frozen=True)
class VersionInfo:
    """A model version as a registry lists it."""

    name: str
    version: str
    source: str
    created: str | None = None  # RFC 3339
    status: str | None = None
    run_id: str | None = None
    description: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


def path_problem(paths: Sequence[str], path: str | None, where: str, *, field: str = "spec.output.register") -> str | None:
    """Why ``path`` (spec.output.register.path) is not a model among the copied ``paths`` (a manifest's, which
    ``where`` names), or None when it is: a file, or a folder with files."""
    if path is None:
        return None
    if any(item == path or item.startswith(f"{path}/") for item in paths):
        return None
    listed = sorted({item.split("/")[0] for item in paths})
    shown = ", ".join(listed[:12]) + (" ..." if len(listed) > 12 else "")
    return (
        f"{field}.path: {path!r} is not in the copied outputs ({where} lists: {shown or 'nothing'}); "
        "name a file or folder the program writes under $OUTPUT_DIR"
    )


def manifest_digest(manifest_json: bytes) -> str:
    """A manifest's digest as a version's tag says it: ``sha256:<hex>`` of its bytes."""
    return "sha256:" + hashlib.sha256(manifest_json).hexdigest()
