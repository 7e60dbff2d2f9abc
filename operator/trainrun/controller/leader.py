"""Leader election on a ``coordination.k8s.io`` Lease: of the operator's replicas, one acts at a time.

Started by ``trainrun.controller.operator`` on kopf's event loop. Every replica keeps its watch caches
warm; only the holder of the Lease reconciles and follows logs, so a standby takes over with its
caches already synced. The algorithm is client-go's: the holder renews every ``retry`` seconds and
steps down when it could not renew for ``renew_deadline``; a candidate takes the Lease when it has seen
no renewal for ``lease_duration`` by its own clock (never comparing clocks across machines), through an
update with the Lease's resourceVersion, so two candidates cannot both win. On a clean shutdown the
holder releases the Lease, and the standby takes over at its next try.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from trainrun.kube.aioclient import LEASES, ApiError, AsyncKube

logger = logging.getLogger(__name__)

LEASE_NAME = "trainrun-operator"


@dataclass(frozen=True)
class Timing:
    """Seconds; controller-runtime uses 15/10/2. A shorter lease makes takeover after a crash faster."""

    lease_duration: float = 10.0
    renew_deadline: float = 7.0
    retry: float = 2.0


def _micro_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Holds or waits for the Lease; ``on_change(True|False)`` is called when leadership starts or ends."""

    def __init__(
        self,
        kube: AsyncKube,
        *,
        namespace: str,
        identity: str,
        on_change: Callable[[bool], None],
        timing: Timing | None = None,
        name: str = LEASE_NAME,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.identity = identity
        self.name = name
        self.on_change = on_change
        self.timing = timing or Timing()
        self.leading = False
        self._observed: tuple[str, float] | None = None  # (the record as last seen, when by our clock)
        self._last_renewal = 0.0

    async def run(self) -> None:
        """Try to acquire or renew every ``retry`` seconds until cancelled."""
        while True:
            try:
                await self._try_acquire_or_renew()
            except ApiError as error:
                logger.warning("leader election: %s", error)
            if self.leading and time.monotonic() - self._last_renewal > self.timing.renew_deadline:
                logger.warning("could not renew the Lease %s/%s in time: standing by", self.namespace, self.name)
                self._set_leading(False)
            await asyncio.sleep(self.timing.retry)

    async def release(self) -> None:
        """Give the Lease up (on shutdown), so a standby need not wait for it to expire."""
        if not self.leading:
            return
        self._set_leading(False)
        try:
            lease = await self.kube.get(LEASES, self.namespace, self.name)
            if lease is not None and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = None
                lease["spec"]["leaseDurationSeconds"] = 1
                await self.kube.update(LEASES, self.namespace, self.name, lease)
                logger.info("released the Lease %s/%s", self.namespace, self.name)
        except ApiError as error:
            logger.warning("could not release the Lease: %s", error)

    def _record(self, lease: dict[str, Any]) -> str:
        spec = lease.get("spec") or {}
        return f"{spec.get('holderIdentity')}|{spec.get('renewTime')}|{spec.get('leaseDurationSeconds')}"

    async def _try_acquire_or_renew(self) -> None:
        now = time.monotonic()
        lease = await self.kube.get(LEASES, self.namespace, self.name)
        spec_now = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.timing.lease_duration),
            "renewTime": _micro_time(),
        }
        if lease is None:
            created = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {**spec_now, "acquireTime": _micro_time(), "leaseTransitions": 0},
            }
            try:
                await self.kube.create(LEASES, self.namespace, created)
            except ApiError as error:
                if error.status == 409:
                    return  # another replica created it first
                raise
            self._renewed(now)
            return
        spec = lease.setdefault("spec", {})
        record = self._record(lease)
        if self._observed is None or self._observed[0] != record:
            self._observed = (record, now)
        holder = spec.get("holderIdentity")
        duration = float(spec.get("leaseDurationSeconds") or self.timing.lease_duration)
        if holder and holder != self.identity and now - self._observed[1] < duration:
            if self.leading:
                self._set_leading(False)
            return
        if holder != self.identity:
            spec["acquireTime"] = _micro_time()
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(spec_now)
        try:
            await self.kube.update(LEASES, self.namespace, self.name, lease)  # carries resourceVersion
        except ApiError as error:
            if error.status == 409:
                return  # someone else wrote it in between: look again next time
            raise
        self._renewed(now)

    def _renewed(self, now: float) -> None:
        self._last_renewal = now
        if not self.leading:
            logger.info("leading: holding the Lease %s/%s as %s", self.namespace, self.name, self.identity)
            self._set_leading(True)

    def _set_leading(self, leading: bool) -> None:
        if leading != self.leading:
            self.leading = leading
            self.on_change(leading)
