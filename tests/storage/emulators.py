"""Start and stop the GCS and Azure Blob emulators for the storage tests, the integration tests and the bench.

fake-gcs-server (with the XML API writes object_store needs: tests/storage/fakegcs/main.go) and Azurite are
installed by tests/storage/emulators.sh (cached; run here when one is missing). Like tests/storage/seaweedfs.py:
every listener binds 127.0.0.1 on a free port, readiness is polled (never a fixed sleep), a server is stopped
by its pid and can be started again on the same port and data (a test kills one mid-upload). Buckets are never
created implicitly: the test bucket is created at start, a missing bucket is an error as in the clouds.

- :class:`FakeGcs`: https with a certificate of the session's throwaway CA (GCS is https-only; the clients check
  the certificate), or http; a service account whose key the server knows (``-verify-key``: a token signed
  by another key is refused with 401, as GCS refuses it), so "wrong keys" can be tested.
- :class:`Azurite`: http (its default, and how users run it) or https; an account of our own with its key.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ports import free_port
from seaweedfs import TlsFiles

EMULATORS_SH = Path(__file__).resolve().parent / "emulators.sh"
BUCKET = "trainrun-test"
GCS_PROJECT = "trainrun-test"
GCS_CLIENT_EMAIL = "uploader@trainrun-test.iam.gserviceaccount.com"
AZURE_ACCOUNT = "trainrunacct"
AZURE_KEY = base64.b64encode(b"trainrun-test-azure-account-key-0123456789").decode()


def emulator_binaries() -> tuple[Path, Path]:
    """(fake-gcs-server, azurite-blob): installed by emulators.sh (cached; quick when they are)."""
    done = subprocess.run(["bash", str(EMULATORS_SH)], capture_output=True, text=True, timeout=1200, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"tests/storage/emulators.sh failed:\n{done.stderr[-3000:]}")
    gcs, azurite = done.stdout.strip().splitlines()[-2:]
    return Path(gcs), Path(azurite)


@dataclass(frozen=True)
class ServiceAccount:
    """A GCS service account key made for the tests: its JSON (as Google gives it, plus ``gcs_base_url``, how
    object_store points a key at another endpoint) and its public key, for the server to check tokens."""

    json_text: str
    public_pem: bytes

    @classmethod
    def make(cls, endpoint: str) -> ServiceAccount:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        document = {
            "type": "service_account",
            "project_id": GCS_PROJECT,
            "private_key_id": os.urandom(8).hex(),
            "private_key": private,
            "client_email": GCS_CLIENT_EMAIL,
            "client_id": "100000000000000000001",
            "token_uri": "https://oauth2.googleapis.com/token",
            "gcs_base_url": endpoint,
        }
        return cls(json.dumps(document), public)


@dataclass
class FakeGcs:
    """A running fake-gcs-server (our build); restartable on the same port and data."""

    binary: Path
    data_dir: Path
    port: int
    tls: TlsFiles | None
    account: ServiceAccount | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self, *, timeout_s: float = 60.0) -> None:
        if self.account is None:
            self.account = ServiceAccount.make(self.endpoint)
        (self.data_dir / "verify-key.pem").write_bytes(self.account.public_pem)
        arguments = [
            str(self.binary),
            "-host=127.0.0.1",
            f"-port={self.port}",
            f"-scheme={'https' if self.tls else 'http'}",
            f"-filesystem-root={self.data_dir / 'objects'}",
            f"-verify-key={self.data_dir / 'verify-key.pem'}",
        ]
        if self.tls is not None:
            arguments += [f"-cert-location={self.tls.cert}", f"-private-key-location={self.tls.key}"]
        with (self.data_dir / "fake-gcs-server.log").open("ab") as log:
            self.process = subprocess.Popen(arguments, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.json_api("GET", "/_internal/healthcheck", raw=True)
                break
            except (OSError, urllib.error.URLError) as error:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"fake-gcs-server not ready ({error}); see {self.data_dir}") from error
                time.sleep(0.1)
        if self.json_api("GET", f"/storage/v1/b/{BUCKET}", missing_ok=True) is None:
            self.json_api("POST", f"/storage/v1/b?project={GCS_PROJECT}", {"name": BUCKET})

    def stop(self, *, hard: bool = False) -> None:
        stop_process(self.process, hard=hard)
        self.process = None

    def json_api(self, method: str, path: str, body: Any = None, *, raw: bool = False, missing_ok: bool = False) -> Any:
        """A request to fake-gcs-server's JSON API (no credentials: the emulator's own way), for set-up and checks."""
        data = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.endpoint + path, data=data, method=method)
        if body is not None and not isinstance(body, bytes):
            request.add_header("Content-Type", "application/json")
        context = ssl.create_default_context(cafile=str(self.tls.ca)) if self.tls else None
        try:
            with urllib.request.urlopen(request, timeout=30, context=context) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            if missing_ok and error.code == 404:
                return None
            raise
        if raw or not payload:
            return payload
        return json.loads(payload)

    @property
    def env(self) -> dict[str, str]:
        """A pod's variables for this store: the service account's JSON, as a Secret's key holds it."""
        assert self.account is not None
        return {"GOOGLE_SERVICE_ACCOUNT_KEY": self.account.json_text, **self.ca_env}

    @property
    def ca_env(self) -> dict[str, str]:
        return {"AWS_CA_BUNDLE": str(self.tls.ca)} if self.tls else {}


@dataclass
class Azurite:
    """A running Azurite (Blob service only); restartable on the same port and data."""

    binary: Path
    data_dir: Path
    port: int
    tls: TlsFiles | None = None
    process: subprocess.Popen[bytes] | None = None
    containers: list[str] = field(default_factory=lambda: [BUCKET])
    _sas: dict[bool, str] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/{AZURE_ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol={'https' if self.tls else 'http'};AccountName={AZURE_ACCOUNT};"
            f"AccountKey={AZURE_KEY};BlobEndpoint={self.endpoint};"
        )

    def start(self, *, timeout_s: float = 60.0) -> None:
        arguments = [
            str(self.binary),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(self.port),
            "--location",
            str(self.data_dir),
            "--disableTelemetry",
            "--skipApiVersionCheck",  # azure-storage-blob (the checking client) speaks a newer API version
            "--silent",
        ]
        if self.tls is not None:
            arguments += ["--cert", str(self.tls.cert), "--key", str(self.tls.key)]
        env = {**os.environ, "AZURITE_ACCOUNTS": f"{AZURE_ACCOUNT}:{AZURE_KEY}"}
        with (self.data_dir / "azurite.log").open("ab") as log:
            self.process = subprocess.Popen(
                arguments, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=self.data_dir
            )
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                for name in self.containers:
                    container = self.client().get_container_client(name)
                    if not container.exists():
                        container.create_container()
                return
            except Exception as error:  # noqa: BLE001 - not up yet; poll until the deadline
                last = error
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Azurite not ready ({last}); see {self.data_dir / 'azurite.log'}")

    def stop(self, *, hard: bool = False) -> None:
        stop_process(self.process, hard=hard)
        self.process = None

    def client(self) -> Any:
        """azure-storage-blob's client (Microsoft's SDK), to set up and check independently of our code."""
        from azure.storage.blob import BlobServiceClient

        verify: str | bool = str(self.tls.ca) if self.tls else True
        return BlobServiceClient.from_connection_string(self.connection_string, connection_verify=verify)

    @property
    def env(self) -> dict[str, str]:
        """A pod's variables for this store: the account key, as the portal gives it."""
        return {
            "AZURE_STORAGE_ACCOUNT_NAME": AZURE_ACCOUNT,
            "AZURE_STORAGE_ACCOUNT_KEY": AZURE_KEY,
            "AZURE_STORAGE_ENDPOINT": self.endpoint,
            **({"AWS_CA_BUNDLE": str(self.tls.ca)} if self.tls else {}),
        }

    def sas_token(self, *, write: bool = True) -> str:
        """A container SAS (read, list and, unless ``write`` is False, write/create/delete) valid for a day
        (one per server, so a test can look for it in what was printed)."""
        if write in self._sas:
            return self._sas[write]
        from datetime import UTC, datetime, timedelta

        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        permission = ContainerSasPermissions(read=True, list=True, write=write, create=write, delete=write, add=write)
        self._sas[write] = str(
            generate_container_sas(
                AZURE_ACCOUNT, BUCKET, account_key=AZURE_KEY, permission=permission, expiry=datetime.now(UTC) + timedelta(days=1)
            )
        )
        return self._sas[write]


def stop_process(process: subprocess.Popen[bytes] | None, *, hard: bool = False) -> None:
    """Stop a server we started (SIGKILL when ``hard``, like a crash) and wait until it is gone."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=20)


def start_fake_gcs(data_dir: Path, tls: TlsFiles | None = None, *, binary: Path | None = None) -> FakeGcs:
    data_dir.mkdir(parents=True, exist_ok=True)
    server = FakeGcs(binary or emulator_binaries()[0], data_dir, free_port(), tls)
    server.start()
    return server


def start_azurite(data_dir: Path, tls: TlsFiles | None = None, *, binary: Path | None = None) -> Azurite:
    data_dir.mkdir(parents=True, exist_ok=True)
    server = Azurite(binary or emulator_binaries()[1], data_dir, free_port(), tls)
    server.start()
    return server
