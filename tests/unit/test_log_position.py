"""Where a broken-off log stream picks up (``trainrun.kube.streams``, shared by both log readers): log times,
skipping what was delivered, and what an error that ended a stream says of the log behind it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from trainrun.kube.streams import (
    RESUME_MARGIN_SECONDS,
    LogTimes,
    StreamEnd,
    StreamPosition,
    parse_log_time,
    stream_end_after_error,
)


def test_kubelet_times_parse_to_second_and_nanoseconds() -> None:
    second = datetime(2026, 11, 24, 1, 2, 3, tzinfo=UTC)
    assert parse_log_time("2026-11-24T01:02:03.123456789Z") == (second, 123456789)
    assert parse_log_time("2026-11-24T01:02:03.1Z") == (second, 100000000)  # RFC3339Nano trims zeros
    assert parse_log_time("2026-11-24T01:02:03Z") == (second, 0)
    assert parse_log_time("2026-11-24T02:02:03.5+01:00") == (second, 500000000)
    assert parse_log_time("loss=0.5") is None
    assert parse_log_time("") is None
    # Trimmed fractions compare by value, not as text (".1" is later than ".12" as text).
    later, earlier = parse_log_time("2026-11-24T01:02:03.2Z"), parse_log_time("2026-11-24T01:02:03.12Z")
    assert later is not None and earlier is not None and later > earlier


def test_a_streams_times_read_alike_and_parse_each_second_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """``LogTimes`` gives what ``parse_log_time`` gives, also for texts that only start like a second it has seen;
    a batch's first and last lines, seconds apart, each parse their second once however often they alternate."""
    texts = [
        "2026-11-24T01:02:03.123456789Z",
        "2026-11-24T01:02:05.1Z",
        "2026-11-24T01:02:03Z",
        "2026-11-24T01:02:05.000000001Z",
        "2026-11-24T01:02:03.12345678901Z",  # ten digits: not a kubelet time
        "2026-11-24T01:02:03.1x3Z",
        "2026-11-24T01:02:03garbageZ",
        "2026-11-24T01:02:03.5+01:00",
        "2026-11-24T01:02:03.٣Z",  # a digit, but not an ASCII one
        "loss=0.5",
        "",
    ]
    times = LogTimes()
    assert [times.parse(text) for text in texts] == [parse_log_time(text) for text in texts]
    parsed: list[str] = []
    real = parse_log_time

    def counted(text: str) -> object:
        parsed.append(text)
        return real(text)

    monkeypatch.setattr("trainrun.kube.streams.parse_log_time", counted)
    fresh = LogTimes()
    for fraction in range(100):  # a stream read on: each batch's first line, then its last
        assert fresh.parse(f"2026-11-24T01:02:03.{fraction}Z") == real(f"2026-11-24T01:02:03.{fraction}Z")
        assert fresh.parse(f"2026-11-24T01:02:05.{fraction}Z") == real(f"2026-11-24T01:02:05.{fraction}Z")
    assert len(parsed) == 2
    for second in range(10, 20):  # many seconds: a few are kept
        fresh.parse(f"2026-11-24T01:02:{second}Z")
    assert len(fresh._seconds) <= LogTimes.KEPT_SECONDS


def at(nanos: int, second: int = 3) -> tuple[datetime, int]:
    return datetime(2026, 11, 24, 1, 2, second, tzinfo=UTC), nanos


def test_a_fresh_stream_takes_every_line_and_starts_at_the_beginning() -> None:
    position = StreamPosition()
    assert position.since_seconds(datetime.now(UTC)) is None
    assert all(position.take(stamp) for stamp in (at(1), at(1), at(2)))


def test_a_reopened_stream_skips_exactly_what_was_delivered() -> None:
    position = StreamPosition()
    first_stream = [at(1), at(5), at(5), at(5)]
    assert [position.take(stamp) for stamp in first_stream] == [True] * 4
    position.reopen()
    # The API repeats the lines of the last seconds: the old ones and the three at 5 ns are skipped,
    # a fourth line at 5 ns and the later ones are new.
    replay = [at(0), at(1), at(5), at(5), at(5), at(5), at(6), at(0, second=4)]
    assert [position.take(stamp) for stamp in replay] == [False, False, False, False, False, True, True, True]
    position.reopen()
    assert [position.take(stamp) for stamp in [at(6), at(0, second=4), at(7, second=4)]] == [False, False, True]


def test_a_reopened_stream_reaches_back_past_the_last_line_with_a_margin() -> None:
    position = StreamPosition()
    position.take(at(0))
    now = at(0)[0] + timedelta(seconds=42.2)
    assert position.since_seconds(now) == 43 + RESUME_MARGIN_SECONDS
    assert position.since_seconds(at(0)[0]) == 1 + RESUME_MARGIN_SECONDS  # never 0: that reads nothing


@pytest.mark.parametrize(
    ("status", "previous", "pod_here", "end"),
    [
        (None, False, True, StreamEnd.GOES_ON),  # broke off: the lines after the break are still the kubelet's
        (None, True, True, StreamEnd.GOES_ON),
        (500, False, True, StreamEnd.GOES_ON),  # the API server could not reach the kubelet
        (503, True, True, StreamEnd.GOES_ON),
        (429, False, True, StreamEnd.GOES_ON),  # throttled
        (404, False, True, StreamEnd.GOES_ON),  # the pod is here: its node unknown to the API server for a moment
        (404, False, False, StreamEnd.POD_DELETED),
        (404, True, False, StreamEnd.GOES_ON),  # a previous start's log: asked again until the seal's deadline
        (400, False, True, StreamEnd.READ),  # kwok's "no logs found": nothing more to read
        (403, False, True, StreamEnd.READ),
        (400, True, True, StreamEnd.RESTARTED_AGAIN),  # "previous terminated container not found"
        (422, True, False, StreamEnd.RESTARTED_AGAIN),
    ],
)
def test_how_far_a_stream_that_ended_with_an_error_got(status: int | None, previous: bool, pod_here: bool, end: StreamEnd) -> None:
    assert stream_end_after_error(status, previous=previous, pod_here=pod_here) is end
