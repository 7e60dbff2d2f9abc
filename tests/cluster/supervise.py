"""Restarts a test cluster's controllers when they exit, as a real control plane's kubelet restarts its static pods.

Started in the background by up.sh (``python3 supervise.py STATE_DIR``, its pid in STATE_DIR/supervisor.pid)
and stopped first by down.sh. kube-controller-manager and kube-scheduler exit when they cannot renew their
leader Lease (an API-server outage of 10 s is enough), and so may the training-operator and the add-on
controllers; without this they would stay down and a test after an outage would meet a cluster with no
scheduler. etcd and kube-apiserver are not supervised: tests stop the API server on purpose.

Each supervised process is known by its pid file (kwokctl's ``pids/<name>.pid``, up.sh's
``<name>.pid``). While it runs, its command line, environment, working folder and log file (its stdout)
are recorded from /proc; once it has been gone for ``GRACE_S`` (a test that restarts one itself writes
the new pid within that time) it is started again the same way, its pid file updated, with a back-off
that doubles from 1 s to ``MAX_BACKOFF_S`` while it keeps exiting within ``STABLE_S`` of its start.
Standard library only: it runs with any python3 on the machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

KWOKCTL_COMPONENTS = ("kube-controller-manager", "kube-scheduler", "kwok-controller")
UP_SH_CONTROLLERS = ("training-operator", "jobset", "trainer", "kueue")
POLL_S = 0.5
GRACE_S = 2.0
STABLE_S = 30.0
MAX_BACKOFF_S = 10.0


@dataclass
class Recorded:
    """How a process ran: enough to start it again the same way."""

    command: list[str]
    env: dict[str, str]
    cwd: str
    log: str | None


@dataclass
class Supervised:
    name: str
    pid_file: Path
    recorded: Recorded | None = None
    gone_since: float | None = None
    started_at: float = 0.0
    backoff_s: float = 1.0
    restarts: int = 0
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def pid(self) -> int | None:
        return read_pid(self.pid_file)

    def check(self, now: float) -> None:
        for child in list(self.children):  # reap the ones this process started
            if child.poll() is not None:
                self.children.remove(child)
        pid = self.pid()
        if pid is not None and running(pid):
            self.gone_since = None
            self.recorded = record(pid) or self.recorded
            if now - self.started_at > STABLE_S:
                self.backoff_s = 1.0
            return
        if self.recorded is None:
            return
        if self.gone_since is None:
            self.gone_since = now
            return
        if now - self.gone_since < max(GRACE_S, self.backoff_s) or self.pid() != pid:
            return
        self.start(now)

    def start(self, now: float) -> None:
        assert self.recorded is not None
        try:
            with open(self.recorded.log or os.devnull, "ab") as log:
                child = subprocess.Popen(
                    self.recorded.command,
                    cwd=self.recorded.cwd,
                    env=self.recorded.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as error:
            print(f"supervise: cannot start {self.name} again: {error}", file=sys.stderr, flush=True)
            self.recorded = None
            return
        self.children.append(child)
        self.pid_file.write_text(f"{child.pid}\n")
        if now - self.started_at < STABLE_S:
            self.backoff_s = min(MAX_BACKOFF_S, self.backoff_s * 2)
        self.started_at = now
        self.gone_since = None
        self.restarts += 1
        print(f"supervise: {self.name} exited; started again (pid {child.pid}, restart {self.restarts})", flush=True)


def read_pid(pid_file: Path) -> int | None:
    """The pid in a pid file; None while there is none, or while its writer has not finished it."""
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def running(pid: int) -> bool:
    """Whether PID exists and has not exited (a zombie has exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def record(pid: int) -> Recorded | None:
    try:
        command = [part.decode() for part in Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")]
        environ = Path(f"/proc/{pid}/environ").read_bytes().rstrip(b"\0").split(b"\0")
        cwd = os.readlink(f"/proc/{pid}/cwd")
        stdout = os.readlink(f"/proc/{pid}/fd/1")
    except OSError:
        return None
    env = dict(item.decode(errors="replace").split("=", 1) for item in environ if b"=" in item)
    return Recorded(command, env, cwd, stdout if stdout.startswith("/") and Path(stdout).is_file() else None)


def supervised(state_dir: Path) -> list[Supervised]:
    pids = state_dir / "kwok" / "clusters" / state_dir.name / "pids"
    return [Supervised(name, pids / f"{name}.pid") for name in KWOKCTL_COMPONENTS] + [
        Supervised(name, state_dir / f"{name}.pid") for name in UP_SH_CONTROLLERS if (state_dir / f"{name}.pid").exists()
    ]


def main(state_dir: Path) -> None:
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    processes = supervised(state_dir)
    while state_dir.is_dir():
        now = time.monotonic()
        for process in processes:
            process.check(now)
        time.sleep(POLL_S)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
