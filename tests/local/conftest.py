"""Fixtures of the local-mode tests, above all one real quickstart run shared by the tests that read it.

The quickstart sample trains once per test session (about 25 s on 2 cores). The S3 server (SeaweedFS, the
storage tests' own) and the MLflow server (tests/registry) are started once per module that asks for them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
for folder in ("storage", "registry"):
    sys.path.insert(0, str(Path(__file__).parents[1] / folder))

from localrun import FinishedRun, run_folder, run_local, sample, write_run  # noqa: E402
from mlflow_server import MlflowServer, require_mlflow, start_mlflow  # noqa: E402
from seaweedfs import SeaweedFS, start_seaweedfs  # noqa: E402


@pytest.fixture(scope="session")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FinishedRun]:
    """The quickstart sample run once with --local, its artifacts copied to a local folder (file://)."""
    base = tmp_path_factory.mktemp("quickstart")
    document = sample("quickstart.yaml")
    artifacts = base / "artifacts"
    document["spec"]["output"] = {"uri": f"file://{artifacts}"}
    manifest = write_run(base / "quickstart.yaml", document)
    runs_dir = base / "runs"
    result = run_local(manifest, runs_dir, cwd=base, timeout=300)
    yield FinishedRun(result=result, runs_dir=runs_dir, folder=run_folder(runs_dir), artifacts=artifacts)


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real MLflow server (sqlite store); skipped only where its virtualenv is missing and this is not CI."""
    require_mlflow()
    server = start_mlflow(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()
