"""Fixtures of the local-mode tests, above all one real quickstart run shared by the tests that read it.

The quickstart sample trains once per test session (about 25 s on 2 cores).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from localrun import FinishedRun, run_folder, run_local, sample, write_run  # noqa: E402


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
