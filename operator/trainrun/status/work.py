"""Slow work done outside the reconcile, its results as facts, and when a failed step is tried again.

The plan (``trainrun.plan.core``) asks for storage work (:class:`SealLogs`, :class:`ReadManifest`) and
registry work (:class:`Register`), and so does the sweep plan (``trainrun.sweep.plan``: the best
trial's model); the controller (``trainrun.controller.operator``) runs each as a task and keeps what it brought as
:class:`Attempts`, which the next reconcile hands back to the plan in ``Observed``: a reconcile never
waits for an object store. The same goes for a child the API server refused (:class:`Refusal`). Every
retry window is decided here, from the facts and their times, so it is table-tested with the plan.
Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from trainrun.base.registry import VersionRequest
from trainrun.spec.status import LogGap, ModelVersion
from trainrun.status.shapes import rfc3339, timestamp

Result = TypeVar("Result")

STORAGE_RETRY_SECONDS = 5.0  # a failed storage step is tried again after this long, doubled per failure
STORAGE_RETRY_MAX_SECONDS = 300.0  # ... up to this
# A child the API server refused (an invalid object, an admission policy) is not applied again for this
# long, unless the run's spec changes (a new generation): the refusal is reported meanwhile.
REFUSAL_RETRY_SECONDS = 300.0


@dataclass(frozen=True)
class Attempts(Generic[Result]):
    """What the tries of one storage step brought so far."""

    running: bool = False  # a try is under way (its end reconciles the run again)
    result: Result | None = None  # what the last successful try brought
    failures: int = 0  # failed tries (the count goes on after a success)
    error: str | None = None  # the store's words for the last failure
    failed_at: str | None = None  # when the last try failed (RFC 3339)


@dataclass(frozen=True)
class SealedLogs:
    """The replicas' logs were read to their end (and composed in the log archive, where the run has one): the
    metrics read to the end and the logs that could not be read to their end."""

    metrics: dict[str, float]
    key_metric: str | None
    gaps: tuple[LogGap, ...] = ()


@dataclass(frozen=True)
class Refusal:
    """The API server refused a child of this generation of the run: its words, and when."""

    generation: int | None
    words: str
    at: str


@dataclass(frozen=True)
class SealLogs:
    """Finish following the run's logs: read every replica's to its end, and compose them in the archive at
    ``archive`` (None: the run's logs are not archived; read for the metrics only). ``ran``: the replicas known to
    have run (seen started, or ended by the job's counts); one of which the archive holds nothing (its pods came
    and went while no operator followed them, or the one that read them was killed before it shipped a line) is
    declared a gap there, not forgotten."""

    archive: str | None
    ran: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReadManifest:
    """Read ``<output>/manifest.json`` (adding the sealed logs of ``archive`` to it) as the run's artifacts."""

    archive: str | None


@dataclass(frozen=True)
class Register:
    """Register the run's model in the registry ``registry`` (a key of the configuration): check that the
    model's ``path`` is in the manifest at ``manifest_uri``, add the manifest's digest to the tags, then find
    the version by the run's uid, or create it (``trainrun.registry``)."""

    registry: str
    request: VersionRequest
    manifest_uri: str
    path: str | None
    field: str = "spec.output.register"  # the field the refusals name (a sweep's: spec.register)


@dataclass(frozen=True)
class Registration:
    """What registering brought: the version, or the registry's (or the manifest's) refusal, never tried again."""

    model: ModelVersion | None = None
    refused: str | None = None


StorageWork = SealLogs | ReadManifest | Register


def retry_delay(failures: int) -> float:
    """Seconds between failed try number ``failures`` and the next one."""
    return min(STORAGE_RETRY_MAX_SECONDS, STORAGE_RETRY_SECONDS * float(2 ** max(failures - 1, 0)))


def next_try(attempts: Attempts[Result]) -> datetime | None:
    """When the next try may start after the last failure; None when it may start now."""
    failed_at = timestamp(attempts.failed_at)
    if attempts.failures == 0 or failed_at is None:
        return None
    return failed_at + timedelta(seconds=retry_delay(attempts.failures))


def due(attempts: Attempts[Result], now: datetime) -> tuple[bool, float | None]:
    """(whether to start a try now, seconds until one is due when it is not) for a step without a result."""
    if attempts.running:
        return False, None  # the try under way reconciles the run when it ends
    at = next_try(attempts)
    if at is None or at <= now:
        return True, None
    return False, (at - now).total_seconds()


def failure_words(what: str, attempts: Attempts[Result]) -> str | None:
    """What the status says while a step fails: the store's words and when it is tried again."""
    if attempts.failures == 0 or attempts.result is not None:
        return None
    at = next_try(attempts)
    when = f"; trying again in {retry_delay(attempts.failures):.0f} s, at {rfc3339(at)}" if at is not None else ""
    return f"{what}: {attempts.error or 'failed'} (attempt {attempts.failures}){when}"


def refusal_in_effect(refusal: Refusal | None, generation: int | None, now: datetime) -> tuple[str | None, float | None]:
    """(the refusal's words while it still stands, seconds until the child may be applied again)."""
    if refusal is None or refusal.generation != generation:
        return None, None
    at = timestamp(refusal.at)
    if at is None:
        return None, None
    remaining = REFUSAL_RETRY_SECONDS - (now - at).total_seconds()
    return (refusal.words, remaining) if remaining > 0 else (None, None)
