"""The live view of a run that ``trainrun run`` shows while it trains.

Phase changes, every replica's lines with a ``[master-0]`` prefix (hidden by --quiet), and on a
terminal a live progress line (percent and ETA, epoch/step, loss, images/s: the percent and ETA from
the same ``trainrun.status.progress`` as the status, fed the lines as they arrive) kept at the bottom with rich; plain lines
when the output is a file or a pipe. A ``trainrun:metric {json}`` line is shown as people read it
(``epoch 1 · step 8 · train_loss 2.281 · images_per_sec 16,613``); the log file keeps it as written. Implements ``trainrun.metrics.observer.RunObserver``, which the local
runner and the cluster follower both report to.
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

from trainrun.metrics import METRIC_PREFIX, MetricSample, MetricSummary, is_master, structured_samples
from trainrun.metrics.progress import ProgressTracker
from trainrun.spec.status import Phase, TrainingRunStatus
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
        self.position: dict[str, Any] = {}
        self.latest: dict[str, float] = {}
        self.started = time.monotonic()
        self.shown_measurements: set[tuple[str, tuple[MetricSample, ...]]] = set()
        self.tracker = ProgressTracker()

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
        if self.quiet:
            return
        if samples:
            if (replica, samples) in self.shown_measurements:
                return  # the trainer's final line repeats its best epoch's: shown once already
            self.shown_measurements.add((replica, samples))
        prefix = Text(f"[{replica}] ", style=_replica_style(replica))
        self._print(prefix + Text(readable_metric_line(text) or text))

    def metrics(self, record: Mapping[str, Any], summary: MetricSummary) -> None:
        for key in ("epoch", "step"):
            if key in record:
                self.position[key] = record[key]
        self.latest = dict(summary.latest)
        if self.live is not None:
            self._refresh()
        elif self.quiet:
            # Without a live line, --quiet still shows the numbers, one line per metric line.
            values = " ".join(
                f"{key}={readable_number(value)}" for key, value in record.items() if key not in ("time", "replica")
            )
            print(f"{self.name}: {values}", flush=True)

    # -- drawing -----------------------------------------------------------------------------------------

    def _print(self, text: Text, *, stream_err: bool = False) -> None:
        if self.live is not None:
            self.live.console.print(text)
        else:
            print(text.plain, file=sys.stderr if stream_err else sys.stdout, flush=True)

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.refresh()

    def progress_line(self) -> Text:
        """``quickstart Running  42% · ETA 1:05 · epoch 2 · step 120 · train_loss 0.431 · 1,520 img/s · 0:42``."""
        elapsed = int(time.monotonic() - self.started)
        line = Text(f"{self.name} ", style="bold")
        phase = self.current_phase or Phase.PREPARING
        line.append(str(phase), style=PHASE_STYLES.get(phase, "bold cyan"))
        parts = []
        progress = progress_status(self.tracker.snapshot())
        if progress is not None and progress.percent is not None:
            parts.append(f"{progress.percent:.0f}%")
        eta = timestamp(progress.eta) if progress is not None else None
        if eta is not None:
            left = max(int((eta - datetime.now(UTC)).total_seconds()), 0)
            parts.append(f"ETA {left // 60}:{left % 60:02d}")
        parts += [f"{key} {self.position[key]}" for key in ("epoch", "step") if key in self.position]
        loss = next((name for name in LOSS_NAMES if name in self.latest), None)
        if loss is not None:
            parts.append(f"{loss} {self.latest[loss]:.4g}")
        if "images_per_sec" in self.latest:
            parts.append(f"{self.latest['images_per_sec']:,.0f} img/s")
        parts.append(f"{elapsed // 60}:{elapsed % 60:02d}")
        line.append("  " + " · ".join(parts))
        return line


class _ProgressLine:
    """Drawn afresh at every refresh of the live display, so that the clock moves between metric lines."""

    def __init__(self, display: RunDisplay) -> None:
        self.display = display

    def __rich__(self) -> Text:
        return self.display.progress_line()


def _replica_style(replica: str) -> str:
    if is_master(replica):
        return "bold cyan"
    index = replica.rpartition("-")[2]
    return REPLICA_STYLES[(int(index) if index.isdigit() else 0) % len(REPLICA_STYLES)]


def readable_metric_line(text: str) -> str | None:
    """A ``trainrun:metric {json}`` line as people read it, whatever came before the prefix kept; None for
    any other line (and for a metric line with no value in it)."""
    samples = structured_samples(text)
    if not samples:
        return None
    before = text[: text.find(METRIC_PREFIX)]
    position = [f"{name} {value}" for name, value in (("epoch", samples[0].epoch), ("step", samples[0].step)) if value is not None]
    values = [f"{sample.name} {readable_number(sample.value)}" for sample in samples]
    return before + " · ".join(position + values)


def readable_number(value: object) -> str:
    """``16,613`` for a large number, four significant digits for the others (``2.281``, ``0.0009861``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"
