"""What a run looks like on the console and in ``trainrun get``/``metrics --history`` (pure parts).

The live run is in tests/local/test_quickstart.py; these pin the rules on small inputs.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from trainrun.cli.display import readable_metric_line, readable_number
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
