"""Model registries and experiment trackers: the clients that talk to them (the only code that does).

A registry of the operator configuration (``registries``: ``trainrun.spec.config.Registry``) becomes a
client with :func:`client_for`; its type is the seam: ``mlflow`` (:mod:`.mlflow`, MLflow's REST API 2.0
on aiohttp) is the one there is. Callers: the controller (``trainrun.controller.registration``, on kopf's
loop), the local runner and the CLI/client (``trainrun models``) through ``asyncio.run`` at their edge.
What is asked and answered is plain data in ``trainrun.base.registry``; request bodies are built by pure
functions in :mod:`.mlflow`, unit-tested without a server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from trainrun.base.registry import (
    DIGEST_TAG,
    RegistryError,
    RegistryRefused,
    RegistryUnavailable,
    VersionInfo,
    VersionRequest,
    manifest_digest,
    path_problem,
)
from trainrun.registry.mlflow import MlflowClient, MlflowCredentials
from trainrun.spec.config import Registry

ModelRegistry = MlflowClient  # the one type today; a second one adds a Protocol here


def client_for(registry: Registry, env: Mapping[str, str]) -> ModelRegistry:
    """A client of ``registry`` with the credentials in ``env`` (the Secret's keys, or the environment)."""
    return MlflowClient(registry.uri, MlflowCredentials.from_env(env))


@dataclass(frozen=True)
class Registered:
    """What registering a verified copy brought: the version (``created`` False: found again by the run's
    uid), or the refusal's words."""

    version: VersionInfo | None = None
    refused: str | None = None
    created: bool = False


async def register_copy(
    client: ModelRegistry,
    request: VersionRequest,
    *,
    manifest_paths: Sequence[str],
    manifest_json: bytes,
    manifest_uri: str,
    path: str | None,
    field: str = "spec.output.register",
) -> Registered:
    """Register the run's model from its verified copy: the model's path must be in the manifest, whose digest
    joins the version's tags. A registry that answers no is a refusal; one that cannot be reached raises
    ``RegistryUnavailable`` (the caller tries again)."""
    problem = path_problem(manifest_paths, path, manifest_uri, field=field)
    if problem is not None:
        return Registered(refused=problem)
    tagged = replace(request, tags=(*request.tags, (DIGEST_TAG, manifest_digest(manifest_json))))
    try:
        version, created = await client.register(tagged)
    except RegistryRefused as error:
        return Registered(refused=str(error))
    return Registered(version=version, created=created)


__all__ = [
    "Registered",
    "register_copy",
    "ModelRegistry",
    "MlflowClient",
    "MlflowCredentials",
    "RegistryError",
    "RegistryRefused",
    "RegistryUnavailable",
    "VersionInfo",
    "VersionRequest",
    "client_for",
]
