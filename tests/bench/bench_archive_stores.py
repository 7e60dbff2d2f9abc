"""Memory of N runs' log archives in one bucket: the operator's (``LogArchive``, one shared store per bucket and
settings) against one store per archive, as the operator opened them before (each its own client: connection
pool and TLS configuration).

Each variant runs in a fresh process: it opens N archives of runs ``s3://<bucket>/runs/<i>/logs`` on an https
endpoint and reports the growth of its resident memory per archive. Stores are lazy (nothing is contacted), so
this is what the archives hold before their first request; each store's idle connections come on top once it
writes (one per store kept alive by the client's pool, against the shared store's few).

Usage: python tests/bench/bench_archive_stores.py [--archives 1000] [--endpoint https://s3.example.invalid]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "operator")]


def resident_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def child(variant: str, archives: int, endpoint: str) -> dict[str, float]:
    from trainrun.base.uri import parse_uri
    from trainrun.storage import StorageOptions
    from trainrun.storage.logstore import LogArchive
    from trainrun.storage.stores import open_store

    options = StorageOptions(endpoint_url=endpoint, access_key_id="bench", secret_access_key="bench")
    uris = [f"s3://bench-bucket/runs/run-{index}/logs" for index in range(archives)]
    LogArchive(uris[0], options), open_store(parse_uri(uris[0]), options)  # what any first one loads
    before = resident_kb()
    if variant == "shared":
        kept: list[object] = [LogArchive(uri, options) for uri in uris]
    else:
        kept = [open_store(parse_uri(uri), options) for uri in uris]
    grown = resident_kb() - before
    return {"archives": len(kept), "kb_per_archive": grown / archives, "mb": grown / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--archives", type=int, default=1000)
    parser.add_argument("--endpoint", default="https://s3.example.invalid")
    parser.add_argument("--child", choices=["shared", "per-archive"])
    arguments = parser.parse_args()
    if arguments.child:
        print(json.dumps(child(arguments.child, arguments.archives, arguments.endpoint)))
        return
    results = {}
    for variant in ("per-archive", "shared"):
        command = [sys.executable, __file__, "--child", variant, "--archives", str(arguments.archives), "--endpoint", arguments.endpoint]
        results[variant] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    print(f"{arguments.archives} log archives in one bucket at {arguments.endpoint}: resident memory they add")
    for variant, result in results.items():
        print(f"  {variant:>12}: {result['mb']:7.1f} MB ({result['kb_per_archive']:.1f} KB per archive)")
    baseline, ours = results["per-archive"]["mb"], results["shared"]["mb"]
    print(f"  shared / per-archive: {ours / baseline:.3f}" if baseline > 0 else "  per-archive added nothing")


if __name__ == "__main__":
    main()
