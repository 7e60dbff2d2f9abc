"""``trainrun sweep FILE --local`` with spec.register: three trials (local runs whose program prints the val_loss
a grid gives it), each copied to its own folder on a real S3 server; the sweep registers one version, the best
trial's, in a real MLflow server named by MLFLOW_TRACKING_URI, with the sweep's tags."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from localrun import TRAINRUN, cli_env, write_run
from mlflow_server import MlflowServer, mlflow_client  # noqa: E402
from seaweedfs import BUCKET, SeaweedFS  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.s3]
PROGRAM = (
    "import json, os, pathlib\n"
    "print('trainrun:metric ' + json.dumps({'epoch': 1, 'step': 1, 'val_loss': float(os.environ['LOSS'])}), flush=True)\n"
    "pathlib.Path(os.environ['OUTPUT_DIR'], 'model.pt').write_bytes(b'weights')\n"
)


def sweep(uri: str, model: str) -> dict[str, Any]:
    return {
        "apiVersion": "trainrun.dev/v1alpha1",
        "kind": "TrainingSweep",
        "metadata": {"name": "tune"},
        "spec": {
            "template": {  # no image: a local sweep needs none
                "launcher": "none",
                "command": ["python", "-c", PROGRAM],
                "distribution": {"workers": 0},
                "output": {"uri": uri},
            },
            "parameters": {"env.LOSS": {"type": "grid", "values": [0.5, 0.2, 0.4]}},
            "objective": {"metric": "val_loss", "goal": "minimize"},
            "algorithm": "grid",
            "maxTrials": 3,
            "parallelism": 1,
            "register": {"name": model, "path": "model.pt", "tags": {"team": "vision"}},
        },
    }


def test_a_local_sweep_registers_the_best_trials_model_once(s3_server: SeaweedFS, mlflow_server: MlflowServer, tmp_path: Path) -> None:
    model, uri = f"local-tune-{uuid.uuid4().hex[:6]}", f"s3://{BUCKET}/local-sweeps/{uuid.uuid4().hex[:8]}"
    env = {**cli_env(), **s3_server.env, "MLFLOW_TRACKING_URI": mlflow_server.uri}
    runs_dir = tmp_path / "runs"
    result = subprocess.run(
        [*TRAINRUN, "sweep", str(write_run(tmp_path / "sweep.yaml", sweep(uri, model))), "--local", "--runs-dir", str(runs_dir)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path, check=False,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    values = {}
    for folder in runs_dir.iterdir():
        status = json.loads((folder / "status.json").read_text())
        values[folder.name.rsplit("-", 2)[0]] = (status["metrics"]["val_loss"], status["artifacts"]["uri"])
    best = min(values, key=lambda name: values[name][0])
    assert values[best] == (0.2, f"{uri}/{best}")
    assert "ModelRegistered: registered" in result.stdout
    assert f"{model} version 1 in registry mlflow: {uri}/{best}/model.pt" in " ".join(result.stdout.split())
    found = mlflow_client(
        mlflow_server,
        "result = [{'source': v.source, 'tags': v.tags} for v in client.search_model_versions(f\"name='{name}'\")]",
        name=model,
    )
    assert len(found) == 1, found
    [version] = found
    tags = version["tags"]
    assert version["source"] == f"{uri}/{best}/model.pt"
    assert tags["trainrun.sweep"] == "tune" and tags["trainrun.run"] == best and tags["team"] == "vision"
    assert tags["trainrun.sweep.objective"] == "val_loss=0.2" and json.loads(tags["trainrun.sweep.parameters"]) == {"env.LOSS": 0.2}
