"""Log line -> metric samples: the structured ``trainrun:metric {json}`` lines and the spec's regexes.

Used by the operator's log follower and by the local runner on every line of every replica, so both
report the same numbers. Pure.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from trainrun.spec.model import MetricDefinition

METRIC_PREFIX = "trainrun:metric "
POSITION_KEYS = ("epoch", "step")
# Shown in `kubectl get tr`, the first one a run has reported wins.
KEY_METRIC_PREFERENCE = ("val_loss", "train_loss", "val_accuracy", "loss")
# The points of a run's series metric kept (in memory and in status.series): the latest ones.
SERIES_POINTS = 100


@dataclass(frozen=True)
class MetricSample:
    """One value of one metric, at the position (epoch, step) the program reported, if any."""

    name: str
    value: float
    epoch: int | None = None
    step: int | None = None


@dataclass(frozen=True)
class MetricParser:
    """Parses log lines with the structured prefix and the spec's user-defined regular expressions."""

    definitions: tuple[tuple[str, re.Pattern[str]], ...] = ()

    @classmethod
    def from_definitions(cls, definitions: Iterable[MetricDefinition]) -> MetricParser:
        return cls(tuple((item.name, re.compile(item.regex)) for item in definitions))

    def parse(self, line: str) -> list[MetricSample]:
        """Every metric sample on one log line (often none)."""
        samples = structured_samples(line)
        for name, pattern in self.definitions:
            match = pattern.search(line)
            if match is None:
                continue
            text = match.group("value") if "value" in pattern.groupindex else match.group(1)
            value = _number(text)
            if value is not None:
                samples.append(MetricSample(name=name, value=value))
        return samples


def structured_samples(line: str) -> list[MetricSample]:
    """Samples of a ``trainrun:metric {json}`` line; anything else (or malformed JSON) gives none."""
    start = line.find(METRIC_PREFIX)
    if start < 0:
        return []
    try:
        payload = json.loads(line[start + len(METRIC_PREFIX) :])
    except json.JSONDecodeError:
        return []
    if not isinstance(payload, dict):
        return []
    epoch = _position(payload.get("epoch"))
    step = _position(payload.get("step"))
    samples = []
    for name, raw in payload.items():
        if name in POSITION_KEYS or isinstance(raw, bool):
            continue
        value = _number(raw)
        if value is not None:
            samples.append(MetricSample(name=name, value=value, epoch=epoch, step=step))
    return samples


@dataclass
class MetricSummary:
    """The latest value of every metric, as ``status.metrics`` shows it, and the Master's own.

    Every replica's metrics are there (a Worker's own throughput too), but a metric the Master (rank 0)
    reports is the Master's value, whatever a Worker printed later; the key metric is the Master's once
    it reported any. The operator's log follower and the local runner keep one per run.
    """

    latest: dict[str, float] = field(default_factory=dict)
    master: dict[str, float] = field(default_factory=dict)
    # The Master's samples of one metric at a position (a sweep trial's objective, for early stopping), in
    # the order they came; the status keeps the latest of them (``trainrun.status.series``).
    series_metric: str | None = None
    series: list[MetricSample] = field(default_factory=list)

    def add(self, samples: Iterable[MetricSample], *, from_master: bool = True) -> bool:
        """Record samples of one replica; True when a value in ``latest`` changed or the series grew."""
        changed = False
        for sample in samples:
            if from_master:
                self.master[sample.name] = sample.value
                if sample.name == self.series_metric and (sample.epoch is not None or sample.step is not None):
                    self.series = [*self.series[-SERIES_POINTS + 1 :], sample]
                    changed = True
            elif sample.name in self.master:
                continue
            if self.latest.get(sample.name) != sample.value:
                self.latest[sample.name] = sample.value
                changed = True
        return changed

    def key_metric(self) -> str | None:
        return key_metric(self.master or self.latest)


def is_master(replica: str) -> bool:
    """Whether a replica name (``master-0``, ``worker-3``) is the Master's, rank 0."""
    return replica.startswith("master")


def key_metric(latest: Mapping[str, float]) -> str | None:
    """``val_loss=0.3124``: the metric worth a column in ``kubectl get tr``."""
    for name in KEY_METRIC_PREFERENCE:
        if name in latest:
            return f"{name}={latest[name]:.4g}"
    if latest:
        name = sorted(latest)[0]
        return f"{name}={latest[name]:.4g}"
    return None


def _number(raw: object) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, (int, float)):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw)
        except ValueError:
            return None
    else:
        return None
    return value if math.isfinite(value) else None


def _position(raw: object) -> int | None:
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else None


__all__ = [
    "METRIC_PREFIX",
    "SERIES_POINTS",
    "MetricParser",
    "MetricSample",
    "MetricSummary",
    "is_master",
    "key_metric",
    "structured_samples",
]
