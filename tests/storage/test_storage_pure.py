"""The parts of trainrun.storage that need no server: URI parsing, options from env, the manifest
format, the store settings and how errors are worded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from trainrun.storage import InvalidStorageURI, Manifest, StorageOptions, parse_uri
from trainrun.storage.manifest import FileRecord


@pytest.mark.parametrize(
    ("uri", "scheme", "bucket", "prefix"),
    [
        ("s3://models/runs/resnet/", "s3", "models", "runs/resnet"),
        ("s3://models", "s3", "models", ""),
        ("gs://my-bucket/a//b", "gs", "my-bucket", "a/b"),
        ("az://container/out", "az", "container", "out"),
        ("abfs://container/out", "az", "container", "out"),
        ("abfss://container@account.dfs.core.windows.net/out", "az", "container", "out"),
        ("file:///data/runs/a", "file", "", "/data/runs/a"),
        ("/data/runs/a/", "file", "", "/data/runs/a"),
    ],
)
def test_parse_accepted_forms(uri: str, scheme: str, bucket: str, prefix: str) -> None:
    location = parse_uri(uri)
    assert (location.scheme, location.bucket, location.prefix) == (scheme, bucket, prefix)


def test_parse_relative_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(str(tmp_path))
    assert parse_uri("out/run").uri == f"file://{tmp_path}/out/run"


def test_azure_account_from_host() -> None:
    assert parse_uri("abfs://c1@acct.dfs.core.windows.net/x").account == "acct"


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("", "empty"),
        ("http://host/x", "unknown scheme 'http'"),
        ("s3:///prefix", "bucket (container) name is missing"),
        ("s3://Bad_Bucket/x", "bucket name 'Bad_Bucket' is not valid"),
        ("s3://bucket/a/../b", "'..' path segments"),
        ("s3://bucket/x?versionId=1", "query strings"),
        ("file://otherhost/x", "must be local"),
    ],
)
def test_parse_rejects_with_clear_error(uri: str, reason: str) -> None:
    with pytest.raises(InvalidStorageURI) as caught:
        parse_uri(uri)
    message = str(caught.value)
    assert repr(uri) in message and reason in message
    assert "s3://bucket/prefix" in message  # the accepted forms are listed


def test_child_and_parent() -> None:
    location = parse_uri("s3://b1b/run")
    assert location.child("logs/master-0.log").uri == "s3://b1b/run/logs/master-0.log"
    parent, name = parse_uri("s3://b1b/run/logs/master-0.log").parent_and_name()
    assert (parent.uri, name) == ("s3://b1b/run/logs", "master-0.log")
    with pytest.raises(InvalidStorageURI, match="names a bucket"):
        parse_uri("s3://b1b").parent_and_name()


def test_uri_module_does_not_import_obstore() -> None:
    code = (
        "import sys; from trainrun.base.uri import parse_uri; import trainrun.storage; "
        "parse_uri('s3://b1b/x'); assert 'obstore' not in sys.modules, 'obstore was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_options_from_env_and_repr_hides_secrets() -> None:
    options = StorageOptions.from_env(
        {
            "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
            "AWS_SECRET_ACCESS_KEY": "very-secret-value",
            "AWS_ENDPOINT_URL": "http://minio:9000",
            "AWS_DEFAULT_REGION": "eu-west-1",
            "AZURE_STORAGE_ACCOUNT_KEY": "azure-secret-value",
            "UNRELATED": "x",
        }
    )
    assert options.endpoint_url == "http://minio:9000" and options.region == "eu-west-1"
    assert options.secret_access_key == "very-secret-value"
    for text in (repr(options), str(options), f"{options}"):
        assert "very-secret-value" not in text and "azure-secret-value" not in text
        assert "AKIAEXAMPLE" in text and "secret_access_key=***" in text
    assert options.with_flags(endpoint_url="http://other:1").endpoint_url == "http://other:1"
    assert options.with_flags(ca_bundle="/etc/ca.pem").ca_bundle == "/etc/ca.pem"
    assert options.with_flags(endpoint_url=None, ca_bundle=None) == options


def test_payload_signed_over_http_unsigned_over_https() -> None:
    """Over http the body's SHA-256 is signed (the only integrity check in transit); over
    https TLS protects it and the second SHA-256 pass is skipped, as the AWS SDKs do."""
    from trainrun.storage.stores import open_store

    location = parse_uri("s3://bucket/run")
    plain = open_store(location, StorageOptions(endpoint_url="http://minio:9000"))
    secure = open_store(location, StorageOptions(endpoint_url="https://minio:9000"))
    aws = open_store(location, StorageOptions())
    assert plain.config["unsigned_payload"] == "false" and plain.client_options["allow_http"] == "true"
    assert secure.config["unsigned_payload"] == "true" and secure.client_options["allow_http"] == "false"
    assert aws.config["unsigned_payload"] == "true"


@pytest.mark.parametrize("uri", ["s3://bucket/run", "gs://bucket/run", "az://container@account/run"])
def test_a_request_may_last_while_bytes_flow_and_ends_when_they_stall(uri: str) -> None:
    """obstore limits a whole request to 30 s by default, body included: a 3 GiB download through one GET
    failed that way on a busy machine. Our stores limit stalls (a minute without a byte), not durations."""
    from trainrun.storage.stores import open_store

    store = open_store(parse_uri(uri), StorageOptions(endpoint_url="https://store.example"))
    assert (store.client_options["read_timeout"], store.client_options["timeout"]) == ("1m", "1day")


@pytest.mark.parametrize(
    ("uri", "options", "expected"),
    [
        (
            "s3://bkt/run",
            StorageOptions(endpoint_url="https://s3.example:9000", access_key_id="AK", secret_access_key="SK",
                           session_token="ST", region="eu-1"),
            {"endpoint": "https://s3.example:9000", "access_key_id": "AK", "secret_access_key": "SK",
             "session_token": "ST", "region": "eu-1"},
        ),
        ("s3://bkt/run", StorageOptions(), {"region": "us-east-1"}),
        (
            "az://cont/run",
            StorageOptions(azure_account_name="acct", azure_account_key="AKEY", azure_sas_token="sv=1",
                           azure_endpoint="https://az.example"),
            {"account_name": "acct", "account_key": "AKEY", "sas_key": "sv=1", "endpoint": "https://az.example"},
        ),
        ("az://cont/run", StorageOptions(azure_account_name="acct"), {"account_name": "acct"}),
    ],
    ids=["s3-every-option", "s3-none", "az-every-option", "az-account-only"],
)
def test_every_given_option_reaches_its_store_and_nothing_else(
    uri: str, options: StorageOptions, expected: dict[str, str]
) -> None:
    from trainrun.storage.stores import open_store

    config = open_store(parse_uri(uri), options).config
    settings = {"endpoint", "access_key_id", "secret_access_key", "session_token", "region", "account_name",
                "account_key", "sas_key"}
    assert {key: value for key, value in config.items() if key in settings} == expected


def test_server_error_message_is_quoted_not_cut_at_its_xml() -> None:
    from obstore.exceptions import GenericError
    from trainrun.storage.stores import describe_error, is_transient

    error = GenericError(
        "Generic S3 error: Error performing PUT http://minio:9000/b/run/model.pt in 5ms - Server returned "
        'non-2xx status code: 500 Internal Server Error: <?xml version="1.0" encoding="UTF-8"?>\n'
        "<Error><Code>XMinioStorageFull</Code><Message>Storage backend has reached its minimum free drive "
        "threshold.</Message></Error>"
    )
    message = describe_error(error, location=parse_uri("s3://bucket/run"), options=StorageOptions())
    assert message.startswith("s3://bucket/run: Generic S3 error: Error performing PUT")
    assert message.endswith(
        "500 Internal Server Error; the server said XMinioStorageFull: Storage backend has reached its "
        "minimum free drive threshold."
    )
    assert is_transient(error)


def test_manifest_json_round_trip_and_contract_keys() -> None:
    manifest = Manifest.build([FileRecord("b.txt", 3, "bb"), FileRecord("a/x.pt", 0, "aa")])
    document = json.loads(manifest.to_json())
    assert set(document) == {"files", "total_bytes", "file_count", "created"}
    assert [entry["path"] for entry in document["files"]] == ["a/x.pt", "b.txt"]
    assert (document["total_bytes"], document["file_count"]) == (3, 2)
    assert document["created"].endswith("Z")
    assert Manifest.from_json(manifest.to_json(), source="s3://b/m") == manifest


def test_manifest_with_wrong_totals_is_rejected() -> None:
    document = json.loads(Manifest.build([FileRecord("a", 3, "aa")]).to_json())
    document["total_bytes"] = 4
    with pytest.raises(ValueError, match=r"s3://b/manifest.json is not valid: total_bytes"):
        Manifest.from_json(json.dumps(document).encode(), source="s3://b/manifest.json")
