"""The sweep controller: TrainingSweeps and their trials in, ``plan_sweep`` in the middle, the writes out.

Made by ``trainrun.controller.handlers`` at kopf's start-up beside the TrainingRun controller, and fed
TrainingSweep events by its kopf handler. Its trials (TrainingRuns labelled with the sweep's name) come
from a watch cache of its own (``informers``), kept as the projections the plan reads. A reconcile is one
pass for one sweep: read it and its trials from memory -> ``trainrun.sweep.plan_sweep``, once (pure) ->
create the trials it names (create-only: a name that exists is the trial already; 409 is success) ->
patch the trials it stops -> post its Events through the shared deduplicating recorder -> patch status
once, when it changed. A sweep with ``spec.register`` that the plan finds done has its best trial's model
registered by a task (``_register``: the trial read from the API, the request built by the pure
``best_trial_registration``, sent by the TrainingRun controller's ``Registrar``, found again by the sweep's
uid so never twice); what it brings is the plan's fact on the next pass. The plan reads everything from the objects, so a crash between any two steps is
repaired by the next pass of this process or of the next leader. Only the leader works the queue
(``trainrun.controller.leader``); the standby keeps its caches warm.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any

from trainrun.base.registry import RegistryUnavailable
from trainrun.controller.informers import Informer, Key
from trainrun.controller.operator import EventRecorder, WrittenStatuses
from trainrun.controller.queue import WorkQueue
from trainrun.controller.registration import Registrar
from trainrun.kube.aioclient import TRAINING_RUNS, TRAINING_SWEEPS, ApiError, AsyncKube
from trainrun.spec import OperatorConfig, load_training_run
from trainrun.spec.annotations import SWEEP_LABEL
from trainrun.spec.status import TrainingRunStatus
from trainrun.status.shapes import utc_now
from trainrun.status.work import Attempts, Registration
from trainrun.storage import StorageError
from trainrun.sweep import SweepPlan, plan_sweep
from trainrun.sweep.plan import best_trial_registration
from trainrun.sweep.trials import projected

logger = logging.getLogger(__name__)

Object = dict[str, Any]
SWEEP_WORKERS = 4
# Changes of a sweep's trials within this window give one reconcile (a trial's status is written every few
# seconds while it trains: the sweep needs a settled view, not every metric).
TRIAL_COALESCE_SECONDS = 1.0


class SweepController:
    """Reconciles every TrainingSweep in the watched namespaces (None: all)."""

    def __init__(
        self,
        kube: AsyncKube,
        *,
        namespaces: list[str | None],
        recorder: EventRecorder,
        workers: int = SWEEP_WORKERS,
        registrar: Registrar | None = None,
        config: Callable[[], OperatorConfig] = OperatorConfig,
        config_synced: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.kube = kube
        self.recorder = recorder
        self.registrar = registrar
        self.config = config  # the operator configuration as the TrainingRun controller keeps it
        self.config_synced = config_synced  # waited for before the first reconcile: a registry is never unknown for want of it
        # What the tries of registering each sweep's best model brought (facts for the plan), and the try under way.
        self.registrations: dict[Key, Attempts[Registration]] = {}
        self.registering: dict[Key, asyncio.Task[None]] = {}
        self.sweeps: dict[Key, Object] = {}
        self.trials: dict[Key, dict[str, Object]] = {}  # by sweep, then by trial name
        self.written = WrittenStatuses()
        self.posted: dict[Key, set[str]] = {}  # Event names posted, by sweep
        self.queue = WorkQueue(self._reconcile_key, workers=workers)
        self.informers = [
            Informer(
                kube, TRAINING_RUNS, namespace, project=projected, on_change=self._on_trial, params={"labelSelector": SWEEP_LABEL}
            )
            for namespace in namespaces
        ]

    # ---- inputs: kopf's TrainingSweep events and the trials' watch cache ----

    def sweep_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A TrainingSweep event from kopf (type None: the initial listing)."""
        metadata = dict(body.get("metadata") or {})
        metadata.pop("managedFields", None)
        sweep = {**dict(body), "metadata": metadata}
        key = (str(metadata.get("namespace")), str(metadata.get("name")))
        if event_type == "DELETED":
            self.sweeps.pop(key, None)
            self.written.pop(key, None)
            self.posted.pop(key, None)
            self.registrations.pop(key, None)
            self.queue.forget(key)
            return
        self.written.stand_in(key, sweep)
        self.sweeps[key] = sweep
        self.queue.add(key)

    def _on_trial(self, old: Object | None, new: Object | None) -> None:
        current = new if new is not None else old
        if current is None:
            return
        metadata = current["metadata"]
        key = (str(metadata.get("namespace")), str((metadata.get("labels") or {}).get(SWEEP_LABEL)))
        trials = self.trials.setdefault(key, {})
        if new is not None:
            trials[str(metadata["name"])] = new
        else:
            trials.pop(str(metadata["name"]), None)
            if not trials:
                self.trials.pop(key, None)
        self.queue.add(key, TRIAL_COALESCE_SECONDS)

    @property
    def synced(self) -> bool:
        return all(informer.synced.is_set() for informer in self.informers)

    # ---- leadership ----

    def leading(self, leading: bool) -> None:
        """Work the queue as leader (every sweep is looked at again), or stop."""
        if leading:
            self.queue.active.set()
            for key in self.sweeps:
                self.queue.add(key)
        else:
            self.queue.active.clear()

    # ---- one reconcile: plan once, act, write status once ----

    async def _reconcile_key(self, key: Hashable) -> float | None:
        assert isinstance(key, tuple)
        return await self.reconcile(key)

    async def reconcile(self, key: Key) -> float | None:
        """One pass for one sweep: plan once -> create trials -> stop trials -> Events -> one status write."""
        body = self.sweeps.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        config = self.config()
        trials = list(self.trials.get(key, {}).values())
        decided = plan_sweep(body, trials, now=utc_now(), config=config, registration=self.registrations.get(key))
        existed = await self._create(key, decided)
        if decided.register is not None:
            self._start_registration(key, decided, config)
        await self._patch(key, decided)
        posted = self.posted.setdefault(key, set())
        for change in decided.events:
            await self.recorder.record(body, change, decided.status.observed_generation, posted)
        if decided.status_patch != (body.get("status") or {}):
            patched = await self.kube.patch_merge(
                TRAINING_SWEEPS, key[0], key[1], {"status": decided.status_patch}, subresource="status"
            )
            self.written.wrote(key, patched, self.sweeps.get(key))
        if existed:
            # A trial this pass meant to create exists already (the watch has not brought it yet): decide
            # again once it has, from the trial as it is.
            return TRIAL_COALESCE_SECONDS
        return decided.requeue_after

    # ---- the best trial's model: registered by a task whose result is a fact of the next plan ----

    def _start_registration(self, key: Key, decided: SweepPlan, config: OperatorConfig) -> None:
        if key in self.registering or decided.register is None:
            return
        before = self.registrations.get(key, Attempts())
        self.registrations[key] = Attempts(running=True, failures=before.failures, error=before.error, failed_at=before.failed_at)
        task = asyncio.get_running_loop().create_task(
            self._register(key, decided, decided.register, config), name=f"register the best model of {key[1]}"
        )
        self.registering[key] = task

    async def _register(self, key: Key, decided: SweepPlan, trial_name: str, config: OperatorConfig) -> None:
        """One try: read the best trial, build its request (pure) and register it with the run's registrar; a
        registry, store or API server that cannot be reached is tried again after the plan's back-off."""
        before = self.registrations.get(key, Attempts())
        try:
            result = await self._register_once(key, decided, trial_name, config)
            after: Attempts[Registration] = Attempts(result=result, failures=before.failures)
        except (StorageError, ApiError, RegistryUnavailable) as error:
            logger.warning("registering the best model of sweep %s/%s failed (tried again later): %s", *key, error)
            after = Attempts(failures=before.failures + 1, error=str(error), failed_at=utc_now())
        except Exception as error:  # noqa: BLE001 - a bug must not leave the sweep Registering for ever unseen
            logger.exception("registering the best model of sweep %s/%s failed", *key)
            after = Attempts(failures=before.failures + 1, error=f"{type(error).__name__}: {error}", failed_at=utc_now())
        finally:
            self.registering.pop(key, None)
        if key in self.sweeps:
            self.registrations[key] = after
            self.queue.add(key)

    async def _register_once(self, key: Key, decided: SweepPlan, trial_name: str, config: OperatorConfig) -> Registration:
        sweep, best = decided.sweep, decided.status.best
        if sweep is None or best is None or best.trial != trial_name or self.registrar is None:
            return Registration(refused="the sweep's best trial changed or no registrar runs")
        obj = await self.kube.get(TRAINING_RUNS, key[0], trial_name)
        if obj is None:
            return Registration(refused=f"spec.register: the best trial {trial_name} is gone (deleted): its model cannot be registered")
        trial = load_training_run(obj)
        status = TrainingRunStatus.model_validate(obj.get("status") or {})
        work = best_trial_registration(sweep, best, trial, status, config)
        if isinstance(work, str):
            return Registration(refused=work)
        return await self.registrar.register(trial, work, config)

    async def _create(self, key: Key, decided: SweepPlan) -> bool:
        """Create the plan's trials; whether one of them existed already (create-only: never replaced)."""
        existed = False
        for trial in decided.creates:
            try:
                await self.kube.create(TRAINING_RUNS, key[0], trial)
            except ApiError as error:
                if error.status != 409:
                    raise  # refused or unreachable: the queue tries again with back-off
                existed = True
        return existed

    async def _patch(self, key: Key, decided: SweepPlan) -> None:
        """Stop (or annotate) the trials the plan names; a trial deleted meanwhile needs nothing."""
        for patch in decided.patches:
            try:
                await self.kube.patch_merge(TRAINING_RUNS, key[0], patch.name, patch.patch)
            except ApiError as error:
                if error.status != 404:
                    raise

    async def run(self) -> None:
        """The trials' watches and the workers, until cancelled; the workers start once the trials are known
        (a sweep decided before would try to create trials that exist)."""
        tasks = [asyncio.create_task(informer.run(), name=f"watch {informer.what} (trials)") for informer in self.informers]
        try:
            await asyncio.gather(*(informer.synced.wait() for informer in self.informers))
            if self.config_synced is not None:
                await self.config_synced()
            logger.info("trial caches synced: working the sweeps' queue")  # the sweeps come from kopf's watch
            await self.queue.run()
        finally:
            running = [*tasks, *self.registering.values()]
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
