"""``trainrun validate`` refuses what the API server refuses, and no input escapes it as a crash.

Quantities are held to the API server's own parser (k8s.io/apimachinery, which CEL's ``isQuantity``
calls), asked through tests/kubecheck, on hand-picked strings, every short string of the quantity
alphabet and thousands of longer random ones. Image references to the pattern the CRD carries. Then
a few hundred specs mutated by hypothesis go through ``validate_training_run``: each is accepted (and
renders) or refused with problems that name a field that was changed, never an unhandled exception.
"""

from __future__ import annotations

import copy
import itertools
import random
import re
from typing import Any

import kubecheck
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from run_factory import BASE_DOCUMENT, pools
from trainrun.render import render_pytorchjob, render_uploader_job
from trainrun.spec import FieldProblem, InvalidTrainingRun, validate_training_run
from trainrun.spec.crd import training_run_crd
from trainrun.spec.model import IMAGE_PATTERN
from trainrun.spec.quantity import quantity_sign

QUANTITY_ALPHABET = "0123456789.+-eEinumkKMGTP "
HAND_PICKED_QUANTITIES = [
    "1.5.5Gi", "0", "-0", "1", "500m", "16Gi", "1.5Gi", "1.", ".5", ".", "+", "-", "1e3", "1E", "1e", "1e+", "1e3.5",
    "1Ki3", "1mi", "1KM", " 1", "1 ", "e-10", ".e-10", "+e-9", "Pi", "Ei", "0Ei", "Ti", "e-4294967296",
    "1e9223372036854775807", "1e9223372036854775808", "1e-9223372036854775808", "1e-9223372036854775809",
    "99999999999999999999999Ei", "0.0000000001", "-0.0000000001n", "12 GB", "\u00fc", "1\u0663", "",
]


def test_quantities_are_read_as_the_api_server_reads_them() -> None:
    short = ["".join(chars) for size in (1, 2, 3) for chars in itertools.product("019.+-eEinumkKMGTP ", repeat=size)]
    rng = random.Random(20261130)
    long = ["".join(rng.choice(QUANTITY_ALPHABET) for _ in range(rng.randint(4, 14))) for _ in range(5000)]
    texts = HAND_PICKED_QUANTITIES + short + long
    answers = kubecheck.ask("quantity", texts)
    theirs = {text: answer["sign"] if answer["valid"] else None for text, answer in zip(texts, answers, strict=True)}
    ours = {text: quantity_sign(text) for text in texts}
    assert ours == theirs
    assert theirs["1.5.5Gi"] is None and theirs["16Gi"] == 1 and theirs["0"] == 0  # the cases issue 15 names


def test_the_crd_checks_quantities_and_images_as_the_model_does() -> None:
    spec = training_run_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    memory = spec["properties"]["resources"]["properties"]["memory"]
    [rule] = memory["x-kubernetes-validations"]
    assert rule["rule"] == "type(self) == int ? self > 0 : isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))"
    assert spec["properties"]["image"]["pattern"] == IMAGE_PATTERN


IMAGES = [
    ("ghcr.io/trainrun/trainer:0.1.0", True),
    ("python:3.11", True),
    ("python", True),
    ("localhost:5000/team/trainer:latest", True),
    ("[::1]:5000/trainer", True),
    ("registry.example.com/a/b/c_d__e--f:V1.0-rc_1", True),
    ("trainer@sha256:" + "a" * 64, True),
    ("ghcr.io/acme/trainer:1.0@sha256:" + "0" * 64, True),
    ("ghcr.io/acme/tr\u00e4iner:1.0", False),
    ("ghcr.io/acme/trainer:v\u00e9", False),
    ("Trainer:1.0", False),
    ("ghcr.io/acme/trainer:", False),
    ("ghcr.io/acme/trainer:1.0\n", False),
    ("ghcr.io//trainer", False),
    ("-trainer", False),
    ("trainer@sha256:abc", False),
    ("trainer:" + "t" * 129, False),
]


def test_image_references() -> None:
    accepted = {}
    for image, _ in IMAGES:
        try:
            validate_training_run({**BASE_DOCUMENT, "spec": {"image": image}})
            accepted[image] = True
        except InvalidTrainingRun as refused:
            assert [problem.field for problem in refused.problems] == ["spec.image"]
            accepted[image] = False
    assert accepted == dict(IMAGES)
    # The CRD's pattern is the same regular expression, read by Go's RE2: no construct Python reads otherwise.
    assert not re.search(r"\\[wWdDsSbB]|\(\?[=!<]", IMAGE_PATTERN)


# -- Fuzz: mutated specs end accepted or refused with the field named ---------------------------------------
FULL_SPEC: dict[str, Any] = {
    "image": "ghcr.io/acme/trainer:1.0",
    "command": ["python", "train.py"],
    "args": ["--fast"],
    "launcher": "torchrun",
    "workingDir": "/workspace",
    "env": [{"name": "MODE", "value": "fast"}],
    "envFrom": [{"secretRef": {"name": "s3-credentials"}}],
    "hyperparameters": {"epochs": 3, "batchSize": 32, "learningRate": 0.01, "extra": {"depth": "4"}},
    "distribution": {"workers": 2, "nprocPerNode": 1},
    "resources": {"pool": "a100", "gpus": 1, "cpu": "8", "memory": "64Gi", "priorityClassName": "high"},
    "runPolicy": {"backoffLimit": 2, "restartPolicy": "OnFailure", "activeDeadlineSeconds": 3600},
    "inputs": [{"name": "data", "uri": "s3://datasets/mnist/"}],
    "output": {"uri": "s3://models/run/", "secretName": "s3-credentials", "volume": {"size": "20Gi"}},
    "metrics": [{"name": "loss", "regex": "loss=([0-9.]+)"}],
    "podMetadata": {"labels": {"team": "ml"}, "annotations": {"note": "x"}},
}
TRICKY_VALUES: list[Any] = [
    "1.5.5Gi", "0", "-1", "1e400", "ghcr.io/acme/tr\u00e4iner:1", "x{99999999999}(a)", "(?P<value>", "(", "a{2,1}",
    "(?<=a+)b", "\\", "\x00", "s3://", "s3://Bad Bucket/x", "file://host/x", "../..", "\u00e9", "", " ", "a" * 300,
    2**64, -(2**63), 1.5, float("nan"), float("inf"), True, None, [], {}, [None], {"": None}, {"bogus": 1},
]
VALUES = st.one_of(
    st.sampled_from(TRICKY_VALUES),
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=16),
    st.lists(st.one_of(st.integers(), st.text(max_size=4)), max_size=3),
    st.dictionaries(st.text(max_size=6), st.one_of(st.integers(), st.text(max_size=4)), max_size=2),
)


def _paths(node: Any, prefix: tuple[str | int, ...]) -> list[tuple[str | int, ...]]:
    """The path of every value under node (itself included)."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_paths(value, (*prefix, index)))
    return found


FULL_DOCUMENT = {**BASE_DOCUMENT, "spec": FULL_SPEC}
MUTABLE_PATHS = [path for path in _paths(FULL_DOCUMENT, ()) if path and path[0] in ("spec", "metadata") and len(path) > 1]


def _value_at(document: dict[str, Any], path: tuple[str | int, ...]) -> Any:
    node: Any = document
    for part in path:
        node = node[part]
    return node


def _dotted(path: tuple[str | int, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")


def _set(
    document: dict[str, Any], path: tuple[str | int, ...], value: Any, *, new_key: str | None
) -> tuple[str | int, ...]:
    """Set the value at path (or, given new_key and a mapping there, add that key to it); the path changed."""
    parent: Any = document
    value = copy.deepcopy(value)  # the same generated object set twice would make a cycle
    for part in path[:-1]:
        parent = parent[part]
    if new_key is not None and isinstance(parent[path[-1]], dict):
        parent[path[-1]][new_key] = value
        return (*path, new_key)
    parent[path[-1]] = value
    return path


def _names_a_field(document: dict[str, Any], problem: FieldProblem, changed: list[str]) -> bool:
    """The problem names a field of the document (a changed one, one inside it, or one across a rule, as
    gpus against the pool), one that holds a changed field, or a required one that a change removed."""
    fields = {_dotted(path) for path in _paths(document, ())}
    path = problem.field.removesuffix(" (the default pool)")
    if path in fields or any(field.startswith(path) for field in changed):
        return True
    return problem.message == "is required" and path.rsplit(".", 1)[0] in fields


def test_the_full_spec_is_valid_and_renders() -> None:
    run = validate_training_run(copy.deepcopy(FULL_DOCUMENT), pools())
    assert render_pytorchjob(run, pools())["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2


def _accepted_or_refused_with_the_field_named(document: dict[str, Any], changed: list[str]) -> None:
    config = pools()
    try:
        run = validate_training_run(document, config)
    except InvalidTrainingRun as refused:
        assert refused.problems
        for problem in refused.problems:
            assert problem.message, problem
            assert _names_a_field(document, problem, changed), (problem, changed)
        return
    # Accepted: the operator can build its children from it.
    assert render_pytorchjob(run, config)["kind"] == "PyTorchJob"
    if run.spec.output.uri is not None:
        assert render_uploader_job(run, config)["kind"] == "Job"


TEXT_PATHS = [path for path in MUTABLE_PATHS if isinstance(_value_at(FULL_DOCUMENT, path), str)]


def test_every_tricky_text_in_every_text_field() -> None:
    texts = [value for value in TRICKY_VALUES if isinstance(value, str)]
    for path, text in itertools.product(TEXT_PATHS, texts):
        document = copy.deepcopy(FULL_DOCUMENT)
        _set(document, path, text, new_key=None)
        _accepted_or_refused_with_the_field_named(document, [_dotted(path)])


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    mutations=st.lists(
        st.tuples(st.sampled_from(MUTABLE_PATHS), VALUES, st.one_of(st.none(), st.sampled_from(["bogus", "Image", "x"]))),
        min_size=1,
        max_size=3,
    )
)
def test_mutated_specs_are_accepted_or_refused_with_the_field_named(
    mutations: list[tuple[tuple[str | int, ...], Any, str | None]],
) -> None:
    document = copy.deepcopy(FULL_DOCUMENT)
    changed = []
    for path, value, new_key in mutations:
        try:
            changed.append(_dotted(_set(document, path, value, new_key=new_key)))
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation replaced a parent of this path
    _accepted_or_refused_with_the_field_named(document, changed)
