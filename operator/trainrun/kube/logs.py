"""Follow the training container's log of every replica pod of one PyTorchJob, as one stream of lines.

Used by the operator's log follower (``trainrun.controller.logs``: metrics into status, lines into the
archive) and by the cluster backend of ``trainrun.Client`` (``trainrun logs -f``, ``trainrun run``).
Unlike ``TrainingClient.get_job_logs``, pods that start later (Workers still Pending, a pod the
training-operator recreated, a container restarted in place) are followed too: each :meth:`poll`
lists the job's pods and starts one reading thread per pod and container start. Lines of all the
threads arrive in one queue as :class:`LogLine`; :meth:`lines` hands them out. A stream that breaks
off while its container still runs is opened again and goes on after the last line it delivered
(lines carry their kubelet time, which :class:`StreamPosition` uses to skip what was read).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from trainrun.kube.api import KubeApi, KubeError, StreamCloser
from trainrun.kube.streams import (
    StreamEnd,
    StreamPosition,
    is_same_pod,
    parse_log_time,
    restarted_since,
    started_container_restarts,
    still_running,
    stream_end_after_error,
    training_container_name,
)
from trainrun.render.children import COMPONENT_LABEL, REPLICA_COMPONENT, RUN_LABEL
from trainrun.status import replica_name
from trainrun.status.observe import replica_sort_key

logger = logging.getLogger(__name__)

Pod = dict[str, Any]

RESUME_MAX_DELAY_SECONDS = 30.0


@dataclass(frozen=True)
class LogLine:
    """One line of a replica's log, or (``note``) a line from trainrun about the stream itself."""

    replica: str
    text: str
    note: bool = False


class ReplicaLogStreams:
    """The followed logs of one job's replica pods (``replicas`` limits them, e.g. ``{"master-0"}``;
    ``tail`` starts each at its last lines)."""

    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        job_name: str,
        *,
        replicas: Collection[str] | None = None,
        tail: int | None = None,
    ) -> None:
        self.api = api
        self.tail = tail  # start each container's log at its last lines rather than its first
        self.namespace = namespace
        self.job_name = job_name
        self.replicas = frozenset(replicas) if replicas is not None else None
        self._queue: queue.Queue[LogLine] = queue.Queue()
        # One thread per pod uid and container start: a new pod or a restarted container is read anew.
        self._threads: dict[tuple[str, int], threading.Thread] = {}
        self._closers: list[StreamCloser] = []
        self._closing = threading.Event()
        self._lock = threading.Lock()

    def poll(self) -> None:
        """Start reading every wanted replica whose training container has started since the last poll."""
        if self._closing.is_set():
            return
        for replica, pod in replica_pods(self.api, self.namespace, self.job_name).items():
            if self.replicas is not None and replica not in self.replicas:
                continue
            restarts = started_container_restarts(pod)
            if restarts is None:
                continue
            key = (pod["metadata"]["uid"], restarts)
            if key in self._threads:
                continue
            thread = threading.Thread(
                target=self._read,
                args=(replica, pod["metadata"]["name"], training_container_name(pod), *key),
                name=f"log-{replica}",
                daemon=True,
            )
            self._threads[key] = thread
            thread.start()

    def lines(self, seconds: float) -> Iterator[LogLine]:
        """The lines that arrive within ``seconds`` (all that are queued when ``seconds`` is 0)."""
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            try:
                yield self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                return

    def reading(self) -> bool:
        """Whether a stream is still open (its container has not ended)."""
        return any(thread.is_alive() for thread in self._threads.values())

    def wait(self, seconds: float) -> None:
        """Wait up to ``seconds`` in all for the open streams to end (their lines stay queued)."""
        deadline = time.monotonic() + seconds
        for thread in self._threads.values():
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """End every open stream (a stream the server keeps open after its container ended, too)."""
        with self._lock:
            self._closing.set()
            closers = list(self._closers)
        for closer in closers:
            closer.close()

    def _new_closer(self) -> StreamCloser | None:
        with self._lock:
            if self._closing.is_set():
                return None
            closer = StreamCloser()
            self._closers.append(closer)
            return closer

    def _read(self, replica: str, pod_name: str, container: str, uid: str, restarts: int) -> None:
        """Read one container's log to its end; a stream that breaks off (an API server restart, an idle
        connection cut), or ends while the container still runs, is opened again where it stopped."""
        position = StreamPosition()
        breaks = 0
        while (closer := self._new_closer()) is not None:
            since = position.since_seconds(datetime.now(UTC))
            position.reopen()
            try:
                for stamped in self.api.pod_logs(
                    pod_name,
                    self.namespace,
                    container=container,
                    follow=True,
                    timestamps=True,
                    since_seconds=since,
                    tail_lines=self.tail if since is None else None,
                    closer=closer,
                ):
                    stamp_text, _, text = stamped.partition(" ")
                    stamp = parse_log_time(stamp_text)
                    if stamp is None:
                        text = stamped  # no time in front (not a kubelet): keep the line whole
                    elif not position.take(stamp):
                        continue  # read before the stream broke off
                    self._queue.put(LogLine(replica, text))
                    breaks = 0
                why, failure = "it ended", None
            except KubeError as error:
                why, failure = str(error), error
            with self._lock:
                self._closers.remove(closer)
            if self._closing.is_set() or not self._reads_on(pod_name, uid, restarts, failure):
                return
            breaks += 1
            logger.info("log stream of %s broke off (%s); reading on", pod_name, why)
            self._queue.put(
                LogLine(replica, f"[trainrun] log stream of {pod_name} broke off ({why}); reading on", note=True)
            )
            self._closing.wait(min(RESUME_MAX_DELAY_SECONDS, 0.5 * 2**breaks))

    def _reads_on(self, pod_name: str, uid: str, restarts: int, failure: KubeError | None) -> bool:
        """Whether a stream that ended (with ``failure``, or without error) is opened again: while its container
        start still runs, or after an error that leaves its log going on (``stream_end_after_error``); not once
        the container restarted since (a stream opened again would read the new start, which has its reader)."""
        try:
            pod = self.api.get("v1", "Pod", pod_name, self.namespace)
        except KubeError:
            return True  # the API server is away: try again later
        if restarted_since(pod, uid, restarts):
            return False
        goes_on = failure is not None and stream_end_after_error(failure.status, previous=False, pod_here=is_same_pod(pod, uid)) is StreamEnd.GOES_ON
        return goes_on or still_running(pod, uid, restarts)


def replica_pods(api: KubeApi, namespace: str, job_name: str) -> dict[str, Pod]:
    """The job's replica pods by replica name (master-0, worker-0, ...), Master first."""
    selector = f"{RUN_LABEL}={job_name},{COMPONENT_LABEL}={REPLICA_COMPONENT}"  # either backend's pods
    listed = api.list("v1", "Pod", namespace, label_selector=selector)
    pods = {replica_name(pod): pod for pod in listed}
    return dict(sorted(pods.items(), key=lambda item: replica_sort_key(item[0])))
