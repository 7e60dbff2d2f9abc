"""The live view of a run that ``trainrun run`` shows while it trains.

Phase changes, every replica's lines with a ``[master-0]`` prefix (hidden by --quiet), and on a
terminal a live progress line kept at the bottom with rich (percent and ETA, or the stage the program
announced, epoch/step, loss, images/s, elapsed time, fitted to the terminal's width; the percent and ETA
from the same ``trainrun.status.progress`` as the status, fed the lines as they arrive); plain lines
when the output is a file or a pipe. Metric and progress lines are shown in words
(``trainrun.cli.lines``); the log file keeps them as written. Implements
``trainrun.metrics.observer.RunObserver``, which the local runner and the cluster follower both report to.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from trainrun.cli.lines import readable_line, readable_number
from trainrun.metrics import MetricSample, MetricSummary, is_master, structured_samples
from trainrun.metrics.progress import ProgressTracker
from trainrun.spec.status import Phase, TrainingRunStatus
from trainrun.status.observe import replica_sort_key
from trainrun.status.progress import progress_status
from trainrun.status.shapes import timestamp

PHASE_STYLES = {
    Phase.COMPLETED: "bold green",
    Phase.FAILED: "bold red",
    Phase.CANCELLED: "bold yellow",
}
REPLICA_STYLES = ("cyan", "magenta", "blue", "green", "yellow")
LOSS_NAMES = ("train_loss", "loss", "val_loss")


class RunDisplay:
    """Shows a run as it goes; use as a context manager around ``Client.run``."""

    def __init__(self, *, name: str, quiet: bool = False, console: Console | None = None) -> None:
        self.name = name
        self.quiet = quiet
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.live: Live | None = None
        self.current_phase: Phase | None = None
        self.latest: dict[str, float] = {}
        self.started = time.monotonic()
        self.shown_measurements: set[tuple[str, tuple[MetricSample, ...]]] = set()
        self.tracker = ProgressTracker()
        # Once the replicas are being stopped: how many lines each printed since (shown as one line each).
        self.held: dict[str, int] | None = None

    def __enter__(self) -> RunDisplay:
        if self.console.is_terminal:
            self.live = Live(_ProgressLine(self), console=self.console, refresh_per_second=4, transient=True)
            self.live.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    # -- RunObserver -------------------------------------------------------------------------------------

    def notice(self, text: str) -> None:
        self._print(Text(f"note: {text}", style="dim"))

    def phase(self, status: TrainingRunStatus) -> None:
        self.current_phase = status.phase
        if self.held is not None and status.phase is not None and status.phase.finished:
            self._show_held()
        style = PHASE_STYLES.get(status.phase, "bold") if status.phase else "bold"
        line = Text(f"{self.name}: ", style="bold")
        line.append(str(status.phase), style=style)
        if status.message:
            line.append(f"  {status.message}")
        self._print(line, stream_err=status.phase is Phase.FAILED)
        self._refresh()

    def line(self, replica: str, text: str) -> None:
        samples = tuple(structured_samples(text))
        self.tracker.take(replica, text, samples, datetime.now(UTC))
        if self.held is not None:
            self.held[replica] = self.held.get(replica, 0) + 1  # how it goes: in its log, counted here
            return
        if self.quiet:
            return
        if samples:
            if (replica, samples) in self.shown_measurements:
                return  # the trainer's final line repeats its best epoch's: shown once already
            self.shown_measurements.add((replica, samples))
        prefix = Text(f"[{replica}] ", style=_replica_style(replica))
        self._print(prefix + Text(readable_line(text)))

    def metrics(self, record: Mapping[str, Any], summary: MetricSummary) -> None:
        self.latest = dict(summary.latest)
        if self.live is not None:
            self._refresh()
        elif self.quiet:
            # Without a live line, --quiet still shows the numbers, one line per metric line.
            values = " ".join(
                f"{key}={readable_number(value)}" for key, value in record.items() if key not in ("time", "replica")
            )
            print(f"{self.name}: {values}", flush=True)

    def stopping(self) -> None:
        """From now on a replica's lines are how it stops (torchrun's warnings, tracebacks of the signal):
        held back, and one line per replica says how many there were once the run has finished."""
        self.held = {}
        self._refresh()

    # -- drawing -----------------------------------------------------------------------------------------

    def _show_held(self) -> None:
        held, self.held = self.held or {}, None
        if self.quiet:
            return  # no replica lines, these neither
        for replica in sorted(held, key=replica_sort_key):
            said = f"{held[replica]} line{'s' if held[replica] != 1 else ''} while stopping, in its log"
            self._print(Text(f"[{replica}] ", style=_replica_style(replica)) + Text(f"stopped ({said})", style="dim"))

    def _print(self, text: Text, *, stream_err: bool = False) -> None:
        if self.live is not None:
            self.live.console.print(text)
        else:
            print(text.plain, file=sys.stderr if stream_err else sys.stdout, flush=True)

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.refresh()

    def progress_line(self) -> Text:
        """``quickstart Running  42% · ETA 1:05 · epoch 2 · step 120 · train_loss 0.431 · 1,520 img/s · 0:42``,
        cut to the console's width by leaving out the parts that matter least (epoch, throughput, loss...).

        The percent, step and epoch come from one snapshot of the tracker, so they always agree; a stage
        the program announced (``exporting model``) stands in for the ETA until its next step; a finished
        run has no ETA."""
        elapsed = int(time.monotonic() - self.started)
        phase = self.current_phase or Phase.PREPARING
        snapshot = self.tracker.snapshot()
        progress = progress_status(snapshot)
        parts: list[tuple[int, str]] = []  # (how soon it is left out when the line is too wide, text)
        if progress is not None and progress.percent is not None:
            parts.append((0, f"{progress.percent:.0f}%"))
        eta = timestamp(progress.eta) if progress is not None and not phase.finished else None
        if self.held is not None:
            parts.append((0, "stopping"))
        elif snapshot.stage is not None and phase is Phase.RUNNING:
            parts.append((0, snapshot.stage))
        elif eta is not None:
            left = max(int((eta - datetime.now(UTC)).total_seconds()), 0)
            parts.append((1, f"ETA {clock(left)}"))
        if snapshot.epoch is not None:
            parts.append((5, f"epoch {snapshot.epoch}"))
        if snapshot.step is not None:
            parts.append((2, f"step {snapshot.step}"))
        loss = next((name for name in LOSS_NAMES if name in self.latest), None)
        if loss is not None:
            parts.append((3, f"{loss} {self.latest[loss]:.4g}"))
        if "images_per_sec" in self.latest:
            parts.append((4, f"{self.latest['images_per_sec']:,.0f} img/s"))
        parts.append((2, clock(elapsed)))
        head = f"{self.name} {phase}"
        line = Text(f"{self.name} ", style="bold", no_wrap=True, overflow="ellipsis")
        line.append(str(phase), style=PHASE_STYLES.get(phase, "bold cyan"))
        line.append(fit(head, parts, width=self.console.width)[len(head) :])
        return line


class _ProgressLine:
    """Drawn afresh at every refresh of the live display, so that the clock moves between metric lines."""

    def __init__(self, display: RunDisplay) -> None:
        self.display = display

    def __rich__(self) -> Text:
        return self.display.progress_line()


def clock(seconds: int) -> str:
    """``0:42``, ``12:05``, ``1:02:03``."""
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def fit(head: str, parts: list[tuple[int, str]], *, width: int) -> str:
    """``head  part · part · ...`` in at most width characters: the parts with the highest rank are left out
    first, the others keep their order. Only the head itself may be too wide (its end is cut by the caller)."""
    kept = list(parts)
    while True:
        text = head + ("  " + " · ".join(part for _, part in kept) if kept else "")
        if len(text) <= width or not kept:
            return text
        kept.remove(max(kept, key=lambda part: part[0]))


def _replica_style(replica: str) -> str:
    if is_master(replica):
        return "bold cyan"
    index = replica.rpartition("-")[2]
    return REPLICA_STYLES[(int(index) if index.isdigit() else 0) % len(REPLICA_STYLES)]
