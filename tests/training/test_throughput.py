"""The trainer's images_per_sec: smoothed over the last seconds of training, so one slow window is no plunge."""

from __future__ import annotations

import pytest
from trainrun_trainer.throughput import Throughput


def test_one_slow_window_moves_the_rate_a_little_not_tenfold() -> None:
    throughput = Throughput(span_seconds=5.0)
    rates = [throughput.add(1000, 0.05) for _ in range(200)]  # 20,000 images/s, 10 s of it
    assert rates[-1] == pytest.approx(20_000)
    slow = throughput.add(1000, 0.5)  # a window ten times slower (another process had the CPU)
    assert 18_000 < slow < 20_000  # a single window's own rate would read 2,000


def test_the_rate_follows_a_lasting_change_within_the_span() -> None:
    throughput = Throughput(span_seconds=5.0)
    for _ in range(200):
        throughput.add(1000, 0.05)
    rates = [throughput.add(1000, 0.1) for _ in range(60)]  # 10,000 images/s for 6 s
    assert rates[-1] == pytest.approx(10_000)


def test_the_first_windows_are_all_there_is() -> None:
    throughput = Throughput(span_seconds=5.0)
    assert throughput.add(512, 0.1) == pytest.approx(5120)
    assert throughput.add(512, 0.3) == pytest.approx(1024 / 0.4)
    assert throughput.add(0, 0.0) == pytest.approx(1024 / 0.4)
