"""The format of a run's log archive in object storage while it trains and after. Pure (standard library).

Object stores cannot append, so the operator's log follower (``trainrun.controller.logs``) ships what
it read as numbered *segments*, one object per flush (every few seconds or few MB), under the run's
archive location (``<output>/logs/``)::

    .parts/0000000001.seg    a JSON header line, then each channel's new lines, in the header's order
    .parts/0000000002.seg    ...
    .parts/sealed.json       the last header, once the logs were composed (then the segments go)
    master-0.log, worker-0.log, metrics.jsonl   composed from the segments when the run ends

A channel is a replica (``master-0``) or ``metrics`` (every parsed metric sample as a JSON line). The
header carries the follower's state *after* the segment's lines: per container start the position
its log was read to (opaque to this module: the follower's own JSON), the run's latest metric values, and the number of lines shipped per channel. A segment is written with a create-only PUT, so
it is the commit point: a follower that starts (after a crash, or a new leader) lists ``.parts/``,
takes the header of the highest segment and resumes every stream exactly there; a segment number
written by someone else is refused instead of overwritten. Readers (the follower when it seals, the
CLI's ``trainrun logs`` once the pods are gone) put the segments' blocks together in order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

PARTS = ".parts"
SEALED_KEY = f"{PARTS}/sealed.json"
SEGMENT_SUFFIX = ".seg"
METRICS_CHANNEL = "metrics"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ArchiveState:
    """The follower's state after the newest segment: what a restarted follower resumes from."""

    sequence: int = 0  # the number of the newest segment (0: none yet)
    positions: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # by container start
    # The run's metric summary: {"latest": {name: value}, "master": {name: value}} (trainrun.metrics.MetricSummary)
    metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    shipped: Mapping[str, int] = field(default_factory=dict)  # channel -> lines in all segments

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "sequence": self.sequence,
            "positions": {key: dict(value) for key, value in sorted(self.positions.items())},
            "metrics": {part: dict(values) for part, values in sorted(self.metrics.items())},
            "shipped": dict(sorted(self.shipped.items())),
        }

    @classmethod
    def from_json(cls, document: Any, *, source: str) -> ArchiveState:
        """Raises ``ValueError`` naming ``source`` when the document is not a header of this format."""
        try:
            if document["version"] != FORMAT_VERSION:
                raise ValueError(f"format version {document['version']!r}, this operator reads {FORMAT_VERSION}")
            return cls(
                sequence=int(document["sequence"]),
                positions={str(key): dict(value) for key, value in document["positions"].items()},
                metrics={
                    str(part): {str(name): float(value) for name, value in values.items()}
                    for part, values in document["metrics"].items()
                },
                shipped={str(channel): int(count) for channel, count in document["shipped"].items()},
            )
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise ValueError(f"log archive {source} is not readable: {error!r}") from error


@dataclass(frozen=True)
class Segment:
    """One flush: the lines each channel got since the last one, and the state after them."""

    state: ArchiveState
    blocks: Mapping[str, tuple[str, ...]]  # channel -> lines (no line contains a newline)

    @property
    def key(self) -> str:
        return segment_key(self.state.sequence)

    @property
    def size(self) -> int:
        return sum(len(line) + 1 for lines in self.blocks.values() for line in lines)

    def encode(self) -> bytes:
        header = {**self.state.to_json(), "blocks": [[channel, len(lines)] for channel, lines in self.blocks.items()]}
        parts = [json.dumps(header, separators=(",", ":"))]
        for lines in self.blocks.values():
            parts.extend(lines)
        return ("\n".join(parts) + "\n").encode("utf-8", "surrogateescape")

    @classmethod
    def decode(cls, data: bytes, *, source: str) -> Segment:
        """Raises ``ValueError`` naming ``source`` when the object is not a whole segment."""
        text = data.decode("utf-8", "replace")
        if not text.endswith("\n"):
            raise ValueError(f"log segment {source} is cut short (no final newline)")
        lines = text[:-1].split("\n")
        try:
            header = json.loads(lines[0])
            counts = [(str(channel), int(count)) for channel, count in header["blocks"]]
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"log segment {source} has no readable header: {error!r}") from error
        state = ArchiveState.from_json(header, source=source)
        if sum(count for _, count in counts) != len(lines) - 1:
            raise ValueError(f"log segment {source} holds {len(lines) - 1} lines, its header says {sum(c for _, c in counts)}")
        blocks: dict[str, tuple[str, ...]] = {}
        start = 1
        for channel, count in counts:
            blocks[channel] = tuple(lines[start : start + count])
            start += count
        return cls(state=state, blocks=blocks)


def segment_key(sequence: int) -> str:
    return f"{PARTS}/{sequence:010d}{SEGMENT_SUFFIX}"


def segment_sequence(key: str) -> int | None:
    """The number of a segment's key (relative to the archive), or None for any other object."""
    name = key.removeprefix(f"{PARTS}/")
    if name == key or not name.endswith(SEGMENT_SUFFIX):
        return None
    digits = name.removesuffix(SEGMENT_SUFFIX)
    return int(digits) if digits.isdigit() else None


def channel_key(channel: str) -> str:
    """The composed object of a channel: ``master-0.log``, ``metrics.jsonl``."""
    return "metrics.jsonl" if channel == METRICS_CHANNEL else f"{channel}.log"


def ordered_segments(keys: Iterable[str]) -> list[tuple[int, str]]:
    """(sequence, key) of the segments among ``keys``, oldest first."""
    found = ((segment_sequence(key), key) for key in keys)
    return sorted((sequence, key) for sequence, key in found if sequence is not None)


def compose(segments: Iterable[Segment]) -> dict[str, list[str]]:
    """Every channel's lines across segments (oldest first), channels in the order they first appeared."""
    channels: dict[str, list[str]] = {}
    for segment in segments:
        for channel, lines in segment.blocks.items():
            channels.setdefault(channel, []).extend(lines)
    return channels


__all__ = [
    "METRICS_CHANNEL",
    "SEALED_KEY",
    "ArchiveState",
    "Segment",
    "channel_key",
    "compose",
    "ordered_segments",
    "segment_key",
    "segment_sequence",
]
