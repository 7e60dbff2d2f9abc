"""How the operator cuts a followed log stream into lines (``trainrun.kube.aioclient.split_lines``): memory
stays bounded per stream whatever a replica prints, and no byte sequence breaks a stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from trainrun.kube.aioclient import MAX_LINE_BYTES, TRUNCATED_MARKER, split_lines


def lines_of(*chunks: bytes) -> list[str]:
    async def arriving() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async def collect() -> list[str]:
        return [line async for batch in split_lines(arriving()) for line in batch]

    return asyncio.run(collect())


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ((b"one\ntwo\n",), ["one", "two"]),
        ((b"on", b"e\ntw", b"o"), ["one", "two"]),  # split anywhere; the last line without a newline kept
        ((b"crlf\r\n",), ["crlf"]),
        ((b"\xff\xfebinary \xc3\x28 junk\n",), ["\ufffd\ufffdbinary \ufffd( junk"]),
        ((b"\n\n",), ["", ""]),
    ],
    ids=["whole", "split", "crlf", "invalid-utf8", "empty-lines"],
)
def test_lines(chunks: tuple[bytes, ...], expected: list[str]) -> None:
    assert lines_of(*chunks) == expected


def test_a_line_too_long_is_cut_once_and_the_stream_goes_on() -> None:
    giant = [b"x" * 50_000 for _ in range(10)]  # 500 kB without a newline, in pieces
    lines = lines_of(b"before\n", *giant, b"tail of the giant\nafter\n")
    assert lines[0] == "before"
    assert lines[1] == "x" * MAX_LINE_BYTES + TRUNCATED_MARKER
    assert lines[2:] == ["after"]
