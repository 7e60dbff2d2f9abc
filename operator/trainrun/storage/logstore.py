"""A run's log archive in object storage: segments written while it trains, composed logs after.

The format is :mod:`trainrun.storage.logarchive`. :class:`LogArchive` does the I/O with obstore's
asynchronous calls, so the operator's log follower (``trainrun.controller.logs``) ships thousands of
runs' logs from kopf's event loop without a thread per run; the CLI (``trainrun logs`` once the pods
are gone) reads the same archive through :func:`read_archived_logs`. Errors are
:class:`~trainrun.base.errors.StorageError` with a message that names the URI and the fix.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import obstore
from obstore.exceptions import AlreadyExistsError, PreconditionError

from trainrun.base.errors import StorageError
from trainrun.base.uri import parse_uri
from trainrun.storage.logarchive import (
    PARTS,
    SEALED_KEY,
    ArchiveState,
    Segment,
    channel_key,
    compose,
    ordered_segments,
)
from trainrun.storage.manifest import MANIFEST_NAME, FileRecord, Manifest
from trainrun.storage.options import StorageOptions
from trainrun.storage.stores import open_store, shared_store
from trainrun.storage.transfer import store_errors

LOGS_FOLDER = "logs"
# Archive requests in flight at once, over all runs of a process (an operator starting with a thousand
# runs loads a thousand archives): the store sees a bounded load, and a file:// store (which reads and
# writes through a pool of blocking threads) keeps a bounded number of threads.
IO_CONCURRENCY = 16
_slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


def _io_slot() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    slot = _slots.get(loop)
    if slot is None:
        _slots.clear()  # a semaphore belongs to one loop; a process runs one at a time
        slot = _slots[loop] = asyncio.Semaphore(IO_CONCURRENCY)
    return slot


CHANNELS_PER_PASS = 8
COMPOSE_BUFFER = 8 << 20  # per composed object being written: multipart parts of this size (S3's minimum is 5 MiB)


class ArchiveConflict(StorageError):
    """A segment number this follower was about to write exists: another follower writes this archive."""


@dataclass(frozen=True)
class ArchiveLoad:
    """What an archive holds when a follower starts: the state to resume from, and whether it is sealed."""

    state: ArchiveState
    sealed: bool
    files: tuple[FileRecord, ...] = ()  # the composed logs, once sealed (paths relative to the archive)


class LogArchive:
    """One run's log archive location (``<output>/logs``, or the operator's default location)."""

    def __init__(self, uri: str, options: StorageOptions) -> None:
        self.location = parse_uri(uri)
        self.options = options
        with self._errors("open the log archive"):
            rooted = shared_store(self.location, options, create_local_dir=True)
        self.store = rooted.store  # shared with the other archives in its bucket
        self.root = rooted.root  # where this archive's keys begin in it

    @property
    def uri(self) -> str:
        return self.location.uri

    def _errors(self, action: str) -> store_errors:
        return store_errors(StorageError, self.location, self.options, action=f"{action} at")

    async def _keys(self) -> list[str]:
        async with _io_slot():
            with self._errors("list the log archive"):
                batches = await obstore.list(self.store, f"{self.root}{PARTS}/").collect_async()
        return [self._relative(str(item["path"])) for item in batches]

    def _relative(self, path: str) -> str:
        """A key as the store lists it -> the key in this archive (``.parts/0000000001.seg``)."""
        return path[len(self.root) :] if path.startswith(self.root) else path

    async def read(self, key: str) -> bytes:
        async with _io_slot():
            with self._errors("read the log archive"):
                result = await obstore.get_async(self.store, self.root + key)
                return bytes(await result.bytes_async())

    def read_all(self) -> dict[str, list[str]]:
        """Every channel's lines (composed, or still in segments); empty if nothing was shipped.

        Blocking, with obstore's synchronous calls, for a short-lived process (``trainrun logs``): its
        asynchronous calls finish their work on obstore's own threads after the awaiting coroutine has
        resumed, and a process that exits then aborts (SIGABRT: 7 of 40 runs on a busy machine)
        when such a thread asks for the GIL while the interpreter shuts down.
        """

        def read(key: str) -> bytes:
            with self._errors("read the log archive"):
                return bytes(obstore.get(self.store, self.root + key).bytes())

        with self._errors("list the log archive"):
            keys = [self._relative(str(item["path"])) for item in obstore.list(self.store, f"{self.root}{PARTS}/").collect()]
        if SEALED_KEY not in keys:
            return compose([Segment.decode(read(key), source=self._name(key)) for _, key in ordered_segments(keys)])
        channels: dict[str, list[str]] = {}
        for record in self._sealed(read(SEALED_KEY)).files:
            text = read(record.path).decode("utf-8", "replace")
            channel = record.path.removesuffix(".log").removesuffix(".jsonl")
            channels[channel] = text[:-1].split("\n") if text else []
        return channels

    def _sealed(self, data: bytes) -> ArchiveLoad:
        """The seal record: the state the archive ended in and the composed files."""
        document = json.loads(data)
        files = tuple(FileRecord(str(f["path"]), int(f["size"]), str(f["sha256"])) for f in document["files"])
        return ArchiveLoad(ArchiveState.from_json(document["state"], source=self._name(SEALED_KEY)), True, files)

    async def load(self) -> ArchiveLoad:
        """The newest state (sealed, or of the highest segment); an empty state when nothing was shipped."""
        keys = await self._keys()
        if SEALED_KEY in keys:
            return self._sealed(await self.read(SEALED_KEY))
        segments = ordered_segments(keys)
        if not segments:
            return ArchiveLoad(ArchiveState(), False)
        _, newest = segments[-1]
        segment = Segment.decode(await self.read(newest), source=self._name(newest))
        return ArchiveLoad(segment.state, False)

    async def write(self, segment: Segment) -> None:
        """Write one segment, create-only: a number that exists raises :class:`ArchiveConflict`."""
        try:
            async with _io_slot():
                with self._errors("write a log segment"):
                    await obstore.put_async(
                        self.store, self.root + segment.key, segment.encode(), mode="create", use_multipart=False
                    )
        except StorageError as error:
            if isinstance(error.__cause__, (AlreadyExistsError, PreconditionError)):
                raise ArchiveConflict(f"{self._name(segment.key)} was written by another follower") from error
            raise

    async def seal(self, state: ArchiveState) -> tuple[FileRecord, ...]:
        """Compose every channel's object from the segments, record that, then delete the segments.

        Idempotent: a seal cut short is done again from the segments (they go only after the record).
        Returns the composed files (paths relative to the archive).
        """
        loaded = await self.load()
        if loaded.sealed:
            return loaded.files
        keys = [key for _, key in ordered_segments(await self._keys())]
        channels = list(dict.fromkeys(channel for channel in (state.shipped or {}) if state.shipped[channel]))
        records: list[FileRecord] = []
        # Straight from the segments to the store (multipart), a few channels per pass over the segments:
        # no local copy (the operator's /tmp is small) and bounded memory, whatever the logs' size.
        for start in range(0, len(channels), CHANNELS_PER_PASS):
            records += await self._compose(keys, channels[start : start + CHANNELS_PER_PASS])
        records.sort(key=lambda record: record.path)
        document = {
            "state": state.to_json(),
            "files": [{"path": r.path, "size": r.size, "sha256": r.sha256} for r in records],
        }
        with self._errors("record the sealed log archive"):
            await obstore.put_async(self.store, self.root + SEALED_KEY, json.dumps(document, indent=1).encode())
            if keys:
                await obstore.delete_async(self.store, [self.root + key for key in keys])
        return tuple(records)

    async def _compose(self, keys: list[str], channels: list[str]) -> list[FileRecord]:
        """Write each of ``channels`` as one object, from every segment in order."""
        writers = {}
        digests = {channel: hashlib.sha256() for channel in channels}
        sizes = dict.fromkeys(channels, 0)
        with self._errors("write a composed log"):
            for channel in channels:
                writers[channel] = obstore.open_writer_async(
                    self.store, self.root + channel_key(channel), buffer_size=COMPOSE_BUFFER
                )
            for key in keys:  # one segment in memory at a time
                segment = Segment.decode(await self.read(key), source=self._name(key))
                for channel in channels:
                    lines = segment.blocks.get(channel)
                    if lines:
                        data = "".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape")
                        await writers[channel].write(data)
                        digests[channel].update(data)
                        sizes[channel] += len(data)
            for writer in writers.values():
                await writer.close()
        return [FileRecord(channel_key(c), sizes[c], digests[c].hexdigest()) for c in channels]

    def _name(self, key: str) -> str:
        return self.location.child(key).uri


async def add_to_manifest(output_uri: str, options: StorageOptions, records: Sequence[FileRecord]) -> Manifest | None:
    """Add the composed logs (``logs/<name>``) to ``<output>/manifest.json``; None when there is no manifest.

    The uploader wrote the manifest for the outputs it copied; the logs are composed by the operator,
    so they join it here, and the manifest is rewritten only when it lacks them.
    """
    location = parse_uri(output_uri)
    if location.scheme == "file" and not Path(location.prefix).is_dir():
        return None
    with store_errors(StorageError, location, options, action="update the manifest at"):
        store = open_store(location, options)
        try:
            data = bytes(await (await obstore.get_async(store, MANIFEST_NAME)).bytes_async())
        except FileNotFoundError:
            return None
        manifest = Manifest.from_json(data, source=location.child(MANIFEST_NAME).uri)
        wanted = {f"{LOGS_FOLDER}/{record.path}": record for record in records}
        have = {record.path: record for record in manifest.files}
        if all(have.get(path) == FileRecord(path, r.size, r.sha256) for path, r in wanted.items()):
            return manifest
        kept = [record for record in manifest.files if record.path not in wanted]
        merged = Manifest.build([*kept, *(FileRecord(path, r.size, r.sha256) for path, r in wanted.items())])
        await obstore.put_async(store, MANIFEST_NAME, merged.to_json(), use_multipart=False)
        return merged


def read_archived_logs(uri: str, options: StorageOptions) -> dict[str, list[str]]:
    """Every channel's lines in a run's log archive (composed or still in segments); empty if none.

    For the CLI: a blocking call (see :meth:`LogArchive.read_all`).
    """
    return LogArchive(uri, options).read_all()


__all__ = ["LOGS_FOLDER", "ArchiveConflict", "ArchiveLoad", "LogArchive", "add_to_manifest", "read_archived_logs"]
