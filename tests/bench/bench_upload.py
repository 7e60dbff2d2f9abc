"""Upload throughput and peak memory: trainrun.storage vs each store's own client, against a local server.

Run: ``.venv/bin/python tests/bench/bench_upload.py [--store s3|gcs|azure] [--repeats 3] [--big-mb 2000]
[--protocol both]``. Starts its own server (``--store s3``: SeaweedFS's ``weed mini``; ``gcs``: fake-gcs-server;
``azure``: Azurite; tests/storage/emulators.py), then times (a) one 2 GB file and (b) 2,000 files of 100 KB with
  - trainrun.storage.upload_directory (sha256 of every byte, size check, manifest written last),
  - S3: boto3 ``upload_file`` with the default TransferConfig (big file; and a plain loop for small), and
    from a 10-thread pool (small files);
  - Azure: Microsoft's azure-storage-blob ``upload_blob`` (big file: its default 8 MB blocks, 8 at once;
    small files: a 10-thread pool);
  - GCS: trainrun alone (Google's own client is not among this project's dependencies).
Every upload runs in a fresh subprocess that reports its wall time and peak RSS
(VmHWM), so start-up and exit are included and memory is per method. Methods are
interleaved across repeats and medians are printed with ratios vs the boto3 baselines.
The server shares the machine's cores with the client: figures are end-to-end, not client limits.
Each case runs over plain http and over https (the same server; a certificate from a throwaway
CA that both clients are told to trust), as uploads to a cloud store go; ``--protocol`` picks one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "storage"), str(Path(__file__).resolve().parents[1])]

from emulators import start_azurite, start_fake_gcs  # noqa: E402
from seaweedfs import BUCKET, TlsFiles, boto3_client_for, make_tls_files, start_seaweedfs  # noqa: E402

# Per store: its URI scheme, and the baseline clients that run beside trainrun (big file, small files).
STORES = {
    "s3": ("s3", ["boto3"], ["boto3-10-threads", "boto3-loop"]),
    "gcs": ("gs", [], []),
    "azure": ("az", ["azure-sdk"], ["azure-sdk-10-threads"]),
}

SMALL_FILES = 2000
SMALL_SIZE = 100 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--big-mb", type=int, default=2000, help="size of the big file in MB")
    parser.add_argument("--protocol", choices=("http", "https", "both"), default="both")
    parser.add_argument("--store", choices=tuple(STORES), default="s3", help="the server to upload to")
    parser.add_argument("--child", nargs=4, metavar=("METHOD", "SRC", "URI", "ENV"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        run_child(*arguments.child)
        return

    scheme, big_baselines, small_baselines = STORES[arguments.store]
    work = Path(tempfile.mkdtemp(prefix="bench-upload-"))
    servers: dict[str, Any] = {}
    try:
        big_dir, small_dir = work / "big", work / "small"
        make_inputs(big_dir, small_dir, big_bytes=arguments.big_mb * 1_000_000)
        tls = make_tls_files(work / "tls")
        protocols = ("http", "https") if arguments.protocol == "both" else (arguments.protocol,)
        for protocol in protocols:
            servers[protocol] = start_server(arguments.store, work / protocol, tls if protocol == "https" else None)
        # (protocol, workload, method) -> samples; protocols and methods interleave in every repeat.
        samples: dict[tuple[str, str, str], list[dict[str, float]]] = {}
        cases = [
            ("big", "trainrun", big_dir),
            *(("big", method, big_dir) for method in big_baselines),
            ("small", "trainrun", small_dir),
            *(("small", method, small_dir) for method in small_baselines),
        ]
        for repeat in range(arguments.repeats):
            for protocol in protocols:
                server, env = servers[protocol]
                for workload, method, source in cases:
                    uri = f"{scheme}://{BUCKET}/bench/{protocol}/{workload}/{method}/{repeat}"
                    settle()
                    server_cpu_before = cpu_seconds(server.process.pid)
                    sample = run_in_subprocess(method, source, uri, env)
                    sample["server_cpu_s"] = cpu_seconds(server.process.pid) - server_cpu_before
                    samples.setdefault((protocol, workload, method), []).append(sample)
                    servers[protocol] = keep_disk_flat(arguments.store, server, env, uri, big=workload == "big")
                    print(
                        f"  repeat {repeat + 1}: {protocol:5} {workload:5} {method:20} {describe(sample)}",
                        flush=True,
                    )
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (other work on this machine slows the server)")
        for protocol in protocols:
            report(
                {(workload, method): runs for (over, workload, method), runs in samples.items() if over == protocol},
                big_mb=arguments.big_mb,
                repeats=arguments.repeats,
                protocol=protocol,
                store=arguments.store,
            )
    finally:
        for server, _ in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def keep_disk_flat(store: str, server: Any, env: dict[str, str], uri: str, *, big: bool) -> tuple[Any, dict[str, str]]:
    """Delete what a sample uploaded (a 2 GB file per sample fills a small disk over the repeats); Azurite frees
    deleted blobs' space only every 10 minutes, so after a big file it starts again on an empty folder."""
    import obstore
    from trainrun.storage import StorageOptions, parse_uri
    from trainrun.storage.stores import open_store

    if store == "azure" and big:
        server.stop()
        shutil.rmtree(server.data_dir)
        server.data_dir.mkdir()
        server.start()
        return server, env
    bucket = open_store(parse_uri(uri), StorageOptions.from_env(env))
    paths = [str(meta["path"]) for batch in obstore.list(bucket, chunk_size=1000) for meta in batch]
    for start in range(0, len(paths), 500):
        obstore.delete(bucket, paths[start : start + 500])
    return server, env


def start_server(store: str, folder: Path, tls: TlsFiles | None) -> tuple[Any, dict[str, str]]:
    """The store's server (over https with ``tls``) and the variables a client is given for it."""
    if store == "s3":
        seaweedfs = start_seaweedfs(folder, tls=tls)
        endpoint = seaweedfs.https_endpoint if tls else seaweedfs.endpoint
        return seaweedfs, {**seaweedfs.env, "AWS_ENDPOINT_URL": endpoint, **({"AWS_CA_BUNDLE": str(tls.ca)} if tls else {})}
    if store == "gcs":
        gcs = start_fake_gcs(folder, tls=tls)
        return gcs, gcs.env
    azurite = start_azurite(folder, tls=tls)
    return azurite, {**azurite.env, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}


def settle() -> None:
    """Flush the previous upload's dirty pages so its disk writeback does not slow the next."""
    os.sync()
    time.sleep(1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_inputs(big_dir: Path, small_dir: Path, *, big_bytes: int) -> None:
    big_dir.mkdir(parents=True)
    with (big_dir / "model.bin").open("wb") as sink:
        remaining = big_bytes
        while remaining:
            block = os.urandom(min(remaining, 64 * 1024 * 1024))
            sink.write(block)
            remaining -= len(block)
    small_dir.mkdir(parents=True)
    for index in range(SMALL_FILES):
        (small_dir / f"shard-{index:05d}.bin").write_bytes(os.urandom(SMALL_SIZE))


def run_in_subprocess(method: str, source: Path, uri: str, env: dict[str, str]) -> dict[str, float]:
    completed = subprocess.run(
        [sys.executable, __file__, "--child", method, str(source), uri, json.dumps(env)],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"{method} failed with exit code {completed.returncode}:\n{completed.stderr}")
    sample: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    return sample


def run_child(method: str, source: str, uri: str, env_json: str) -> None:
    env: dict[str, str] = json.loads(env_json)
    files = sorted(path for path in Path(source).iterdir() if path.is_file())
    total_bytes = sum(path.stat().st_size for path in files)
    key = uri.split(f"{BUCKET}/", 1)[1]
    started = time.perf_counter()
    if method == "trainrun":
        from trainrun.storage import StorageOptions, upload_directory

        upload_directory(source, uri, options=StorageOptions.from_env(env))
    elif method.startswith("azure-sdk"):
        from azure.storage.blob import BlobServiceClient  # imported here: timed

        ca = env.get("AWS_CA_BUNDLE")
        service = BlobServiceClient.from_connection_string(
            env["AZURE_STORAGE_CONNECTION_STRING"], connection_verify=ca if ca else True
        )
        container = service.get_container_client(BUCKET)

        def put(path: Path) -> None:
            with path.open("rb") as data:
                container.upload_blob(f"{key}/{path.name}", data, overwrite=True, max_concurrency=8)

        with ThreadPoolExecutor(10 if method.endswith("threads") else 1) as pool:
            list(pool.map(put, files))
    else:
        ca = env.get("AWS_CA_BUNDLE")
        client = boto3_client_for(env["AWS_ENDPOINT_URL"], ca=Path(ca) if ca else None)  # imports boto3 here, timed

        def upload(path: Path) -> None:
            client.upload_file(str(path), BUCKET, f"{key}/{path.name}")

        if method == "boto3-10-threads":
            with ThreadPoolExecutor(10) as pool:
                list(pool.map(upload, files))
        else:  # "boto3" and "boto3-loop": upload_file one after the other
            for path in files:
                upload(path)
    elapsed = time.perf_counter() - started
    peak_rss_mb = peak_rss_kib() / 1024
    client_cpu_s = sum(os.times()[:2])
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "bytes": total_bytes,
                "files": len(files),
                "peak_rss_mb": peak_rss_mb,
                "client_cpu_s": client_cpu_s,
            }
        )
    )


def peak_rss_kib() -> int:
    """This process's peak RSS since exec (VmHWM). getrusage's ru_maxrss would also count the
    parent's memory inherited through fork, before exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux: best effort


def describe(sample: dict[str, float]) -> str:
    return (
        f"{sample['bytes'] / sample['seconds'] / 1e6:7.1f} MB/s {sample['files'] / sample['seconds']:8.1f} files/s "
        f"peak RSS {sample['peak_rss_mb']:6.0f} MB ({sample['seconds']:.1f} s, "
        f"client CPU {sample['client_cpu_s']:.1f} s, server CPU {sample['server_cpu_s']:.1f} s)"
    )


def report(
    samples: dict[tuple[str, str], list[dict[str, float]]], *, big_mb: int, repeats: int, protocol: str, store: str
) -> None:
    def median(workload: str, method: str, field: str) -> float:
        return statistics.median(sample[field] for sample in samples[(workload, method)])

    def throughput(workload: str, method: str) -> tuple[float, float]:
        seconds = median(workload, method, "seconds")
        first = samples[(workload, method)][0]
        return first["bytes"] / seconds / 1e6, first["files"] / seconds

    server = {"s3": "SeaweedFS", "gcs": "fake-gcs-server", "azure": "Azurite"}[store]
    print(f"\nmedians of {repeats} over {protocol} (each upload in a fresh process, imports included; {server} on the same machine)")
    print(
        f"{'workload':26} {'method':20} {'MB/s':>8} {'files/s':>9} {'peak RSS MB':>12} "
        f"{'client CPU s':>13} {'server CPU s':>13}"
    )
    for workload, method in samples:
        label = f"1 x {big_mb} MB" if workload == "big" else f"{SMALL_FILES} x {SMALL_SIZE // 1024} KB"
        mbps, files_per_s = throughput(workload, method)
        print(
            f"{label:26} {method:20} {mbps:8.1f} {files_per_s:9.1f} "
            f"{median(workload, method, 'peak_rss_mb'):12.0f} {median(workload, method, 'client_cpu_s'):13.1f} "
            f"{median(workload, method, 'server_cpu_s'):13.1f}"
        )
    _, big_baselines, small_baselines = STORES[store]
    for baseline in big_baselines:
        ratio = throughput("big", "trainrun")[0] / throughput("big", baseline)[0]
        print(f"big file:    trainrun / {baseline:22} = {ratio:.2f}x MB/s   (goal >= 1.05x)")
    for baseline in small_baselines:
        ratio = throughput("small", "trainrun")[1] / throughput("small", baseline)[1]
        print(f"small files: trainrun / {baseline:22} = {ratio:.2f}x files/s (goal >= 4x against a thread pool)")


if __name__ == "__main__":
    main()
