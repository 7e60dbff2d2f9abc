"""The training throughput the trainer reports: images per second over the last few seconds of training.

Called by `trainrun_trainer.training` at every metric line. One print window (10 steps by default) can
last a few tens of milliseconds on a fast machine, so its own rate swings with whatever else ran in that
instant (another process, the log being written); the rate over the recent windows that add up to at
least `SPAN_SECONDS` of training is the number worth reading and plotting. Time outside the windows
(validation, checkpoints) is never counted. Pure: the caller measures.
"""

from __future__ import annotations

from collections import deque

SPAN_SECONDS = 5.0


class Throughput:
    """Images per second over the latest windows that cover at least ``span_seconds`` (all of them before)."""

    def __init__(self, span_seconds: float = SPAN_SECONDS) -> None:
        self.span_seconds = span_seconds
        self._windows: deque[tuple[float, float]] = deque()  # (images, seconds) of each print window

    def add(self, images: float, seconds: float) -> float:
        """Record one window's images and duration; the smoothed rate, this window included."""
        self._windows.append((images, seconds))
        # The oldest window goes once the ones after it cover the span on their own.
        while len(self._windows) > 1 and sum(taken for _, taken in list(self._windows)[1:]) >= self.span_seconds:
            self._windows.popleft()
        total_seconds = sum(taken for _, taken in self._windows)
        return sum(count for count, _ in self._windows) / total_seconds if total_seconds > 0 else 0.0
