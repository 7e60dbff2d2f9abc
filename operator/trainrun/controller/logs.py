"""Follows every replica's log while a run trains: metrics into status, lines into an archive.

One follower per active TrainingRun, started by the kopf daemon in ``trainrun.controller.handlers``.
Each replica pod gets a streaming thread (unlike ``TrainingClient.get_job_logs``, Workers and pods
that were Pending when the follower started are followed too); every line goes through the same
``MetricParser`` as the local runner, the latest values are patched into ``status.metrics`` a few
times a minute, and the lines are kept per replica for the archive copied to ``<output>/logs/``.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path
from typing import Protocol

from trainrun.kube import KubeApi, KubeError
from trainrun.metrics import MetricParser, MetricSummary
from trainrun.render.children import JOB_NAME_LABEL
from trainrun.spec.model import API_VERSION, KIND, TrainingRun
from trainrun.status import replica_name

logger = logging.getLogger(__name__)

STATUS_FLUSH_SECONDS = 5.0
LOG_ROOT = Path(tempfile.gettempdir()) / "trainrun-logs"


class Stopped(Protocol):
    """What kopf's DaemonStopped offers and the follower needs."""

    def wait(self, timeout: float | None = None) -> object: ...

    def __bool__(self) -> bool: ...


class LogFollower:
    """Streams the logs of one run's replica pods until told to stop."""

    def __init__(self, api: KubeApi, run: TrainingRun) -> None:
        self.api = api
        self.run = run
        self.parser = MetricParser.from_definitions(run.spec.metrics)
        self.summary = MetricSummary()
        self.folder = LOG_ROOT / run.metadata.namespace / run.metadata.name
        self.folder.mkdir(parents=True, exist_ok=True)
        # A follower (re)starts every stream from the first line: what an earlier one wrote would repeat.
        for stale in self.folder.glob("*.log"):
            stale.unlink()
        self._lock = threading.Lock()
        self._dirty = False
        self._streams: dict[tuple[str, int], threading.Thread] = {}

    def follow(self, stopped: Stopped) -> None:
        """Start a stream for every replica container that has started, and flush metrics, until stopped."""
        while not stopped:
            try:
                self._start_new_streams()
            except KubeError as error:
                logger.warning("listing pods of %s failed: %s", self.run.metadata.name, error)
            self.flush_metrics()
            stopped.wait(STATUS_FLUSH_SECONDS)
        for thread in self._streams.values():
            thread.join(timeout=STATUS_FLUSH_SECONDS)
        self.flush_metrics()

    def log_files(self) -> list[Path]:
        """The archived log of every replica seen so far."""
        return sorted(self.folder.glob("*.log"))

    def _start_new_streams(self) -> None:
        selector = f"{JOB_NAME_LABEL}={self.run.metadata.name}"
        for pod in self.api.list("v1", "Pod", self.run.metadata.namespace, label_selector=selector):
            for container in pod.get("status", {}).get("containerStatuses") or []:
                if container.get("name") != "pytorch":
                    continue
                state = container.get("state") or {}
                if "running" not in state and "terminated" not in state:
                    continue
                key = (pod["metadata"]["uid"], int(container.get("restartCount") or 0))
                if key in self._streams:
                    continue
                thread = threading.Thread(
                    target=self._stream, args=(pod["metadata"]["name"], replica_name(pod)), daemon=True
                )
                self._streams[key] = thread
                thread.start()

    def _stream(self, pod_name: str, replica: str) -> None:
        try:
            # Line-buffered: the archive may be copied while the stream is still open.
            with (self.folder / f"{replica}.log").open("a", encoding="utf-8", buffering=1) as archive:
                for line in self.api.pod_logs(pod_name, self.run.metadata.namespace, follow=True):
                    archive.write(line + "\n")
                    samples = self.parser.parse(line)
                    if samples:
                        with self._lock:
                            self._dirty |= self.summary.add(samples)
        except KubeError as error:
            logger.info("log stream of %s ended: %s", pod_name, error)

    def flush_metrics(self) -> None:
        """Patch the latest metric values into the run's status when they changed."""
        with self._lock:
            if not self._dirty:
                return
            latest = dict(self.summary.latest)
            key_metric = self.summary.key_metric()
            self._dirty = False
        patch = {"status": {"metrics": latest, "keyMetric": key_metric}}
        try:
            self.api.patch_merge(
                API_VERSION, KIND, self.run.metadata.name, self.run.metadata.namespace, patch, subresource="status"
            )
        except KubeError as error:
            logger.warning("writing metrics of %s failed: %s", self.run.metadata.name, error)
            with self._lock:
                self._dirty = True
