"""The API server and ``trainrun validate`` judge TrainingRuns alike (quantities, image references), and
whatever ``trainrun validate`` accepts, the API server stores.

The CRD's CEL rules and patterns are generated from the spec model; here the real kube-apiserver
(server-side dry run, nothing is stored) judges the very documents the model judges, so a rule the
API server reads otherwise than we do (a CEL function, a regular expression dialect) fails a test.
Then a couple of hundred specs mutated by hypothesis (tests/spec_mutations.py) go to both.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from cluster.harness import KubeCluster
from spec_mutations import fuzzed_documents
from trainrun.spec import InvalidTrainingRun, validate_training_run

pytestmark = pytest.mark.cluster

CASES: list[tuple[str, dict[str, Any]]] = [
    ("memory 1Gi", {"resources": {"memory": "1Gi"}}),
    ("memory 1.5Gi", {"resources": {"memory": "1.5Gi"}}),
    ("memory 1e3", {"resources": {"memory": "1e3"}}),
    ("memory 8 (a number)", {"resources": {"memory": 8}}),
    ("memory 1.5.5Gi", {"resources": {"memory": "1.5.5Gi"}}),
    ("memory 0", {"resources": {"memory": "0"}}),
    ("memory 0 (a number)", {"resources": {"memory": 0}}),
    ("memory -1Gi", {"resources": {"memory": "-1Gi"}}),
    ("memory Ti (zero)", {"resources": {"memory": "Ti"}}),
    ("memory Pi (no digits)", {"resources": {"memory": "Pi"}}),
    ("memory 12 GB", {"resources": {"memory": "12 GB"}}),
    ("cpu 500m", {"resources": {"cpu": "500m"}}),
    ("cpu 0.0", {"resources": {"cpu": "0.0"}}),
    ("volume size 0Gi", {"output": {"uri": "s3://models/x/", "volume": {"size": "0Gi"}}}),
    ("image with a port and a digest", {"image": "localhost:5000/team/trainer:1.0@sha256:" + "a" * 64}),
    ("image python:3.11", {"image": "python:3.11"}),
    ("image with a non-ASCII letter", {"image": "ghcr.io/acme/tr\u00e4iner:1.0"}),
    ("image in capitals", {"image": "ghcr.io/Acme/Trainer:1.0"}),
    ("image with a space", {"image": "trainer:1.0 "}),
]


def _document(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "trainrun.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"image": "ghcr.io/trainrun/trainer:0.1.0", **spec},
    }


def test_the_api_server_refuses_what_validate_refuses(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    ours: dict[str, bool] = {}
    theirs: dict[str, bool] = {}
    for index, (case, spec) in enumerate(CASES):
        document = _document(f"case-{index}", kube_namespace, spec)
        try:
            validate_training_run(document)
            ours[case] = True
        except InvalidTrainingRun:
            ours[case] = False
        applied = kube_cluster.kubectl("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(document), check=False)
        theirs[case] = applied.returncode == 0
        if not theirs[case]:
            assert "is invalid" in applied.stderr, applied.stderr  # refused by validation, not by anything else
    assert ours == theirs
    assert not theirs["memory 1.5.5Gi"] and not theirs["memory 0"] and not theirs["image with a non-ASCII letter"]




def _accepted(document: dict[str, Any]) -> bool:
    try:
        validate_training_run(document)
    except InvalidTrainingRun:
        return False
    return True


def test_what_validate_accepts_the_api_server_stores(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    documents = fuzzed_documents(kube_namespace, examples=300)
    ours = {document["metadata"]["name"] for document in documents if _accepted(document)}
    listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})
    # --validate=false: kubectl's own schema check would stop at the first bad item; the server still checks
    # every item (types, CEL, patterns), only dropping unknown fields instead of refusing them.
    applied = kube_cluster.kubectl(
        "apply", "--dry-run=server", "--validate=false", "-o", "name", "-f", "-", stdin=listing, check=False
    )
    theirs = {line.rsplit("/", 1)[-1] for line in applied.stdout.split()}
    assert len(documents) > 250 and len(ours) > 40, (len(documents), len(ours))
    refusals = dict(re.findall(r'"(fuzz-\d+)" is invalid: (.*)', applied.stderr))
    assert {name: refusals.get(name, applied.stderr) for name in ours - theirs} == {}
