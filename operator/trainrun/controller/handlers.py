"""The kopf wiring of the operator: login, start-up, the TrainingRun and TrainingSweep watches, clean-up.

Loaded by ``trainrun.controller.__main__`` (``trainrun-operator``, what the Deployment runs), which sets
:data:`options` first. kopf watches the TrainingSweeps and hands every event to the
:class:`~trainrun.controller.sweeps.SweepController`; the :class:`~trainrun.controller.operator.Controller`
watches the TrainingRuns itself, as it watches their children (kopf's worker per object and its own decoding of
every event held more memory per run than a watch cache's projection: tests/bench/README.md). Everything
else (the watch caches, the work queues, leader election, log followers, the metrics and probe server) runs
as tasks on kopf's event loop, started here at start-up and stopped at clean-up. One Lease makes one leader of both
controllers. Handlers only watch: kopf writes nothing to the runs or the sweeps.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import kopf

from trainrun.controller import telemetry
from trainrun.controller.leader import LeaderElector
from trainrun.controller.operator import Controller
from trainrun.controller.sweeps import SweepController
from trainrun.kube.aioclient import ApiError, AsyncKube, Credentials
from trainrun.spec.model import GROUP, PLURAL, VERSION
from trainrun.spec.sweep import SWEEP_PLURAL

logger = logging.getLogger(__name__)


@dataclass
class Options:
    """How the operator was started (``trainrun-operator --help``)."""

    namespaces: list[str] = field(default_factory=list)  # empty: all namespaces
    leader_election: bool = True
    identity: str = field(default_factory=lambda: os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}")
    operator_namespace: str = field(default_factory=lambda: os.environ.get("TRAINRUN_OPERATOR_NAMESPACE", "trainrun-system"))


@dataclass
class _Running:
    credentials: Credentials | None = None
    controller: Controller | None = None
    sweeps: SweepController | None = None
    elector: LeaderElector | None = None
    kube: AsyncKube | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    server: Any = None
    logged_in: asyncio.Event = field(default_factory=asyncio.Event)


options = Options()
_running = _Running()


@kopf.on.login()
async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's own ways (in-cluster service account, else the kubeconfig); the operator's client shares them."""
    info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    if info is not None:
        secure = info.server.startswith("https")
        authorization = info.as_http_headers().get("Authorization")
        requests_ssl = info.as_ssl_context() if secure else False
        if isinstance(requests_ssl, ssl.SSLContext):
            requests_ssl.set_alpn_protocols(["http/1.1"])  # aiohttp speaks HTTP/1.1 only
        _running.credentials = Credentials(
            server=info.server,
            ssl=requests_ssl,
            # A context of its own: the log streams set ALPN h2 on the one they are given, and a shared context made
            # every later aiohttp connection get HTTP/2 answers it cannot read (found by the HA test that
            # restarts kube-apiserver).
            stream_ssl=info.as_ssl_context() if secure else False,
            authorization=authorization,
        )
        await _until_the_api_server_answers(_running.credentials)
        _running.logged_in.set()
    return info


API_WAIT_SECONDS = 2.0
API_WAIT_REPORT_SECONDS = 30.0
WATCHED_PLURALS = (PLURAL, SWEEP_PLURAL)


async def _until_the_api_server_answers(credentials: Credentials) -> None:
    """kopf lists the API's resources once, right after login: it gives up (the operator stops, with a
    traceback) when the API server is gone for more than its retries' 54 s, and it never watches a kind the
    server did not list then ("Unresolved resources cannot be served": an operator restarted beside a restarted
    API server that had not yet served the CRDs' paths took the Lease and reconciled nothing). An operator
    started during an outage, or before its CRDs are served, waits here instead, saying why, until the server
    answers and its discovery lists the TrainingRun and TrainingSweep kinds."""
    kube = AsyncKube(lambda: credentials)
    waited_since = asyncio.get_running_loop().time()
    reported = -API_WAIT_REPORT_SECONDS
    try:
        while (why := await _why_not_served(kube)) is not None:
            waited = asyncio.get_running_loop().time() - waited_since
            if waited - reported >= API_WAIT_REPORT_SECONDS:
                logger.warning("waiting for the API server (%.0f s so far; trying every %.0f s): %s", waited, API_WAIT_SECONDS, why)
                reported = waited
            await asyncio.sleep(API_WAIT_SECONDS)
    finally:
        await kube.close()
    if reported >= 0:
        logger.info("the API server serves the TrainingRun and TrainingSweep kinds after %.0f s", asyncio.get_running_loop().time() - waited_since)


async def _why_not_served(kube: AsyncKube) -> str | None:
    """Why the operator cannot watch its kinds yet, or None when it can (one discovery request: its error says
    whether the server answered at all)."""
    try:
        missing = await kube.unserved(f"{GROUP}/{VERSION}", WATCHED_PLURALS)
    except ApiError as error:
        return f"it does not answer: {error}" if error.status is None else f"it does not list its resources: {error}"
    if missing:
        names = ", ".join(f"{plural}.{GROUP}/{VERSION}" for plural in missing)
        return f"it does not serve {names} (yet): install them: kubectl apply --server-side -k manifests/ (or -k crds/)"
    return None


def _credentials() -> Credentials:
    if _running.credentials is None:
        raise RuntimeError("no credentials yet: kopf has not logged in")
    return _running.credentials


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Configure kopf, then start the controller, the leader election and the probe server."""
    settings.scanning.disabled = True  # the watched kind and namespaces are fixed: no CRD/namespace scans
    settings.posting.enabled = False  # Events come from the controller's recorder only
    settings.watching.server_timeout = 300
    kube = AsyncKube(_credentials)
    watched: list[str | None] = list(options.namespaces) or [None]
    controller = Controller(
        kube, operator_namespace=options.operator_namespace, namespaces=watched, instance=options.identity
    )
    sweeps = SweepController(
        kube,
        namespaces=watched,
        recorder=controller.recorder,
        registrar=controller.registrar,
        config=lambda: controller.config,
        config_synced=controller.wait_synced,
    )
    _running.kube, _running.controller, _running.sweeps = kube, controller, sweeps

    def leading(leading: bool) -> None:
        telemetry.LEADER.set(1 if leading else 0)
        controller.leading(leading)
        sweeps.leading(leading)

    _running.tasks.append(asyncio.create_task(_after_login(controller.run()), name="controller"))
    _running.tasks.append(asyncio.create_task(_after_login(sweeps.run()), name="sweep controller"))
    if options.leader_election:
        elector = LeaderElector(
            kube, namespace=options.operator_namespace, identity=options.identity, on_change=leading
        )
        _running.elector = elector
        _running.tasks.append(asyncio.create_task(_after_login(elector.run()), name="leader election"))
    else:
        leading(True)
    port = telemetry.port_from_env()
    if port is not None:
        _running.server = await telemetry.serve(port, ready=lambda: controller.synced and sweeps.synced)
        logger.info("serving /metrics, /healthz and /readyz on :%d", port)


async def _after_login(work: Coroutine[Any, Any, None]) -> None:
    """kopf runs start-up before login: the controller's requests wait for the credentials."""
    await _running.logged_in.wait()
    await work


@kopf.on.event(GROUP, VERSION, SWEEP_PLURAL)
async def on_sweep_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    """Every TrainingSweep event (the initial listing too) goes to the sweep controller's cache and queue."""
    if _running.sweeps is not None:
        _running.sweeps.sweep_changed(event.get("type"), body)


@kopf.on.cleanup()
async def stop(**_: Any) -> None:
    """Give the Lease up for the standby, stop following logs (nothing half-archived), close everything."""
    if _running.elector is not None:
        await _running.elector.release()
    if _running.sweeps is not None:
        _running.sweeps.queue.active.clear()
    if _running.controller is not None:
        _running.controller.queue.active.clear()
        await _running.controller.stop_followers()
    for task in _running.tasks:
        task.cancel()
    await asyncio.gather(*_running.tasks, return_exceptions=True)
    if _running.server is not None:
        await _running.server.cleanup()
    if _running.kube is not None:
        await _running.kube.close()
