"""A coalescing work queue of run keys with delayed re-adds, as controller-runtime's, on asyncio.

Used by ``trainrun.controller.operator``: every watch event adds its run's key; a key already waiting
is not added twice, and a key being reconciled is reconciled once more afterwards, so a burst of pod
events for one run gives one reconcile, and one run is never reconciled by two workers at once.
``add(key, after)`` keeps only the earliest pending deadline per key (requeue-after), none for a key
already waiting for a worker, and a key added for now drops its deadline: the pass it waits for reads the
caches as they are when it begins, so it sees every change that came before. Failures are
retried with a per-key exponential back-off. Workers run only while ``active`` (the leader).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Hashable

logger = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 120.0


class WorkQueue:
    """Keys to reconcile; ``handle(key)`` returns when to look at the key again (None: not unless told)."""

    def __init__(self, handle: Callable[[Hashable], Awaitable[float | None]], *, workers: int) -> None:
        self.handle = handle
        self.workers = workers
        self._ready: deque[Hashable] = deque()
        self._queued: set[Hashable] = set()
        self._running: set[Hashable] = set()
        self._again: set[Hashable] = set()
        self._timers: dict[Hashable, tuple[float, asyncio.TimerHandle]] = {}
        self._failures: dict[Hashable, int] = {}
        self._wakeup = asyncio.Event()
        self.active = asyncio.Event()

    def __len__(self) -> int:
        return len(self._ready)

    def add(self, key: Hashable, after: float = 0.0) -> None:
        """Reconcile key now (after=0) or once ``after`` seconds have passed, whichever comes first."""
        loop = asyncio.get_running_loop()
        if after > 0:
            if key in self._queued:
                return  # its pass, not begun yet, reads the caches as they are when it begins
            deadline = loop.time() + after
            pending = self._timers.get(key)
            if pending is not None:
                if pending[0] <= deadline:
                    return
                pending[1].cancel()
            self._timers[key] = (deadline, loop.call_at(deadline, self._due, key))
            return
        self._drop_timer(key)  # the pass now decides with what the timer's pass would have seen
        if key in self._running:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._ready.append(key)
            self._wakeup.set()

    def forget(self, key: Hashable) -> None:
        """Drop the key's timer and back-off (its run is gone)."""
        self._drop_timer(key)
        self._failures.pop(key, None)

    def _drop_timer(self, key: Hashable) -> None:
        pending = self._timers.pop(key, None)
        if pending is not None:
            pending[1].cancel()

    def _due(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def run(self) -> None:
        """The workers, until cancelled."""
        await asyncio.gather(*(self._worker() for _ in range(self.workers)))

    async def _worker(self) -> None:
        while True:
            await self.active.wait()
            if not self._ready:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            key = self._ready.popleft()
            self._queued.discard(key)
            self._running.add(key)
            try:
                after = await self.handle(key)
                self._failures.pop(key, None)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - one run's failure must never stop the workers
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                after = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (failures - 1))
                logger.warning("reconciling %s failed (%s: %s); again in %.0f s", key, type(error).__name__, error, after)
            finally:
                self._running.discard(key)
            if key in self._again:
                self._again.discard(key)
                self.add(key)
            elif after is not None:
                self.add(key, after * random.uniform(0.9, 1.1))
