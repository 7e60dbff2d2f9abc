"""The ``upload``/``download`` verbs (trainrun.cli.transfer), in-process and as real processes.

Also the exit-crash check: obstore 0.12.1 with asyncio aborted short-lived uploaders at
interpreter exit (SIGABRT from a tokio worker); our uploader must exit 0 every time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from seaweedfs import BUCKET, SeaweedFS
from trainrun.cli import transfer
from typer.testing import CliRunner

pytestmark = pytest.mark.s3  # every test here talks to the SeaweedFS session server

# The verbs as `trainrun` will have them: a Typer app with transfer.register() applied.
CLI_SCRIPT = (
    "import sys, typer; from trainrun.cli import transfer; "
    "app = typer.Typer(); transfer.register(app); app(sys.argv[1:], prog_name='trainrun')"
)


def cli_app() -> typer.Typer:
    app = typer.Typer()
    transfer.register(app)
    return app


def make_outputs(root: Path, *, files: int = 5) -> None:
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / "empty").write_bytes(b"")
    for index in range(files):
        (root / "nested" / "deeper" / f"part-{index}.bin").write_bytes(os.urandom(10_000 + index))


def test_upload_then_download_through_the_cli(tmp_path: Path, seaweedfs: SeaweedFS) -> None:
    make_outputs(tmp_path / "out")
    uri = f"s3://{BUCKET}/cli/round-trip"
    runner = CliRunner(env=seaweedfs.env)

    uploaded = runner.invoke(cli_app(), ["upload", str(tmp_path / "out"), uri, "--concurrency", "4"])
    assert uploaded.exit_code == 0, uploaded.output
    assert "uploaded 6 files" in uploaded.stdout and f"{uri}/manifest.json" in uploaded.stdout

    downloaded = runner.invoke(cli_app(), ["download", uri, str(tmp_path / "back")])
    assert downloaded.exit_code == 0, downloaded.output
    assert "verified against manifest.json" in downloaded.stdout
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            copy = tmp_path / "back" / path.relative_to(tmp_path / "out")
            assert copy.read_bytes() == path.read_bytes()


def test_endpoint_flag_beats_the_environment(tmp_path: Path, seaweedfs: SeaweedFS) -> None:
    make_outputs(tmp_path / "out")
    runner = CliRunner(env={**seaweedfs.env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    result = runner.invoke(
        cli_app(),
        ["upload", str(tmp_path / "out"), f"s3://{BUCKET}/cli/flag", "--endpoint-url", seaweedfs.endpoint],
    )
    assert result.exit_code == 0, result.output


def test_single_file_upload(tmp_path: Path, seaweedfs: SeaweedFS) -> None:
    (tmp_path / "master-0.log").write_text("epoch 1\n")
    result = CliRunner(env=seaweedfs.env).invoke(
        cli_app(), ["upload", str(tmp_path / "master-0.log"), f"s3://{BUCKET}/cli/logs/master-0.log"]
    )
    assert result.exit_code == 0, result.output
    assert f"to s3://{BUCKET}/cli/logs/master-0.log" in result.stdout


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["upload", "{out}", "s3://no-such-bucket/x"], "bucket 'no-such-bucket' does not exist"),
        (["upload", "{out}", "ftp://host/x"], "unknown scheme 'ftp'"),
        (["upload", "{missing}", f"s3://{BUCKET}/x"], "does not exist: give a folder or a file"),
        (["download", f"s3://{BUCKET}/cli/nothing-here", "{back}"], "no object or prefix"),
    ],
)
def test_errors_are_one_line_without_traceback(
    tmp_path: Path, seaweedfs: SeaweedFS, arguments: list[str], expected: str
) -> None:
    make_outputs(tmp_path / "out")
    paths = {"out": tmp_path / "out", "missing": tmp_path / "missing", "back": tmp_path / "back"}
    argv = [argument.format(**paths) for argument in arguments]
    result = CliRunner(env=seaweedfs.env).invoke(cli_app(), argv)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and expected in result.stderr
    assert "Traceback" not in result.output


def test_wrong_credentials_as_a_process(tmp_path: Path, seaweedfs: SeaweedFS) -> None:
    make_outputs(tmp_path / "out")
    env = {**os.environ, **seaweedfs.env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    completed = subprocess.run(
        [sys.executable, "-c", CLI_SCRIPT, "upload", str(tmp_path / "out"), f"s3://{BUCKET}/cli/denied"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 1
    assert "access denied" in completed.stderr and "Traceback" not in completed.stderr
    assert "not-the-secret" not in completed.stderr + completed.stdout


@pytest.mark.slow
def test_uploader_process_exits_cleanly_every_time(tmp_path: Path, seaweedfs: SeaweedFS) -> None:
    """Ten short-lived uploads of 200 files each: every process must exit 0 (no SIGABRT)."""
    make_outputs(tmp_path / "out", files=200)
    env = {**os.environ, **seaweedfs.env}
    failures = []
    for attempt in range(10):
        completed = subprocess.run(
            [sys.executable, "-c", CLI_SCRIPT, "upload", str(tmp_path / "out"), f"s3://{BUCKET}/exit/{attempt}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if completed.returncode != 0 or "uploaded 201 files" not in completed.stdout:
            failures.append((attempt, completed.returncode, completed.stderr[-2000:]))
    assert failures == []
