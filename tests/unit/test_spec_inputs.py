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
import json
import random
import re
from typing import Any

import kubecheck
from hypothesis import HealthCheck, given, settings
from run_factory import BASE_DOCUMENT, pools
from spec_mutations import FULL_DOCUMENT, TRICKY_VALUES, Path, dotted, mutated, mutations, paths, value_at
from trainrun.render import render_pytorchjob, render_uploader_job
from trainrun.spec import FieldProblem, InvalidTrainingRun, validate_training_run
from trainrun.spec.crd import training_run_crd
from trainrun.spec.model import IMAGE_PATTERN
from trainrun.spec.quantity import QUANTITY_MAX, parse_quantity

QUANTITY_ALPHABET = "0123456789.+-eEinumkKMGTP "
HAND_PICKED_QUANTITIES = [
    "1.5.5Gi", "0", "-0", "1", "500m", "16Gi", "1.5Gi", "1.", ".5", ".", "+", "-", "1e3", "1E", "1e", "1e+", "1e3.5",
    "1Ki3", "1mi", "1KM", " 1", "1 ", "e-10", ".e-10", "+e-9", "Pi", "Ei", "0Ei", "Ti", "e-4294967296",
    "1e9223372036854775807", "1e9223372036854775808", "1e-9223372036854775808", "1e-9223372036854775809",
    "99999999999999999999999Ei", "0.0000000001", "-0.0000000001n", "12 GB", "\u00fc", "1\u0663", "",
    # Around the largest amount Kubernetes counts (issue 24: 1e400 overflowed), and exponents it keeps in 32 bits.
    "1e400", "9223372036854775807m", "9223372036854775808m", "9223372036854775.807", "9223372036854775.8077",
    "9223372036854775807", "8Pi", "9Pi", "8191Ti", "8192Ti", "9.223372036854775807P", "9.2233720368547758071P",
    "1e4294967296", "1e15", "1e16", "0.00000000000000000000000001e42",
    "1" + "0" * 5000, "0" * 5000 + "1", "0." + "0" * 5000 + "1Ei",
    "9223372036854775807" + "0" * 4990 + "1e-4994", "9223372036854775807" + "0" * 4990 + "e-4994",
]


def test_quantities_are_read_as_the_api_server_reads_them() -> None:
    short = ["".join(chars) for size in (1, 2, 3) for chars in itertools.product("019.+-eEinumkKMGTP ", repeat=size)]
    rng = random.Random(20261130)
    long = ["".join(rng.choice(QUANTITY_ALPHABET) for _ in range(rng.randint(4, 14))) for _ in range(5000)]
    texts = HAND_PICKED_QUANTITIES + short + long
    answers = kubecheck.ask("quantity", texts)
    theirs = {
        text: (answer["sign"], answer["aboveMax"]) if answer["valid"] else None
        for text, answer in zip(texts, answers, strict=True)
    }
    ours = {
        text: None if (amount := parse_quantity(text)) is None else (amount.sign, amount.exceeds(QUANTITY_MAX))
        for text in texts
    }
    assert ours == theirs
    assert theirs["1.5.5Gi"] is None and theirs["16Gi"] == (1, False) and theirs["0"] == (0, False)  # issue 15's cases
    assert theirs["1e400"] == (1, True) and theirs["9223372036854775807m"] == (1, False)  # issue 24's


def test_quantities_whose_32_bit_scale_wraps_to_a_huge_one_are_too_large() -> None:
    """ParseQuantity reads 1e2147483648 as 10^2147483648 (its scale wraps in 32 bits) and, as 1e2147483647,
    rounds it to nano units, a number of two billion digits: the API server times out on such a run and
    kubecheck would too. The model refuses them from their order of magnitude, at once."""
    for text in ("1e2147483648", "1.5e-2147483647", "1e2147483647"):
        amount = parse_quantity(text)
        assert amount is not None and amount.exceeds(QUANTITY_MAX), text


def test_the_crd_checks_quantities_and_images_as_the_model_does() -> None:
    spec = training_run_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    memory = spec["properties"]["resources"]["properties"]["memory"]
    [rule] = memory["x-kubernetes-validations"]
    assert rule["rule"] == (
        "type(self) == int ? self > 0 && self <= 9223372036854775 : isQuantity(self) && "
        "quantity(self).isGreaterThan(quantity('0')) && quantity(self).compareTo(quantity('9223372036854775807m')) <= 0"
    )
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
MUTABLE_PATHS = [path for path in paths(FULL_DOCUMENT) if path[:1] in (("spec",), ("metadata",)) and len(path) > 1]
TEXT_PATHS = [path for path in MUTABLE_PATHS if isinstance(value_at(FULL_DOCUMENT, path), str)]


def _names_a_field(document: dict[str, Any], problem: FieldProblem, changed: list[str]) -> bool:
    """The problem names a field of the document (a changed one, one inside it, or one across a rule, as
    gpus against the pool), one that holds a changed field, or a required one that a change removed."""
    fields = {dotted(path) for path in paths(document)}
    # A map's key is named in brackets (spec.podMetadata.labels["team"]); dotted() writes it .team.
    path = re.sub(r'\["((?:[^"\\]|\\.)*)"\]', lambda key: "." + json.loads(f'"{key.group(1)}"'), problem.field)
    path = path.removesuffix(" (the default pool)")
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


def test_every_tricky_text_in_every_text_field() -> None:
    texts = [value for value in TRICKY_VALUES if isinstance(value, str)]
    for path, text in itertools.product(TEXT_PATHS, texts):
        _accepted_or_refused_with_the_field_named(*mutated([(path, text, None)]))


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(changes=mutations(MUTABLE_PATHS))
def test_mutated_specs_are_accepted_or_refused_with_the_field_named(changes: list[tuple[Path, Any, str | None]]) -> None:
    _accepted_or_refused_with_the_field_named(*mutated(changes))
