"""Defensive readers of raw Kubernetes API dicts: a wrong shape reads as "absent", never as an exception.

The status function is fed whatever the API server (or a half-written test fixture, or an older
training-operator) returns. Every read in ``trainrun.status.observe`` goes through these helpers, so a
missing ``status``, a list where a mapping was expected or a string count degrades to a default instead
of failing the operator's reconcile. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from trainrun.base.redact import redact_optional

_EMPTY: Mapping[str, Any] = {}


def as_mapping(value: object) -> Mapping[str, Any]:
    """The value if it is a mapping, else an empty one."""
    if type(value) is dict:  # what decoded JSON is: no abstract-class check (a reconcile reads thousands)
        return value
    return value if isinstance(value, Mapping) else _EMPTY


def as_list(value: object) -> list[Any]:
    """The value's items if it is a list or tuple (not a string), else an empty list."""
    if type(value) is list:
        return value.copy()
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return list(value)
    return []


def mappings(value: object) -> list[Mapping[str, Any]]:
    """The mapping items of a list; anything else in it is skipped."""
    return [item for item in as_list(value) if type(item) is dict or isinstance(item, Mapping)]


def as_text(value: object) -> str | None:
    """A non-empty string, or None (numbers are spelled out, other shapes give None)."""
    if type(value) is str:
        return value if value.strip() else None
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    return None


def as_message(value: object) -> str | None:
    """:func:`as_text` for a message some other program wrote (a container's termination message, an
    Event, a condition): credentials in any URL in it are masked before the status or a log quotes it."""
    return redact_optional(as_text(value))


def as_count(value: object) -> int:
    """A non-negative integer count; strings of digits are accepted, anything else is 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return 0


def as_int(value: object) -> int | None:
    """An integer (exit codes can be negative), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def field(document: object, *path: str) -> Any:
    """``document[path[0]][path[1]]...``, or None as soon as a step is missing or not a mapping."""
    current: Any = document
    for key in path:
        if type(current) is not dict and not isinstance(current, Mapping):
            return None
        current = current.get(key)
    return current


def is_true(value: object) -> bool:
    """A condition status: "True" (or a real True) counts; anything else does not."""
    return value is True or (isinstance(value, str) and value.lower() == "true")


def utc_now() -> str:
    """The current time as Kubernetes writes timestamps (UTC, seconds, ``Z``): what callers pass as ``now``.

    The one clock read of the package, for its callers (the operator's controller, the local runner);
    nothing in the pure core calls it."""
    return rfc3339(datetime.now(UTC))


def rfc3339(moment: datetime) -> str:
    """A time as Kubernetes writes timestamps: UTC, whole seconds, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def timestamp(value: object) -> datetime | None:
    """An RFC 3339 time (``2026-01-02T03:04:05Z``, with or without fractions), or None."""
    text = as_text(value)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def earliest(values: list[str | None]) -> str | None:
    """The earliest of some RFC 3339 times, as written; unreadable ones are ignored."""
    readable = [(moment, text) for text in values if text is not None and (moment := timestamp(text)) is not None]
    return min(readable)[1] if readable else None
