"""Object storage for run artifacts: upload an output folder with a manifest, download it back.

The only package that imports obstore (in :mod:`.stores` and :mod:`.transfer`). Callers: the
CLI (``trainrun upload``/``download``), the controller's uploader and the local runner. Its URIs and
errors live in :mod:`trainrun.base` (the spec validates URIs with them). The transfer functions are
imported lazily so that ``import trainrun.storage`` for its options or manifest does not load obstore.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trainrun.base.errors import (
    ChecksumMismatchError,
    DownloadError,
    InvalidStorageURI,
    StorageError,
    UploadError,
)
from trainrun.base.uri import StorageLocation, parse_uri
from trainrun.storage.ignore import CODE_SNAPSHOT_LIMIT_BYTES, IGNORE_FILE
from trainrun.storage.manifest import MANIFEST_NAME, FileRecord, Manifest
from trainrun.storage.options import StorageOptions

if TYPE_CHECKING:
    from trainrun.storage.transfer import (
        DownloadResult,
        ProgressCallback,
        RetryPolicy,
        TransferProgress,
        UploadResult,
        download,
        read_manifest,
        upload_code_snapshot,
        upload_directory,
        upload_file,
    )

_TRANSFER_NAMES = frozenset(
    {
        "DownloadResult",
        "ProgressCallback",
        "RetryPolicy",
        "TransferProgress",
        "UploadResult",
        "download",
        "read_manifest",
        "upload_code_snapshot",
        "upload_directory",
        "upload_file",
    }
)


def __getattr__(name: str) -> Any:
    if name in _TRANSFER_NAMES:
        from trainrun.storage import transfer

        return getattr(transfer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CODE_SNAPSHOT_LIMIT_BYTES",
    "IGNORE_FILE",
    "MANIFEST_NAME",
    "ChecksumMismatchError",
    "DownloadError",
    "DownloadResult",
    "FileRecord",
    "InvalidStorageURI",
    "Manifest",
    "ProgressCallback",
    "RetryPolicy",
    "StorageError",
    "StorageLocation",
    "StorageOptions",
    "TransferProgress",
    "UploadError",
    "UploadResult",
    "download",
    "parse_uri",
    "read_manifest",
    "upload_code_snapshot",
    "upload_directory",
    "upload_file",
]
