"""Log lines as people read them: the machine-readable ``trainrun:metric`` and ``trainrun:progress`` lines
in words, every other line as written.

``trainrun:metric {"epoch": 1, "step": 8, "train_loss": 2.28092}`` reads ``epoch 1 · step 8 · train_loss
2.281``; ``trainrun:progress {"step": 0, "total_steps": 576, "epoch": 1, "epochs": 3}`` reads ``progress:
epoch 1 of 3 · step 0 of 576``. Used by the live view of ``trainrun run`` (``trainrun.cli.display``) and by
``trainrun logs`` (whose ``--raw`` prints the lines as written, as the log files keep them). Pure.
"""

from __future__ import annotations

from trainrun.metrics import METRIC_PREFIX, structured_samples
from trainrun.metrics.progress import PROGRESS_PREFIX, progress_line


def readable_line(text: str) -> str:
    """The line in words when it is a metric or progress line, else as written."""
    return readable_metric_line(text) or readable_progress_line(text) or text


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


def readable_progress_line(text: str) -> str | None:
    """A ``trainrun:progress {json}`` line as people read it (``progress: epoch 1 of 3 · step 0 of 576``, or
    its stage: ``progress: exporting model``); None for any other line, and for one that says nothing."""
    announced = progress_line(text)
    if announced is None:
        return None
    counts = (("epoch", announced.epoch, announced.epochs), ("step", announced.step, announced.total_steps))
    said = [f"{name} {value}" + (f" of {total}" if total else "") for name, value, total in counts if value is not None]
    said += [announced.stage] if announced.stage is not None else []
    if not said:
        return None
    return text[: text.find(PROGRESS_PREFIX)] + "progress: " + " · ".join(said)


def readable_number(value: object) -> str:
    """``16,613`` for a large number, four significant digits for the others (``2.281``, ``0.0009861``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"
