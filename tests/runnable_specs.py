"""Specs Kubernetes takes but that can never run, and their neighbours that do run (issue 24).

What the API server refuses only in a pod (a label key, a toleration), so that the run would wait for
replicas that never exist, and what cannot work wherever it runs (a relative URI or working directory, a
quantity too large to count). Shared by the tests that hold ``trainrun validate`` (tests/unit/test_spec.py,
test_cli_render_validate.py) and the API server with the CRD (tests/integration/test_api_server_validation.py)
to refusing each, naming the field, and to accepting the neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Refused:
    """A spec that cannot run, the field its refusal names and words of the message."""

    name: str
    spec: dict[str, Any]
    field: str
    words: str


LONG = "a" * 64
PREFIX_253 = ("a" * 62 + ".") * 4 + "a"
UNRUNNABLE = [
    Refused("nodeSelector key 'bad key!'", {"resources": {"nodeSelector": {"bad key!": "x"}}},
            'spec.resources.nodeSelector["bad key!"]', "is not a valid key: its name must be letters, digits"),
    Refused("nodeSelector value 'a b'", {"resources": {"nodeSelector": {"disk": "a b"}}},
            'spec.resources.nodeSelector["disk"]', "'a b' is not a valid label value"),
    Refused("label key over 63 characters", {"podMetadata": {"labels": {LONG: "x"}}},
            f'spec.podMetadata.labels["{LONG}"]', "its name (after any prefix/) has 64 characters; at most 63"),
    Refused("label key with two slashes", {"podMetadata": {"labels": {"a.io/b/c": "x"}}},
            'spec.podMetadata.labels["a.io/b/c"]', "more than one '/'"),
    Refused("label key with a prefix of 254 characters", {"podMetadata": {"labels": {PREFIX_253 + "a/b": "x"}}},
            f'spec.podMetadata.labels["{PREFIX_253}a/b"]', "its prefix has 254 characters; at most 253"),
    Refused("label key with an upper-case prefix", {"podMetadata": {"labels": {"Example.com/team": "x"}}},
            'spec.podMetadata.labels["Example.com/team"]', "is not a DNS subdomain"),
    Refused("label value over 63 characters", {"podMetadata": {"labels": {"team": LONG}}},
            'spec.podMetadata.labels["team"]', "is 64 characters; a label value has at most 63"),
    Refused("label value with non-ASCII letters", {"podMetadata": {"labels": {"team": "\u00e9quipe"}}},
            'spec.podMetadata.labels["team"]', "is not a valid label value"),
    Refused("annotation key 'bad key!'", {"podMetadata": {"annotations": {"bad key!": "x"}}},
            'spec.podMetadata.annotations["bad key!"]', "is not a valid key"),
    Refused("toleration with a value and operator Exists",
            {"resources": {"tolerations": [{"key": "gpu", "operator": "Exists", "value": "yes"}]}},
            "spec.resources.tolerations[0]", "must be empty when operator is Exists"),
    Refused("toleration without a key, operator Equal", {"resources": {"tolerations": [{"value": "x"}]}},
            "spec.resources.tolerations[0]", "without a key must have operator: Exists"),
    Refused("toleration seconds without NoExecute",
            {"resources": {"tolerations": [{"key": "a", "operator": "Exists", "tolerationSeconds": 5}]}},
            "spec.resources.tolerations[0]", "effect NoExecute only"),
    Refused("toleration key 'bad key!'", {"resources": {"tolerations": [{"key": "bad key!", "operator": "Exists"}]}},
            "spec.resources.tolerations[0].key", "is not a valid key"),
    Refused("toleration value with a space", {"resources": {"tolerations": [{"key": "a", "value": "x y"}]}},
            "spec.resources.tolerations[0].value", "is not a valid label value"),
    Refused("gpuResource without a domain", {"resources": {"gpuResource": "gpu"}},
            "spec.resources.gpuResource", "extended resource name"),
    Refused("queue name in capitals", {"resources": {"queue": "Team_A"}}, "spec.resources.queue", "Kubernetes object name"),
    Refused("code.uri notauri", {"code": {"uri": "notauri"}}, "spec.code.uri", "'notauri' is neither a URI nor an absolute path"),
    Refused("input URI relative/path", {"inputs": [{"name": "data", "uri": "relative/path"}]},
            "spec.inputs[0].uri", "is neither a URI nor an absolute path: write s3://bucket/prefix"),
    Refused("input URI file:///", {"inputs": [{"name": "data", "uri": "file:///"}]},
            "spec.inputs[0].uri", "'file:///' names the root folder /"),
    Refused("output URI with a space before it", {"output": {"uri": " s3://models/x"}}, "spec.output.uri", "spaces around it"),
    Refused("output URI s3:// with no bucket", {"output": {"uri": "s3:///models"}}, "spec.output.uri", "bucket"),
    Refused("workingDir relative/dir", {"workingDir": "relative/dir"}, "spec.workingDir", "'relative/dir' is a relative path"),
    Refused("input path data", {"inputs": [{"name": "data", "uri": "s3://data/x", "path": "data"}]},
            "spec.inputs[0].path", "relative path"),
    Refused("code mountPath code", {"code": {"uri": "s3://code/x", "mountPath": "code"}}, "spec.code.mountPath", "relative path"),
    Refused("cpu 1e400", {"resources": {"cpu": "1e400"}}, "spec.resources.cpu", "'1e400' is too large"),
    Refused("cpu 9223372036854775807 (a number)", {"resources": {"cpu": 2**63 - 1}}, "spec.resources.cpu", "too large"),
    Refused("memory 10Pi", {"resources": {"memory": "10Pi"}}, "spec.resources.memory", "too large"),
    Refused("volume size 1e19", {"output": {"uri": "s3://models/x", "volume": {"size": "1e19"}}}, "spec.output.volume.size", "too large"),
]
# Their neighbours that Kubernetes takes and that work: still accepted.
ACCEPTED_NEIGHBOURS: list[tuple[str, dict[str, Any]]] = [
    ("label keys with and without a prefix, an empty value", {"podMetadata": {"labels": {"team": "", "example.com/a_b.c-d": "x" * 63}}}),
    ("annotation with any value", {"podMetadata": {"annotations": {"example.com/note": "\u00e9t\u00e9 \U0001f600 " * 20}}}),
    ("a prefix of 253 characters", {"resources": {"nodeSelector": {PREFIX_253 + "/b": "x"}}}),
    ("toleration of every taint", {"resources": {"tolerations": [{"operator": "Exists"}]}}),
    ("toleration Equal with an empty value", {"resources": {"tolerations": [{"key": "a", "value": ""}]}}),
    ("toleration NoExecute for 60 s", {"resources": {"tolerations": [{"key": "a", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}]}}),
    ("input file:///data and an absolute output path", {"inputs": [{"name": "d", "uri": "file:///data"}], "output": {"uri": "/runs/x"}}),
    ("schemes in capitals", {"inputs": [{"name": "d", "uri": "S3://data/x"}], "code": {"uri": "FILE:///code"}}),
    ("cpu at the largest count", {"resources": {"cpu": "9223372036854775807m"}}),
    ("cpu at the largest whole number", {"resources": {"cpu": 9223372036854775}}),
    ("memory 8Pi", {"resources": {"memory": "8Pi"}}),
    ("cpu 1e4294967296 (the API server reads the exponent in 32 bits: 1)", {"resources": {"cpu": "1e4294967296"}}),
    ("an absolute workingDir", {"workingDir": "/workspace/run"}),
]
