"""``trainrun.Client``: one facade over two backends, the cluster (via kubeconfig) and this machine.

    client = trainrun.Client()                                 # the cluster of the current kubeconfig
    client = trainrun.Client(backend="local", runs_dir="runs") # replicas as local processes
    run = client.create("quickstart.yaml", wait=True)
    client.metrics("quickstart")["latest"]["train_loss"]

Runs travel as plain dicts in the cluster's shape (apiVersion, kind, metadata, spec, status) whatever
the backend. The CLI is a thin layer over this class; notebooks use it directly. Waiting, metric
summaries and artifact access are written once here; the backends only fetch.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Literal, Protocol

from trainrun.client.documents import Source, single_training_run, single_training_sweep, training_run_documents
from trainrun.client.errors import ClientError, RunNotFound, WaitTimeout
from trainrun.metrics.observer import RunObserver, distinct_records
from trainrun.spec import OperatorConfig, load_training_sweep, validate_training_run
from trainrun.spec.annotations import RUN_DIR_ANNOTATION, SWEEP_LABEL
from trainrun.spec.status import Phase, TrainingRunStatus
from trainrun.status.shapes import utc_now
from trainrun.status.work import Attempts, Registration
from trainrun.storage.ignore import CODE_SNAPSHOT_LIMIT_BYTES
from trainrun.sweep import SweepPlan, plan_sweep

if TYPE_CHECKING:
    from trainrun.storage.manifest import Manifest

Object = dict[str, Any]
Objects = list[Object]  # spelled out: inside the classes, ``list`` is the method
BackendName = Literal["cluster", "local"]
WAIT_POLL_SECONDS = 1.0


class Backend(Protocol):
    """What each backend provides; everything else is built on it by Client."""

    def create(self, document: Object) -> Object: ...

    def stage_code(self, document: Object, directory: Path, uri: str | None, max_bytes: int) -> str: ...

    def run(self, document: Object, *, observer: RunObserver | None = None) -> Object: ...

    def get(self, name: str) -> Object: ...

    def list(self, *, all_namespaces: bool = False) -> Objects: ...

    def where(self, *, all_namespaces: bool = False) -> str: ...

    def logs(
        self, name: str, *, follow: bool = False, replica: str | None = None, tail: int | None = None
    ) -> Iterator[tuple[str, str]]: ...

    def metric_history(self, name: str) -> Objects: ...

    def events(self, name: str) -> Objects: ...

    def default_output_uri(self, run: Object) -> str: ...

    def cancel(self, name: str) -> Object: ...

    def annotate(self, name: str, annotations: Mapping[str, str]) -> Object: ...

    def delete(self, name: str) -> bool: ...

    def operator_config(self) -> OperatorConfig | None: ...

    def create_sweep(self, document: Object) -> Object: ...

    def get_sweep(self, name: str) -> Object: ...

    def list_sweeps(self, *, all_namespaces: bool = False) -> Objects: ...


class Client:
    """Create, watch and inspect TrainingRuns on a cluster or on this machine."""

    def __init__(
        self,
        backend: BackendName = "cluster",
        *,
        runs_dir: str | Path | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        namespace: str | None = None,
        config: OperatorConfig | None = None,
    ) -> None:
        """backend "cluster" reads the kubeconfig (or the in-cluster account); "local" keeps runs in runs_dir.

        config, when given, is the operator configuration that runs are validated against before they
        are created (unknown pool, too many GPUs for the pool), as the operator would.
        """
        self.config = config
        self.local = backend == "local"  # runs judged for this machine: spec.image is not needed
        self.backend: Backend
        if backend == "local":
            from trainrun.client.local import LocalBackend

            self.backend = LocalBackend(runs_dir=runs_dir)
        elif backend == "cluster":
            from trainrun.client.cluster import ClusterBackend

            self.backend = ClusterBackend(kubeconfig=kubeconfig, context=context, namespace=namespace)
        else:
            raise ClientError(f"backend must be 'cluster' or 'local', not {backend!r}")

    # -- creating ----------------------------------------------------------------------------------------

    def validate(self, source: Source, overrides: Sequence[str] = ()) -> Objects:
        """The TrainingRun documents of source (``PATH=VALUE`` overrides applied, as ``--set``), each checked
        as the operator checks it (raises InvalidTrainingRun)."""
        documents = training_run_documents(source, overrides)
        for document in documents:
            validate_training_run(document, self.config, local=self.local)
        return documents

    def create(
        self,
        source: Source,
        *,
        wait: bool = False,
        timeout: float | None = None,
        code: str | Path | None = None,
        code_uri: str | None = None,
        code_limit_bytes: int = CODE_SNAPSHOT_LIMIT_BYTES,
    ) -> Object:
        """Create the run of source (dict, YAML string, path, TrainingRun); with wait, return it finished.

        code is a folder of your own code to run it with (spec.code): on a cluster it is uploaded to
        code_uri (default: ``<spec.output.uri>/code``) and staged into the replicas; locally it is copied
        into the run folder. Either way it becomes the replicas' working directory.
        """
        document = self._prepared(source, code=code, code_uri=code_uri, code_limit_bytes=code_limit_bytes)
        created = self.backend.create(document)
        if not wait:
            return created
        return self.wait(_name_of(created), phases=(Phase.COMPLETED,), timeout=timeout)

    def run(
        self,
        source: Source,
        *,
        observer: RunObserver | None = None,
        code: str | Path | None = None,
        code_uri: str | None = None,
        code_limit_bytes: int = CODE_SNAPSHOT_LIMIT_BYTES,
    ) -> Object:
        """Create the run and follow it to the end, reporting to observer; the finished run.

        Local: the replicas are children of this process and Ctrl-C cancels them. Cluster: the run is
        created and followed; interrupting the follow leaves it running. code and code_uri: as in create.
        """
        return self.backend.run(self._prepared(source, code=code, code_uri=code_uri, code_limit_bytes=code_limit_bytes), observer=observer)

    def _prepared(
        self, source: Source, *, code: str | Path | None, code_uri: str | None, code_limit_bytes: int
    ) -> Object:
        """The one TrainingRun of source, validated, with its code snapshot attached when code is given."""
        document = single_training_run(source)
        validate_training_run(document, self.config, local=self.local)
        if code is not None:
            directory = Path(code)
            if not directory.is_dir():
                raise ClientError(f"--code {directory} is not a folder")
            spec = document.setdefault("spec", {})
            spec["code"] = {**(spec.get("code") or {}), "uri": self.backend.stage_code(document, directory, code_uri, code_limit_bytes)}
            validate_training_run(document, self.config, local=self.local)
        return document

    # -- sweeps ------------------------------------------------------------------------------------------

    def create_sweep(self, source: str | Path | Mapping[str, Any]) -> Object:
        """Create the TrainingSweep of source on the cluster (checked as the operator checks it); its trials
        are the operator's to run."""
        document = single_training_sweep(source)
        load_training_sweep(document, local=self.local)
        return self.backend.create_sweep(document)

    def get_sweep(self, name: str) -> Object:
        """The TrainingSweep with its status (raises RunNotFound)."""
        return self.backend.get_sweep(name)

    def list_sweeps(self, *, all_namespaces: bool = False) -> Objects:
        """Every TrainingSweep of the namespace (or of all namespaces)."""
        return self.backend.list_sweeps(all_namespaces=all_namespaces)

    def trials(self, sweep: str) -> Objects:
        """The trials of a sweep: its TrainingRuns (labelled with its name)."""
        return [run for run in self.list() if ((run.get("metadata") or {}).get("labels") or {}).get(SWEEP_LABEL) == sweep]

    def run_sweep(
        self,
        source: str | Path | Mapping[str, Any],
        *,
        on_plan: Callable[[SweepPlan], None] | None = None,
        poll_seconds: float = WAIT_POLL_SECONDS,
    ) -> Object:
        """Run a sweep from this process to its end, on the same plan as the operator's: trials are this
        backend's runs (locally: ``parallelism`` local runs at a time), created, stopped and judged by
        ``trainrun.sweep.plan_sweep`` every ``poll_seconds``; on_plan sees each plan. The sweep, with its
        final status. Ctrl-C (KeyboardInterrupt) cancels the trials still running."""
        document = single_training_sweep(source)
        sweep = load_training_sweep(document, local=self.local)
        metadata = {**(document.get("metadata") or {}), "uid": str(uuid.uuid4()), "generation": 1}
        metadata.setdefault("namespace", sweep.metadata.namespace)
        body: Object = {**document, "metadata": metadata}
        registration: Attempts[Registration] = Attempts()
        try:
            while True:
                decided = plan_sweep(body, self.trials(sweep.metadata.name), now=utc_now(), registration=registration, local=self.local)
                if decided.register is not None:
                    registration = self._register_best(decided, registration)
                    continue
                for trial in decided.creates:
                    self.backend.create(trial)
                for patch in decided.patches:
                    if patch.annotations:
                        self.backend.annotate(patch.name, patch.annotations)
                    if patch.cancel:
                        self.backend.cancel(patch.name)
                body["status"] = decided.status_patch
                if on_plan is not None:
                    on_plan(decided)
                if decided.status.phase is not None and decided.status.phase.finished:
                    return body
                time.sleep(poll_seconds)
        except KeyboardInterrupt:
            for run in self.trials(sweep.metadata.name):
                phase = status_of(run).phase
                if phase is None or not phase.finished:
                    self.backend.cancel(_name_of(run))
            raise

    def _register_best(self, decided: SweepPlan, before: Attempts[Registration]) -> Attempts[Registration]:
        """One try of registering the best trial's model of a sweep run from this process (locally: to the MLflow
        server of MLFLOW_TRACKING_URI), given up after ``LOCAL_SWEEP_TRIES`` failures as a local run does."""
        sweep, best = decided.sweep, decided.status.best
        if sweep is None or best is None:
            return Attempts(result=Registration(refused="the sweep has no best trial"))
        if not self.local:
            words = "spec.register: a sweep run from this process registers nothing on a cluster; create it for the operator (trainrun sweep FILE)"
            return Attempts(result=Registration(refused=words))
        from trainrun.base.registry import RegistryUnavailable
        from trainrun.local.registry import LOCAL_TRIES, register_sweep_model
        from trainrun.spec import load_training_run
        from trainrun.sweep.trials import owned_by

        trials = self.trials(sweep.metadata.name)
        trial = next((run for run in trials if _name_of(run) == best.trial and owned_by(run, sweep.metadata.uid)), None)
        if trial is None:
            return Attempts(result=Registration(refused=f"spec.register: the best trial {best.trial} is gone"))
        try:
            return Attempts(result=register_sweep_model(sweep, best, load_training_run(trial, local=True), status_of(trial)))
        except (RegistryUnavailable, OSError) as error:
            failed = Attempts[Registration](failures=before.failures + 1, error=str(error), failed_at=utc_now())
            if failed.failures >= LOCAL_TRIES:
                words = f"{error} (gave up after {LOCAL_TRIES} tries: a local sweep does not wait for the registry)"
                return Attempts(result=Registration(refused=words))
            return failed

    # -- reading -----------------------------------------------------------------------------------------

    def get(self, name: str) -> Object:
        """The run with its status (raises RunNotFound)."""
        return self.backend.get(name)

    def list(self, *, all_namespaces: bool = False) -> Objects:
        """Every run (of the namespace, or all namespaces; every run folder locally)."""
        return self.backend.list(all_namespaces=all_namespaces)

    def where(self, *, all_namespaces: bool = False) -> str:
        """Where ``list`` looks: ``in namespace 'default'``, or locally ``in /home/me/project/runs``."""
        return self.backend.where(all_namespaces=all_namespaces)

    def status(self, name: str) -> TrainingRunStatus:
        """The run's status as a model."""
        return status_of(self.get(name))

    def wait(
        self,
        name: str,
        *,
        phases: Iterable[str | Phase] = (Phase.COMPLETED,),
        timeout: float | None = None,
    ) -> Object:
        """Wait until the run is in one of phases or finished (whichever first); the run at that moment.

        Raises WaitTimeout after timeout seconds. A finished phase not in phases is returned too: compare
        ``run["status"]["phase"]`` to know which.
        """
        wanted = {Phase(phase) for phase in phases}
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self.get(name)
            phase = status_of(run).phase
            if phase is not None and (phase in wanted or phase.finished):
                return run
            if deadline is not None and time.monotonic() >= deadline:
                shown = ", ".join(sorted(wanted))
                raise WaitTimeout(f"run {name!r} is {phase or 'not started'}, not {shown}, after {timeout:g}s")
            time.sleep(
                WAIT_POLL_SECONDS if deadline is None else max(min(WAIT_POLL_SECONDS, deadline - time.monotonic()), 0)
            )

    def logs(
        self, name: str, *, follow: bool = False, replica: str | None = None, tail: int | None = None
    ) -> Iterator[tuple[str, str]]:
        """(replica, line) pairs of every replica (or one: master-0, worker-1); follow keeps reading;
        tail starts each replica's log at its last ``tail`` lines (as ``kubectl logs --tail``)."""
        if tail is not None and tail < 0:
            raise ValueError(f"tail must be 0 or more, got {tail}")
        return self.backend.logs(name, follow=follow, replica=replica, tail=tail)

    def metrics(self, name: str) -> Object:
        """{"latest": {name: value}, "key": "val_loss=0.31", "history": [{epoch, step, values...}]}."""
        status = self.status(name)
        history = distinct_records(self.backend.metric_history(name))
        return {"latest": dict(status.metrics), "key": status.key_metric, "history": history}

    def events(self, name: str) -> Objects:
        """Recent Kubernetes events about the run and its children, oldest first (none locally)."""
        return self.backend.events(name)

    def output_uri(self, name: str) -> str:
        """Where the run's artifacts are: where it copied them (status.artifacts), else where they go
        (spec.output.uri, else the backend's default: locally the run folder's artifacts/)."""
        run = self.get(name)
        artifacts = status_of(run).artifacts
        if artifacts is not None:
            return artifacts.uri
        uri = ((run.get("spec") or {}).get("output") or {}).get("uri")
        return str(uri) if uri else self.backend.default_output_uri(run)

    def artifacts(self, name: str) -> Object:
        """Where the artifacts are and what: {"uri", "manifest": {files, total_bytes, ...} or None}."""
        uri = self.output_uri(name)
        manifest = read_manifest(uri)
        return {"uri": uri, "manifest": None if manifest is None else _manifest_dict(manifest)}

    def download(self, name: str, destination: str | Path) -> Path:
        """Copy the run's artifacts into destination (checked against the manifest); the folder."""
        from trainrun.storage import StorageOptions, download

        target = Path(destination)
        download(self.output_uri(name), target, options=StorageOptions.from_env(os.environ))
        return target

    # -- registered models ----------------------------------------------------------------------------

    def models(self, name: str | None = None, *, registry: str | None = None) -> Objects:
        """The versions of model ``name`` (of every model without one) in a registry, oldest first: each
        {registry, name, version, source, run, metrics, created, manifest, runId, tags}."""
        from trainrun.client.models import list_versions

        return list_versions(self._registry_config(registry), name, registry=registry)

    def download_model(self, reference: str, destination: str | Path, *, registry: str | None = None) -> Object:
        """Fetch version ``NAME[:VERSION]`` (the latest without one) into destination, every file checked
        against the manifest of the copy it was registered from; the version."""
        from trainrun.client.models import download_version

        return download_version(self._registry_config(registry), reference, Path(destination), registry=registry)

    def _registry_config(self, registry: str | None) -> OperatorConfig | None:
        """The operator configuration that names the registries: the client's own, else the backend's."""
        if self.config is not None or (registry is None and os.environ.get("MLFLOW_TRACKING_URI")):
            return self.config
        return self.backend.operator_config()

    # -- changing ----------------------------------------------------------------------------------------

    def cancel(self, name: str) -> Object:
        """Stop the run for good (phase Cancelled); its logs are kept."""
        return self.backend.cancel(name)

    def delete(self, name: str) -> bool:
        """Delete the run (and, on a cluster, its children); False when it was not there."""
        return self.backend.delete(name)


def status_of(run: Object) -> TrainingRunStatus:
    """The status part of a run object as a model (empty when it has none yet)."""
    return TrainingRunStatus.model_validate(run.get("status") or {})


def run_dir_of(run: Object) -> str | None:
    """The run folder of a local run (None for a cluster run)."""
    folder = ((run.get("metadata") or {}).get("annotations") or {}).get(RUN_DIR_ANNOTATION)
    return str(folder) if folder else None


def run_label(run: Object) -> str:
    """The name that picks exactly this run in every verb: a local run's folder (``quickstart-20261130-051800``:
    two runs of one name are two folders), else ``metadata.name``."""
    folder = run_dir_of(run)
    return PurePath(folder).name if folder else str((run.get("metadata") or {}).get("name", ""))


def read_manifest(uri: str) -> Manifest | None:
    """The manifest at uri, or None when there is none (nothing copied yet, or no output URI)."""
    from trainrun.storage import StorageOptions
    from trainrun.storage import read_manifest as read_stored_manifest

    return read_stored_manifest(uri, options=StorageOptions.from_env(os.environ))


def _manifest_dict(manifest: Manifest) -> Object:
    import json

    loaded: Object = json.loads(manifest.to_json())
    return loaded


def _name_of(run: Object) -> str:
    return str(run["metadata"]["name"])


__all__ = [
    "Backend",
    "Client",
    "ClientError",
    "RunNotFound",
    "RunObserver",
    "WaitTimeout",
    "run_dir_of",
    "run_label",
    "status_of",
]
