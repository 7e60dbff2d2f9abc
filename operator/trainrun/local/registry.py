"""A local run's model registration and experiment tracking, to the MLflow server of ``MLFLOW_TRACKING_URI``.

Called by the runner (``trainrun.local.runner``) once the copy is verified (:meth:`LocalRegistry.register`,
before the run is Completed: the status says Registering meanwhile) and once the run has finished
(:meth:`LocalRegistry.track`: one MLflow run with the params, the Master's metric series from the run
folder's metrics.jsonl and the final status, found again by the run's uid). The decisions and the bodies
are the operator's (``trainrun.plan.registration``, ``trainrun.registry``); only the waiting differs: a
local run tries a registry that cannot be reached ``LOCAL_TRIES`` times with the same back-off, then
finishes with ``Registered=False`` saying so, rather than wait for it. A local sweep's best model
(``spec.register``) goes the same way (:func:`register_sweep_model`, called by ``trainrun.Client.run_sweep``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from trainrun.base.registry import SENT_TAG, RegistryError, RegistryUnavailable, VersionRequest
from trainrun.plan.registration import registration_work, tracking_plan
from trainrun.registry import client_for, register_copy
from trainrun.registry.mlflow import tracked_rows
from trainrun.spec import OperatorConfig, TrainingRun
from trainrun.spec.config import Registry
from trainrun.spec.status import ModelVersion, Tracked, TrainingRunStatus
from trainrun.spec.sweep import TrainingSweep
from trainrun.spec.sweepstatus import BestTrial
from trainrun.status.registration import RegistrationState
from trainrun.status.shapes import utc_now
from trainrun.status.work import Attempts, Registration, failure_words, retry_delay
from trainrun.sweep.plan import best_trial_registration

LOCAL_TRIES = 3
DEFAULT_KEY = "mlflow"


def local_config(run: TrainingRun, env: Mapping[str, str]) -> OperatorConfig | None:
    """The registries a local run has: ``MLFLOW_TRACKING_URI`` under the key the run names (else mlflow)."""
    uri = env.get("MLFLOW_TRACKING_URI")
    if not uri:
        return None
    register, tracking = run.spec.output.registration, run.spec.tracking
    key = (register.registry if register is not None else None) or (tracking.registry if tracking is not None else None) or DEFAULT_KEY
    return OperatorConfig(registries={key: Registry(type="mlflow", uri=uri)}, default_registry=key)


class LocalRegistry:
    """Registers and tracks one local run (see the module's docstring)."""

    def __init__(self, run: TrainingRun, env: Mapping[str, str] | None = None) -> None:
        self.run = run
        self.env = dict(os.environ if env is None else env)
        self.config = local_config(run, self.env)

    @property
    def key(self) -> str:
        """The key the registry goes by in the status."""
        register = self.run.spec.output.registration
        if self.config is not None and self.config.default_registry is not None:
            return self.config.default_registry
        return (register.registry if register is not None else None) or DEFAULT_KEY

    def register(self, status: TrainingRunStatus, report: Callable[[RegistrationState], None]) -> RegistrationState:
        """Register the verified copy in ``status.artifacts``; ``report`` is told of each failed try."""
        register = self.run.spec.output.registration
        assert register is not None
        if self.config is None:
            return RegistrationState(
                self.key,
                register.name,
                refused="spec.output.register: a local run registers to the MLflow server of MLFLOW_TRACKING_URI, "
                "which is not set",
            )
        work = registration_work(self.run, self.config, status, run_id=status.tracking.run_id if status.tracking else None)
        key = self.key
        if work is None:
            return RegistrationState(key, register.name, refused="spec.output.register: there is no verified copy to register")
        attempts: Attempts[Registration] = Attempts()
        for _ in range(LOCAL_TRIES):
            try:
                done = asyncio.run(self._register(work.request, work.manifest_uri, work.path))
            except (RegistryUnavailable, OSError) as error:
                attempts = Attempts(failures=attempts.failures + 1, error=str(error), failed_at=utc_now())
                problem = failure_words(f"registering model {register.name} in registry {key}", attempts)
                report(RegistrationState(key, register.name, problem=problem))
                if attempts.failures < LOCAL_TRIES:
                    time.sleep(retry_delay(attempts.failures))
                continue
            return RegistrationState(key, register.name, model=done.model, refused=done.refused)
        return RegistrationState(
            key, register.name, refused=f"{attempts.error} (gave up after {LOCAL_TRIES} tries: a local run does not wait for the registry)"
        )

    async def _register(self, request: VersionRequest, manifest_uri: str, path: str | None) -> Registration:
        assert self.config is not None
        key = self.key
        return await _register_copy(key, self.config.registries[key], self.env, request, manifest_uri, path)

    def track(self, status: TrainingRunStatus, metrics_path: Path, *, created: str | None) -> Tracked | None:
        """The finished run as an MLflow run (None when it is not tracked: no spec.tracking, or no server)."""
        if self.config is None or self.run.spec.tracking is None:
            return None
        config = self.config.model_copy(update={"tracking": None})
        track = tracking_plan(self.run, config, TrainingRunStatus(), status, logs_done=True, created=created)
        if track is None:
            return None
        lines = metrics_path.read_text().splitlines() if metrics_path.exists() else []
        registry = config.registries[track.registry]

        async def send() -> str:
            async with client_for(registry, self.env) as client:
                start = track.start or utc_now()
                run_id, sent = await client.tracked_run(track.experiment, track.run_uid, name=track.run_name, start=start, tags=track.tags)
                await client.log_batch(run_id, params=track.params)
                await client.log_batch(run_id, metrics=tracked_rows(lines[sent:]), tags=[*track.tags, (SENT_TAG, str(len(lines)))])
                if track.final is not None:
                    await client.end_run(run_id, status=track.final, end=utc_now())
                return run_id

        try:
            run_id = asyncio.run(send())
        except (RegistryError, OSError) as error:
            return Tracked(registry=track.registry, experiment=track.experiment, message=str(error))
        return Tracked(registry=track.registry, experiment=track.experiment, run_id=run_id, ended=track.final is not None)


async def _register_copy(
    key: str,
    registry: Registry,
    env: Mapping[str, str],
    request: VersionRequest,
    manifest_uri: str,
    path: str | None,
    field: str = "spec.output.register",
) -> Registration:
    """One try: read the copy's manifest with the credentials of ``env``, then register through ``trainrun.registry``."""
    from trainrun.storage import StorageOptions, read_manifest

    root = manifest_uri.rsplit("/", 1)[0]
    manifest = read_manifest(root, options=StorageOptions.from_env(env))
    if manifest is None:
        return Registration(refused=f"{manifest_uri} is missing: the copy cannot be registered")
    async with client_for(registry, env) as client:
        done = await register_copy(
            client,
            request,
            manifest_paths=[record.path for record in manifest.files],
            manifest_json=manifest.to_json(),
            manifest_uri=manifest_uri,
            path=path,
            field=field,
        )
    if done.version is None:
        return Registration(refused=done.refused)
    version = done.version
    return Registration(model=ModelVersion(registry=key, name=version.name, version=version.version, uri=version.source))


def register_sweep_model(
    sweep: TrainingSweep, best: BestTrial, trial: TrainingRun, status: TrainingRunStatus, env: Mapping[str, str] | None = None
) -> Registration:
    """One try of registering a local sweep's best model (``spec.register``) to the MLflow server of
    ``MLFLOW_TRACKING_URI``, with the operator's request (``trainrun.sweep.plan.best_trial_registration``);
    raises RegistryUnavailable (or OSError) while it cannot be reached: the sweep's plan says when to try again."""
    environment = dict(os.environ if env is None else env)
    register = sweep.spec.registration
    if register is None:
        return Registration(refused="spec.register is not set")
    uri = environment.get("MLFLOW_TRACKING_URI")
    if not uri:
        return Registration(refused="spec.register: a local sweep registers to the MLflow server of MLFLOW_TRACKING_URI, which is not set")
    key = register.registry or DEFAULT_KEY
    config = OperatorConfig(registries={key: Registry(type="mlflow", uri=uri)}, default_registry=key)
    work = best_trial_registration(sweep, best, trial, status, config)
    if isinstance(work, str):
        return Registration(refused=work)
    registry = config.registries[key]
    return asyncio.run(_register_copy(key, registry, environment, work.request, work.manifest_uri, work.path, work.field))
