"""Object storage over https behind a private CA (``AWS_CA_BUNDLE`` / ``--ca-bundle``), against
the session's SeaweedFS, whose https listener has a certificate from a throwaway CA.

A store inside a cluster (MinIO, Ceph) often has such a certificate: the CA must be trusted
besides the system roots, given as a file locally or as PEM text from the run's Secret.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from seaweedfs import ACCESS_KEY, BUCKET, SECRET_KEY, SeaweedFS, boto3_client_for
from test_storage_cli import CLI_SCRIPT
from test_stores import get_object, has_object, make_tree
from trainrun.storage import (
    DownloadError,
    StorageError,
    StorageOptions,
    UploadError,
    download,
    upload_directory,
    upload_file,
)

pytestmark = pytest.mark.s3


def https_options(server: SeaweedFS, ca_bundle: str | None) -> StorageOptions:
    return StorageOptions(
        endpoint_url=server.https_endpoint,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        ca_bundle=ca_bundle,
    )


@pytest.fixture
def https_boto3_client(seaweedfs: SeaweedFS) -> Any:
    assert seaweedfs.tls is not None
    return boto3_client_for(seaweedfs.https_endpoint, ca=seaweedfs.tls.ca)


def test_round_trip_over_https_with_the_ca_file(
    tmp_path: Path, s3_uri: str, seaweedfs: SeaweedFS, https_boto3_client: Any
) -> None:
    assert seaweedfs.tls is not None
    contents = make_tree(tmp_path / "out")  # includes a file large enough for a multipart upload
    options = https_options(seaweedfs, str(seaweedfs.tls.ca))

    result = upload_directory(tmp_path / "out", s3_uri, options=options)

    assert result.manifest.file_count == len(contents)
    manifest = json.loads(get_object(https_boto3_client, s3_uri, "manifest.json"))
    for entry in manifest["files"]:
        stored = get_object(https_boto3_client, s3_uri, entry["path"])
        assert (
            entry["sha256"] == hashlib.sha256(stored).hexdigest() == hashlib.sha256(contents[entry["path"]]).hexdigest()
        )
    downloaded = download(s3_uri, tmp_path / "back", options=options)
    assert downloaded.verified
    for key, data in contents.items():
        assert (tmp_path / "back" / key).read_bytes() == data


def test_ca_as_pem_text_as_a_secret_key_holds_it(tmp_path: Path, s3_uri: str, seaweedfs: SeaweedFS) -> None:
    assert seaweedfs.tls is not None
    (tmp_path / "model.pt").write_bytes(b"weights" * 1000)
    options = StorageOptions.from_env(
        {
            "AWS_ENDPOINT_URL": seaweedfs.https_endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_CA_BUNDLE": seaweedfs.tls.ca.read_text(),
        }
    )
    record = upload_file(tmp_path / "model.pt", f"{s3_uri}/model.pt", options=options)
    assert record.size == 7000
    result = download(f"{s3_uri}/model.pt", tmp_path / "back", options=options)
    assert (tmp_path / "back" / "model.pt").read_bytes() == b"weights" * 1000
    assert result.files[0].sha256 == record.sha256


def test_untrusted_certificate_fails_at_once_naming_the_fix(
    tmp_path: Path, s3_uri: str, seaweedfs: SeaweedFS, boto3_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    make_tree(tmp_path / "out")
    with caplog.at_level(logging.WARNING), pytest.raises(UploadError) as caught:
        upload_directory(tmp_path / "out", s3_uri, options=https_options(seaweedfs, None))
    message = str(caught.value)
    assert f"the TLS certificate of {seaweedfs.https_endpoint} is not trusted (UnknownIssuer)" in message
    assert "AWS_CA_BUNDLE" in message and "cannot reach" not in message
    assert "retry" not in caplog.text  # a certificate problem is not retried
    assert not has_object(boto3_client, s3_uri, "")
    with pytest.raises(DownloadError, match="is not trusted"):
        download(s3_uri, tmp_path / "back", options=https_options(seaweedfs, None))


@pytest.mark.parametrize(
    ("ca_bundle", "says"),
    [
        ("/no/such/ca.pem", r"AWS_CA_BUNDLE: cannot read '/no/such/ca.pem' \(No such file or directory\)"),
        (
            "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
            "AWS_CA_BUNDLE holds no usable CA certificate",
        ),
    ],
)
def test_unusable_ca_bundle_is_a_clear_error(
    tmp_path: Path, s3_uri: str, seaweedfs: SeaweedFS, ca_bundle: str, says: str
) -> None:
    make_tree(tmp_path / "out")
    with pytest.raises(StorageError, match=says):
        upload_directory(tmp_path / "out", s3_uri, options=https_options(seaweedfs, ca_bundle))


def test_cli_takes_the_ca_from_the_flag_or_the_environment(tmp_path: Path, seaweedfs: SeaweedFS) -> None:
    assert seaweedfs.tls is not None
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "metrics.json").write_text('{"accuracy": 0.9}')
    env = {**seaweedfs.env, "AWS_ENDPOINT_URL": seaweedfs.https_endpoint}
    uri = f"s3://{BUCKET}/cli/tls-{tmp_path.name}"

    def cli(*arguments: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", CLI_SCRIPT, *arguments],
            env={**env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )

    refused = cli("upload", str(tmp_path / "out"), uri)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: ") and "Traceback" not in refused.stderr
    assert "--ca-bundle" in refused.stderr

    with_flag = cli("upload", str(tmp_path / "out"), uri, "--ca-bundle", str(seaweedfs.tls.ca))
    assert with_flag.returncode == 0, with_flag.stderr
    assert "uploaded 1 file" in with_flag.stdout

    with_env = cli("download", uri, str(tmp_path / "back"), extra_env={"AWS_CA_BUNDLE": str(seaweedfs.tls.ca)})
    assert with_env.returncode == 0, with_env.stderr
    assert "verified against manifest.json" in with_env.stdout
    assert (tmp_path / "back" / "metrics.json").read_text() == '{"accuracy": 0.9}'
