"""The operator's log follower (``trainrun.controller.logs.RunLogs``), without a cluster: what is archived."""

from __future__ import annotations

import asyncio
from typing import Any

from run_factory import training_run
from trainrun.controller.logs import RunLogs


def follower(offered: list[int]) -> RunLogs:
    run = training_run()
    return RunLogs(kube=None, run=run, on_metrics=lambda: offered.append(1))  # type: ignore[arg-type]


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
