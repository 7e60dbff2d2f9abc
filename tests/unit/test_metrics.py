"""Log lines -> metric samples, for the trainer's structured lines and for user regexes."""

from __future__ import annotations

import pytest
from trainrun.metrics import MetricParser, MetricSample, MetricSummary, key_metric, structured_samples
from trainrun.spec.model import MetricDefinition


def test_structured_line_gives_every_numeric_key_at_its_position() -> None:
    line = 'trainrun:metric {"epoch": 2, "step": 40, "train_loss": 0.5, "lr": 0.001, "final": true, "note": "x"}'
    assert structured_samples(line) == [
        MetricSample("train_loss", 0.5, epoch=2, step=40),
        MetricSample("lr", 0.001, epoch=2, step=40),
    ]


def test_structured_line_after_a_log_prefix() -> None:
    assert structured_samples('2026-01-01 [rank0] trainrun:metric {"val_loss": 1}') == [MetricSample("val_loss", 1.0)]


@pytest.mark.parametrize(
    "line",
    ["plain text", "trainrun:metric {not json", "trainrun:metric [1, 2]", 'trainrun:metric {"loss": NaN}', 'trainrun:metric {"loss": "abc"}'],
)
def test_malformed_or_foreign_lines_give_nothing(line: str) -> None:
    assert structured_samples(line) == []


def test_user_regexes_with_named_or_first_group() -> None:
    parser = MetricParser.from_definitions(
        [
            MetricDefinition(name="loss", regex=r"loss=([0-9.eE+-]+)"),
            MetricDefinition(name="acc", regex=r"(acc|accuracy)[:=] *(?P<value>[0-9.]+)"),
        ]
    )
    assert parser.parse("epoch 1 loss=0.25 accuracy: 0.9") == [MetricSample("loss", 0.25), MetricSample("acc", 0.9)]
    assert parser.parse("nothing here") == []
    assert parser.parse("loss=abc") == []


def test_summary_keeps_the_latest_and_picks_a_key_metric() -> None:
    summary = MetricSummary()
    assert summary.add([MetricSample("train_loss", 1.0)]) is True
    assert summary.add([MetricSample("train_loss", 1.0)]) is False
    assert summary.key_metric() == "train_loss=1"
    summary.add([MetricSample("val_loss", 0.31234), MetricSample("train_loss", 0.5)])
    assert summary.latest == {"train_loss": 0.5, "val_loss": 0.31234}
    assert summary.key_metric() == "val_loss=0.3123"
    assert key_metric({}) is None
    assert key_metric({"zeta": 1.0, "alpha": 2.0}) == "alpha=2"
