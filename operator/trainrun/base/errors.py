"""Exceptions raised by :mod:`trainrun.storage` (pure: no third-party imports).

Callers (the CLI, the controller's uploader, the local runner) catch :class:`StorageError` and
show its message, which names the URI and the cause; no traceback is needed to act on it.
"""

from __future__ import annotations

from trainrun.base.redact import redact


class StorageError(Exception):
    """Base class: an object-storage operation failed; the message says where and why.

    The message is redacted here, once for every subclass: the object store's client quotes the
    endpoint URL in its errors, and a password inside ``AWS_ENDPOINT_URL`` must not reach a log, a
    termination message or the run's status."""

    def __init__(self, message: str = "") -> None:
        super().__init__(redact(message))


class InvalidStorageURI(StorageError, ValueError):
    """A URI is not one of the accepted forms."""


class UploadError(StorageError):
    """An upload failed; no manifest was written."""


class DownloadError(StorageError):
    """A download failed or its content could not be verified."""


class ChecksumMismatchError(DownloadError):
    """A downloaded file differs from what the manifest records."""

    def __init__(self, *, uri: str, path: str, expected: str, actual: str) -> None:
        super().__init__(
            f"checksum mismatch for {path!r} from {uri}: the manifest records sha256 {expected}, "
            f"the downloaded file has {actual}; the object was changed or corrupted after upload"
        )
        self.path = path
        self.expected = expected
        self.actual = actual
