"""The operator's login waits until it can watch its kinds (``trainrun.controller.handlers``): kopf resolves the
kinds it watches once, right after login, and never watches one the API server did not list then. Against a
small HTTP server in the test process whose discovery first lists nothing of ``trainrun.dev``, then only the
TrainingRuns, then both kinds: the wait says why at each step and ends only at the last.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import pytest
from http_server import serving
from trainrun.controller import handlers
from trainrun.kube.aioclient import AsyncKube, Credentials


class Discovery(BaseHTTPRequestHandler):
    """``/version`` answers; ``/apis/trainrun.dev/v1alpha1`` answers from ``lists``, one answer per call, the last
    one for ever (None: 404, the group not served)."""

    lists: ClassVar[list[list[str] | None]] = []
    asked: ClassVar[int] = 0

    def do_GET(self) -> None:  # noqa: N802 - the base class names it
        if self.path == "/version":
            self._send(200, {"major": "1", "minor": "34"})
            return
        if self.path != "/apis/trainrun.dev/v1alpha1":
            self._send(404, {"kind": "Status", "code": 404})
            return
        answer = Discovery.lists[min(Discovery.asked, len(Discovery.lists) - 1)]
        Discovery.asked += 1
        if answer is None:
            self._send(404, {"kind": "Status", "code": 404, "message": "the server could not find the requested resource"})
        else:
            self._send(200, {"kind": "APIResourceList", "groupVersion": "trainrun.dev/v1alpha1", "resources": [{"name": name} for name in answer]})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it
        """Silent."""


@pytest.fixture
def server() -> Iterator[str]:
    Discovery.asked = 0
    with serving(Discovery) as url:
        yield url


def _credentials(server: str) -> Credentials:
    return Credentials(server=server, ssl=False, stream_ssl=False)


def _why(server: str) -> str | None:
    async def ask() -> str | None:
        kube = AsyncKube(lambda: _credentials(server))
        try:
            return await handlers._why_not_served(kube)
        finally:
            await kube.close()

    return asyncio.run(ask())


@pytest.mark.parametrize(
    ("listed", "expected"),
    [
        (None, "does not serve trainingruns.trainrun.dev/v1alpha1, trainingsweeps.trainrun.dev/v1alpha1 (yet)"),
        (["trainingruns", "trainingruns/status"], "does not serve trainingsweeps.trainrun.dev/v1alpha1 (yet)"),
        (["trainingruns", "trainingruns/status", "trainingsweeps", "trainingsweeps/status"], None),
    ],
)
def test_the_reason_names_the_kinds_not_served_and_how_to_install_them(server: str, listed: list[str] | None, expected: str | None) -> None:
    Discovery.lists = [listed]
    why = _why(server)
    if expected is None:
        assert why is None
    else:
        assert why is not None and expected in why and "kubectl apply --server-side -k manifests/" in why


def test_an_api_server_that_does_not_answer_is_the_reason() -> None:
    why = _why("http://127.0.0.1:9")  # the discard port: nothing listens
    assert why is not None and why.startswith("it does not answer: cannot reach the API server")


def test_the_login_waits_until_both_kinds_are_served(server: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    Discovery.lists = [None, None, ["trainingruns"], ["trainingruns", "trainingsweeps"]]
    monkeypatch.setattr(handlers, "API_WAIT_SECONDS", 0.01)
    caplog.set_level(logging.INFO, logger=handlers.__name__)
    asyncio.run(handlers._until_the_api_server_answers(_credentials(server)))
    assert Discovery.asked == 4  # not before the fourth answer listed both
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0].startswith("waiting for the API server (0 s so far")  # said at once, then every 30 s
    assert "it does not serve trainingruns.trainrun.dev/v1alpha1, trainingsweeps" in messages[0]
    assert messages[-1].startswith("the API server serves the TrainingRun and TrainingSweep kinds after")


def test_a_served_api_logs_nothing(server: str, caplog: pytest.LogCaptureFixture) -> None:
    Discovery.lists = [["trainingruns", "trainingsweeps"]]
    caplog.set_level(logging.INFO, logger=handlers.__name__)
    asyncio.run(handlers._until_the_api_server_answers(_credentials(server)))
    assert Discovery.asked == 1
    assert caplog.records == []
