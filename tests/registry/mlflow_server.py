"""Start and stop a real MLflow tracking server (``mlflow server``, sqlite store) for the registry tests.

The server runs from its own virtualenv, ``$TRAINRUN_CACHE/mlflow-venv`` (``TRAINRUN_MLFLOW_VENV``
picks another), which tests/run.sh installs (PyPI ``mlflow==3.17.2``): the package under test never
imports mlflow, so its own virtualenv stays without it. The tests read back what the operator wrote with
mlflow's own client (:func:`mlflow_client` runs a script in that virtualenv and returns its JSON).
Artifacts (none are written through MLflow by trainrun) go to the test S3 server when one is given.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.request import urlopen

from ports import free_port

MLFLOW_VERSION = "3.17.2"
START_SECONDS = 180.0  # a cold start imports a great deal of Python; on a loaded 2-core machine it takes a while


def mlflow_venv() -> Path:
    cache = Path(os.environ.get("TRAINRUN_CACHE", Path.home() / ".cache" / "trainrun"))
    return Path(os.environ.get("TRAINRUN_MLFLOW_VENV", cache / "mlflow-venv"))


def mlflow_missing() -> str | None:
    """Why no MLflow server can be started here (None: it can)."""
    binary = mlflow_venv() / "bin" / "mlflow"
    if not binary.exists():
        return (
            f"no MLflow server: {binary} is missing (tests/run.sh installs mlflow=={MLFLOW_VERSION} there; "
            f"or: python3 -m venv {mlflow_venv()} && {mlflow_venv()}/bin/pip install mlflow=={MLFLOW_VERSION} boto3)"
        )
    return None


def require_mlflow() -> None:
    """Skip the test where no MLflow server can be started, but fail it in CI (tests/run.sh installs it)."""
    import pytest

    missing = mlflow_missing()
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; CI must install it (tests/run.sh does)")
        pytest.skip(missing)


@dataclass
class MlflowServer:
    """A running ``mlflow server`` on 127.0.0.1; stop() and start() again keep its store (a registry that
    goes down and comes back)."""

    folder: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    artifacts: str | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [
            str(mlflow_venv() / "bin" / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.folder / 'mlflow.db'}",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        if self.artifacts is not None:
            command += ["--artifacts-destination", self.artifacts]
        # Without MLflow's job runner (Huey consumers polling for jobs these tests never ask for: a tenth of the
        # registry tests' CPU); a test's own env may still turn it on.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **self.env}
        with (self.folder / "server.log").open("ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.healthy():
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer /health within {START_SECONDS:.0f} s:\n{self.log_tail()}")

    def healthy(self) -> bool:
        try:
            with urlopen(f"{self.uri}/health", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # uvicorn's workers are in its process group
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        path = self.folder / "server.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def start_mlflow(folder: Path, *, env: dict[str, str] | None = None, artifacts: str | None = None) -> MlflowServer:
    server = MlflowServer(folder, env=dict(env or {}), artifacts=artifacts)
    server.start()
    return server


def mlflow_client(server: MlflowServer, script: str, **values: Any) -> Any:
    """Run ``script`` with mlflow's own client in its virtualenv (``client`` is an ``MlflowClient`` of the
    server, ``values`` its keyword arguments as globals); what it assigns to ``result``, as JSON."""
    program = (
        "import json, sys\n"
        "from mlflow import MlflowClient\n"
        f"client = MlflowClient(tracking_uri={server.uri!r}, registry_uri={server.uri!r})\n"
        "globals().update(json.loads(sys.argv[1]))\n"
        f"{script}\n"
        "print(json.dumps(result, default=str))\n"
    )
    done = subprocess.run(
        [str(mlflow_venv() / "bin" / "python"), "-c", program, json.dumps(values)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MLFLOW_TRACKING_URI": server.uri},
    )
    if done.returncode != 0:
        raise AssertionError(f"mlflow's client failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class CallProxy:
    """An HTTP proxy in front of a registry that calls ``on_call(path)`` when a request whose path ends with
    one of ``watched`` has been carried out by the server, before its answer goes back: a test kills the
    operator there, between the registry's call and the operator's status write. Runs in threads."""

    def __init__(self, target: str, watched: tuple[str, ...], on_call: Any) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.error import HTTPError
        from urllib.request import Request

        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                request = Request(target + self.path, data=body, method=self.command)
                if self.headers.get("Content-Type"):
                    request.add_header("Content-Type", self.headers["Content-Type"])
                try:
                    with urlopen(request, timeout=60) as answer:
                        status, data = answer.status, answer.read()
                except HTTPError as error:
                    status, data = error.code, error.read()
                if self.path.split("?")[0].endswith(proxy.watched):
                    proxy.calls += 1
                    on_call(self.path)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the caller was killed meanwhile: what the test wanted

            do_GET = do_POST = do_PATCH = do_DELETE = _forward  # noqa: N815 - http.server's names

            def log_message(self, *_: Any) -> None:
                pass

        self.watched = watched
        self.calls = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        import threading

        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
