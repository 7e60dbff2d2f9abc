"""The training backend a run's job is rendered for: the one seam between a TrainingRun and its job's kind.

A run becomes a Kubeflow training-operator v1 ``PyTorchJob`` or a Kubeflow Trainer v2 ``TrainJob``, as the
operator configuration says (``backend``). Everything above the job (the plan's phases, the status and its
words, the log follower, the archive, restarts, the uploader, the CLI) is the same for both: the plan asks
its :class:`Backend` for the job, for what a live job may still take, for what the kind cannot carry and
what to install when the cluster lacks it; the watch projections (``trainrun.plan.projections``) read
either kind into one shape. Called by ``trainrun.plan`` and ``trainrun render``. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from trainrun.render.children import (
    PYTORCHJOB_API_VERSION,
    PYTORCHJOB_KIND,
    owns_suspend,
    render_pytorchjob,
    render_uploader_job,
    render_volume_claim,
    run_policy,
)
from trainrun.render.trainjob import (
    MASTER_OUTPUTS,
    TRAINJOB_API_VERSION,
    TRAINJOB_KIND,
    node_job_name,
    render_trainjob,
    trainjob_live_fields,
    trainjob_problems,
)
from trainrun.spec.config import OperatorConfig
from trainrun.spec.errors import FieldProblem
from trainrun.spec.model import TrainingRun

Object = dict[str, Any]


@dataclass(frozen=True)
class Backend:
    """One kind of job a run can become."""

    kind: str
    api_version: str
    install: str  # what the platform team installs when the cluster does not serve the kind
    render_job: Callable[[TrainingRun, OperatorConfig], Object]
    # run, live job -> the fields the live job may still take that differ from the run's (None: nothing to patch);
    # computed from the run alone, so a reconcile of a job that exists renders no whole job to compare
    live_patch: Callable[[TrainingRun, Mapping[str, Any]], Object | None]
    problems: Callable[[TrainingRun], list[FieldProblem]]  # what this kind cannot carry for the run
    shared_outputs: bool  # every replica mounts the output claim (in a folder of its own)
    master_outputs: str | None  # the Master's folder in the output claim (None: the claim's root)
    pod_creator: str  # who creates the replica pods, in the status's words
    pod_creator_objects: Callable[[str], tuple[str, ...]]  # run name -> the objects besides the job whose Events
    # say why pods could not be created

    def render_claim(self, run: TrainingRun) -> Object | None:
        return render_volume_claim(run, shared=self.shared_outputs and run.spec.distribution.workers > 0)

    def render_uploader(self, run: TrainingRun, config: OperatorConfig) -> Object:
        return render_uploader_job(run, config, outputs_subpath=self.master_outputs)

    def missing(self) -> str:
        """The status's words when the cluster does not serve this kind."""
        return f"the cluster does not serve {self.kind} ({self.api_version}): {self.install}, then the run starts by itself"


def _pytorchjob_live_patch(run: TrainingRun, live: Mapping[str, Any]) -> Object | None:
    """The run policy fields of a live PyTorchJob that differ from the run's."""
    current = (live.get("spec") or {}).get("runPolicy") or {}
    desired = run_policy(run, owns_suspend=owns_suspend(run))
    changed = {key: value for key, value in desired.items() if current.get(key) != value}
    return {"spec": {"runPolicy": changed}} if changed else None


def _trainjob_live_patch(run: TrainingRun, live: Mapping[str, Any]) -> Object | None:
    """A live TrainJob takes a suspend (stop or resume) and a new deadline; Trainer refuses other changes."""
    current = live.get("spec") or {}
    changed = {key: value for key, value in trainjob_live_fields(run).items() if current.get(key) != value}
    return {"spec": changed} if changed else None


PYTORCHJOB = Backend(
    kind=PYTORCHJOB_KIND,
    api_version=PYTORCHJOB_API_VERSION,
    install="install the Kubeflow training-operator (v1.9)",
    render_job=render_pytorchjob,
    live_patch=_pytorchjob_live_patch,
    problems=lambda run: [],
    shared_outputs=False,
    master_outputs=None,
    pod_creator="the training-operator",
    pod_creator_objects=lambda name: (),  # it creates them itself: its Events are the PyTorchJob's
)
TRAINJOB = Backend(
    kind=TRAINJOB_KIND,
    api_version=TRAINJOB_API_VERSION,
    install="install Kubeflow Trainer v2 (v2.3) with JobSet, and manifests/trainer-v2 (the trainrun-torch runtime)",
    render_job=render_trainjob,
    live_patch=_trainjob_live_patch,
    problems=trainjob_problems,
    shared_outputs=True,
    master_outputs=MASTER_OUTPUTS,
    pod_creator="JobSet's Job",
    pod_creator_objects=lambda name: (node_job_name(name),),
)
BACKENDS = {backend.kind: backend for backend in (PYTORCHJOB, TRAINJOB)}


def backend_of(config: OperatorConfig) -> Backend:
    """The backend the operator configuration chose."""
    return BACKENDS[config.backend]


def backend_for(job: Mapping[str, Any] | None, config: OperatorConfig) -> Backend:
    """The backend of a run: its job's kind once it has one (a run keeps its backend when the configuration
    changes), else the configuration's."""
    kind = str((job or {}).get("kind") or "")
    return BACKENDS.get(kind) or backend_of(config)
