"""One face for the three stores the storage tests run against: S3 (SeaweedFS), GCS (fake-gcs-server), Azure
Blob (Azurite). A test parametrized over ``store`` (tests/storage/conftest.py) gets a :class:`StoreUnderTest`:
a fresh URI, the options and the environment our code is given (each cloud's own credentials), wrong ones,
and an independent client to check what is in the bucket (boto3, fake-gcs-server's JSON API, Microsoft's
azure-storage-blob), never our own download.

Also used by tests/integration (the archive and artifacts path on each store) and tests/bench/bench_upload.py.
"""

from __future__ import annotations

import json
import urllib.parse
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from emulators import AZURE_ACCOUNT, AZURE_KEY, Azurite, FakeGcs, ServiceAccount
from seaweedfs import ACCESS_KEY, BUCKET, SECRET_KEY, SeaweedFS, boto3_client_for
from trainrun.storage import StorageOptions, parse_uri

STORES = ("s3", "gcs", "azure")
SCHEMES = {"s3": "s3", "gcs": "gs", "azure": "az"}


@dataclass(frozen=True)
class Listed:
    size: int
    modified: datetime


class StoreUnderTest:
    """A store and how to reach it; subclasses check the bucket with the store's own client."""

    name: str

    @property
    def scheme(self) -> str:
        return SCHEMES[self.name]

    def uri(self, folder: str) -> str:
        """A URI under the test bucket no other test uses: ``<scheme>://trainrun-test/<folder>-<random>/run``."""
        return f"{self.scheme}://{BUCKET}/{folder[:40]}-{uuid.uuid4().hex[:8]}/run"

    def missing_bucket_uri(self) -> str:
        return f"{self.scheme}://no-such-bucket/run"

    @property
    def options(self) -> StorageOptions:
        return StorageOptions.from_env(self.env)

    @property
    def env(self) -> dict[str, str]:
        """The variables a pod (or a shell) is given for this store."""
        raise NotImplementedError

    @property
    def wrong_env(self) -> dict[str, str]:
        """The same, with keys the store does not know (the secret in them is ``s3cr3t-xyz`` somewhere)."""
        raise NotImplementedError

    @property
    def secrets(self) -> list[str]:
        """Secret values in ``env`` and ``wrong_env`` that must never be printed."""
        raise NotImplementedError

    def get(self, uri: str, relative: str) -> bytes:
        raise NotImplementedError

    def put(self, uri: str, relative: str, data: bytes) -> None:
        raise NotImplementedError

    def delete(self, uri: str, relative: str) -> None:
        raise NotImplementedError

    def listing(self, uri: str) -> dict[str, Listed]:
        """Every object under ``uri``, by key relative to it."""
        raise NotImplementedError

    @staticmethod
    def _key(uri: str, relative: str = "") -> str:
        location = parse_uri(uri).child(relative) if relative else parse_uri(uri)
        return location.prefix

    def __repr__(self) -> str:
        return self.name


class S3UnderTest(StoreUnderTest):
    name = "s3"

    def __init__(self, server: SeaweedFS) -> None:
        self.server = server
        self.client = boto3_client_for(server.endpoint)

    @property
    def env(self) -> dict[str, str]:
        return dict(self.server.env)

    @property
    def wrong_env(self) -> dict[str, str]:
        return {**self.server.env, "AWS_ACCESS_KEY_ID": "nobody", "AWS_SECRET_ACCESS_KEY": "s3cr3t-xyz"}

    @property
    def secrets(self) -> list[str]:
        return [SECRET_KEY, "s3cr3t-xyz", ACCESS_KEY]

    def get(self, uri: str, relative: str) -> bytes:
        data: bytes = self.client.get_object(Bucket=BUCKET, Key=self._key(uri, relative))["Body"].read()
        return data

    def put(self, uri: str, relative: str, data: bytes) -> None:
        self.client.put_object(Bucket=BUCKET, Key=self._key(uri, relative), Body=data)

    def delete(self, uri: str, relative: str) -> None:
        self.client.delete_object(Bucket=BUCKET, Key=self._key(uri, relative))

    def listing(self, uri: str) -> dict[str, Listed]:
        prefix = self._key(uri) + "/"
        found: dict[str, Listed] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"].removeprefix(prefix)] = Listed(item["Size"], item["LastModified"])
        return found


class GcsUnderTest(StoreUnderTest):
    """GCS as a pod on GKE gets it: a service-account key's JSON (the text, from a Secret's key)."""

    name = "gcs"

    def __init__(self, server: FakeGcs) -> None:
        self.server = server

    @property
    def env(self) -> dict[str, str]:
        return dict(self.server.env)

    @property
    def wrong_env(self) -> dict[str, str]:
        """A well-formed key the server does not know (GCS answers 401 to what it signs)."""
        stranger = ServiceAccount.make(self.server.endpoint)
        document = json.loads(stranger.json_text)
        document["private_key_id"] = "s3cr3t-xyz"
        return {**self.server.env, "GOOGLE_SERVICE_ACCOUNT_KEY": json.dumps(document)}

    @property
    def secrets(self) -> list[str]:
        assert self.server.account is not None
        key = json.loads(self.server.account.json_text)["private_key"]
        return [key.splitlines()[1], "s3cr3t-xyz"]

    def _object_path(self, uri: str, relative: str) -> str:
        return f"/storage/v1/b/{BUCKET}/o/{urllib.parse.quote(self._key(uri, relative), safe='')}"

    def get(self, uri: str, relative: str) -> bytes:
        data: bytes = self.server.json_api("GET", self._object_path(uri, relative) + "?alt=media", raw=True)
        return data

    def put(self, uri: str, relative: str, data: bytes) -> None:
        name = urllib.parse.quote(self._key(uri, relative), safe="")
        self.server.json_api("POST", f"/upload/storage/v1/b/{BUCKET}/o?uploadType=media&name={name}", data)

    def delete(self, uri: str, relative: str) -> None:
        self.server.json_api("DELETE", self._object_path(uri, relative), raw=True)

    def listing(self, uri: str) -> dict[str, Listed]:
        prefix = self._key(uri) + "/"
        found: dict[str, Listed] = {}
        token = ""
        while True:
            query = urllib.parse.urlencode({"prefix": prefix, **({"pageToken": token} if token else {})})
            page = self.server.json_api("GET", f"/storage/v1/b/{BUCKET}/o?{query}")
            for item in page.get("items", []):
                updated = datetime.fromisoformat(item["updated"].replace("Z", "+00:00"))
                found[item["name"].removeprefix(prefix)] = Listed(int(item["size"]), updated)
            token = page.get("nextPageToken", "")
            if not token:
                return found


class AzureUnderTest(StoreUnderTest):
    """Azure Blob as a pod on AKS gets it from a Secret: the account key (``form``: also a SAS token or a
    connection string)."""

    name = "azure"

    def __init__(self, server: Azurite, form: str = "key") -> None:
        self.server = server
        self.form = form
        self.container = server.client().get_container_client(BUCKET)

    def with_form(self, form: str) -> AzureUnderTest:
        return AzureUnderTest(self.server, form)

    @property
    def env(self) -> dict[str, str]:
        ca = {"AWS_CA_BUNDLE": str(self.server.tls.ca)} if self.server.tls else {}
        if self.form == "sas":
            return {
                "AZURE_STORAGE_ACCOUNT_NAME": AZURE_ACCOUNT,
                "AZURE_STORAGE_SAS_TOKEN": self.server.sas_token(),
                "AZURE_STORAGE_ENDPOINT": self.server.endpoint,
                **ca,
            }
        if self.form == "connection-string":
            return {"AZURE_STORAGE_CONNECTION_STRING": self.server.connection_string, **ca}
        return dict(self.server.env)

    @property
    def wrong_env(self) -> dict[str, str]:
        return {**self.env, "AZURE_STORAGE_ACCOUNT_KEY": "czNjcjN0LXh5eg=="}  # base64 of s3cr3t-xyz

    @property
    def secrets(self) -> list[str]:
        return [AZURE_KEY, "czNjcjN0LXh5eg==", self.server.sas_token().split("sig=")[-1].split("&")[0]]

    def get(self, uri: str, relative: str) -> bytes:
        data: bytes = self.container.download_blob(self._key(uri, relative)).readall()
        return data

    def put(self, uri: str, relative: str, data: bytes) -> None:
        self.container.upload_blob(self._key(uri, relative), data, overwrite=True)

    def delete(self, uri: str, relative: str) -> None:
        self.container.delete_blob(self._key(uri, relative))

    def listing(self, uri: str) -> dict[str, Listed]:
        prefix = self._key(uri) + "/"
        return {
            blob.name.removeprefix(prefix): Listed(int(blob.size), blob.last_modified)
            for blob in self.container.list_blobs(name_starts_with=prefix)
        }


def with_options(store: StoreUnderTest, **changes: Any) -> StorageOptions:
    """The store's options with some fields changed."""
    return replace(store.options, **changes)
