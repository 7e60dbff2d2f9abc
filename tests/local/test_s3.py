"""A local run whose spec.output.uri is S3: artifacts and logs land on a real S3 server (SeaweedFS).

Same upload code as the cluster's uploader Job (trainrun.storage); credentials and endpoint come from
the AWS_* environment, as they do there from the output Secret.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from localrun import SAMPLES, cli_env, run_local, sample, write_run
from seaweedfs import BUCKET, SeaweedFS  # noqa: E402 - the storage tests' S3 server
from trainrun import Client

pytestmark = [pytest.mark.slow, pytest.mark.s3]


def test_artifacts_and_logs_go_to_s3_with_the_manifest(
    s3_server: SeaweedFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    prefix = f"local-{uuid.uuid4().hex[:8]}/custom-script"
    document = sample("custom-script.yaml")
    document["spec"]["hyperparameters"]["extra"]["steps"] = "40"
    document["spec"]["output"] = {"uri": f"s3://{BUCKET}/{prefix}"}
    runs_dir = tmp_path / "runs"
    result = run_local(write_run(tmp_path / "s3.yaml", document), runs_dir, cwd=SAMPLES, timeout=300, env={**cli_env(), **s3_server.env})
    assert result.returncode == 0, result.stdout + result.stderr
    s3: Any = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        aws_access_key_id=s3_server.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=s3_server.env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]}
    assert {f"{prefix}/model.pt", f"{prefix}/logs/master-0.log", f"{prefix}/manifest.json"} <= keys
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{prefix}/manifest.json")["Body"].read())
    assert {entry["path"] for entry in manifest["files"]} == {key.removeprefix(prefix + "/") for key in keys} - {
        "manifest.json"
    }
    for name, value in s3_server.env.items():
        monkeypatch.setitem(os.environ, name, value)
    client = Client(backend="local", runs_dir=runs_dir)
    assert client.artifacts("custom-script")["manifest"]["file_count"] == manifest["file_count"]
    copied = client.download("custom-script", tmp_path / "copy")
    assert (copied / "model.pt").stat().st_size > 0
