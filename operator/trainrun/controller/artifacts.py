"""The operator's side of the artifact copy: credentials from the run's Secret, the manifest, the log archive.

After the uploader Job succeeds, :meth:`ArtifactReader.read_manifest` fetches ``<output>/manifest.json``
(written last, so its presence proves a complete copy) and turns it into what the plan records as
``status.artifacts``; a succeeded Job without a manifest is reported, never taken as done. When a run
ends, the log follower's per-replica files go to ``<output>/logs/``. Called by the controller
(``trainrun.controller.operator``) on kopf's loop; the object-store calls run in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from pathlib import Path

from trainrun.kube.aioclient import SECRETS, ApiError, AsyncKube
from trainrun.plan import ManifestRead
from trainrun.spec.model import TrainingRun
from trainrun.spec.status import Artifacts
from trainrun.storage import StorageError, StorageOptions, parse_uri, read_manifest, upload_file
from trainrun.storage.manifest import MANIFEST_NAME

logger = logging.getLogger(__name__)


class ArtifactReader:
    """Reads manifests and writes log archives with the credentials the run names."""

    def __init__(self, kube: AsyncKube) -> None:
        self.kube = kube

    async def storage_options(self, run: TrainingRun) -> StorageOptions:
        """Options from the Secret in ``spec.output.secretName`` (its keys are env names); defaults without one."""
        secret_name = run.spec.output.secret_name
        if secret_name is None:
            return StorageOptions()
        secret = await self.kube.get(SECRETS, run.metadata.namespace, secret_name)
        if secret is None:
            raise StorageError(f"Secret {secret_name!r} (spec.output.secretName) is not in namespace {run.metadata.namespace}")
        decoded = {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}
        decoded.update(secret.get("stringData") or {})
        return StorageOptions.from_env(decoded)

    async def read_manifest(self, run: TrainingRun) -> ManifestRead:
        """What the copy recorded, or why it cannot be trusted (the uploader has succeeded)."""
        uri = run.spec.output.uri
        if uri is None:
            return ManifestRead(None, None)
        manifest_uri = parse_uri(uri).child(MANIFEST_NAME).uri
        try:
            options = await self.storage_options(run)
            manifest = await asyncio.to_thread(read_manifest, uri, options=options)
        except (StorageError, ApiError, ValueError) as error:
            return ManifestRead(
                None, f"the uploader finished but {manifest_uri} cannot be read, so the copy is not verified: {error}"
            )
        if manifest is None:
            return ManifestRead(None, f"the uploader finished but wrote no {manifest_uri}, so the copy is not complete")
        artifacts = Artifacts(
            uri=uri, manifest_uri=manifest_uri, file_count=manifest.file_count, bytes=manifest.total_bytes
        )
        return ManifestRead(artifacts)

    async def archive_logs(self, run: TrainingRun, files: list[Path]) -> None:
        """Copy each replica's log to ``<output>/logs/<replica>.log``; failures are logged, not raised."""
        uri = run.spec.output.uri
        if uri is None or not files:
            return
        location = parse_uri(uri)
        try:
            options = await self.storage_options(run)
            for path in files:
                await asyncio.to_thread(upload_file, path, location.child(f"logs/{path.name}").uri, options=options)
        except (StorageError, ApiError, OSError) as error:
            logger.warning("archiving the logs of %s to %s failed: %s", run.metadata.name, uri, error)
