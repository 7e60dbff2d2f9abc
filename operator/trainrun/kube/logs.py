"""Follow the training container's log of every replica pod of one PyTorchJob, as one stream of lines.

Used by the operator's log follower (``trainrun.controller.logs``: metrics into status, lines into the
archive) and by the cluster backend of ``trainrun.Client`` (``trainrun logs -f``, ``trainrun run``).
Unlike ``TrainingClient.get_job_logs``, pods that start later (Workers still Pending, a pod the
training-operator recreated, a container restarted in place) are followed too: each :meth:`poll`
lists the job's pods and starts one reading thread per pod and container start. Lines of all the
threads arrive in one queue as :class:`LogLine`; :meth:`lines` hands them out.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

from trainrun.kube.api import KubeApi, KubeError
from trainrun.render.children import CONTAINER_NAME, JOB_NAME_LABEL
from trainrun.status import replica_name

logger = logging.getLogger(__name__)

Pod = dict[str, Any]


@dataclass(frozen=True)
class LogLine:
    """One line of a replica's log, or (``note``) a line from trainrun about the stream itself."""

    replica: str
    text: str
    note: bool = False


class ReplicaLogStreams:
    """The followed logs of one job's replica pods (``replicas`` limits them, e.g. ``{"master-0"}``)."""

    def __init__(
        self, api: KubeApi, namespace: str, job_name: str, *, replicas: Collection[str] | None = None
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.job_name = job_name
        self.replicas = frozenset(replicas) if replicas is not None else None
        self._queue: queue.Queue[LogLine] = queue.Queue()
        # One thread per pod uid and container start: a new pod or a restarted container is read anew.
        self._threads: dict[tuple[str, int], threading.Thread] = {}

    def poll(self) -> None:
        """Start reading every wanted replica whose training container has started since the last poll."""
        for replica, pod in replica_pods(self.api, self.namespace, self.job_name).items():
            if self.replicas is not None and replica not in self.replicas:
                continue
            restarts = _started_container_restarts(pod)
            if restarts is None:
                continue
            key = (pod["metadata"]["uid"], restarts)
            if key in self._threads:
                continue
            thread = threading.Thread(
                target=self._read, args=(replica, pod["metadata"]["name"]), name=f"log-{replica}", daemon=True
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

    def _read(self, replica: str, pod_name: str) -> None:
        try:
            for text in self.api.pod_logs(pod_name, self.namespace, container=CONTAINER_NAME, follow=True):
                self._queue.put(LogLine(replica, text))
        except KubeError as error:
            logger.info("log stream of %s ended: %s", pod_name, error)
            self._queue.put(LogLine(replica, f"[trainrun] log stream of {pod_name} ended: {error}", note=True))


def replica_pods(api: KubeApi, namespace: str, job_name: str) -> dict[str, Pod]:
    """The job's replica pods by replica name (master-0, worker-0, ...), Master first."""
    listed = api.list("v1", "Pod", namespace, label_selector=f"{JOB_NAME_LABEL}={job_name}")
    pods = {replica_name(pod): pod for pod in listed}
    return dict(sorted(pods.items(), key=lambda item: (not item[0].startswith("master"), item[0])))


def _started_container_restarts(pod: Pod) -> int | None:
    """The training container's restart count once it has started (running or ended), else None."""
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        if container.get("name") != CONTAINER_NAME:
            continue
        state = container.get("state") or {}
        if "running" in state or "terminated" in state:
            return int(container.get("restartCount") or 0)
    return None
