"""The TrainingRun model: defaults, every field's validation, and errors that name the field and the fix."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
from run_factory import POOLS, document, pools, training_run
from runnable_specs import ACCEPTED_NEIGHBOURS, UNRUNNABLE
from trainrun.spec import (
    LOCAL_IMAGE,
    InvalidTrainingRun,
    load_training_run,
    load_training_run_for_pass,
    parse_operator_config,
    problems_with_config,
    suspicious_values,
    validate_training_run,
)


def test_minimal_run_gets_the_documented_defaults() -> None:
    spec = training_run().spec
    assert spec.hyperparameters.epochs == 5
    assert spec.hyperparameters.batch_size == 16
    assert spec.hyperparameters.learning_rate == 0.001
    assert spec.hyperparameters.warmup_epochs == 0
    assert spec.hyperparameters.seed == 1
    assert spec.hyperparameters.patience == 3
    assert spec.hyperparameters.print_frequency == 10
    assert spec.hyperparameters.dataset == "synthetic"
    assert spec.distribution.workers == 1
    assert spec.launcher == "torchrun"
    assert spec.run_policy.backoff_limit == 3
    assert spec.run_policy.restart_policy == "OnFailure"
    assert spec.run_policy.clean_pod_policy == "None"
    assert spec.image_pull_policy == "IfNotPresent"
    assert spec.output.volume.size == "10Gi"


@pytest.mark.parametrize(
    ("gpus", "nproc", "expected"),
    [(0, None, 1), (8, None, 8), (8, 4, 4), (0, 3, 3)],
)
def test_processes_per_replica_default_to_the_gpus(gpus: int, nproc: int | None, expected: int) -> None:
    distribution: dict[str, Any] = {"workers": 2}
    if nproc is not None:
        distribution["nprocPerNode"] = nproc
    spec = training_run(resources={"gpus": gpus}, distribution=distribution).spec
    assert spec.processes_per_replica == expected
    assert spec.world_size == 3 * expected


@pytest.mark.parametrize("spec", [case[1] for case in ACCEPTED_NEIGHBOURS], ids=[case[0] for case in ACCEPTED_NEIGHBOURS])
def test_what_kubernetes_takes_and_can_run_is_accepted(spec: dict[str, Any]) -> None:
    load_training_run(document(**spec))


def test_a_legal_but_suspicious_memory_is_a_warning_naming_the_field_and_the_fix() -> None:
    run = load_training_run(document(resources={"memory": "1"}, output={"uri": "s3://models/x", "volume": {"size": "100Ki"}}))
    assert [str(problem) for problem in suspicious_values(run)] == [
        "spec.resources.memory: '1' is 1 byte, less than 32Mi per replica, too little to start a training process: "
        "a quantity without a suffix counts bytes; did you mean 1Gi or 1Mi?",
        "spec.output.volume.size: '100Ki' is less than 1Mi for the output volume, too little for a model",
    ]
    assert suspicious_values(load_training_run(document(resources={"memory": "32Mi"}))) == []
    assert suspicious_values(training_run()) == []


BAD_SPECS: list[tuple[dict[str, Any], str, str]] = [
    ({"distribution": {"workers": -1}}, "spec.distribution.workers", "greater than or equal to 0"),
    ({"distribution": {"nprocPerNode": 0}}, "spec.distribution.nprocPerNode", "greater than or equal to 1"),
    ({"resources": {"gpus": 1.5}}, "spec.resources.gpus", "whole number"),
    ({"resources": {"gpus": "two"}}, "spec.resources.gpus", "valid integer"),
    ({"resources": {"cpu": "lots"}}, "spec.resources.cpu", "16Gi"),
    ({"resources": {"memory": "12 GB"}}, "spec.resources.memory", "quantity"),
    ({"image": ""}, "spec.image", "at least 1 character"),
    ({"output": {"uri": "ftp://host/x"}}, "spec.output.uri", "unknown scheme 'ftp'"),
    ({"output": {"uri": "s3://"}}, "spec.output.uri", "bucket (container) name is missing"),
    ({"output": {"uri": "s3://Bad Bucket/x"}}, "spec.output.uri", "is not valid"),
    ({"output": {"uri": "file://host/path"}}, "spec.output.uri", "file:///absolute/path"),
    ({"inputs": [{"name": "data", "uri": "http://x"}]}, "spec.inputs[0].uri", "unknown scheme"),
    ({"inputs": [{"name": "Data_Set", "uri": "s3://data/d"}]}, "spec.inputs[0].name", "lower-case letters, digits and '-'"),
    # Names the operator puts in a URL path: a '/' would address another object.
    ({"output": {"uri": "s3://models/x", "secretName": "creds/x"}}, "spec.output.secretName", "Kubernetes object name"),
    ({"imagePullSecrets": ["registry", "Registry"]}, "spec.imagePullSecrets[1]", "Kubernetes object name"),
    ({"output": {"volume": {"claimName": "a" * 254}}}, "spec.output.volume.claimName", "at most 253"),
    ({"inputs": [{"name": "d", "uri": "s3://data/1"}, {"name": "d", "uri": "s3://data/2"}]}, "spec.inputs", "more than once"),
    ({"code": {"uri": "gopher://host/code"}}, "spec.code.uri", "Accepted forms"),
    ({"hyperparameters": {"epochs": 0}}, "spec.hyperparameters.epochs", "greater than or equal to 1"),
    ({"hyperparameters": {"learningRate": 0}}, "spec.hyperparameters.learningRate", "greater than 0"),
    ({"hyperparameters": {"model": "vgg16"}}, "spec.hyperparameters.model", "resnet50"),
    ({"hyperparameters": {"dataset": "imagenet"}}, "spec.hyperparameters.dataset", "imagefolder"),
    ({"hyperparameters": {"extra": {"bad flag": "1"}}}, "spec.hyperparameters.extra", "not a flag name"),
    ({"hyperparameters": {"epochz": 3}}, "spec.hyperparameters.epochz", "unknown field"),
    ({"runPolicy": {"restartPolicy": "Sometimes"}}, "spec.runPolicy.restartPolicy", "OnFailure"),
    ({"runPolicy": {"cleanPodPolicy": "Some"}}, "spec.runPolicy.cleanPodPolicy", "Running"),
    ({"runPolicy": {"backoffLimit": -2}}, "spec.runPolicy.backoffLimit", "greater than or equal to 0"),
    ({"runPolicy": {"activeDeadlineSeconds": 0}}, "spec.runPolicy.activeDeadlineSeconds", "greater than or equal to 1"),
    ({"metrics": [{"name": "loss", "regex": "loss=("}]}, "spec.metrics[0].regex", "not a valid regular expression"),
    ({"metrics": [{"name": "loss", "regex": "loss=[0-9.]+"}]}, "spec.metrics[0].regex", "capture group"),
    ({"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "spec.env", "more than once"),
    ({"env": [{"name": "1BAD"}]}, "spec.env[0].name", "pattern"),
    ({"imagePullPolicy": "Sometimes"}, "spec.imagePullPolicy", "IfNotPresent"),
    ({"launcher": "mpirun"}, "spec.launcher", "torchrun"),
    ({"command": ["python", "a.py"], "script": "b.py"}, "spec", "not both"),
    ({"resources": {"gpus": 2}, "distribution": {"nprocPerNode": 4}}, "spec.distribution.nprocPerNode", "one process per GPU"),
    ({"launcher": "none", "distribution": {"nprocPerNode": 2}}, "spec.distribution.nprocPerNode", "needs spec.launcher: torchrun"),
    ({"command": []}, "spec.command", "at least 1 item"),
    # What the API server refuses too (the CRD's CEL rules and pattern, generated from the same model).
    ({"resources": {"memory": "1.5.5Gi"}}, "spec.resources.memory", "'1.5.5Gi' is not a Kubernetes quantity"),
    ({"resources": {"memory": "0"}}, "spec.resources.memory", "must be more than 0; got '0'"),
    ({"resources": {"memory": 0}}, "spec.resources.memory", "must be more than 0; got 0"),
    ({"resources": {"cpu": "-500m"}}, "spec.resources.cpu", "must be more than 0"),
    ({"output": {"volume": {"size": "0Gi"}}}, "spec.output.volume.size", "must be more than 0"),
    ({"image": "ghcr.io/acme/tr\u00e4iner:1.0"}, "spec.image", "is not an image reference"),
    ({"image": "ghcr.io/Acme/Trainer:1.0"}, "spec.image", "the name in lowercase"),
    ({"image": "trainer:1.0 "}, "spec.image", "is not an image reference"),
    # JSON types as the API server checks them: no true for 1, no "3" for 3.
    ({"resources": {"gpus": True}}, "spec.resources.gpus", "whole number"),
    ({"hyperparameters": {"epochs": "3"}}, "spec.hyperparameters.epochs", "whole number"),
    # Any exception a pattern raises is the field's problem, not a crash: OverflowError here.
    ({"metrics": [{"name": "x", "regex": "x{99999999999}(a)"}]}, "spec.metrics[0].regex", "repetition number is too large"),
    # What the API server refuses only in a pod, which then never exists, and what cannot work (issue 24).
    *[(case.spec, case.field, case.words) for case in UNRUNNABLE],
]


@pytest.mark.parametrize(("spec", "field", "words"), BAD_SPECS, ids=[case[1] + ":" + case[2] for case in BAD_SPECS])
def test_bad_input_names_the_field_and_the_fix(spec: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(InvalidTrainingRun) as raised:
        load_training_run(document(**spec))
    fields = [problem.field for problem in raised.value.problems]
    assert field in fields, fields
    assert words in str(raised.value), str(raised.value)


def test_missing_image_is_required_on_a_cluster_only() -> None:
    body = document()
    del body["spec"]["image"]
    with pytest.raises(InvalidTrainingRun, match=r"spec\.image: is required on a cluster \(trainrun run --local needs none\)"):
        load_training_run(body)
    assert load_training_run(body, local=True).spec.image == LOCAL_IMAGE  # replicas run with this machine's Python
    assert load_training_run(document(), local=True).spec.image == "ghcr.io/trainrun/trainer:0.1.0"  # a named one stays
    with pytest.raises(InvalidTrainingRun, match=r"spec\.image"):  # a bad one is still bad
        load_training_run(document(image="Not An Image"), local=True)


@pytest.mark.parametrize(
    ("change", "field"),
    [({"apiVersion": "v1"}, "apiVersion"), ({"kind": "PyTorchJob"}, "kind"), ({"metadata": {"name": "Bad_Name"}}, "metadata.name")],
)
def test_wrong_object_header_is_refused(change: dict[str, Any], field: str) -> None:
    body = {**document(), **change}
    with pytest.raises(InvalidTrainingRun) as raised:
        load_training_run(body)
    assert field in [problem.field for problem in raised.value.problems]


def test_several_problems_are_reported_together() -> None:
    with pytest.raises(InvalidTrainingRun) as raised:
        load_training_run(document(distribution={"workers": -1}, resources={"gpus": 1.5}))
    assert {"spec.distribution.workers", "spec.resources.gpus"} <= {p.field for p in raised.value.problems}


def test_unknown_pool_names_the_known_ones() -> None:
    with pytest.raises(InvalidTrainingRun, match=r"spec\.resources\.pool: unknown pool 'h100'.*a100, cpu, mi300"):
        validate_training_run(document(resources={"pool": "h100"}), pools())


def test_more_gpus_than_a_node_of_the_pool_has_is_refused() -> None:
    with pytest.raises(InvalidTrainingRun, match=r"spec\.resources\.gpus: 16 GPUs per replica.*'a100' have 8"):
        validate_training_run(document(resources={"pool": "a100", "gpus": 16}), pools())


def test_gpus_on_the_default_cpu_pool_are_refused() -> None:
    with pytest.raises(InvalidTrainingRun, match=r"'cpu' have 0"):
        validate_training_run(document(resources={"gpus": 1}), pools())


def test_a_valid_run_passes_the_pool_checks() -> None:
    run = validate_training_run(document(resources={"pool": "a100", "gpus": 8}), pools())
    assert run.spec.resources.gpus == 8


# The platform team limits each namespace's pools and output locations (``namespaces`` in the config).
NAMESPACE_POLICY = {
    "ml": {"pools": ["a100"], "outputUriPrefixes": ["s3://models/ml", "gs://team-ml/out/"]},
    "sandbox": {"pools": [], "outputUriPrefixes": []},
    "open": {},
}


def policy_problems(namespace: str, **spec: Any) -> list[tuple[str, str]]:
    body = document(**spec)
    body["metadata"]["namespace"] = namespace
    config = parse_operator_config({**POOLS, "namespaces": NAMESPACE_POLICY})
    return [(problem.field, problem.message) for problem in problems_with_config(load_training_run(body), config)]


@pytest.mark.parametrize(
    ("namespace", "spec", "expected"),
    [
        ("ml", {"resources": {"pool": "a100"}, "output": {"uri": "s3://models/ml/run-1/"}}, []),
        ("ml", {"resources": {"pool": "a100"}, "output": {"uri": "s3://models/ml"}}, []),
        ("ml", {"resources": {"pool": "a100"}, "output": {"uri": "gs://team-ml/out/x"}}, []),
        ("ml", {"resources": {"pool": "a100"}}, []),  # no output: nothing to check
        ("ml", {"resources": {"pool": "a100"}, "output": {"uri": "s3://models/mlx/run-1/"}}, ["spec.output.uri"]),
        ("ml", {"resources": {"pool": "a100"}, "output": {"uri": "s3://models/"}}, ["spec.output.uri"]),
        ("ml", {"resources": {"pool": "mi300"}}, ["spec.resources.pool"]),
        ("ml", {}, ["spec.resources.pool (the default pool)"]),  # the default pool, cpu, is not open to ml
        ("ml", {"resources": {"pool": "cpu"}, "output": {"uri": "s3://other/"}}, ["spec.resources.pool", "spec.output.uri"]),
        ("sandbox", {"output": {"uri": "s3://models/ml/"}}, ["spec.resources.pool (the default pool)", "spec.output.uri"]),
        ("open", {"resources": {"pool": "mi300"}, "output": {"uri": "s3://anywhere/"}}, []),
        ("unlisted", {"resources": {"pool": "mi300"}, "output": {"uri": "s3://anywhere/"}}, []),
        # The pool checks still run after the namespace's.
        ("ml", {"resources": {"pool": "a100", "gpus": 16}}, ["spec.resources.gpus"]),
        ("ml", {"resources": {"pool": "h100"}}, ["spec.resources.pool"]),
    ],
)
def test_namespace_policy(namespace: str, spec: dict[str, Any], expected: list[str]) -> None:
    assert [field for field, _ in policy_problems(namespace, **spec)] == expected


def test_namespace_policy_messages_name_what_is_allowed_and_hide_credentials() -> None:
    problems = dict(policy_problems("ml", resources={"pool": "mi300"}, output={"uri": "s3://other/x"}))
    assert problems["spec.resources.pool"] == "pool 'mi300' is not open to namespace 'ml'; it may use: a100"
    assert problems["spec.output.uri"] == (
        "s3://other/x is outside the output locations of namespace 'ml': s3://models/ml, gs://team-ml/out/"
    )
    assert dict(policy_problems("sandbox", resources={"pool": "cpu"}))["spec.resources.pool"].endswith("may use: none")


def test_the_log_archive_location_of_the_configuration_is_a_storage_uri() -> None:
    assert parse_operator_config({"logs": {"defaultUri": "s3://training-logs/all"}}).logs.default_uri == "s3://training-logs/all"
    with pytest.raises(ValueError, match=r"logs\.defaultUri[\s\S]*unknown scheme 'ftp'"):
        parse_operator_config({"logs": {"defaultUri": "ftp://logs/all"}})
    with pytest.raises(ValueError, match=r"logs\.flushSeconds"):
        parse_operator_config({"logs": {"flushSeconds": 0}})


def test_a_pass_parses_a_run_again_only_when_its_spec_or_read_metadata_changed() -> None:
    """The operator's passes parse their run's document at every pass; while the run parsed before is held (by
    its log follower), one that differs only in what is not read (its resourceVersion, its status: every status
    write changes both) gives that run. A changed spec, generation, label or annotation is parsed anew; a run no
    longer held is not kept for this; a document that does not parse raises every time; the run's metadata holds
    the fields it reads only."""
    body = document(image="ghcr.io/acme/trainer:1.0")
    body["metadata"] = {"name": "cached", "namespace": "default", "uid": "u-1", "generation": 1, "resourceVersion": "10"}
    first = load_training_run_for_pass(body)
    echoed = {**body, "metadata": {**body["metadata"], "resourceVersion": "11", "managedFields": [{}]}, "status": {"phase": "Running"}}
    assert load_training_run_for_pass(echoed) is first
    assert first.metadata.model_extra == {}
    changed = [
        {**body, "spec": {**body["spec"], "image": "ghcr.io/acme/trainer:2.0"}, "metadata": {**body["metadata"], "generation": 2}},
        {**body, "metadata": {**body["metadata"], "labels": {"team": "vision"}}},
        {**body, "metadata": {**body["metadata"], "annotations": {"trainrun.dev/note": "x"}}},
    ]
    parsed = [load_training_run_for_pass(each) for each in changed]
    assert parsed[0].spec.image == "ghcr.io/acme/trainer:2.0" and parsed[0].metadata.generation == 2
    assert parsed[1].metadata.labels == {"team": "vision"} and parsed[2].metadata.annotations == {"trainrun.dev/note": "x"}
    assert all(run is not first for run in parsed)
    held = weakref.ref(first)
    del first, parsed
    gc.collect()
    assert held() is None  # not kept for this alone
    broken = {**body, "spec": {**body["spec"], "image": ""}}
    for _ in range(2):
        with pytest.raises(InvalidTrainingRun):
            load_training_run_for_pass(broken)
