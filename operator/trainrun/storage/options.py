"""Credentials and endpoint settings for object storage, read from env-like mappings (pure).

In the cluster the uploader gets them from a Secret mounted as environment variables; the CLI
reads the process environment and lets ``--endpoint-url`` override. The repr masks secrets, so
an options object can be logged. :mod:`trainrun.storage.stores` turns them into store settings.

Each cloud's own forms, as it hands them to a pod: S3 keys (``AWS_*``); a Google service-account JSON
(its text, or the path of its file) or none (workload identity; ``STORAGE_EMULATOR_HOST`` for an
emulator, anonymous as Google's client libraries are); an Azure account key, a SAS token or a
connection string (:func:`parse_connection_string`), whose parts the explicit variables override.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

# Which env variable feeds which setting; the first variable present wins.
ENV_KEYS: dict[str, tuple[str, ...]] = {
    "endpoint_url": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    "region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "access_key_id": ("AWS_ACCESS_KEY_ID",),
    "secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
    "session_token": ("AWS_SESSION_TOKEN",),
    "google_service_account_path": ("GOOGLE_SERVICE_ACCOUNT", "GOOGLE_SERVICE_ACCOUNT_PATH"),
    "google_service_account_key": ("GOOGLE_SERVICE_ACCOUNT_KEY",),
    "google_application_credentials": ("GOOGLE_APPLICATION_CREDENTIALS",),
    "google_base_url": ("GOOGLE_BASE_URL",),
    "storage_emulator_host": ("STORAGE_EMULATOR_HOST",),
    "azure_account_name": ("AZURE_STORAGE_ACCOUNT_NAME",),
    "azure_account_key": ("AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ACCESS_KEY"),
    "azure_sas_token": ("AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_SAS_KEY"),
    "azure_endpoint": ("AZURE_STORAGE_ENDPOINT",),
    "azure_connection_string": ("AZURE_STORAGE_CONNECTION_STRING",),
    "ca_bundle": ("AWS_CA_BUNDLE",),
}
_SECRET_FIELDS = frozenset(
    {
        "secret_access_key",
        "session_token",
        "google_service_account_key",
        "azure_account_key",
        "azure_sas_token",
        "azure_connection_string",
    }
)
# The well-known account of the Azure Storage emulator (Azurite), as `UseDevelopmentStorage=true` means it.
DEVELOPMENT_ACCOUNT = "devstoreaccount1"
DEVELOPMENT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DEVELOPMENT_ENDPOINT = "http://127.0.0.1:10000/devstoreaccount1"


@dataclass(frozen=True, repr=False)
class StorageOptions:
    """Settings for every provider; only the ones matching a URI's scheme are used.

    ``endpoint_url`` selects an S3-compatible server (MinIO, SeaweedFS); ``http://`` endpoints
    are allowed. ``ca_bundle`` is a CA certificate to trust besides the system roots (a
    store behind a private CA), as a path to a PEM file or as the PEM text itself, so it
    can come from a Secret key. Unset fields fall back to the provider's own discovery
    (instance roles, workload identity, the process environment).
    """

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    google_service_account_path: str | None = None
    google_service_account_key: str | None = None
    google_application_credentials: str | None = None
    google_base_url: str | None = None
    storage_emulator_host: str | None = None
    azure_account_name: str | None = None
    azure_account_key: str | None = None
    azure_sas_token: str | None = None
    azure_endpoint: str | None = None
    azure_connection_string: str | None = None
    ca_bundle: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StorageOptions:
        """Read the variables in :data:`ENV_KEYS` from ``env`` (e.g. ``os.environ``)."""
        values: dict[str, str] = {}
        for field_name, env_names in ENV_KEYS.items():
            for env_name in env_names:
                value = env.get(env_name, "").strip()
                if value:
                    values[field_name] = value
                    break
        return cls(**values)

    def with_flags(self, *, endpoint_url: str | None = None, ca_bundle: str | None = None) -> StorageOptions:
        """A copy with the settings given on the command line replaced (a flag beats the env)."""
        flags = {"endpoint_url": endpoint_url, "ca_bundle": ca_bundle}
        return replace(self, **{name: value for name, value in flags.items() if value})

    def azure(self, account_in_uri: str | None = None) -> AzureSettings:
        """The Azure settings in effect: the URI's account, then the explicit variables, then the connection
        string's parts. Raises ``ValueError`` naming the part of a connection string that cannot be read."""
        parts = parse_connection_string(self.azure_connection_string) if self.azure_connection_string else {}
        development = parts.get("usedevelopmentstorage", "").lower() == "true"
        account = account_in_uri or self.azure_account_name or parts.get("accountname")
        endpoint = self.azure_endpoint or parts.get("blobendpoint")
        key = self.azure_account_key or parts.get("accountkey")
        if development:
            account, endpoint = account or DEVELOPMENT_ACCOUNT, endpoint or DEVELOPMENT_ENDPOINT
            key = key or DEVELOPMENT_KEY
        if endpoint is None and account and "endpointsuffix" in parts:
            protocol = parts.get("defaultendpointsprotocol", "https")
            endpoint = f"{protocol}://{account}.blob.{parts['endpointsuffix']}"
        sas = self.azure_sas_token or parts.get("sharedaccesssignature")
        return AzureSettings(
            account=account, key=key, sas=sas.lstrip("?") if sas else None, endpoint=endpoint.rstrip("/") if endpoint else None
        )

    def google_endpoint(self) -> str | None:
        """The GCS endpoint set here (``GOOGLE_BASE_URL``, else the emulator's ``STORAGE_EMULATOR_HOST``)."""
        if self.google_base_url:
            return self.google_base_url.rstrip("/")
        if self.storage_emulator_host:
            host = self.storage_emulator_host.rstrip("/")
            return host if "://" in host else f"http://{host}"
        return None

    @property
    def google_credentials_given(self) -> bool:
        return bool(
            self.google_service_account_path or self.google_service_account_key or self.google_application_credentials
        )

    def __repr__(self) -> str:
        shown = []
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None:
                shown.append(f"{field.name}={'***' if field.name in _SECRET_FIELDS else repr(value)}")
        return f"StorageOptions({', '.join(shown)})"

    __str__ = __repr__


@dataclass(frozen=True, repr=False)
class AzureSettings:
    """What an Azure store is opened with (:meth:`StorageOptions.azure`); the repr masks the secrets."""

    account: str | None
    key: str | None
    sas: str | None
    endpoint: str | None

    def __repr__(self) -> str:
        return f"AzureSettings(account={self.account!r}, endpoint={self.endpoint!r})"


def parse_connection_string(text: str) -> dict[str, str]:
    """An Azure Storage connection string (``Key=value;...``, as the portal and ``az storage account
    show-connection-string`` give it) as lower-case keys -> values. Raises ``ValueError`` naming a part
    that is not ``Key=value`` (never its value: it may be a secret)."""
    parts: dict[str, str] = {}
    for index, item in enumerate(part for part in text.strip().split(";") if part.strip()):
        key, separator, value = item.partition("=")
        if not separator or not key.strip():
            raise ValueError(f"AZURE_STORAGE_CONNECTION_STRING: part {index + 1} is not Key=value")
        parts[key.strip().lower()] = value.strip()
    return parts
