"""Watch caches: the operator's in-memory view of its runs' children, kept current by watches.

Started by ``trainrun.controller.operator`` at start-up, one informer per kind and watched namespace:
list once, then watch from that version (bookmarks on, re-listed after a 410 or a broken watch, with a
jittered back-off), so a reconcile reads nothing from the API server that a watch already delivered.
Only the operator's own objects are watched (by the run label, server-side), and each object is kept as
a projection holding just the fields the plan reads (``trainrun.plan.projections``), so memory stays
small per run. Every change calls ``on_change(old, new)``; the owner's index (``ChildIndex``) maps it to
the run to reconcile.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from typing import Any

from trainrun.controller import telemetry
from trainrun.kube.aioclient import ApiError, AsyncKube, Resource

logger = logging.getLogger(__name__)

Object = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)
ChangeHandler = Callable[[Object | None, Object | None], None]
RELIST_BACKOFF_MAX_SECONDS = 30.0
NOT_SERVED_RETRY_SECONDS = 15.0


def key_of(obj: Mapping[str, Any]) -> Key:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


class Informer:
    """One kind in one namespace (None: all), filtered server-side, as projections by (namespace, name)."""

    def __init__(
        self,
        kube: AsyncKube,
        resource: Resource,
        namespace: str | None,
        *,
        project: Callable[[Mapping[str, Any]], Object],
        on_change: ChangeHandler,
        params: Mapping[str, str] | None = None,
        keep: Callable[[Mapping[str, Any]], bool] | None = None,
        watch_seconds: int = 300,
        when_absent: str | None = None,
        shape: type | None = None,
    ) -> None:
        self.kube = kube
        # What it means for the runs that the cluster does not serve the kind (an add-on not installed): said
        # once, at INFO, where the kind is optional; a kind the operator needs gets a warning.
        self.when_absent = when_absent
        self.resource = resource
        self.namespace = namespace
        self.project = project
        # The watch event's fields that ``project`` reads (``trainrun.plan.projections``): only those are decoded.
        self.shape = shape
        self.on_change = on_change
        self.params = dict(params or {})
        self.keep = keep
        self.watch_seconds = watch_seconds
        self.store: dict[Key, Object] = {}
        self.synced = asyncio.Event()
        self.served = True  # False while the API server does not serve the kind (its CRD is missing)
        self.on_served_change: Callable[[bool], None] | None = None
        self._changed = telemetry.WATCH_EVENTS.labels(resource=resource.plural, effect="changed")
        self._same = telemetry.WATCH_EVENTS.labels(resource=resource.plural, effect="same")

    @property
    def what(self) -> str:
        return f"{self.resource.plural} in {self.namespace or 'all namespaces'}"

    async def run(self) -> None:
        """List and watch until cancelled; every failure is retried, none ends the loop."""
        failures = 0
        while True:
            try:
                version = await self._list()
                failures = 0
                while True:
                    version = await self._watch(version)
            except asyncio.CancelledError:
                raise
            except ApiError as error:
                if error.status == 404:
                    self._set_served(False)
                    await asyncio.sleep(NOT_SERVED_RETRY_SECONDS * random.uniform(0.8, 1.2))
                    continue
                if error.status == 410:
                    continue  # the version is too old: list again at once
                failures += 1
                delay = min(RELIST_BACKOFF_MAX_SECONDS, 0.5 * 2**failures) * random.uniform(0.5, 1.0)
                logger.warning("watching %s: %s; listing again in %.0f s", self.what, error, delay)
                await asyncio.sleep(delay)
            except (ValueError, TypeError, KeyError) as error:  # an answer of a shape not expected
                failures += 1
                logger.warning("watching %s: unreadable answer (%s: %s); listing again", self.what, type(error).__name__, error)
                await asyncio.sleep(min(RELIST_BACKOFF_MAX_SECONDS, 0.5 * 2**failures))

    def _set_served(self, served: bool) -> None:
        if served != self.served:
            self.served = served
            if not served and self.when_absent is not None:
                logger.info(
                    "the cluster does not serve %s: %s; looking again every %.0f s",
                    self.resource.plural, self.when_absent, NOT_SERVED_RETRY_SECONDS,
                )
            elif not served:
                logger.warning("the API server does not serve %s; retrying", self.resource.plural)
                for obj in list(self.store.values()):
                    self._remove(obj)
            if self.on_served_change is not None:
                self.on_served_change(served)
        if not served:
            self.synced.set()  # nothing to wait for: there is nothing of this kind

    async def _list(self) -> str:
        items, version = await self.kube.list(self.resource, self.namespace, params=self.params, shape=self.shape)
        self._set_served(True)
        fresh: dict[Key, Object] = {}
        for item in items:
            if self.keep is None or self.keep(item):
                projected = self.project(item)
                fresh[key_of(projected)] = projected
        for key, gone in list(self.store.items()):
            if key not in fresh:
                self._remove(gone)
        for key, new in fresh.items():
            old = self.store.get(key)
            if old != new:
                self.store[key] = new
                self.on_change(old, new)
        self.synced.set()
        return version

    async def _watch(self, version: str) -> str:
        """Watch from version until the server ends the watch; the version reached."""
        timeout = int(self.watch_seconds * random.uniform(0.8, 1.2))
        async for kind, obj in self.kube.watch(
            self.resource, self.namespace, resource_version=version, params=self.params, timeout_seconds=timeout, shape=self.shape
        ):
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if kind == "BOOKMARK":
                self._same.inc()
                continue
            if kind == "DELETED" or (self.keep is not None and not self.keep(obj)):
                old = self.store.get(key_of(obj))
                if old is not None:
                    self._remove(old)
                (self._changed if old is not None else self._same).inc()
                continue
            projected = self.project(obj)
            key = key_of(projected)
            old = self.store.get(key)
            if old != projected:
                self.store[key] = projected
                self.on_change(old, projected)
                self._changed.inc()
            else:
                self._same.inc()
        return version

    def _remove(self, old: Object) -> None:
        self.store.pop(key_of(old), None)
        self.on_change(old, None)
