"""The operator's own Prometheus metrics and probes, served on ``$TRAINRUN_METRICS_PORT``.

``/metrics`` (Prometheus), ``/healthz`` (liveness: the event loop answers) and ``/readyz`` (readiness:
every watch cache has synced; a standby replica is ready too, since it takes over warm). Served by an
aiohttp server on kopf's event loop (no thread of its own), started by ``trainrun.controller.handlers``;
counted by the controller (``trainrun.controller.operator``: reconcile time and outcome, phase changes,
log followers) and the leader election (``leader``). Its own registry, so only these are served.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

METRICS_PORT_ENV = "TRAINRUN_METRICS_PORT"

REGISTRY = CollectorRegistry()
RECONCILES = Counter(
    "trainrun_reconciles",
    "Reconciles of TrainingRuns, by what started them (watch) and how they ended (ok, error).",
    ["trigger", "result"],
    registry=REGISTRY,
)
WATCH_EVENTS = Counter(
    "trainrun_watch_events",
    "Changes the operator's watches delivered, by resource and whether they changed what it keeps of the object "
    "(changed) or not (same: a field it does not read, a bookmark, an Event it does not keep).",
    ["resource", "effect"],
    registry=REGISTRY,
)
RUN_EVENTS_SKIPPED = Counter(
    "trainrun_run_events_skipped",
    "TrainingRun changes that queued no reconcile: only their resourceVersion differed from the cached body "
    "(the watch bringing back the operator's own status write).",
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "trainrun_reconcile_duration_seconds",
    "Time one reconcile of a TrainingRun took, API calls included.",
    registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
PHASE_CHANGES = Counter(
    "trainrun_phase_changes",
    "TrainingRuns that entered each phase (Queued, Preparing, Running, Uploading, Completed, Failed, ...).",
    ["phase"],
    registry=REGISTRY,
)
LOG_FOLLOWERS = Gauge(
    "trainrun_log_followers",
    "Active runs whose replica logs the operator is following now.",
    registry=REGISTRY,
)
LEADER = Gauge(
    "trainrun_leader",
    "1 while this replica holds the leader Lease (and so reconciles), 0 while it stands by.",
    registry=REGISTRY,
)


def port_from_env(environ: dict[str, str] | None = None) -> int | None:
    """The port ``$TRAINRUN_METRICS_PORT`` names (none: nothing is served)."""
    value = (environ if environ is not None else dict(os.environ)).get(METRICS_PORT_ENV, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{METRICS_PORT_ENV}={value!r} is not a port number; set it to e.g. 9090") from None


async def serve(port: int, *, ready: Callable[[], bool]) -> web.AppRunner:
    """Serve /metrics, /healthz and /readyz on all interfaces; the runner, to clean it up."""

    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(REGISTRY))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n") if ready() else web.Response(status=503, text="watch caches not synced\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, port=port).start()
    return runner
