"""Traces the operator's Python heap for ``bench_operator_scale.py --tracemalloc FILE``: where its memory goes.

The bench puts this folder on the operator process's PYTHONPATH, so Python loads it at start as
``sitecustomize``. With TRAINRUN_TRACEMALLOC_FILE set, it starts tracemalloc (TRAINRUN_TRACEMALLOC_FRAMES
frames a trace) and a thread that, every 5 s, dumps a snapshot to that file whenever what is traced has
grown 4 MB past the last dump: the file ends as the heap at (within 4 MB of) its peak, with the process's
RSS at that moment in FILE.rss. Loaded by nothing else; the operator itself knows nothing of it.
"""

from __future__ import annotations

import os
import threading
import time
import tracemalloc

GROWTH = 4_000_000  # bytes traced past the last dump before the next one


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _dump_at_each_high(path: str) -> None:
    high = 0
    while True:
        time.sleep(5)
        traced, _ = tracemalloc.get_traced_memory()
        if traced < high + GROWTH:
            continue
        high = traced
        rss = _rss_kib()
        tracemalloc.take_snapshot().dump(f"{path}.tmp")
        os.replace(f"{path}.tmp", path)
        with open(f"{path}.rss", "w") as record:
            record.write(f"{rss} {traced}\n")


_PATH = os.environ.get("TRAINRUN_TRACEMALLOC_FILE")
if _PATH:
    tracemalloc.start(int(os.environ.get("TRAINRUN_TRACEMALLOC_FRAMES", "16")))
    threading.Thread(target=_dump_at_each_high, args=(_PATH,), name="tracemalloc-peak", daemon=True).start()
