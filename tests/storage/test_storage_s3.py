"""trainrun.storage against a real SeaweedFS S3 server (and file:// targets).

Results are checked with an independent client (boto3), not only with our own download.
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

pytestmark = pytest.mark.s3  # every test here talks to the SeaweedFS session server

SPARSE_SIZE = 3 * 1024**3  # 3 GiB: ~25 s up and ~15 s down on the 2-core CI machine


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


def test_round_trip_with_nested_empty_files_and_manifest_checked_by_boto3(
    tmp_path: Path, s3_uri: str, s3_options: StorageOptions, boto3_client: Any
) -> None:
    contents = make_tree(tmp_path / "out")
    (tmp_path / "out" / "broken-link").symlink_to(tmp_path / "missing")
    (tmp_path / "linked.bin").write_bytes(b"through a link")
    (tmp_path / "out" / "link-to-file").symlink_to(tmp_path / "linked.bin")
    seen: list[TransferProgress] = []

    result = upload_directory(tmp_path / "out", s3_uri, options=s3_options, progress=seen.append)

    expected = {**contents, "link-to-file": b"through a link"}
    assert result.skipped == ("broken-link",)
    assert {record.path: record.size for record in result.manifest.files} == {
        key: len(data) for key, data in expected.items()
    }
    assert seen[-1].files_done == seen[-1].files_total == len(expected)
    assert seen[-1].bytes_done == seen[-1].bytes_total == sum(map(len, expected.values()))
    # The manifest in the bucket lists every file with the sha256 of what boto3 reads back.
    manifest = json.loads(get_object(boto3_client, s3_uri, "manifest.json"))
    assert manifest["file_count"] == len(expected)
    assert manifest["total_bytes"] == sum(map(len, expected.values()))
    for entry in manifest["files"]:
        stored = get_object(boto3_client, s3_uri, entry["path"])
        assert entry["sha256"] == sha256_hex(stored) == sha256_hex(expected[entry["path"]])
        assert entry["size"] == len(stored)
    # Written last: no object is newer than the manifest.
    bucket, prefix = bucket_and_key(s3_uri, "")
    listing = boto3_client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["Contents"]
    times = {item["Key"].rsplit("/", 1)[-1]: item["LastModified"] for item in listing}
    assert times["manifest.json"] == max(times.values())

    downloaded = download(s3_uri, tmp_path / "back", options=s3_options)

    assert downloaded.verified and downloaded.unverified_paths == ()
    for key, data in expected.items():
        assert (tmp_path / "back" / key).read_bytes() == data
    assert not (tmp_path / "back" / "manifest.json").exists()
    assert read_manifest(s3_uri, options=s3_options) == result.manifest


@pytest.mark.slow
def test_multi_gigabyte_sparse_file_round_trip(tmp_path: Path, s3_uri: str, s3_options: StorageOptions) -> None:
    source = tmp_path / "out"
    source.mkdir()
    with (source / "weights.bin").open("wb") as sparse:
        sparse.truncate(SPARSE_SIZE)
    (source / "tail.txt").write_bytes(b"after the big one")
    zeros_sha256 = hashlib.sha256()
    block = bytes(64 * 1024 * 1024)
    for _ in range(SPARSE_SIZE // len(block)):
        zeros_sha256.update(block)

    result = upload_directory(source, s3_uri, options=s3_options)
    records = {record.path: record for record in result.manifest.files}
    assert records["weights.bin"].size == SPARSE_SIZE
    assert records["weights.bin"].sha256 == zeros_sha256.hexdigest()

    try:
        downloaded = download(s3_uri, tmp_path / "back", options=s3_options)
        assert downloaded.verified
        assert (tmp_path / "back" / "weights.bin").stat().st_size == SPARSE_SIZE
        assert (tmp_path / "back" / "tail.txt").read_bytes() == b"after the big one"
    finally:
        shutil.rmtree(tmp_path / "back", ignore_errors=True)  # 3 GiB of real zeros on disk


def test_tampered_object_is_detected_on_download(
    tmp_path: Path, s3_uri: str, s3_options: StorageOptions, boto3_client: Any
) -> None:
    make_tree(tmp_path / "out")
    upload_directory(tmp_path / "out", s3_uri, options=s3_options)
    original = get_object(boto3_client, s3_uri, "model.pt")
    tampered = bytes([original[0] ^ 0xFF]) + original[1:]  # same size, one byte flipped
    boto3_client.put_object(Bucket=BUCKET, Body=tampered, Key=bucket_and_key(s3_uri, "model.pt")[1])

    with pytest.raises(ChecksumMismatchError) as caught:
        download(s3_uri, tmp_path / "back", options=s3_options)

    assert caught.value.path == "model.pt"
    assert "model.pt" in str(caught.value) and caught.value.actual == sha256_hex(tampered)
    assert not (tmp_path / "back" / "model.pt").exists()
    assert not list((tmp_path / "back").glob(".*.partial"))
    # Without verification the tampered bytes come down as they are.
    download(s3_uri, tmp_path / "unchecked", options=s3_options, verify=False)
    assert (tmp_path / "unchecked" / "model.pt").read_bytes() == tampered


def test_object_missing_from_bucket_is_reported(
    tmp_path: Path, s3_uri: str, s3_options: StorageOptions, boto3_client: Any
) -> None:
    make_tree(tmp_path / "out")
    upload_directory(tmp_path / "out", s3_uri, options=s3_options)
    boto3_client.delete_object(Bucket=BUCKET, Key=bucket_and_key(s3_uri, "run.json")[1])

    with pytest.raises(DownloadError, match=r"'run.json' is listed in the manifest .* missing"):
        download(s3_uri, tmp_path / "back", options=s3_options)


def test_wrong_credentials_give_a_clear_error_and_no_manifest(
    tmp_path: Path, s3_uri: str, seaweedfs: SeaweedFS, boto3_client: Any
) -> None:
    make_tree(tmp_path / "out")
    wrong = StorageOptions(endpoint_url=seaweedfs.endpoint, access_key_id="nobody", secret_access_key="s3cr3t-xyz")
    with pytest.raises(UploadError) as caught:
        upload_directory(tmp_path / "out", s3_uri, options=wrong)
    message = str(caught.value)
    assert s3_uri in message and "access denied" in message and "AWS_ACCESS_KEY_ID" in message
    assert "s3cr3t-xyz" not in message
    assert not has_object(boto3_client, s3_uri, "")


def test_missing_bucket_gives_a_clear_error(tmp_path: Path, s3_options: StorageOptions) -> None:
    make_tree(tmp_path / "out")
    with pytest.raises(UploadError, match=r"bucket 'no-such-bucket' does not exist"):
        upload_directory(tmp_path / "out", "s3://no-such-bucket/run", options=s3_options)
    with pytest.raises(DownloadError, match=r"bucket 'no-such-bucket' does not exist"):
        download("s3://no-such-bucket/run", tmp_path / "back", options=s3_options)


def test_unreachable_endpoint_gives_a_clear_error(tmp_path: Path) -> None:
    make_tree(tmp_path / "out")
    closed = StorageOptions(endpoint_url="http://127.0.0.1:9", access_key_id="a", secret_access_key="b")
    with pytest.raises(UploadError, match=r"cannot reach http://127.0.0.1:9"):
        upload_directory(tmp_path / "out", "s3://bucket/run", options=closed)


def test_nothing_at_uri_is_an_error(tmp_path: Path, s3_uri: str, s3_options: StorageOptions) -> None:
    with pytest.raises(DownloadError, match="no object or prefix with this name exists"):
        download(s3_uri, tmp_path / "back", options=s3_options)
    assert read_manifest(s3_uri, options=s3_options) is None


def test_upload_file_and_download_single_object(
    tmp_path: Path, s3_uri: str, s3_options: StorageOptions, boto3_client: Any
) -> None:
    log = tmp_path / "master-0.log"
    log.write_bytes(b"line\n" * 1000)
    seen: list[TransferProgress] = []
    record = upload_file(log, f"{s3_uri}/logs/master-0.log", options=s3_options, progress=seen.append)
    assert record.path == f"{s3_uri}/logs/master-0.log"
    assert record.sha256 == sha256_hex(log.read_bytes())
    assert seen[-1] == TransferProgress(files_done=1, files_total=1, bytes_done=record.size, bytes_total=record.size)
    assert get_object(boto3_client, s3_uri, "logs/master-0.log") == log.read_bytes()

    result = download(f"{s3_uri}/logs/master-0.log", tmp_path / "back", options=s3_options)
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


def test_extra_files_are_listed_in_the_manifest(tmp_path: Path, s3_uri: str, s3_options: StorageOptions) -> None:
    make_tree(tmp_path / "out")
    log = tmp_path / "worker-0.log"
    log.write_text("hello\n")
    result = upload_directory(tmp_path / "out", s3_uri, options=s3_options, extra_files={"logs/worker-0.log": log})
    assert "logs/worker-0.log" in {record.path for record in result.manifest.files}
    download(s3_uri, tmp_path / "back", options=s3_options)
    assert (tmp_path / "back" / "logs" / "worker-0.log").read_text() == "hello\n"


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
