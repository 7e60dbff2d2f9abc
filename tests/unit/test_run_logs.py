"""The operator's log follower (``trainrun.controller.logs.RunLogs``), without a cluster: which replica's
metric lines become the run's status, and what is archived."""

from __future__ import annotations

import asyncio
from typing import Any

from run_factory import training_run
from trainrun.controller.logs import RunLogs


def follower(offered: list[int]) -> RunLogs:
    run = training_run()
    return RunLogs(kube=None, run=run, on_metrics=lambda: offered.append(1))  # type: ignore[arg-type]


def test_the_master_speaks_for_the_run_once_it_printed_metrics() -> None:
    offered: list[int] = []
    logs = follower(offered)
    logs._take("worker-0", 'trainrun:metric {"step": 1, "loss": 0.9}')
    assert logs.metrics == {"loss": 0.9}  # step is a position, not a metric; nothing from the Master yet: the Worker's values
    logs._take("master-0", 'trainrun:metric {"step": 1, "loss": 0.5}')
    logs._take("worker-0", 'trainrun:metric {"step": 2, "loss": 0.1}')
    assert logs.metrics == {"loss": 0.5}
    assert logs.key_metric == "loss=0.5"
    assert len(offered) == 2  # the Worker's later line changed nothing the status shows


def test_every_line_is_archived_per_replica() -> None:
    logs = follower([])
    for replica, text in [("master-0", "epoch 1"), ("worker-0", "hello"), ("master-0", "epoch 2")]:
        logs._take(replica, text)
    files: list[Any] = asyncio.run(logs.finish())
    assert {path.name: path.read_text() for path in files} == {
        "master-0.log": "epoch 1\nepoch 2\n",
        "worker-0.log": "hello\n",
    }
    logs.discard()
