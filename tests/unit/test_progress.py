"""Progress, pace, ETA and hangs from log lines: ``trainrun.metrics.progress`` and ``trainrun.status.progress``.

Table-driven: each case is the lines a run printed (replica, seconds after 10:00, text) and what the
status must say.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from trainrun.metrics import MetricParser
from trainrun.metrics.progress import ProgressLine, ProgressTracker, progress_line
from trainrun.metrics.signals import log_signal
from trainrun.status.progress import STARTUP_FACTOR, hang_check, progress_status

START = datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC)
PARSER = MetricParser()


def t(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def metric(step: int, epoch: int = 1, **values: float) -> str:
    fields = ", ".join(f'"{name}": {value}' for name, value in {"train_loss": 0.5, **values}.items())
    return f'trainrun:metric {{"epoch": {epoch}, "step": {step}, {fields}}}'


def tracked(lines: list[tuple[str, float, str]], *, since: float | None = None) -> ProgressTracker:
    tracker = ProgressTracker(since=t(since) if since is not None else None)
    for replica, seconds, text in lines:
        tracker.take(replica, text, PARSER.parse(text), t(seconds))
    return tracker


@dataclass
class ProgressCase:
    name: str
    lines: list[tuple[str, float, str]]
    summary: str | None
    percent: float | None = None
    eta: str | None = None
    step: int | None = None
    extra: dict[str, object] = field(default_factory=dict)
    epochs: int | None = None


PROGRESS_CASES = [
    ProgressCase("nothing printed yet", [], None),
    ProgressCase("lines without steps", [("master-0", 1, "loading data")], None),
    ProgressCase(
        "a total and a steady pace: percent and ETA",
        [
            ("master-0", 0, 'trainrun:progress {"total_steps": 1000, "epochs": 5}'),
            ("master-0", 10, metric(100)),
            ("master-0", 20, metric(200)),
            ("master-0", 30, metric(300)),
        ],
        "30%",
        percent=30.0,
        # 700 steps left at 10 steps/s after the last step at 10:00:30
        eta="2026-01-01T10:01:40Z",
        step=300,
        extra={"steps_per_second": 10.0, "epochs": 5, "total_steps": 1000, "last_step_time": "2026-01-01T10:00:30Z"},
    ),
    ProgressCase(
        "the pace follows the latest steps, not the start-up",
        [("master-0", 0, 'trainrun:progress {"total_steps": 400}'), ("master-0", 100, metric(10))]
        + [("master-0", 100 + 2 * index, metric(10 + 10 * index)) for index in range(1, 40)],
        "100%",
        percent=100.0,
        step=400,
        extra={"eta": None},  # done: nothing left to estimate
    ),
    ProgressCase(
        "no total: the step is the progress, no ETA",
        [("master-0", 5, metric(50)), ("master-0", 10, metric(100))],
        "step 100",
        step=100,
        extra={"eta": None, "percent": None, "steps_per_second": 10.0},
    ),
    ProgressCase(
        "no total, epochs from the spec: epochs done",
        [("master-0", 5, metric(50, epoch=3))],
        "40%",
        percent=40.0,
        epochs=5,
    ),
    ProgressCase(
        "a resume goes back: the pace starts again from it",
        [
            ("master-0", 0, 'trainrun:progress {"total_steps": 100}'),
            ("master-0", 10, metric(40)),
            ("master-0", 20, metric(50)),
            ("master-0", 100, metric(40)),
            ("master-0", 104, metric(44)),
        ],
        "44%",
        percent=44.0,
        step=44,
        eta="2026-01-01T10:02:40Z",  # 56 steps at 1 step/s after 10:01:44
    ),
    ProgressCase(
        "every replica prints the same steps: one pace",
        [
            ("master-0", 0, 'trainrun:progress {"total_steps": 100}'),
            ("master-0", 0, metric(10)),
            ("worker-0", 0, metric(10)),
            ("master-0", 10, metric(20)),
            ("worker-0", 11, metric(20)),
        ],
        "20%",
        step=20,
        extra={"steps_per_second": 1.0, "eta": "2026-01-01T10:01:30Z"},
    ),
    ProgressCase(
        "throughput from the program's own metric",
        [("master-0", 1, metric(1, images_per_sec=16613.0))],
        "step 1",
        extra={"samples_per_second": 16613.0},
    ),
    ProgressCase(
        "a progress line alone carries the step",
        [("master-0", 1, 'trainrun:progress {"step": 5, "total_steps": 20, "epoch": 1, "epochs": 2}')],
        "25%",
        step=5,
        extra={"epoch": 1, "epochs": 2},
    ),
]


@pytest.mark.parametrize("case", PROGRESS_CASES, ids=[case.name for case in PROGRESS_CASES])
def test_progress_and_eta(case: ProgressCase) -> None:
    progress = progress_status(tracked(case.lines).snapshot(), epochs=case.epochs)
    if case.summary is None:
        assert progress is None
        return
    assert progress is not None
    assert progress.summary == case.summary
    if case.percent is not None:
        assert progress.percent == case.percent
    if case.eta is not None:
        assert progress.eta == case.eta
    if case.step is not None:
        assert progress.step == case.step
    for name, value in case.extra.items():
        assert getattr(progress, name) == value, name


def test_progress_lines_ignore_other_lines_and_bad_json() -> None:
    assert progress_line("step 5 of 10") is None
    assert progress_line("trainrun:progress {not json") is None
    assert progress_line('trainrun:progress {"total_steps": -3, "step": true}') == progress_line("trainrun:progress {}")


def test_take_says_when_progress_moved() -> None:
    tracker = ProgressTracker()
    assert tracker.take("master-0", metric(1), PARSER.parse(metric(1)), t(0))
    assert not tracker.take("worker-0", metric(1), PARSER.parse(metric(1)), t(1))
    assert not tracker.take("master-0", "a plain line", [], t(2))
    assert tracker.take("master-0", 'trainrun:progress {"total_steps": 9}', [], t(3))


@dataclass
class HangCase:
    name: str
    lines: list[tuple[str, float, str]]
    now: float
    hung: bool
    timeout: int = 60
    running: dict[str, float] = field(default_factory=lambda: {"master-0": 0, "worker-0": 0})
    message_has: list[str] = field(default_factory=list)
    check_again_in: float | None = None
    since: float | None = None


HANG_CASES = [
    HangCase("steps keep coming", [("master-0", 100, metric(10)), ("master-0", 150, metric(20))], now=200, hung=False, check_again_in=10),
    HangCase(
        "no new step for the timeout: hung, naming the silent replicas and since when",
        [("master-0", 100, metric(10)), ("worker-0", 90, "worker ready")],
        now=161,
        hung=True,
        message_has=[
            "no new step since 2026-01-01T10:01:40Z (step 10)",
            "hangTimeoutSeconds=60",
            "master-0 since 2026-01-01T10:01:40Z",
            "worker-0 since 2026-01-01T10:01:30Z",
        ],
    ),
    HangCase(
        "lines but no new step: hung, and every replica still prints",
        [("master-0", 100, metric(10))] + [("master-0", 100 + s, "still alive") for s in range(1, 70)],
        now=170,
        hung=True,
        running={"master-0": 0},
        message_has=["still printing: master-0 at 2026-01-01T10:02:49Z"],
    ),
    HangCase("before the first step the limit is longer", [("master-0", 10, "loading")], now=10 + 60 * STARTUP_FACTOR - 1, hung=False),
    HangCase(
        "before the first step: silence for the longer limit",
        [("master-0", 10, "loading")],
        now=10 + 60 * STARTUP_FACTOR,
        hung=True,
        message_has=["no step and no log line since 2026-01-01T10:00:10Z", f"x{STARTUP_FACTOR} before the first step"],
    ),
    HangCase(
        "replicas restarted recently: their old steps do not count",
        [("master-0", 10, metric(10))],
        now=400,
        running={"master-0": 300, "worker-0": 300},
        hung=False,
    ),
    HangCase(
        "the operator started watching late: silence before it is not counted",
        [],
        now=1000,
        since=900,
        hung=False,
    ),
    HangCase("nothing running: never hung", [], now=10_000, running={}, hung=False),
]


@pytest.mark.parametrize("case", HANG_CASES, ids=[case.name for case in HANG_CASES])
def test_hang(case: HangCase) -> None:
    snapshot = tracked(case.lines, since=case.since).snapshot()
    running = {name: t(seconds) for name, seconds in case.running.items()}
    check = hang_check(snapshot, running=running, timeout_seconds=case.timeout, now=t(case.now))
    assert (check.hang is not None) is case.hung, check
    for words in case.message_has:
        assert check.hang is not None and words in check.hang.message, check.hang.message if check.hang else None
    if case.check_again_in is not None:
        assert check.check_again_in == pytest.approx(case.check_again_in)


def test_no_snapshot_is_never_a_hang() -> None:
    assert hang_check(None, running={"master-0": t(0)}, timeout_seconds=10, now=t(10_000)).hang is None


@pytest.mark.parametrize(
    ("line", "cause"),
    [
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "CudaOOM"),
        ("RuntimeError: CUDA error: out of memory", "CudaOOM"),
        ("torch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled system error", "CommunicationError"),
        ("[E ProcessGroupNCCL.cpp:475] Watchdog caught collective operation timeout", "CommunicationError"),
        ("RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [10.0.0.5]:23456", "CommunicationError"),
        ("ValueError: expected 3 channels, got 1", "UserError"),
        ("  KeyError: 'label'", "UserError"),
        ("trainrun:metric {\"epoch\": 1, \"step\": 5, \"train_loss\": 0.5}", None),
        ("UserWarning: this is only a warning", None),
        ("epoch 1 done (val_loss improved; no Error)", None),
    ],
)
def test_log_signals(line: str, cause: str | None) -> None:
    assert log_signal(line) == cause


def test_a_replica_keeps_its_first_failure_since_its_last_step() -> None:
    tracker = tracked(
        [
            ("worker-0", 1, "ValueError: a caught one, before progress"),
            ("worker-0", 2, metric(5)),
            ("worker-0", 3, "torch.OutOfMemoryError: CUDA out of memory."),
            ("worker-0", 4, "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: "),
        ]
    )
    signal = tracker.snapshot().replicas["worker-0"].signal
    assert signal is not None and signal.cause == "CudaOOM" and signal.at == t(3)


def test_a_stage_lasts_until_the_next_step() -> None:
    tracker = tracked([
        ("master-0", 0, 'trainrun:progress {"step": 0, "total_steps": 100}'),
        ("master-0", 10, metric(100)),
        ("master-0", 11, 'trainrun:progress {"stage": "exporting model"}'),
        ("master-0", 12, "saving model.onnx"),
    ])
    assert tracker.snapshot().stage == "exporting model"
    tracker.take("master-0", metric(101), PARSER.parse(metric(101)), t(13))
    assert tracker.snapshot().stage is None
    assert progress_line('trainrun:progress {"stage": "  "}') == ProgressLine()  # blank says nothing


def test_a_final_line_repeating_an_earlier_epoch_does_not_move_the_run_back() -> None:
    """The built-in trainer's last line repeats its best epoch's numbers at that epoch's position."""
    final = 'trainrun:metric {"epoch": 2, "step": 384, "final": true, "val_loss": 0.31}'
    tracker = tracked([
        ("master-0", 0, 'trainrun:progress {"step": 0, "total_steps": 576, "epoch": 1, "epochs": 3}'),
        ("master-0", 10, metric(384, epoch=2)),
        ("master-0", 20, metric(576, epoch=3)),
        ("master-0", 21, final),
    ])
    snapshot = tracker.snapshot()
    assert (snapshot.step, snapshot.epoch, len(snapshot.marks)) == (576, 3, 3)
    progress = progress_status(snapshot)
    assert progress is not None and progress.percent == 100.0


def test_a_plain_line_moves_only_its_replicas_activity_and_never_back() -> None:
    """Most lines say nothing (no metric, no progress, no failure word): they only say the replica is active,
    and a line that arrives late (an earlier time) keeps the latest."""
    tracker = tracked([("worker-0", 1, "ValueError: bad batch")])
    before = tracker.snapshot()
    assert not tracker.take("worker-0", "loading shard 3", [], t(4))
    assert not tracker.take("worker-0", "loading shard 2", [], t(2))
    assert not tracker.take("master-0", "hello", [], t(3))
    after = tracker.snapshot()
    worker = after.replicas["worker-0"]
    assert worker.last_line == t(4) and worker.signal == before.replicas["worker-0"].signal and worker.signal is not None
    assert after.replicas["master-0"].last_line == t(3) and after.last_line == t(4)
    assert (after.marks, after.total_steps, after.stage) == (before.marks, before.total_steps, before.stage)
