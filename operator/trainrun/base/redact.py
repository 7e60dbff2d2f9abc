"""Credentials out of text: ``http://user:pass@host`` -> ``http://***@host``, signed-URL secrets -> ``***``.

One pure function (standard library only) that every place printing a URL it did not write itself
calls: storage errors and their retry warnings (``trainrun.storage``), status messages built from pods,
Jobs and Events (``trainrun.status.observe``), ``trainrun describe`` and ``trainrun render``. A password
can reach such text through ``AWS_ENDPOINT_URL=http://user:pass@host`` (the object store's client quotes
the URL in its errors), a pre-signed URL (``?X-Amz-Signature=...``, an Azure SAS ``?sig=...``) or an Azure
connection string (``;AccountKey=...;SharedAccessSignature=...``).
"""

from __future__ import annotations

import logging
import re

MASK = "***"

# scheme://userinfo@ : the userinfo runs to the last "@" before the host's first "/" (a raw "@" in a
# password included), never across whitespace or quotes.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/\s'\"<>@]*(?:@[^/\s'\"<>@]*)*)@")
# Query parameters that carry a secret in pre-signed and SAS URLs, and common token names.
_SECRET_PARAMETERS = (
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-goog-signature",
    "x-goog-credential",
    "awsaccesskeyid",
    "token",
    "access_token",
    "password",
    "secret",
    "api_key",
    "apikey",
    "accountkey",  # Azure connection strings: AccountKey=...;SharedAccessSignature=...
    "sharedaccesssignature",
)
_QUERY_SECRET = re.compile(
    r"(?P<name>[?&;](?:" + "|".join(re.escape(name) for name in _SECRET_PARAMETERS) + r")=)[^&;\s'\"#<>]+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``; anything else unchanged."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda match: f"{match.group('scheme')}{MASK}@", text)
    return _QUERY_SECRET.sub(lambda match: f"{match.group('name')}{MASK}", text)


def redact_optional(text: str | None) -> str | None:
    """:func:`redact` for a message that may be absent."""
    return None if text is None else redact(text)


class RedactingFilter(logging.Filter):
    """A logging filter that masks credentials in every record's message, whoever logged it (kopf, a
    client library quoting a URL): installed on the operator's log handlers by :func:`redact_logs`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None:
            exception_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info, record.exc_text = None, exception_text
        return True


def redact_logs(logger: logging.Logger | None = None) -> None:
    """Put a :class:`RedactingFilter` on every handler of LOGGER (the root logger by default), once."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(item, RedactingFilter) for item in handler.filters):
            handler.addFilter(RedactingFilter())
