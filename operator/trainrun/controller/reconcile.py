"""One reconcile of one TrainingRun: read it, converge its children, observe them, write its status.

Level-based and idempotent: every call reads the world afresh and pushes it one step towards the
spec, so it may run twice, after a crash or out of order with the same result. The kopf handlers
(``trainrun.controller.handlers``) call :meth:`Reconciler.reconcile` on every change of a run or of one
of its children and on a timer; decisions live in the pure ``render`` and ``status`` packages.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import yaml

from trainrun.controller.artifacts import ArtifactReader
from trainrun.controller.telemetry import PHASE_CHANGES
from trainrun.kube import KindNotServed, KubeApi, KubeError
from trainrun.render import FIELD_MANAGER, render_pytorchjob, render_uploader_job, render_volume_claim
from trainrun.render.changes import decode_applied_spec, pending_changes
from trainrun.render.children import (
    PYTORCHJOB_API_VERSION,
    PYTORCHJOB_KIND,
    RUN_LABEL,
    canonical_spec,
    job_name,
    uploader_job_name,
    volume_claim_name,
)
from trainrun.spec import (
    InvalidTrainingRun,
    OperatorConfig,
    TrainingRun,
    load_training_run,
    parse_operator_config,
    problems_with_config,
)
from trainrun.spec.config import CONFIG_MAP_KEY, CONFIG_MAP_NAME
from trainrun.spec.model import API_VERSION, KIND
from trainrun.spec.status import Phase, TrainingRunStatus
from trainrun.status import compute_status, phase_event
from trainrun.status.observe import observe_job

logger = logging.getLogger(__name__)

Object = dict[str, Any]
OPERATOR_NAMESPACE = os.environ.get("TRAINRUN_OPERATOR_NAMESPACE", "trainrun-system")
# Fields of status that the log follower owns; a reconcile never writes them, so neither overwrites the other.
FOLLOWER_FIELDS = frozenset({"metrics", "keyMetric"})
CONFIG_TTL_SECONDS = 10.0


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ConfigSource:
    """The operator's configuration from its ConfigMap, read at most every few seconds."""

    def __init__(self, api: KubeApi, *, namespace: str = OPERATOR_NAMESPACE) -> None:
        self.api = api
        self.namespace = namespace
        self._cached: tuple[float, OperatorConfig, list[str]] | None = None

    def current(self) -> tuple[OperatorConfig, list[str]]:
        """(config, problems): a missing or broken ConfigMap gives the defaults and a problem to report."""
        if self._cached is not None and time.monotonic() - self._cached[0] < CONFIG_TTL_SECONDS:
            return self._cached[1], self._cached[2]
        problems: list[str] = []
        config = OperatorConfig()
        where = f"ConfigMap {self.namespace}/{CONFIG_MAP_NAME} key {CONFIG_MAP_KEY}"
        try:
            config_map = self.api.get("v1", "ConfigMap", CONFIG_MAP_NAME, self.namespace)
            text = (config_map or {}).get("data", {}).get(CONFIG_MAP_KEY)
            if text is not None:
                config = parse_operator_config(yaml.safe_load(text))
        except (yaml.YAMLError, ValueError) as error:
            problems.append(f"the operator configuration ({where}) is invalid: {error}")
        self._cached = (time.monotonic(), config, problems)
        return config, problems


class Reconciler:
    """Converges TrainingRuns; safe to call from several threads (one run at a time per run)."""

    def __init__(self, api: KubeApi, *, config_source: ConfigSource | None = None) -> None:
        self.api = api
        self.config_source = config_source or ConfigSource(api)
        self.artifacts = ArtifactReader(api)
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _lock_for(self, namespace: str, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def reconcile_named(self, namespace: str, name: str) -> None:
        """Reconcile a run by name (for events of its children); a deleted run is nothing to do."""
        body = self.api.get(API_VERSION, KIND, name, namespace)
        if body is not None and not body["metadata"].get("deletionTimestamp"):
            self.reconcile(body)

    def reconcile(self, body: Mapping[str, Any]) -> TrainingRunStatus:
        metadata = body["metadata"]
        with self._lock_for(metadata["namespace"], metadata["name"]):
            # The body may be stale when two triggers race: act on the newest copy.
            fresh = self.api.get(API_VERSION, KIND, metadata["name"], metadata["namespace"])
            if fresh is None:
                return TrainingRunStatus()
            return self._reconcile(fresh)

    def _reconcile(self, body: Mapping[str, Any]) -> TrainingRunStatus:
        metadata = body["metadata"]
        previous = _previous_status(body)
        config, problems = self.config_source.current()
        try:
            run = load_training_run(body)
        except InvalidTrainingRun as error:
            return self._write_invalid(body, previous, [str(problem) for problem in error.problems])
        problems = problems + [str(problem) for problem in problems_with_config(run, config)]
        pool_name, _ = config.pool_named(run.spec.resources.pool)
        job: Object | None = None
        pending: list[str] = []
        uploader: Object | None = None
        if not problems:
            try:
                job, pending = self._converge_job(run, config, previous)
            except KindNotServed:
                problems.append(
                    "the cluster does not serve PyTorchJob (kubeflow.org/v1): install the Kubeflow "
                    "training-operator, then the run starts by itself"
                )
        known = previous
        if job is not None:
            uploader = self._converge_upload(run, config, job, previous)
            artifacts, artifact_problem = self.artifacts.read(run, uploader, previous)
            if artifact_problem:
                problems.append(artifact_problem)
            known = previous.model_copy(update={"artifacts": artifacts})
        # Replica pods and the uploader's pods alike carry the run label.
        pods = self.api.list("v1", "Pod", metadata["namespace"], label_selector=f"{RUN_LABEL}={run.metadata.name}")
        involved = [job_name(run), uploader_job_name(run), *(pod["metadata"]["name"] for pod in pods)]
        events = self.api.events(metadata["namespace"], involved_names=involved)
        status = compute_status(
            run=run,
            job=job,
            pods=pods,
            events=events,
            uploader_job=uploader,
            previous=known,
            problems=problems,
            pending_changes=pending,
            pool=pool_name,
            now=utc_now(),
        )
        self._write_status(body, previous, status)
        if status.phase == Phase.COMPLETED and status.artifacts is not None:
            self._release_volume(run)
        return status

    def _converge_job(
        self, run: TrainingRun, config: OperatorConfig, previous: TrainingRunStatus
    ) -> tuple[Object | None, list[str]]:
        """Create the job once, apply spec changes when it can take them, and report the ones it cannot."""
        namespace = run.metadata.namespace
        job = self.api.get(PYTORCHJOB_API_VERSION, PYTORCHJOB_KIND, job_name(run), namespace)
        desired = render_pytorchjob(run, config)
        if job is None:
            if previous.phase is not None and (previous.phase.finished or previous.phase == Phase.UPLOADING):
                # Training ended and the job was cleaned up (ttlSecondsAfterFinished): never train again.
                return None, []
            claim = render_volume_claim(run)
            if claim is not None:
                self.api.apply(claim, field_manager=FIELD_MANAGER)
            return self.api.apply(desired, field_manager=FIELD_MANAGER), []
        applied = decode_applied_spec(job) or {}
        changes = pending_changes(applied, canonical_spec(run))
        observed = observe_job(job)
        assert observed is not None  # job is a mapping here
        finished = observed.has("Succeeded") or observed.has("Failed")
        if finished:
            return job, changes
        pods_gone = observed.has("Suspended") or observed.start_time is None
        queued_and_admitted = run.spec.resources.queue is not None and not (
            run.spec.run_policy.suspend or run.spec.cancel
        )
        if queued_and_admitted:
            # Kueue owns suspend once the job exists: never put an admitted job back in the queue.
            del desired["spec"]["runPolicy"]["suspend"]
        if changes and pods_gone:
            return self.api.apply(desired, field_manager=FIELD_MANAGER), []
        live_policy = {
            key: value
            for key, value in desired["spec"]["runPolicy"].items()
            if job["spec"].get("runPolicy", {}).get(key) != value
        }
        if live_policy:
            job = self.api.patch_merge(
                PYTORCHJOB_API_VERSION,
                PYTORCHJOB_KIND,
                job_name(run),
                namespace,
                {"spec": {"runPolicy": live_policy}},
            )
        return job, changes

    def _converge_upload(
        self, run: TrainingRun, config: OperatorConfig, job: Object, previous: TrainingRunStatus
    ) -> Object | None:
        """Start the uploader Job when training is over and a copy is due; return it."""
        output = run.spec.output
        if output.uri is None:
            return None
        uploader = self.api.get("batch/v1", "Job", uploader_job_name(run), run.metadata.namespace)
        observed = observe_job(job)
        copy_due = observed is not None and (
            observed.has("Succeeded") or (output.copy_on_failure and observed.has("Failed"))
        )
        if uploader is None and copy_due and previous.artifacts is None:
            uploader = self.api.apply(render_uploader_job(run, config), field_manager=FIELD_MANAGER)
        return uploader

    def _release_volume(self, run: TrainingRun) -> None:
        """After a verified copy the per-run claim goes, unless the spec keeps it (or it is the user's own)."""
        if run.spec.output.keep_volume or run.spec.output.volume.claim_name is not None:
            return
        self.api.delete("v1", "PersistentVolumeClaim", volume_claim_name(run), run.metadata.namespace)

    def _write_invalid(
        self, body: Mapping[str, Any], previous: TrainingRunStatus, problems: list[str]
    ) -> TrainingRunStatus:
        status = compute_status(
            run=None,
            job=None,
            pods=[],
            events=[],
            uploader_job=None,
            previous=previous,
            problems=problems,
            pending_changes=[],
            pool=None,
            now=utc_now(),
            generation=body["metadata"].get("generation"),
        )
        self._write_status(body, previous, status)
        return status

    def _write_status(self, body: Mapping[str, Any], previous: TrainingRunStatus, status: TrainingRunStatus) -> None:
        metadata = body["metadata"]
        patch = status_patch(previous, status)
        if patch:
            self.api.patch_merge(
                API_VERSION, KIND, metadata["name"], metadata["namespace"], {"status": patch}, subresource="status"
            )
        change = phase_event(previous, status)
        if change is not None:
            self._post_event(body, change.type, change.reason, change.message)
            if status.phase is not None:
                PHASE_CHANGES.labels(phase=status.phase.value).inc()

    def _post_event(self, body: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        metadata = body["metadata"]
        now = utc_now()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{metadata['name']}.", "namespace": metadata["namespace"]},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata.get("uid"),
            },
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "trainrun-operator"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.api.create(event)
        except KubeError as error:  # an Event is worth a log line, never a failed reconcile
            logger.warning("could not post event %s for %s: %s", reason, metadata["name"], error)


def _previous_status(body: Mapping[str, Any]) -> TrainingRunStatus:
    try:
        return TrainingRunStatus.model_validate(body.get("status") or {})
    except ValueError:
        return TrainingRunStatus()


def status_patch(previous: TrainingRunStatus, status: TrainingRunStatus) -> dict[str, Any]:
    """A merge patch from the old status to the new one: changed fields, and null for fields now unset."""
    old = previous.model_dump(mode="json", by_alias=True)
    new = status.model_dump(mode="json", by_alias=True)
    return {key: value for key, value in new.items() if key not in FOLLOWER_FIELDS and old.get(key) != value}
