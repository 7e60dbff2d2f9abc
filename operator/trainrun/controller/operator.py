"""The operator's controller: watch caches in, ``plan`` in the middle, the API server's writes out.

Made by ``trainrun.controller.handlers`` at kopf's start-up and fed TrainingRun events by its kopf
handler. Per run, a reconcile is only: read the run and its children from memory (``informers``) ->
``trainrun.plan.plan`` (pure) -> server-side apply what the plan says -> post its Events through the
deduplicating :class:`EventRecorder` -> patch status once, when it changed -> requeue at the plan's
deadline. Work comes from a coalescing :class:`~trainrun.controller.queue.WorkQueue` that only the
leader (``trainrun.controller.leader``) works on; the standby keeps its caches warm. Log followers
(``trainrun.controller.logs``) run as tasks for the active runs the leader owns.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from trainrun.controller import telemetry
from trainrun.controller.artifacts import ArtifactReader
from trainrun.controller.informers import Informer, Key
from trainrun.controller.logs import RunLogs
from trainrun.controller.queue import WorkQueue
from trainrun.kube.aioclient import (
    CLAIMS,
    CONFIG_MAPS,
    EVENTS,
    JOBS,
    PODS,
    PYTORCHJOBS,
    TRAINING_RUNS,
    ApiError,
    AsyncKube,
    resource_of,
)
from trainrun.plan import EVENT_REASONS, Apply, Delete, MergePatch, Observed, Plan, plan, projections
from trainrun.plan.causes import taken_away
from trainrun.render import FIELD_MANAGER
from trainrun.render.children import RUN_LABEL
from trainrun.spec import OperatorConfig, TrainingRun, parse_operator_config
from trainrun.spec.config import CONFIG_MAP_KEY, CONFIG_MAP_NAME
from trainrun.spec.model import API_VERSION, KIND
from trainrun.status import PhaseEvent
from trainrun.status.shapes import utc_now
from trainrun.storage import StorageError
from trainrun.storage.logstore import LogArchive

logger = logging.getLogger(__name__)

Object = dict[str, Any]
RECONCILE_WORKERS = 16
METRICS_WRITE_SECONDS = 5.0  # at most one status write per run this often for new metric values
REFUSAL_RETRY_SECONDS = 300.0
MANIFEST_RETRY_SECONDS = 5.0  # the uploader succeeded but the manifest is not readable: look again after this
MANIFEST_RETRY_MAX_SECONDS = 300.0  # a child the API server refused is tried again after this long
EVENTS_PER_OBJECT = 8
# Changes of a run's children within this window give one reconcile (a job's pods are created,
# scheduled and started within moments of each other): fewer status writes, each a settled view.
CHILD_COALESCE_SECONDS = 1.0


@dataclass
class RunMemory:
    """What the controller remembers about one run between reconciles (all of it can be lost)."""

    manifest_failures: int = 0  # reads of <output>/manifest.json that found no verified copy yet
    seal_failures: int = 0  # seals of the log archive the object store did not take yet
    sealing: asyncio.Task[RunLogs | None] | None = None  # finishing the follower and sealing the archive
    seal_not_before: float = 0.0  # after a failed seal: the loop time the next try may start
    refusal: tuple[int | None, str, float] | None = None  # (generation, the server's words, when)
    logs: RunLogs | None = None
    posted: set[str] = field(default_factory=set)


class EventRecorder:
    """Posts a run's phase Events once: the Event's name is derived from what it says, so a second
    replica or a restarted operator posting the same transition gets 409 AlreadyExists."""

    def __init__(self, kube: AsyncKube, *, instance: str) -> None:
        self.kube = kube
        self.instance = instance

    @staticmethod
    def event_name(run: Mapping[str, Any], change: PhaseEvent, generation: int | None) -> str:
        metadata = run["metadata"]
        digest = hashlib.sha256(
            f"{metadata.get('uid')}|{generation}|{change.reason}|{change.message}".encode()
        ).hexdigest()[:16]
        return f"{str(metadata['name'])[:200]}.{digest}"

    async def record(self, run: Mapping[str, Any], change: PhaseEvent, generation: int | None, posted: set[str]) -> None:
        metadata = run["metadata"]
        name = self.event_name(run, change, generation)
        if name in posted:
            return
        now = utc_now()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": metadata["namespace"]},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata.get("uid"),
            },
            "type": change.type,
            "reason": change.reason,
            "message": change.message[:1024],
            "source": {"component": "trainrun-operator"},
            "reportingComponent": "trainrun-operator",
            "reportingInstance": self.instance[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.kube.create(EVENTS, metadata["namespace"], event)
        except ApiError as error:
            if error.status != 409:  # 409: this transition was posted already (by us before a restart, or a peer)
                logger.warning("could not post event %s for %s: %s", change.reason, metadata["name"], error)
                return
        posted.add(name)


class Controller:
    """Reconciles every TrainingRun in the watched namespaces (None: all)."""

    def __init__(
        self,
        kube: AsyncKube,
        *,
        operator_namespace: str,
        namespaces: list[str | None],
        instance: str,
        workers: int = RECONCILE_WORKERS,
    ) -> None:
        self.kube = kube
        self.operator_namespace = operator_namespace
        self.runs: dict[Key, Object] = {}
        self.written: dict[Key, tuple[int, Object]] = {}  # the last status this process wrote, by resourceVersion
        self.memory: dict[Key, RunMemory] = {}
        self.queue = WorkQueue(self._reconcile_key, workers=workers)
        self.recorder = EventRecorder(kube, instance=instance)
        self.artifacts = ArtifactReader(kube)
        self.config = OperatorConfig()
        self.config_problems: list[str] = []
        self.pods_by_run: dict[Key, dict[str, Object]] = {}
        self.run_of_pod: dict[Key, Key] = {}
        # Replica pods the cluster took away (node lost, preempted, evicted), as last seen before they were
        # deleted: the pod the training-operator makes in their place does not tell why (trainrun.plan.causes).
        self.gone_pods: dict[Key, dict[str, Object]] = {}
        self.events_by_object: dict[Key, list[Object]] = {}
        by_label = {"labelSelector": RUN_LABEL}
        self.jobs: list[Informer] = []
        self.uploaders: list[Informer] = []
        self.claims: list[Informer] = []
        self.informers: list[Informer] = []
        for namespace in namespaces:
            job_informer = Informer(
                kube, PYTORCHJOBS, namespace, project=projections.pytorchjob, on_change=self._on_child, params=by_label
            )
            job_informer.on_served_change = self._on_job_kind_served
            uploader_informer = Informer(
                kube, JOBS, namespace, project=projections.batch_job, on_change=self._on_child, params=by_label
            )
            claim_informer = Informer(
                kube, CLAIMS, namespace, project=projections.identity, on_change=self._on_child, params=by_label
            )
            self.jobs.append(job_informer)
            self.uploaders.append(uploader_informer)
            self.claims.append(claim_informer)
            self.informers += [
                job_informer,
                uploader_informer,
                claim_informer,
                Informer(kube, PODS, namespace, project=projections.pod, on_change=self._on_pod, params=by_label),
                Informer(
                    kube,
                    EVENTS,
                    namespace,
                    project=projections.event,
                    on_change=self._on_event,
                    keep=lambda event: event.get("reason") in EVENT_REASONS,
                ),
            ]
        self.informers.append(
            Informer(
                kube,
                CONFIG_MAPS,
                operator_namespace,
                project=projections.config_map,
                on_change=self._on_config,
                params={"fieldSelector": f"metadata.name={CONFIG_MAP_NAME}"},
            )
        )

    # ---- inputs: kopf's TrainingRun events and the watch caches ----

    def run_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A TrainingRun event from kopf (type None: the initial listing)."""
        projected = projections.training_run(body)
        key = (str(projected["metadata"].get("namespace")), str(projected["metadata"].get("name")))
        if event_type == "DELETED":
            self.runs.pop(key, None)
            self.written.pop(key, None)
        else:
            written = self.written.get(key)
            if written is not None and _version(projected) < written[0]:
                # An event from before this process's last status write: keep what was written, so the
                # next reconcile does not decide from a status that is no longer there.
                projected["status"] = written[1]
            self.runs[key] = projected
        self.queue.add(key)

    def _on_child(self, old: Object | None, new: Object | None) -> None:
        for obj in (old, new):
            if obj is not None:
                labels = obj["metadata"].get("labels") or {}
                if RUN_LABEL in labels:
                    self.queue.add((str(obj["metadata"].get("namespace")), str(labels[RUN_LABEL])), CHILD_COALESCE_SECONDS)

    def _on_pod(self, old: Object | None, new: Object | None) -> None:
        current = new if new is not None else old
        if current is None:
            return
        metadata = current["metadata"]
        run_key = (str(metadata.get("namespace")), str((metadata.get("labels") or {}).get(RUN_LABEL)))
        pod_key = (run_key[0], str(metadata["name"]))
        if new is not None:
            self.pods_by_run.setdefault(run_key, {})[pod_key[1]] = new
            self.run_of_pod[pod_key] = run_key
        else:
            if old is not None and taken_away(old):
                self.gone_pods.setdefault(run_key, {})[str(metadata.get("uid"))] = old
            pods = self.pods_by_run.get(run_key, {})
            pods.pop(pod_key[1], None)
            self.run_of_pod.pop(pod_key, None)
            if not pods:
                self.pods_by_run.pop(run_key, None)
        self.queue.add(run_key, CHILD_COALESCE_SECONDS)

    def _on_event(self, old: Object | None, new: Object | None) -> None:
        if old is not None:
            key = self._involved(old)
            kept = [event for event in self.events_by_object.get(key, []) if event["metadata"] != old["metadata"]]
            if kept:
                self.events_by_object[key] = kept
            else:
                self.events_by_object.pop(key, None)
        if new is not None:
            key = self._involved(new)
            events = [event for event in self.events_by_object.get(key, []) if event["metadata"] != new["metadata"]]
            self.events_by_object[key] = [*events, new][-EVENTS_PER_OBJECT:]
            run = self._run_of_object(key)
            if run is not None:
                self.queue.add(run, CHILD_COALESCE_SECONDS)

    @staticmethod
    def _involved(event: Mapping[str, Any]) -> Key:
        involved = event.get("involvedObject") or {}
        namespace = involved.get("namespace") or (event.get("metadata") or {}).get("namespace")
        return str(namespace), str(involved.get("name"))

    def _run_of_object(self, key: Key) -> Key | None:
        """The run an Event's object belongs to: its PyTorchJob, uploader Job or one of its pods."""
        namespace, name = key
        if key in self.runs:
            return key  # the PyTorchJob is named after its run
        if name.endswith("-upload") and (namespace, name.removesuffix("-upload")) in self.runs:
            return namespace, name.removesuffix("-upload")
        return self.run_of_pod.get(key)

    def _on_config(self, old: Object | None, new: Object | None) -> None:
        config, problems = OperatorConfig(), []
        text = (new or {}).get("data", {}).get(CONFIG_MAP_KEY)
        where = f"ConfigMap {self.operator_namespace}/{CONFIG_MAP_NAME} key {CONFIG_MAP_KEY}"
        if text is not None:
            try:
                config = parse_operator_config(yaml.safe_load(text))
            except (yaml.YAMLError, ValueError) as error:
                problems.append(f"the operator configuration ({where}) is invalid: {error}")
        self.config, self.config_problems = config, problems
        self.requeue_all()

    def _on_job_kind_served(self, served: bool) -> None:
        self.requeue_all()

    def requeue_all(self) -> None:
        for key in self.runs:
            self.queue.add(key)

    @property
    def synced(self) -> bool:
        return all(informer.synced.is_set() for informer in self.informers)

    async def wait_synced(self) -> None:
        await asyncio.gather(*(informer.synced.wait() for informer in self.informers))

    # ---- leadership ----

    def leading(self, leading: bool) -> None:
        """Start working the queue as leader, or stop (followers stop; nothing is archived)."""
        if leading:
            self.queue.active.set()
            self.requeue_all()
        else:
            self.queue.active.clear()
            for memory in self.memory.values():
                if memory.sealing is not None:
                    memory.sealing.cancel()
                    memory.sealing = None
                if memory.logs is not None:
                    asyncio.get_running_loop().create_task(memory.logs.stop())
                    memory.logs = None
                    telemetry.LOG_FOLLOWERS.dec()

    async def stop_followers(self) -> None:
        await asyncio.gather(*(memory.logs.stop() for memory in self.memory.values() if memory.logs is not None))

    # ---- one reconcile ----

    def observed(self, key: Key, body: Mapping[str, Any], memory: RunMemory) -> Observed:
        """The run's world as the watches and this process's memory know it."""
        namespace, name = key
        generation = (body.get("metadata") or {}).get("generation")
        refusal = None
        if memory.refusal is not None:
            refused_generation, words, when = memory.refusal
            loop_time = asyncio.get_running_loop().time()
            if refused_generation == generation and loop_time - when < REFUSAL_RETRY_SECONDS:
                refusal = words
            else:
                memory.refusal = None
        pods = list(self.pods_by_run.get(key, {}).values())
        involved = [name, f"{name}-upload", *(pod["metadata"]["name"] for pod in pods)]
        events = [event for object_name in involved for event in self.events_by_object.get((namespace, object_name), [])]
        claim_name = f"{name}-outputs"
        spec_claim = ((body.get("spec") or {}).get("output") or {}).get("volume") or {}
        if spec_claim.get("claimName"):
            claim_name = str(spec_claim["claimName"])
        return Observed(
            job=_find(self.jobs, key),
            pods=pods,
            events=events,
            uploader=_find(self.uploaders, (namespace, f"{name}-upload")),
            claim_present=_find(self.claims, (namespace, claim_name)) is not None,
            job_kind_served=all(informer.served for informer in self.jobs),
            refusal=refusal,
            metrics=memory.logs.metrics if memory.logs is not None else None,
            key_metric=memory.logs.key_metric if memory.logs is not None else None,
            progress=memory.logs.progress.snapshot() if memory.logs is not None else None,
            gone_pods=list(self.gone_pods.get(key, {}).values()),
        )

    async def _reconcile_key(self, key: Hashable) -> float | None:
        assert isinstance(key, tuple)
        run_key: Key = key
        started = asyncio.get_running_loop().time()
        result = "error"
        try:
            after = await self.reconcile(run_key)
            result = "ok"
            return after
        finally:
            telemetry.RECONCILE_SECONDS.observe(asyncio.get_running_loop().time() - started)
            telemetry.RECONCILES.labels(trigger="watch", result=result).inc()

    async def reconcile(self, key: Key) -> float | None:
        body = self.runs.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            await self._forget(key)
            return None
        memory = self.memory.setdefault(key, RunMemory())
        observed = self.observed(key, body, memory)
        decided = self._plan(body, observed)
        retry_manifest: float | None = None
        if decided.seal_logs and decided.run is not None:
            sealed = self._sealed(key, memory, decided.run, decided.log_archive)
            if sealed is not None:
                observed = replace(observed, logs_archived=True, metrics=sealed.metrics, key_metric=sealed.key_metric)
                decided = self._plan(body, observed)
            elif memory.sealing is None:  # the last try failed: the next one after a back-off
                retry_manifest = memory.seal_not_before - asyncio.get_running_loop().time()
        if decided.read_manifest and decided.run is not None:
            manifest = await self.artifacts.read_manifest(decided.run, decided.log_archive)
            decided = self._plan(body, replace(observed, manifest=manifest))
            if manifest.artifacts is None:
                # Not there yet, or not readable: the status says why; read again later, less and less often.
                memory.manifest_failures += 1
                retry_manifest = min(MANIFEST_RETRY_MAX_SECONDS, MANIFEST_RETRY_SECONDS * 2 ** (memory.manifest_failures - 1))
        refusal = await self._act(decided)
        if refusal is not None:
            generation = body["metadata"].get("generation")
            memory.refusal = (generation, refusal, asyncio.get_running_loop().time())
            decided = self._plan(body, replace(observed, refusal=refusal))
        generation = decided.status.observed_generation
        for change in decided.events:
            await self.recorder.record(body, change, generation, memory.posted)
            if decided.status.phase is not None:
                telemetry.PHASE_CHANGES.labels(phase=decided.status.phase.value).inc()
        if decided.status_patch:
            patched = await self.kube.patch_merge(
                TRAINING_RUNS, key[0], key[1], {"status": decided.status_patch}, subresource="status"
            )
            # The watch brings the new status soon; meanwhile the next reconcile must not decide from the
            # old one (kopf may even deliver events from before this write after it).
            written = (_version(patched), patched.get("status") or {})
            self.written[key] = written
            current = self.runs.get(key)
            if current is not None and _version(current) < written[0]:
                current["status"] = written[1]
        await self._follow(key, memory, decided)
        return retry_manifest or decided.requeue_after

    def _plan(self, body: Mapping[str, Any], observed: Observed) -> Plan:
        return plan(body, self.config, observed, now=utc_now(), config_problems=self.config_problems)

    async def _act(self, decided: Plan) -> str | None:
        """Carry out the plan's actions in order; the server's words if it refused one (then stop there)."""
        for action in decided.actions:
            try:
                if isinstance(action, Apply):
                    await self.kube.apply(action.obj, field_manager=FIELD_MANAGER)
                elif isinstance(action, MergePatch):
                    resource = resource_of({"apiVersion": action.api_version, "kind": action.kind})
                    await self.kube.patch_merge(resource, action.namespace, action.name, action.patch)
                elif isinstance(action, Delete):
                    resource = resource_of({"apiVersion": action.api_version, "kind": action.kind})
                    await self.kube.delete(resource, action.namespace, action.name)
            except ApiError as error:
                if not error.refused:
                    raise  # unreachable or a conflict: the queue retries with back-off
                what = action.obj["kind"] if isinstance(action, Apply) else action.kind
                return f"the API server refused the run's {what}: {error}"
        return None

    async def _follow(self, key: Key, memory: RunMemory, decided: Plan) -> None:
        """Keep a log follower while the plan says so (a run without an archive: until it finishes)."""
        run = decided.run
        if decided.follow_logs and run is not None:
            if memory.logs is None:
                memory.logs = await self._follower(key, run, decided.log_archive)
            memory.logs.update(self.pods_by_run.get(key, {}).values())
        elif memory.logs is not None and not decided.seal_logs:
            logs, memory.logs = memory.logs, None
            telemetry.LOG_FOLLOWERS.dec()
            await logs.finish(grace=0)

    async def _follower(self, key: Key, run: TrainingRun, archive_uri: str | None) -> RunLogs:
        """A follower of the run's logs that resumes from its archive (where the store can be opened)."""
        archive = None
        if archive_uri is not None:
            try:
                archive = LogArchive(archive_uri, await self.artifacts.archive_options(run))
            except (StorageError, ApiError) as error:
                logger.warning("the logs of %s cannot be archived to %s: %s", run.metadata.name, archive_uri, error)
        logs = RunLogs(
            self.kube,
            run,
            archive,
            on_metrics=lambda: self.queue.add(key, METRICS_WRITE_SECONDS),
            flush_seconds=self.config.logs.flush_seconds,
        )
        logs.start()
        telemetry.LOG_FOLLOWERS.inc()
        return logs

    def _sealed(self, key: Key, memory: RunMemory, run: TrainingRun, archive_uri: str | None) -> RunLogs | None:
        """The follower whose archive is sealed, once its seal (a task: reconciles never wait for the
        streams' last lines or the store) is done; starts that task when none runs. None meanwhile."""
        task = memory.sealing
        loop = asyncio.get_running_loop()
        if task is None:
            if loop.time() < memory.seal_not_before:
                return None
            task = memory.sealing = loop.create_task(self._seal(key, memory, run, archive_uri), name=f"seal {key[1]}")
            task.add_done_callback(lambda _: self.queue.add(key))
            return None
        if not task.done():
            return None
        memory.sealing = None
        sealed = None if task.cancelled() else task.result()
        if sealed is None:
            memory.seal_failures += 1
            delay = min(MANIFEST_RETRY_MAX_SECONDS, MANIFEST_RETRY_SECONDS * 2 ** (memory.seal_failures - 1))
            memory.seal_not_before = loop.time() + delay
        else:
            memory.seal_failures = 0
        return sealed

    async def _seal(self, key: Key, memory: RunMemory, run: TrainingRun, archive_uri: str | None) -> RunLogs | None:
        """Finish the run's follower (one resuming from the archive if this process had none: the run may have
        ended while no operator ran) and seal its archive; None when the store did not take it (retried)."""
        logs = memory.logs or await self._follower(key, run, archive_uri)
        memory.logs = logs
        logs.update(self.pods_by_run.get(key, {}).values())
        try:
            files = await logs.finish()
        except StorageError as error:
            logger.warning("could not seal the log archive of %s (tried again later): %s", run.metadata.name, error)
            return None
        if files is None:
            return None  # the archive's store could not be opened: said when the follower was made
        memory.logs = None
        telemetry.LOG_FOLLOWERS.dec()
        return logs

    async def _forget(self, key: Key) -> None:
        memory = self.memory.pop(key, None)
        self.written.pop(key, None)
        self.gone_pods.pop(key, None)
        self.queue.forget(key)
        if memory is not None and memory.sealing is not None:
            memory.sealing.cancel()
            await asyncio.gather(memory.sealing, return_exceptions=True)
        if memory is not None and memory.logs is not None:
            telemetry.LOG_FOLLOWERS.dec()
            await memory.logs.stop()

    async def run(self) -> None:
        """The watches and the workers, until cancelled; the workers start once every cache is synced."""
        tasks = [asyncio.create_task(informer.run(), name=f"watch {informer.what}") for informer in self.informers]
        try:
            await self.wait_synced()
            logger.info("watch caches synced: %d runs known", len(self.runs))
            await self.queue.run()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _version(obj: Mapping[str, Any]) -> int:
    """The object's resourceVersion as a number (etcd's revision; 0 when it is not one)."""
    text = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    return int(text) if text.isdigit() else 0


def _find(informers: list[Informer], key: Key) -> Object | None:
    for informer in informers:
        found = informer.store.get(key)
        if found is not None:
            return found
    return None
