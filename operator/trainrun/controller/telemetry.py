"""The operator's own Prometheus metrics, served on ``$TRAINRUN_METRICS_PORT`` at ``/metrics``.

Started by ``trainrun.controller.handlers`` at start-up; counted by the handlers (reconcile time and
outcome, log followers) and by ``trainrun.controller.reconcile`` (phase changes). Platform teams scrape
them as they scrape any controller: a Prometheus ``PodMonitor`` or the ``prometheus.io/*`` annotations
on the operator's pod (manifests/base/deployment.yaml). Its own registry, so only these are served.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

METRICS_PORT_ENV = "TRAINRUN_METRICS_PORT"

REGISTRY = CollectorRegistry()
RECONCILES = Counter(
    "trainrun_reconciles",
    "Reconciles of TrainingRuns, by what started them and how they ended (ok, error).",
    ["trigger", "result"],
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


def serve_from_env(environ: dict[str, str] | None = None) -> int | None:
    """Serve /metrics on the port ``$TRAINRUN_METRICS_PORT`` names (none: not served); the port."""
    value = (environ if environ is not None else dict(os.environ)).get(METRICS_PORT_ENV, "").strip()
    if not value:
        return None
    try:
        port = int(value)
    except ValueError:
        raise ValueError(f"{METRICS_PORT_ENV}={value!r} is not a port number; set it to e.g. 9090") from None
    start_http_server(port, registry=REGISTRY)
    return port
