"""``plan(run, config, observed) -> Plan``: one reconcile's decisions for one TrainingRun, with no I/O.

Called once per reconcile by the operator's controller (``trainrun.controller.operator``) with the run's
body from kopf's watch, its children from the watch caches and the facts its background work brought
(``Observed``). The controller then applies ``Plan.actions`` (server-side apply, one field manager), starts
``Plan.storage`` as tasks (whose results come back as facts on a later reconcile), posts ``Plan.events``
through its deduplicating recorder, writes ``Plan.status_patch`` once if it is not empty and looks again
after ``Plan.requeue_after``. Every decision is here: what to create, change or delete, when to seal the
log archive and read the manifest, when a failed step or a refused child is tried again. The same inputs
always give the same plan, so a reconcile may run twice, after a crash, or out of order with the same
result. Rendering is ``trainrun.render``; the status is ``trainrun.status.build_status``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from trainrun.metrics import MetricSample
from trainrun.metrics.progress import ProgressSnapshot
from trainrun.plan.causes import EVENTS as CAUSE_EVENTS
from trainrun.plan.registration import (
    Track,
    TrackingFacts,
    registering,
    registration_state,
    registration_work,
    registry_key,
    tracked_status,
    tracking_plan,
)
from trainrun.plan.restarts import Supervised, supervise
from trainrun.render.backend import Backend, backend_for
from trainrun.render.children import (
    changes_since_applied,
    job_name,
    owns_suspend,
    stopped,
    uploader_job_name,
    volume_claim_name,
)
from trainrun.spec import (
    InvalidTrainingRun,
    OperatorConfig,
    TrainingRun,
    load_training_run_for_pass,
    problems_with_config,
    storage_problems,
    suspicious_values,
)
from trainrun.spec.status import Artifacts, LogGap, LogsStatus, Phase, ReplicaCounts, TrainingRunStatus
from trainrun.status import PhaseEvent, StatusInput, build_status, phase_event
from trainrun.status.failure import Cause
from trainrun.status.observe import (
    JobView,
    PodView,
    ReplicaState,
    UploadState,
    observe_job,
    observe_pods,
    observe_uploader,
    replica_names,
)
from trainrun.status.registration import REGISTERED, REGISTRATION_REFUSED, REGISTRY_UNAVAILABLE
from trainrun.status.shapes import timestamp
from trainrun.status.work import (
    Attempts,
    ReadManifest,
    Refusal,
    Registration,
    SealedLogs,
    SealLogs,
    StorageWork,
    due,
    failure_words,
    refusal_in_effect,
)

Object = dict[str, Any]
# The reasons of the Events the status reads (pod creation refused, scheduling, image pulls) and the
# ones that say why a replica went away (``trainrun.plan.causes.EVENTS``): the operator's Event cache
# keeps only these.
EVENT_REASONS = frozenset({"FailedCreatePod", "FailedCreate", "FailedScheduling", "Pulling", "Pulled", *CAUSE_EVENTS})
# An active run is looked at again after this long even when no watch said anything (a safety net).
RESYNC_SECONDS = 300.0
MIN_REQUEUE_SECONDS = 1.0
ENDED = (ReplicaState.SUCCEEDED, ReplicaState.FAILED)
# The reasons of an Uploading run whose storage steps fail (tried again with back-off), and of the Events
# when that starts and ends.
UPLOAD_NOT_VERIFIED, STORAGE_UNAVAILABLE = "UploadNotVerified", "StorageUnavailable"
STORAGE_REASONS = (UPLOAD_NOT_VERIFIED, STORAGE_UNAVAILABLE)
STORAGE_FAILING, STORAGE_RECOVERED = "StorageFailing", "StorageRecovered"
LOGS_INCOMPLETE = "LogsIncomplete"
SUSPICIOUS_VALUE = "SuspiciousValue"
MODEL_REGISTERED, REGISTRY_FAILING = "ModelRegistered", "RegistryFailing"


@dataclass(frozen=True)
class Observed:
    """Everything the controller knows about a run's world: its watch caches, its log follower, and the
    facts its background work and its last writes brought."""

    job: Mapping[str, Any] | None = None
    pods: Sequence[Mapping[str, Any]] = ()
    events: Sequence[Mapping[str, Any]] = ()
    uploader: Mapping[str, Any] | None = None
    claim_present: bool = False
    job_kind_served: bool = True  # the cluster serves the kind of job the configuration chose
    workload: Mapping[str, Any] | None = None  # Kueue's Workload of a queued run's job
    kueue_served: bool = True  # the cluster serves Kueue's Workloads
    queue_present: bool = True  # the LocalQueue spec.resources.queue names exists in the run's namespace
    gone_pods: Sequence[Mapping[str, Any]] = ()  # deleted replica pods that tell why: taken away, or failed
    metrics: Mapping[str, float] | None = None  # latest values the log follower read (None: none yet)
    key_metric: str | None = None
    series: Sequence[MetricSample] = ()  # the series metric's values the log follower read (status.series)
    progress: ProgressSnapshot | None = None  # what the log follower read of steps and silences
    seal: Attempts[SealedLogs] = field(default_factory=Attempts)
    manifest: Attempts[Artifacts] = field(default_factory=Attempts)
    registration: Attempts[Registration] = field(default_factory=Attempts)
    tracking: TrackingFacts | None = None  # what the run's tracker knows (None: no tracker in this process)
    refusal: Refusal | None = None
    # The log archive could not be opened, read or written while following (the store's words; None: it works).
    archive_problem: str | None = None


# What to do with a run's log follower: keep reading, leave it to the seal (which finishes it), or stop it.
LogsMode = Literal["follow", "finish", "stop"]


@dataclass(frozen=True)
class Apply:
    """Server-side apply of a whole child."""

    obj: Object


@dataclass(frozen=True)
class MergePatch:
    """A merge patch of part of a live child (the run policy of a running PyTorchJob)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    patch: Object


@dataclass(frozen=True)
class Delete:
    """A child that is no longer wanted."""

    api_version: str
    kind: str
    namespace: str
    name: str


Action = Apply | MergePatch | Delete


@dataclass(frozen=True)
class Plan:
    """What one reconcile does."""

    status: TrainingRunStatus
    status_patch: Object
    actions: tuple[Action, ...] = ()
    events: tuple[PhaseEvent, ...] = ()
    storage: tuple[StorageWork, ...] = ()  # start these (unless under way); their results come back as facts
    logs: LogsMode = "stop"
    log_archive: str | None = None  # where the follower ships the run's logs (None: not archived)
    tracking: Track | None = None  # the run's tracked run as it should be (None: not tracked, or ended)
    requeue_after: float | None = None
    run: TrainingRun | None = field(default=None, compare=False)


def previous_status(body: Mapping[str, Any]) -> TrainingRunStatus:
    """The status the run carries now (an unreadable one counts as none)."""
    try:
        return TrainingRunStatus.model_validate(body.get("status") or {})
    except ValueError:
        return TrainingRunStatus()


def status_patch(previous: TrainingRunStatus, status: TrainingRunStatus) -> Object:
    """A merge patch from the old status to the new one: changed fields, and null for fields now unset."""
    old = previous.model_dump(mode="json", by_alias=True)
    new = status.model_dump(mode="json", by_alias=True)
    return {key: value for key, value in new.items() if old.get(key) != value}


def merge_patched(target: object, patch: object) -> object:
    """``target`` with a JSON merge patch applied (RFC 7386), as the API server applies ``status_patch``."""
    if not isinstance(patch, Mapping):
        return patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patched(result.get(key), value)
    return result


def plan(
    body: Mapping[str, Any],
    config: OperatorConfig,
    observed: Observed,
    *,
    now: str,
    config_problems: Sequence[str] = (),
) -> Plan:
    """The actions, storage work, status and Events for one run; ``now`` is the time to stamp (RFC 3339)."""
    previous = previous_status(body)
    generation = (body.get("metadata") or {}).get("generation")
    try:
        run = load_training_run_for_pass(body)
    except InvalidTrainingRun as error:
        given = StatusInput(
            run=None, now=now, previous=previous, generation=generation, problems=[str(item) for item in error.problems]
        )
        return _finish(previous, build_status(given), waits=[])
    moment = _moment(now)

    backend = backend_for(observed.job, config)
    problems = [
        *config_problems,
        *(str(problem) for problem in (*problems_with_config(run, config), *storage_problems(run), *backend.problems(run))),
    ]
    refusal, refusal_ends_in = refusal_in_effect(observed.refusal, generation, moment)
    if refusal is not None:
        problems.append(refusal)
    if not observed.job_kind_served and observed.job is None:
        problems.append(backend.missing())
    problems += _queue_problems(run, observed)
    pool_name, _ = config.pool_named(run.spec.resources.pool)
    actions: list[Action] = []
    pending: list[str] = []
    job = observed.job
    # Each child read once, for the supervision, the status, the job's convergence and the clean-up alike.
    job_view = observe_job(job)
    replicas, uploader_pods = observe_pods(observed.pods, uploader_job_name=uploader_job_name(run))
    gone, _ = observe_pods(observed.gone_pods, uploader_job_name=None)
    supervised = Supervised()
    status_job = job_view  # the job the status describes
    if not problems:
        supervised = supervise(
            run,
            job=job_view,
            pods=replicas,
            gone=gone,
            events=observed.events,
            snapshot=observed.progress,
            restarts=previous.restarts,
            phase=previous.phase,
            now=now,
            workload=observed.workload,
            job_kind=backend.kind,
        )
        if not supervised.hold_job:
            actions, pending, converged = _converge_job(run, config, backend, observed, job_view, previous)
            if not supervised.restarting:
                status_job = converged  # a job created in this pass is described as it will be once it exists
        if supervised.delete_job:
            actions.append(_delete_job(run, backend))

    archive = log_archive_uri(run, config)
    sealed = observed.seal.result
    known_logs = previous.logs if previous.logs is not None and previous.logs.uri == archive else None
    # "complete" alone meant sealed in statuses written before gaps were told apart.
    logs_sealed = sealed is not None or (known_logs is not None and (known_logs.sealed or known_logs.complete))
    # Every replica's log read to its end: the archive sealed, or (not archived) read to the end for the metrics.
    logs_final = logs_sealed if archive is not None else sealed is not None or bool(previous.metrics_final)
    gaps = list(sealed.gaps) if sealed is not None else list(known_logs.gaps) if known_logs is not None else []
    # Kept in the status, so that a replica whose pods went while no operator could ship what it had read of them
    # (the one that read them killed with its lines, the store down) is declared at the seal, not forgotten.
    started = sorted(
        {*(known_logs.started if known_logs is not None else ()), *(pod.replica for pod in (*replicas, *gone) if pod.replica_type is not None and pod.ran)}
    )
    storage: list[StorageWork] = []
    waits: list[float | None] = [refusal_ends_in, supervised.check_again_in]
    artifacts: Artifacts | None = None
    manifest_due = False
    if job is not None:
        actions += _converge_upload(run, config, backend, job_view, observed, previous)
        # With an output URI the logs are composed into it first, so the manifest lists them.
        if previous.artifacts is None and logs_sealed and _copied(run, observed):
            artifacts = observed.manifest.result
            if artifacts is None:
                manifest_due, wait = due(observed.manifest, moment)
                waits.append(wait)
    manifest_problem = failure_words("reading the manifest of the copy", observed.manifest) if artifacts is None else None
    field = archive_field(run)
    seal_problem = (
        failure_words(f"{field}: sealing the log archive at {archive}", observed.seal)
        if archive is not None and not logs_sealed
        else None
    )
    archive_problem = (
        f"{field}: the replicas' logs are not being archived: {observed.archive_problem}"
        if observed.archive_problem is not None and not logs_sealed
        else None
    )
    storage_problem = (
        Cause(UPLOAD_NOT_VERIFIED, manifest_problem)
        if manifest_problem is not None
        else Cause(STORAGE_UNAVAILABLE, seal_problem)
        if seal_problem is not None
        else None
    )
    status = build_status(
        StatusInput(
            run=run,
            now=now,
            previous=previous,
            job=status_job,
            replicas=[*replicas, *_gone_replicas(gone, previous)],
            uploader_pods=uploader_pods,
            events=observed.events,
            uploader=observed.uploader,
            workload=observed.workload,
            job_kind=backend.kind,
            pod_creator=backend.pod_creator,
            pod_creator_objects=backend.pod_creator_objects(run.metadata.name),
            problems=problems,
            pending_changes=pending,
            pool=pool_name,
            artifacts=artifacts,
            supervision=supervised.supervision,
            restart=supervised.restart,
            metrics=sealed.metrics if sealed is not None else observed.metrics,
            metrics_final=logs_final,
            key_metric=sealed.key_metric if sealed is not None else observed.key_metric,
            series=observed.series,
            progress=observed.progress,
            logs=(
                LogsStatus(
                    uri=archive,
                    sealed=logs_sealed,
                    complete=logs_sealed and not gaps,
                    gaps=gaps,
                    started=started,
                    message=seal_problem or archive_problem or _gap_words(gaps),
                )
                if archive is not None
                else None
            ),
            storage_problem=storage_problem,
            registration=registration_state(run, config, previous, observed.registration),
            tracking=tracked_status(run, config, previous, observed.tracking),
        )
    )
    if manifest_due:
        storage.append(ReadManifest(archive))
    # A tracked run's version links to its MLflow run: registered once the tracker has it (or cannot get it).
    tracked = status.tracking if status.tracking is not None and status.tracking.registry == registry_key(run, config) else None
    awaiting_link = tracked is not None and tracked.run_id is None and tracked.message is None
    if registering(status) and not awaiting_link:
        register_due, wait = due(observed.registration, moment)
        waits.append(wait)
        work = registration_work(run, config, status, run_id=tracked.run_id if tracked is not None else None)
        if register_due and work is not None:
            storage.append(work)
    if _volume_released(run, status) and observed.claim_present:
        actions.append(Delete("v1", "PersistentVolumeClaim", run.metadata.namespace, volume_claim_name(run)))
    if status.phase is not None and status.phase.finished and logs_final:
        cleaning, wait = _clean_up(run, backend, job_view, replicas, moment)
        actions += cleaning
        waits.append(wait)
    # The uploader's pod is one of the run's logs too: the archive is sealed once it has ended, so its lines are
    # always in it (sealed as training ended, they were there or not by how soon its pod started).
    done_with_logs = status.phase is not None and (
        status.phase.finished or (status.phase == Phase.UPLOADING and _uploader_ended(observed))
    )
    seal = not logs_final and done_with_logs
    if seal:
        seal_due, wait = due(observed.seal, moment)
        waits.append(wait)
        if seal_due:
            storage.append(SealLogs(archive, ran=replicas_that_ran(run.spec.distribution.workers, status.replicas, started)))
    # Through a restart too: the new job's replicas append to the same followed logs.
    active = (job is not None or supervised.restarting) and status.phase is not None and not status.phase.finished
    events = [
        *_warnings(run, previous),
        *((supervised.event,) if supervised.event is not None else ()),
        *_storage_events(previous, status),
        *_gap_events(previous, status),
        *registration_events(previous, status),
    ]
    created = (body.get("metadata") or {}).get("creationTimestamp")
    tracking = tracking_plan(run, config, previous, status, logs_done=logs_final, created=created)
    return _finish(
        previous,
        status,
        actions=actions,
        storage=storage,
        logs="finish" if seal else "follow" if active and not logs_final else "stop",
        log_archive=archive,
        run=run,
        events=events,
        waits=waits,
        tracking=tracking,
    )


def log_archive_uri(run: TrainingRun, config: OperatorConfig) -> str | None:
    """Where a run's logs are archived: ``<output>/logs``, else under the operator's default location."""
    if run.spec.output.uri is not None:
        return f"{run.spec.output.uri.rstrip('/')}/logs"
    if config.logs.default_uri is None:
        return None
    folder = f"{run.metadata.namespace}/{run.metadata.name}-{(run.metadata.uid or 'no-uid')[:8]}"
    return f"{config.logs.default_uri.rstrip('/')}/{folder}"


def archive_field(run: TrainingRun) -> str:
    """The setting that says where a run's logs are archived, as a status message names it."""
    return "spec.output.uri" if run.spec.output.uri is not None else "logs.defaultUri (operator configuration)"


def _finish(
    previous: TrainingRunStatus,
    status: TrainingRunStatus,
    *,
    waits: Sequence[float | None],
    actions: Sequence[Action] = (),
    storage: Sequence[StorageWork] = (),
    logs: LogsMode = "stop",
    log_archive: str | None = None,
    run: TrainingRun | None = None,
    events: Sequence[PhaseEvent] = (),
    tracking: Track | None = None,
) -> Plan:
    """The plan, with the phase change's Event first and the requeue at the soonest of ``waits``."""
    change = phase_event(previous, status)
    soonest = min((wait for wait in waits if wait is not None), default=None)
    active = status.phase is None or not status.phase.finished
    if soonest is not None:
        requeue: float | None = min(RESYNC_SECONDS, max(soonest, MIN_REQUEUE_SECONDS))
    else:
        requeue = RESYNC_SECONDS if active else None
    return Plan(
        status=status,
        status_patch=status_patch(previous, status),
        actions=tuple(actions),
        events=tuple([*((change,) if change is not None else ()), *events]),
        storage=tuple(storage),
        logs=logs,
        log_archive=log_archive,
        requeue_after=requeue,
        run=run,
        tracking=tracking,
    )


def _storage_events(previous: TrainingRunStatus, status: TrainingRunStatus) -> list[PhaseEvent]:
    """A Warning when the object store starts failing the run's storage steps, a Normal Event when it works
    again: transitions of the status, so a plan made twice posts nothing twice."""
    before, after = _storage_trouble(previous), _storage_trouble(status)
    if after is not None and before is None:
        return [PhaseEvent("Warning", STORAGE_FAILING, after)]
    if after is None and before is not None:
        return [PhaseEvent("Normal", STORAGE_RECOVERED, f"the object store answers again (before: {before})")]
    return []


def _warnings(run: TrainingRun, previous: TrainingRunStatus) -> list[PhaseEvent]:
    """A Warning for each legal but suspicious value (a memory of a few bytes), once per generation of the spec."""
    if previous.observed_generation == run.metadata.generation:
        return []
    return [PhaseEvent("Warning", SUSPICIOUS_VALUE, str(problem)) for problem in suspicious_values(run)]


def registration_events(previous: TrainingRunStatus, status: TrainingRunStatus) -> list[PhaseEvent]:
    """Events of the registration's transitions: the version registered, the registry's refusal, the
    registry failing (tried again). Transitions of the status, so a plan made twice posts nothing twice."""
    events: list[PhaseEvent] = []
    if status.model is not None and previous.model is None:
        model = status.model
        events.append(
            PhaseEvent("Normal", MODEL_REGISTERED, f"registered model {model.name} version {model.version} in registry {model.registry}: {model.uri}")
        )
    refused = next((item for item in status.conditions if item.type == REGISTERED and item.status == "False"), None)
    refused_before = any(item.type == REGISTERED and item.status == "False" for item in previous.conditions)
    if refused is not None and not refused_before:
        events.append(PhaseEvent("Warning", REGISTRATION_REFUSED, refused.message))
    if status.reason == REGISTRY_UNAVAILABLE and previous.reason != REGISTRY_UNAVAILABLE and status.message:
        events.append(PhaseEvent("Warning", REGISTRY_FAILING, status.message))
    return events


def _gap_words(gaps: Sequence[LogGap]) -> str | None:
    """What status.logs says of replica logs that could not be read to their end."""
    if not gaps:
        return None
    told = ", ".join(f"{gap.replica} after {gap.after or 'its start'}" for gap in gaps)
    return f"lines may be missing from the archived log of {told}: the pods went before the operator read them to the end"


def _gap_events(previous: TrainingRunStatus, status: TrainingRunStatus) -> list[PhaseEvent]:
    """A Warning when the sealed archive is known to miss lines (once: a transition of the status)."""
    if status.logs is None or not status.logs.gaps or (previous.logs is not None and previous.logs.gaps):
        return []
    return [PhaseEvent("Warning", LOGS_INCOMPLETE, status.logs.message or "")]


def _storage_trouble(status: TrainingRunStatus) -> str | None:
    if status.reason in STORAGE_REASONS and status.phase is Phase.UPLOADING:
        return status.message
    return status.logs.message if status.logs is not None and not status.logs.gaps else None


def replicas_that_ran(workers: int, counts: Mapping[str, ReplicaCounts], started: Iterable[str] = ()) -> tuple[str, ...]:
    """The replicas that surely ran, in replica order: those ``started`` names (seen started, status.logs.started),
    and those the run's pod counts say ended at least once (``status.replicas``, the job's own once it has
    finished; pods no operator saw): the Master once one of its pods ended; every Worker once as many Worker pods
    ended as there are Workers (fewer do not say which)."""
    master, *worker_names = replica_names(workers)
    ended_of = {kind: count.succeeded + count.failed for kind, count in counts.items()}
    ran = set(started)
    if ended_of.get("Master", 0) >= 1:
        ran.add(master)
    if worker_names and ended_of.get("Worker", 0) >= len(worker_names):
        ran.update(worker_names)
    return tuple(name for name in (master, *worker_names) if name in ran) + tuple(sorted(ran - {master, *worker_names}))


def _gone_replicas(gone: Sequence[PodView], previous: TrainingRunStatus) -> list[PodView]:
    """The deleted pods of the current job (created after the last whole-run restart), as deleted: the status
    reads why they went (a failure whose job took its pods with it), never takes them for live replicas."""
    last = timestamp(previous.restarts[-1].time) if previous.restarts else None
    return [
        replace(pod, deleting=True)
        for pod in gone
        if last is None or ((created := timestamp(pod.created)) is not None and created >= last)
    ]


def _queue_problems(run: TrainingRun, observed: Observed) -> list[str]:
    """A queue the cluster cannot give the run: no Kueue, or no LocalQueue of that name where the run is."""
    queue = run.spec.resources.queue
    if queue is None or observed.job is not None:
        return []
    if not observed.kueue_served:
        return [
            f"spec.resources.queue: the cluster does not serve Kueue (kueue.x-k8s.io Workloads), so no run can wait "
            f"in LocalQueue {queue!r}: install Kueue, or leave spec.resources.queue out"
        ]
    if not observed.queue_present:
        return [
            f"spec.resources.queue: LocalQueue {queue!r} does not exist in namespace {run.metadata.namespace}: "
            "name one that does (kubectl get localqueues), or ask the platform team to create it"
        ]
    return []


def _delete_job(run: TrainingRun, backend: Backend) -> Delete:
    return Delete(backend.api_version, backend.kind, run.metadata.namespace, run.metadata.name)


def _converge_job(
    run: TrainingRun,
    config: OperatorConfig,
    backend: Backend,
    observed: Observed,
    view: JobView | None,
    previous: TrainingRunStatus,
) -> tuple[list[Action], list[str], JobView | None]:
    """Create the job once, apply spec changes when it can take them, and report the ones it cannot. A
    queued run is stopped (suspended, cancelled) by deleting its job: its suspend is Kueue's. Also the job the
    status describes: the one observed, or the one created in this pass as it will be once it exists (the status
    is written after it is created, so the pass its arrival brings has nothing to write: "creating the
    PyTorchJob" was true for milliseconds at the cost of a status write and its echo a run)."""
    job = observed.job
    queued = not owns_suspend(run)
    if job is None:
        if previous.phase is not None and (previous.phase.finished or previous.phase == Phase.UPLOADING):
            # Training ended and the job was cleaned up (ttlSecondsAfterFinished): never train again.
            return [], [], None
        if queued and stopped(run):
            return [], [], None  # resumed (suspend false), it is created again and waits for Kueue anew
        claim = backend.render_claim(run)
        creating: list[Action] = [Apply(claim)] if claim is not None and not observed.claim_present else []
        created = backend.render_job(run, config)
        return [*creating, Apply(created)], [], observe_job(created)
    changes = changes_since_applied(job, run)
    if view is None or view.ended:
        return [], changes, view
    if queued and stopped(run):
        return [_delete_job(run, backend)], [], view
    pods_gone = view.has("Suspended") or view.start_time is None
    if changes and pods_gone:
        return [Apply(backend.render_job(run, config))], [], view
    patch = backend.live_patch(run, job)
    if patch is None:
        return [], changes, view
    return [MergePatch(backend.api_version, backend.kind, run.metadata.namespace, job_name(run), patch)], changes, view


def _converge_upload(
    run: TrainingRun,
    config: OperatorConfig,
    backend: Backend,
    view: JobView | None,
    observed: Observed,
    previous: TrainingRunStatus,
) -> list[Action]:
    """Start the uploader Job when training is over and a copy is due."""
    output = run.spec.output
    if output.uri is None or observed.uploader is not None or previous.artifacts is not None:
        return []
    copy_due = view is not None and (view.has("Succeeded") or (output.copy_on_failure and view.has("Failed")))
    return [Apply(backend.render_uploader(run, config))] if copy_due else []


def _clean_up(
    run: TrainingRun, backend: Backend, view: JobView | None, replicas: Sequence[PodView], now: datetime
) -> tuple[list[Action], float | None]:
    """The end of a finished run's pods, once their logs are archived (the job keeps them until then):
    spec.runPolicy.cleanPodPolicy (Running: the replicas still running; All: every replica pod), and the
    job itself ttlSecondsAfterFinished after it ended (its pods go with it). Also seconds until the TTL."""
    if view is None or not (view.ended or view.has("Suspended")):
        return [], None
    policy = run.spec.run_policy
    namespace = run.metadata.namespace
    ended = timestamp(view.completion_time)
    if policy.ttl_seconds_after_finished is not None and ended is not None:
        left = policy.ttl_seconds_after_finished - (now - ended).total_seconds()
        if left <= 0:
            return [_delete_job(run, backend)], None
    else:
        left = None
    cleaned = policy.clean_pod_policy
    doomed = [
        pod.name
        for pod in replicas
        if not pod.deleting and (cleaned == "All" or (cleaned == "Running" and pod.state not in ENDED))
    ]
    return [Delete("v1", "Pod", namespace, name) for name in doomed], left


def _copied(run: TrainingRun, observed: Observed) -> bool:
    """Whether the uploader Job copied the outputs (its manifest is then read as the run's artifacts)."""
    upload = observe_uploader(observed.uploader, [])
    return run.spec.output.uri is not None and upload is not None and upload.state is UploadState.SUCCEEDED


def _uploader_ended(observed: Observed) -> bool:
    upload = observe_uploader(observed.uploader, [])
    return upload is not None and upload.state is not UploadState.ACTIVE


def _volume_released(run: TrainingRun, status: TrainingRunStatus) -> bool:
    """After a verified copy the per-run claim goes, unless the spec keeps it (or it is the user's own)."""
    output = run.spec.output
    return (
        status.phase == Phase.COMPLETED
        and status.artifacts is not None
        and not output.keep_volume
        and output.volume.claim_name is None
    )


def _moment(now: str) -> datetime:
    """``now`` as a time (the plan's callers pass RFC 3339 text)."""
    moment = timestamp(now)
    if moment is None:
        raise ValueError(f"not an RFC 3339 time: {now!r}")
    return moment
