"""Object-storage URIs: parse and check ``s3://``, ``gs://``, ``az://``/``abfs://``, ``file://`` and local paths.

Pure, so the spec validator can judge ``spec.output.uri`` and ``spec.inputs[].uri`` without an
object-store library; ``trainrun.storage`` opens stores from the parsed location.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlparse

Scheme = Literal["s3", "gs", "az", "file"]
ACCEPTED_FORMS = "s3://bucket/prefix, gs://bucket/prefix, az://container/prefix, file:///abs/path or /abs/path"
_SCHEME_ALIASES: dict[str, Scheme] = {"s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs", "az": "az", "abfs": "az", "abfss": "az", "azure": "az", "file": "file"}


class StorageUriError(ValueError):
    """A URI that names no object-storage location this product can reach."""


@dataclass(frozen=True)
class StorageLocation:
    """Where objects live: a scheme, a bucket (container) and a key prefix without slashes at its ends."""

    scheme: Scheme
    bucket: str
    prefix: str

    def child(self, relative: str) -> str:
        """The URI of a key below this location, e.g. ``s3://b/run-1/manifest.json``."""
        key = "/".join(part for part in (self.prefix, relative.strip("/")) if part)
        if self.scheme == "file":
            return f"file://{self.bucket}{key if key.startswith('/') else '/' + key}" if key else f"file://{self.bucket}"
        return f"{self.scheme}://{self.bucket}/{key}"

    def __str__(self) -> str:
        return self.child("")


def parse_uri(uri: str) -> StorageLocation:
    """Parse a storage URI; raise StorageUriError naming the URI and the accepted forms."""
    text = uri.strip()
    if not text:
        raise StorageUriError(f"an empty URI names no location; use one of: {ACCEPTED_FORMS}")
    if text.startswith("/"):
        return StorageLocation("file", "", text.rstrip("/") or "/")
    parsed = urlparse(text)
    scheme = _SCHEME_ALIASES.get(parsed.scheme.lower())
    if scheme is None:
        raise StorageUriError(f"{uri!r} has no supported scheme; use one of: {ACCEPTED_FORMS}")
    if scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise StorageUriError(f"{uri!r}: a file URI needs an absolute path, e.g. file:///data/runs")
        return StorageLocation("file", "", parsed.path.rstrip("/") or "/")
    bucket = parsed.netloc
    if not bucket:
        raise StorageUriError(f"{uri!r} names no bucket; write it as {scheme}://bucket/prefix")
    if scheme == "az" and "@" in bucket:
        bucket = bucket.split("@", 1)[0]  # abfs://container@account.dfs.core.windows.net/path
    return StorageLocation(scheme, bucket, parsed.path.strip("/"))
