"""``trainrun validate``, ``render`` and ``crd`` through typer's CliRunner: good files pass, bad ones name the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from runnable_specs import UNRUNNABLE
from trainrun.cli.main import app
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted(path for path in (REPO / "manifests" / "samples").glob("*.yaml") if "\nkind: TrainingRun\n" in path.read_text())
POOLS = REPO / "manifests" / "base" / "config.yaml"
runner = CliRunner()

GOOD: dict[str, Any] = {
    "apiVersion": "trainrun.dev/v1alpha1",
    "kind": "TrainingRun",
    "metadata": {"name": "good"},
    "spec": {"image": "ghcr.io/trainrun/trainer:0.1.0", "distribution": {"workers": 2}},
}


def write(tmp_path: Path, *documents: Any) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path


def changed(path: str, value: Any) -> dict[str, Any]:
    """GOOD with the field at the dotted path set (None deletes it)."""
    document = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    target = document
    for key in parents:
        target = target.setdefault(key, {})
    if value is None:
        del target[last]
    else:
        target[last] = value
    return document


@pytest.mark.parametrize("sample", SAMPLES, ids=[path.name for path in SAMPLES])
def test_every_sample_is_valid_against_the_base_pools(sample: Path) -> None:
    result = runner.invoke(app, ["validate", str(sample), "--config", str(POOLS)])
    assert result.exit_code == 0, result.output
    assert "is valid" in result.output


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("spec.distribution.workers", -1, "spec.distribution.workers:"),
        ("spec.resources.gpus", 1.5, "spec.resources.gpus: Input should be a valid integer"),
        ("spec.image", None, "spec.image: is required"),
        ("spec.output.uri", "s3:///models", "spec.output.uri: invalid storage URI 's3:///models': the bucket (container) name is missing"),
        ("spec.output.uri", "ftp://host/x", "spec.output.uri: invalid storage URI 'ftp://host/x': unknown scheme 'ftp'"),
        ("spec.hyperparameters.epochs", 0, "spec.hyperparameters.epochs:"),
        ("spec.resourcez", {}, "spec.resourcez: unknown field; did you mean resources? spec has: image,"),
        (
            "spec.distribution.workerz",
            2,
            "spec.distribution.workerz: unknown field; did you mean workers? spec.distribution has: workers, nprocPerNode",
        ),
    ],
)
def test_a_bad_field_is_named_and_exits_1(tmp_path: Path, field: str, value: Any, expected: str) -> None:
    result = runner.invoke(app, ["validate", str(write(tmp_path, changed(field, value)))])
    assert result.exit_code == 1
    assert expected in result.output
    assert "Traceback" not in result.output


def test_unknown_pool_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, changed("spec.resources", {"pool": "h100", "gpus": 8}))
    assert runner.invoke(app, ["validate", str(path)]).exit_code == 0  # no pools given: not checked
    result = runner.invoke(app, ["validate", str(path), "--config", str(POOLS)])
    assert result.exit_code == 1
    assert "spec.resources.pool: unknown pool 'h100'; the operator knows: a100, cpu, t4" in result.output


def test_too_many_gpus_for_the_pool(tmp_path: Path) -> None:
    path = write(tmp_path, changed("spec.resources", {"pool": "t4", "gpus": 4}))
    result = runner.invoke(app, ["validate", str(path), "--config", str(POOLS)])
    assert result.exit_code == 1
    assert "spec.resources.gpus: 4 GPUs per replica, but nodes of pool 't4' have 1" in result.output


def test_every_trainingrun_of_a_multi_document_file_is_checked(tmp_path: Path) -> None:
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    bad = changed("metadata.name", "Bad_Name")
    result = runner.invoke(app, ["validate", str(write(tmp_path, config_map, GOOD, bad))])
    assert result.exit_code == 1
    assert "TrainingRun 'good' is valid" in result.output
    assert "metadata.name:" in result.output


def test_stdin_is_read_with_a_dash() -> None:
    result = runner.invoke(app, ["validate", "-"], input=yaml.safe_dump(GOOD))
    assert result.exit_code == 0, result.output


def test_files_without_a_trainingrun_or_with_bad_yaml_say_why(tmp_path: Path) -> None:
    path = write(tmp_path, {"apiVersion": "v1", "kind": "ConfigMap"})
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert "holds no TrainingRun document (kinds found: ConfigMap)" in result.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed\n")
    result = runner.invoke(app, ["validate", str(broken)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"error: {broken}:1:16: not valid YAML: expected ',' or ']', but got '<stream end>' (while parsing a flow "
        "sequence)",
        "  1 | spec: [unclosed",
        "    |                ^",
    ]
    result = runner.invoke(app, ["validate", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 1
    assert "missing.yaml: no such file" in result.output


def test_render_prints_the_pytorchjob_with_the_pool_applied() -> None:
    result = runner.invoke(app, ["render", str(REPO / "manifests/samples/resnet50-a100.yaml"), "--config", str(POOLS)])
    assert result.exit_code == 0, result.output
    documents = list(yaml.safe_load_all(result.output))
    kinds = [document["kind"] for document in documents]
    assert kinds == ["PyTorchJob", "PersistentVolumeClaim", "Job"]
    job = documents[0]
    assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 4
    assert job["spec"]["nprocPerNode"] == "8"
    pod = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert pod["nodeSelector"] == {"trainrun.dev/pool": "a100"}
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"


def test_render_refuses_what_validate_refuses(tmp_path: Path) -> None:
    result = runner.invoke(app, ["render", str(write(tmp_path, changed("spec.distribution.workers", -1)))])
    assert result.exit_code == 1
    assert result.output.startswith("error: spec.distribution.workers:")


def test_crd_prints_the_customresourcedefinition() -> None:
    result = runner.invoke(app, ["crd"])
    assert result.exit_code == 0
    crd = yaml.safe_load(result.output)
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["spec"]["names"]["kind"] == "TrainingRun"


@pytest.mark.parametrize(
    "verb",
    [
        "run",
        "submit",
        "get",
        "list",
        "describe",
        "logs",
        "metrics",
        "cancel",
        "delete",
        "wait",
        "render",
        "validate",
        "crd",
    ],
)
def test_every_verb_has_help(verb: str) -> None:
    result = runner.invoke(app, [verb, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_the_example_pools_are_the_shipped_install_configuration() -> None:
    from trainrun.client.documents import example_operator_config, load_operator_config

    assert example_operator_config() == load_operator_config(REPO / "manifests" / "base" / "config.yaml")


def test_render_of_the_a100_sample_without_config_shows_the_whole_placement() -> None:
    result = CliRunner().invoke(app, ["render", str(REPO / "manifests" / "samples" / "resnet50-a100.yaml")])
    assert result.exit_code == 0, result.output
    job = next(item for item in yaml.safe_load_all(result.stdout) if item and item["kind"] == "PyTorchJob")
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 4
    assert job["spec"]["nprocPerNode"] == "8"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "TrainingRun"
    for replica in replicas.values():
        pod = replica["template"]["spec"]
        assert pod["containers"][0]["name"] == "pytorch" and pod["containers"][0]["command"][0] == "torchrun"
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
        assert pod["nodeSelector"] == {"trainrun.dev/pool": "a100"}
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_validate_takes_several_files_and_fails_if_any_is_invalid(tmp_path: Path) -> None:
    bad = write(tmp_path, changed("spec.distribution.workers", -1))
    result = runner.invoke(app, ["validate", *map(str, SAMPLES), str(bad), "--config", str(POOLS)])
    assert result.exit_code == 1
    assert result.output.count("is valid") == len(SAMPLES)
    assert "spec.distribution.workers:" in result.output


def test_a_rule_across_fields_names_its_field_once(tmp_path: Path) -> None:
    document = changed("spec.resources", {"gpus": 2})
    document["spec"]["distribution"]["nprocPerNode"] = 4
    result = runner.invoke(app, ["validate", str(write(tmp_path, document))])
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == (
        "spec.distribution.nprocPerNode (4) exceeds spec.resources.gpus (2): run at most one process per GPU"
    )


@pytest.mark.parametrize(
    ("arguments", "line"),
    [
        (["gett"], "error: No such command 'gett'. Did you mean 'get'? (trainrun -h lists what it takes)"),
        (["describe"], "error: Missing argument 'NAME'. (trainrun describe -h lists what it takes)"),
        (["get", "--bogus"], "error: No such option: --bogus (trainrun get -h lists what it takes)"),
    ],
)
def test_a_usage_error_is_one_line_with_exit_code_2(arguments: list[str], line: str) -> None:
    """Through the console script's entry point (CliRunner bypasses it): no usage box, no traceback."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "trainrun.cli", *arguments], capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stdout, result.stderr) == (2, "", line + "\n")


def test_validate_names_the_field_of_every_unrunnable_spec_in_one_line(tmp_path: Path) -> None:
    """What Kubernetes would refuse in the pods, or cannot work, is refused by `trainrun validate` with the
    field and the fix, one problem a line (the cases of tests/unit/tests/runnable_specs.py)."""
    documents = []
    for index, case in enumerate(UNRUNNABLE):
        document = copy.deepcopy(GOOD)
        document["metadata"]["name"] = f"case-{index}"
        document["spec"].update(case.spec)
        documents.append(document)
    result = runner.invoke(app, ["validate", str(write(tmp_path, *documents))])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    for case in UNRUNNABLE:
        assert any(line.startswith(f"{case.field}: ") and case.words in line for line in lines), (case.name, lines)
    assert len(lines) == len(UNRUNNABLE)  # one problem each, nothing else on stdout
    assert 'spec.resources.nodeSelector["bad key!"]: is not a valid key: its name must be letters, digits' in result.stdout


def test_validate_prints_a_suspicious_value_as_a_warning_and_passes(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(write(tmp_path, changed("spec.resources", {"memory": "1"})))])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "warning: spec.resources.memory: '1' is 1 byte, less than 32Mi per replica, too little to start a training "
        "process: a quantity without a suffix counts bytes; did you mean 1Gi or 1Mi?",
        f"{tmp_path / 'run.yaml'}: TrainingRun 'good' is valid, with 1 warning(s)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "kind: TrainingRun\nspec:\n  image: a: b\n",
            ["error: {path}:3:11: not valid YAML: mapping values are not allowed here", "  3 |   image: a: b", "    |           ^"],
        ),
        (
            "spec:\n  args: [a\n  image: x\n",
            [
                "error: {path}:3:8: not valid YAML: expected ',' or ']', but got ':' (while parsing a flow sequence that starts at line 2)",
                "  3 |   image: x",
                "    |        ^",
            ],
        ),
    ],
    ids=["mapping-in-value", "open-list"],
)
def test_invalid_yaml_names_file_line_and_column_with_a_caret(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    for verb in ("validate", "render", "run"):
        result = runner.invoke(app, [verb, str(path)])
        assert result.exit_code == 1
        assert result.output.splitlines() == [line.format(path=path) for line in expected], verb


@pytest.mark.parametrize(
    ("output", "inputs", "local", "refused"),
    [
        ({"uri": "az://models/run"}, [], False, ["spec.output.uri: az://models/run names no Azure storage account"]),
        ({"uri": "s3://models/run"}, [{"name": "data", "uri": "az://datasets/mnist"}], False, ["spec.inputs[0].uri: az://datasets/mnist"]),
        ({"uri": "az://models/run", "secretName": "azure-creds"}, [], False, []),
        ({"uri": "az://models@acct.blob.core.windows.net/run"}, [], False, []),
        ({"uri": "az://models/run"}, [], True, []),
    ],
    ids=["no-account-no-secret", "an-input-too", "a-secret-may-name-it", "account-in-the-uri", "local-uses-the-shell"],
)
def test_an_azure_uri_no_one_can_name_an_account_for_is_refused(
    tmp_path: Path, output: dict[str, Any], inputs: list[dict[str, Any]], local: bool, refused: list[str]
) -> None:
    document = changed("spec.output", output)
    document["spec"]["inputs"] = inputs
    result = runner.invoke(app, ["validate", str(write(tmp_path, document)), *(["--local"] if local else [])])
    assert result.exit_code == (1 if refused else 0), result.output
    for words in refused:
        assert words in result.stdout
    if refused:
        assert "models@ACCOUNT.blob.core.windows.net in place of 'models'" in result.stdout or "datasets@ACCOUNT" in result.stdout
        assert "spec.output.secretName" in result.stdout
