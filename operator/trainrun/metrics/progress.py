"""How far a run is, as its log lines tell it: steps with their times, the total, the pace, each replica's last word.

Fed every line of every replica, with the time the line was written (the kubelet's timestamp on a
cluster, the moment it was read locally): by the operator's log follower (``trainrun.controller.logs``)
and by the local runner. A :class:`ProgressTracker` keeps, per run, the recent steps (for the pace and
the ETA), the total the program announced, and per replica when it last printed, last reported a step
and the first failure its log announced since then (``trainrun.metrics.signals``). Its
:meth:`~ProgressTracker.snapshot` is what ``trainrun.status.progress`` (progress, ETA, hangs) and
``trainrun.plan.causes`` read. Pure: times are given.

A step comes from any metric line that carries one (``trainrun:metric {"step": 120, ...}``) or from a
progress line, which any program can print, and which the built-in trainer prints once at start::

    trainrun:progress {"step": 120, "total_steps": 5000, "epoch": 1, "epochs": 5}

Every key is optional; ``total_steps`` (steps in the whole run, counted like ``step``) is what gives a
percentage and an ETA. A metric line with ``"final": true`` repeats an earlier measurement, so its
position is not a step of the run. ``{"stage": "exporting model"}`` says what the run does while no step moves (the
built-in trainer's export), until its next step.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from trainrun.metrics import MetricSample
from trainrun.metrics.signals import log_signal, mentions_failure

PROGRESS_PREFIX = "trainrun:progress "
# A metric line that repeats an earlier measurement: ``trainrun:metric {"epoch": 2, "step": 384, "final": true, ...}``.
FINAL_LINE = re.compile(r'"final"\s*:\s*true')
# Metrics that are the program's own throughput, the first one present wins.
THROUGHPUT_METRICS = ("samples_per_sec", "samples_per_second", "images_per_sec", "tokens_per_sec")
# The pace is measured over this many of the latest steps.
PACE_WINDOW = 20


@dataclass(frozen=True)
class ProgressLine:
    """What a ``trainrun:progress`` line says (every field optional): where the run is, and what it does
    besides stepping (``stage``: ``exporting model``, while no step moves)."""

    step: int | None = None
    total_steps: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    stage: str | None = None


def progress_line(text: str) -> ProgressLine | None:
    """The fields of a ``trainrun:progress {json}`` line; None for any other line (or malformed JSON)."""
    start = text.find(PROGRESS_PREFIX)
    if start < 0:
        return None
    try:
        payload = json.loads(text[start + len(PROGRESS_PREFIX) :])
    except json.JSONDecodeError:
        return None
    if not isinstance(payload, dict):
        return None
    values = {key: _count(payload.get(key)) for key in ("step", "total_steps", "epoch", "epochs")}
    stage = payload.get("stage")
    return ProgressLine(**values, stage=(stage.strip() or None) if isinstance(stage, str) else None)


@dataclass(frozen=True)
class StepMark:
    """The run reached ``step`` at ``at``."""

    step: int
    at: datetime


@dataclass(frozen=True)
class Signal:
    """A failure a replica's log announced: its cause (``trainrun.metrics.signals``) and the line."""

    cause: str
    line: str
    at: datetime


@dataclass(frozen=True)
class ReplicaActivity:
    """One replica as its log tells it."""

    last_line: datetime
    last_step: datetime | None = None  # when it last reported a step
    signal: Signal | None = None  # the first failure announced since its last step


@dataclass(frozen=True)
class ProgressSnapshot:
    """A run's progress at one moment: what the status functions read."""

    marks: tuple[StepMark, ...] = ()  # the latest steps, oldest first, since the run last went back (a resume)
    total_steps: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    samples_per_second: float | None = None
    replicas: Mapping[str, ReplicaActivity] = field(default_factory=dict)
    watching_since: datetime | None = None  # when the tracker started reading: silence before it is unknown
    stage: str | None = None  # what the run does besides stepping, until its next step (exporting model)

    @property
    def step(self) -> int | None:
        return self.marks[-1].step if self.marks else None

    @property
    def last_line(self) -> datetime | None:
        return max((activity.last_line for activity in self.replicas.values()), default=None)


class ProgressTracker:
    """Per run: fed every log line with its time; :meth:`snapshot` says where the run is."""

    def __init__(self, *, since: datetime | None = None) -> None:
        self._since = since
        self._marks: deque[StepMark] = deque(maxlen=PACE_WINDOW)
        self._replicas: dict[str, ReplicaActivity] = {}
        self._total_steps: int | None = None
        self._epoch: int | None = None
        self._epochs: int | None = None
        self._samples_per_second: float | None = None
        self._stage: str | None = None

    def take(self, replica: str, text: str, samples: Sequence[MetricSample], at: datetime) -> bool:
        """Record one line of ``replica`` written at ``at``; True when the run's progress moved (a step, a total)."""
        if not samples and PROGRESS_PREFIX not in text and not mentions_failure(text):
            self.saw(replica, at)  # most lines: only the replica's activity moves
            return False
        before = (self._marks[-1] if self._marks else None, self._total_steps, self._epochs)
        announced = progress_line(text) or ProgressLine()
        # A final line repeats an earlier measurement at its own position (the built-in trainer's best epoch):
        # no step of the run, which has not gone back.
        placed = [] if FINAL_LINE.search(text) else samples
        steps = [sample.step for sample in placed if sample.step is not None]
        steps += [announced.step] if announced.step is not None else []
        epochs = [sample.epoch for sample in placed if sample.epoch is not None]
        epochs += [announced.epoch] if announced.epoch is not None else []
        activity = self._replicas.get(replica) or ReplicaActivity(last_line=at)
        activity = replace(activity, last_line=max(at, activity.last_line))
        if steps:
            activity = replace(activity, last_step=at, signal=None)
            self._mark(max(steps), at)
        elif activity.signal is None and (cause := log_signal(text)) is not None:
            activity = replace(activity, signal=Signal(cause=cause, line=text.strip(), at=at))
        self._replicas[replica] = activity
        self._epoch = max(epochs) if epochs else self._epoch
        self._total_steps = announced.total_steps if announced.total_steps is not None else self._total_steps
        self._epochs = announced.epochs if announced.epochs is not None else self._epochs
        if announced.stage is not None or steps:
            self._stage = announced.stage  # a stage lasts until the next step
        throughput = _throughput(samples)
        self._samples_per_second = throughput if throughput is not None else self._samples_per_second
        return before != (self._marks[-1] if self._marks else None, self._total_steps, self._epochs)

    def saw(self, replica: str, at: datetime) -> None:
        """A line of ``replica`` at ``at`` that says nothing (no metric, progress or failure): it is active."""
        activity = self._replicas.get(replica)
        if activity is None:
            self._replicas[replica] = ReplicaActivity(last_line=at)
        elif at > activity.last_line:
            self._replicas[replica] = ReplicaActivity(last_line=at, last_step=activity.last_step, signal=activity.signal)

    def _mark(self, step: int, at: datetime) -> None:
        last = self._marks[-1] if self._marks else None
        if last is not None and step < last.step:
            self._marks.clear()  # the run went back: resumed from a checkpoint; its pace starts again
        elif last is not None and step == last.step:
            return  # another replica, or a repeated line: the same step
        self._marks.append(StepMark(step=step, at=at))

    def snapshot(self) -> ProgressSnapshot:
        return ProgressSnapshot(
            marks=tuple(self._marks),
            total_steps=self._total_steps,
            epoch=self._epoch,
            epochs=self._epochs,
            samples_per_second=self._samples_per_second,
            replicas=dict(self._replicas),
            watching_since=self._since,
            stage=self._stage,
        )


def _throughput(samples: Sequence[MetricSample]) -> float | None:
    values = {sample.name: sample.value for sample in samples}
    return next((values[name] for name in THROUGHPUT_METRICS if name in values), None)


def _count(raw: object) -> int | None:
    return raw if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0 else None
