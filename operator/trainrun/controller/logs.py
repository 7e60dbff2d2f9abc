"""Follows every replica's log of one run as tasks on kopf's event loop: metrics for status, an archive.

The controller (``trainrun.controller.operator``) keeps one :class:`RunLogs` per active run it leads,
hands it the run's pods from the watch cache on every reconcile (no polling: a pod that starts later,
a container restarted in place or a pod recreated under the same name shows up there) and finishes it
when the run ends. Each container start is read by one task through ``AsyncKube.log_lines``; a stream
that breaks off while its container runs is opened again and goes on after the last line delivered
(``trainrun.kube.streams.StreamPosition``). Every line goes through the same ``MetricParser`` as the
local runner; the latest values are offered to the controller, which writes them with the rest of the
status (coalesced: at most one status write per run every few seconds). Lines are kept per replica in a
file for the archive copied to ``<output>/logs/`` when the run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from trainrun.kube.aioclient import ApiError, AsyncKube
from trainrun.kube.streams import StreamPosition, parse_log_time, started_container_restarts, still_running
from trainrun.metrics import MetricParser, MetricSummary
from trainrun.render.children import CONTAINER_NAME
from trainrun.spec.model import TrainingRun
from trainrun.status import replica_name

logger = logging.getLogger(__name__)

LOG_ROOT = Path(tempfile.gettempdir()) / "trainrun-logs"
RESUME_MAX_DELAY_SECONDS = 30.0
FINISH_GRACE_SECONDS = 5.0


class RunLogs:
    """The followed logs of one run's replica pods, until :meth:`finish`."""

    def __init__(self, kube: AsyncKube, run: TrainingRun, *, on_metrics: Callable[[], None]) -> None:
        self.kube = kube
        self.run = run
        self.on_metrics = on_metrics
        self.parser = MetricParser.from_definitions(run.spec.metrics)
        self.summary = MetricSummary()
        self.folder = LOG_ROOT / run.metadata.namespace / run.metadata.name
        # A follower (re)starts every stream from the first line: what an earlier one wrote would repeat.
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, IO[str]] = {}
        self._pods: dict[str, Mapping[str, Any]] = {}  # by pod name, as last seen
        self._tasks: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._closing = False

    @property
    def metrics(self) -> dict[str, float] | None:
        return dict(self.summary.latest) if self.summary.latest else None

    @property
    def key_metric(self) -> str | None:
        return self.summary.key_metric()

    def update(self, pods: Iterable[Mapping[str, Any]]) -> None:
        """Start reading every replica container that has started and is not read yet."""
        if self._closing:
            return
        self._pods = {str(pod["metadata"]["name"]): pod for pod in pods}
        for name, pod in self._pods.items():
            restarts = started_container_restarts(pod)
            if restarts is None:
                continue
            key = (str(pod["metadata"].get("uid")), restarts)
            if key not in self._tasks:
                self._tasks[key] = asyncio.get_running_loop().create_task(
                    self._read(replica_name(pod), name, *key), name=f"logs {self.run.metadata.name}/{name}"
                )

    async def finish(self, grace: float = FINISH_GRACE_SECONDS) -> list[Path]:
        """Let open streams end for a moment, stop the rest, and return the archived log of every replica."""
        self._closing = True
        tasks = list(self._tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for archive in self._files.values():
            archive.close()
        return sorted(self.folder.glob("*.log"))

    async def stop(self) -> None:
        """Stop reading at once (leadership lost, operator shutting down); nothing is archived."""
        self._closing = True
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        for archive in self._files.values():
            archive.close()

    async def _read(self, replica: str, pod_name: str, uid: str, restarts: int) -> None:
        """Read one container's log to its end, reopening a stream that breaks off while it runs."""
        position = StreamPosition()
        breaks = 0
        while not self._closing:
            since = position.since_seconds(datetime.now(UTC))
            position.reopen()
            try:
                async for stamped in self.kube.log_lines(
                    self.run.metadata.namespace, pod_name, container=CONTAINER_NAME, since_seconds=since
                ):
                    stamp_text, _, text = stamped.partition(" ")
                    stamp = parse_log_time(stamp_text)
                    if stamp is None:
                        text = stamped  # no time in front (not a kubelet): keep the line whole
                    elif not position.take(stamp):
                        continue  # read before the stream broke off
                    self._take(replica, text)
                    breaks = 0
                why = "it ended"
            except ApiError as error:
                why = str(error)
            if self._closing or not self._still_running(pod_name, uid, restarts):
                return
            breaks += 1
            logger.info("log stream of %s broke off (%s); reading on", pod_name, why)
            await asyncio.sleep(min(RESUME_MAX_DELAY_SECONDS, 0.5 * 2**breaks))

    def _still_running(self, pod_name: str, uid: str, restarts: int) -> bool:
        """Whether the container a stream read is still the pod's running training container (per the watch)."""
        return still_running(self._pods.get(pod_name), uid, restarts)

    def _take(self, replica: str, text: str) -> None:
        """Append the line to its replica's archive and parse it for metrics."""
        archive = self._files.get(replica)
        if archive is None:
            archive = self._files[replica] = (self.folder / f"{replica}.log").open("a", encoding="utf-8")
        archive.write(text + "\n")
        samples = self.parser.parse(text)
        if samples and self.summary.add(samples):
            self.on_metrics()

    def discard(self) -> None:
        """Remove the local copy once it is archived (or not wanted)."""
        with contextlib.suppress(OSError):
            shutil.rmtree(self.folder)
