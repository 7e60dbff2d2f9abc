"""The TrainingSweep API (``trainrun.dev/v1alpha1``, short name ``trs``) as pydantic models.

A sweep tunes the hyperparameters of a TrainingRun template: trials are TrainingRuns made from the
template with the parameters a sampler suggests (``trainrun.sweep``). The rules that need more than one
field (a parameter that names nothing in the template, a value the template refuses, a grid larger than
``maxTrials``, ``register`` without a copy to register) are checked by :func:`sweep_problems`, called by ``trainrun.spec.load_training_sweep``.
The CRD's schema is generated from these models (``trainrun.spec.crd``). Pure.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from copy import deepcopy
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from trainrun.spec.model import (
    DNS_LABEL_PATTERN,
    ApiModel,
    Hyperparameters,
    Registration,
    TrainingRunSpec,
)

SWEEP_KIND = "TrainingSweep"
SWEEP_PLURAL = "trainingsweeps"
SWEEP_SHORT_NAMES = ["trs"]
MAX_TRIALS = 1000
# Trials are named <sweep>-<n> with n below MAX_TRIALS, and a TrainingRun's name is at most 52 characters.
MAX_SWEEP_NAME = 52 - len(f"-{MAX_TRIALS - 1}")
MAX_PARAMETERS = 32
MAX_VALUES = 256
EXTRA_PREFIX, ENV_PREFIX = "extra.", "env."
METRIC_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_./-]*$"

ParameterType = Literal["uniform", "logUniform", "int", "categorical", "grid"]
Scalar = float | int | str | bool
# A listed value: a number, a string or a boolean (the schema cannot say "any scalar" any other way).
ParameterValue = Annotated[Any, Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})]


def hyperparameter_names() -> list[str]:
    """The template's hyperparameters a parameter may name as they are (camelCase, as written in YAML)."""
    return [info.alias or name for name, info in Hyperparameters.model_fields.items() if name != "extra"]


class Parameter(ApiModel):
    """One dimension of the search space: a range to sample, or values to choose from."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.low) || !has(self.high) || self.low < self.high",
                    "message": "low must be below high",
                }
            ]
        }
    )

    type: ParameterType = Field(
        description="uniform or logUniform (a float between low and high; logUniform samples its logarithm), int "
        "(a whole number between low and high), categorical (one of values) or grid (every one of values, with "
        "algorithm: grid)."
    )
    low: float | None = Field(default=None, description="The smallest value (uniform, logUniform, int).")
    high: float | None = Field(default=None, description="The largest value (uniform, logUniform, int).")
    step: float | None = Field(default=None, gt=0, description="Only multiples of step above low (uniform, int).")
    values: list[ParameterValue] | None = Field(
        default=None, min_length=1, max_length=MAX_VALUES, description="The values to choose from (categorical, grid)."
    )

    @field_validator("values")
    @classmethod
    def _scalars(cls, values: list[Any] | None) -> list[Any] | None:
        if values is None:
            return None
        for value in values:
            if not isinstance(value, (int, float, str, bool)):
                raise ValueError(f"every value must be a number, a string or true/false; got {value!r}")
        if len({repr(value) for value in values}) != len(values):
            raise ValueError("lists a value more than once; list each value once")
        return values

    @model_validator(mode="after")
    def _fields_of_its_type(self) -> Parameter:
        ranged = self.type in ("uniform", "logUniform", "int")
        if ranged:
            if self.low is None or self.high is None:
                raise ValueError(f"type {self.type} needs low and high, e.g. low: 0.0001, high: 0.1")
            if self.values is not None:
                raise ValueError(f"type {self.type} samples between low and high; leave values out (or use type categorical)")
            if self.low >= self.high:
                raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g}); swap them")
            if self.type == "logUniform" and self.low <= 0:
                raise ValueError(f"type logUniform needs low above 0 (its logarithm is sampled); got {self.low:g}")
            if self.type == "int" and not (self.low.is_integer() and self.high.is_integer()):
                raise ValueError(f"type int needs whole numbers for low and high; got {self.low:g} and {self.high:g}")
            if self.type == "int" and self.step is not None and not self.step.is_integer():
                raise ValueError(f"type int needs a whole step; got {self.step:g}")
            if self.type == "logUniform" and self.step is not None:
                raise ValueError("type logUniform takes no step; use uniform with a step")
        else:
            if self.values is None:
                raise ValueError(f"type {self.type} needs values, e.g. values: [32, 64, 128]")
            if self.low is not None or self.high is not None or self.step is not None:
                raise ValueError(f"type {self.type} chooses from values; leave low, high and step out")
        return self

    def choices(self) -> list[Scalar]:
        """Every value of a listed parameter (categorical, grid); an int range with its step; else []."""
        if self.values is not None:
            return list(self.values)
        if self.type == "int" and self.low is not None and self.high is not None:
            step = int(self.step or 1)
            return list(range(int(self.low), int(self.high) + 1, step))
        return []

    def extremes(self) -> list[Scalar]:
        """The values that, if the template takes them, every sampled value is taken too: the bounds or the list."""
        if self.values is not None:
            return list(self.values)
        assert self.low is not None and self.high is not None
        if self.type == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]


class Objective(ApiModel):
    """What the sweep optimizes: one metric the trials report, and which way."""

    metric: str = Field(
        pattern=METRIC_NAME_PATTERN,
        description="A metric every trial reports in its status.metrics (a trainrun:metric key or a "
        "spec.metrics name), e.g. val_loss.",
    )
    goal: Literal["minimize", "maximize"] = Field(default="minimize", description="minimize or maximize the metric.")
    target: float | None = Field(
        default=None, description="Stop the sweep once a trial reaches this value (no new trials; running ones finish)."
    )


class EarlyStopping(ApiModel):
    """Stop losing trials while they train, from the objective's values as they report it (Optuna's pruners)."""

    type: Literal["median", "hyperband"] = Field(
        description="median: stop a trial whose best value so far is worse than the median of the finished trials "
        "at the same position; hyperband: successive halving over brackets of trials."
    )
    min_steps: int = Field(
        default=0,
        ge=0,
        description="Never stop a trial before this position (epoch or step, see by): its first values are noisy.",
    )
    startup_trials: int = Field(
        default=5, ge=0, le=MAX_TRIALS, description="Stop no trial before this many trials finished (median)."
    )
    by: Literal["epoch", "step"] = Field(
        default="epoch",
        description="The position values are compared at: epoch (comparable across batch sizes) or step, as "
        "the trials report them.",
    )


class TrainingSweepSpec(ApiModel):
    """A search space over a TrainingRun template, an objective, a sampler, early stopping and limits."""

    template: TrainingRunSpec = Field(description="The TrainingRun spec every trial starts from.")
    parameters: dict[str, Parameter] = Field(
        min_length=1,
        max_length=MAX_PARAMETERS,
        description="The search space by name: a hyperparameter of the template (learningRate, batchSize, ...), "
        "extra.<key> (a flag of spec.hyperparameters.extra) or env.<NAME> (an environment variable).",
    )
    objective: Objective = Field(description="The metric to optimize and its goal.")
    algorithm: Literal["random", "grid", "tpe", "cmaes"] = Field(
        default="tpe",
        description="Optuna's sampler: random, grid (every combination of the listed values), tpe (Tree-structured "
        "Parzen Estimator) or cmaes (CMA-ES). Seeded from the sweep's uid: a restarted operator suggests the same.",
    )
    early_stopping: EarlyStopping | None = Field(default=None, description="Stop losing trials early (none: never).")
    parallelism: int = Field(default=1, ge=1, le=MAX_TRIALS, description="Trials that run at the same time, at most.")
    max_trials: int = Field(default=10, ge=1, le=MAX_TRIALS, description="Trials in the whole sweep, at most.")
    max_failed_trials: int = Field(
        default=3, ge=1, le=MAX_TRIALS, description="The sweep fails once this many trials failed."
    )
    active_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        description="The sweep stops after this long: running trials are cancelled and the best so far stands.",
    )
    cancel: bool = Field(default=False, description="Stop the sweep: running trials are cancelled, no new ones start.")
    registration: Registration | None = Field(
        default=None,
        alias="register",
        description="Register the best trial's model (one version for the whole sweep) once the sweep is Completed, "
        "from the best trial's verified copy (the template needs output.uri). status.model says which version.",
    )


def parameter_name_problem(name: str) -> str | None:
    """Why a parameter name addresses nothing in the template (None: it does; whether the key after extra. or
    env. is a flag or a variable name, the template's own rules say)."""
    if name.startswith((EXTRA_PREFIX, ENV_PREFIX)) or name in hyperparameter_names():
        return None
    close = difflib.get_close_matches(name, [*hyperparameter_names(), "extra.<key>", "env.<NAME>"], n=1)
    guess = f"did you mean {close[0]}? " if close else ""
    return (
        f"unknown parameter: {guess}name a hyperparameter ({', '.join(hyperparameter_names())}), "
        "extra.<key> or env.<NAME>"
    )


class SweepMeta(BaseModel):
    """The parts of a sweep's metadata the operator reads."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)

    name: str = Field(
        min_length=1,
        max_length=MAX_SWEEP_NAME,
        pattern=DNS_LABEL_PATTERN,
        description="Sweep name; trials are named <sweep>-<n>.",
    )
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class TrainingSweep(BaseModel):
    """A whole TrainingSweep object: apiVersion, kind, metadata and spec."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, alias_generator=to_camel)

    api_version: Literal["trainrun.dev/v1alpha1"] = Field(default="trainrun.dev/v1alpha1")
    kind: Literal["TrainingSweep"] = Field(default="TrainingSweep")
    metadata: SweepMeta
    spec: TrainingSweepSpec


def with_parameters(template: Mapping[str, Any], parameters: Mapping[str, Scalar]) -> dict[str, Any]:
    """The template (a TrainingRun spec as written, camelCase) with the parameters set: hyperparameters by
    name, ``extra.<key>`` and ``env.<NAME>`` as strings."""
    spec = deepcopy(dict(template))
    hyperparameters = spec.setdefault("hyperparameters", {})
    for name, value in parameters.items():
        if name.startswith(EXTRA_PREFIX):
            hyperparameters.setdefault("extra", {})[name.removeprefix(EXTRA_PREFIX)] = as_text(value)
        elif name.startswith(ENV_PREFIX):
            variable = name.removeprefix(ENV_PREFIX)
            kept = [item for item in spec.get("env", []) if item.get("name") != variable]
            spec["env"] = [*kept, {"name": variable, "value": as_text(value)}]
        else:
            hyperparameters[name] = value
    return spec


def as_text(value: Scalar) -> str:
    """A value as a flag or a variable reads it: true/false for booleans, 0.001 not 1e-03 where exact."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def grid_size(parameters: Mapping[str, Parameter]) -> int:
    """Combinations of the listed values (every parameter of a grid lists its values)."""
    return math.prod(len(parameter.choices()) for parameter in parameters.values())


def _template_problem(template: Mapping[str, Any], name: str, parameter: Parameter) -> str | None:
    """What the template says of the first extreme value of one parameter that it refuses (None: it takes them)."""
    for value in parameter.extremes():
        try:
            TrainingRunSpec.model_validate(with_parameters(template, {name: value}))
        except ValidationError as error:
            detail = error.errors()[0]
            where = ".".join(str(part) for part in detail["loc"])
            message = detail["msg"].removeprefix("Value error, ")
            if detail["type"] in ("int_type", "int_from_float"):
                message += "; make the parameter type int (or list whole numbers)"
            shown = f"{value:g}" if isinstance(value, float) else repr(value)
            return f"{shown} is not a valid spec.template.{where}: {message}"
    return None


def registration_problems(sweep: TrainingSweep) -> list[tuple[str, str]]:
    """spec.register needs a verified copy of every trial (the template's output.uri), and the trials must not
    register a model each (the template's output.register) beside the sweep's one."""
    spec = sweep.spec
    if spec.registration is None:
        return []
    problems: list[tuple[str, str]] = []
    if spec.template.output.uri is None:
        problems.append(
            (
                "spec.register",
                "needs spec.template.output.uri: a model is registered from a verified copy of the best trial's "
                "outputs, e.g. output: {uri: s3://bucket/sweeps}",
            )
        )
    if spec.template.output.registration is not None:
        problems.append(
            (
                "spec.template.output.register",
                "would register every trial's model; remove it: spec.register registers the best trial's only",
            )
        )
    return problems


def sweep_problems(sweep: TrainingSweep, template: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, message) for every rule across fields: each parameter's name and extremes as the template takes
    them, a grid that needs every parameter to list values and that fits in maxTrials, parallelism within
    maxTrials. ``template`` is spec.template as written (its defaults unapplied)."""
    spec = sweep.spec
    problems: list[tuple[str, str]] = []
    for name, parameter in spec.parameters.items():
        field = f"spec.parameters[{json.dumps(name)}]"
        problem = parameter_name_problem(name)
        if problem is None:
            problem = _template_problem(template, name, parameter)
        if problem is not None:
            problems.append((field, problem))
        if spec.algorithm == "grid" and parameter.type not in ("grid", "categorical", "int"):
            problems.append((field, f"algorithm grid tries listed values only; make it type grid with values (it is {parameter.type})"))
        if spec.algorithm != "grid" and parameter.type == "grid":
            problems.append((field, f"type grid needs spec.algorithm: grid; use type categorical with algorithm {spec.algorithm}"))
    if spec.algorithm == "grid" and not problems:
        size = grid_size(spec.parameters)
        if size > spec.max_trials:
            problems.append(
                (
                    "spec.maxTrials",
                    f"the grid has {size} combinations but spec.maxTrials is {spec.max_trials}: raise maxTrials to "
                    f"{size} (at most {MAX_TRIALS}) or list fewer values",
                )
            )
    problems += registration_problems(sweep)
    if spec.parallelism > spec.max_trials:
        problems.append(
            ("spec.parallelism", f"{spec.parallelism} is more than spec.maxTrials ({spec.max_trials}); lower it to at most {spec.max_trials}")
        )
    return problems
