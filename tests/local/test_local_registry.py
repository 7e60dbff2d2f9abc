"""``trainrun run FILE --local`` with spec.output.register and spec.tracking: the local run registers its
verified copy (on a real S3 server) in a real MLflow server named by MLFLOW_TRACKING_URI, and is an MLflow
run with its params and metric series; without a server it completes with Registered=False saying why.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from localrun import TRAINRUN, cli_env, run_local, write_run
from mlflow_server import MlflowServer, mlflow_client  # noqa: E402
from seaweedfs import BUCKET, SeaweedFS  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.s3]
PROGRAM = (
    "import json, os, pathlib\n"
    "for step, loss in ((1, 2.0), (2, 1.0), (3, 0.5)):\n"
    "    print('trainrun:metric ' + json.dumps({'step': step, 'loss': loss}), flush=True)\n"
    "pathlib.Path(os.environ['OUTPUT_DIR'], 'model.pt').write_bytes(b'weights')\n"
)


def document(name: str, model: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "trainrun.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": name},
        "spec": {
            "launcher": "none",
            "command": ["python", "-c", PROGRAM],
            "distribution": {"workers": 0},
            "hyperparameters": {"extra": {"steps": "3"}},
            "output": {"uri": f"s3://{BUCKET}/local-models/{uuid.uuid4().hex[:8]}", "register": {"name": model, "path": "model.pt"}},
            **spec,
        },
    }


def status_of(runs_dir: Path) -> dict[str, Any]:
    [folder] = list(runs_dir.iterdir())
    return dict(json.loads((folder / "status.json").read_text()))


def test_a_local_run_registers_and_is_tracked(s3_server: SeaweedFS, mlflow_server: MlflowServer, tmp_path: Path) -> None:
    model = f"local-{uuid.uuid4().hex[:6]}"
    env = {**cli_env(), **s3_server.env, "MLFLOW_TRACKING_URI": mlflow_server.uri}
    runs_dir = tmp_path / "runs"
    spec = document("reg", model, tracking={"experiment": "local-runs"})
    result = run_local(write_run(tmp_path / "reg.yaml", spec), runs_dir, cwd=tmp_path, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    status = status_of(runs_dir)
    uri = spec["spec"]["output"]["uri"]
    assert status["phase"] == "Completed"
    assert status["model"] == {"registry": "mlflow", "name": model, "version": "1", "uri": f"{uri}/model.pt"}
    assert status["tracking"]["experiment"] == "local-runs" and status["tracking"]["ended"] is True
    read = mlflow_client(
        mlflow_server,
        "[v] = client.search_model_versions(f\"name='{name}'\")\n"
        "run = client.get_run(v.run_id)\n"
        "result = {'source': v.source, 'tags': v.tags, 'params': run.data.params, 'status': run.info.status,"
        " 'loss': [(m.step, m.value) for m in client.get_metric_history(v.run_id, 'loss')]}",
        name=model,
    )
    assert read["source"] == f"{uri}/model.pt" and read["tags"]["trainrun.run_uid"].startswith("local:")
    assert read["params"] == {"steps": "3"}
    assert sorted(map(tuple, read["loss"])) == [(1, 2.0), (2, 1.0), (3, 0.5)]
    assert read["status"] == "FINISHED"
    # Read back with the CLI, from the same server (MLFLOW_TRACKING_URI), and fetched from the bucket.
    listed = subprocess.run([*TRAINRUN, "models", model], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split()[:5] == [mlflow_server.uri, model, "1", "default/reg", "loss=0.5"]
    fetched = subprocess.run(
        [*TRAINRUN, "models", "download", model, str(tmp_path / "model")], env=env, capture_output=True, text=True, timeout=120
    )
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "model" / "model.pt").read_bytes() == b"weights"


def test_a_local_run_without_a_registry_says_so(s3_server: SeaweedFS, tmp_path: Path) -> None:
    env = {**cli_env(), **s3_server.env}
    env.pop("MLFLOW_TRACKING_URI", None)
    runs_dir = tmp_path / "runs"
    result = run_local(write_run(tmp_path / "none.yaml", document("none", "m")), runs_dir, cwd=tmp_path, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    status = status_of(runs_dir)
    registered = next(item for item in status["conditions"] if item["type"] == "Registered")
    assert status["phase"] == "Completed" and registered["status"] == "False"
    assert "MLFLOW_TRACKING_URI, which is not set" in registered["message"]
