"""CPU of one reconcile's decision (``trainrun.plan.plan``) against decoding what the watches brought for it.

A run of Master + 3 Workers with an output, in three moments of its life: created (job created, pods
pending), running (every replica running) and succeeded (job and pods succeeded, the copy due). Its job is
what ``trainrun render`` makes of it with the training-operator's status added; its pods are the rendered pod
templates with a kubelet's status (no managedFields: the API server's pods are larger). Baseline: decoding the
run, its job and its pods from JSON as the watches deliver them, with the operator's decoder
(``trainrun.kube.body.decode_json``, orjson) and with the standard library's ``json`` -- the least any
controller pays to look at a run once. Each figure is the best of ROUNDS rounds of 300 calls, in CPU time.

Usage: python tests/bench/bench_reconcile_pass.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "operator"), str(REPO / "tests" / "unit")]

from factories import NOW, at, pod, pytorchjob  # noqa: E402 - the unit tests' builders of API objects
from run_factory import document, pools  # noqa: E402
from trainrun.kube.body import decode_json, encode_body  # noqa: E402
from trainrun.plan import Observed, plan, projections  # noqa: E402
from trainrun.render import render_pytorchjob  # noqa: E402
from trainrun.spec import load_training_run  # noqa: E402

CALLS = 300
REPLICAS = ("master-0", "worker-0", "worker-1", "worker-2")


def world(moment: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the run as the API server serves it, the raw job and pods) at ``moment``: created, running, succeeded."""
    body = document(image="ghcr.io/acme/trainer:1.0", distribution={"workers": 3}, output={"uri": "s3://models/run/"})
    body["metadata"] = {"name": "run", "namespace": "default", "uid": "uid-1", "generation": 1, "creationTimestamp": at(0)}
    rendered = render_pytorchjob(load_training_run(body), pools())
    job = {**rendered, "status": dict(getattr(pytorchjob(workers=3), moment)()["status"])}
    pods = []
    for replica in REPLICAS:
        kind, index = replica.split("-")
        template = rendered["spec"]["pytorchReplicaSpecs"]["Master" if kind == "master" else "Worker"]["template"]
        built = pod(f"run-{replica}")
        built = built.created(at(0)) if moment == "created" else getattr(built, moment)()
        metadata = {**template["metadata"], **built["metadata"]}
        pods.append({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": {**template["spec"], "nodeName": "node-1"},
                     "status": built["status"]})
    return body, [job, *pods]


def best(call: Callable[[], object], rounds: int) -> float:
    """The least CPU seconds one call took, over ``rounds`` rounds of CALLS calls."""
    least = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(CALLS):
            call()
        least = min(least, (time.process_time() - started) / CALLS)
    return least


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    rounds = parser.parse_args().rounds
    config = pools()
    print(f"{'moment':10} {'phase':>10} {'bytes':>7} {'json µs':>8} {'orjson µs':>10} {'plan µs':>8} {'plan/orjson':>12} {'plan/json':>10}")
    for moment in ("created", "running", "succeeded"):
        body, children = world(moment)
        wire = [encode_body({"type": "MODIFIED", "object": item}) for item in (body, *children)]
        job, *pods = children
        observed = Observed(job=projections.pytorchjob(job), pods=[projections.pod(item) for item in pods], claim_present=True)
        first = plan(body, config, observed, now=NOW)
        body["status"] = first.status.model_dump(mode="json", by_alias=True, exclude_none=True)  # as after its write
        standard = best(lambda wire=wire: [json.loads(raw) for raw in wire], rounds)
        ours = best(lambda wire=wire: [decode_json(raw) for raw in wire], rounds)
        deciding = best(lambda body=body, observed=observed: plan(body, config, observed, now=NOW), rounds)
        size = sum(len(raw) for raw in wire)
        print(
            f"{moment:10} {str(first.status.phase.value if first.status.phase else None):>10} {size:7,} {1e6 * standard:8.1f} {1e6 * ours:10.1f} {1e6 * deciding:8.1f} "
            f"{deciding / ours:12.2f} {deciding / standard:10.2f}"
        )


if __name__ == "__main__":
    main()
