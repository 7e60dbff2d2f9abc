"""Model registries and experiment trackers: the clients that talk to them (the only code that does).

A registry of the operator configuration (``registries``: ``trainrun.spec.config.Registry``) becomes a
client with :func:`client_for`; its type is the seam: ``mlflow`` (:mod:`.mlflow`, MLflow's REST API 2.0
on aiohttp) is the one there is. Callers: the controller (``trainrun.controller.registration``, on kopf's
loop), the local runner and the CLI/client (``trainrun models``) through ``asyncio.run`` at their edge.
What is asked and answered is plain data in ``trainrun.base.registry``; request bodies are built by pure
functions in :mod:`.mlflow`, unit-tested without a server.
"""

from __future__ import annotations

from collections.abc import Mapping

from trainrun.base.registry import RegistryError, RegistryRefused, RegistryUnavailable, VersionInfo, VersionRequest
from trainrun.registry.mlflow import MlflowClient, MlflowCredentials
from trainrun.spec.config import Registry

ModelRegistry = MlflowClient  # the one type today; a second one adds a Protocol here


def client_for(registry: Registry, env: Mapping[str, str]) -> ModelRegistry:
    """A client of ``registry`` with the credentials in ``env`` (the Secret's keys, or the environment)."""
    return MlflowClient(registry.uri, MlflowCredentials.from_env(env))


__all__ = [
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
