"""Registered models from the client's side: list the versions, download one and check it against its manifest.

``trainrun.Client.models`` and ``Client.download_model`` (and so ``trainrun models``) come here. The
registry is found, in this order: ``MLFLOW_TRACKING_URI`` in the environment (with ``MLFLOW_TRACKING_TOKEN``
or ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``), else a registry of the operator configuration by key (the
client's ``config``, else the cluster's ConfigMap ``trainrun-operator-config``; its default registry
when no key is given). The calls go through ``trainrun.registry`` (``asyncio.run`` at this synchronous
edge). A download fetches the version's source from object storage with the caller's storage settings
and checks every file against the manifest the version names (tag ``trainrun.manifest``): the copy the
operator verified, byte for byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainrun.base.registry import (
    MANIFEST_TAG,
    METRIC_TAG_PREFIX,
    NAMESPACE_TAG,
    RUN_TAG,
    RegistryError,
    VersionInfo,
)
from trainrun.client.errors import ClientError
from trainrun.registry import MlflowClient, MlflowCredentials, ModelRegistry, client_for
from trainrun.spec import OperatorConfig
from trainrun.storage.manifest import Manifest

Object = dict[str, Any]


def registry_client(config: OperatorConfig | None, key: str | None, env: Mapping[str, str]) -> tuple[str, ModelRegistry]:
    """(the registry's name as shown, its client) for ``key`` (see the module's docstring)."""
    uri = env.get("MLFLOW_TRACKING_URI")
    if key is None and uri:
        return uri, MlflowClient(uri, MlflowCredentials.from_env(env))
    if config is None:
        raise ClientError(
            "no model registry known: set MLFLOW_TRACKING_URI, or give the operator configuration (--config FILE)"
        )
    chosen, registry = config.registry_named(key)
    if registry is None or chosen is None:
        known = ", ".join(sorted(config.registries)) or "none are configured"
        named = f"unknown registry {key!r}" if key is not None else "no registry named and no defaultRegistry"
        raise ClientError(f"{named}; the operator configuration has: {known}")
    return chosen, client_for(registry, env)


def version_object(registry: str, version: VersionInfo) -> Object:
    """A version as the client returns it (plain data, JSON-ready)."""
    tags = version.tags
    run = f"{tags[NAMESPACE_TAG]}/{tags[RUN_TAG]}" if NAMESPACE_TAG in tags and RUN_TAG in tags else None
    metrics = {key.removeprefix(METRIC_TAG_PREFIX): value for key, value in tags.items() if key.startswith(METRIC_TAG_PREFIX)}
    return {
        "registry": registry,
        "name": version.name,
        "version": version.version,
        "source": version.source,
        "run": run,
        "metrics": metrics,
        "created": version.created,
        "manifest": tags.get(MANIFEST_TAG),
        "runId": version.run_id,
        "tags": dict(tags),
    }


def list_versions(config: OperatorConfig | None, name: str | None, *, registry: str | None = None) -> list[Object]:
    """Every version of the model ``name`` (of every model without one), oldest first."""
    shown, client = registry_client(config, registry, os.environ)

    async def fetch() -> list[VersionInfo]:
        async with client:
            return await client.search_versions(name)

    try:
        found = asyncio.run(fetch())
    except RegistryError as error:
        raise ClientError(str(error)) from None
    return [version_object(shown, item) for item in found]


def parse_reference(reference: str) -> tuple[str, str | None]:
    """``NAME[:VERSION]`` -> (name, version or None for the latest)."""
    name, _, version = reference.partition(":")
    if not name or (version and not version.isdigit()):
        raise ClientError(f"{reference!r} is not NAME or NAME:VERSION (e.g. quickstart:1)")
    return name, version or None


def download_version(config: OperatorConfig | None, reference: str, destination: Path, *, registry: str | None = None) -> Object:
    """Fetch a version's files into ``destination`` and check them against its manifest; the version."""
    name, wanted = parse_reference(reference)
    versions = list_versions(config, name, registry=registry)
    if not versions:
        raise ClientError(f"model {name!r} has no versions")
    chosen = versions[-1] if wanted is None else next((item for item in versions if item["version"] == wanted), None)
    if chosen is None:
        listed = ", ".join(item["version"] for item in versions)
        raise ClientError(f"model {name!r} has no version {wanted}; it has: {listed}")
    manifest_uri = chosen["manifest"]
    if not manifest_uri:
        raise ClientError(f"{name}:{chosen['version']} names no manifest (tag {MANIFEST_TAG}): it was not registered by trainrun")
    fetch_and_verify(chosen["source"], manifest_uri, destination)
    return chosen


def fetch_and_verify(source: str, manifest_uri: str, destination: Path) -> None:
    """Download ``source`` (the output, a folder in it or a file) and check each file's size and sha256
    against the manifest at ``manifest_uri`` (the output's root)."""
    from trainrun.storage import StorageOptions, download, parse_uri, read_manifest

    options = StorageOptions.from_env(os.environ)
    root = manifest_uri.rsplit("/", 1)[0]
    manifest = read_manifest(root, options=options)
    if manifest is None:
        raise ClientError(f"{manifest_uri} is missing: the copy cannot be verified")
    inside = source.rstrip("/")[len(root.rstrip("/")) :].strip("/") if source.rstrip("/").startswith(root.rstrip("/")) else None
    if inside is None:
        raise ClientError(f"the version's source {source} is not under its manifest's folder {root}")
    records = {record.path: record for record in manifest.files}
    single = inside in records
    download(parse_uri(source).uri, destination, options=options)
    if single:  # one object: it lands in the folder under its own name
        _check(destination / Path(inside).name, records[inside], inside)
        return
    wanted = {path: record for path, record in records.items() if not inside or path.startswith(f"{inside}/")}
    if not wanted:
        raise ClientError(f"{inside!r} is not in {manifest_uri}")
    for path, record in wanted.items():
        _check(destination / (path[len(inside) + 1 :] if inside else path), record, path)


def _check(path: Path, record: Any, name: str) -> None:
    if not path.is_file():
        raise ClientError(f"{name} is in the manifest but was not downloaded")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if path.stat().st_size != record.size or digest.hexdigest() != record.sha256:
        raise ClientError(f"{name} differs from the manifest (sha256 {digest.hexdigest()}, expected {record.sha256})")


__all__ = ["Manifest", "download_version", "list_versions", "parse_reference", "registry_client", "version_object"]
