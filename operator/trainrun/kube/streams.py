"""How far a container's log was read, and which container start a log stream belongs to. Pure.

Shared by the two log readers: the CLI's threaded one (``trainrun.kube.logs``, ``trainrun logs -f``) and
the operator's asynchronous one (``trainrun.controller.logs``). A stream that breaks off while its
container runs is opened again some seconds back; :class:`StreamPosition` skips the lines already
delivered by their kubelet time. No Kubernetes client is imported here, so the operator's process never
loads one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, TypeGuard

from trainrun.render.children import CONTAINER_NAME

Pod = dict[str, Any]
LogTime = tuple[datetime, int]  # a log line's time: to the second, and its nanoseconds

# A reopened stream starts this much further back than the last line read, for clock skew between
# this process and the node; the lines read twice are skipped by their time.
RESUME_MARGIN_SECONDS = 5
_LOG_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")


@dataclass
class StreamPosition:
    """How far one container's log was read, so that a stream opened again skips what was delivered.

    The API can only start a log some whole seconds back, so a reopened stream repeats lines: those
    older than the last delivered line's time are skipped, and of those with exactly that time, as
    many as were delivered.
    """

    last: LogTime | None = None
    delivered_at_last: int = 0
    _replayed_at_last: int = 0

    def since_seconds(self, now: datetime) -> int | None:
        """How far back to start a reopened stream (None: from the first line)."""
        if self.last is None:
            return None
        return max(1, math.ceil((now - self.last[0]).total_seconds())) + RESUME_MARGIN_SECONDS

    def reopen(self) -> None:
        self._replayed_at_last = 0

    def advance(self, last: LogTime, at_last: int) -> None:
        """Delivered a batch of lines all newer than the position: the last one's time, and how many lines
        of the batch had exactly that time (the batch path of :meth:`take`)."""
        self.last, self.delivered_at_last, self._replayed_at_last = last, at_last, at_last

    def take(self, stamp: LogTime) -> bool:
        """Whether a line with this time is new (and then count it as delivered)."""
        if self.last is not None:
            if stamp < self.last:
                return False
            if stamp == self.last and self._replayed_at_last < self.delivered_at_last:
                self._replayed_at_last += 1
                return False
        if stamp == self.last:
            self.delivered_at_last += 1
        else:
            self.last, self.delivered_at_last = stamp, 1
        self._replayed_at_last = self.delivered_at_last
        return True


def parse_log_time(text: str) -> LogTime | None:
    """``2026-11-24T01:02:03.123456789Z`` -> (time to the second, nanoseconds); None if it is not one."""
    match = _LOG_TIME.fullmatch(text)
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    seconds = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    return seconds, int((fraction or "0").ljust(9, "0"))


class LogTimes:
    """:func:`parse_log_time` for one stream: the lines of a second share its parsed time, so only the
    fraction is parsed for most lines (the follower's per-line cost at thousands of streams). The last few
    seconds are kept: a batch's first and last lines (all the follower parses of a batch read on) are seconds
    apart, and each would otherwise push the other's out."""

    KEPT_SECONDS = 4

    def __init__(self) -> None:
        self._seconds: dict[str, datetime] = {}  # "YYYY-MM-DDTHH:MM:SS" -> that second, UTC

    def parse(self, text: str) -> LogTime | None:
        second = self._seconds.get(text[:19])
        if second is not None and text.endswith("Z"):
            rest = text[19:-1]
            if not rest:
                return second, 0
            fraction = rest[1:]
            if rest[0] == "." and fraction.isascii() and fraction.isdigit() and len(fraction) <= 9:
                return second, int(fraction.ljust(9, "0"))
        parsed = parse_log_time(text)
        if parsed is not None and text.endswith("Z"):
            if len(self._seconds) >= self.KEPT_SECONDS:
                del self._seconds[next(iter(self._seconds))]  # the oldest
            self._seconds[text[:19]] = parsed[0]
        return parsed


def training_container_name(pod: Mapping[str, Any]) -> str:
    """The name of a replica pod's training container: its first (a PyTorchJob's ``pytorch``, a TrainJob's
    ``node``; what the operator renders comes first)."""
    containers = (pod.get("spec") or {}).get("containers") or []
    first = containers[0] if containers and isinstance(containers[0], Mapping) else {}
    return str(first.get("name") or CONTAINER_NAME)


def training_container(pod: Mapping[str, Any]) -> dict[str, Any] | None:
    """The status of the pod's training container, once it has one."""
    name = training_container_name(pod)
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        if container.get("name") == name:
            return dict(container)
    return None


def started_container_restarts(pod: Mapping[str, Any]) -> int | None:
    """The training container's restart count once it has started (running or ended), else None."""
    container = training_container(pod)
    state = (container or {}).get("state") or {}
    if container is None or ("running" not in state and "terminated" not in state):
        return None
    return int(container.get("restartCount") or 0)


def is_same_pod(pod: Mapping[str, Any] | None, uid: str) -> TypeGuard[Mapping[str, Any]]:
    """Whether POD is there and is the one of that uid (not another that took its name)."""
    return pod is not None and (pod.get("metadata") or {}).get("uid") == uid


def restarted_since(pod: Mapping[str, Any] | None, uid: str, restarts: int) -> bool:
    """Whether the pod's training container has restarted since the start a stream read (pod uid, restart
    count): that start's log is then the kubelet's previous one, and a stream opened as before reads the newer
    start's lines. False when the pod is gone or another has its name."""
    if not is_same_pod(pod, uid):
        return False
    container = training_container(pod)
    return int((container or {}).get("restartCount") or 0) > restarts


def still_running(pod: Mapping[str, Any] | None, uid: str, restarts: int) -> bool:
    """Whether the container start a stream read (pod uid, restart count) is still the pod's running
    training container: if not, its log has ended and is not opened again."""
    if not is_same_pod(pod, uid):
        return False
    container = training_container(pod)
    return (
        container is not None
        and int(container.get("restartCount") or 0) == restarts
        and "running" in (container.get("state") or {})
    )


class StreamEnd(Enum):
    """What the way a log stream ended says of the container start's log behind it (``stream_end_after_error``)."""

    READ = "read to where the server stops"
    GOES_ON = "the log goes on past what was read"
    POD_DELETED = "its pod was deleted before the operator read it to its end"
    RESTARTED_AGAIN = "the container restarted again before the operator read it"


def stream_end_after_error(status: int | None, *, previous: bool, pod_here: bool) -> StreamEnd:
    """How far a stream of a container start's log got that ended with an error of HTTP status STATUS (None:
    no answer, the stream broke off); one that ended without error read the log to where the server stops.
    PREVIOUS: it read the log of the start before the container's current one. POD_HERE: whether the pod (the
    same uid) is still there.

    A stream that breaks off, a 5xx (the API server cannot reach the kubelet) and a 429 leave the log going
    on past what was read, whether the container still runs or not; so does a 404 for a pod still there (its
    node unknown to the API server for a moment). Any other 4xx is a refusal, the end of what there is to
    read (kwok answers 400 "no logs found" for a pod it serves no log for); of a previous start's log, it
    means the container restarted again since and that log is gone."""
    if status == 404 and not previous and not pod_here:
        return StreamEnd.POD_DELETED
    refused = status is not None and 400 <= status < 500 and status not in (404, 429)
    if previous:
        return StreamEnd.RESTARTED_AGAIN if refused else StreamEnd.GOES_ON
    return StreamEnd.READ if refused else StreamEnd.GOES_ON
