"""The production install on the real control plane: both overlays applied the way the README says,
the ServiceAccount's rights compared with what the operator uses, and Pod Security "restricted".

- ``kubectl apply --server-side -k`` of overlays/namespaced, then of manifests/ (cluster-wide).
- ``kubectl auth can-i --list --as=system:serviceaccount:trainrun-system:trainrun-operator`` in a watched
  namespace, an unwatched one and trainrun-system, against the expected rights (what every authenticated
  user may do, read the same way for an account nothing is bound to, is taken out first).
- The operator as a process authenticated as its ServiceAccount, with only the namespaced overlay's
  rights and its --namespace flags, drives a run to Completed (test_artifacts.py does the same with the
  cluster-wide overlay's rights and the whole artifact copy).
- A namespace labelled ``pod-security.kubernetes.io/enforce=restricted``: every pod the operator creates
  for a sample run (replica pods through the real training-operator, the uploader through the Job
  controller, and each as a bare Pod) and the operator's own pod are admitted by the API server.

The Deployment is deleted right after each apply: here the operator runs as a process (runs.py), and
kwok would only pretend to run it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster.harness import KubeCluster, Outcome, pod_behaviour, wait_until
from runs import OperatorProcess, kubectl_apply, service_account_kubeconfig, training_run, wait_for_phase

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
SAMPLES = sorted(path for path in (MANIFESTS / "samples").glob("*.yaml") if "\nkind: TrainingRun\n" in path.read_text())
OPERATOR = "system:serviceaccount:trainrun-system:trainrun-operator"
NAMESPACED_OVERLAY = MANIFESTS / "overlays" / "namespaced"
WATCHED = ("team-a", "team-b")  # the namespaces overlays/namespaced lists

Right = tuple[str, str, str]  # (resource, resource names, verb)

# What the operator does in a namespace it serves (overlays/cluster-wide/cluster-role.yaml).
RUN_RIGHTS: set[Right] = {
    *(("trainingruns.trainrun.dev", "", verb) for verb in ("list", "watch", "create", "patch")),
    ("trainingruns.trainrun.dev/status", "", "patch"),
    *(("trainingsweeps.trainrun.dev", "", verb) for verb in ("list", "watch")),
    ("trainingsweeps.trainrun.dev/status", "", "patch"),
    *(("pytorchjobs.kubeflow.org", "", verb) for verb in ("list", "watch", "create", "patch", "delete")),
    *(("trainjobs.trainer.kubeflow.org", "", verb) for verb in ("list", "watch", "create", "patch", "delete")),
    *((f"{kind}.kueue.x-k8s.io", "", verb) for kind in ("workloads", "localqueues") for verb in ("list", "watch")),
    *(("jobs.batch", "", verb) for verb in ("list", "watch", "create", "patch")),
    *(("persistentvolumeclaims", "", verb) for verb in ("list", "watch", "create", "patch", "delete")),
    *(("pods", "", verb) for verb in ("list", "watch", "delete")),
    ("pods/log", "", "get"),
    *(("events", "", verb) for verb in ("list", "watch", "create")),
    ("secrets", "", "get"),
}
# And in its own namespace: its configuration, the registries' Secrets and the leader-election Lease.
OWN_NAMESPACE_RIGHTS: set[Right] = {
    *(("configmaps", "trainrun-operator-config", verb) for verb in ("get", "list", "watch")),
    ("secrets", "", "get"),
    ("leases.coordination.k8s.io", "", "create"),
    ("leases.coordination.k8s.io", "trainrun-operator", "get"),
    ("leases.coordination.k8s.io", "trainrun-operator", "update"),
}


def rights(cluster: KubeCluster, user: str, namespace: str) -> set[Right]:
    """``kubectl auth can-i --list`` as USER in NAMESPACE, one (resource, names, verb) per allowed verb."""
    listed = cluster.kubectl("auth", "can-i", "--list", f"--as={user}", "-n", namespace).stdout.splitlines()
    header = listed[0]
    starts = [header.index(name) for name in ("Resources", "Non-Resource URLs", "Resource Names", "Verbs")]
    found: set[Right] = set()
    for line in listed[1:]:
        resource, non_resource, names, verbs = (
            line[start:end].strip() for start, end in zip(starts, [*starts[1:], None], strict=True)
        )
        if not resource or non_resource not in ("", "[]"):
            continue
        for verb in verbs.strip("[]").split():
            found.add((resource, names.strip("[]"), verb))
    return found


def operator_rights(cluster: KubeCluster, namespace: str) -> set[Right]:
    """The operator's rights beyond what every authenticated ServiceAccount has (self reviews and such)."""
    everyone = rights(cluster, "system:serviceaccount:trainrun-system:nobody-bound", namespace)
    return rights(cluster, OPERATOR, namespace) - everyone


def apply_overlay(cluster: KubeCluster, folder: Path) -> str:
    applied = cluster.kubectl("apply", "--server-side", "-k", str(folder), timeout=120)
    cluster.kubectl("delete", "deployment", "trainrun-operator", "-n", "trainrun-system", "--ignore-not-found")
    return applied.stdout


def test_namespaced_overlay_grants_rights_only_where_it_is_told(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    cluster = kube_cluster
    for namespace in WATCHED:
        if cluster.get("namespace", namespace) is None:
            cluster.create_namespace(namespace)
    # Another test may have installed the cluster-wide overlay: its binding would add to what is seen here.
    cluster.kubectl("delete", "clusterrolebinding", "trainrun-operator", "--ignore-not-found")
    try:
        applied = apply_overlay(cluster, NAMESPACED_OVERLAY)
        assert "role.rbac.authorization.k8s.io/trainrun-operator serverside-applied" in applied
        assert "clusterrole" not in applied
        for namespace in WATCHED:
            assert operator_rights(cluster, namespace) == RUN_RIGHTS, namespace
        assert operator_rights(cluster, "trainrun-system") == OWN_NAMESPACE_RIGHTS
        # A namespace it does not watch, and kube-system: nothing at all.
        assert operator_rights(cluster, kube_namespace) == set()
        assert operator_rights(cluster, "kube-system") == set()
    finally:
        for namespace in WATCHED:
            cluster.kubectl("delete", "role,rolebinding", "trainrun-operator", "-n", namespace, "--ignore-not-found")
        apply_overlay(cluster, MANIFESTS)  # the default install, as the other tests expect it


def test_the_operator_completes_a_run_with_only_the_namespaced_overlays_rights(
    kube_cluster: KubeCluster, tmp_path: Path
) -> None:
    """The namespaced install end to end: the operator, authenticated as its ServiceAccount and started
    with the overlay's --namespace flags, drives a run in a watched namespace to Completed; a denial of
    any right it uses fails the test."""
    cluster = kube_cluster
    for namespace in WATCHED:
        if cluster.get("namespace", namespace) is None:
            cluster.create_namespace(namespace)
    cluster.kubectl("delete", "clusterrolebinding", "trainrun-operator", "--ignore-not-found")
    apply_overlay(cluster, NAMESPACED_OVERLAY)
    deployment = next(
        item
        for item in yaml.safe_load_all(cluster.kubectl("kustomize", str(NAMESPACED_OVERLAY)).stdout)
        if item and item["kind"] == "Deployment"
    )
    flags = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    operator = OperatorProcess(service_account_kubeconfig(cluster, tmp_path), tmp_path / "operator.log", args=flags)
    name = f"ns-{uuid.uuid4().hex[:6]}"
    try:
        operator.start()
        behaviour = pod_behaviour(Outcome.SUCCEED, after="3s")
        kubectl_apply(cluster, training_run(name, WATCHED[0], podMetadata={"annotations": behaviour}))
        wait_for_phase(cluster, operator, name, WATCHED[0], "Completed", timeout=120)
    finally:
        operator.stop()
        cluster.kubectl("delete", "trainingrun", name, "-n", WATCHED[0], "--ignore-not-found", "--wait=false")
        for namespace in WATCHED:
            cluster.kubectl("delete", "role,rolebinding", "trainrun-operator", "-n", namespace, "--ignore-not-found")
        apply_overlay(cluster, MANIFESTS)
    operator.assert_no_traceback()
    denial = re.compile(r'forbidden: User "[^"]+" cannot')
    denied = [line for line in operator.output().splitlines() if denial.search(line)]
    assert not denied, "the namespaced overlay is missing a right:\n" + "\n".join(denied[:5])


def test_cluster_wide_overlay_grants_exactly_what_the_operator_uses(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    applied = apply_overlay(kube_cluster, MANIFESTS)
    for line in (
        "clusterrole.rbac.authorization.k8s.io/trainrun-operator serverside-applied",
        "poddisruptionbudget.policy/trainrun-operator serverside-applied",
        "service/trainrun-operator-metrics serverside-applied",
        "networkpolicy.networking.k8s.io/trainrun-operator serverside-applied",
    ):
        assert line in applied
    assert operator_rights(kube_cluster, kube_namespace) == RUN_RIGHTS
    assert operator_rights(kube_cluster, "kube-system") == RUN_RIGHTS  # README: why the namespaced overlay exists
    assert operator_rights(kube_cluster, "trainrun-system") == RUN_RIGHTS | OWN_NAMESPACE_RIGHTS
    # Cluster-scoped: nothing (no namespaces, no CRDs, no nodes).
    for resource in ("namespaces", "customresourcedefinitions.apiextensions.k8s.io", "nodes", "clusterroles"):
        allowed = kube_cluster.kubectl("auth", "can-i", "list", resource, f"--as={OPERATOR}", check=False)
        assert allowed.stdout.strip() == "no", resource


# Pod Security "restricted".
@pytest.fixture
def restricted_namespace(kube_cluster: KubeCluster, kube_namespace: str) -> Iterator[str]:
    levels = ("enforce", "warn", "audit")
    kube_cluster.kubectl(
        "label", "namespace", kube_namespace, *(f"pod-security.kubernetes.io/{level}=restricted" for level in levels)
    )
    yield kube_namespace


def render(sample: Path) -> list[dict[str, Any]]:
    """What the operator creates for SAMPLE, with the pools this cluster's operator is configured with."""
    trainrun = Path(sys.executable).parent / "trainrun"
    rendered = subprocess.run(
        [str(trainrun), "render", str(sample), "--config", str(MANIFESTS / "base" / "config.yaml")],
        capture_output=True,
        text=True,
        check=True,
    )
    return [item for item in yaml.safe_load_all(rendered.stdout) if item]


def into(namespace: str, child: dict[str, Any]) -> dict[str, Any]:
    """The child in NAMESPACE, without its owner (no TrainingRun exists here: the garbage collector would
    delete what names a missing owner)."""
    child = json.loads(json.dumps(child))
    child["metadata"]["namespace"] = namespace
    child["metadata"].pop("ownerReferences", None)
    return child


def pod_templates(children: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for child in children:
        if child["kind"] == "PyTorchJob":
            for replica_type, replica in child["spec"]["pytorchReplicaSpecs"].items():
                found.append((f"{child['metadata']['name']}-{replica_type.lower()}", replica["template"]))
        elif child["kind"] == "Job":
            found.append((child["metadata"]["name"], child["spec"]["template"]))
    return found


def create(cluster: KubeCluster, namespace: str, objects: list[dict[str, Any]], *extra: str) -> str:
    """kubectl apply; what it printed on stderr (the API server's PodSecurity warnings land there)."""
    document = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    done = cluster.kubectl("apply", "-n", namespace, "-f", "-", *extra, stdin=document, check=False)
    assert done.returncode == 0, done.stderr
    return done.stderr


def training_operator_init_container(master: str) -> dict[str, Any]:
    """manifests/training-operator/initContainer.yaml.tmpl as the training-operator fills it in."""
    text = (MANIFESTS / "training-operator" / "initContainer.yaml.tmpl").read_text()
    for field, value in (("InitContainerImage", "alpine:3.10"), ("MaxTries", "100"), ("MasterAddr", master)):
        text = text.replace("{{." + field + "}}", value)
    containers: list[dict[str, Any]] = yaml.safe_load(text)
    return containers[0]


def refused_containers(cluster: KubeCluster, namespace: str) -> set[str]:
    """The containers named in the Events of pods the API server refused to create in NAMESPACE."""
    names: set[str] = set()
    for event in cluster.list_objects("events", namespace):
        if event.get("reason") in ("FailedCreate", "FailedCreatePod"):
            message = str(event.get("message"))
            assert "PodSecurity" in message, message
            # 'container "a" must ...' or 'containers "a", "b" must ...'
            for group in re.findall(r'containers? ((?:"[^"]+"(?:, | and )?)+)', message):
                names.update(re.findall(r'"([^"]+)"', group))
    return names


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda path: path.name)
def test_every_pod_of_a_run_is_admitted_in_a_restricted_namespace(
    kube_cluster: KubeCluster, restricted_namespace: str, sample: Path
) -> None:
    namespace = restricted_namespace
    children = [into(namespace, child) for child in render(sample)]
    job = next(child for child in children if child["kind"] == "PyTorchJob")
    master = f"{job['metadata']['name']}-master-0"
    # Each pod as a bare Pod: enforce refuses a violating one outright. A Worker also gets the init
    # container the training-operator adds, from the restricted template the README says to give it.
    pods = []
    for name, template in pod_templates(children):
        spec = {**template["spec"], "restartPolicy": "Never"}
        if name.endswith("-worker"):
            spec["initContainers"] = [*spec.get("initContainers", []), training_operator_init_container(master)]
        metadata = {"name": f"{name}-bare", "labels": template.get("metadata", {}).get("labels", {})}
        pods.append({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
    warnings = create(kube_cluster, namespace, pods)
    assert "PodSecurity" not in warnings, warnings
    # The children themselves: the training-operator creates the replica pods and the Job controller the
    # uploader's (the Job's template is also checked on apply, as a warning).
    warnings = create(kube_cluster, namespace, children)
    assert "PodSecurity" not in warnings, warnings
    made = ["master-0", *(["upload"] if any(child["kind"] == "Job" for child in children) else [])]

    def created() -> list[str] | None:
        names = [pod["metadata"]["name"] for pod in kube_cluster.list_objects("pods", namespace)]
        mine = [name for name in names if not name.endswith("-bare")]
        return mine if all(any(part in name for name in mine) for part in made) else None

    wait_until(created, timeout=60, what=f"pods {made} created by the training-operator and the Job controller")
    # The Workers: the training-operator's own built-in init container (init-pytorch, no security
    # context) is refused, and nothing of trainrun's.
    workers = job["spec"]["pytorchReplicaSpecs"].get("Worker", {}).get("replicas", 0)
    if workers:
        wait_until(
            lambda: refused_containers(kube_cluster, namespace) or None,
            timeout=60,
            what="the training-operator's attempt to create a Worker",
        )
    assert refused_containers(kube_cluster, namespace) <= {"init-pytorch"}


def test_the_operators_own_pod_is_admitted_in_a_restricted_namespace(
    kube_cluster: KubeCluster, restricted_namespace: str
) -> None:
    rendered = kube_cluster.kubectl("kustomize", str(MANIFESTS)).stdout
    deployment = next(item for item in yaml.safe_load_all(rendered) if item and item["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "trainrun-operator-admission", "labels": template["metadata"]["labels"]},
        # Its ServiceAccount lives in trainrun-system, not here; admission of the pod does not depend on it.
        "spec": {key: value for key, value in template["spec"].items() if key != "serviceAccountName"},
    }
    # A dry run goes through admission without starting the operator (kwok would only pretend to run it).
    warnings = create(kube_cluster, restricted_namespace, [pod], "--dry-run=server")
    assert "PodSecurity" not in warnings, warnings
