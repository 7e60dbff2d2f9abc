"""The cluster backend of ``trainrun.Client``: TrainingRuns on the API server of the current kubeconfig.

Creates runs by server-side apply (the operator does the rest), reads them and their replica pods'
logs and events through ``trainrun.kube`` (the only module that talks to the API server), cancels
with ``spec.cancel: true`` and deletes the object (its children go with it). ``run`` creates a run
and follows it: phase changes and every replica's lines, parsed with the same ``MetricParser`` as the
operator and the local runner.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from trainrun.client.errors import ClientError, RunNotFound
from trainrun.kube.api import KubeApi
from trainrun.kube.logs import ReplicaLogStreams, replica_pods
from trainrun.kube.streams import training_container_name
from trainrun.metrics import MetricParser, MetricSummary, is_master
from trainrun.metrics.observer import RunObserver, metric_record
from trainrun.render import job_name
from trainrun.spec import OperatorConfig, parse_operator_config, validate_training_run
from trainrun.spec.config import CONFIG_MAP_KEY, CONFIG_MAP_NAME
from trainrun.spec.model import API_VERSION, KIND
from trainrun.spec.status import TrainingRunStatus
from trainrun.spec.sweep import SWEEP_KIND
from trainrun.status.observe import replica_sort_key
from trainrun.storage.logarchive import METRICS_CHANNEL

Object = dict[str, Any]
Objects = list[Object]  # spelled out: inside the classes, ``list`` is the method
FIELD_MANAGER = "trainrun-cli"
FOLLOW_POLL_SECONDS = 2.0
FINISHED_GRACE_SECONDS = 10.0
# A run without a phase this long after it was created has no operator serving it (the CLI says so).
OPERATOR_SILENCE_SECONDS = 30.0


class ClusterBackend:
    """TrainingRuns of one namespace (by default) on a cluster."""

    def __init__(
        self, *, kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None
    ) -> None:
        self.api = KubeApi(kubeconfig=kubeconfig, context=context)
        self.namespace = namespace

    def create(self, document: Object) -> Object:
        body = dict(document)
        metadata = dict(body.get("metadata") or {})
        metadata["namespace"] = self.namespace or metadata.get("namespace") or "default"
        body["metadata"] = metadata
        body.pop("status", None)
        return self.api.apply(body, field_manager=FIELD_MANAGER)

    def stage_code(self, document: Object, directory: Path, uri: str | None, max_bytes: int) -> str:
        """Upload the folder as a snapshot (.trainrunignore honoured, size capped, manifest last) to uri,
        by default ``<spec.output.uri>/code``; return the URI the replicas stage in."""
        from trainrun.storage import StorageOptions, upload_code_snapshot

        output_uri = ((document.get("spec") or {}).get("output") or {}).get("uri")
        target = uri or (f"{str(output_uri).rstrip('/')}/code" if output_uri else None)
        if target is None:
            raise ClientError("--code needs --code-uri (or spec.output.uri) to upload the folder to")
        options = StorageOptions.from_env(os.environ)
        return upload_code_snapshot(directory, target, options=options, max_bytes=max_bytes).uri

    def run(self, document: Object, *, observer: RunObserver | None = None) -> Object:
        """Create the run and report its phases and lines until it finishes; the finished run."""
        created = self.create(document)
        name = created["metadata"]["name"]
        parser = MetricParser.from_definitions(validate_training_run(created).spec.metrics)
        summary = MetricSummary()
        final: list[Object] = []

        def on_status(run: Object, status: TrainingRunStatus) -> None:
            if observer is not None:
                observer.phase(status)
            final[:] = [run]

        def on_silence() -> None:
            if observer is not None:
                observer.notice(
                    f"no operator has taken up trainingrun {name} after {OPERATOR_SILENCE_SECONDS:.0f} s (it has no "
                    "status): is the trainrun operator running? kubectl get deployment -n trainrun-system "
                    "trainrun-operator; install it with kubectl apply --server-side -k manifests/"
                )

        for replica, text in self._follow(name, replica=None, on_status=on_status, on_silence=on_silence):
            if observer is None:
                continue
            observer.line(replica, text)
            samples = parser.parse(text)
            if samples:
                summary.add(samples, from_master=is_master(replica))
                observer.metrics(metric_record(replica, samples), summary)
        return final[0] if final else self.get(name)

    def get(self, name: str) -> Object:
        found = self.api.get(API_VERSION, KIND, name, self._namespace())
        if found is None:
            raise RunNotFound(f"no TrainingRun {name!r} in namespace {self._namespace()!r}")
        return found

    def list(self, *, all_namespaces: bool = False) -> Objects:
        return self.api.list(API_VERSION, KIND, None if all_namespaces else self._namespace())

    def create_sweep(self, document: Object) -> Object:
        """Apply the TrainingSweep; the operator runs its trials."""
        return self.create(document)

    def get_sweep(self, name: str) -> Object:
        found = self.api.get(API_VERSION, SWEEP_KIND, name, self._namespace())
        if found is None:
            raise RunNotFound(f"no TrainingSweep {name!r} in namespace {self._namespace()!r}")
        return found

    def list_sweeps(self, *, all_namespaces: bool = False) -> Objects:
        return self.api.list(API_VERSION, SWEEP_KIND, None if all_namespaces else self._namespace())

    def where(self, *, all_namespaces: bool = False) -> str:
        """Where runs were looked for, as kubectl says it: ``in namespace 'team-a'``."""
        return "in any namespace" if all_namespaces else f"in namespace {self._namespace()!r}"

    def logs(
        self, name: str, *, follow: bool = False, replica: str | None = None, tail: int | None = None
    ) -> Iterator[tuple[str, str]]:
        """(replica, line) of the run's replica pods, Master first; follow streams them until the run ends.

        Once the pods are gone (cleaned up after the run, a node lost), the lines come from the run's log
        archive (``status.logs.uri``, read with the credentials of this environment), the same lines."""
        wanted = None if replica in (None, "all") else replica
        run = self.get(name)
        pods = self._pods(run)
        if wanted is not None:
            pods = {key: pod for key, pod in pods.items() if key == wanted}
        status = TrainingRunStatus.model_validate(run.get("status") or {})
        finished = status.phase is not None and status.phase.finished
        if not pods and (not follow or finished or (status.logs is not None and status.logs.sealed)):
            yield from self._archived(run, wanted, tail)
            return
        if follow:  # pods that start later are followed too
            yield from self._follow(name, replica=wanted, on_status=None, tail=tail)
            return
        for replica_id, pod in pods.items():
            container = training_container_name(pod)
            for line in self.api.pod_logs(pod["metadata"]["name"], self._namespace(), container=container, tail_lines=tail):
                yield replica_id, line

    def _archived(self, run: Object, wanted: str | None, tail: int | None) -> Iterator[tuple[str, str]]:
        """The lines of the run's log archive, per replica (Master first), or why there are none."""
        name = run["metadata"]["name"]
        uri = ((run.get("status") or {}).get("logs") or {}).get("uri")
        if uri is None:
            if wanted is None:
                return  # no pod has started yet: nothing to print
            raise RunNotFound(f"run {name!r} has no pod for replica {wanted!r} (yet) and no log archive (status.logs)")
        channels = archived_channels(uri)
        replicas = sorted((key for key in channels if key != METRICS_CHANNEL), key=replica_sort_key)
        if wanted is not None and wanted not in replicas:
            raise RunNotFound(f"run {name!r} has no pod and no archived log for replica {wanted!r}")
        for replica_id in [wanted] if wanted is not None else replicas:
            lines = channels[replica_id]
            for line in lines if tail is None else lines[max(0, len(lines) - tail) :]:
                yield replica_id, line

    def _follow(
        self,
        name: str,
        *,
        replica: str | None,
        on_status: Callable[[Object, TrainingRunStatus], None] | None,
        tail: int | None = None,
        on_silence: Callable[[], None] | None = None,
    ) -> Iterator[tuple[str, str]]:
        """Lines of every replica pod (or one) as they come, pods that start later included, until the run
        has finished and its streams have ended; on_status hears each phase change, on_silence once when
        the run still has no phase after OPERATOR_SILENCE_SECONDS (no operator is serving it)."""
        run = self.get(name)
        wanted = None if replica is None else {replica}
        streams = ReplicaLogStreams(self.api, self._namespace(), _job_name(run), replicas=wanted, tail=tail)
        try:
            yield from self._follow_streams(name, run, streams, on_status, on_silence)
        finally:  # also when the caller stops reading early
            streams.close()

    def _follow_streams(
        self,
        name: str,
        run: Object,
        streams: ReplicaLogStreams,
        on_status: Callable[[Object, TrainingRunStatus], None] | None,
        on_silence: Callable[[], None] | None,
    ) -> Iterator[tuple[str, str]]:
        last_phase = None
        finished_at: float | None = None
        silent_until = time.monotonic() + OPERATOR_SILENCE_SECONDS
        while True:
            status = TrainingRunStatus.model_validate(run.get("status") or {})
            if on_status is not None and status.phase is not None and status.phase != last_phase:
                on_status(run, status)
                last_phase = status.phase
            if on_silence is not None and status.phase is None and time.monotonic() > silent_until:
                on_silence()
                on_silence = None
            streams.poll()
            if finished_at is None and status.phase is not None and status.phase.finished:
                finished_at = time.monotonic()
            # A stream normally ends with its container; one left open (a stalled connection) is cut
            # a grace period after the run has finished.
            done = finished_at is not None and (
                not streams.reading() or time.monotonic() - finished_at > FINISHED_GRACE_SECONDS
            )
            for line in streams.lines(0 if done else FOLLOW_POLL_SECONDS):
                yield line.replica, line.text
            if done:
                return
            run = self.get(name)

    def metric_history(self, name: str) -> Objects:
        """Metric records parsed from the Master's log (the status keeps only the latest values), or every
        replica's series from the log archive once the pods are gone."""
        run = self.get(name)
        uri = ((run.get("status") or {}).get("logs") or {}).get("uri")
        if uri is not None and not self._pods(run):
            return [json.loads(line) for line in archived_channels(uri).get(METRICS_CHANNEL, [])]
        parser = MetricParser.from_definitions(validate_training_run(run).spec.metrics)
        history = []
        for replica, line in self.logs(name, replica="master-0"):
            samples = parser.parse(line)
            if samples:
                history.append(metric_record(replica, samples))
        return history

    def events(self, name: str) -> Objects:
        run = self.get(name)
        job = _job_name(run)
        pods = replica_pods(self.api, self._namespace(), job)
        involved = [name, job, *(pod["metadata"]["name"] for pod in pods.values())]
        return self.api.events(self._namespace(), involved_names=involved)

    def default_output_uri(self, run: Object) -> str:
        """A cluster run without spec.output.uri copies nothing: its outputs stay on the cluster's volume."""
        raise RunNotFound(
            f"run {run['metadata']['name']!r} has no spec.output.uri: its outputs stayed on the cluster's volume"
        )

    def cancel(self, name: str) -> Object:
        self.get(name)
        return self.api.patch_merge(API_VERSION, KIND, name, self._namespace(), {"spec": {"cancel": True}})

    def annotate(self, name: str, annotations: Mapping[str, str]) -> Object:
        return self.api.patch_merge(API_VERSION, KIND, name, self._namespace(), {"metadata": {"annotations": dict(annotations)}})

    def delete(self, name: str) -> bool:
        return self.api.delete(API_VERSION, KIND, name, self._namespace())

    def operator_config(self) -> OperatorConfig | None:
        """The operator's configuration, from its ConfigMap (in ``TRAINRUN_OPERATOR_NAMESPACE``, else
        trainrun-system); a user without the right to read it gets an error saying what to do instead."""
        namespace = os.environ.get("TRAINRUN_OPERATOR_NAMESPACE", "trainrun-system")
        try:
            found = self.api.get("v1", "ConfigMap", CONFIG_MAP_NAME, namespace)
        except Exception as error:  # noqa: BLE001 - forbidden, unreachable: one line that says what else works
            raise ClientError(
                f"cannot read the operator configuration (ConfigMap {namespace}/{CONFIG_MAP_NAME}): {error}; "
                "set MLFLOW_TRACKING_URI or give the configuration with --config FILE"
            ) from None
        if found is None:
            return None
        return parse_operator_config(yaml.safe_load((found.get("data") or {}).get(CONFIG_MAP_KEY) or "") or {})

    def _namespace(self) -> str:
        return self.namespace or "default"

    def _pods(self, run: Object) -> dict[str, Object]:
        """The run's replica pods by replica name (master-0, worker-0, ...), Master first."""
        return replica_pods(self.api, self._namespace(), _job_name(run))


def archived_channels(uri: str) -> dict[str, list[str]]:
    """Every channel (replica, metrics) of a log archive, read with this environment's credentials."""
    from trainrun.storage import StorageError, StorageOptions
    from trainrun.storage.logstore import read_archived_logs

    try:
        return read_archived_logs(uri, StorageOptions.from_env(os.environ))
    except (StorageError, ValueError) as error:
        raise ClientError(f"cannot read the log archive {uri}: {error}") from error


def _job_name(run: Object) -> str:
    return job_name(validate_training_run(run))
