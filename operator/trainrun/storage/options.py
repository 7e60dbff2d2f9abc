"""Credentials and endpoint settings for object storage, read from env-like mappings (pure).

In the cluster the uploader gets them from a Secret mounted as environment variables; the CLI
reads the process environment and lets ``--endpoint-url`` override. The repr masks secrets, so
an options object can be logged. :mod:`trainrun.storage.stores` turns them into store settings.
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
    "azure_account_name": ("AZURE_STORAGE_ACCOUNT_NAME",),
    "azure_account_key": ("AZURE_STORAGE_ACCOUNT_KEY",),
    "azure_sas_token": ("AZURE_STORAGE_SAS_TOKEN",),
    "azure_endpoint": ("AZURE_STORAGE_ENDPOINT",),
    "ca_bundle": ("AWS_CA_BUNDLE",),
}
_SECRET_FIELDS = frozenset(
    {
        "secret_access_key",
        "session_token",
        "google_service_account_key",
        "azure_account_key",
        "azure_sas_token",
    }
)


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
    azure_account_name: str | None = None
    azure_account_key: str | None = None
    azure_sas_token: str | None = None
    azure_endpoint: str | None = None
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

    def __repr__(self) -> str:
        shown = []
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None:
                shown.append(f"{field.name}={'***' if field.name in _SECRET_FIELDS else repr(value)}")
        return f"StorageOptions({', '.join(shown)})"

    __str__ = __repr__
