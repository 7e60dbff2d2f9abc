"""Text outside the Basic Multilingual Plane reaches the children byte for byte (issue 24, item 2).

A run with emoji, CJK (an Extension B ideograph among them) and combining marks in every string field that
reaches a child (pod annotations, command, args, env values, hyperparameters, script name, working
directory, input and code locations and paths; label values cannot hold such text) is submitted with the
``trainrun`` CLI (the sync client's server-side apply) and made into a PyTorchJob by the operator (the async
client's). Both requests used to be refused by the API server's YAML decoder ("found invalid Unicode
character escape code"); now the run is stored as written, its job carries each string exactly as the
renderer makes it, and its replicas run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster.harness import KubeCluster, Outcome, pod_behaviour, wait_until
from runs import JOB_LABEL, OperatorProcess, get_run, operator, training_run, wait_for_phase
from trainrun.render import render_pytorchjob
from trainrun.spec import parse_operator_config, validate_training_run

pytestmark = pytest.mark.cluster
__all__ = ["operator"]  # a fixture, used by name

TRAINRUN = str(Path(sys.executable).parent / "trainrun")
OPERATOR_CONFIG = Path(__file__).resolve().parents[2] / "manifests" / "base" / "config.yaml"
EMOJI = "\U0001f600\U0001f680"  # outside the BMP: these were sent as surrogate-pair escapes
CJK = "\u6570\u636e\U00020bb7\u91ce\u5bb6"  # an Extension B ideograph (outside the BMP) among common ones
MARKS = "e\u0301\u0308 n\u0303 a\u20dd"  # combining marks


def _run(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    document = training_run(
        name,
        namespace,
        workingDir=f"/workspace/{CJK}",
        env=[{"name": "GREETING", "value": f"{EMOJI} {CJK} {MARKS}"}],
        hyperparameters={"epochs": 1, "dataDir": f"/data/{EMOJI}", "extra": {"note": f"{MARKS}{EMOJI}"}},
        inputs=[{"name": "data", "uri": f"s3://datasets/{CJK}/{EMOJI}/", "path": f"/inputs/{EMOJI}"}],
        code={"uri": f"s3://code/{MARKS}/snapshot/", "mountPath": f"/workspace/code-{EMOJI}"},
        podMetadata={
            "labels": {"team": "ml"},
            "annotations": {**pod_behaviour(Outcome.RUN), "example.com/note": f"{EMOJI} {CJK} {MARKS}"},
        },
        **spec,
    )
    document["metadata"]["annotations"] = {"example.com/title": f"{EMOJI} run"}
    return document


def _texts(node: Any) -> list[str]:
    """Every string in a JSON value, in order."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [text for key, value in node.items() for text in (*_texts(key), *_texts(value))]
    if isinstance(node, list):
        return [text for item in node for text in _texts(item)]
    return []


def _replica_strings(job: dict[str, Any]) -> dict[str, Any]:
    """What of each replica's pod template carries the run's text: annotations, and every container's
    command, args, env values, working directory and mount paths."""
    found: dict[str, Any] = {}
    for replica_type, replica in job["spec"]["pytorchReplicaSpecs"].items():
        template = replica["template"]
        containers = template["spec"].get("initContainers", []) + template["spec"]["containers"]
        found[replica_type] = {
            "annotations": template["metadata"].get("annotations", {}),
            "containers": [
                {
                    "command": container.get("command"),
                    "args": container.get("args"),
                    "env": {item["name"]: item.get("value") for item in container.get("env", [])},
                    "workingDir": container.get("workingDir"),
                    "mounts": [mount["mountPath"] for mount in container.get("volumeMounts", [])],
                }
                for container in containers
            ],
        }
    return found


@pytest.mark.parametrize(
    "program",
    [
        {"command": ["python", f"train-{EMOJI}.py", f"--title={CJK}"], "args": [f"--note={MARKS}", EMOJI]},
        {"script": f"train_{CJK}_{EMOJI}.py", "args": [MARKS]},
    ],
    ids=["command", "script"],
)
def test_text_outside_the_bmp_reaches_the_pytorchjob_byte_for_byte(
    kube_cluster: KubeCluster, operator: OperatorProcess, kube_namespace: str, tmp_path: Path, program: dict[str, Any]
) -> None:
    namespace = kube_namespace
    document = _run("unicode", namespace, **program)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    submitted = subprocess.run([TRAINRUN, "submit", str(path)], env=kube_cluster.env(), capture_output=True, text=True, timeout=120)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr

    stored = get_run(kube_cluster, "unicode", namespace)
    assert stored["spec"] | document["spec"] == stored["spec"]  # every field as written (defaults added)
    assert stored["metadata"]["annotations"]["example.com/title"] == f"{EMOJI} run"

    def job() -> dict[str, Any] | None:
        return kube_cluster.get("pytorchjob", "unicode", namespace)

    created = wait_until(job, timeout=60, what="the PyTorchJob of a run with text outside the BMP")
    config = parse_operator_config(yaml.safe_load(yaml.safe_load(OPERATOR_CONFIG.read_text())["data"]["config.yaml"]))
    expected = render_pytorchjob(validate_training_run(stored, config), config)
    assert _replica_strings(created) == _replica_strings(expected)
    carried = set(_texts(created["spec"]))
    for text in (EMOJI, CJK, MARKS):
        assert any(text in item for item in carried), text

    wait_for_phase(kube_cluster, operator, "unicode", namespace, "Running", timeout=90)
    pods = kube_cluster.list_objects("pods", namespace, f"{JOB_LABEL}=unicode")
    assert len(pods) == 2
    for pod in pods:
        assert pod["metadata"]["annotations"]["example.com/note"] == f"{EMOJI} {CJK} {MARKS}"
        env = {item["name"]: item.get("value") for item in pod["spec"]["containers"][0]["env"]}
        assert env["GREETING"] == f"{EMOJI} {CJK} {MARKS}"
    status = get_run(kube_cluster, "unicode", namespace)["status"]
    assert "refused" not in json.dumps(status), status
    operator.assert_no_traceback()
