"""``plan(run, config, observed) -> Plan``: one reconcile's decisions for one TrainingRun, with no I/O.

Called by the operator's controller (``trainrun.controller.operator``) with the run's body from kopf's
watch and its children from the watch caches; the controller then applies ``Plan.actions`` (server-side
apply, one field manager), writes ``Plan.status_patch`` once if it is not empty, posts ``Plan.events``
through its deduplicating recorder and looks again after ``Plan.requeue_after``. The same inputs always
give the same plan, so a reconcile may run twice, after a crash, or out of order with the same result.
Rendering is ``trainrun.render``; the status is ``trainrun.status.compute_status``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from trainrun.metrics.progress import ProgressSnapshot
from trainrun.plan.causes import EVENTS as CAUSE_EVENTS
from trainrun.plan.restarts import Supervised, supervise
from trainrun.render import render_pytorchjob, render_uploader_job, render_volume_claim
from trainrun.render.changes import decode_applied_spec, pending_changes
from trainrun.render.children import PYTORCHJOB_API_VERSION, PYTORCHJOB_KIND, canonical_spec, volume_claim_name
from trainrun.spec import InvalidTrainingRun, OperatorConfig, TrainingRun, load_training_run, problems_with_config
from trainrun.spec.status import Artifacts, LogArchive, Phase, TrainingRunStatus
from trainrun.status import PhaseEvent, compute_status, phase_event
from trainrun.status.observe import UploadState, observe_job, observe_uploader
from trainrun.status.progress import progress_status, spec_epochs

Object = dict[str, Any]
# The reasons of the Events the status reads (pod creation refused, scheduling, image pulls) and the
# ones that say why a replica went away (``trainrun.plan.causes.EVENTS``): the operator's Event cache
# keeps only these.
EVENT_REASONS = frozenset({"FailedCreatePod", "FailedCreate", "FailedScheduling", "Pulling", "Pulled", *CAUSE_EVENTS})
# An active run is looked at again after this long even when no watch said anything (a safety net).
RESYNC_SECONDS = 300.0
NO_TRAINING_OPERATOR = (
    "the cluster does not serve PyTorchJob (kubeflow.org/v1): install the Kubeflow training-operator, "
    "then the run starts by itself"
)


@dataclass(frozen=True)
class ManifestRead:
    """What reading ``<output>/manifest.json`` gave once the uploader succeeded: artifacts, or why not."""

    artifacts: Artifacts | None
    problem: str | None = None


@dataclass(frozen=True)
class Observed:
    """Everything the controller knows about a run's world, from its watches and its own memory."""

    job: Mapping[str, Any] | None = None
    pods: Sequence[Mapping[str, Any]] = ()
    events: Sequence[Mapping[str, Any]] = ()
    uploader: Mapping[str, Any] | None = None
    claim_present: bool = False
    job_kind_served: bool = True
    manifest: ManifestRead | None = None
    refusal: str | None = None  # the API server refused a child of this generation: its words
    metrics: Mapping[str, float] | None = None  # latest values the log follower read (None: none yet)
    key_metric: str | None = None
    logs_archived: bool = False  # the follower sealed the run's log archive
    progress: ProgressSnapshot | None = None  # what the log follower read of steps and silences
    gone_pods: Sequence[Mapping[str, Any]] = ()  # replica pods deleted with a disruption (node lost, preempted)


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
    read_manifest: bool = False  # read <output>/manifest.json, then plan again with Observed.manifest
    follow_logs: bool = False
    log_archive: str | None = None  # where the follower ships the run's logs (None: not archived)
    seal_logs: bool = False  # the run is done with its logs: finish the follower, seal, plan again with logs_archived
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


def plan(
    body: Mapping[str, Any],
    config: OperatorConfig,
    observed: Observed,
    *,
    now: str,
    config_problems: Sequence[str] = (),
) -> Plan:
    """The actions, status and Events for one run; ``now`` is the time to stamp (RFC 3339)."""
    previous = previous_status(body)
    try:
        run = load_training_run(body)
    except InvalidTrainingRun as error:
        status = compute_status(
            run=None,
            job=None,
            pods=[],
            events=[],
            uploader_job=None,
            previous=previous,
            problems=[str(problem) for problem in error.problems],
            pending_changes=[],
            pool=None,
            now=now,
            generation=(body.get("metadata") or {}).get("generation"),
        )
        return _finish(previous, status, actions=[], read_manifest=False, follow_logs=False, run=None)

    problems = [*config_problems, *(str(problem) for problem in problems_with_config(run, config))]
    if observed.refusal is not None:
        problems.append(observed.refusal)
    if not observed.job_kind_served:
        problems.append(NO_TRAINING_OPERATOR)
    pool_name, _ = config.pool_named(run.spec.resources.pool)
    actions: list[Action] = []
    pending: list[str] = []
    job = observed.job
    supervised = Supervised()
    if not problems:
        supervised = supervise(
            run,
            job=job,
            pods=observed.pods,
            gone=observed.gone_pods,
            events=observed.events,
            snapshot=observed.progress,
            restarts=previous.restarts,
            phase=previous.phase,
            now=now,
        )
        if not supervised.hold_job:
            actions, pending = _converge_job(run, config, observed, previous)
        if supervised.delete_job:
            actions.append(Delete(PYTORCHJOB_API_VERSION, PYTORCHJOB_KIND, run.metadata.namespace, run.metadata.name))
    elif not observed.job_kind_served:
        job = None  # nothing of that kind can be read
    archive = log_archive_uri(run, config)
    logs_complete = observed.logs_archived or (
        previous.logs is not None and previous.logs.complete and previous.logs.uri == archive
    )
    known = previous
    read_manifest = False
    if job is not None:
        actions += _converge_upload(run, config, job, observed, previous)
        # With an output URI the logs are composed into it first, so the manifest read lists them.
        artifacts, problem, read_manifest = _artifacts(run, observed, previous, logs_ready=logs_complete)
        if problem is not None:
            problems.append(problem)
        known = previous.model_copy(update={"artifacts": artifacts})
    status = compute_status(
        run=run,
        job=job,
        pods=observed.pods,
        events=observed.events,
        uploader_job=observed.uploader,
        previous=known,
        problems=problems,
        pending_changes=pending,
        pool=pool_name,
        now=now,
        supervision=supervised.supervision,
    )
    if observed.metrics is not None:
        status = status.model_copy(update={"metrics": dict(observed.metrics), "key_metric": observed.key_metric})
    progress = progress_status(observed.progress, epochs=spec_epochs(run))
    if progress is not None and status.phase is not None and not status.phase.finished:
        status = status.model_copy(update={"progress": progress})
    if supervised.restart is not None:
        status = status.model_copy(update={"restarts": [*status.restarts, supervised.restart]})
    if archive is not None:
        status = status.model_copy(update={"logs": LogArchive(uri=archive, complete=logs_complete)})
    if _volume_released(run, status) and observed.claim_present:
        actions.append(Delete("v1", "PersistentVolumeClaim", run.metadata.namespace, volume_claim_name(run)))
    done_with_logs = status.phase is not None and (status.phase.finished or status.phase == Phase.UPLOADING)
    seal = archive is not None and not logs_complete and done_with_logs
    # Through a restart too: the new job's replicas append to the same followed logs.
    active = (job is not None or supervised.restarting) and status.phase is not None and not status.phase.finished
    follow = active and not (seal or logs_complete)
    decided = _finish(
        previous,
        status,
        actions=actions,
        read_manifest=read_manifest,
        follow_logs=follow,
        run=run,
        event=supervised.event,
        check_again_in=supervised.check_again_in,
    )
    return replace(decided, log_archive=archive, seal_logs=seal)


def log_archive_uri(run: TrainingRun, config: OperatorConfig) -> str | None:
    """Where a run's logs are archived: ``<output>/logs``, else under the operator's default location."""
    if run.spec.output.uri is not None:
        return f"{run.spec.output.uri.rstrip('/')}/logs"
    if config.logs.default_uri is None:
        return None
    folder = f"{run.metadata.namespace}/{run.metadata.name}-{(run.metadata.uid or 'no-uid')[:8]}"
    return f"{config.logs.default_uri.rstrip('/')}/{folder}"


def _finish(
    previous: TrainingRunStatus,
    status: TrainingRunStatus,
    *,
    actions: list[Action],
    read_manifest: bool,
    follow_logs: bool,
    run: TrainingRun | None,
    event: PhaseEvent | None = None,
    check_again_in: float | None = None,
) -> Plan:
    change = phase_event(previous, status)
    active = status.phase is None or not status.phase.finished
    requeue = min(RESYNC_SECONDS, max(check_again_in, 1.0)) if check_again_in is not None else RESYNC_SECONDS
    return Plan(
        status=status,
        status_patch=status_patch(previous, status),
        actions=tuple(actions),
        events=tuple(item for item in (change, event) if item is not None),
        read_manifest=read_manifest,
        follow_logs=follow_logs,
        requeue_after=requeue if active else None,
        run=run,
    )


def _converge_job(
    run: TrainingRun, config: OperatorConfig, observed: Observed, previous: TrainingRunStatus
) -> tuple[list[Action], list[str]]:
    """Create the job once, apply spec changes when it can take them, and report the ones it cannot."""
    job = observed.job
    desired = render_pytorchjob(run, config)
    if job is None:
        if previous.phase is not None and (previous.phase.finished or previous.phase == Phase.UPLOADING):
            # Training ended and the job was cleaned up (ttlSecondsAfterFinished): never train again.
            return [], []
        claim = render_volume_claim(run)
        creating: list[Action] = [Apply(claim)] if claim is not None and not observed.claim_present else []
        return [*creating, Apply(desired)], []
    changes = pending_changes(decode_applied_spec(job) or {}, canonical_spec(run))
    view = observe_job(job)
    if view is None or view.has("Succeeded") or view.has("Failed"):
        return [], changes
    pods_gone = view.has("Suspended") or view.start_time is None
    queued_and_admitted = run.spec.resources.queue is not None and not (run.spec.run_policy.suspend or run.spec.cancel)
    if queued_and_admitted:
        # Kueue owns suspend once the job exists: never put an admitted job back in the queue.
        del desired["spec"]["runPolicy"]["suspend"]
    if changes and pods_gone:
        return [Apply(desired)], []
    live = (job.get("spec") or {}).get("runPolicy") or {}
    live_policy = {key: value for key, value in desired["spec"]["runPolicy"].items() if live.get(key) != value}
    if not live_policy:
        return [], changes
    patch = MergePatch(
        PYTORCHJOB_API_VERSION,
        PYTORCHJOB_KIND,
        run.metadata.namespace,
        desired["metadata"]["name"],
        {"spec": {"runPolicy": live_policy}},
    )
    return [patch], changes


def _converge_upload(
    run: TrainingRun, config: OperatorConfig, job: Mapping[str, Any], observed: Observed, previous: TrainingRunStatus
) -> list[Action]:
    """Start the uploader Job when training is over and a copy is due."""
    output = run.spec.output
    if output.uri is None or observed.uploader is not None or previous.artifacts is not None:
        return []
    view = observe_job(job)
    copy_due = view is not None and (view.has("Succeeded") or (output.copy_on_failure and view.has("Failed")))
    return [Apply(render_uploader_job(run, config))] if copy_due else []


def _artifacts(
    run: TrainingRun, observed: Observed, previous: TrainingRunStatus, *, logs_ready: bool
) -> tuple[Artifacts | None, str | None, bool]:
    """(artifacts, problem, whether the manifest must be read first) once the uploader succeeded and the
    logs are composed beside the outputs."""
    if previous.artifacts is not None:
        return previous.artifacts, None, False
    upload = observe_uploader(observed.uploader, [])
    if run.spec.output.uri is None or upload is None or upload.state is not UploadState.SUCCEEDED or not logs_ready:
        return None, None, False
    if observed.manifest is None:
        return None, None, True
    return observed.manifest.artifacts, observed.manifest.problem, False


def _volume_released(run: TrainingRun, status: TrainingRunStatus) -> bool:
    """After a verified copy the per-run claim goes, unless the spec keeps it (or it is the user's own)."""
    output = run.spec.output
    return (
        status.phase == Phase.COMPLETED
        and status.artifacts is not None
        and not output.keep_volume
        and output.volume.claim_name is None
    )
