"""The artifact manifest, ``<uri>/manifest.json`` (pure: standard library only).

Written LAST by :func:`trainrun.storage.upload_directory`, so its presence means every listed
file was uploaded and verified; :func:`trainrun.storage.download` checks downloads against it.
Format: ``{"files": [{"path", "size", "sha256"}], "total_bytes", "file_count",
"created"}`` with paths relative to the URI, ``/``-separated, sorted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class FileRecord:
    """One uploaded file: its key relative to the URI, its size in bytes and its sha256 (hex)."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """Every file of an upload, with totals and the UTC creation time (ISO 8601)."""

    files: tuple[FileRecord, ...]
    created: str

    @classmethod
    def build(cls, records: Iterable[FileRecord]) -> Manifest:
        """A manifest of ``records`` (sorted by path), created now."""
        ordered = tuple(sorted(records, key=lambda record: record.path))
        created = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        return cls(files=ordered, created=created)

    @property
    def total_bytes(self) -> int:
        return sum(record.size for record in self.files)

    @property
    def file_count(self) -> int:
        return len(self.files)

    def to_json(self) -> bytes:
        document = {
            "files": [{"path": record.path, "size": record.size, "sha256": record.sha256} for record in self.files],
            "total_bytes": self.total_bytes,
            "file_count": self.file_count,
            "created": self.created,
        }
        return (json.dumps(document, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, *, source: str) -> Manifest:
        """Parse a manifest; ``source`` (its URI) is named in errors. Raises ``ValueError``."""
        try:
            document = json.loads(data)
            files = tuple(_record(entry) for entry in document["files"])
            created = str(document["created"])
            declared = (int(document["total_bytes"]), int(document["file_count"]))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"manifest {source} is not valid: {error!r}") from error
        manifest = cls(files=files, created=created)
        if declared != (manifest.total_bytes, manifest.file_count):
            raise ValueError(
                f"manifest {source} is not valid: total_bytes/file_count {declared} do not match "
                f"its files ({manifest.total_bytes}, {manifest.file_count})"
            )
        return manifest


def _record(entry: Any) -> FileRecord:
    return FileRecord(path=str(entry["path"]), size=int(entry["size"]), sha256=str(entry["sha256"]))
