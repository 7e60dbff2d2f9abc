"""A run's progress snapshot -> ``status.progress`` (percent, pace, ETA) and whether the run is hung.

Shared by the operator's plan (``trainrun.plan``) and the local runner (``trainrun.local.runner``), so
both report the same percent and ETA and call the same silence a hang. The snapshot comes from
``trainrun.metrics.progress.ProgressTracker``. Pure: ``now`` is given.

Hang rule: a run whose replicas all run is hung when its step has not moved for
``spec.runPolicy.hangTimeoutSeconds``; before the first step of the current replicas (start-up, data
loading, compilation) the limit is ``STARTUP_FACTOR`` times that, and any log line counts as life.
The clock starts no earlier than when the current replicas started (a restarted run is not hung for
the time its old replicas were gone).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from trainrun.metrics.progress import ProgressSnapshot
from trainrun.spec.model import TrainingRun
from trainrun.spec.status import Progress
from trainrun.status.shapes import rfc3339

STARTUP_FACTOR = 3


def progress_status(snapshot: ProgressSnapshot | None, *, epochs: int | None = None) -> Progress | None:
    """``status.progress`` from the snapshot; ``epochs`` is what the spec says when the program does not."""
    if snapshot is None or (snapshot.step is None and snapshot.epoch is None):
        return None
    total_epochs = snapshot.epochs or epochs
    step, total = snapshot.step, snapshot.total_steps
    percent: float | None = None
    if step is not None and total:
        percent = min(100.0, 100.0 * step / total)
    elif snapshot.epoch is not None and total_epochs:
        percent = min(100.0, 100.0 * max(snapshot.epoch - 1, 0) / total_epochs)  # the epoch under way is not done
    pace = steps_per_second(snapshot)
    eta: str | None = None
    if pace and step is not None and total and total > step:
        eta = rfc3339(snapshot.marks[-1].at + timedelta(seconds=(total - step) / pace))
    return Progress(
        epoch=snapshot.epoch,
        epochs=total_epochs,
        step=step,
        total_steps=total,
        percent=round(percent, 1) if percent is not None else None,
        summary=_summary(percent, step, snapshot.epoch, total_epochs),
        steps_per_second=round(pace, 4) if pace else None,
        samples_per_second=snapshot.samples_per_second,
        eta=eta,
        last_step_time=rfc3339(snapshot.marks[-1].at) if snapshot.marks else None,
        last_log_time=rfc3339(snapshot.last_line) if snapshot.last_line is not None else None,
    )


def spec_epochs(run: TrainingRun) -> int | None:
    """The epochs the spec asks for: the built-in trainer's (default included), or a custom program's if set."""
    hyperparameters = run.spec.hyperparameters
    builtin = run.spec.command is None and run.spec.script is None
    return hyperparameters.epochs if builtin or "epochs" in hyperparameters.model_fields_set else None


def steps_per_second(snapshot: ProgressSnapshot) -> float | None:
    """The pace over the latest steps (None before two steps, or when they came in the same instant)."""
    marks = snapshot.marks
    if len(marks) < 2:
        return None
    seconds = (marks[-1].at - marks[0].at).total_seconds()
    return (marks[-1].step - marks[0].step) / seconds if seconds > 0 else None


def _summary(percent: float | None, step: int | None, epoch: int | None, epochs: int | None) -> str | None:
    if percent is not None:
        return f"{percent:.0f}%"
    if step is not None:
        return f"step {step}"
    if epoch is not None:
        return f"epoch {epoch}/{epochs}" if epochs else f"epoch {epoch}"
    return None


@dataclass(frozen=True)
class Hang:
    """A run that stopped moving: since when, and which replicas are silent since when."""

    since: datetime
    silent: tuple[tuple[str, datetime], ...]
    message: str


@dataclass(frozen=True)
class HangCheck:
    """The verdict of :func:`hang_check`: a hang, or how long until the run would be hung without news."""

    hang: Hang | None
    check_again_in: float | None  # seconds; None when nothing is running


def hang_check(
    snapshot: ProgressSnapshot | None,
    *,
    running: Mapping[str, datetime],
    timeout_seconds: int,
    now: datetime,
) -> HangCheck:
    """Whether the run is hung; ``running`` maps every replica to when it started running (all must run).

    Without a snapshot (no log read yet) nothing is hung; silence before the tracker started watching
    (``watching_since``: an operator that just started) does not count."""
    if not running or snapshot is None:
        return HangCheck(None, None)
    started = max(running.values())
    marks = [mark for mark in snapshot.marks if mark.at >= started]
    stepped = bool(marks)
    limit = timeout_seconds if stepped else timeout_seconds * STARTUP_FACTOR
    lines: dict[str, datetime] = {}
    for replica in sorted(running):
        seen = snapshot.replicas.get(replica)
        lines[replica] = max(seen.last_line, started) if seen is not None else started
    last = marks[-1].at if stepped else max(lines.values())
    # A tracker that started late (an operator that just started) knows nothing of the silence before it.
    watching = snapshot.watching_since
    if watching is not None and watching > last:
        last = watching
    quiet = (now - last).total_seconds()
    if quiet < limit:
        return HangCheck(None, limit - quiet)
    silent = tuple((replica, moment) for replica, moment in lines.items() if (now - moment).total_seconds() >= limit)
    if stepped:
        what = f"no new step since {rfc3339(marks[-1].at)} (step {marks[-1].step})"
    else:
        what = f"no step and no log line since {rfc3339(last)}"
    setting = f"spec.runPolicy.hangTimeoutSeconds={timeout_seconds}"
    if not stepped:
        setting += f", x{STARTUP_FACTOR} before the first step"
    if silent:
        who = "silent: " + ", ".join(f"{replica} since {rfc3339(moment)}" for replica, moment in silent)
    else:
        who = "still printing: " + ", ".join(f"{replica} at {rfc3339(moment)}" for replica, moment in lines.items())
    return HangCheck(Hang(since=last, silent=silent, message=f"hung: {what} ({setting}); {who}"), None)
