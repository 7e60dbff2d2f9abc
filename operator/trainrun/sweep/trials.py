"""A sweep's trials as TrainingRun objects: made from the template (``trial_object``) and read back
(``trial_view``), with the marks the sweep puts on them (``trainrun.spec.annotations``).

Called by the sweep planner (``trainrun.sweep.plan``), by the operator's sweep controller (``projected``:
what its trials' watch keeps) and by the CLI's sweep plot (``positions``). A trial's parameters and
Optuna's notes are in its annotations, its objective's values by position in its status
(``status.series``, kept by the TrainingRun's status builder for the metric the trial's
``trainrun.dev/series`` annotation names): everything the study is rebuilt from is on the trial object.
Pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trainrun.spec.annotations import (
    PARAMETERS_ANNOTATION,
    PRUNED_ANNOTATION,
    SAMPLER_NOTES_ANNOTATION,
    SERIES_ANNOTATION,
    SWEEP_LABEL,
    TRIAL_NUMBER_ANNOTATION,
)
from trainrun.spec.model import API_VERSION, KIND
from trainrun.spec.status import Phase
from trainrun.spec.sweep import SWEEP_KIND, Scalar, TrainingSweep, with_parameters
from trainrun.spec.sweepstatus import TrialState

Object = dict[str, Any]
SWEEP_ANNOTATIONS = (
    TRIAL_NUMBER_ANNOTATION,
    PARAMETERS_ANNOTATION,
    SAMPLER_NOTES_ANNOTATION,
    PRUNED_ANNOTATION,
    SERIES_ANNOTATION,
)
# Optuna's notes larger than this are not kept on a trial (an annotation's room is 256 KiB in all).
MAX_NOTES_BYTES = 64 * 1024


@dataclass(frozen=True)
class TrialView:
    """One trial as the study needs it, read from its TrainingRun (``trial_view``)."""

    number: int
    name: str
    parameters: Mapping[str, Scalar]
    state: TrialState
    value: float | None = None  # the objective's value (Completed), else its last reported
    intermediate: Mapping[int, float] = field(default_factory=dict)  # the objective by position
    notes: Mapping[str, Any] = field(default_factory=dict)  # Optuna's system attrs of the trial
    message: str | None = None


@dataclass(frozen=True)
class Suggestion:
    """The parameters of a new trial, and Optuna's notes about it (kept on the trial for the next rebuild)."""

    number: int
    parameters: dict[str, Scalar]
    notes: dict[str, Any]


def trial_name(sweep: str, number: int) -> str:
    return f"{sweep}-{number}"


def trial_object(sweep: TrainingSweep, template: Mapping[str, Any], suggestion: Suggestion) -> Object:
    """The TrainingRun of one trial: the template as written with the suggested parameters (and its own output
    folder, :func:`trial_output`), owned by the
    sweep (deleted with it), labelled with its name, its parameters and Optuna's notes in annotations."""
    metadata = sweep.metadata
    notes = json.dumps(suggestion.notes, sort_keys=True)
    annotations = {
        TRIAL_NUMBER_ANNOTATION: str(suggestion.number),
        PARAMETERS_ANNOTATION: json.dumps(suggestion.parameters, sort_keys=True),
        SERIES_ANNOTATION: sweep.spec.objective.metric,
    }
    if len(notes) <= MAX_NOTES_BYTES:
        annotations[SAMPLER_NOTES_ANNOTATION] = notes
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": trial_name(metadata.name, suggestion.number),
            "namespace": metadata.namespace,
            "labels": {SWEEP_LABEL: metadata.name},
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": SWEEP_KIND,
                    "name": metadata.name,
                    "uid": metadata.uid,
                    "controller": True,  # no blockOwnerDeletion: that needs update on the sweep's finalizers
                }
            ],
        },
        "spec": trial_output(with_parameters(template, suggestion.parameters), trial_name(metadata.name, suggestion.number)),
    }


def trial_output(spec: Mapping[str, Any], name: str) -> Object:
    """A trial's spec with its own folder under the template's output.uri (``<uri>/<trial>``): trials never copy
    over each other, and the best trial's copy stays what its manifest says (``spec.register``)."""
    output = spec.get("output") or {}
    uri = output.get("uri")
    if not isinstance(uri, str) or not uri:
        return dict(spec)
    return {**spec, "output": {**output, "uri": f"{uri.rstrip('/')}/{name}"}}


def pruned_mark(*, position: int, value: float, message: str) -> dict[str, str]:
    """The annotation that records why a trial was stopped (it survives the operator, and says Pruned)."""
    mark = {"position": position, "value": value, "message": message}
    return {PRUNED_ANNOTATION: json.dumps(mark, sort_keys=True)}


def notes_annotation(notes: Mapping[str, Any]) -> dict[str, str]:
    """The annotation that keeps Optuna's notes on a trial (the pruner's, after it decided)."""
    return {SAMPLER_NOTES_ANNOTATION: json.dumps(notes, sort_keys=True)}


def owned_by(obj: Mapping[str, Any], uid: str | None) -> bool:
    """Whether the sweep with this uid owns the object (a trial of an older sweep of the same name does not count)."""
    owners = (obj.get("metadata") or {}).get("ownerReferences") or []
    return uid is None or any(owner.get("uid") == uid for owner in owners)


def projected(raw: Mapping[str, Any]) -> Object:
    """A trial as the sweep controller keeps it: the fields the plan reads (its marks, spec.cancel, and the
    phase, message, metrics, series and verified copy of its status), not the whole TrainingRun."""
    metadata = raw.get("metadata") or {}
    status = raw.get("status") or {}
    annotations = metadata.get("annotations") or {}
    return {
        "metadata": {
            **{key: metadata[key] for key in ("name", "namespace", "uid", "labels", "ownerReferences") if key in metadata},
            "annotations": {key: value for key, value in annotations.items() if key in SWEEP_ANNOTATIONS},
        },
        "spec": {"cancel": bool((raw.get("spec") or {}).get("cancel"))},
        "status": {key: status[key] for key in ("phase", "message", "metrics", "metricsFinal", "series", "artifacts") if key in status},
    }


def trial_view(obj: Mapping[str, Any], *, metric: str, by: str) -> TrialView | None:
    """What the study reads of a trial object (None: not a trial: no number).

    A run is Completed once its job succeeded, while the operator may still be reading the end of its logs (it
    may have been away when the job succeeded): a Completed trial without the objective is still running to the
    sweep until its status says its metrics are final (``status.metricsFinal``); then it completed without
    reporting it."""
    metadata = obj.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    try:
        number = int(annotations[TRIAL_NUMBER_ANNOTATION])
    except (KeyError, ValueError):
        return None
    parameters = _json_object(annotations.get(PARAMETERS_ANNOTATION))
    notes = _json_object(annotations.get(SAMPLER_NOTES_ANNOTATION))
    pruned = _json_object(annotations.get(PRUNED_ANNOTATION))
    status = obj.get("status") or {}
    intermediate = positions(status.get("series"), metric=metric, by=by)
    reported = (status.get("metrics") or {}).get(metric)
    value = float(reported) if isinstance(reported, (int, float)) and not isinstance(reported, bool) else None
    phase = status.get("phase")
    state, message = _state(phase, pruned=bool(pruned), cancel=bool((obj.get("spec") or {}).get("cancel")))
    if state is TrialState.PRUNED:
        message = str(pruned.get("message") or "pruned") if pruned else message
        last = intermediate[max(intermediate)] if intermediate else None
        value = last if last is not None else value
    if state is TrialState.COMPLETED and value is None and status.get("metricsFinal") is not True:
        state, message = TrialState.RUNNING, f"completed; its {metric} is not read from its log yet"
    elif state is TrialState.COMPLETED and value is None:
        state, message = TrialState.FAILED, f"completed without reporting {metric}"
    if state is TrialState.FAILED and message is None:
        message = str(status.get("message") or "failed")
    return TrialView(
        number=number,
        name=str(metadata.get("name")),
        parameters={key: item for key, item in parameters.items() if isinstance(item, (bool, int, float, str))},
        state=state,
        value=value,
        intermediate=intermediate,
        notes=notes,
        message=message,
    )


def reported_metrics(obj: Mapping[str, Any]) -> list[str]:
    """The metrics a trial reported (its status.metrics), by name."""
    return sorted(((obj.get("status") or {}).get("metrics") or {}).keys())


def positions(series: object, *, metric: str, by: str) -> dict[int, float]:
    """status.series as the objective's values by position (epoch or step); the latest value for each."""
    if not isinstance(series, Mapping) or series.get("metric") != metric:
        return {}
    found: dict[int, float] = {}
    for point in series.get("points") or []:
        position, value = point.get(by), point.get("value")
        if isinstance(position, int) and isinstance(value, (int, float)):
            found[position] = float(value)
    return found


def _state(phase: object, *, pruned: bool, cancel: bool) -> tuple[TrialState, str | None]:
    """A trial's state from its phase and the sweep's marks."""
    if pruned:
        return TrialState.PRUNED, None  # stopping or stopped: the sweep decided, whatever the run says next
    if phase == Phase.COMPLETED:
        return TrialState.COMPLETED, None
    if phase == Phase.FAILED:
        return TrialState.FAILED, None
    if phase == Phase.CANCELLED or cancel:
        return TrialState.CANCELLED, "cancelled"
    return TrialState.RUNNING, None


def _json_object(text: object) -> dict[str, Any]:
    if not isinstance(text, str):
        return {}
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def run_finished(obj: Mapping[str, Any]) -> bool:
    """Whether a trial's run has finished (its phase says so): until then it takes its place in parallelism."""
    return (obj.get("status") or {}).get("phase") in (Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED)


def stopping(obj: Mapping[str, Any]) -> bool:
    """A trial told to stop whose run has not finished yet."""
    return bool((obj.get("spec") or {}).get("cancel")) and not run_finished(obj)
