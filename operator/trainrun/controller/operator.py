"""The operator's controller: watch caches in, ``plan`` in the middle, the API server's writes out.

Made by ``trainrun.controller.handlers`` at kopf's start-up; its informers watch the TrainingRuns and
their children. A reconcile is one pass for one run: read the run and its children from memory (``informers``,
indexed by run in :class:`ChildIndex`) -> ``trainrun.plan.plan``, once (pure) -> server-side apply what
the plan says -> start the storage work it asks for as tasks -> post its Events through the
deduplicating :class:`EventRecorder` -> patch status once, when it changed -> requeue at the plan's
deadline. Nothing slow is awaited in between: sealing the log archive, reading the manifest and opening
a log archive run as tasks, and what they bring (or the store's words) comes back to the next reconcile
as facts in ``Observed``, where the plan decides what to do and when to try again. Work comes from a
coalescing :class:`~trainrun.controller.queue.WorkQueue` that only the leader
(``trainrun.controller.leader``) works on; the standby keeps its caches warm. Log followers
(``trainrun.controller.logs``) run as tasks for the active runs the leader owns.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, cast

import yaml

from trainrun.base.redact import redact
from trainrun.base.registry import RegistryUnavailable
from trainrun.controller import telemetry
from trainrun.controller.artifacts import ArtifactReader
from trainrun.controller.informers import Informer, Key, key_of
from trainrun.controller.logs import RunLogs
from trainrun.controller.queue import WorkQueue
from trainrun.controller.registration import Registrar, registry_env
from trainrun.controller.tracking import RunTracker
from trainrun.kube.aioclient import (
    CLAIMS,
    CONFIG_MAPS,
    EVENTS,
    JOBS,
    LOCAL_QUEUES,
    PODS,
    PYTORCHJOBS,
    TRAINING_RUNS,
    TRAINJOBS,
    WORKLOADS,
    ApiError,
    AsyncKube,
    resource_of,
)
from trainrun.kube.streams import started_container_restarts
from trainrun.plan import (
    EVENT_REASONS,
    Apply,
    Attempts,
    Delete,
    MergePatch,
    Observed,
    Plan,
    Refusal,
    Register,
    SealedLogs,
    SealLogs,
    StorageWork,
    merge_patched,
    plan,
    projections,
)
from trainrun.plan.causes import worth_remembering
from trainrun.plan.registration import Track
from trainrun.plan.triggers import job_change_at_once, pod_change_at_once
from trainrun.registry import ModelRegistry, client_for
from trainrun.render import FIELD_MANAGER
from trainrun.render.backend import PYTORCHJOB, TRAINJOB, backend_for, backend_of
from trainrun.render.children import COMPONENT_LABEL, RUN_LABEL, UPLOADER_COMPONENT
from trainrun.spec import OperatorConfig, TrainingRun, parse_operator_config
from trainrun.spec.config import CONFIG_MAP_KEY, CONFIG_MAP_NAME
from trainrun.spec.model import API_VERSION, KIND
from trainrun.spec.status import LogGap
from trainrun.status import PhaseEvent
from trainrun.status.shapes import utc_now
from trainrun.storage import StorageError
from trainrun.storage.logstore import LogArchive

logger = logging.getLogger(__name__)

Object = dict[str, Any]
RECONCILE_WORKERS = 16
METRICS_WRITE_SECONDS = 5.0  # at most one status write per run this often for new metric values
EVENTS_PER_OBJECT = 8
# The Events watch leaves out server-side what no reconcile reads (its cache keeps only EVENT_REASONS): the
# Events of our own objects, and the most frequent reasons of the scheduler, the kubelet and the job
# controllers (98% of the Events in the scale benchmark's namespace), which we would otherwise decode to drop.
SKIPPED_EVENT_OBJECTS = ("TrainingRun", "TrainingSweep")
SKIPPED_EVENT_REASONS = (
    "Scheduled",
    "Created",
    "Started",
    "Killing",
    "SuccessfulCreate",
    "SuccessfulDelete",
    "Completed",
    "SuccessfulCreatePod",
    "SuccessfulCreateService",
    "SuccessfulDeletePod",
    "SuccessfulDeleteService",
    "PyTorchJobCreated",
    "PyTorchJobRunning",
    "PyTorchJobSucceeded",
    "PyTorchJobFailed",
    "ExitedWithCode",
)
EVENT_FIELD_SELECTOR = ",".join(
    [*(f"involvedObject.kind!={kind}" for kind in SKIPPED_EVENT_OBJECTS), *(f"reason!={reason}" for reason in SKIPPED_EVENT_REASONS)]
)
# Changes of a run's children within this window give one reconcile (a job's pods are created,
# scheduled and started within moments of each other): fewer status writes, each a settled view. The last
# replica Running, and the job's end with every replica's, are reconciled at once (trainrun.plan.triggers).
CHILD_COALESCE_SECONDS = 1.0
# How long the status this process wrote stands in for the watch's older bodies, at most (the watch may
# never bring the written version itself: a relist after a compaction gives a later one).
WRITTEN_STATUS_SECONDS = 30.0
# The kinds of children in the index, and the background work of a run by name.
JOB, UPLOADER, CLAIM, POD = "job", "uploader", "claim", "pod"
SEAL, MANIFEST, REGISTER, FOLLOW = "seal", "manifest", "register", "follow"


@dataclass
class RunMemory:
    """What the controller remembers about one run between reconciles (all of it can be lost): its log
    follower, its background work and what that work brought (handed to the plan as facts)."""

    logs: RunLogs | None = None
    attempts: dict[str, Attempts[Any]] = field(default_factory=dict)  # by storage step: "seal", "manifest"
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # work under way, by step or "follow"
    archive_problem: str | None = None  # the log archive could not be opened for following: the store's words
    refusal: Refusal | None = None
    posted: set[str] = field(default_factory=set)
    tracker: RunTracker | None = None  # the run's tracked run in an experiment tracker (plan.tracking)
    metrics_pass_at: float | None = None  # loop time of the last (or next) pass for new metric values


@dataclass(frozen=True)
class WrittenStatus:
    """The status this process last wrote, and the resourceVersion the write produced."""

    version: str
    status: Object
    until: float  # loop time: after this the watch's bodies are taken as they are


class WrittenStatuses(dict[Key, WrittenStatus]):
    """The statuses this process wrote, by object: each stands in for the watch's older bodies of its object
    until the watch brings the version the write made (the TrainingRun and TrainingSweep controllers); and
    the status of a write under way, whose version the watch may bring before the write's answer comes."""

    def __init__(self) -> None:
        super().__init__()
        self.under_way: dict[Key, Object] = {}  # the status each write under way will leave on the server

    def stand_in(self, key: Key, body: Object) -> bool:
        """A body from the watch: events come in order, so until the watch brings the version this process
        wrote, every body is from before that write, and the status written replaces its older one (kopf
        waits for the version it patched in the same way). resourceVersions are only compared for equality:
        Kubernetes says they are opaque. True when the body has the status of the write under way: the watch
        brought that write (or a later version equal to it) before its answer, and nothing older stands in."""
        under_way = self.under_way.get(key)
        if under_way is not None and body.get("status") == under_way:
            self.pop(key, None)
            return True
        written = self.get(key)
        if written is None:
            return False
        if _version(body) == written.version or asyncio.get_running_loop().time() > written.until:
            del self[key]
        else:
            body["status"] = written.status
        return False

    def wrote(self, key: Key, patched: Mapping[str, Any], current: Object | None) -> None:
        """The API server's answer to a status write; ``current`` (the cached body) takes its status at once: the
        watch brings it soon, and meanwhile the next reconcile must not decide from the old one.

        The watch may have brought this very version already, before the answer (kopf, which watches the sweeps,
        hands on only the latest of the events that come close together, so the version of the write before may
        never have come), and the body of this one was given that older write's status. It takes this write's
        status now, and nothing stands in for it any more."""
        written = WrittenStatus(
            _version(patched), patched.get("status") or {}, until=asyncio.get_running_loop().time() + WRITTEN_STATUS_SECONDS
        )
        if current is not None:
            current["status"] = written.status
            if _version(current) == written.version:
                self.pop(key, None)
                return
        self[key] = written


def _only_the_version_differs(cached: Object, new: Object) -> bool:
    """Whether two projected bodies of a run differ in nothing but their resourceVersion."""
    if cached.get("spec") != new.get("spec") or cached.get("status") != new.get("status"):
        return False
    cached_metadata, new_metadata = dict(cached.get("metadata") or {}), dict(new.get("metadata") or {})
    cached_metadata.pop("resourceVersion", None)
    new_metadata.pop("resourceVersion", None)
    return cached_metadata == new_metadata


class ChildIndex:
    """The runs' children from the watch caches, by the run label they carry: jobs, uploaders, claims, pods;
    and which run an object name belongs to (for the Events about it)."""

    def __init__(self) -> None:
        self.by_run: dict[Key, dict[str, dict[str, Object]]] = {}
        self.run_of_object: dict[Key, Key] = {}

    def change(self, kind: str, old: Object | None, new: Object | None) -> Key | None:
        """Keep a watched child's change; the run it belongs to."""
        current = new if new is not None else old
        if current is None:
            return None
        metadata = current["metadata"]
        labels = metadata.get("labels") or {}
        if RUN_LABEL not in labels:
            return None
        namespace, name = str(metadata.get("namespace")), str(metadata["name"])
        run_key = (namespace, str(labels[RUN_LABEL]))
        children = self.by_run.setdefault(run_key, {})
        if new is not None:
            children.setdefault(kind, {})[name] = new
            self.run_of_object[(namespace, name)] = run_key
        else:
            of_kind = children.get(kind, {})
            of_kind.pop(name, None)
            self.run_of_object.pop((namespace, name), None)
            if not of_kind:
                children.pop(kind, None)
            if not children:
                self.by_run.pop(run_key, None)
        return run_key

    def of(self, run_key: Key, kind: str) -> list[Object]:
        return list(self.by_run.get(run_key, {}).get(kind, {}).values())

    def one(self, run_key: Key, kind: str) -> Object | None:
        return next(iter(self.by_run.get(run_key, {}).get(kind, {}).values()), None)


class EventRecorder:
    """Posts an object's Events once (a run's phase changes, a sweep's trials): the Event's name is derived
    from what it says, so a second replica or a restarted operator posting the same one gets 409 AlreadyExists."""

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
                "kind": run.get("kind") or KIND,  # a TrainingRun's, or a TrainingSweep's
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
        self.written = WrittenStatuses()
        self.memory: dict[Key, RunMemory] = {}
        self.queue = WorkQueue(self._reconcile_key, workers=workers)
        self.recorder = EventRecorder(kube, instance=instance)
        self.artifacts = ArtifactReader(kube)
        self.registrar = Registrar(kube, self.artifacts, operator_namespace=operator_namespace)
        self.config = OperatorConfig()
        self.config_problems: list[str] = []
        self.children = ChildIndex()
        # Replica pods that tell why a run is where it is, as last seen before they were deleted: taken away by
        # the cluster (node lost, preempted, evicted) or failed (trainrun.plan.causes.worth_remembering).
        self.gone_pods: dict[Key, dict[str, Object]] = {}
        # The run's pods deleted after a container of theirs started, as last seen, until its logs are sealed: the
        # follower declares a start among them that no follower read (RunLogs.update).
        self.gone_starts: dict[Key, dict[str, Object]] = {}
        self.events_by_object: dict[Key, list[Object]] = {}
        # Kueue: the Workload of each queued run's job (by the run: the job is named after it), and the
        # LocalQueues that exist (a run naming another waits with a Stalled reason instead of creating its job).
        self.workloads: dict[Key, Object] = {}
        self.kueue: list[Informer] = []
        self.local_queues: list[Informer] = []
        self.background: set[asyncio.Task[None]] = set()
        by_label = {"labelSelector": RUN_LABEL}
        self.jobs: dict[str, list[Informer]] = {PYTORCHJOB.kind: [], TRAINJOB.kind: []}  # by kind: either backend
        self.informers: list[Informer] = []
        for namespace in namespaces:
            for kind, resource, project, shape in (
                (PYTORCHJOB.kind, PYTORCHJOBS, projections.pytorchjob, projections.PyTorchJobEvent),
                (TRAINJOB.kind, TRAINJOBS, projections.trainjob, None),
            ):
                job_informer = Informer(
                    kube, resource, namespace, project=project, on_change=self._on_child(JOB), params=by_label,
                    when_absent=f"a run whose job is a {kind} waits until it is (the status says what to install)", shape=shape,
                )
                job_informer.on_served_change = self._on_job_kind_served
                self.jobs[kind].append(job_informer)
                self.informers.append(job_informer)
            no_kueue = "Kueue is not installed; a run that names spec.resources.queue waits until it is"
            workload_informer = Informer(
                kube, WORKLOADS, namespace, project=projections.workload, on_change=self._on_workload, when_absent=no_kueue
            )
            queue_informer = Informer(
                kube, LOCAL_QUEUES, namespace, project=projections.identity, on_change=self._on_local_queue, when_absent=no_kueue
            )
            for informer in (workload_informer, queue_informer):
                informer.on_served_change = self._on_job_kind_served
            self.kueue.append(workload_informer)
            self.local_queues.append(queue_informer)
            self.informers += [
                workload_informer,
                queue_informer,
                Informer(
                    kube,
                    JOBS,
                    namespace,
                    project=projections.batch_job,
                    on_change=self._on_child(UPLOADER),
                    params={"labelSelector": f"{RUN_LABEL},{COMPONENT_LABEL}={UPLOADER_COMPONENT}"},
                ),
                Informer(kube, CLAIMS, namespace, project=projections.identity, on_change=self._on_child(CLAIM), params=by_label),
                Informer(kube, PODS, namespace, project=projections.pod, on_change=self._on_pod, params=by_label, shape=projections.PodEvent),
                Informer(
                    kube,
                    EVENTS,
                    namespace,
                    project=projections.event,
                    on_change=self._on_event,
                    params={"fieldSelector": EVENT_FIELD_SELECTOR},
                    keep=lambda event: event.get("reason") in EVENT_REASONS,
                ),
            ]
        # The runs themselves, watched like their children: kopf kept a worker per run (its queue, task and timers)
        # and decoded every event again (tests/bench/README.md, "the operator's memory at 1,000 runs").
        self.informers += [
            Informer(
                kube, TRAINING_RUNS, namespace, project=projections.training_run, on_change=self.run_changed, shape=projections.TrainingRunEvent
            )
            for namespace in namespaces
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

    # ---- inputs: the watch caches of the runs and their children ----

    def run_changed(self, old: Object | None, new: Object | None) -> None:
        """A TrainingRun from the runs' watch, projected (old None: listed or added; new None: deleted)."""
        if new is None:
            assert old is not None
            key = key_of(old)
            self.runs.pop(key, None)
            self.written.pop(key, None)
            self.queue.add(key)
            return
        key = key_of(new)
        writing_echo = self.written.stand_in(key, new)
        cached = self.runs.get(key)
        self.runs[key] = new
        if writing_echo and cached is not None:
            cached = {**cached, "status": new.get("status")}  # what the answer will give the cached body
        if cached is not None and _only_the_version_differs(cached, new):
            # The echo of this process's own status write (the cached body took that status from the API server's
            # answer, or the watch brought it before the answer), or a relisting that found nothing new: a pass would
            # decide from what the last one decided with (5.8 a run).
            telemetry.RUN_EVENTS_SKIPPED.inc()
            return
        self.queue.add(key)

    def _on_child(self, kind: str) -> Callable[[Object | None, Object | None], None]:
        def changed(old: Object | None, new: Object | None) -> None:
            run_key = self.children.change(kind, old, new)
            if run_key is not None:
                at_once = kind == JOB and job_change_at_once(old, new, self.children.of(run_key, POD))
                self.queue.add(run_key, 0.0 if at_once else CHILD_COALESCE_SECONDS)

        return changed

    def _on_pod(self, old: Object | None, new: Object | None) -> None:
        run_key = self.children.change(POD, old, new)
        if run_key is None:
            return
        if new is None and old is not None:
            uid = str(old["metadata"].get("uid"))
            if run_key in self.runs and worth_remembering(old):  # a deleted run's pods go after it: not kept
                self.gone_pods.setdefault(run_key, {})[uid] = old
            if started_container_restarts(old) is not None and self._logs_followed(run_key):
                self.gone_starts.setdefault(run_key, {})[uid] = old
        at_once = pod_change_at_once(old, new, self.children.one(run_key, JOB), self.children.of(run_key, POD))
        self.queue.add(run_key, 0.0 if at_once else CHILD_COALESCE_SECONDS)

    def _logs_followed(self, key: Key) -> bool:
        """Whether the run is here and its logs are not read to their end yet (the pods a run's clean-up deletes,
        or those of a run deleted, are nothing its follower needs)."""
        body = self.runs.get(key)
        return body is not None and not (body.get("status") or {}).get("metricsFinal")

    def _on_workload(self, old: Object | None, new: Object | None) -> None:
        """A Workload of one of our jobs (owned by a TrainJob or PyTorchJob named after its run)."""
        for obj in (old, new):
            if obj is None:
                continue
            owners = [owner for owner in obj["metadata"].get("ownerReferences", []) if owner.get("kind") in self.jobs]
            if not owners:
                continue
            run_key = (str(obj["metadata"].get("namespace")), str(owners[0].get("name")))
            if obj is new:
                self.workloads[run_key] = new
            elif self.workloads.get(run_key, {}).get("metadata", {}).get("uid") == obj["metadata"].get("uid"):
                self.workloads.pop(run_key, None)
            self.queue.add(run_key, CHILD_COALESCE_SECONDS)

    def _on_local_queue(self, old: Object | None, new: Object | None) -> None:
        """A LocalQueue came or went: the runs of its namespace that name it may go on (or must wait)."""
        namespace = str(((new or old) or {}).get("metadata", {}).get("namespace"))
        for key in self.runs:
            if key[0] == namespace:
                self.queue.add(key)

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
            run = self.children.run_of_object.get(key) or self._run_of_pod_creator(key)
            if run is not None:
                self.queue.add(run, CHILD_COALESCE_SECONDS)

    def _run_of_pod_creator(self, involved: Key) -> Key | None:
        """The run whose pods the object (not a child the operator watches: JobSet's Job of a TrainJob) creates."""
        namespace, name = involved
        for key in self.runs:
            if key[0] == namespace and name in backend_for(self.children.one(key, JOB), self.config).pod_creator_objects(key[1]):
                return key
        return None

    @staticmethod
    def _involved(event: Mapping[str, Any]) -> Key:
        involved = event.get("involvedObject") or {}
        namespace = involved.get("namespace") or (event.get("metadata") or {}).get("namespace")
        return str(namespace), str(involved.get("name"))

    def _on_config(self, old: Object | None, new: Object | None) -> None:
        config, problems = OperatorConfig(), []
        text = (new or {}).get("data", {}).get(CONFIG_MAP_KEY)
        where = f"ConfigMap {self.operator_namespace}/{CONFIG_MAP_NAME} key {CONFIG_MAP_KEY}"
        if text is not None:
            try:
                config = parse_operator_config(yaml.safe_load(text))
            except (yaml.YAMLError, ValueError) as error:
                problems.append(redact(f"the operator configuration ({where}) is invalid: {error}"))
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
        """Start working the queue as leader, or stop (followers and background work stop; nothing is archived)."""
        if leading:
            self.queue.active.set()
            self.requeue_all()
            return
        self.queue.active.clear()
        memories, self.memory = list(self.memory.values()), {}
        for memory in memories:
            self._spawn(self._let_go(memory), name="let go")

    async def stop_followers(self) -> None:
        await asyncio.gather(*(self._let_go(memory) for memory in self.memory.values()))

    # ---- one reconcile: observe, plan once, act, write status once ----

    def observed(self, key: Key, body: Mapping[str, Any]) -> Observed:
        """The run's world as the watches and this process's memory know it (reads only)."""
        namespace, _ = key
        memory = self.memory.get(key) or RunMemory()
        job = self.children.one(key, JOB)
        uploader = self.children.one(key, UPLOADER)
        pods = self.children.of(key, POD)
        involved = [str(child["metadata"]["name"]) for child in (job, uploader, *pods) if child is not None]
        involved += backend_for(job, self.config).pod_creator_objects(key[1])
        logs = memory.logs
        return Observed(
            job=job,
            pods=pods,
            events=[event for name in involved for event in self.events_by_object.get((namespace, name), [])],
            uploader=uploader,
            claim_present=self.children.one(key, CLAIM) is not None,
            job_kind_served=all(informer.served for informer in self.jobs[backend_of(self.config).kind]),
            workload=self.workloads.get(key),
            kueue_served=all(informer.served for informer in self.kueue),
            queue_present=self._queue_present(namespace, body),
            gone_pods=list(self.gone_pods.get(key, {}).values()),
            metrics=logs.metrics if logs is not None else None,
            key_metric=logs.key_metric if logs is not None else None,
            series=logs.summary.series if logs is not None else (),
            progress=logs.progress.snapshot() if logs is not None else None,
            seal=memory.attempts.get(SEAL, Attempts()),
            manifest=memory.attempts.get(MANIFEST, Attempts()),
            registration=memory.attempts.get(REGISTER, Attempts()),
            tracking=memory.tracker.facts if memory.tracker is not None else None,
            refusal=memory.refusal,
            archive_problem=memory.archive_problem or (logs.problem if logs is not None else None),
        )

    def _queue_present(self, namespace: str, body: Mapping[str, Any]) -> bool:
        """Whether the LocalQueue the run names (if any) exists in its namespace."""
        queue = ((body.get("spec") or {}).get("resources") or {}).get("queue")
        return queue is None or any((namespace, str(queue)) in informer.store for informer in self.local_queues)

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
        """One pass for one run: observe -> plan once -> act -> Events -> one status write -> requeue."""
        body = self.runs.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            await self._forget(key)
            return None
        memory = self.memory.setdefault(key, RunMemory())
        decided = plan(body, self.config, self.observed(key, body), now=utc_now(), config_problems=self.config_problems)
        refusal = await self._act(decided)
        if refusal is not None:
            # Nothing of this plan's status is true now: keep the refusal as a fact, plan again at once.
            memory.refusal = Refusal(body["metadata"].get("generation"), refusal, utc_now())
            return 0.0
        self._start_storage(key, memory, decided)
        for change in decided.events:
            await self.recorder.record(body, change, decided.status.observed_generation, memory.posted)
        if decided.status_patch:
            await self._write_status(key, decided)
        self._follow(key, memory, decided)
        self._track(key, memory, decided)
        return decided.requeue_after

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

    async def _write_status(self, key: Key, decided: Plan) -> None:
        current = self.runs.get(key)
        self.written.under_way[key] = cast(Object, merge_patched((current or {}).get("status"), decided.status_patch))
        try:
            patched = await self.kube.patch_merge(
                TRAINING_RUNS, key[0], key[1], {"status": decided.status_patch}, subresource="status"
            )
        finally:
            self.written.under_way.pop(key, None)
        if "phase" in decided.status_patch and decided.status.phase is not None:
            telemetry.PHASE_CHANGES.labels(phase=decided.status.phase.value).inc()
        self.written.wrote(key, patched, self.runs.get(key))  # the watch may bring events from before this write after it

    # ---- background work: storage steps and log followers, whose results come back as facts ----

    def _start_storage(self, key: Key, memory: RunMemory, decided: Plan) -> None:
        """Start the storage work the plan asks for, unless a try of it is under way."""
        run = decided.run
        if run is None:
            return
        for work in decided.storage:
            step = _step(work)
            if step in memory.tasks:
                continue
            attempts = memory.attempts.get(step, Attempts())
            memory.attempts[step] = replace(attempts, running=True)
            doing: Awaitable[Any]
            if isinstance(work, SealLogs):
                doing = self._seal(key, memory, run, work)
            elif isinstance(work, Register):
                doing = self.registrar.register(run, work, self.config)
            else:
                doing = self.artifacts.read_manifest(run, work.archive)
            memory.tasks[step] = self._spawn(self._attempt(key, memory, step, doing), name=f"{step} {key[1]}")

    async def _attempt(self, key: Key, memory: RunMemory, step: str, doing: Awaitable[Any]) -> None:
        """One try of a storage step: what it brought (or the store's words) becomes a fact of the run."""
        before = memory.attempts.get(step, Attempts())
        try:
            result = await doing
            after: Attempts[Any] = Attempts(result=result, failures=before.failures)
        except (StorageError, ApiError, RegistryUnavailable) as error:
            logger.warning("%s of %s failed (tried again later): %s", step, key[1], error)
            after = Attempts(failures=before.failures + 1, error=str(error), failed_at=utc_now())
        finally:
            memory.tasks.pop(step, None)
        memory.attempts[step] = after
        self.queue.add(key)

    async def _seal(self, key: Key, memory: RunMemory, run: TrainingRun, work: SealLogs) -> SealedLogs:
        """Finish the run's follower (read every replica's log to its end) and seal its archive, if it has one: a
        new follower where this process has none (the run may have ended while no operator ran; it resumes from
        the archive) or has one that could not open the archive."""
        archive_uri = work.archive
        logs = memory.logs
        if logs is None or logs.superseded or (archive_uri is not None and logs.archive is None):
            if logs is not None:
                await self._drop_follower(memory)
            archive = await self._open_archive(run, archive_uri) if archive_uri is not None else None
            logs = memory.logs = await self._follower(key, run, archive)
        self._feed(key, logs)
        await logs.finish(ran=work.ran)
        await self._drop_follower(memory, stop=False)
        self.gone_starts.pop(key, None)  # declared or read: the archive says so now
        gaps = tuple(LogGap(replica=item.replica, after=item.last_line_time) for item in logs.gaps)
        return SealedLogs(metrics=dict(logs.summary.latest), key_metric=logs.key_metric, gaps=gaps)

    async def _open_archive(self, run: TrainingRun, archive_uri: str) -> LogArchive:
        """The run's log archive with its credentials (the Secret spec.output.secretName names)."""
        try:
            return LogArchive(archive_uri, await self.artifacts.archive_options(run))
        except ApiError as error:
            raise StorageError(f"cannot read the credentials of the log archive at {archive_uri}: {error}") from None

    def _follow(self, key: Key, memory: RunMemory, decided: Plan) -> None:
        """Keep a log follower while the plan says so; leave it to the seal while the archive is being sealed."""
        run = decided.run
        if decided.logs == "follow" and run is not None:
            if memory.logs is not None and memory.logs.superseded:
                self._detach_follower(memory)  # it stopped reading; the next follower resumes from the archive
            if memory.logs is not None:
                self._feed(key, memory.logs)
            elif FOLLOW not in memory.tasks:
                memory.tasks[FOLLOW] = self._spawn(self._start_following(key, memory, run, decided.log_archive), name=f"follow {key[1]}")
        elif decided.logs == "stop" and memory.logs is not None:
            self._spawn(self._drop_follower(memory), name=f"stop following {key[1]}")

    async def _start_following(self, key: Key, memory: RunMemory, run: TrainingRun, archive_uri: str | None) -> None:
        """A follower of the run's logs that resumes from its archive; without one (not archived, or the store
        cannot be opened: said in the status) it reads for metrics and progress only."""
        archive = None
        problem_before = memory.archive_problem
        try:
            if archive_uri is not None:
                archive = await self._open_archive(run, archive_uri)
            memory.archive_problem = None
        except StorageError as error:
            memory.archive_problem = str(error)
            logger.warning("the logs of %s cannot be archived to %s: %s", run.metadata.name, archive_uri, error)
        finally:
            memory.tasks.pop(FOLLOW, None)
        if memory.logs is None:
            memory.logs = await self._follower(key, run, archive)
            self._feed(key, memory.logs)  # the pods as the caches hold them; each pass feeds it on
        if memory.archive_problem != problem_before:
            self.queue.add(key)  # the status says whether the logs are archived

    def _feed(self, key: Key, logs: RunLogs) -> None:
        """Hand the run's follower its pods as the caches hold them, and those deleted after they started."""
        logs.update(self.children.of(key, POD), gone=self.gone_starts.get(key, {}).values())

    def _track(self, key: Key, memory: RunMemory, decided: Plan) -> None:
        """Keep a tracker while the plan tracks the run; one that ended, or is no longer wanted, goes."""
        track, run = decided.tracking, decided.run
        if track is None or run is None:
            if memory.tracker is not None:
                tracker, memory.tracker = memory.tracker, None
                self._spawn(tracker.stop(), name=f"stop tracking {key[1]}")
            return
        if memory.tracker is None:
            archive_uri = decided.log_archive

            async def archive() -> LogArchive | None:
                return await self._open_archive(run, archive_uri) if archive_uri is not None else None

            memory.tracker = RunTracker(
                key[1], client=self._registry_client, archive=archive, on_change=lambda: self.queue.add(key)
            )
        memory.tracker.want(track)

    async def _registry_client(self, track: Track) -> ModelRegistry:
        registry = self.config.registries.get(track.registry)
        if registry is None:
            raise RegistryUnavailable(f"registry {track.registry!r} is not in the operator configuration (registries)")
        return client_for(registry, await registry_env(self.kube, self.operator_namespace, track.registry, registry))

    def _metrics_changed(self, key: Key) -> None:
        """New metric values from the run's follower: a pass at once when none was made for them in the last
        METRICS_WRITE_SECONDS, else when that many seconds have passed since it (one status write per run that
        often at most). The first values after a follower starts are written at once: a sweep's pruner and
        ``kubectl get`` see them without waiting out an interval (when every change waited one, a trial whose
        operator was restarted every few seconds could run to its last epoch unpruned)."""
        memory = self.memory.get(key)
        if memory is None:
            return  # not followed by this process any more
        now = asyncio.get_running_loop().time()
        last = memory.metrics_pass_at
        if last is not None and last > now:
            self.queue.add(key, last - now)  # the pass due then takes these values too
            return
        memory.metrics_pass_at = now if last is None else max(now, last + METRICS_WRITE_SECONDS)
        self.queue.add(key, memory.metrics_pass_at - now)

    def _feed_tracker(self, key: Key, first: int, lines: list[str]) -> None:
        memory = self.memory.get(key)
        if memory is not None and memory.tracker is not None:
            memory.tracker.feed(first, lines)

    async def _follower(self, key: Key, run: TrainingRun, archive: LogArchive | None) -> RunLogs:
        logs = RunLogs(
            self.kube,
            run,
            archive,
            on_metrics=lambda: self._metrics_changed(key),
            on_records=lambda first, lines: self._feed_tracker(key, first, lines),
            flush_seconds=self.config.logs.flush_seconds,
        )
        logs.start()
        telemetry.LOG_FOLLOWERS.inc()
        return logs

    async def _drop_follower(self, memory: RunMemory, *, stop: bool = True) -> None:
        logs = self._detach_follower(memory)
        if logs is not None and stop:
            await logs.stop()

    @staticmethod
    def _detach_follower(memory: RunMemory) -> RunLogs | None:
        logs, memory.logs = memory.logs, None
        if logs is not None:
            telemetry.LOG_FOLLOWERS.dec()
        return logs

    async def _let_go(self, memory: RunMemory) -> None:
        """Stop a run's background work and its follower (what was not shipped is read again by the next one)."""
        tasks = list(memory.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._drop_follower(memory)
        if memory.tracker is not None:
            tracker, memory.tracker = memory.tracker, None
            await tracker.stop()

    def _spawn(self, work: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def _forget(self, key: Key) -> None:
        memory = self.memory.pop(key, None)
        self.written.pop(key, None)
        self.workloads.pop(key, None)
        self.gone_pods.pop(key, None)
        self.gone_starts.pop(key, None)
        self.queue.forget(key)
        if memory is not None:
            await self._let_go(memory)

    async def run(self) -> None:
        """The watches and the workers, until cancelled; the workers start once every cache is synced."""
        tasks = [asyncio.create_task(informer.run(), name=f"watch {informer.what}") for informer in self.informers]
        try:
            await self.wait_synced()
            logger.info("watch caches of the runs, their jobs, pods and Events synced: working the queue")
            await self.queue.run()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _step(work: StorageWork) -> str:
    """The name of a work item's step (its attempts and its task are kept by it)."""
    return SEAL if isinstance(work, SealLogs) else REGISTER if isinstance(work, Register) else MANIFEST


def _version(obj: Mapping[str, Any]) -> str:
    """The object's resourceVersion (opaque: compared for equality only)."""
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")
