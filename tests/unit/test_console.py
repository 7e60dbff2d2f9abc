"""What a run looks like on the console and in ``trainrun get``/``metrics --history`` (pure parts).

The live run is in tests/local/test_quickstart.py; these pin the rules on small inputs.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from trainrun.cli.lines import readable_line, readable_metric_line, readable_number
from trainrun.cli.views import run_row
from trainrun.metrics.observer import distinct_records
from trainrun.spec.annotations import RUN_DIR_ANNOTATION


def test_a_metric_line_reads_as_words_and_plain_numbers() -> None:
    line = 'trainrun:metric {"epoch": 1, "step": 8, "train_loss": 2.28092, "images_per_sec": 11930.2, "lr": 0.000986111}'
    assert readable_metric_line(line) == "epoch 1 · step 8 · train_loss 2.281 · images_per_sec 11,930 · lr 0.0009861"
    assert readable_metric_line('rank 0: trainrun:metric {"val_loss": 0.5}') == "rank 0: val_loss 0.5"
    assert readable_metric_line("epoch 1 done") is None  # any other line is shown as written
    assert readable_metric_line('trainrun:metric {"epoch": 1}') is None  # nothing measured


@pytest.mark.parametrize(
    ("value", "shown"),
    [(11930.2, "11,930"), (1193000.0, "1,193,000"), (2.28092, "2.281"), (0.5, "0.5"), (7, "7"), (0.0000123, "1.23e-05")],
)
def test_numbers_have_no_exponent_unless_tiny(value: float, shown: str) -> None:
    assert readable_number(value) == shown


def test_two_local_runs_of_one_name_are_two_rows_that_say_which() -> None:
    def local_run(folder: str) -> dict[str, object]:
        return {"metadata": {"name": "quickstart", "annotations": {RUN_DIR_ANNOTATION: f"/work/runs/{folder}"}},
                "spec": {}, "status": {"phase": "Completed"}}

    now = datetime.now(UTC)
    rows = [run_row(local_run(folder), wide=False, with_namespace=False, now=now)
            for folder in ("quickstart-20261130-051800", "quickstart-20261130-051800-2")]
    assert [row[0] for row in rows] == ["quickstart-20261130-051800", "quickstart-20261130-051800-2"]
    cluster_run = {"metadata": {"name": "quickstart"}, "spec": {}, "status": {}}
    assert run_row(cluster_run, wide=False, with_namespace=False, now=now)[0] == "quickstart"


def test_a_history_keeps_each_measurement_once() -> None:
    best = {"replica": "master-0", "epoch": 2, "step": 40, "val_loss": 0.3}
    history = [
        {"time": "05:00:01", **best},
        {"time": "05:00:02", "replica": "master-0", "epoch": 3, "step": 60, "val_loss": 0.35},
        {"time": "05:00:03", **best},  # the trainer's final line: the best epoch again, at its position
    ]
    assert distinct_records(history) == history[:2]
    different_replica = {**history[0], "replica": "worker-0"}
    assert distinct_records([history[0], different_replica]) == [history[0], different_replica]


def test_the_console_shows_each_measurement_once(capsys: pytest.CaptureFixture[str]) -> None:
    from rich.console import Console
    from trainrun.cli.display import RunDisplay

    display = RunDisplay(name="run", console=Console(file=None, force_terminal=False))
    epoch = '{"epoch": 3, "step": 576, "val_loss": 0.2334}'
    display.line("master-0", f"trainrun:metric {epoch}")
    display.line("master-0", "epoch 3/3 done (best so far)")
    display.line("master-0", 'trainrun:metric {"epoch": 3, "step": 576, "val_loss": 0.2334, "final": true}')
    assert capsys.readouterr().out.splitlines() == [
        "[master-0] epoch 3 · step 576 · val_loss 0.2334",
        "[master-0] epoch 3/3 done (best so far)",
    ]


def test_get_and_describe_show_progress_eta_and_restarts() -> None:
    from rich.console import Console
    from trainrun.cli.views import describe

    now = datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC)
    status = {
        "phase": "Running",
        "progress": {"step": 420, "totalSteps": 1000, "epoch": 2, "epochs": 5, "percent": 42.0, "summary": "42%",
                     "stepsPerSecond": 3.5, "samplesPerSecond": 1520.0, "eta": "2026-01-01T10:12:00Z"},
        "restarts": [{"cause": "NodeLost", "message": "replica worker-0 lost its node (PodGC)", "time": "2026-01-01T09:50:00Z"}],
    }
    run = {"metadata": {"name": "resnet"}, "spec": {}, "status": status}
    row = run_row(run, wide=False, with_namespace=False, now=now)
    assert row[6:8] == ["42%", "12m"]
    assert run_row({"metadata": {"name": "q"}, "spec": {}, "status": {}}, wide=False, with_namespace=False, now=now)[6:8] == ["-", "-"]
    console = Console(width=200, record=True, file=None, force_terminal=False)
    console.print(describe(run, events=[], run_dir=None))
    text = console.export_text()
    for expected in ("42% (step 420 of 1000, epoch 2 of 5)", "3.5 steps/s, 1,520 samples/s", "2026-01-01T10:12:00Z",
                     "Restarts:", "NodeLost", "replica worker-0 lost its node (PodGC)"):
        assert expected in text, text


def live_display(monkeypatch: pytest.MonkeyPatch, *, width: int = 80, name: str = "quickstart") -> tuple[object, list[datetime]]:
    """A RunDisplay on a console of the given width, its clock set by the test (the list's one item)."""
    from rich.console import Console
    from trainrun.cli import display as display_module

    clock = [datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC)]

    class Clock(datetime):
        @classmethod
        def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
            return clock[0]

    monkeypatch.setattr(display_module, "datetime", Clock)
    console = Console(file=None, force_terminal=False, width=width)
    return display_module.RunDisplay(name=name, quiet=True, console=console), clock


def test_the_live_line_fits_80_columns_leaving_out_what_matters_least(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainrun.metrics import MetricSummary
    from trainrun.spec.status import Phase, TrainingRunStatus

    display, clock = live_display(monkeypatch)
    display.phase(TrainingRunStatus(phase=Phase.RUNNING))
    display.line("master-0", 'trainrun:progress {"step": 0, "total_steps": 1152, "epoch": 1, "epochs": 3}')
    record = {"epoch": 2, "step": 520, "train_loss": 0.43119, "images_per_sec": 16613.4}
    for second, step in ((10, 512), (20, 520)):
        clock[0] = datetime(2026, 1, 1, 10, 0, second, tzinfo=UTC)
        display.line("master-0", f'trainrun:metric {{"epoch": 2, "step": {step}, "train_loss": 0.43119, "images_per_sec": 16613.4}}')
    display.metrics(record, MetricSummary(latest={"train_loss": 0.43119, "images_per_sec": 16613.4}))
    text = display.progress_line().plain
    assert len(text) <= 80, text
    # The epoch and the throughput are left out first; the percent and the step come from one snapshot: they agree.
    assert text == "quickstart Running  45% · ETA 0:24 · step 520 · train_loss 0.4312 · 0:00", text
    wide, same_clock = live_display(monkeypatch, width=200)
    same_clock[0] = clock[0]
    wide.tracker, wide.latest, wide.current_phase = display.tracker, display.latest, Phase.RUNNING
    assert wide.progress_line().plain == (
        "quickstart Running  45% · ETA 0:24 · epoch 2 · step 520 · train_loss 0.4312 · 16,613 img/s · 0:00"
    )
    narrow, same_clock = live_display(monkeypatch, width=40)
    same_clock[0] = clock[0]
    narrow.tracker, narrow.latest, narrow.current_phase = display.tracker, display.latest, Phase.RUNNING
    assert narrow.progress_line().plain == "quickstart Running  45% · ETA 0:24"


def test_the_live_line_says_exporting_model_and_a_finished_run_has_no_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainrun.spec.status import Phase, TrainingRunStatus

    display, clock = live_display(monkeypatch)
    display.phase(TrainingRunStatus(phase=Phase.RUNNING))
    display.line("master-0", 'trainrun:progress {"step": 0, "total_steps": 100}')
    for second, step in ((10, 10), (20, 20)):
        clock[0] = datetime(2026, 1, 1, 10, 0, second, tzinfo=UTC)
        display.line("master-0", f'trainrun:metric {{"epoch": 1, "step": {step}, "train_loss": 0.5}}')
    # 1 step/s: the 80 steps left end at 10:01:40, 80 s after the last step.
    assert display.progress_line().plain.startswith("quickstart Running  20% · ETA 1:20 · ")
    display.line("master-0", 'trainrun:progress {"stage": "exporting model"}')
    assert display.progress_line().plain.startswith("quickstart Running  20% · exporting model · epoch 1 · step 20 · ")
    display.phase(TrainingRunStatus(phase=Phase.CANCELLED))
    assert "ETA" not in display.progress_line().plain and "exporting" not in display.progress_line().plain


def test_progress_lines_read_as_words() -> None:
    assert readable_line('trainrun:progress {"step": 0, "total_steps": 576, "epoch": 1, "epochs": 3}') == (
        "progress: epoch 1 of 3 · step 0 of 576"
    )
    assert readable_line('trainrun:progress {"step": 120}') == "progress: step 120"
    assert readable_line('trainrun:progress {"stage": "exporting model"}') == "progress: exporting model"
    assert readable_line("trainrun:progress {}") == "trainrun:progress {}"  # says nothing: shown as written
    assert readable_line("epoch 1 done") == "epoch 1 done"


def test_get_and_describe_show_no_eta_once_a_run_finished() -> None:
    from rich.console import Console
    from trainrun.cli.views import describe

    now = datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC)
    progress = {"step": 420, "totalSteps": 1000, "summary": "42%", "eta": "2026-01-01T10:00:01Z"}
    for phase in ("Cancelled", "Failed", "Completed"):
        status = {"phase": phase, "progress": progress, "completionTime": "2026-01-01T09:59:00Z"}
        run = {"metadata": {"name": "resnet"}, "spec": {}, "status": status}
        assert run_row(run, wide=False, with_namespace=False, now=now)[7] == "-"
        console = Console(width=200, record=True, file=None, force_terminal=False)
        console.print(describe(run, events=[], run_dir=None))
        text = console.export_text()
        assert "ETA" not in text and "2026-01-01T10:00:01Z" not in text, text
        assert "2026-01-01T09:59:00Z" in next(line for line in text.splitlines() if line.startswith("Finished:"))
        assert "Completed:" not in text
