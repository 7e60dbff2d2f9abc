"""Following a run: what it reports as it goes (``RunObserver``), its metric records, how it ends.

Both backends of ``trainrun.Client`` report to a ``RunObserver``: the local runner
(``trainrun.local.runner``) and the cluster follower (``trainrun.client.cluster``); the CLI's live
view (``trainrun.cli.display``) implements it. They share the metric record written to metrics.jsonl
and shown by ``trainrun metrics --history`` (:func:`metric_record`, :func:`distinct_records`) and the exit code of a followed
run (:func:`exit_code`), so neither backend leans on the other. Pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from trainrun.metrics import MetricSample, MetricSummary
from trainrun.spec.status import Phase, TrainingRunStatus


class RunObserver(Protocol):
    """What a followed run reports as it goes (the CLI shows it; the detached local runner ignores it)."""

    def notice(self, text: str) -> None: ...

    def phase(self, status: TrainingRunStatus) -> None: ...

    def line(self, replica: str, text: str) -> None: ...

    def metrics(self, record: Mapping[str, Any], summary: MetricSummary) -> None: ...

    def stopping(self) -> None:
        """The replicas still running are being stopped (a cancel, a failed replica): what they print from
        now on is how they go (a launcher's warnings and tracebacks), in their logs in full."""
        ...


class SilentObserver:
    """Reports nothing: the run folder (or the cluster's status) has everything."""

    def notice(self, text: str) -> None:
        return None

    def phase(self, status: TrainingRunStatus) -> None:
        return None

    def line(self, replica: str, text: str) -> None:
        return None

    def metrics(self, record: Mapping[str, Any], summary: MetricSummary) -> None:
        return None

    def stopping(self) -> None:
        return None


def metric_record(replica: str, samples: Sequence[MetricSample], *, at: str | None = None) -> dict[str, Any]:
    """One metric record: when (``time``, if at is given), which replica, its position, then the values."""
    record: dict[str, Any] = {} if at is None else {"time": at}
    record["replica"] = replica
    for sample in samples:
        if sample.epoch is not None:
            record["epoch"] = sample.epoch
        if sample.step is not None:
            record["step"] = sample.step
    record.update({sample.name: sample.value for sample in samples})
    return record


def distinct_records(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The records in order, each the first time it was measured: a record with the same replica,
    position and values as an earlier one (the trainer's final line repeats its best epoch's) is the
    same measurement, whatever its ``time``."""
    seen: set[str] = set()
    distinct = []
    for record in history:
        key = json.dumps({name: value for name, value in record.items() if name != "time"}, sort_keys=True)
        if key not in seen:
            seen.add(key)
            distinct.append(dict(record))
    return distinct


def exit_code(phase: Phase | None) -> int:
    """The exit code of a followed run (``trainrun run``): 0 Completed, 130 Cancelled (as after Ctrl-C), 1 otherwise."""
    if phase is Phase.COMPLETED:
        return 0
    if phase is Phase.CANCELLED:
        return 130
    return 1
