"""Faults for the integration tests to inject, and watches that record what happened meanwhile.

Used by test_operator_ha.py (the operator killed, the API server gone) and test_chaos_soak.py (all of it at
random while 50 runs go through every phase): the API server killed and started again with its own command
line (its port held meanwhile), and a watch in a thread that keeps every uid each object name had, and
every deletion, through the outages it causes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster.harness import KubeCluster, wait_until
from cluster.supervise import read_pid, running
from runs import events_of

# What kwokctl runs; the cluster's supervisor (tests/cluster/supervise.py) starts the controllers again when they exit.
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok-controller")


class Component:
    """A control-plane process as kwokctl's binary runtime runs it (a pid file, a log file), restartable with
    the command line, environment and working folder recorded while it ran (the pid file updated, for down.sh
    and the supervisor)."""

    def __init__(self, kube_cluster: KubeCluster, name: str) -> None:
        self.name = name
        self.pid_file = pid_file(kube_cluster, name)
        self.log_file = kwok_workdir(kube_cluster) / "logs" / f"{name}.log"
        pid = self.pid
        self.command = [part.decode() for part in Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")]
        self.cwd = os.readlink(f"/proc/{pid}/cwd")
        environ = Path(f"/proc/{pid}/environ").read_bytes().rstrip(b"\0").split(b"\0")
        self.env = dict(item.decode(errors="replace").split("=", 1) for item in environ if b"=" in item)

    @property
    def pid(self) -> int:
        """The pid in its pid file (the supervisor writes a new one when it starts the process again)."""
        return int(self.pid_file.read_text().strip())

    def kill(self) -> None:
        pid = self.pid
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not running(pid), timeout=10, what=f"{self.name} to die", interval=0.05)

    @property
    def port(self) -> int:
        return int(next(part for part in self.command if part.startswith("--secure-port=")).split("=", 1)[1])

    def start(self) -> None:
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{process.pid}\n")


def kwok_workdir(kube_cluster: KubeCluster) -> Path:
    """kwokctl's folder of the cluster: its control-plane processes' pid files and logs."""
    return kube_cluster.state_dir / "kwok" / "clusters" / kube_cluster.name


def pid_file(kube_cluster: KubeCluster, name: str) -> Path:
    """Where kwokctl (and the supervisor, when it starts the process again) keeps a control-plane process's pid."""
    return kwok_workdir(kube_cluster) / "pids" / f"{name}.pid"


class PortHolder:
    """Holds a stopped server's port, resetting every connection (as a closed port refuses them): on this
    machine other test sessions create clusters at any time, and kwokctl would hand a free port to one of them."""

    def __init__(self, port: int) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the old connections' TIME_WAIT
        # The killed server's threads may still be closing its sockets for a moment.
        wait_until(lambda: self._bind(port), timeout=10, what=f"port {port} to be free", interval=0.02)
        self.listener.listen(64)
        self.listener.settimeout(0.2)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._reset_all, daemon=True)
        self.thread.start()

    def _bind(self, port: int) -> bool:
        try:
            self.listener.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True

    def _reset_all(self) -> None:
        while not self.stopped.is_set():
            try:
                connection, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            connection.close()

    def release(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        self.listener.close()


def api_ready(kube_cluster: KubeCluster) -> bool:
    """Whether the API server answers /readyz (an answer slower than 10 s, as a server starting on a loaded
    machine may give, counts as not ready yet)."""
    try:
        return kube_cluster.kubectl("get", "--raw", "/readyz", check=False, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


class ApiServerOutage:
    """kube-apiserver SIGKILLed (its port held, refusing connections) until :meth:`end` starts it again."""

    def __init__(self, kube_cluster: KubeCluster) -> None:
        self.cluster = kube_cluster
        self.server = Component(kube_cluster, "kube-apiserver")
        self.server.kill()
        self.holder = PortHolder(self.server.port)
        self.began = time.monotonic()

    def end(self) -> float:
        """Starts the API server again and waits until it is ready; the seconds it was down."""
        self.holder.release()
        self.server.start()
        try:
            wait_until(lambda: api_ready(self.cluster), timeout=120, what="kube-apiserver to be ready again", interval=1)
        except Exception as error:
            log = self.server.log_file.read_text(errors="replace").splitlines()[-30:]
            raise AssertionError(f"{error}; the end of its log:\n" + "\n".join(log)) from None
        return time.monotonic() - self.began


def control_plane_running(kube_cluster: KubeCluster) -> dict[str, bool]:
    """Whether each control-plane process runs, by its pid file. Not through ``Component``, which reads the
    process's command line: a process that exited a moment before (the supervisor about to start it again)
    made that read raise instead of answering False (CI, the chaos soak's last check)."""

    def alive(name: str) -> bool:
        pid = read_pid(pid_file(kube_cluster, name))  # None: no pid file, or the supervisor writing it
        return pid is not None and running(pid)

    return {name: alive(name) for name in CONTROL_PLANE}


def supervisor_restarts(kube_cluster: KubeCluster) -> list[str]:
    """What the cluster's supervisor started again, from its log."""
    log = kube_cluster.state_dir / "supervisor.log"
    return [line for line in log.read_text().splitlines() if "started again" in line] if log.exists() else []


class ObjectWatch:
    """Every uid each object name of one kind had in a namespace, every deletion, and whatever ``see`` makes
    of each version, from a watch in a thread that lists again after a dropped watch (an API-server outage);
    a version that comes and goes while the watch is down is missed."""

    def __init__(
        self,
        kube_cluster: KubeCluster,
        namespace: str,
        kind: str,
        see: Callable[[dict[str, Any]], None] | None = None,
        *,
        group: str = "kubeflow.org",
        version: str = "v1",
    ) -> None:
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=str(kube_cluster.kubeconfig))
        if kind == "pods":
            core = client.CoreV1Api(api)
            self._list: Callable[..., Any] = lambda **kwargs: core.list_namespaced_pod(namespace, **kwargs)
        else:
            custom = client.CustomObjectsApi(api)
            self._list = lambda **kwargs: custom.list_namespaced_custom_object(group, version, namespace, kind, **kwargs)
        self.see = see
        self.uids: dict[str, set[str]] = {}
        self.deleted: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _note(self, item: dict[str, Any]) -> None:
        self.uids.setdefault(item["metadata"]["name"], set()).add(item["metadata"]["uid"])
        if self.see is not None:
            self.see(item)

    def _loop(self) -> None:
        from kubernetes import watch

        while not self.stopped.is_set():
            try:
                listing = json.loads(self._list(_preload_content=False).data)
                for item in listing["items"]:
                    self._note(item)
                stream = watch.Watch(return_type="object").stream(
                    self._list, resource_version=listing["metadata"]["resourceVersion"], timeout_seconds=60, deserialize=False
                )
                for event in stream:
                    if self.stopped.is_set():
                        return
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self._note(event["object"])
                    if event["type"] == "DELETED":
                        self.deleted.append((event["object"]["metadata"]["name"], event["object"]["metadata"]["uid"]))
            except Exception as error:  # a dropped watch: list again (a version in between is missed)
                self.errors.append(str(error)[:200])
                time.sleep(0.5)

    def stop(self) -> None:
        self.stopped.set()


def duplicate_events(kube_cluster: KubeCluster, name: str, namespace: str) -> list[str]:
    """The phase Events of a run posted more than once: the same reason and message twice, or a count over 1."""
    events = events_of(kube_cluster, name, namespace)
    seen = Counter((event.get("reason"), event.get("message")) for event in events)
    twice = [f"{reason}: {message!r} x{times}" for (reason, message), times in seen.items() if times > 1]
    for event in events:
        count = max(event.get("count") or 1, (event.get("series") or {}).get("count") or 1)
        if count > 1:
            twice.append(f"{event.get('reason')}: {event.get('message')!r} count {count}")
    return twice
