"""The kopf handlers of the operator: thin wiring from Kubernetes events to :class:`Reconciler`.

Started by ``kopf run --standalone --all-namespaces -m trainrun.controller.handlers`` (the operator
Deployment, and the integration tests). Every handler ends in the same idempotent reconcile, so the
order and number of triggers never matter: a TrainingRun's create/resume/update, an event of any child
it owns (its pods, its uploader Job), and a periodic resync while the run is active. A daemon per
active run follows its logs. Errors talking to the API are retried by kopf with a delay; a bad spec or
a missing training-operator becomes a Stalled condition, never a crash loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import kopf

from trainrun.controller import telemetry
from trainrun.controller.artifacts import ArtifactReader
from trainrun.controller.logs import LogFollower
from trainrun.controller.reconcile import Reconciler
from trainrun.kube import KubeApi, KubeError
from trainrun.render.children import RUN_LABEL
from trainrun.spec import InvalidTrainingRun, load_training_run
from trainrun.spec.model import GROUP, PLURAL, VERSION
from trainrun.spec.status import Phase

logger = logging.getLogger(__name__)

RESYNC_SECONDS = 10.0
RETRY_DELAY_SECONDS = 10
# kopf's executor threads for the sync handlers (each reconcile holds one for a few API calls).
HANDLER_THREADS = 16
_state: dict[str, Reconciler] = {}


def reconciler() -> Reconciler:
    """The process-wide reconciler, made on first use (after kopf's login)."""
    if "reconciler" not in _state:
        _state["reconciler"] = Reconciler(KubeApi())
    return _state["reconciler"]


def is_active(status: Mapping[str, Any], **_: Any) -> bool:
    """Runs that can still change: no phase yet, or a phase that is not finished."""
    phase = status.get("phase")
    return phase is None or not Phase(phase).finished


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Keep kopf's bookkeeping in annotations, so status holds only what users read."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 120
    settings.execution.max_workers = HANDLER_THREADS
    port = telemetry.serve_from_env()
    if port is not None:
        logger.info("serving Prometheus metrics on :%d/metrics", port)


def _reconcile(body: Mapping[str, Any], *, trigger: str) -> None:
    with _counted(trigger):
        try:
            reconciler().reconcile(body)
        except KubeError as error:
            raise kopf.TemporaryError(str(error), delay=RETRY_DELAY_SECONDS) from error


@contextlib.contextmanager
def _counted(trigger: str) -> Iterator[None]:
    """Time a reconcile and count it by trigger and outcome."""
    started = time.monotonic()
    result = "error"
    try:
        yield
        result = "ok"
    finally:
        telemetry.RECONCILE_SECONDS.observe(time.monotonic() - started)
        telemetry.RECONCILES.labels(trigger=trigger, result=result).inc()


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def on_run_changed(body: kopf.Body, **_: Any) -> None:
    """A run was created, changed, or found at start-up: converge it."""
    _reconcile(body, trigger="change")


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_SECONDS, when=is_active)
def resync(body: kopf.Body, **_: Any) -> None:
    """A periodic level-based check, so nothing depends on catching every event."""
    _reconcile(body, trigger="resync")


# Pods (and the uploader's Job) change whenever their PyTorchJob does. The PyTorchJob itself is not
# watched: kopf ends the whole operator when a watched kind's CRD is removed mid-watch (a
# training-operator upgrade does that), and the timer below notices job-only changes anyway.
@kopf.on.event("", "v1", "pods", labels={RUN_LABEL: kopf.PRESENT})
@kopf.on.event("batch", "v1", "jobs", labels={RUN_LABEL: kopf.PRESENT})
def on_child_event(labels: kopf.Labels, namespace: str | None, type: str, **_: Any) -> None:
    """A child changed: converge its run right away instead of waiting for the resync."""
    if not type or namespace is None:  # the initial listing (no type): the runs' resume handlers cover it
        return
    try:
        with _counted("child"):
            reconciler().reconcile_named(namespace, labels[RUN_LABEL])
    except KubeError as error:
        logger.warning("reconcile after a child event failed (the resync retries): %s", error)


@kopf.daemon(GROUP, VERSION, PLURAL, when=is_active, cancellation_timeout=30)
async def follow_logs(stopped: kopf.DaemonStopped, body: kopf.Body, **_: Any) -> None:
    """Follow the replicas' logs while the run is active, then archive them next to the artifacts.

    The follower blocks (one thread per log stream, plus its own loop), so it gets a thread of its
    own: a sync daemon would hold one of kopf's executor threads for the run's whole life, and with
    more active runs than ``max_workers`` no other handler (creates, child events, resyncs) would run.
    """
    try:
        run = load_training_run(body)
    except InvalidTrainingRun:
        return  # the reconcile reports the problem; there is nothing to follow
    api = reconciler().api
    follower = LogFollower(api, run)
    stop = threading.Event()
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()

    def follow_then_archive() -> None:
        try:
            follower.follow(stop)
            ArtifactReader(api).archive_logs(run, follower.log_files())
        finally:
            with contextlib.suppress(RuntimeError):  # the loop has closed: the operator is exiting
                loop.call_soon_threadsafe(_settle, finished)

    threading.Thread(target=follow_then_archive, name=f"logs-{run.metadata.name}", daemon=True).start()
    telemetry.LOG_FOLLOWERS.inc()
    stopping = asyncio.ensure_future(_until(stopped))
    try:
        await asyncio.wait({stopping, finished}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        stop.set()
        telemetry.LOG_FOLLOWERS.dec()
    await finished


async def _until(stopped: kopf.DaemonStopped) -> None:
    await stopped.wait()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
