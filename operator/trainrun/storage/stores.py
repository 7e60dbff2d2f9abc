"""Open obstore stores for a :class:`StorageLocation` and explain their errors.

Each cloud's settings as :class:`StorageOptions` carries them: S3 keys and endpoint; a Google service
account's key (its JSON text or a file's path) or an emulator (``STORAGE_EMULATOR_HOST``, anonymous); an
Azure account with a key, a SAS token or a connection string (:meth:`StorageOptions.azure`).

Used by :mod:`trainrun.storage.transfer`, and by the log archive (:mod:`trainrun.storage.logstore`) through
:func:`shared_store`: one client per bucket and settings for every run's archive. obstore's own retries (a few quick ones per
request) sit under the file-level retries of the transfer code; errors are turned into one-line
messages that name the URI and the likely fix (credentials, bucket, endpoint, CA certificate).

S3 request bodies are signed (their SHA-256 is part of the signature) only over plain http.
Over https, TLS already protects them in transit, so they go as ``UNSIGNED-PAYLOAD`` (the AWS
SDKs skip payload signing over https too): that saves a second SHA-256 pass over every byte (the
transfer code computes one for the manifest, checked on every download), about a third of the
client's CPU on a large upload.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, cast

from obstore.exceptions import (
    BaseError,
    GenericError,
    JoinError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from obstore.store import AzureStore, GCSStore, LocalStore, S3Store

from trainrun.base.errors import StorageError
from trainrun.base.uri import StorageLocation
from trainrun.storage.options import StorageOptions

if TYPE_CHECKING:
    from obstore.store import (
        AzureConfig,
        ClientConfig,
        GCSConfig,
        ObjectStore,
        RetryConfig,
        S3Config,
    )

# A few fast retries per request; longer outages are handled by the caller's backoff, which
# re-reads the file and so also covers multipart uploads whose parts cannot be replayed.
_REQUEST_RETRIES: RetryConfig = {
    "max_retries": 3,
    "backoff": {
        "init_backoff": timedelta(milliseconds=100),
        "max_backoff": timedelta(seconds=2),
        "base": 2,
    },
    "retry_timeout": timedelta(seconds=30),
}
_HTTP_STATUS = re.compile(r"status code: (\d{3})|\(code: (\d{3})\)")  # a request's, or a bulk delete's
_S3_ERROR_CODE = re.compile(r"<Code>([^<]+)</Code>")
_METADATA_HOST = "169.254.169.254"
_S3_ERROR_MESSAGE = re.compile(r"<Message>([^<]+)</Message>")
_CONNECT_FAILURE = ("error sending request", "connection refused", "dns error", "timed out")
_TLS_FAILURE = re.compile(r"InvalidCertificate\(\s*(\w+)|invalid peer certificate: (\w+)")
_PEM_MARKER = "-----BEGIN"
_AZURE_NO_ACCOUNT = "Account must be specified"  # obstore's words for an Azure store with no account
_ENDPOINT_HINT = {
    "s3": "AWS_ENDPOINT_URL / --endpoint-url",
    "gs": "GOOGLE_BASE_URL / STORAGE_EMULATOR_HOST",
    "az": "AZURE_STORAGE_ENDPOINT / the connection string's BlobEndpoint",
}
_SERVICE = {"s3": "S3 service", "gs": "GCS service", "az": "Azure Blob service", "file": "local disk"}


class UnusableSettings(StorageError):
    """The settings cannot open the store (a CA bundle with no certificate, a connection string that does not
    read): ``store_errors`` says so as it says the store's own errors."""


# Buckets (with their settings) whose shared store a process keeps: past it, the least recently opened goes.
SHARED_STORES = 64


@dataclass(frozen=True)
class RootedStore:
    """A store, and where one location's keys begin in it: ``""``, or its prefix with a final ``/``."""

    store: ObjectStore
    root: str


_shared: OrderedDict[tuple[StorageLocation, StorageOptions], ObjectStore] = OrderedDict()
_shared_lock = threading.Lock()


def shared_store(location: StorageLocation, options: StorageOptions, *, create_local_dir: bool = False) -> RootedStore:
    """``location``'s store for a long-lived user (each run's log archive, written every few seconds while it
    trains): one store per bucket and settings, shared by every location in it. A store is a client of its own
    (its connection pool, its TLS configuration: 112 KB each over https, measured), so a thousand runs archived
    in one bucket keep one instead of a thousand. A local directory gets its own (there is nothing to share)."""
    if location.scheme == "file":
        return RootedStore(open_store(location, options, create_local_dir=create_local_dir), "")
    bucket = replace(location, prefix="")
    with _shared_lock:
        store = _shared.get((bucket, options))
        if store is None:
            store = _shared[(bucket, options)] = open_store(bucket, options)
            while len(_shared) > SHARED_STORES:
                _shared.popitem(last=False)
        else:
            _shared.move_to_end((bucket, options))
    return RootedStore(store, f"{location.prefix}/" if location.prefix else "")


def open_store(location: StorageLocation, options: StorageOptions, *, create_local_dir: bool = False) -> ObjectStore:
    """A store rooted at ``location`` (bucket + prefix, or a local directory).

    ``create_local_dir`` creates a ``file://`` location's directory (for uploads). Raises
    :class:`StorageError` when ``options.ca_bundle`` holds no usable certificate.
    """
    prefix = location.prefix or None
    if location.scheme == "file":
        return LocalStore(location.prefix, mkdir=create_local_dir)
    if location.scheme == "s3":
        # S3-compatible servers ignore the region but request signing needs one.
        endpoint = options.endpoint_url
        s3 = cast(
            "S3Config",
            {
                "region": options.region or "us-east-1",
                "unsigned_payload": not (endpoint or "").startswith("http://"),
                **_given(
                    endpoint=options.endpoint_url,
                    access_key_id=options.access_key_id,
                    secret_access_key=options.secret_access_key,
                    session_token=options.session_token,
                ),
            },
        )
        client = _client_config(options, endpoint)
        return S3Store(location.bucket, prefix=prefix, config=s3, client_options=client, retry_config=_REQUEST_RETRIES)
    if location.scheme == "gs":
        return GCSStore(
            location.bucket,
            prefix=prefix,
            config=_gcs_config(options),
            client_options=_client_config(options, google_endpoint(options)),
            retry_config=_REQUEST_RETRIES,
        )
    try:
        settings = options.azure(location.account)
    except ValueError as error:
        raise UnusableSettings(f"{location.uri}: {error}") from None
    azure = cast(
        "AzureConfig",
        _given(account_name=settings.account, account_key=settings.key, sas_key=settings.sas, endpoint=settings.endpoint),
    )
    return AzureStore(
        location.bucket,
        prefix=prefix,
        config=azure,
        client_options=_client_config(options, settings.endpoint),
        retry_config=_REQUEST_RETRIES,
    )


def _gcs_config(options: StorageOptions) -> GCSConfig:
    """A service account's JSON given as text (in any of the three variables: a Secret's key holds the text,
    a mounted file its path), the endpoint, and for an emulator reached without credentials object_store's
    emulator key (no OAuth, no signature)."""
    config: dict[str, str | bool] = {}
    sources = (
        ("service_account", options.google_service_account_key),
        ("service_account", options.google_service_account_path),
        ("application_credentials", options.google_application_credentials),
    )
    for path_key, value in sources:
        if not value:
            continue
        if _is_json(value):
            config.setdefault("service_account_key", value)
        elif path_key == "application_credentials" and _key_type(value) == "service_account":
            # A service account's key: signed here (a self-signed JWT, as for GOOGLE_SERVICE_ACCOUNT) rather than
            # traded for a token at Google's OAuth endpoint, which an emulator (or a closed network) lacks.
            config.setdefault("service_account", value)
        else:
            config.setdefault(path_key, value)
    if options.google_base_url:
        config["base_url"] = options.google_base_url.rstrip("/")
    elif options.storage_emulator_host:
        config["base_url"] = endpoint = google_endpoint(options) or ""
        if not options.google_credentials_given:
            # Anonymous, as Google's own clients talk to STORAGE_EMULATOR_HOST: object_store's emulator key.
            config["service_account_key"] = json.dumps(
                {"gcs_base_url": endpoint, "disable_oauth": True, "client_email": "", "private_key": "", "private_key_id": ""}
            )
    return cast("GCSConfig", config)


def google_endpoint(options: StorageOptions) -> str | None:
    """Where GCS requests go when not to Google: the options' endpoint, else a service account's
    ``gcs_base_url`` (how object_store's own tests point a key at fake-gcs-server)."""
    endpoint = options.google_endpoint()
    if endpoint:
        return endpoint
    for value in (options.google_service_account_key, options.google_service_account_path, options.google_application_credentials):
        if value:
            url = (_credentials_document(value) or {}).get("gcs_base_url")
            return str(url).rstrip("/") if url else None
    return None


def _key_type(value: str) -> str | None:
    """The ``type`` of the credentials in ``value`` (service_account, authorized_user...), if readable."""
    kind = (_credentials_document(value) or {}).get("type")
    return str(kind) if kind else None


def _credentials_document(value: str) -> dict[str, object] | None:
    """The JSON of a credentials variable: its text, or the file it names; None when unreadable (obstore reads
    it again and says what is wrong with it)."""
    try:
        document = json.loads(value if _is_json(value) else Path(value).expanduser().read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def _is_json(value: str) -> bool:
    """Whether a credentials variable holds the JSON itself rather than the path of a file with it."""
    return value.lstrip().startswith("{")


def _given(**settings: str | None) -> dict[str, str]:
    """The store settings that were given: the others are left to obstore's defaults and its environment."""
    return {key: value for key, value in settings.items() if value}


# obstore's default limits a whole request to 30 s, body included: a multi-gigabyte model downloaded in one
# GET failed with "request or response body error" (TimedOut) on a busy machine after 3 of its 3.2 GB.
# A transfer may take as long as it needs while bytes flow; a connection that stalls is given up.
_READ_STALL = timedelta(seconds=60)
_WHOLE_REQUEST = timedelta(hours=24)


def _client_config(options: StorageOptions, endpoint: str | None) -> ClientConfig:
    """HTTP client settings shared by the cloud stores: no time limit on a request while its bytes flow
    (a stall of a minute ends it), plain http allowed for an http endpoint, and the extra CA certificate
    to trust."""
    client: ClientConfig = {"read_timeout": _READ_STALL, "timeout": _WHOLE_REQUEST}
    if endpoint:
        client["allow_http"] = endpoint.startswith("http://")
    if options.ca_bundle:
        client["root_certificate"] = _read_ca_bundle(options.ca_bundle)
    return client


def _read_ca_bundle(value: str) -> str:
    """The PEM text of ``AWS_CA_BUNDLE`` (the value itself when it is PEM, else the file it names),
    checked to hold certificates OpenSSL can load: a bad one would only show later as an HTTP
    client "builder error"."""
    source = "its PEM text"
    text = value
    if _PEM_MARKER not in value:
        source = repr(value)
        try:
            text = Path(value).expanduser().read_text()
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            raise UnusableSettings(
                f"AWS_CA_BUNDLE: cannot read {value!r} ({reason}); set it to the path of the CA's PEM file "
                "or to the PEM text itself"
            ) from error
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=text)
    except (ssl.SSLError, ValueError) as error:
        raise UnusableSettings(
            f"AWS_CA_BUNDLE holds no usable CA certificate ({source}: {error}); give the CA's certificate "
            "in PEM form (-----BEGIN CERTIFICATE----- ...)"
        ) from error
    return text


def is_transient(error: BaseException) -> bool:
    """Whether retrying may help: connection problems and server errors, not 4xx answers."""
    if isinstance(error, JoinError):
        return True
    if not isinstance(error, GenericError) or _TLS_FAILURE.search(str(error)):
        return False  # a certificate that is not trusted now will not be trusted on retry
    if "LocalFileSystem" in str(error):
        return False  # a local target: a folder in the way or no permission stays so
    status = _http_status(str(error))
    return status is None or not status.startswith("4") or status in ("408", "429")


def describe_error(error: BaseException, *, location: StorageLocation, options: StorageOptions) -> str:
    """One line naming the URI, the cause and the fix; never includes credentials."""
    text = str(error)
    first_line = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    endpoint = _endpoint(location, options) or f"the {_SERVICE[location.scheme]}"
    code_match = _S3_ERROR_CODE.search(text)
    code = code_match.group(1) if code_match else None
    status = _http_status(text)
    if code in ("NoSuchBucket", "ContainerNotFound") or (
        location.scheme != "file" and "bucket" in text.lower() and status == "404"
    ):
        return (
            f"{location.uri}: bucket {location.bucket!r} does not exist at {endpoint}; create it first or fix the URI"
        )
    if _AZURE_NO_ACCOUNT in text:
        return (
            f"{location.uri}: no Azure storage account is named: set AZURE_STORAGE_ACCOUNT_NAME (or "
            f"AZURE_STORAGE_CONNECTION_STRING), or name it in the URI: {location.bucket}@ACCOUNT.blob.core.windows.net "
            f"in place of {location.bucket!r}"
        )
    if location.scheme == "file" and "canonicalize" in text:
        return f"{location.uri}: no such local directory"
    if _METADATA_HOST in text:
        # No credentials were configured, so the client asked the cloud's instance metadata
        # service for a role, and that failed: say so instead of reporting its 403.
        return (
            f"{location.uri}: no credentials found (the instance metadata service gave none); "
            f"set {_credential_hint(location)} or run where a workload identity provides them"
        )
    if isinstance(error, (PermissionDeniedError, UnauthenticatedError)) or status in ("401", "403"):
        return (
            f"{location.uri}: access denied by {endpoint} ({code or status or 'permission denied'}); "
            f"check the credentials ({_credential_hint(location)}) and their permissions on the bucket"
        )
    tls_match = _TLS_FAILURE.search(text)
    if tls_match:
        reason = tls_match.group(1) or tls_match.group(2)
        return (
            f"{location.uri}: the TLS certificate of {endpoint} is not trusted ({reason}); if the store "
            "uses a private CA, set AWS_CA_BUNDLE (or --ca-bundle) to the CA's PEM file or its PEM text"
        )
    if isinstance(error, BaseError) and any(marker in text.lower() for marker in _CONNECT_FAILURE):
        return (
            f"{location.uri}: cannot reach {endpoint} (connection failed after retries); "
            f"check the endpoint URL ({_ENDPOINT_HINT.get(location.scheme, 'the URI')}) and that the server is up"
        )
    if code:
        # The server's own words (e.g. InternalError: disk full), not the XML the first line cuts.
        message_match = _S3_ERROR_MESSAGE.search(text)
        said = f"{code}: {message_match.group(1).strip()}" if message_match else code
        return f"{location.uri}: {first_line.split('<?xml')[0].rstrip(' :')}; the server said {said}"
    return f"{location.uri}: {first_line}"


def _http_status(text: str) -> str | None:
    match = _HTTP_STATUS.search(text)
    return (match.group(1) or match.group(2)) if match else None


def _endpoint(location: StorageLocation, options: StorageOptions) -> str | None:
    """The endpoint a store's requests go to, when the options name one (for messages)."""
    if location.scheme == "s3":
        return options.endpoint_url
    if location.scheme == "gs":
        return google_endpoint(options)
    if location.scheme == "az":
        try:
            return options.azure(location.account).endpoint
        except ValueError:
            return None
    return None


def _credential_hint(location: StorageLocation) -> str:
    return {
        "s3": "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
        "gs": "GOOGLE_SERVICE_ACCOUNT_KEY / GOOGLE_SERVICE_ACCOUNT / GOOGLE_APPLICATION_CREDENTIALS",
        "az": "AZURE_STORAGE_ACCOUNT_KEY / AZURE_STORAGE_SAS_TOKEN / AZURE_STORAGE_CONNECTION_STRING",
        "file": "file permissions",
    }[location.scheme]
