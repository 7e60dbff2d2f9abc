"""Parse and validate object-storage URIs (pure: standard library only).

The spec validator calls :func:`parse_uri` to check ``spec.output.uri`` and the input and code URIs
without importing the object-store library; :mod:`trainrun.storage` uses the :class:`StorageLocation`
it returns to open a store. Accepted forms: ``s3://bucket/prefix``,
``gs://bucket/prefix``, ``az://container/prefix`` (or ``abfs://``/``abfss://``, optionally
``container@account.dfs.core.windows.net``), ``file:///absolute/path`` or a plain local path.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass, replace
from typing import Literal
from urllib.parse import unquote, urlsplit

from trainrun.base.errors import InvalidStorageURI

Scheme = Literal["s3", "gs", "az", "file"]

ACCEPTED_FORMS = (
    "s3://bucket/prefix, gs://bucket/prefix, az://container/prefix (or abfs://container/prefix), "
    "file:///absolute/path or a local path"
)

_SCHEME_ALIASES: dict[str, Scheme] = {
    "s3": "s3",
    "gs": "gs",
    "az": "az",
    "abfs": "az",
    "abfss": "az",
    "file": "file",
}
# Loose on purpose: providers differ (S3 allows dots, Azure forbids them); the provider has the
# last word, this only catches typos such as spaces, upper case or an empty name.
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,62}$")


@dataclass(frozen=True)
class StorageLocation:
    """Where objects live: a bucket (container) and a key prefix, or a local directory.

    ``prefix`` never starts or ends with ``/``; for ``file`` it is the absolute directory path
    and ``bucket`` is empty. ``account`` is only set for Azure URIs that name the account.
    """

    scheme: Scheme
    bucket: str
    prefix: str
    account: str | None = None

    @property
    def uri(self) -> str:
        """The canonical URI, e.g. ``s3://bucket/runs/a`` or ``file:///data/runs/a``."""
        if self.scheme == "file":
            return f"file://{self.prefix}"
        return f"{self.scheme}://{self.bucket}/{self.prefix}".rstrip("/")

    def child(self, relative_key: str) -> StorageLocation:
        """The location of ``relative_key`` (``a/b.txt``) under this prefix."""
        key = normalise_key(relative_key, uri=f"{self.uri}/{relative_key}")
        if not key:
            return self
        if self.scheme == "file":
            return replace(self, prefix=posixpath.join(self.prefix, key))
        return replace(self, prefix=f"{self.prefix}/{key}" if self.prefix else key)

    def parent_and_name(self) -> tuple[StorageLocation, str]:
        """Split into the enclosing prefix and the last path segment (an object's name)."""
        parent, _, name = self.prefix.rpartition("/")
        if not name:
            raise InvalidStorageURI(
                f"storage URI {self.uri!r} names a bucket or root, not an object: "
                "add the object's path, e.g. s3://bucket/logs/master-0.log"
            )
        if self.scheme == "file":
            parent = parent or "/"
        return replace(self, prefix=parent), name

    def __str__(self) -> str:
        return self.uri


def parse_uri(uri: str) -> StorageLocation:
    """Parse ``uri`` into a :class:`StorageLocation`, or raise :class:`InvalidStorageURI`.

    The error names the URI, what is wrong and the accepted forms.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise _invalid(uri, "it is empty")
    text = uri.strip()
    if "://" not in text:
        return _local_location(text, original=uri)
    parts = urlsplit(text)
    scheme = _SCHEME_ALIASES.get(parts.scheme.lower())
    if scheme is None:
        raise _invalid(uri, f"unknown scheme {parts.scheme!r}")
    if parts.query or parts.fragment:
        raise _invalid(uri, "query strings and fragments are not allowed")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise _invalid(uri, "file:// URIs must be local: use file:///absolute/path")
        # Percent-escapes decoded, as in every file URI (RFC 8089; Path.as_uri() writes them).
        return _local_location(unquote(parts.path), original=uri)
    bucket, account = parts.netloc, None
    if scheme == "az" and "@" in bucket:
        # abfs://container@account.dfs.core.windows.net/prefix
        bucket, _, host = bucket.partition("@")
        account = host.split(".", 1)[0] or None
    if not bucket:
        raise _invalid(uri, "the bucket (container) name is missing")
    if not _BUCKET_NAME.match(bucket):
        raise _invalid(
            uri,
            f"bucket name {bucket!r} is not valid (3-63 characters: lower-case letters, digits, "
            "'.', '-', '_', starting with a letter or digit)",
        )
    prefix = normalise_key(parts.path, uri=uri)
    return StorageLocation(scheme=scheme, bucket=bucket, prefix=prefix, account=account)


def _local_location(path: str, *, original: str) -> StorageLocation:
    if not path:
        raise _invalid(original, "the path is empty")
    absolute = os.path.abspath(os.path.expanduser(path))
    return StorageLocation(scheme="file", bucket="", prefix=absolute)


def normalise_key(path: str, *, uri: str) -> str:
    """``path`` as an object key: no empty, leading or trailing segments; rejects ``.``/``..``."""
    segments = [segment for segment in path.split("/") if segment]
    if any(segment in (".", "..") for segment in segments):
        raise _invalid(uri, "'.' and '..' path segments are not allowed in object keys")
    return "/".join(segments)


def _invalid(uri: object, reason: str) -> InvalidStorageURI:
    return InvalidStorageURI(f"invalid storage URI {uri!r}: {reason}. Accepted forms: {ACCEPTED_FORMS}")
