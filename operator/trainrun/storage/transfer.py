"""Upload a run's output folder to object storage and download it back, verified.

Called by the CLI (``trainrun upload`` / ``trainrun download``; the uploader Job's pod runs
``trainrun upload`` after a successful run), the local runner, and the operator's artifact reader
(``trainrun.controller.artifacts``: ``read_manifest``, and ``upload_file`` for the replicas' logs).
The functions are synchronous; the operator's async code runs them with ``asyncio.to_thread``.

Why threads and obstore's *sync* API rather than ``put_async`` on an event loop: with obstore
0.12.1, a tokio worker that completes an asyncio future wakes the loop through
``call_soon_threadsafe`` and may still be inside that call when the loop has finished and the
interpreter is shutting down; re-taking the GIL then kills the thread and the process aborts
(SIGABRT, seen in 6 of 10 short runs here). Sync calls from a thread pool never hand work back
to Python from tokio threads, measured as fast (the requests run in tokio either way), and the
pool is joined before any function returns.

Upload protocol: list the prefix (fails fast on bad credentials, a missing bucket or an
unreachable endpoint), delete a stale ``manifest.json``, upload every file (sha256 computed
from the bytes as they are sent; small files in one PUT, large ones multipart; transient errors
retried with exponential backoff), check every object's size in a listing, then write
``manifest.json`` last. Any failure raises :class:`UploadError` and leaves no manifest.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import obstore
from obstore.exceptions import BaseError

from trainrun.base.errors import (
    ChecksumMismatchError,
    DownloadError,
    StorageError,
    UploadError,
)
from trainrun.base.redact import redact
from trainrun.base.uri import StorageLocation, normalise_key, parse_uri
from trainrun.storage.ignore import CODE_SNAPSHOT_LIMIT_BYTES, IGNORE_FILE, IgnoreRules
from trainrun.storage.manifest import MANIFEST_NAME, FileRecord, Manifest
from trainrun.storage.options import StorageOptions
from trainrun.storage.stores import UnusableSettings, describe_error, is_transient, open_store

if TYPE_CHECKING:
    from obstore.store import ObjectStore

log = logging.getLogger(__name__)

# Files up to this size go in one PUT from memory; larger ones stream in multipart parts.
SINGLE_PUT_LIMIT = 8 * 1024 * 1024
_PART_SIZE = 8 * 1024 * 1024
_PARTS_IN_FLIGHT = 8
# S3 allows 10,000 parts per upload; stay below it for very large files.
_MAX_PARTS = 9_000
# Large files in flight at once: bounds memory to about
# _LARGE_FILES_IN_FLIGHT * _PARTS_IN_FLIGHT * part size whatever `concurrency` is.
_LARGE_FILES_IN_FLIGHT = 2
_DOWNLOAD_CHUNK = 8 * 1024 * 1024
_large_file_slots = threading.BoundedSemaphore(_LARGE_FILES_IN_FLIGHT)

_T = TypeVar("_T")


@dataclass(frozen=True)
class RetryPolicy:
    """Per-file retries for transient errors: ``attempts`` tries, backoff doubling up to a cap."""

    attempts: int = 6
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 10.0

    def delay(self, failed_attempts: int) -> float:
        base = min(self.max_backoff_s, self.initial_backoff_s * 2.0 ** (failed_attempts - 1))
        return base * random.uniform(0.5, 1.0)  # jitter spreads retries of many files


@dataclass(frozen=True)
class TransferProgress:
    """Counters passed to a progress callback after each chunk and each finished file."""

    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int


ProgressCallback = Callable[[TransferProgress], None]


@dataclass(frozen=True)
class UploadResult:
    """What :func:`upload_directory` uploaded: the manifest written last, where, and timing."""

    uri: str
    manifest_uri: str
    manifest: Manifest
    elapsed_s: float
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True)
class DownloadResult:
    """What :func:`download` wrote, and whether it was checked against a manifest."""

    uri: str
    destination: Path
    files: tuple[FileRecord, ...]
    verified: bool
    elapsed_s: float
    unverified_paths: tuple[str, ...] = ()

    @property
    def total_bytes(self) -> int:
        return sum(record.size for record in self.files)


@dataclass(frozen=True)
class _LocalFile:
    key: str
    path: Path
    size: int


@dataclass
class _TransferState:
    """Shared by the worker threads of one transfer.

    Counters are updated under a lock that also serialises the user's progress callback;
    ``stop`` is set when a file has failed, so the other workers give up instead of retrying.
    """

    files_total: int
    bytes_total: int
    callback: ProgressCallback | None
    files_done: int = 0
    bytes_done: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def add(self, *, files: int = 0, nbytes: int = 0) -> None:
        with self.lock:
            self.files_done += files
            self.bytes_done += nbytes
            if self.callback is not None:
                self.callback(TransferProgress(self.files_done, self.files_total, self.bytes_done, self.bytes_total))


def upload_directory(
    src_dir: str | os.PathLike[str],
    uri: str,
    *,
    options: StorageOptions | None = None,
    concurrency: int = 64,
    progress: ProgressCallback | None = None,
    extra_files: Mapping[str, str | os.PathLike[str]] | None = None,
    retry: RetryPolicy = RetryPolicy(),
    ignore: IgnoreRules | None = None,
    max_bytes: int | None = None,
) -> UploadResult:
    """Upload every file under ``src_dir`` to ``uri``, then write ``<uri>/manifest.json``.

    ``ignore`` leaves out what its rules match (a code snapshot's ``.trainrunignore``); with
    ``max_bytes`` a folder larger than that is refused before anything is sent.

    ``extra_files`` maps more keys to local files (e.g. ``{"logs/master-0.log": path}``) so they
    are listed in the same manifest. Symlinks are followed; broken ones are skipped with a
    warning (listed in ``UploadResult.skipped``). Raises :class:`UploadError` (no manifest
    written) or :class:`InvalidStorageURI`.
    """
    started = time.monotonic()
    location = parse_uri(uri)
    options = options or StorageOptions()
    root = Path(src_dir)
    if not root.is_dir():
        raise UploadError(f"cannot upload {str(root)!r} to {location.uri}: it is not a directory")
    files, skipped = _collect_files(root, ignore)
    if max_bytes is not None:
        _refuse_oversized(root, files, max_bytes)
    for key, extra in (extra_files or {}).items():
        extra_path = Path(extra)
        files.append(
            _LocalFile(
                key=normalise_key(key, uri=location.uri),
                path=extra_path,
                size=_size_or_fail(extra_path, location),
            )
        )
    if any(local.key == MANIFEST_NAME for local in files):
        raise UploadError(
            f"cannot upload {str(root)!r} to {location.uri}: {MANIFEST_NAME!r} at its top level is "
            "reserved for the upload manifest; rename or move that file"
        )
    with store_errors(UploadError, location, options, action="upload to"):
        store = open_store(location, options, create_local_dir=True)
        # Fails fast on bad credentials, a missing bucket or an unreachable endpoint, and makes
        # sure a manifest from an earlier upload cannot describe a half-replaced folder.
        obstore.list_with_delimiter(store)
        _delete_if_present(store, MANIFEST_NAME)
        state = _TransferState(len(files), sum(local.size for local in files), progress)
        records = _run_in_pool(
            [partial(_upload_with_retries, store, local, state, retry) for local in files],
            concurrency=concurrency,
            stop=state.stop,
        )
        _check_sizes(store, records, location)
        manifest = Manifest.build(records)
        obstore.put(store, MANIFEST_NAME, manifest.to_json(), use_multipart=False)
    return UploadResult(
        uri=location.uri,
        manifest_uri=location.child(MANIFEST_NAME).uri,
        manifest=manifest,
        elapsed_s=time.monotonic() - started,
        skipped=tuple(skipped),
    )


def upload_file(
    src: str | os.PathLike[str],
    uri: str,
    *,
    options: StorageOptions | None = None,
    retry: RetryPolicy = RetryPolicy(),
    progress: ProgressCallback | None = None,
) -> FileRecord:
    """Upload one file to the object ``uri`` names (e.g. ``s3://b/run/logs/master-0.log``).

    A URI ending in ``/``, or naming a local folder that exists, receives the file under its own
    name (``s3://b/run/`` -> ``s3://b/run/model.pt``), as ``cp`` and ``aws s3 cp`` do. Returns its
    record with ``path`` set to the object's URI. Raises :class:`UploadError`.
    """
    location = parse_uri(uri)
    options = options or StorageOptions()
    path = Path(src)
    if uri.endswith("/") or (location.scheme == "file" and Path(location.prefix).is_dir()):
        location = location.child(path.name)
    parent, name = location.parent_and_name()
    local = _LocalFile(key=name, path=path, size=_size_or_fail(path, location))
    with store_errors(UploadError, location, options, action="upload to"):
        store = open_store(parent, options, create_local_dir=True)
        record = _upload_with_retries(store, local, _TransferState(1, local.size, progress), retry)
        stored_size = obstore.head(store, name)["size"]
    if stored_size != record.size:
        raise UploadError(f"{location.uri}: after upload the object has {stored_size} bytes, expected {record.size}")
    return FileRecord(path=location.uri, size=record.size, sha256=record.sha256)


def download(
    uri: str,
    dst_dir: str | os.PathLike[str],
    *,
    options: StorageOptions | None = None,
    verify: bool = True,
    concurrency: int = 32,
    progress: ProgressCallback | None = None,
) -> DownloadResult:
    """Download every object under ``uri`` (or the one object it names) into ``dst_dir``.

    With ``verify`` and a ``manifest.json`` under ``uri``, every listed file must exist with the
    recorded size and sha256 (:class:`ChecksumMismatchError` names the first that differs);
    objects the manifest does not list are downloaded and reported in ``unverified_paths``.
    The manifest itself is not written to ``dst_dir``. Files are written to a temporary name
    and renamed once complete and verified.
    """
    started = time.monotonic()
    location = parse_uri(uri)
    options = options or StorageOptions()
    destination = Path(dst_dir)
    if destination.exists() and not destination.is_dir():
        raise DownloadError(f"cannot download {location.uri} into {str(destination)!r}: it is a file; give a folder")
    with store_errors(DownloadError, location, options, action="download from"):
        store = open_store(location, options)
        sizes = {meta["path"]: meta["size"] for batch in obstore.list(store, chunk_size=1000) for meta in batch}
        if not sizes:
            return _download_single_object(location, destination, options, started)
        manifest = read_manifest(uri, options=options) if MANIFEST_NAME in sizes else None
        expected = {record.path: record for record in manifest.files} if manifest and verify else {}
        for record in expected.values():
            if sizes.get(record.path) != record.size:
                found = "missing" if record.path not in sizes else f"{sizes[record.path]} bytes"
                raise DownloadError(
                    f"{location.uri}: {record.path!r} is listed in the manifest with {record.size} "
                    f"bytes but the bucket has {found}"
                )
        keys = sorted(key for key in sizes if key != MANIFEST_NAME)
        state = _TransferState(len(keys), sum(sizes[key] for key in keys), progress)
        records = _run_in_pool(
            [partial(_download_object, store, key, destination, location, expected.get(key), state) for key in keys],
            concurrency=concurrency,
            stop=state.stop,
        )
    return DownloadResult(
        uri=location.uri,
        destination=destination,
        files=tuple(sorted(records, key=lambda record: record.path)),
        verified=bool(expected),
        elapsed_s=time.monotonic() - started,
        unverified_paths=tuple(key for key in keys if key not in expected),
    )


def read_manifest(uri: str, *, options: StorageOptions | None = None) -> Manifest | None:
    """The manifest under ``uri``, or ``None`` when there is none (nothing uploaded yet).

    Raises :class:`DownloadError` when it cannot be read or parsed.
    """
    location = parse_uri(uri)
    if location.scheme == "file" and not Path(location.prefix).exists():
        return None  # a local folder nothing was copied into yet, as an empty prefix of a bucket
    options = options or StorageOptions()
    with store_errors(DownloadError, location, options, action="read the manifest of"):
        store = open_store(location, options)
        try:
            data = bytes(obstore.get(store, MANIFEST_NAME).bytes())
        except FileNotFoundError:
            return None
        try:
            return Manifest.from_json(data, source=location.child(MANIFEST_NAME).uri)
        except ValueError as error:
            raise DownloadError(str(error)) from error


def _download_single_object(
    location: StorageLocation, destination: Path, options: StorageOptions, started: float
) -> DownloadResult:
    if location.scheme != "file" and not location.prefix:
        raise DownloadError(f"{location.uri}: the bucket is empty")
    parent, name = location.parent_and_name()
    store = open_store(parent, options)
    try:
        obstore.head(store, name)
    except FileNotFoundError:
        raise DownloadError(f"{location.uri}: no object or prefix with this name exists") from None
    state = _TransferState(1, 0, None)
    record = _download_object(store, name, destination, parent, None, state)
    return DownloadResult(
        uri=location.uri,
        destination=destination,
        files=(record,),
        verified=False,
        elapsed_s=time.monotonic() - started,
        unverified_paths=(name,),
    )


def _refuse_oversized(root: Path, files: list[_LocalFile], max_bytes: int) -> None:
    total = sum(local.size for local in files)
    if total <= max_bytes:
        return
    largest = ", ".join(
        f"{local.key} ({local.size / 1e6:.1f} MB)" for local in sorted(files, key=lambda f: -f.size)[:3]
    )
    raise UploadError(
        f"{str(root)!r} holds {total / 1e6:.1f} MB in {len(files)} files, over the {max_bytes / 1e6:g} MB limit "
        f"for a code snapshot; the largest: {largest}. List data, checkpoints and environments in "
        f"{root / IGNORE_FILE} (one pattern per line, like .gitignore), or raise the limit"
    )


def _collect_files(root: Path, ignore: IgnoreRules | None = None) -> tuple[list[_LocalFile], list[str]]:
    """Every regular file under ``root`` (links followed, loops and broken links skipped, ignored ones left)."""
    files: list[_LocalFile] = []
    skipped: list[str] = []
    visited_dirs: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        directory = Path(dirpath)
        identity = directory.stat()
        if (identity.st_dev, identity.st_ino) in visited_dirs:
            dirnames.clear()  # a symlink loop: this directory was already walked
            continue
        visited_dirs.add((identity.st_dev, identity.st_ino))
        dirnames.sort()
        if ignore is not None:
            dirnames[:] = [
                name
                for name in dirnames
                if not ignore.ignores((directory / name).relative_to(root).as_posix(), is_dir=True)
            ]
        for name in sorted(filenames):
            path = directory / name
            key = path.relative_to(root).as_posix()
            if ignore is not None and ignore.ignores(key, is_dir=False):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                log.warning("skipping %s: broken symbolic link", path)
                skipped.append(key)
                continue
            files.append(_LocalFile(key=key, path=path, size=stat.st_size))
    return files, skipped


def _size_or_fail(path: Path, location: StorageLocation) -> int:
    try:
        if path.is_file():
            return path.stat().st_size
    except OSError:
        pass
    raise UploadError(f"cannot upload {str(path)!r} to {location.uri}: it is not a readable file")


def _upload_with_retries(
    store: ObjectStore, local: _LocalFile, state: _TransferState, retry: RetryPolicy
) -> FileRecord:
    for attempt in range(1, retry.attempts + 1):
        sent = 0

        def count(nbytes: int) -> None:
            nonlocal sent
            sent += nbytes
            state.add(nbytes=nbytes)

        try:
            record = _upload_once(store, local, count)
        except BaseError as error:
            state.add(nbytes=-sent)
            if attempt == retry.attempts or not is_transient(error) or state.stop.is_set():
                raise
            delay = retry.delay(attempt)
            log.warning(
                "upload of %s failed (%s); retry %d in %.1fs",
                local.key,
                redact(str(error).strip().splitlines()[0]),
                attempt,
                delay,
            )
            if state.stop.wait(delay):
                raise
            continue
        except OSError as error:
            if error.filename is None and isinstance(error, FileNotFoundError):
                raise  # the store's "not found" (obstore raises it as FileNotFoundError): a missing bucket
            raise UploadError(f"cannot read {str(local.path)!r}: {error}") from error
        state.add(files=1)
        return record
    raise AssertionError("unreachable: the last attempt returns or raises")


def _upload_once(store: ObjectStore, local: _LocalFile, count: Callable[[int], None]) -> FileRecord:
    digest = hashlib.sha256()
    if local.size <= SINGLE_PUT_LIMIT:
        data = local.path.read_bytes()
        digest.update(data)
        obstore.put(store, local.key, data, use_multipart=False)
        count(len(data))
        return FileRecord(path=local.key, size=len(data), sha256=digest.hexdigest())
    part_size = max(_PART_SIZE, -(-local.size // _MAX_PARTS))
    sizes: list[int] = []

    def chunks() -> Iterator[bytes]:
        with local.path.open("rb") as stream:
            while chunk := stream.read(part_size):
                digest.update(chunk)
                sizes.append(len(chunk))
                count(len(chunk))
                yield chunk

    with _large_file_slots:
        obstore.put(store, local.key, chunks(), chunk_size=part_size, max_concurrency=_PARTS_IN_FLIGHT)
    return FileRecord(path=local.key, size=sum(sizes), sha256=digest.hexdigest())


def _check_sizes(store: ObjectStore, records: list[FileRecord], location: StorageLocation) -> None:
    """Compare every object's size with what was sent, from a listing of the prefix (one
    request per 1,000 objects instead of a HEAD per object)."""
    listed = {meta["path"]: meta["size"] for batch in obstore.list(store, chunk_size=1000) for meta in batch}
    for record in records:
        if listed.get(record.path) != record.size:
            raise UploadError(
                f"{location.uri}: after upload {record.path!r} has "
                f"{listed.get(record.path, 'no object')} bytes in the bucket, expected {record.size}"
            )


def _download_object(
    store: ObjectStore,
    key: str,
    destination: Path,
    location: StorageLocation,
    expected: FileRecord | None,
    state: _TransferState,
) -> FileRecord:
    target = destination.joinpath(*key.split("/"))
    if destination.resolve() not in target.resolve().parents:
        raise DownloadError(f"{location.uri}: object key {key!r} would be written outside {destination}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    digest = hashlib.sha256()
    size = 0
    try:
        with partial.open("wb") as sink:
            for chunk in obstore.get(store, key).stream(min_chunk_size=_DOWNLOAD_CHUNK):
                view = memoryview(chunk)
                digest.update(view)
                sink.write(view)
                size += len(view)
                state.add(nbytes=len(view))
        actual = digest.hexdigest()
        if expected is not None and (actual != expected.sha256 or size != expected.size):
            raise ChecksumMismatchError(uri=location.child(key).uri, path=key, expected=expected.sha256, actual=actual)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    state.add(files=1)
    return FileRecord(path=key, size=size, sha256=actual)


def _delete_if_present(store: ObjectStore, key: str) -> None:
    try:
        obstore.delete(store, key)
    except FileNotFoundError:
        pass  # LocalStore reports a missing file; S3 deletes are idempotent


def _run_in_pool(tasks: list[Callable[[], _T]], *, concurrency: int, stop: threading.Event) -> list[_T]:
    """Run ``tasks`` on a thread pool; on the first failure set ``stop``, cancel the rest and
    re-raise it. The pool is joined before returning, so no worker outlives the call."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    if not tasks:
        return []
    workers = min(concurrency, len(tasks))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="trainrun-transfer") as pool:
        futures = [pool.submit(task) for task in tasks]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [future for future in futures if future in done and future.exception()]
            if failed:
                failed[0].result()  # re-raises the first failure
        except BaseException:  # that failure, or Ctrl-C while waiting: stop the others
            stop.set()
            for future in futures:
                future.cancel()
            raise
        return [future.result() for future in futures]


class store_errors:
    """Context manager turning obstore/OS errors into ``error_type`` with a clear message."""

    def __init__(
        self,
        error_type: type[StorageError],
        location: StorageLocation,
        options: StorageOptions,
        *,
        action: str,
    ) -> None:
        self.error_type = error_type
        self.location = location
        self.options = options
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, error: BaseException | None, _tb: object) -> None:
        if isinstance(error, UnusableSettings):
            raise self.error_type(f"cannot {self.action} {error}") from error
        if error is None or isinstance(error, StorageError):
            return
        if isinstance(error, (BaseError, FileNotFoundError)):
            message = describe_error(error, location=self.location, options=self.options)
        elif isinstance(error, OSError):
            message = f"{self.location.uri}: local file error: {error}"
        else:
            return
        raise self.error_type(f"cannot {self.action} {message}") from error


def upload_code_snapshot(
    directory: str | os.PathLike[str],
    uri: str,
    *,
    options: StorageOptions | None = None,
    max_bytes: int = CODE_SNAPSHOT_LIMIT_BYTES,
) -> UploadResult:
    """Upload a code folder as a snapshot: its ``.trainrunignore`` (and the defaults) honoured, size capped."""
    root = Path(directory)
    return upload_directory(root, uri, options=options, ignore=IgnoreRules.for_directory(root), max_bytes=max_bytes)
