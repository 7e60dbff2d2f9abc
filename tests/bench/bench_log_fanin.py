"""Fan-in of replica logs: thousands of followed streams into the archive, by the operator's follower vs a plain reader.

The source is ``tests/bench/logsource`` (Go, built here from the standard library and cached): it serves
followed pod logs as kube-apiserver's log endpoint does (HTTP/2 over TLS, kubelet times in front), L lines
a second per stream, each carrying the time it was written; every 10th is a ``trainrun:metric`` line. A
source that cheap measures the reader, not the source (the kwok cluster's log path, kwok reading a file and
the API server proxying it, saturates on this 2-core machine before 1,000 streams do). For each N, one after
the other, each in a fresh process, N streams as N/4 runs of a Master and 3 Workers:

  plain:     a plain reader on the operator's HTTP/2 transport (``trainrun.kube.h2logs``, as many streams per
             connection as the operator puts on one): counts the lines of every stream, nothing else;
  trainrun:  the operator's log follower (``trainrun.controller.logs.RunLogs``, the code the operator runs,
             one per run) with a ``file://`` archive: every line cut, its time parsed, checked against the
             stream's position, parsed for metrics, queued and shipped as segments every 2 s (the default
             ``logs.flushSeconds``) with the positions and the metric series; its streams are read paced
             (what they received is taken right before each flush), so its latency to the follower is
             up to a flush interval by design, and the one that counts is to the archive.

Each process opens every stream, waits a few seconds, then measures for S seconds: lines received,
latency from a line's write to its arrival (the first line of each batch a stream hands over, the one that
waited longest; for trainrun also until its segment is in the archive), CPU seconds of the process (user +
system), peak RSS and threads. Lines per second per core = lines / CPU seconds.

Both readers run on the event loop the operator runs on (asyncio's; ``--loop uvloop`` for uvloop's).

Usage: python tests/bench/bench_log_fanin.py [--streams 1000 4000] [--lines 5] [--seconds 30] [--flush-seconds 2]
       [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import resource
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "operator")]

SOURCE = Path(__file__).resolve().parent / "logsource"
CACHE = Path(os.environ.get("TRAINRUN_CACHE", Path.home() / ".cache" / "trainrun"))
NAMESPACE = "fanin"
REPLICAS_PER_RUN = 4
WRITE_MARK = "w="
WARM_UP_SECONDS = 5.0


def written_at(text: str) -> float | None:
    """The write time a source line carries at its end (``... w=1764489600.123456``, or ``"w=..."}``)."""
    mark = text.rfind(WRITE_MARK)
    try:
        return float(text[mark + len(WRITE_MARK) :].rstrip('"} \r\n')) if mark >= 0 else None
    except ValueError:
        return None


# ---- the parent: the source, the two measured processes ----


def build_source() -> Path:
    """The log source binary, built with Go and cached by its source's hash."""
    digest = hashlib.sha256((SOURCE / "main.go").read_bytes() + (SOURCE / "go.mod").read_bytes()).hexdigest()[:12]
    binary = CACHE / "bin" / f"logsource-{digest}"
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "GOCACHE": str(CACHE / "gocache"), "GOMODCACHE": str(CACHE / "gomod"), "GOFLAGS": "-mod=mod"}
        subprocess.run(["go", "build", "-o", str(binary), "."], cwd=SOURCE, env=env, check=True)
    return binary


def measure(role: str, server: str, count: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    result_path = work / f"{role}-{count}.json"
    command = [sys.executable, __file__, "--child", role, "--server", server, "--count", str(count),
               "--seconds", str(args.seconds), "--flush-seconds", str(args.flush_seconds), "--loop", args.loop,
               "--archive", str(work / f"archive-{role}-{count}"), "--result", str(result_path)]
    done = subprocess.run(command, timeout=args.seconds + 900, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{role} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return dict(json.loads(result_path.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--lines", type=int, default=5, help="lines per stream per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--flush-seconds", type=float, default=2.0, help="the follower's segment interval (logs.flushSeconds)")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="asyncio", help="the readers' event loop")
    parser.add_argument("--child", choices=["plain", "trainrun"])
    parser.add_argument("--server")
    parser.add_argument("--count", type=int)
    parser.add_argument("--archive")
    parser.add_argument("--result")
    args = parser.parse_args()
    if args.child:
        factory = None
        if args.loop == "uvloop":
            import uvloop

            factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=factory) as runner:
            result = runner.run(child(args.child, args.server, args.count, args.seconds, Path(args.archive), args.flush_seconds))
        Path(args.result).write_text(json.dumps(result))
        return

    source = subprocess.Popen([str(build_source()), "-lines", str(args.lines)], stdout=subprocess.PIPE, text=True)
    try:
        assert source.stdout is not None
        server = source.stdout.readline().strip()
        work = Path(tempfile.mkdtemp(prefix="trainrun-fanin-"))
        rows = []
        for count in args.streams:
            plain = measure("plain", server, count, args, work)
            ours = measure("trainrun", server, count, args, work)
            rows.append((count, plain, ours))
            report(rows, args.lines, args.seconds, args.flush_seconds, args.loop)
    finally:
        source.terminate()
        source.wait(timeout=30)


def report(
    rows: list[tuple[int, dict[str, Any], dict[str, Any]]], lines: int, seconds: float, flush_seconds: float, loop: str
) -> None:
    print(f"\nfan-in: {lines} lines/s per stream, {seconds:.0f} s measured per reader, segments every {flush_seconds:g} s, "
          f"{loop} event loop (ratios: trainrun / plain)")
    print(f"{'streams':>8} {'reader':>9} {'lines/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'archive p50/p99 ms':>19} "
          f"{'CPU s':>7} {'lines/s/core':>13} {'RSS MB':>7} {'threads':>8}")
    for count, plain, ours in rows:
        for name, row in (("plain", plain), ("trainrun", ours)):
            durable = f"{row['durable_p50_ms']:.0f}/{row['durable_p99_ms']:.0f}" if row.get("durable_p99_ms") is not None else "-"
            print(f"{count:>8} {name:>9} {row['lines_per_s']:>9,.0f} {row['p50_ms']:>8.0f} {row['p99_ms']:>8.0f} {durable:>19} "
                  f"{row['cpu_s']:>7.1f} {row['lines_per_core_s']:>13,.0f} {row['rss_mb']:>7.0f} {row['threads']:>8}")
        print(f"{count:>8} {'ratio':>9} {ours['lines_per_s'] / plain['lines_per_s']:>9.2f} "
              f"{ours['p50_ms'] / max(plain['p50_ms'], 1e-9):>8.2f} {ours['p99_ms'] / max(plain['p99_ms'], 1e-9):>8.2f} {'':>19} "
              f"{ours['cpu_s'] / plain['cpu_s']:>7.2f} {ours['lines_per_core_s'] / plain['lines_per_core_s']:>13.2f} "
              f"{ours['rss_mb'] / plain['rss_mb']:>7.2f} {ours['threads'] / plain['threads']:>8.2f}", flush=True)


# ---- the measured processes ----


class Tally:
    def __init__(self) -> None:
        self.counting = False
        self.lines = 0
        self.latencies: list[float] = []
        self.durable: list[float] = []
        self.first_lines: set[str] = set()

    def take(self, stream: str, first_text: str, count: int) -> None:
        self.first_lines.add(stream)
        if not self.counting:
            return
        self.lines += count
        written = written_at(first_text)
        if written is not None:
            self.latencies.append(time.time() - written)


async def child(role: str, server: str, count: int, seconds: float, archive_root: Path, flush_seconds: float) -> dict[str, Any]:
    from trainrun.kube.aioclient import Credentials

    logging.basicConfig(level=logging.WARNING)
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE  # the source's certificate is made at its start
    credentials = Credentials(server=server, ssl=False, stream_ssl=unverified)
    tally = Tally()
    listed = replica_pods(count)
    if role == "plain":
        tasks = await _plain(credentials, listed, tally)
    else:
        tasks = await _followers(credentials, listed, tally, archive_root, flush_seconds)
    await _until(lambda: len(tally.first_lines) >= count, 600)
    await asyncio.sleep(WARM_UP_SECONDS)  # what was written before the streams opened is read by now
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    tally.counting = True
    started = time.monotonic()
    await asyncio.sleep(seconds)
    tally.counting = False
    elapsed = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    status = _proc_status()
    for task in tasks:
        task.cancel()
    cpu = (usage.ru_utime - usage_before.ru_utime) + (usage.ru_stime - usage_before.ru_stime)
    latencies = sorted(tally.latencies) or [float("nan")]
    durable = sorted(tally.durable)
    return {
        "lines_per_s": tally.lines / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "durable_p99_ms": 1000 * durable[min(len(durable) - 1, int(0.99 * len(durable)))] if durable else None,
        "durable_p50_ms": 1000 * statistics.median(durable) if durable else None,
        "cpu_s": cpu,
        "lines_per_core_s": tally.lines / cpu if cpu else float("nan"),
        "rss_mb": int(status["VmHWM"].split()[0]) / 1024,
        "threads": int(status["Threads"]),
    }


def replica_pods(count: int) -> list[dict[str, Any]]:
    """N running replica pods as the watch cache holds them: N/4 runs of a Master and 3 Workers."""
    from trainrun.render.children import JOB_NAME_LABEL, REPLICA_INDEX_LABEL, REPLICA_TYPE_LABEL

    found = []
    for index in range(count):
        run, replica = divmod(index, REPLICAS_PER_RUN)
        kind, number = ("master", 0) if replica == 0 else ("worker", replica - 1)
        found.append(
            {
                "metadata": {
                    "name": f"fan-{run}-{kind}-{number}",
                    "namespace": NAMESPACE,
                    "uid": f"uid-{index}",
                    "labels": {JOB_NAME_LABEL: f"fan-{run}", REPLICA_TYPE_LABEL: kind, REPLICA_INDEX_LABEL: str(number)},
                },
                "status": {
                    "phase": "Running",
                    "containerStatuses": [{"name": "pytorch", "restartCount": 0, "state": {"running": {}}}],
                },
            }
        )
    return found


async def _plain(credentials: Any, listed: list[dict[str, Any]], tally: Tally) -> list[asyncio.Task[None]]:
    """The same transport as the operator's (``trainrun.kube.h2logs``), counting lines, nothing else."""
    from trainrun.kube.aioclient import STREAMS_PER_CONNECTION
    from trainrun.kube.h2logs import H2LogClient

    client = H2LogClient(credentials.server, credentials.stream_ssl, {}, per_connection=STREAMS_PER_CONNECTION)  # the operator's

    async def read(name: str) -> None:
        query = {"container": "pytorch", "follow": "true", "timestamps": "true"}
        tally.first_lines.add(name)
        pending = b""
        async for chunk in client.stream(f"/api/v1/namespaces/{NAMESPACE}/pods/{name}/log", query):
            pending += chunk
            end = pending.rfind(b"\n")
            if end < 0:
                continue
            complete, pending = pending[: end + 1], pending[end + 1 :]
            first = complete[: complete.find(b"\n")].decode("utf-8", "replace")
            tally.take(name, first, complete.count(b"\n"))

    return [asyncio.create_task(read(pod["metadata"]["name"])) for pod in listed]


async def _followers(
    credentials: Any, listed: list[dict[str, Any]], tally: Tally, archive_root: Path, flush_seconds: float
) -> list[asyncio.Task[None]]:
    from trainrun.controller.logs import ContainerLog, RunLogs
    from trainrun.kube.aioclient import AsyncKube
    from trainrun.kube.streams import LogTime
    from trainrun.render.children import JOB_NAME_LABEL
    from trainrun.spec import load_training_run
    from trainrun.storage import StorageOptions
    from trainrun.storage.logarchive import Segment
    from trainrun.storage.logstore import LogArchive

    class MeasuredArchive(LogArchive):
        async def write(self, segment: Segment) -> None:
            await super().write(segment)
            if tally.counting:
                now = time.time()
                for channel, lines in segment.blocks.items():
                    written = written_at(lines[0]) if lines and channel != "metrics" else None
                    if written is not None:
                        tally.durable.append(now - written)

    class MeasuredRunLogs(RunLogs):
        def _take(self, container: ContainerLog, texts: list[str], stamped: list[str], last: LogTime | None) -> None:
            tally.take(f"{self.run.metadata.name}/{container.replica}", texts[0], len(texts))
            super()._take(container, texts, stamped, last)

    kube = AsyncKube(lambda: credentials)
    by_run: dict[str, list[Mapping[str, Any]]] = {}
    for pod in listed:
        by_run.setdefault(pod["metadata"]["labels"][JOB_NAME_LABEL], []).append(pod)
    followers = []
    for name, run_pods in by_run.items():
        document = {
            "apiVersion": "trainrun.dev/v1alpha1",
            "kind": "TrainingRun",
            "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}"},
            "spec": {"image": "trainer:bench", "distribution": {"workers": REPLICAS_PER_RUN - 1}},
        }
        archive = MeasuredArchive((archive_root / name).as_uri(), StorageOptions())
        logs = MeasuredRunLogs(kube, load_training_run(document), archive, on_metrics=lambda: None, flush_seconds=flush_seconds)
        logs.start()
        logs.update(run_pods)
        followers.append(logs)

    async def keep() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.gather(*(logs.stop() for logs in followers))
            await kube.close()

    return [asyncio.create_task(keep())]


async def _until(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the streams did not all open")
        await asyncio.sleep(0.5)


def _proc_status() -> dict[str, str]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


if __name__ == "__main__":
    main()
