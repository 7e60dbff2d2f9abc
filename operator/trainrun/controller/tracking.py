"""The operator's experiment tracker: one MLflow run per tracked TrainingRun, kept up to date in the background.

The plan says how a run is tracked (``trainrun.plan.registration.Track``: registry, experiment, params,
tags, and its final status once the run is over and its logs sealed); the controller
(``trainrun.controller.operator``) keeps one :class:`RunTracker` per tracked run it leads, hands it the
plan's ``Track`` on every reconcile and the metric records its log follower ships (``RunLogs.on_records``:
each with its index in the archive's metrics channel). A task sends what changed every few seconds:

- the tracked run is found by the run's uid tag (``runs/search``) or created, its params logged;
- the Master's metric records (steps and line times kept, the final repeat left out) go in ``runs/log-batch``
  requests of at most 900 values, each carrying the index it reaches as the tag ``trainrun.metrics_sent_through``:
  after an operator restart the tracker reads that mark back and sends from there, and records it has not
  been handed (shipped before it started) are read from the archive (``LogArchive.read_all``). So none is
  sent twice, none is left out, and the log pipeline never waits: feeding is an append to a dict;
- tags (phase, pool, image) when they change; at the end the run's final status (``runs/update``).

A registry that cannot be reached is tried again with the plan's back-off (``trainrun.status.work.retry_delay``)
and said in ``status.tracking.message``; what it brings back is :class:`TrackingFacts` for the next plan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from trainrun.base.registry import SENT_TAG, RegistryError
from trainrun.plan.registration import Track, TrackingFacts
from trainrun.registry import ModelRegistry
from trainrun.registry.mlflow import BATCH_METRICS, BATCH_TAGS, tracked_rows
from trainrun.status.shapes import utc_now
from trainrun.status.work import retry_delay
from trainrun.storage import StorageError
from trainrun.storage.logarchive import METRICS_CHANNEL
from trainrun.storage.logstore import LogArchive

logger = logging.getLogger(__name__)

TRACK_SECONDS = 5.0  # what was read is sent this often
ROWS_PER_REQUEST = BATCH_METRICS - BATCH_TAGS
# Records held for a registry that cannot take them; past this the newer ones are left to the archive (read
# back when their turn comes), so a registry that is down for days costs no memory.
MAX_PENDING = 100_000


class RunTracker:
    """Keeps one TrainingRun's tracked run up to date (see the module's docstring)."""

    def __init__(
        self,
        name: str,
        *,
        client: Callable[[Track], Awaitable[ModelRegistry]],
        archive: Callable[[], Awaitable[LogArchive | None]],
        on_change: Callable[[], None],
    ) -> None:
        self.name = name
        self._client_for = client
        self._archive_for = archive
        self.on_change = on_change
        self.track: Track | None = None
        self.run_id: str | None = None
        self.sent: int | None = None  # metric records sent (the channel's index reached); None before the mark is read
        self.pending: dict[int, str] = {}
        self.tags_sent: tuple[tuple[str, str], ...] = ()
        self.ended = False
        self.problem: str | None = None
        self._client: ModelRegistry | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def facts(self) -> TrackingFacts:
        return TrackingFacts(run_id=self.run_id, problem=self.problem, ended=self.ended)

    def want(self, track: Track) -> None:
        """The tracked run as it should be now (from the plan); sends soon when it changed."""
        changed = track != self.track
        self.track = track
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._work(), name=f"track {self.name}")
        elif changed and track.final is not None:
            self._wake.set()

    def feed(self, first: int, lines: list[str]) -> None:
        """Metric records of the archive's metrics channel, the first at index ``first`` (never waits)."""
        for offset, line in enumerate(lines):
            index = first + offset
            if (self.sent is None or index >= self.sent) and len(self.pending) < MAX_PENDING:
                self.pending[index] = line

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _work(self) -> None:
        failures = 0
        while not self.ended:
            try:
                await self._sync()
                failures = 0
                if self.problem is not None:
                    self.problem = None
                    self.on_change()
            except (RegistryError, StorageError) as error:
                failures += 1
                wait = retry_delay(failures)
                self.problem = f"{error} (attempt {failures}); trying again in {wait:.0f} s"
                logger.warning("tracking %s: %s", self.name, self.problem)
                self.on_change()
            if self.ended:
                break
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=retry_delay(failures) if failures else TRACK_SECONDS)

    async def _sync(self) -> None:
        track = self.track
        assert track is not None
        if self._client is None:
            self._client = await self._client_for(track)
        client = self._client
        if self.run_id is None:
            start = track.start or utc_now()
            run_id, sent = await client.tracked_run(track.experiment, track.run_uid, name=track.run_name, start=start, tags=track.tags)
            await client.log_batch(run_id, params=track.params)
            self.run_id, self.sent = run_id, sent
            self.pending = {index: line for index, line in self.pending.items() if index >= sent}
            self.on_change()
        await self._send_metrics(client, final=track.final is not None)
        if track.tags != self.tags_sent:
            await client.log_batch(self.run_id, tags=track.tags)
            self.tags_sent = track.tags
        if track.final is not None:
            await client.end_run(self.run_id, status=track.final, end=utc_now())
            self.ended = True
            logger.info("tracked run %s of %s ended %s", self.run_id, self.name, track.final)
            self.on_change()

    async def _send_metrics(self, client: ModelRegistry, *, final: bool) -> None:
        """Send the records from the mark on, in order; what the tracker was not handed comes from the archive
        (at the end, everything the sealed archive holds)."""
        assert self.run_id is not None and self.sent is not None
        if final or (self.pending and min(self.pending) > self.sent):
            await self._catch_up()
        while self.sent in self.pending:
            lines: list[str] = []
            rows: list[dict[str, Any]] = []
            index = self.sent
            while index in self.pending and len(rows) < ROWS_PER_REQUEST:
                lines.append(self.pending[index])
                rows += tracked_rows([self.pending[index]])
                index += 1
            await client.log_batch(self.run_id, metrics=rows, tags=[(SENT_TAG, str(index))])
            for done in range(self.sent, index):
                self.pending.pop(done, None)
            self.sent = index

    async def _catch_up(self) -> None:
        """The records from the mark on that are in the archive but were not handed to this tracker."""
        archive = await self._archive_for()
        if archive is None:
            if self.pending and self.sent is not None and min(self.pending) > self.sent:
                self.sent = min(self.pending)  # no archive: what was read before this process is not known
            return
        channels = await asyncio.to_thread(archive.read_all)
        assert self.sent is not None
        for index, line in enumerate(channels.get(METRICS_CHANNEL, [])):
            if index >= self.sent:
                self.pending.setdefault(index, line)
