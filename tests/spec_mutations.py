"""A valid TrainingRun that sets nearly every field, and hypothesis strategies that damage it.

Shared by the fuzz tests of what judges a spec: ``trainrun validate`` (tests/unit/test_spec_inputs.py),
the API server with the generated CRD (tests/integration/test_api_server_validation.py) and the operator
(tests/integration/test_refusals.py), the last two through :func:`fuzzed_documents`. A
mutation replaces the value at one path of the document (or adds a key to the mapping there) with a
value of any shape: the tricky strings and numbers that broke something once, and generated ones.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

Path = tuple[str | int, ...]

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
    "resources": {
        "pool": "a100",
        "gpus": 1,
        "cpu": "8",
        "memory": "64Gi",
        "priorityClassName": "high",
        "nodeSelector": {"example.com/disk": "ssd"},
        "tolerations": [{"key": "example.com/spot", "operator": "Exists", "effect": "NoSchedule"}],
    },
    "runPolicy": {"backoffLimit": 2, "restartPolicy": "OnFailure", "activeDeadlineSeconds": 3600},
    "inputs": [{"name": "data", "uri": "s3://datasets/mnist/"}],
    "output": {"uri": "s3://models/run/", "secretName": "s3-credentials", "volume": {"size": "20Gi"}},
    "metrics": [{"name": "loss", "regex": "loss=([0-9.]+)"}],
    "podMetadata": {"labels": {"team": "ml"}, "annotations": {"note": "x"}},
}
FULL_DOCUMENT: dict[str, Any] = {
    "apiVersion": "trainrun.dev/v1alpha1",
    "kind": "TrainingRun",
    "metadata": {"name": "mnist", "namespace": "ml", "uid": "1234-abcd", "generation": 3},
    "spec": FULL_SPEC,
}
TRICKY_VALUES: list[Any] = [
    "1.5.5Gi", "0", "-1", "1e400", "ghcr.io/acme/tr\u00e4iner:1", "x{99999999999}(a)", "(?P<value>", "(", "a{2,1}",
    "(?<=a+)b", "\\", "\x00", "s3://", "s3://Bad Bucket/x", "file://host/x", "../..", "\u00e9", "", " ", "a" * 300,
    # What Kubernetes refuses only in a pod, or what cannot run (issue 24).
    "bad key!", "a" * 64, "Exists", "NoExecute", "relative/path", "file:///", "/", "\U0001f600",
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
NEW_KEYS = st.one_of(st.none(), st.sampled_from(["bogus", "Image", "x", "bad key!", "example.com/" + "a" * 64, "value"]))


def paths(node: Any, prefix: Path = ()) -> list[Path]:
    """The path of every value under node (itself included)."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found.extend(paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(paths(value, (*prefix, index)))
    return found


def value_at(document: dict[str, Any], path: Path) -> Any:
    node: Any = document
    for part in path:
        node = node[part]
    return node


def dotted(path: Path) -> str:
    """``spec.inputs[0].uri``, as the validator names fields."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")


def mutations(mutable: list[Path]) -> st.SearchStrategy[list[tuple[Path, Any, str | None]]]:
    """One to three (path, value, key to add or None) changes at these paths."""
    return st.lists(st.tuples(st.sampled_from(mutable), VALUES, NEW_KEYS), min_size=1, max_size=3)


def _like(value: Any) -> st.SearchStrategy[Any]:
    """Values of the same JSON type as value: the edits a person makes, more often accepted than not."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.one_of(st.integers(min_value=-3, max_value=100), st.integers(min_value=-(2**63), max_value=2**63 - 1))
    if isinstance(value, float):
        return st.floats(min_value=-1e6, max_value=1e6)
    texts = [item for item in TRICKY_VALUES if isinstance(item, str)]
    return st.one_of(st.sampled_from(texts), st.text(max_size=24), st.from_regex(r"[a-z0-9./:-]{1,30}", fullmatch=True))


def plausible_mutations(mutable: list[Path]) -> st.SearchStrategy[list[tuple[Path, Any, str | None]]]:
    """One to three changes of a leaf value for another of its type at these paths."""
    leaves = [path for path in mutable if not isinstance(value_at(FULL_DOCUMENT, path), dict | list)]
    change = st.sampled_from(leaves).flatmap(
        lambda path: st.tuples(st.just(path), _like(value_at(FULL_DOCUMENT, path)), st.none())
    )
    return st.lists(change, min_size=1, max_size=3)


def mutated(changes: list[tuple[Path, Any, str | None]]) -> tuple[dict[str, Any], list[str]]:
    """FULL_DOCUMENT with these changes, and the dotted paths changed (a change below one that an
    earlier change replaced is dropped)."""
    document = copy.deepcopy(FULL_DOCUMENT)
    changed = []
    for path, value, new_key in changes:
        try:
            parent: Any = value_at(document, path[:-1])
            target = parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change replaced what held this path
        if not isinstance(parent, dict | list):
            continue  # an earlier change put a string there: its characters cannot be set
        value = copy.deepcopy(value)  # the same generated object set twice would make a cycle
        if new_key is not None and isinstance(target, dict):
            target[new_key] = value
            changed.append(dotted((*path, new_key)))
        else:
            parent[path[-1]] = value
            changed.append(dotted(path))
    return document, changed


def fuzzed_documents(namespace: str, *, examples: int) -> list[dict[str, Any]]:
    """Up to ``examples`` damaged TrainingRuns named ``fuzz-N`` in ``namespace``, the same ones every time
    (derandomized), each with a JSON form (NaN and infinity have none: no client can send them)."""
    documents: list[dict[str, Any]] = []
    spec_paths = [path for path in paths(FULL_DOCUMENT) if path[:1] == ("spec",) and len(path) > 1]

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None)
    @given(changes=mutations(spec_paths) | plausible_mutations(spec_paths))
    def collect(changes: list[tuple[Path, Any, str | None]]) -> None:
        document, _ = mutated(changes)
        document["metadata"] = {"name": f"fuzz-{len(documents)}", "namespace": namespace}
        try:
            json.dumps(document, allow_nan=False)
        except ValueError:
            return
        documents.append(document)

    collect()
    return documents
