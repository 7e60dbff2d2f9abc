"""trainrun.storage against each store: SeaweedFS (S3), fake-gcs-server (GCS), Azurite (Azure Blob); file://.

The tests that take ``store`` run on all three (tests/storage/stores_under_test.py); results are checked
with each store's own client (boto3, fake-gcs-server's JSON API, azure-storage-blob), not only with our own
download. The server-killing tests run on private SeaweedFS servers (the retry code is the same for every store).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from seaweedfs import BUCKET, SeaweedFS, start_seaweedfs
from stores_under_test import StoreUnderTest
from trainrun.storage import (
    ChecksumMismatchError,
    DownloadError,
    RetryPolicy,
    StorageOptions,
    TransferProgress,
    UploadError,
    download,
    parse_uri,
    read_manifest,
    upload_directory,
    upload_file,
)

pytestmark = pytest.mark.s3  # every test here talks to the session's object-store servers

SPARSE_SIZE = 3 * 1024**3  # 3 GiB: ~25 s up and ~15 s down on the 2-core CI machine
# The emulators write every byte to disk twice (parts, then the object) at a fraction of SeaweedFS's pace: 256 MiB
# is still 32 parts of the multipart (block) upload and ranged downloads, the code paths a large file takes.
EMULATOR_SPARSE_SIZE = 256 * 1024**2


def make_tree(root: Path) -> dict[str, bytes]:
    """A folder like a run's output: nested dirs, an empty file, a multipart-sized file."""
    contents = {
        "model.pt": os.urandom(300_000),
        "run.json": b'{"epochs": 2}\n',
        "empty.txt": b"",
        "checkpoints/epoch-0001.pt": os.urandom(20 * 1024 * 1024 + 17),  # multipart, odd size
        "checkpoints/deep/er/still/empty": b"",
        "metrics.jsonl": b"".join(b'{"step": %d}\n' % step for step in range(500)),
    }
    for key, data in contents.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return contents


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bucket_and_key(uri: str, relative: str) -> tuple[str, str]:
    location = parse_uri(uri).child(relative)
    return location.bucket, location.prefix


def get_object(client: Any, uri: str, relative: str) -> bytes:
    bucket, key = bucket_and_key(uri, relative)
    data: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return data


def has_object(client: Any, uri: str, relative: str) -> bool:
    bucket, key = bucket_and_key(uri, relative)
    return "Contents" in client.list_objects_v2(Bucket=bucket, Prefix=key)


def test_round_trip_with_nested_empty_files_and_manifest_checked_by_the_stores_client(
    tmp_path: Path, store: StoreUnderTest, store_uri: str
) -> None:
    contents = make_tree(tmp_path / "out")
    (tmp_path / "out" / "broken-link").symlink_to(tmp_path / "missing")
    (tmp_path / "linked.bin").write_bytes(b"through a link")
    (tmp_path / "out" / "link-to-file").symlink_to(tmp_path / "linked.bin")
    seen: list[TransferProgress] = []

    result = upload_directory(tmp_path / "out", store_uri, options=store.options, progress=seen.append)

    expected = {**contents, "link-to-file": b"through a link"}
    assert result.skipped == ("broken-link",)
    assert {record.path: record.size for record in result.manifest.files} == {
        key: len(data) for key, data in expected.items()
    }
    assert seen[-1].files_done == seen[-1].files_total == len(expected)
    assert seen[-1].bytes_done == seen[-1].bytes_total == sum(map(len, expected.values()))
    # The manifest in the bucket lists every file with the sha256 of what the store's own client reads back.
    manifest = json.loads(store.get(store_uri, "manifest.json"))
    assert manifest["file_count"] == len(expected)
    assert manifest["total_bytes"] == sum(map(len, expected.values()))
    for entry in manifest["files"]:
        stored = store.get(store_uri, entry["path"])
        assert entry["sha256"] == sha256_hex(stored) == sha256_hex(expected[entry["path"]])
        assert entry["size"] == len(stored)
    # Written last: no object is newer than the manifest.
    listing = store.listing(store_uri)
    assert set(listing) == {*expected, "manifest.json"}
    assert listing["manifest.json"].modified == max(item.modified for item in listing.values())

    downloaded = download(store_uri, tmp_path / "back", options=store.options)

    assert downloaded.verified and downloaded.unverified_paths == ()
    for key, data in expected.items():
        assert (tmp_path / "back" / key).read_bytes() == data
    assert not (tmp_path / "back" / "manifest.json").exists()
    assert read_manifest(store_uri, options=store.options) == result.manifest


@pytest.mark.slow
def test_multi_gigabyte_sparse_file_round_trip(tmp_path: Path, private_store: StoreUnderTest) -> None:
    store = private_store  # its gigabytes deleted with its server when the test ends
    store_uri = store.uri("sparse")
    size = SPARSE_SIZE if store.name == "s3" else EMULATOR_SPARSE_SIZE
    source = tmp_path / "out"
    source.mkdir()
    with (source / "weights.bin").open("wb") as sparse:
        sparse.truncate(size)
    (source / "tail.txt").write_bytes(b"after the big one")
    zeros_sha256 = hashlib.sha256()
    block = bytes(64 * 1024 * 1024)
    for _ in range(size // len(block)):
        zeros_sha256.update(block)

    result = upload_directory(source, store_uri, options=store.options)
    records = {record.path: record for record in result.manifest.files}
    assert records["weights.bin"].size == size
    assert records["weights.bin"].sha256 == zeros_sha256.hexdigest()
    assert store.listing(store_uri)["weights.bin"].size == size

    try:
        downloaded = download(store_uri, tmp_path / "back", options=store.options)
        assert downloaded.verified
        assert (tmp_path / "back" / "weights.bin").stat().st_size == size
        assert (tmp_path / "back" / "tail.txt").read_bytes() == b"after the big one"
    finally:
        shutil.rmtree(tmp_path / "back", ignore_errors=True)  # gigabytes of real zeros on disk


def test_many_small_files_round_trip(tmp_path: Path, store: StoreUnderTest, store_uri: str) -> None:
    """More files than one listing page (1,000) holds: every one uploaded, listed and verified."""
    source = tmp_path / "out"
    for index in range(1_200):
        path = source / f"shard-{index // 100:02d}" / f"{index:04d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(2_000 + index))
    result = upload_directory(source, store_uri, options=store.options)
    assert result.manifest.file_count == 1_200
    assert len(store.listing(store_uri)) == 1_201  # and the manifest
    downloaded = download(store_uri, tmp_path / "back", options=store.options)
    assert downloaded.verified and len(downloaded.files) == 1_200
    assert (tmp_path / "back" / "shard-11" / "1199.bin").read_bytes() == (source / "shard-11" / "1199.bin").read_bytes()


def test_tampered_object_is_detected_on_download(tmp_path: Path, store: StoreUnderTest, store_uri: str) -> None:
    make_tree(tmp_path / "out")
    upload_directory(tmp_path / "out", store_uri, options=store.options)
    original = store.get(store_uri, "model.pt")
    tampered = bytes([original[0] ^ 0xFF]) + original[1:]  # same size, one byte flipped
    store.put(store_uri, "model.pt", tampered)

    with pytest.raises(ChecksumMismatchError) as caught:
        download(store_uri, tmp_path / "back", options=store.options)

    assert caught.value.path == "model.pt"
    assert "model.pt" in str(caught.value) and caught.value.actual == sha256_hex(tampered)
    assert not (tmp_path / "back" / "model.pt").exists()
    assert not list((tmp_path / "back").glob(".*.partial"))
    # Without verification the tampered bytes come down as they are.
    download(store_uri, tmp_path / "unchecked", options=store.options, verify=False)
    assert (tmp_path / "unchecked" / "model.pt").read_bytes() == tampered


def test_object_missing_from_bucket_is_reported(tmp_path: Path, store: StoreUnderTest, store_uri: str) -> None:
    make_tree(tmp_path / "out")
    upload_directory(tmp_path / "out", store_uri, options=store.options)
    store.delete(store_uri, "run.json")

    with pytest.raises(DownloadError, match=r"'run.json' is listed in the manifest .* missing"):
        download(store_uri, tmp_path / "back", options=store.options)


def test_wrong_credentials_give_a_clear_error_and_no_manifest(
    tmp_path: Path, store: StoreUnderTest, store_uri: str
) -> None:
    make_tree(tmp_path / "out")
    with pytest.raises(UploadError) as caught:
        upload_directory(tmp_path / "out", store_uri, options=StorageOptions.from_env(store.wrong_env))
    message = str(caught.value)
    hint = {"s3": "AWS_ACCESS_KEY_ID", "gcs": "GOOGLE_SERVICE_ACCOUNT_KEY", "azure": "AZURE_STORAGE_ACCOUNT_KEY"}[store.name]
    assert store_uri in message and "access denied" in message and hint in message, message
    assert not any(secret in message for secret in store.secrets)
    assert store.listing(store_uri) == {}


def test_missing_bucket_gives_a_clear_error(tmp_path: Path, store: StoreUnderTest) -> None:
    make_tree(tmp_path / "out")
    uri = store.missing_bucket_uri()
    with pytest.raises(UploadError, match=r"bucket 'no-such-bucket' does not exist"):
        upload_directory(tmp_path / "out", uri, options=store.options)
    with pytest.raises(DownloadError, match=r"bucket 'no-such-bucket' does not exist"):
        download(uri, tmp_path / "back", options=store.options)
    with pytest.raises(UploadError, match=r"bucket 'no-such-bucket' does not exist"):
        upload_file(tmp_path / "out" / "model.pt", f"{uri}/model.pt", options=store.options)


def test_unreachable_endpoint_gives_a_clear_error(tmp_path: Path) -> None:
    make_tree(tmp_path / "out")
    closed = StorageOptions(endpoint_url="http://127.0.0.1:9", access_key_id="a", secret_access_key="b")
    with pytest.raises(UploadError, match=r"cannot reach http://127.0.0.1:9"):
        upload_directory(tmp_path / "out", "s3://bucket/run", options=closed)


def test_nothing_at_uri_is_an_error(tmp_path: Path, store: StoreUnderTest, store_uri: str) -> None:
    with pytest.raises(DownloadError, match="no object or prefix with this name exists"):
        download(store_uri, tmp_path / "back", options=store.options)
    assert read_manifest(store_uri, options=store.options) is None


def test_upload_file_and_download_single_object(tmp_path: Path, store: StoreUnderTest, store_uri: str) -> None:
    log = tmp_path / "master-0.log"
    log.write_bytes(b"line\n" * 1000)
    seen: list[TransferProgress] = []
    record = upload_file(log, f"{store_uri}/logs/master-0.log", options=store.options, progress=seen.append)
    assert record.path == f"{store_uri}/logs/master-0.log"
    assert record.sha256 == sha256_hex(log.read_bytes())
    assert seen[-1] == TransferProgress(files_done=1, files_total=1, bytes_done=record.size, bytes_total=record.size)
    assert store.get(store_uri, "logs/master-0.log") == log.read_bytes()

    result = download(f"{store_uri}/logs/master-0.log", tmp_path / "back", options=store.options)
    assert (tmp_path / "back" / "master-0.log").read_bytes() == log.read_bytes()
    assert not result.verified


def test_a_file_uploaded_into_a_folder_keeps_its_name(
    tmp_path: Path, s3_uri: str, s3_options: StorageOptions, boto3_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """As cp and aws s3 cp: a URI ending in '/' (or a local folder that exists) receives the file by name."""
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    record = upload_file(model, f"{s3_uri}/models/", options=s3_options)
    assert record.path == f"{s3_uri}/models/model.pt"
    assert get_object(boto3_client, s3_uri, "models/model.pt") == b"weights"

    existing = tmp_path / "existing"
    existing.mkdir()
    assert upload_file(model, str(existing)).path == f"file://{existing}/model.pt"
    assert upload_file(model, f"file://{tmp_path}/new/").path == f"file://{tmp_path}/new/model.pt"
    assert upload_file(model, f"{tmp_path}/other/renamed.pt").path == f"file://{tmp_path}/other/renamed.pt"
    for copy in (existing / "model.pt", tmp_path / "new" / "model.pt", tmp_path / "other" / "renamed.pt"):
        assert copy.read_bytes() == b"weights"
    # A local target that cannot be written fails at once: retrying would not change it.
    (tmp_path / "blocked" / "model.pt").mkdir(parents=True)
    with caplog.at_level(logging.WARNING), pytest.raises(UploadError, match="Is a directory"):
        upload_file(model, f"{tmp_path}/blocked/")
    with caplog.at_level(logging.WARNING), pytest.raises(UploadError, match="local file error"):
        upload_file(model, f"{model}/inside.pt")
    assert "retry" not in caplog.text
    with pytest.raises(DownloadError, match=r"into '.*model.pt': it is a file; give a folder"):
        download(f"{s3_uri}/models/", model, options=s3_options)


def test_extra_files_are_listed_in_the_manifest(tmp_path: Path, store: StoreUnderTest, store_uri: str) -> None:
    make_tree(tmp_path / "out")
    log = tmp_path / "worker-0.log"
    log.write_text("hello\n")
    result = upload_directory(tmp_path / "out", store_uri, options=store.options, extra_files={"logs/worker-0.log": log})
    assert "logs/worker-0.log" in {record.path for record in result.manifest.files}
    download(store_uri, tmp_path / "back", options=store.options)
    assert (tmp_path / "back" / "logs" / "worker-0.log").read_text() == "hello\n"


def test_a_second_upload_replaces_the_manifest_last(tmp_path: Path, store: StoreUnderTest, store_uri: str) -> None:
    """An earlier manifest is deleted first, so it never describes a folder half replaced."""
    make_tree(tmp_path / "out")
    upload_directory(tmp_path / "out", store_uri, options=store.options)
    (tmp_path / "out" / "model.pt").write_bytes(b"retrained")
    result = upload_directory(tmp_path / "out", store_uri, options=store.options)
    assert json.loads(store.get(store_uri, "manifest.json")) == json.loads(result.manifest.to_json())
    assert download(store_uri, tmp_path / "back", options=store.options).verified
    assert (tmp_path / "back" / "model.pt").read_bytes() == b"retrained"


def test_reserved_manifest_name_is_refused(tmp_path: Path, s3_uri: str, s3_options: StorageOptions) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "manifest.json").write_text("{}")
    with pytest.raises(UploadError, match="'manifest.json' at its top level is reserved"):
        upload_directory(tmp_path / "out", s3_uri, options=s3_options)


@pytest.mark.parametrize("form", ["file-uri", "plain-path"])
def test_file_target_round_trip(tmp_path: Path, form: str) -> None:
    contents = make_tree(tmp_path / "out")
    target = tmp_path / "bucket" / "run"
    uri = f"file://{target}" if form == "file-uri" else str(target)

    result = upload_directory(tmp_path / "out", uri)

    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["file_count"] == len(contents) == result.manifest.file_count
    for key, data in contents.items():
        assert (target / key).read_bytes() == data
    downloaded = download(uri, tmp_path / "back")
    assert downloaded.verified
    for key, data in contents.items():
        assert (tmp_path / "back" / key).read_bytes() == data


def _private_server_with_shards(tmp_path: Path, seaweedfs: SeaweedFS) -> tuple[SeaweedFS, StorageOptions]:
    """A server of the test's own (so it can be killed) and 120 shards of 1 MiB in tmp_path/out."""
    server = start_seaweedfs(tmp_path / "server")
    options = StorageOptions(
        endpoint_url=server.endpoint,
        access_key_id=seaweedfs.env["AWS_ACCESS_KEY_ID"],
        secret_access_key=seaweedfs.env["AWS_SECRET_ACCESS_KEY"],
    )
    (tmp_path / "out").mkdir()
    for index in range(120):
        (tmp_path / "out" / f"shard-{index:03d}.bin").write_bytes(os.urandom(1024 * 1024))
    return server, options


@pytest.mark.slow
def test_server_killed_mid_upload_then_restarted_completes(tmp_path: Path, seaweedfs: SeaweedFS) -> None:
    """The server dies mid-upload and comes back: retries finish the upload, manifest intact."""
    server, options = _private_server_with_shards(tmp_path, seaweedfs)
    uri = f"s3://{BUCKET}/killed/run"
    killed = threading.Event()
    outage_s: list[float] = []

    def kill_then_restart() -> None:
        started = time.monotonic()
        server.stop(hard=True)
        time.sleep(2)
        server.start()
        outage_s.append(time.monotonic() - started)

    def on_progress(state: TransferProgress) -> None:
        if not killed.is_set() and state.bytes_done > state.bytes_total // 4:
            killed.set()
            threading.Thread(target=kill_then_restart).start()

    try:
        # More patience than the default policy: a restart on a loaded CI machine can be slow.
        patient = RetryPolicy(attempts=10, initial_backoff_s=0.5, max_backoff_s=5)
        result = upload_directory(tmp_path / "out", uri, options=options, progress=on_progress, retry=patient)
        assert killed.is_set() and outage_s, "the server was not killed during the upload"
        assert result.manifest.file_count == 120
        downloaded = download(uri, tmp_path / "back", options=options)
        assert downloaded.verified and len(downloaded.files) == 120
    finally:
        server.stop()


@pytest.mark.slow
def test_server_killed_for_good_fails_cleanly_without_manifest(tmp_path: Path, seaweedfs: SeaweedFS) -> None:
    """The server dies and stays down: a clear error, and no manifest (not even an old one)."""
    server, options = _private_server_with_shards(tmp_path, seaweedfs)
    uri = f"s3://{BUCKET}/killed/run"
    upload_directory(tmp_path / "out", uri, options=options)  # an earlier, complete upload
    assert read_manifest(uri, options=options) is not None
    killed = threading.Event()

    def on_progress(state: TransferProgress) -> None:
        if not killed.is_set() and state.bytes_done > state.bytes_total // 4:
            killed.set()
            threading.Thread(target=server.stop, kwargs={"hard": True}).start()

    try:
        with pytest.raises(UploadError) as caught:
            upload_directory(
                tmp_path / "out",
                uri,
                options=options,
                progress=on_progress,
                retry=RetryPolicy(attempts=2, initial_backoff_s=0.2),
            )
        assert killed.is_set()
        assert uri in str(caught.value) and "cannot reach" in str(caught.value)
        server.start()
        assert read_manifest(uri, options=options) is None
    finally:
        server.stop()
