"""The operator's side of the artifact copy: credentials for the run's storage, the manifest with the logs in it.

After the uploader Job succeeds and the log follower sealed the run's log archive into ``<output>/logs/``,
:meth:`ArtifactReader.read_manifest` adds the composed logs to ``<output>/manifest.json`` (written by the
uploader, last, so its presence proves a complete copy) and turns it into what the plan records as
``status.artifacts``; a succeeded Job without a manifest is reported, never taken as done. Called by the
controller (``trainrun.controller.operator``) in tasks on kopf's loop: what they bring is a fact for the plan.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os

from trainrun.kube.aioclient import SECRETS, ApiError, AsyncKube
from trainrun.spec.model import TrainingRun
from trainrun.spec.status import Artifacts
from trainrun.storage import StorageError, StorageOptions, parse_uri, read_manifest
from trainrun.storage.logstore import LogArchive, add_to_manifest
from trainrun.storage.manifest import MANIFEST_NAME, Manifest

logger = logging.getLogger(__name__)


class ArtifactReader:
    """Reads manifests and opens log archives with the credentials the run names."""

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

    async def archive_options(self, run: TrainingRun) -> StorageOptions:
        """Credentials for the run's log archive: the run's own beside its outputs, else the operator's
        environment (the default location of the operator configuration's ``logs.defaultUri``)."""
        if run.spec.output.uri is not None:
            return await self.storage_options(run)
        return StorageOptions.from_env(os.environ)

    async def read_manifest(self, run: TrainingRun, log_archive: str | None) -> Artifacts:
        """What the copy recorded, with the sealed logs of ``log_archive`` added to it (the uploader has
        succeeded); raises ``StorageError`` saying why the copy cannot be trusted yet."""
        uri = run.spec.output.uri
        if uri is None:
            raise StorageError("the run has no spec.output.uri: there is no copy to verify")
        manifest_uri = parse_uri(uri).child(MANIFEST_NAME).uri
        manifest: Manifest | None
        try:
            options = await self.storage_options(run)
            if log_archive is not None:
                logs = await LogArchive(log_archive, options).load()
                manifest = await add_to_manifest(uri, options, logs.files)
            else:
                manifest = await asyncio.to_thread(read_manifest, uri, options=options)
        except (StorageError, ApiError, ValueError) as error:
            raise StorageError(
                f"the uploader finished but {manifest_uri} cannot be read, so the copy is not verified: {error}"
            ) from None
        if manifest is None:
            raise StorageError(f"the uploader finished but wrote no {manifest_uri}, so the copy is not complete")
        return Artifacts(uri=uri, manifest_uri=manifest_uri, file_count=manifest.file_count, bytes=manifest.total_bytes)
