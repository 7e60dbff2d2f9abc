"""The Kueue queue of the platform cluster's tests: a LocalQueue on a ClusterQueue of 8 GPUs of the a100 pool,
with a low and a high priority (the fixture kueue_queue in conftest.py makes one per test).

Used by tests/integration/test_platform.py (Kueue with jobs written by hand) and test_kueue_runs.py
(TrainingRuns through the operator, on both backends).
"""

from __future__ import annotations

from dataclasses import dataclass

KUEUE_POOL = "a100"  # nodes.yaml: 4 nodes of 8 GPUs
QUEUE_GPUS = 8


@dataclass(frozen=True)
class Queue:
    """A LocalQueue on a ClusterQueue of 8 GPUs of one ResourceFlavor (the a100 pool), with two priorities."""

    local_queue: str
    cluster_queue: str
    flavor: str
    low: str
    high: str
