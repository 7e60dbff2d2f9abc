"""``trainrun.kube.logs.ReplicaLogStreams`` against the real API server, with kwok serving the logs.

The operator's log follower and ``trainrun logs -f`` both read replicas through it, so what it must
get right is tested here once: a pod that starts later is followed from its first line, a container
restarted in place is read again, a pod the training-operator recreates under the same name (a new
uid) is read again, ``replicas`` limits what is read; and following a run ends once the run is over.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from cluster.harness import POOL_LABEL, ClusterError, KubeCluster, Outcome, pod_behaviour, wait_until, write_cri_log
from runs import OperatorProcess, kubectl_apply, operator, training_run
from trainrun import Client
from trainrun.kube import KubeApi
from trainrun.kube.logs import LogLine, ReplicaLogStreams
from trainrun.render.children import CONTAINER_NAME, JOB_NAME_LABEL

pytestmark = pytest.mark.cluster
__all__ = ["operator"]  # a fixture, used by name

START_AFTER_ANNOTATION = "kwok.trainrun.dev/start-after"


def replica_pod(job: str, namespace: str, replica: str, annotations: dict[str, str], *, restart: str = "Never") -> dict[str, Any]:
    """A pod labelled as the training-operator labels replica REPLICA ("worker-1") of JOB."""
    kind, index = replica.split("-")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{job}-{replica}",
            "namespace": namespace,
            "labels": {
                JOB_NAME_LABEL: job,
                "training.kubeflow.org/replica-type": kind,
                "training.kubeflow.org/replica-index": index,
            },
            "annotations": annotations,
        },
        "spec": {
            "restartPolicy": restart,
            "nodeSelector": {POOL_LABEL: "cpu"},
            # A second container: the streams must name the training container when they read.
            "containers": [
                {"name": CONTAINER_NAME, "image": "registry.invalid/trainer:test"},
                {"name": "sidecar", "image": "registry.invalid/sidecar:test"},
            ],
        },
    }


def collect(streams: ReplicaLogStreams, until: Any, *, timeout: float) -> list[LogLine]:
    """Poll and gather lines until ``until(lines)`` holds."""
    seen: list[LogLine] = []

    def enough() -> bool:
        streams.poll()
        seen.extend(streams.lines(0.5))
        return bool(until(seen))

    try:
        wait_until(enough, timeout=timeout, what="log lines", interval=0.1)
    except ClusterError as error:
        raise AssertionError(f"{error}; lines seen: {seen}") from None
    return seen


def texts(lines: list[LogLine], replica: str) -> list[str]:
    return [line.text for line in lines if line.replica == replica]


def test_late_replicas_restarts_and_recreated_pods_are_followed(
    kube_cluster: KubeCluster, kube_namespace: str, tmp_path: Path
) -> None:
    namespace, job = kube_namespace, "streams"
    for replica, words in (("master-0", "master"), ("worker-0", "early worker"), ("worker-1", "late worker")):
        log = write_cri_log(tmp_path / f"{replica}.log", [f"{words} line 1", f"{words} line 2"])
        kube_cluster.serve_pod_log(namespace, f"{job}-{replica}", log, container=CONTAINER_NAME)
    api = KubeApi(kubeconfig=str(kube_cluster.kubeconfig))
    kube_cluster.apply(
        replica_pod(job, namespace, "master-0", pod_behaviour(Outcome.RUN)),
        # Crashes after 2 s and is restarted in place (restartPolicy OnFailure), as a flaky worker would be.
        replica_pod(job, namespace, "worker-0", pod_behaviour(Outcome.FAIL, after="2s"), restart="OnFailure"),
        # Stays in ContainerCreating for 6 s: not readable when the first poll runs.
        replica_pod(job, namespace, "worker-1", {**pod_behaviour(Outcome.RUN), START_AFTER_ANNOTATION: "6s"}),
    )
    streams = ReplicaLogStreams(api, namespace, job)

    seen = collect(
        streams,
        lambda lines: texts(lines, "worker-1") and texts(lines, "worker-0").count("early worker line 1") >= 2,
        timeout=90,
    )
    assert texts(seen, "master-0")[:2] == ["master line 1", "master line 2"]
    assert not [line for line in seen if line.note]  # no stream broke off
    assert texts(seen, "worker-1")[:2] == ["late worker line 1", "late worker line 2"]
    # Each container start is read from its first line: the restarted worker's lines come again.
    assert texts(seen, "worker-0")[:4] == ["early worker line 1", "early worker line 2"] * 2

    # The training-operator recreates a failed pod under the same name: a new uid is a new stream.
    kube_cluster.kubectl("delete", "pod", f"{job}-master-0", "-n", namespace, "--wait=true")
    kube_cluster.apply(replica_pod(job, namespace, "master-0", pod_behaviour(Outcome.SUCCEED, after="2s")))
    seen = collect(streams, lambda lines: "master line 1" in texts(lines, "master-0"), timeout=60)
    assert texts(seen, "master-0")[:2] == ["master line 1", "master line 2"]

    # Only the replicas asked for are read.
    only_late = ReplicaLogStreams(api, namespace, job, replicas={"worker-1"})
    seen = collect(only_late, lambda lines: len(lines) >= 2, timeout=30)
    assert {line.replica for line in seen} == {"worker-1"}


def test_following_a_run_ends_when_the_run_has_finished(
    kube_cluster: KubeCluster, operator: OperatorProcess, kube_namespace: str, tmp_path: Path
) -> None:
    """``Client.logs(follow=True)`` (``trainrun logs -f``) returns by itself once the run is over, with
    every replica's lines, even where a log stream stays open after its container ended (kwok's do)."""
    namespace = kube_namespace
    for replica in ("master-0", "worker-0"):
        kube_cluster.serve_pod_log(namespace, f"ends-{replica}", write_cri_log(tmp_path / f"{replica}.log", [f"{replica} says hi"]))
    kubectl_apply(kube_cluster, training_run("ends", namespace, podMetadata={"annotations": pod_behaviour(Outcome.SUCCEED, after="4s")}))
    client = Client(kubeconfig=str(kube_cluster.kubeconfig), namespace=namespace)

    started = time.monotonic()
    followed = list(client.logs("ends", follow=True))
    assert ("master-0", "master-0 says hi") in followed and ("worker-0", "worker-0 says hi") in followed
    assert client.get("ends")["status"]["phase"] == "Completed"
    assert time.monotonic() - started < 90
