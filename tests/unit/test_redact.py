"""Credentials in URLs never reach printed text: one redaction function, and the places that call it."""

from __future__ import annotations

import io
import logging

import pytest
from run_factory import training_run
from trainrun.base.errors import ChecksumMismatchError, StorageError, UploadError
from trainrun.base.redact import redact, redact_logs, redact_optional
from trainrun.status.observe import observe_pod, observe_uploader


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://user:pass@host:9000/bucket", "http://***@host:9000/bucket"),
        ("Error performing PUT http://AKIA:s3cr3t@seaweed:8333/b/k in 1s", "Error performing PUT http://***@seaweed:8333/b/k in 1s"),
        ("https://user@host/", "https://***@host/"),
        ("https://user:p@ss@host/x", "https://***@host/x"),  # a raw @ in the password
        ("endpoint 'http://u:p@h'", "endpoint 'http://***@h'"),
        ("a http://a:b@h1/ and s3://c:d@h2/", "a http://***@h1/ and s3://***@h2/"),
        ("https://acct.blob.core.windows.net/c/b?sv=2024&sig=abc%2Fdef&se=x", "https://acct.blob.core.windows.net/c/b?sv=2024&sig=***&se=x"),
        ("https://s3/b/k?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=f00d", "https://s3/b/k?X-Amz-Credential=***&X-Amz-Signature=***"),
        ("https://h/p?X-Amz-Security-Token=IQo", "https://h/p?X-Amz-Security-Token=***"),
        (
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5PT0=;EndpointSuffix=core.windows.net",
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=***;EndpointSuffix=core.windows.net",
        ),
        ("BlobEndpoint=https://a.blob;SharedAccessSignature=sv=2024&sig=c2ln", "BlobEndpoint=https://a.blob;SharedAccessSignature=***&sig=***"),
        # Left as they are: no credentials in them.
        ("s3://bucket/key@v2/model.pt", "s3://bucket/key@v2/model.pt"),
        ("http://host:9000/bucket", "http://host:9000/bucket"),
        ("mail me@example.com about http://host/", "mail me@example.com about http://host/"),
        ("replica worker-0 exited with code 3", "replica worker-0 exited with code 3"),
        ("--learning-rate=0.1 --token-count=5", "--learning-rate=0.1 --token-count=5"),
        ("", ""),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_optional() -> None:
    assert redact_optional(None) is None
    assert redact_optional("http://a:b@h") == "http://***@h"


def test_storage_errors_redact_their_message() -> None:
    error = UploadError("cannot upload /outputs to s3://b/: cannot reach http://admin:hunter2@minio:9000 (refused)")
    assert "hunter2" not in str(error) and "admin" not in str(error)
    assert "http://***@minio:9000" in str(error)
    assert isinstance(error, StorageError)
    mismatch = ChecksumMismatchError(uri="http://u:pw@h/b/k", path="k", expected="a", actual="b")
    assert "pw" not in str(mismatch).replace("path", "")


def test_uploader_failure_message_in_the_status_is_redacted() -> None:
    terminated = {
        "exitCode": 1,
        "reason": "Error",
        "message": "cannot upload /outputs: Error performing PUT http://AKIAFAKE:fakeSecretKey@s3:8333/b/k",
        "finishedAt": "2026-11-30T05:00:00Z",
    }
    pod = {
        "metadata": {"name": "mnist-upload-x", "labels": {"trainrun.dev/run": "mnist"}},
        "status": {"phase": "Failed", "containerStatuses": [{"name": "upload", "state": {"terminated": terminated}}]},
    }
    job = {"metadata": {"name": "mnist-upload"}, "status": {"failed": 1}}
    observed = observe_uploader(job, [observe_pod(pod)])
    assert observed is not None and observed.failure_message is not None
    assert "fakeSecretKey" not in observed.failure_message and "AKIAFAKE" not in observed.failure_message
    assert "http://***@s3:8333" in observed.failure_message


def test_render_and_describe_print_no_credentials(capsys: pytest.CaptureFixture[str]) -> None:
    from trainrun.cli.views import describe, show

    run = training_run(output={"uri": "s3://models/mnist/", "secretName": "s3-credentials"})
    document = {
        "metadata": {"name": "mnist", "namespace": "ml"},
        "spec": run.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        "status": {"phase": "Uploading", "message": "copying to http://AKIAFAKE:fakeSecretKey@s3:8333/models"},
    }
    events = [{"type": "Warning", "reason": "UploadRetry", "message": "PUT http://AKIAFAKE:fakeSecretKey@s3/x failed"}]
    show(describe(document, events=events, run_dir=None))
    printed = capsys.readouterr().out
    assert "fakeSecretKey" not in printed and "AKIAFAKE" not in printed
    assert "***@s3" in printed


def test_log_records_are_redacted_whoever_logs_them() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("test-redact")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        redact_logs(logger)
        redact_logs(logger)  # twice is once
        assert len(handler.filters) == 1
        logger.warning("retry of PUT %s failed", "http://AKIAFAKE:fakeSecretKey@s3:8333/b/k")
        try:
            raise RuntimeError("Error performing GET http://u:fakeSecretKey@h/x")
        except RuntimeError:
            logger.exception("copy failed")
        logger.info("nothing to hide: %d files", 3)
    finally:
        logger.removeHandler(handler)
    printed = stream.getvalue()
    assert "fakeSecretKey" not in printed and "AKIAFAKE" not in printed
    assert "retry of PUT http://***@s3:8333/b/k failed" in printed
    assert "RuntimeError: Error performing GET http://***@h/x" in printed
    assert "nothing to hide: 3 files" in printed


def test_cli_errors_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    import typer
    from trainrun.cli.common import fail

    with pytest.raises(typer.Exit):
        fail("cannot reach http://admin:hunter2@minio:9000")
    assert capsys.readouterr().err == "error: cannot reach http://***@minio:9000\n"
