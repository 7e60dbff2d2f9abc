"""The operator's side of model registration: one try of a :class:`~trainrun.status.work.Register`.

The plan asks for it once the copy is verified; the controller (``trainrun.controller.operator``) runs
:meth:`Registrar.register` as a task on kopf's loop and keeps what it brings as a fact for the next
plan (``Attempts[Registration]``): the version, or a refusal. Here: read the copy's manifest with the
run's credentials, check that the model's path is in it (a file, or a folder with files), add the
manifest's digest to the version's tags, read the registry's credentials (the Secret its configuration
names, in the operator's namespace) and register through ``trainrun.registry`` (found by the run's uid
first, so never twice). A registry or store that cannot be reached raises (tried again with back-off).
"""

from __future__ import annotations

import asyncio
import base64
import logging

from trainrun.base.registry import RegistryUnavailable
from trainrun.controller.artifacts import ArtifactReader
from trainrun.kube.aioclient import SECRETS, ApiError, AsyncKube
from trainrun.registry import client_for, register_copy
from trainrun.spec import OperatorConfig, TrainingRun
from trainrun.spec.config import Registry
from trainrun.spec.status import ModelVersion
from trainrun.status.work import Register, Registration
from trainrun.storage import StorageError, read_manifest

logger = logging.getLogger(__name__)


class Registrar:
    """Registers runs' models with the credentials of the run (storage) and of the registry (its Secret)."""

    def __init__(self, kube: AsyncKube, artifacts: ArtifactReader, *, operator_namespace: str) -> None:
        self.kube = kube
        self.artifacts = artifacts
        self.operator_namespace = operator_namespace

    async def register(self, run: TrainingRun, work: Register, config: OperatorConfig) -> Registration:
        registry = config.registries.get(work.registry)
        if registry is None:
            known = ", ".join(sorted(config.registries)) or "none are configured"
            return Registration(refused=f"{work.field}.registry: unknown registry {work.registry!r}; the operator knows: {known}")
        uri = run.spec.output.uri
        if uri is None:
            return Registration(refused=f"{work.field}: {run.metadata.name} has no spec.output.uri, so there is no copy to register")
        try:
            options = await self.artifacts.storage_options(run)
            manifest = await asyncio.to_thread(read_manifest, uri, options=options)
        except (StorageError, ApiError) as error:
            raise StorageError(f"cannot read {work.manifest_uri} to register the model: {error}") from None
        if manifest is None:
            raise StorageError(f"{work.manifest_uri} is gone: the copy cannot be registered")
        env = await registry_env(self.kube, self.operator_namespace, work.registry, registry)
        async with client_for(registry, env) as client:
            done = await register_copy(
                client,
                work.request,
                manifest_paths=[record.path for record in manifest.files],
                manifest_json=manifest.to_json(),
                manifest_uri=work.manifest_uri,
                path=work.path,
                field=work.field,
            )
        version, created = done.version, done.created
        if version is None:
            return Registration(refused=done.refused)
        logger.info(
            "%s model %s version %s for run %s/%s",
            "registered" if created else "found the version registered before of",
            version.name,
            version.version,
            run.metadata.namespace,
            run.metadata.name,
        )
        return Registration(model=ModelVersion(registry=work.registry, name=version.name, version=version.version, uri=version.source))


async def registry_env(kube: AsyncKube, namespace: str, key: str, registry: Registry) -> dict[str, str]:
    """The registry's credentials: its Secret (in the operator's namespace ``namespace``) as env keys; none
    without one. Raises RegistryUnavailable while the Secret cannot be read (it may be created later)."""
    if registry.secret_name is None:
        return {}
    try:
        secret = await kube.get(SECRETS, namespace, registry.secret_name)
    except ApiError as error:
        raise RegistryUnavailable(f"cannot read Secret {registry.secret_name!r} of registry {key}: {error}") from None
    if secret is None:
        raise RegistryUnavailable(
            f"Secret {registry.secret_name!r} of registry {key} (registries.{key}.secretName) is not in namespace {namespace}"
        )
    decoded = {name: base64.b64decode(value).decode() for name, value in (secret.get("data") or {}).items()}
    return {**decoded, **(secret.get("stringData") or {})}
