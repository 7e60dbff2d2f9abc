"""Follows every replica's log of one run as tasks on kopf's event loop: metrics for status, a durable archive.

The controller (``trainrun.controller.operator``) keeps one :class:`RunLogs` per active run it leads,
hands it the run's pods from the watch cache on every reconcile (no polling: a pod that starts later,
a container restarted in place or a pod recreated under the same name shows up there) and, once the run
is done with its logs, calls :meth:`RunLogs.finish`, which seals the archive.

Each container start (pod uid, restart count) is read by one task through ``AsyncKube.log_batches``; a
stream that breaks off while its container runs is opened again and goes on after the last line
delivered (``trainrun.kube.streams.StreamPosition``). The streams are read *paced*
(``trainrun.kube.h2logs.Pace``): what they received is taken, parsed and queued right before each flush
(without an archive, once per flush interval), one batch per stream, instead of a pass per chunk the
server sends (a line is in the archive as soon as before); a sweep trial's chunk with a metric line is taken at
once, as every line is when the spec has metric expressions. A follower ticks only while something waits to
be taken or shipped: not while its pods are Pending, nor while their streams are open but quiet. Lines are
parsed by the same ``MetricParser`` as the local runner's; the latest values are offered to the controller, which writes them with the rest of
the status (coalesced: at most one status write per run every few seconds).

Durable as it goes: every ``flush_seconds`` (or sooner, past ``flush_bytes``) the lines read since the
last flush go to the run's archive as one segment (``trainrun.storage.logarchive``) together with the
position every container was read to, the metric summary and the metric series; a follower that starts
(after a crash, or a newly elected leader) resumes every stream exactly where the newest segment says:
no line lost while the pod lives, none written twice. Lines waiting for a flush are bounded: past
``PENDING_LIMIT_BYTES`` the streams wait (the kubelet keeps the log meanwhile). While the archive's store
refuses (a missing bucket, wrong keys, an unreachable endpoint) :attr:`RunLogs.problem` holds its words,
which the controller hands to the plan: the run's status says so, never only a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from trainrun.kube.aioclient import ApiError, AsyncKube
from trainrun.kube.h2logs import Pace
from trainrun.kube.streams import (
    LogTime,
    LogTimes,
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
from trainrun.metrics import METRIC_PREFIX, MetricParser, MetricSummary, is_master
from trainrun.metrics.observer import metric_record
from trainrun.metrics.progress import PROGRESS_PREFIX, ProgressTracker
from trainrun.metrics.signals import log_signal, mentions_failure
from trainrun.spec.annotations import SERIES_ANNOTATION, SWEEP_LABEL
from trainrun.spec.model import TrainingRun
from trainrun.status import replica_name
from trainrun.storage import StorageError
from trainrun.storage.logarchive import METRICS_CHANNEL, ArchiveState, Segment
from trainrun.storage.logstore import ArchiveConflict, LogArchive
from trainrun.storage.manifest import FileRecord

logger = logging.getLogger(__name__)

RESUME_MAX_DELAY_SECONDS = 30.0
FLUSH_SECONDS = 2.0
FLUSH_BYTES = 4 << 20
TICK_SLACK_SECONDS = 0.001  # a point of the flush interval this close ahead counts as reached
PENDING_LIMIT_BYTES = 32 << 20
FINISH_GRACE_SECONDS = 30.0  # for streams of containers that ended to deliver their last lines
QUIET_SECONDS = 2.0  # a stream of an ended container that delivers nothing for this long is at its end
# Without an archive the end is read for the last metrics only: a stream of an ended container that has not
# delivered a first batch in this long is given up (a log that stays empty) instead of waiting the whole grace.
METRICS_ONLY_SILENT_SECONDS = 5.0
# The longest wait between tries while the store refuses: what a follower knows only in memory meanwhile (lines,
# gaps it declared) is shipped at most this long after the store is back.
FLUSH_RETRY_MAX_SECONDS = 15.0
STOP_WRITE_GRACE_SECONDS = 10.0  # a follower stopping waits this long for a segment it is writing to land
GAP_MARKER = "[trainrun]"  # begins the line the archive gets where a replica's log could not be read on


@dataclass
class ContainerLog:
    """How far one container start's log was read (persisted in every segment's header)."""

    replica: str
    position: StreamPosition = field(default_factory=StreamPosition)
    lines: int = 0
    done: bool = False  # never opened again: read to its end, or given up (then ``gap``)
    gap: bool = False  # its end could not be read (the pod went first): lines after the position may be lost
    last_read: float | None = None  # loop time of the open stream's last batch, None before its first (not persisted)

    def to_json(self) -> dict[str, Any]:
        last = self.position.last
        return {
            "replica": self.replica,
            "time": None if last is None else last[0].isoformat(),
            "nanos": None if last is None else last[1],
            "atLast": self.position.delivered_at_last,
            "lines": self.lines,
            "done": self.done,
            "gap": self.gap,
        }

    @property
    def last_line_time(self) -> str | None:
        """When the last line read was written (RFC 3339 with milliseconds), if any was."""
        return None if self.position.last is None else _stamp_text(self.position.last)

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> ContainerLog:
        time = document.get("time")
        position = StreamPosition()
        if time is not None:
            position.last = (datetime.fromisoformat(str(time)), int(document.get("nanos") or 0))
            position.delivered_at_last = int(document.get("atLast") or 0)
        return cls(
            str(document["replica"]),
            position,
            int(document.get("lines") or 0),
            bool(document.get("done")),
            bool(document.get("gap")),
        )


def container_key(uid: str, restarts: int) -> str:
    return f"{uid}/{restarts}"


class RunLogs:
    """The followed logs of one run's replica pods and their archive, until :meth:`finish`."""

    def __init__(
        self,
        kube: AsyncKube,
        run: TrainingRun,
        archive: LogArchive | None,
        *,
        on_metrics: Callable[[], None],
        on_records: Callable[[int, list[str]], None] | None = None,
        flush_seconds: float = FLUSH_SECONDS,
        flush_bytes: int = FLUSH_BYTES,
    ) -> None:
        self.kube = kube
        self.run = run
        self.archive = archive
        self.on_metrics = on_metrics
        # Told of the metric records in the order of the archive's metrics channel, with the index of the first
        # (the experiment tracker's feed): once they are shipped, or at once without an archive.
        self.on_records = on_records
        self._unarchived_records = 0
        self.flush_seconds = flush_seconds
        self.flush_bytes = flush_bytes
        self.parser = MetricParser.from_definitions(run.spec.metrics)
        self.summary = MetricSummary(series_metric=run.metadata.annotations.get(SERIES_ANNOTATION))
        self.progress = ProgressTracker(since=datetime.now(UTC))  # steps and silences (trainrun.plan's hangs)
        self.containers: dict[str, ContainerLog] = {}
        self.shipped: dict[str, int] = {}
        self.sequence = 0
        self.sealed_files: tuple[FileRecord, ...] | None = None
        # Why the archive cannot be read or written now (the store's words), for the run's status; None while it works.
        self.problem: str | None = None
        # Another follower wrote the segment this one was about to (one stopped while its write was under way, the
        # write landing after this one had read the archive): this one stopped reading, and the controller
        # replaces it with one that resumes from the archive as it is now (what this one read unshipped is read
        # again from the positions there: nothing lost, nothing twice).
        self.superseded = False
        self._pending: dict[str, list[str]] = {}
        self._pending_bytes = 0
        self._dirty = False  # positions moved since the last segment
        self._room = asyncio.Event()
        self._room.set()
        self._flush_now = asyncio.Event()
        # Set while there is something to take or ship (a paced stream's data waits for the release, or lines are
        # queued): the interval's loop waits for it instead of ticking. A run Pending for minutes (its pods not
        # started), or one whose streams are open but quiet, would otherwise wake its follower every interval for
        # nothing: at 1,000 runs those wake-ups were a share of the operator's CPU.
        self._to_take = asyncio.Event()
        # The streams' data is taken right before each flush (without an archive: every flush interval); a trial's
        # at once when it holds a metric line (its sweep's pruner decides on each); with metric expressions, which
        # may match any line, as it comes. A run's own metrics reach its status at most an interval later (its
        # status writes are coalesced over a few seconds anyway), and a metric line every few lines no longer
        # wakes every stream as often as its chunks come.
        self._pace = Pace(wake_on=METRIC_PREFIX.encode() if SWEEP_LABEL in run.metadata.labels else None, on_due=self._to_take.set)
        if self.parser.definitions:
            self._pace.stop()
        self._loaded = asyncio.Event()
        self._pods: dict[str, Mapping[str, Any]] = {}  # by pod name, as last seen
        # The run's pods deleted after a container of theirs started, as last seen (by uid): a start among them that
        # neither the archive nor this follower knows of is declared a gap. A pod that started and went between two
        # passes (deleted within seconds: a cancellation, its node's pods collected) is never among the pods as
        # last seen; its start would be lost without a word. Those deleted while the archive's state could not be
        # read yet (the store down) are declared once it can be.
        self._gone: dict[str, Mapping[str, Any]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}  # the container starts being read now
        self._started: set[str] = set()  # every container start this follower began to read: never begun again
        self._closing = False
        self._flusher: asyncio.Task[None] | None = None
        self._writing: asyncio.Future[None] | None = None  # the segment write under way

    # ---- what the controller reads ----

    @property
    def metrics(self) -> dict[str, float] | None:
        return dict(self.summary.latest) if self.summary.latest else None

    @property
    def key_metric(self) -> str | None:
        return self.summary.key_metric()

    @property
    def gaps(self) -> list[ContainerLog]:
        """The container starts whose log could not be read to its end, in replica order."""
        return sorted((item for item in self.containers.values() if item.gap), key=lambda item: item.replica)

    # ---- life cycle ----

    def start(self) -> None:
        """Load the archive's state (retrying while the store cannot be read), then ship every few seconds;
        without an archive the streams are read at once, for metrics only, their data taken as often."""
        loop = asyncio.get_running_loop()
        if self.archive is None:
            self._loaded.set()  # nothing to resume from or ship to: read at once
            self._flusher = loop.create_task(self._take_every_interval(), name=f"logs {self.run.metadata.name}")
            return
        self._flusher = loop.create_task(self._ship(self.archive), name=f"logs {self.run.metadata.name}")

    async def _take_every_interval(self) -> None:
        while not self._closing:
            await self._to_take.wait()
            await asyncio.sleep(self._until_tick())
            self._to_take.clear()
            self._pace.release()

    def _phase(self) -> float:
        """How far into the flush interval this run's flushes fall, the same for a run whoever follows it. Runs
        followed from the same moment (an operator starting with a thousand) would otherwise all read and ship
        at once, every interval, and the last of them wait for the others."""
        return self.flush_seconds * (zlib.crc32((self.run.metadata.uid or self.run.metadata.name).encode()) % 1024) / 1024

    def _until_tick(self) -> float:
        """Seconds to this run's next point of the flush interval (:meth:`_phase`), on the loop's clock: where a
        follower that waited idle resumes, its phase is kept. A point less than ``TICK_SLACK_SECONDS`` ahead
        counts as reached: a timer may fire a hair before its time, and that point would read as still ahead
        (a second tick at once)."""
        until = self.flush_seconds - (asyncio.get_running_loop().time() - self._phase()) % self.flush_seconds
        return until + self.flush_seconds if until < TICK_SLACK_SECONDS else until

    def update(self, pods: Iterable[Mapping[str, Any]], gone: Iterable[Mapping[str, Any]] = ()) -> None:
        """Start reading every replica container that has started and is not read to its end yet; declare each
        container start of the ``gone`` pods (deleted, as last seen) that was never read."""
        self._pods = {str(pod["metadata"]["name"]): pod for pod in pods}
        self._gone.update((str(pod["metadata"].get("uid")), pod) for pod in gone)
        if self._closing or not self._loaded.is_set() or self.sealed_files is not None:
            return
        for name, pod in self._pods.items():
            restarts = started_container_restarts(pod)
            if restarts is None:
                continue
            uid = str(pod["metadata"].get("uid"))
            self._start(pod, name, uid, restarts, previous=False)
            earlier = self.containers.get(container_key(uid, restarts - 1))
            if restarts > 0 and earlier is not None and not earlier.done:
                # Restarted in place while no follower read it: the kubelet keeps the one start before.
                self._start(pod, name, uid, restarts - 1, previous=True)
            self._declare_starts_never_read(pod, uid, restarts)
        for uid, pod in self._gone.items():
            restarts = started_container_restarts(pod)
            if restarts is not None:
                self._declare_starts_never_read(pod, uid, restarts + 1, why="its pod was deleted before any operator read it")

    def _declare_starts_never_read(
        self, pod: Mapping[str, Any], uid: str, starts: int, why: str = "it restarted before any operator read it"
    ) -> None:
        """Declare each of the pod's first ``starts`` container starts that neither the archive nor this follower
        knows of: those before its current one ran and restarted while no operator read them (the store down, no
        leader, its node away), and without a declaration the new start's lines in the archive hid that they were
        ever there; a deleted pod's ran and went."""
        for earlier in range(starts):
            key = container_key(uid, earlier)
            if key not in self.containers:
                container = self.containers[key] = ContainerLog(replica_name(pod))
                self._declare_gap(container, why)

    def _declare_never_followed(self, ran: Iterable[str]) -> None:
        """Declare each replica of ``ran`` that has no container start here: it ran, and its pods came and went
        while no operator followed them, or the one that read them was killed before it could ship a line."""
        followed = {container.replica for container in self.containers.values()}
        for replica in ran:
            if replica not in followed:
                container = self.containers[container_key(f"unfollowed-{replica}", 0)] = ContainerLog(replica)
                self._declare_gap(container, "its pods were gone before any operator followed them")

    def _start(self, pod: Mapping[str, Any], name: str, uid: str, restarts: int, *, previous: bool) -> None:
        key = container_key(uid, restarts)
        container = self.containers.get(key)
        if key in self._started or (container is not None and container.done):
            return
        if container is None:
            container = self.containers[key] = ContainerLog(replica_name(pod))
        self._started.add(key)
        # Recorded in the archive at once, before a line is read: should this follower go (killed, leadership
        # lost) while the start cannot be read (its node away) and its pod go too, the follower taking over knows
        # of it from the archive and declares it a gap; unrecorded, the start would be lost without a word.
        self._dirty = True
        self._flush_now.set()
        task = self._tasks[key] = asyncio.get_running_loop().create_task(
            self._read(container, name, training_container_name(pod), uid, restarts, previous),
            name=f"logs {self.run.metadata.name}/{name}",
        )
        task.add_done_callback(functools.partial(self._read_ended, key))

    def _read_ended(self, key: str, task: asyncio.Task[None]) -> None:
        """A reader's task is let go as it ends. Kept, a cancelled one (its CancelledError holds its frames, which
        hold this follower) made every finished follower a reference cycle that only the garbage collector's
        rare full passes freed: 170 objects a run, the whole follower with its streams' state."""
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled() and task.exception() is not None:
            logger.warning("reading the log of %s stopped: %s", task.get_name(), task.exception())

    async def finish(self, grace: float = FINISH_GRACE_SECONDS, *, ran: Iterable[str] = ()) -> tuple[FileRecord, ...] | None:
        """Let the streams deliver their last lines, ship them, and seal the archive: its composed files.

        A container start whose log was not read to its end by then (its pod went first, or it did not end
        within ``grace``) gets a marker line where its lines stop and counts in :attr:`gaps`; so does a replica
        of ``ran`` (replicas known to have run: seen started, or ended by the job's counts) of which neither the
        archive nor this follower knows a container start. None when there is no archive. Raises ``StorageError`` when the store cannot take the
        last segment or the seal (the follower stays usable: call again later), and its ``ArchiveConflict`` when
        another follower wrote the archive (this one is :attr:`superseded`: a new follower resumes from the archive).
        """
        if self.archive is not None:
            try:
                await asyncio.wait_for(self._loaded.wait(), timeout=grace)
            except TimeoutError:
                raise StorageError(f"the log archive {self.archive.uri} cannot be read yet") from None
        if self.sealed_files is not None:
            return self.sealed_files
        self._raise_if_superseded()
        self._closing = True
        self._pace.stop()  # the ends are awaited now: every chunk taken as it comes
        await self._read_to_the_end(grace, silent_grace=grace if self.archive is not None else METRICS_ONLY_SILENT_SECONDS)
        for container in self.containers.values():
            if not container.done:  # its pod is gone (or it did not end in time): what it wrote after is not here
                self._declare_gap(container, "its pod was gone before the operator read it to its end")
        if self.archive is None:
            if self._flusher is not None:
                self._flusher.cancel()  # its interval's releases: nothing paced is left
                self._flusher = None
            return None
        self._declare_never_followed(ran)
        if self._flusher is not None:
            # Never cancelled in the middle of a write (its lines would be neither shipped nor kept):
            # told to ship once more and stop.
            self._flush_now.set()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        self._raise_if_superseded()
        try:
            await self._flush()
        except ArchiveConflict:
            self.superseded = True
            raise
        self.sealed_files = await self.archive.seal(self._state(self.sequence))
        return self.sealed_files

    async def _read_to_the_end(self, grace: float, *, silent_grace: float) -> None:
        """Wait up to ``grace`` for the open streams to end. A stream whose container has ended (by the pods as
        last seen) and that has delivered nothing for ``QUIET_SECONDS`` since its last batch is at its end
        even when the server keeps it open (kwok does): it counts as read to the end. One that never
        delivered a batch is not taken as ended: it is cut off (a gap) after ``silent_grace`` if its container
        has ended, like what is still open after ``grace``."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        deadline = began + grace
        pending = {key: task for key, task in self._tasks.items() if not task.done()}
        while pending and loop.time() < deadline:
            await asyncio.wait(pending.values(), timeout=min(QUIET_SECONDS, max(deadline - loop.time(), 0.0)))
            for key, task in list(pending.items()):
                container = self.containers[key]
                ended = not self._container_runs(key)
                quiet = container.last_read is not None and loop.time() - container.last_read >= QUIET_SECONDS
                ended_and_quiet = ended and quiet
                silent = ended and container.last_read is None and loop.time() - began >= silent_grace
                if task.done() or ended_and_quiet or silent:
                    if not task.done():
                        task.cancel()
                        container.done = ended_and_quiet  # a silent one is not: finish declares it a gap
                        self._dirty = True
                    del pending[key]
        for task in pending.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def _pod_is_here(self, pod_name: str, uid: str) -> bool:
        """Whether the pod of that name and uid is among the pods as last seen."""
        return is_same_pod(self._pods.get(pod_name), uid)

    def _container_runs(self, key: str) -> bool:
        """Whether the container start ``key`` (uid/restarts) still runs, by the pods as last seen."""
        uid, _, restarts = key.rpartition("/")
        pod = next((pod for pod in self._pods.values() if str(pod["metadata"].get("uid")) == uid), None)
        return still_running(pod, uid, int(restarts))

    def _raise_if_superseded(self) -> None:
        if self.superseded:
            raise ArchiveConflict(f"another follower wrote the log archive of {self.run.metadata.name}: this one is superseded")

    async def stop(self) -> None:
        """Stop reading at once (leadership lost, run deleted, operator shutting down): what was not
        shipped yet is read again by the next follower, from the positions in the archive. A segment being
        written is let land first (for up to ``STOP_WRITE_GRACE_SECONDS``)."""
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        await self._stop_reading()
        if self._writing is not None and not self._writing.done():
            # A segment under way lands before this follower is gone (a request sent reaches the store whether or
            # not its answer is awaited): the next follower reads it, instead of finding its number taken when
            # it writes its own (which would supersede it: its reading begun again).
            with contextlib.suppress(StorageError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._writing), STOP_WRITE_GRACE_SECONDS)

    async def _stop_reading(self) -> None:
        self._closing = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._room.set()

    # ---- reading ----

    async def _read(
        self, container: ContainerLog, pod_name: str, container_name: str, uid: str, restarts: int, previous: bool
    ) -> None:
        """Read one container start's log to its end, reopening a stream that breaks off (its container running
        or ended) or ends while its container runs."""
        position = container.position
        times = LogTimes()
        breaks = 0
        while True:  # read at least once, also when the follower is finishing: its last lines are wanted
            if self._unreadable_by_name(container, pod_name, uid, restarts, previous=previous):
                return
            since = position.since_seconds(datetime.now(UTC))
            position.reopen()
            container.last_read = None
            why = "it ended while the container runs"
            try:
                async for batch in self.kube.log_batches(
                    self.run.metadata.namespace,
                    pod_name,
                    container=container_name,
                    since_seconds=since,
                    previous=previous,
                    pace=self._pace,
                ):
                    container.last_read = asyncio.get_running_loop().time()
                    texts, stamped, last = _new_lines(batch, position, times)
                    if texts:
                        self._take(container, texts, stamped, last)
                        breaks = 0
                    if not self._room.is_set():
                        await self._room.wait()
            except ApiError as error:
                why = str(error)
                end = stream_end_after_error(error.status, previous=previous, pod_here=self._pod_is_here(pod_name, uid))
            else:
                end = StreamEnd.READ
            if end in (StreamEnd.POD_DELETED, StreamEnd.RESTARTED_AGAIN):  # its log is gone with it
                self._declare_gap(container, end.value)
                return
            if end is StreamEnd.GOES_ON:
                container.last_read = None  # not at its end, however quiet it has been since
            runs = still_running(self._pods.get(pod_name), uid, restarts)
            if end is StreamEnd.READ and (previous or not runs):
                container.done = True  # read to its end (also while finishing: its last lines were wanted)
                self._dirty = True
                # Recorded in the archive now, not at the next interval: a follower that took over in between
                # (this one killed) could no longer tell this start was read to its end, once its pod is gone.
                self._flush_now.set()
                return
            if self._closing and runs:
                return  # stopped while the container runs and the follower is finishing: a gap, said at the seal
            # The log goes on (its container running or not: an ended one's lines after a break are still the
            # kubelet's), or the stream ended while the container runs: read on from the position (while
            # finishing, until the seal's deadline cancels this reader, which is then a gap).
            breaks += 1
            logger.info("log stream of %s broke off (%s); reading on", pod_name, why)
            await asyncio.sleep(min(RESUME_MAX_DELAY_SECONDS, 0.5 * 2**breaks))

    def _unreadable_by_name(
        self, container: ContainerLog, pod_name: str, uid: str, restarts: int, *, previous: bool
    ) -> bool:
        """Whether the pod now under the start's name says a stream opened by that name would not read this start
        (declared a gap then). Asked apart from the reader: a local of its frame would keep the pod as it was for
        as long as the stream lasts, a stale copy of every followed pod beside the cache's (4 a run)."""
        now_named = self._pods.get(pod_name)
        if now_named is not None and not is_same_pod(now_named, uid):
            # Another pod took its name (a replica created again): this one is gone with its log, and a stream
            # opened by the name would read the new pod's lines as this start's.
            self._declare_gap(container, StreamEnd.POD_DELETED.value)
            return True
        if not previous and restarted_since(now_named, uid, restarts):
            # Restarted while the stream was away (its node was, say): a stream opened as before would read the
            # new start's lines as this one's. The rest of this start is in the kubelet's previous log, but
            # read beside the new start's reader its lines would interleave with that start's in the archive.
            self._declare_gap(container, "the container restarted before the operator read it to its end")
            return True
        return False

    def _take(self, container: ContainerLog, texts: list[str], stamped: list[str], last: LogTime | None) -> None:
        """Queue a container's new lines for the archive and parse them for metrics, progress and failures.

        Whole batches at a time: one search over the batch says whether any line can carry a metric, a
        progress report or a failure; only such lines are parsed one by one (all of them when the spec has
        metric expressions, which may match anything), each at its own kubelet time (``stamped``: the lines
        as they came, times in front), and the progress tracker also sees the batch's last line, for the
        replica's activity."""
        replica = container.replica
        container.lines += len(texts)
        self._dirty = True
        changed = False
        progress = self.progress
        joined = "\n".join(texts)
        candidates: Iterable[int]
        if self.parser.definitions or mentions_failure(joined):
            candidates = range(len(texts))
        elif METRIC_PREFIX in joined or PROGRESS_PREFIX in joined:
            candidates = [index for index, text in enumerate(texts) if METRIC_PREFIX in text or PROGRESS_PREFIX in text]
        else:
            candidates = ()
        last_taken = None
        for index in candidates:
            text = texts[index]
            samples = self.parser.parse(text)
            if not samples and PROGRESS_PREFIX not in text and log_signal(text) is None:
                continue
            # Its own time, not the batch's: steps read together (a follower catching up) keep their pace.
            stamp = parse_log_time(stamped[index].partition(" ")[0])
            changed |= progress.take(replica, text, samples, _line_time(stamp))
            last_taken = index
            if samples:
                changed |= self.summary.add(samples, from_master=is_master(replica))
                record = json.dumps(metric_record(replica, samples, at=_stamp_text(stamp)))
                self._queue(METRICS_CHANNEL, [record], len(record) + 1)
                if self.archive is None and self.on_records is not None:
                    self.on_records(self._unarchived_records, [record])
                    self._unarchived_records += 1
        if last_taken != len(texts) - 1:
            progress.saw(replica, _line_time(last))  # the batch's last line said nothing the loop looked at already
        self._queue(replica, texts, len(joined) + 1)
        if changed:
            self.on_metrics()

    def _declare_gap(self, container: ContainerLog, why: str) -> None:
        """Say in the replica's archived log, where its lines end, that what came after could not be read."""
        container.done = container.gap = True
        self._dirty = True
        self._flush_now.set()  # recorded at once: a follower taking over could not tell, its pod being gone
        after = container.last_line_time or "its start"
        marker = f"{GAP_MARKER} {container.replica}: the lines after {after} could not be read ({why}); some may be missing here"
        self._queue(container.replica, [marker], len(marker) + 1)

    def _queue(self, channel: str, texts: list[str], size: int) -> None:
        """Hold lines (``size`` bytes with their newlines) for the next segment."""
        if self.archive is None:
            return
        self._pending.setdefault(channel, []).extend(texts)
        self._pending_bytes += size
        self._to_take.set()
        if self._pending_bytes >= self.flush_bytes:
            self._flush_now.set()
        if self._pending_bytes >= PENDING_LIMIT_BYTES:
            self._room.clear()

    # ---- shipping ----

    async def _ship(self, archive: LogArchive) -> None:
        """Load the archive's state, then write a segment every flush interval (sooner when it is big)."""
        failures = 0
        while True:
            try:
                loaded = await archive.load()
                break
            except (StorageError, ValueError) as error:
                failures += 1
                self._trouble(str(error))
                logger.warning("cannot read the log archive of %s yet: %s", self.run.metadata.name, error)
                await asyncio.sleep(min(FLUSH_RETRY_MAX_SECONDS, self.flush_seconds * 2**failures))
        self._trouble(None)
        self._restore(loaded.state)
        if loaded.sealed:
            self.sealed_files = loaded.files
        self._loaded.set()
        self.update(self._pods.values())  # with the gone pods it was handed
        if self.sealed_files is not None:
            return
        failures = 0
        while not self._closing:
            wait = self._until_tick() if failures == 0 else min(FLUSH_RETRY_MAX_SECONDS, self.flush_seconds * 2**failures)
            if not (self._to_take.is_set() or self._pending or self._dirty or self._flush_now.is_set()):
                await self._idle()  # nothing to take or ship: no tick until something is, or a flush is asked for
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._flush_now.wait()
            self._flush_now.clear()
            await self._take_streams()
            try:
                await self._flush()
                if not self._pace.due:
                    self._to_take.clear()  # taken and shipped (what came meanwhile keeps it set)
                failures = 0
                self._trouble(None)
            except ArchiveConflict as error:
                logger.warning("the logs of %s are followed anew from their archive: %s", self.run.metadata.name, error)
                self.superseded = True
                await self._stop_reading()
                self.on_metrics()  # a pass, which replaces this follower
                return
            except StorageError as error:
                failures = min(failures + 1, 5)
                self._trouble(f"{error} (the lines are kept and sent again)")
                logger.warning("could not ship the logs of %s (kept, tried again): %s", self.run.metadata.name, error)

    async def _idle(self) -> None:
        """Until there is something to take or ship, or a flush is asked for (a start recorded, a gap declared,
        the follower finishing)."""
        to_take = asyncio.ensure_future(self._to_take.wait())
        flush = asyncio.ensure_future(self._flush_now.wait())
        try:
            await asyncio.wait((to_take, flush), return_when=asyncio.FIRST_COMPLETED)
        finally:
            to_take.cancel()
            flush.cancel()

    async def _take_streams(self) -> None:
        """Have every paced stream's reader take what arrived since the last flush (they run before this
        returns: each was woken before this coroutine's own next step)."""
        self._pace.release()
        await asyncio.sleep(0)

    def _trouble(self, problem: str | None) -> None:
        """Keep why the archive fails (None: it works again) and have the status say so when that changes."""
        if problem != self.problem:
            self.problem = problem
            self.on_metrics()

    def _restore(self, state: ArchiveState) -> None:
        self.sequence = state.sequence
        self.containers = {key: ContainerLog.from_json(value) for key, value in state.positions.items()}
        self.shipped = dict(state.shipped)
        self.summary = MetricSummary(
            latest=dict(state.metrics.get("latest", {})),
            master=dict(state.metrics.get("master", {})),
            series_metric=self.summary.series_metric,  # its earlier values are in the run's status.series
        )
        if self.summary.latest:
            self.on_metrics()

    def _state(self, sequence: int) -> ArchiveState:
        return ArchiveState(
            sequence=sequence,
            positions={key: container.to_json() for key, container in self.containers.items()},
            metrics={"latest": dict(self.summary.latest), "master": dict(self.summary.master)},
            shipped=dict(self.shipped),
        )

    async def _flush(self) -> None:
        """Write what was read since the last segment, with the positions after it, as the next segment."""
        if self.archive is None or not (self._dirty or self._pending):
            return
        blocks, self._pending = self._pending, {}
        size, self._pending_bytes = self._pending_bytes, 0
        self._dirty = False
        for channel, lines in blocks.items():
            self.shipped[channel] = self.shipped.get(channel, 0) + len(lines)
        segment = Segment(self._state(self.sequence + 1), {channel: tuple(lines) for channel, lines in blocks.items()})
        self._writing = asyncio.ensure_future(self.archive.write(segment))
        try:
            await asyncio.shield(self._writing)  # stop() lets it land (the store would take it anyway)
        except StorageError:
            # Put the lines back in front of those read meanwhile: the next segment carries both.
            for channel, lines in blocks.items():
                self.shipped[channel] -= len(lines)
                self._pending[channel] = [*lines, *self._pending.get(channel, [])]
            self._pending_bytes += size
            self._dirty = True
            raise
        self.sequence += 1
        if self._pending_bytes < PENDING_LIMIT_BYTES:
            self._room.set()
        records = blocks.get(METRICS_CHANNEL)
        if records and self.on_records is not None:
            self.on_records(self.shipped[METRICS_CHANNEL] - len(records), records)


def _new_lines(batch: list[str], position: StreamPosition, times: LogTimes) -> tuple[list[str], list[str], LogTime | None]:
    """The lines of a batch not delivered yet, without their kubelet times; the same lines as they came (times in
    front); and the last one's time.

    A container's lines come in time order, so a batch whose first line is newer than the position is
    new as a whole: its times are parsed at its ends only (the common case, a stream that is read on).
    Otherwise (a reopened stream replaying what was read) line by line."""
    last_text = batch[-1].partition(" ")[0]
    last = times.parse(last_text)
    first = last if len(batch) == 1 else times.parse(batch[0].partition(" ")[0])
    if first is not None and last is not None and (position.last is None or first > position.last):
        prefix = last_text + " "
        at_last = 0
        for line in reversed(batch):
            if not line.startswith(prefix):
                break
            at_last += 1
        position.advance(last, at_last)
        return [line.partition(" ")[2] for line in batch], batch, last
    texts = []
    kept = []
    newest = None
    for stamped in batch:
        stamp_text, _, text = stamped.partition(" ")
        stamp = times.parse(stamp_text)
        if stamp is None:
            texts.append(stamped)  # no time in front (not a kubelet): keep the line whole
            kept.append(stamped)
        elif position.take(stamp):
            texts.append(text)
            kept.append(stamped)
            newest = stamp
    return texts, kept, newest


def _line_time(stamp: LogTime | None) -> datetime:
    """A line's kubelet time to the microsecond (now when it has none): a pace is measured between such times."""
    return stamp[0] + timedelta(microseconds=stamp[1] // 1000) if stamp is not None else datetime.now(UTC)


_SECOND_TEXTS: dict[datetime, str] = {}  # recent seconds formatted (the lines of a second share it)


def _stamp_text(stamp: LogTime | None) -> str:
    """A line's kubelet time as a metric record's ``time`` (RFC 3339, milliseconds, as the local runner's)."""
    if stamp is None:
        return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    second, nanos = stamp
    text = _SECOND_TEXTS.get(second)
    if text is None:
        if len(_SECOND_TEXTS) > 256:
            _SECOND_TEXTS.clear()
        text = _SECOND_TEXTS[second] = f"{second.astimezone(UTC):%Y-%m-%dT%H:%M:%S}"
    return f"{text}.{nanos // 1_000_000:03d}Z"
