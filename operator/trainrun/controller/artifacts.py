"""The operator's side of the artifact copy: credentials from the run's Secret, the manifest, the log archive.

After the uploader Job succeeds, :meth:`ArtifactReader.read` fetches ``<output>/manifest.json`` (written
last, so its presence proves a complete copy) and turns it into ``status.artifacts``; a succeeded Job
without a manifest is reported, never taken as done. When a run ends, the log follower's per-replica
files go to ``<output>/logs/``. Called by the reconciler and the log daemon.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainrun.kube import KubeApi, KubeError
from trainrun.spec.model import TrainingRun
from trainrun.spec.status import Artifacts, TrainingRunStatus
from trainrun.status.observe import UploadState, observe_uploader
from trainrun.storage import StorageError, StorageOptions, parse_uri, read_manifest, upload_file
from trainrun.storage.manifest import MANIFEST_NAME

logger = logging.getLogger(__name__)


class ArtifactReader:
    """Reads manifests and writes log archives with the credentials the run names."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api

    def storage_options(self, run: TrainingRun) -> StorageOptions:
        """Options from the Secret in ``spec.output.secretName`` (its keys are env names); defaults without one."""
        secret_name = run.spec.output.secret_name
        if secret_name is None:
            return StorageOptions()
        secret = self.api.get("v1", "Secret", secret_name, run.metadata.namespace)
        if secret is None:
            raise StorageError(f"Secret {secret_name!r} (spec.output.secretName) is not in namespace {run.metadata.namespace}")
        decoded = {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}
        decoded.update(secret.get("stringData") or {})
        return StorageOptions.from_env(decoded)

    def read(
        self, run: TrainingRun, uploader: Mapping[str, Any] | None, previous: TrainingRunStatus
    ) -> tuple[Artifacts | None, str | None]:
        """(artifacts, problem): what the copy recorded once the uploader succeeded, or why it cannot be trusted."""
        if previous.artifacts is not None:
            return previous.artifacts, None
        uri = run.spec.output.uri
        upload = observe_uploader(uploader, [])
        if uri is None or upload is None or upload.state is not UploadState.SUCCEEDED:
            return None, None
        manifest_uri = parse_uri(uri).child(MANIFEST_NAME).uri
        try:
            manifest = read_manifest(uri, options=self.storage_options(run))
        except (StorageError, KubeError, ValueError) as error:
            return None, f"the uploader finished but {manifest_uri} cannot be read, so the copy is not verified: {error}"
        if manifest is None:
            return None, f"the uploader finished but wrote no {manifest_uri}, so the copy is not complete"
        return (
            Artifacts(uri=uri, manifest_uri=manifest_uri, file_count=manifest.file_count, bytes=manifest.total_bytes),
            None,
        )

    def archive_logs(self, run: TrainingRun, files: list[Path]) -> None:
        """Copy each replica's log to ``<output>/logs/<replica>.log``; failures are logged, not raised."""
        uri = run.spec.output.uri
        if uri is None or not files:
            return
        location = parse_uri(uri)
        try:
            options = self.storage_options(run)
            for path in files:
                upload_file(path, location.child(f"logs/{path.name}").uri, options=options)
        except (StorageError, KubeError, OSError) as error:
            logger.warning("archiving the logs of %s to %s failed: %s", run.metadata.name, uri, error)
