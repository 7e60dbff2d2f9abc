"""Start and stop a real SeaweedFS (``weed mini``) S3 server for the storage tests and benchmark.

Used by tests/storage/conftest.py (one server per test session, plus private ones for tests
that kill the server) and by tests/bench/bench_upload.py. All listeners bind 127.0.0.1 on free
ports; buckets are never created implicitly, so a missing bucket is an error as on real S3.
With :class:`TlsFiles` (a throwaway CA and a certificate for 127.0.0.1, made by ``trustme``)
the S3 API also listens for https on a second port, signed by a CA no system trusts.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ports

ACCESS_KEY = "trainrun-test-access"
SECRET_KEY = "trainrun-test-secret-key"
BUCKET = "trainrun-test"
WEED = Path(sys.executable).parent / "weed"
# weed derives each gRPC port as its HTTP port + 10000 where no flag sets it (the mini worker
# dials the admin gRPC port that way), so every service gets a pair of free ports 10000 apart.
_SERVICES = ("master", "volume", "filer", "s3", "admin")
_GRPC_OFFSET = 10000
# Written and deleted once at start-up: the server is ready when it stores, not only when it answers.
_PROBE_KEY = ".trainrun-probe"


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the CA to trust, and the server's certificate and key (for 127.0.0.1)."""

    ca: Path
    cert: Path
    key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    import trustme  # test-only dependency

    directory.mkdir(parents=True, exist_ok=True)
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(ca=directory / "ca.pem", cert=directory / "server.pem", key=directory / "server.key")
    authority.cert_pem.write_to_path(str(files.ca))
    issued.cert_chain_pems[0].write_to_path(str(files.cert))
    issued.private_key_pem.write_to_path(str(files.key))
    return files


@dataclass
class SeaweedFS:
    """A running ``weed mini``; restartable on the same ports and data directory."""

    data_dir: Path
    ports: dict[str, int]
    log_path: Path
    tls: TlsFiles | None = None
    process: subprocess.Popen[bytes] | None = None
    held: list[socket.socket] = field(default_factory=list)  # its ports while it is down (ports.hold)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def https_endpoint(self) -> str:
        assert self.tls is not None, "started without TlsFiles"
        return f"https://127.0.0.1:{self.ports['s3_https']}"

    @property
    def env(self) -> dict[str, str]:
        """Env for a client (our CLI, boto3) talking to this server."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
        }

    def grpc_port(self, service: str) -> int:
        """The gRPC port of one of its services: its HTTP port plus the offset weed assumes."""
        return self.ports[service] + _GRPC_OFFSET

    def start(self, *, timeout_s: float = 90.0) -> None:
        for placeholder in self.held:
            placeholder.close()
        self.held = []
        arguments = [
            str(WEED),
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-bucket={BUCKET}",
            "-s3.autoCreateBucket=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-metricsPort={self.ports['metrics']}",
            # Volumes of 64 MB, as many as the free disk holds: left to itself, weed sizes them by the disk's
            # total (1 GB on a large disk) and, with a few GB free, makes none at all, so that every write fails.
            "-master.volumeSizeLimitMB=64",
        ]
        for service in _SERVICES:
            arguments += [
                f"-{service}.port={self.ports[service]}",
                f"-{service}.port.grpc={self.grpc_port(service)}",
            ]
        if self.tls is not None:
            arguments += [
                f"-s3.port.https={self.ports['s3_https']}",
                f"-s3.cert.file={self.tls.cert}",
                f"-s3.key.file={self.tls.key}",
            ]
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                arguments, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self._wait_until_ready(timeout_s)

    def stop(self, *, hard: bool = False) -> None:
        """Kill the server (SIGKILL when ``hard``, like a crash) and wait until it is gone. Its ports stay held
        (:func:`ports.hold`) until it starts again, or this object goes."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)
        self.process = None
        self.held = ports.hold([*self.ports.values(), *(self.grpc_port(service) for service in _SERVICES)])

    def _wait_until_ready(self, timeout_s: float) -> None:
        client = boto3_client_for(self.endpoint)  # also checks that the bucket exists
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.process.returncode}; see {self.log_path}")
            try:
                for port_name in ("s3", "s3_https") if self.tls else ("s3",):
                    with socket.create_connection(("127.0.0.1", self.ports[port_name]), timeout=1):
                        pass
                client.head_bucket(Bucket=BUCKET)
                client.put_object(Bucket=BUCKET, Key=_PROBE_KEY, Body=b"probe")
                client.delete_object(Bucket=BUCKET, Key=_PROBE_KEY)
                return
            except Exception as error:  # noqa: BLE001 - not up yet; keep polling until the deadline
                last_error = error
                time.sleep(0.3)
        self.stop(hard=True)
        raise RuntimeError(
            f"weed mini not ready after {timeout_s}s ({last_error}); see {self.log_path}. {_disk_note(self.data_dir)}"
        )


def _disk_note(data_dir: Path) -> str:
    """What the disk under DATA_DIR has free: weed makes no volume (and so stores nothing) where less than 1% of
    the disk is free."""
    usage = shutil.disk_usage(data_dir)
    gib = 1024**3
    return (
        f"The disk under it has {usage.free / gib:.1f} GiB free of {usage.total / gib:.0f} GiB; SeaweedFS stores "
        f"nothing with less than 1% ({usage.total / 100 / gib:.1f} GiB) free, plus 64 MB a volume."
    )


def boto3_client_for(endpoint: str, *, ca: Path | None = None) -> Any:
    """An independent client to check results with (``ca``: the CA to trust for https)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        verify=str(ca) if ca else None,
    )


def free_ports() -> dict[str, int]:
    """A free HTTP port for each service whose port + 10000 (its gRPC port) is free too, a metrics port and
    an https port for the S3 API."""
    *http, metrics, s3_https = ports.free_ports(len(_SERVICES) + 2, with_offset=_GRPC_OFFSET)
    return {**dict(zip(_SERVICES, http, strict=True)), "metrics": metrics, "s3_https": s3_https}


def start_seaweedfs(data_dir: Path, tls: TlsFiles | None = None) -> SeaweedFS:
    data_dir.mkdir(parents=True, exist_ok=True)
    server = SeaweedFS(data_dir=data_dir, ports=free_ports(), log_path=data_dir / "weed.log", tls=tls)
    server.start()
    return server
