"""Follows every replica's log while a run trains: metrics into status, lines into an archive.

One follower per active TrainingRun, started by the kopf daemon in ``trainrun.controller.handlers``.
The replica streams come from ``trainrun.kube.logs`` (the same ones ``trainrun logs -f`` reads: pods
that start later are followed too); every line goes through the same ``MetricParser`` as the local
runner, the latest values are patched into ``status.metrics`` a few times a minute, and the lines
are kept per replica for the archive copied to ``<output>/logs/``.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import TextIO

from trainrun.kube import KubeApi, KubeError
from trainrun.kube.logs import LogLine, ReplicaLogStreams
from trainrun.metrics import MetricParser, MetricSummary
from trainrun.render import job_name
from trainrun.spec.model import API_VERSION, KIND, TrainingRun

logger = logging.getLogger(__name__)

STATUS_FLUSH_SECONDS = 5.0
STOP_CHECK_SECONDS = 0.5
LOG_ROOT = Path(tempfile.gettempdir()) / "trainrun-logs"


class LogFollower:
    """Streams the logs of one run's replica pods until told to stop."""

    def __init__(self, api: KubeApi, run: TrainingRun) -> None:
        self.api = api
        self.run = run
        self.parser = MetricParser.from_definitions(run.spec.metrics)
        self.summary = MetricSummary()
        self.streams = ReplicaLogStreams(api, run.metadata.namespace, job_name(run))
        self.folder = LOG_ROOT / run.metadata.namespace / run.metadata.name
        self.folder.mkdir(parents=True, exist_ok=True)
        # A follower (re)starts every stream from the first line: what an earlier one wrote would repeat.
        for stale in self.folder.glob("*.log"):
            stale.unlink()
        self._dirty = False

    def follow(self, stopped: threading.Event) -> None:
        """Read every replica container that has started, and flush metrics, until stopped; then
        give the open streams a moment to end and keep their last lines too."""
        with ExitStack() as archives:
            files: dict[str, TextIO] = {}
            while not stopped.is_set():
                try:
                    self.streams.poll()
                except KubeError as error:
                    logger.warning("listing pods of %s failed: %s", self.run.metadata.name, error)
                deadline = time.monotonic() + STATUS_FLUSH_SECONDS
                while not stopped.is_set() and time.monotonic() < deadline:
                    self._take(self.streams.lines(STOP_CHECK_SECONDS), files, archives)
                self.flush_metrics()
            self.streams.wait(STATUS_FLUSH_SECONDS)
            self.streams.close()  # what is still open would never end on its own
            self._take(self.streams.lines(0), files, archives)
        self.flush_metrics()

    def log_files(self) -> list[Path]:
        """The archived log of every replica seen so far."""
        return sorted(self.folder.glob("*.log"))

    def _take(self, lines: Iterable[LogLine], files: dict[str, TextIO], archives: ExitStack) -> None:
        """Append each replica's lines to its archive file and parse them for metrics."""
        for line in lines:
            if line.note:
                continue  # already logged by the stream; the archive keeps only what the replica wrote
            if line.replica not in files:
                # Line-buffered: the archive may be copied while the stream is still open.
                path = self.folder / f"{line.replica}.log"
                files[line.replica] = archives.enter_context(path.open("a", encoding="utf-8", buffering=1))
            files[line.replica].write(line.text + "\n")
            samples = self.parser.parse(line.text)
            if samples:
                self._dirty |= self.summary.add(samples)

    def flush_metrics(self) -> None:
        """Patch the latest metric values into the run's status when they changed."""
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
            self._dirty = True
