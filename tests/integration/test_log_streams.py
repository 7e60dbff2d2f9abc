"""``trainrun.kube.logs.ReplicaLogStreams`` against the real API server, with kwok serving the logs.

The operator's log follower and ``trainrun logs -f`` both read replicas through it, so what it must
get right is tested here once: a pod that starts later is followed from its first line, a container
restarted in place is read again, a pod the training-operator recreates under the same name (a new
uid) is read again, ``replicas`` limits what is read, a stream cut off mid-run (through a TCP proxy the
test severs) is read on from where it stopped, and following a run ends once the run is over.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from cluster.harness import POOL_LABEL, ClusterError, KubeCluster, Outcome, pod_behaviour, wait_until, write_cri_log
from runs import OperatorProcess, kubectl_apply, operator, training_run
from trainrun import Client
from trainrun.kube.api import KubeApi
from trainrun.kube.logs import LogLine, ReplicaLogStreams
from trainrun.render.children import COMPONENT_LABEL, CONTAINER_NAME, JOB_NAME_LABEL, REPLICA_COMPONENT, RUN_LABEL

pytestmark = pytest.mark.cluster
__all__ = ["operator"]  # a fixture, used by name

START_AFTER_ANNOTATION = "kwok.trainrun.dev/start-after"


def replica_pod(job: str, namespace: str, replica: str, annotations: dict[str, str], *, restart: str = "Never") -> dict[str, Any]:
    """A pod labelled as the training-operator labels replica REPLICA ("worker-1") of JOB, with the labels the
    operator renders on every replica pod of run JOB (what the streams select by, on either backend)."""
    kind, index = replica.split("-")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{job}-{replica}",
            "namespace": namespace,
            "labels": {
                JOB_NAME_LABEL: job,
                RUN_LABEL: job,
                COMPONENT_LABEL: REPLICA_COMPONENT,
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

    # Only the replicas asked for are read; tail starts at the last lines.
    only_late = ReplicaLogStreams(api, namespace, job, replicas={"worker-1"}, tail=1)
    seen = collect(only_late, lambda lines: len(lines) >= 1, timeout=30)
    assert [(line.replica, line.text) for line in seen] == [("worker-1", "late worker line 2")]

    # kwok keeps a followed log open after its container ended, as a stalled connection would:
    # close() ends every stream, so no reader thread outlives the follower that started it.
    for opened in (streams, only_late):
        assert opened.reading()
        opened.close()
        opened.wait(10)
        assert not opened.reading()
        assert not [line for line in opened.lines(0) if line.note]  # closing is not a broken stream


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


class SeverableProxy:
    """A TCP proxy to the API server whose open connections the test can cut (new ones still pass)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def sever(self) -> None:
        with self.lock:
            connections, self.connections = self.connections, []
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            connection.close()

    def close(self) -> None:
        self.listener.close()
        self.sever()


def test_a_stream_cut_off_mid_run_is_read_on_without_repeating_lines(
    kube_cluster: KubeCluster, kube_namespace: str, tmp_path: Path
) -> None:
    namespace, job = kube_namespace, "severed"
    log = write_cri_log(tmp_path / "master.log", ["epoch 1", "epoch 2", "epoch 3"])
    kube_cluster.serve_pod_log(namespace, f"{job}-master-0", log, container=CONTAINER_NAME)
    kube_cluster.apply(replica_pod(job, namespace, "master-0", pod_behaviour(Outcome.RUN)))
    config = yaml.safe_load(Path(kube_cluster.kubeconfig).read_text())
    server = urlsplit(config["clusters"][0]["cluster"]["server"])
    assert server.hostname is not None and server.port is not None
    proxy = SeverableProxy(server.hostname, server.port)
    try:
        config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
        proxied = tmp_path / "kubeconfig-through-proxy"
        proxied.write_text(yaml.safe_dump(config))
        streams = ReplicaLogStreams(KubeApi(kubeconfig=str(proxied)), namespace, job)
        seen = collect(streams, lambda lines: len(lines) >= 3, timeout=60)
        assert [line.text for line in seen] == ["epoch 1", "epoch 2", "epoch 3"]

        proxy.sever()  # as an API server restart or a load balancer's idle timeout would
        write_cri_log(log, ["epoch 4", "epoch 5"], append=True)
        seen += collect(streams, lambda lines: "epoch 5" in [line.text for line in lines], timeout=60)
    finally:
        proxy.close()
    assert [line.text for line in seen if not line.note] == [f"epoch {n}" for n in range(1, 6)]
    assert any(line.note and "broke off" in line.text for line in seen)
