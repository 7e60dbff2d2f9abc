"""Fixtures for the storage tests: a real SeaweedFS S3 server, fake-gcs-server and Azurite for the session.

``store`` runs a test against each of the three (tests/storage/stores_under_test.py), each server started on
first use. The S3 server is started once (``weed mini`` on free 127.0.0.1 ports, bucket ``trainrun-test``;
http, and https with a certificate from a throwaway CA) and killed at the end of the session,
with a check that its process is gone. Tests get a fresh
prefix each, client options for our code and an independent boto3 client to check results.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from emulators import Azurite, FakeGcs, start_azurite, start_fake_gcs  # noqa: E402
from seaweedfs import ACCESS_KEY, BUCKET, SECRET_KEY, SeaweedFS, boto3_client_for, make_tls_files, start_seaweedfs  # noqa: E402
from stores_under_test import STORES, AzureUnderTest, GcsUnderTest, S3UnderTest, StoreUnderTest  # noqa: E402
from trainrun.storage import StorageOptions  # noqa: E402


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    data_dir = tmp_path_factory.mktemp("seaweedfs")
    server = start_seaweedfs(data_dir, tls=make_tls_files(data_dir / "tls"))
    assert server.process is not None
    pid = server.process.pid
    yield server
    server.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the server process no longer exists (it was reaped by stop())


def options_for(server: SeaweedFS) -> StorageOptions:
    return StorageOptions(endpoint_url=server.endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY)


@pytest.fixture
def s3_options(seaweedfs: SeaweedFS) -> StorageOptions:
    return options_for(seaweedfs)


@pytest.fixture
def s3_uri(request: pytest.FixtureRequest, seaweedfs: SeaweedFS) -> str:
    """A prefix no other test uses, e.g. s3://trainrun-test/test_round_trip-1a2b3c4d/run."""
    return f"s3://{BUCKET}/{request.node.name[:40]}-{uuid.uuid4().hex[:8]}/run"


@pytest.fixture
def boto3_client(seaweedfs: SeaweedFS) -> Any:
    return boto3_client_for(seaweedfs.endpoint)


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcs]:
    """fake-gcs-server over https (a certificate of a throwaway CA, as GCS is https-only), for the session."""
    data_dir = tmp_path_factory.mktemp("fake-gcs")
    server = start_fake_gcs(data_dir, tls=make_tls_files(data_dir / "tls"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Azurite over http (how users run it), for the session."""
    server = start_azurite(tmp_path_factory.mktemp("azurite"))
    yield server
    server.stop()


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> StoreUnderTest:
    """Each store in turn (its server started on first use): S3, GCS, Azure Blob."""
    if request.param == "s3":
        return S3UnderTest(request.getfixturevalue("seaweedfs"))
    if request.param == "gcs":
        return GcsUnderTest(request.getfixturevalue("fake_gcs"))
    return AzureUnderTest(request.getfixturevalue("azurite"))


@pytest.fixture(params=STORES)
def private_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreUnderTest]:
    """Each store on a server of the test's own, stopped and its data deleted when the test ends: for the
    gigabyte tests, whose objects the session's servers would keep on disk to the end (and pytest after it)."""
    data_dir = tmp_path / f"{request.param}-server"
    server: SeaweedFS | FakeGcs | Azurite
    under: StoreUnderTest
    if request.param == "s3":
        server = start_seaweedfs(data_dir)
        under = S3UnderTest(server)
    elif request.param == "gcs":
        server = start_fake_gcs(data_dir, tls=make_tls_files(data_dir / "tls"))
        under = GcsUnderTest(server)
    else:
        server = start_azurite(data_dir)
        under = AzureUnderTest(server)
    try:
        yield under
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def store_uri(request: pytest.FixtureRequest, store: StoreUnderTest) -> str:
    return store.uri(request.node.name.split("[")[0])
