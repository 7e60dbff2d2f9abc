"""Metric lines on stdout, metrics.jsonl, and progress lines without numbers (rank 0 only).

Called by `trainrun_trainer.training`. A metric line is the literal prefix `trainrun:metric `
and one JSON object: integer `epoch` and `step`, then numeric samples (the contract that
trainrun.metrics and users' regexes parse; tests/training/test_operator_contract.py holds the prefix
and the format to that parser). A progress line (`trainrun:progress {"step": ..., "total_steps": ...,
"epoch": ..., "epochs": ...}`, at start and after a resume) gives trainrun the run's size, for its
percent and ETA; `{"stage": "exporting model"}` says what the run does once its steps are done. Every object also goes to $OUTPUT_DIR/metrics.jsonl,
appended, so a resumed run continues the same file.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TextIO

METRIC_PREFIX = "trainrun:metric "
PROGRESS_PREFIX = "trainrun:progress "
METRICS_FILE = "metrics.jsonl"


def _rounded(value: float | int | bool) -> float | int | bool:
    return float(f"{value:.6g}") if isinstance(value, float) else value


class Reporter:
    """Writes metric samples and progress text; silent on every rank but 0."""

    def __init__(self, *, output_dir: Path, enabled: bool, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self.metrics_path = output_dir / METRICS_FILE

    def metrics(self, *, epoch: int, step: int, samples: dict[str, float | int | bool]) -> None:
        """One metric line plus its metrics.jsonl record. NaN and infinity are left out: JSON has
        no numbers for them (a diverged loss still shows as nan on the progress line)."""
        if not self.enabled:
            return
        record: dict[str, float | int | bool] = {"epoch": epoch, "step": step}
        record.update({name: _rounded(value) for name, value in samples.items() if math.isfinite(value)})
        text = json.dumps(record, separators=(", ", ": "), allow_nan=False)
        self.stream.write(METRIC_PREFIX + text + "\n")
        self.stream.flush()
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
        with self.metrics_path.open("a", encoding="utf-8") as handle:
            handle.write(text + "\n")

    def progress(self, *, step: int, total_steps: int, epoch: int, epochs: int) -> None:
        """The progress line trainrun reads the run's size from (percent and ETA), printed at start and resume."""
        self._progress_line({"step": step, "total_steps": total_steps, "epoch": epoch, "epochs": epochs})

    def stage(self, what: str) -> None:
        """A progress line saying what the run does while no step moves (``exporting model``)."""
        self._progress_line({"stage": what})

    def _progress_line(self, fields: dict[str, int | str]) -> None:
        if self.enabled:
            self.stream.write(PROGRESS_PREFIX + json.dumps(fields, separators=(", ", ": ")) + "\n")
            self.stream.flush()

    def say(self, message: str) -> None:
        """A progress line for people reading the log."""
        if self.enabled:
            self.stream.write(message + "\n")
            self.stream.flush()
