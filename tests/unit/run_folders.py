"""Writes local run folders as the runner leaves them, without training: for the CLI's reading verbs.

``local_run(runs_dir, ...)`` makes ``<runs_dir>/<name>-<time>/`` with a manifest, a status, replica logs
and metric records, through ``trainrun.local.folder.RunFolder`` (the runner's own writer), so the
``--local`` verbs read it as they read a real run. The real runs are in tests/local.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from run_factory import document
from trainrun.local.folder import RunFolder
from trainrun.spec.status import TrainingRunStatus


def local_run(
    runs_dir: Path,
    *,
    name: str = "demo",
    folder_name: str | None = None,
    status: Mapping[str, Any] | None = None,
    logs: Mapping[str, Sequence[str]] | None = None,
    metrics: Sequence[Mapping[str, Any]] = (),
) -> RunFolder:
    """A finished (by default Completed) local run called name; folder_name fixes its folder's name."""
    if folder_name is None:
        folder = RunFolder.create(runs_dir, name)
    else:
        path = runs_dir / folder_name
        (path / "logs").mkdir(parents=True)
        (path / "outputs").mkdir()
        folder = RunFolder(path.resolve())
    manifest = document()
    manifest["metadata"] = {"name": name}
    folder.write_manifest(manifest)
    folder.write_status(TrainingRunStatus.model_validate(status or {"phase": "Completed"}))
    for replica, lines in (logs or {}).items():
        folder.log_path(replica).write_text("".join(f"{line}\n" for line in lines))
    if metrics:
        folder.metrics_path.write_text("".join(json.dumps(record) + "\n" for record in metrics))
    return folder
