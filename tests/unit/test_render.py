"""spec + pools -> PyTorchJob, volume claim and uploader Job: every spec field lands where it should."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from run_factory import POOLS, pools, training_run
from trainrun.render import (
    expand_references,
    launch_command,
    operator_env,
    render_pytorchjob,
    render_uploader_job,
    render_volume_claim,
)
from trainrun.render.changes import (
    APPLIED_SPEC_ANNOTATION,
    applied_annotation,
    decode_applied_spec,
    pending_changes,
)
from trainrun.render.children import _applied_specs, applied_spec, canonical_spec, changes_since_applied
from trainrun.spec import parse_operator_config


def master(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["pytorchReplicaSpecs"]["Master"]


def container(job: dict[str, Any], replica: str = "Master") -> dict[str, Any]:
    return job["spec"]["pytorchReplicaSpecs"][replica]["template"]["spec"]["containers"][0]


def env_of(job: dict[str, Any], replica: str = "Master") -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container(job, replica)["env"]}


def test_a100_sample_shape() -> None:
    run = training_run(
        resources={"pool": "a100", "gpus": 8, "cpu": 90, "memory": "900Gi"},
        distribution={"workers": 4},
        hyperparameters={"model": "resnet50", "epochs": 90},
    )
    job = render_pytorchjob(run, pools())
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PyTorchJob"
    assert job["metadata"]["name"] == "mnist" and job["metadata"]["namespace"] == "ml"
    assert master(job)["replicas"] == 1
    assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 4
    assert job["spec"]["nprocPerNode"] == "8"
    for replica in ("Master", "Worker"):
        pod = job["spec"]["pytorchReplicaSpecs"][replica]["template"]["spec"]
        assert pod["containers"][0]["name"] == "pytorch"
        assert pod["containers"][0]["resources"]["limits"] == {"cpu": "90", "memory": "900Gi", "nvidia.com/gpu": "8"}
        assert pod["containers"][0]["resources"]["requests"] == pod["containers"][0]["resources"]["limits"]
        assert pod["nodeSelector"] == {"trainrun.dev/pool": "a100"}
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        assert pod["containers"][0]["command"][0] == "torchrun"
        assert "--nproc-per-node=8" in pod["containers"][0]["command"]
    owner = job["metadata"]["ownerReferences"][0]
    assert owner == {
        "apiVersion": "trainrun.dev/v1alpha1",
        "kind": "TrainingRun",
        "name": "mnist",
        "uid": "1234-abcd",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_rendered_job_deserializes_into_the_kubeflow_training_models() -> None:
    from kubeflow.training import models
    from kubeflow.training.api_client import ApiClient

    run = training_run(resources={"pool": "a100", "gpus": 8}, distribution={"workers": 2})
    job = render_pytorchjob(run, pools())

    class Response:
        data = __import__("json").dumps(job)

    model = ApiClient().deserialize(Response(), models.KubeflowOrgV1PyTorchJob)
    assert model.spec.pytorch_replica_specs["Worker"].replicas == 2
    assert model.spec.pytorch_replica_specs["Master"].template.spec.containers[0].name == "pytorch"
    assert model.spec.run_policy.backoff_limit == 3
    assert ApiClient().sanitize_for_serialization(model) == job


def test_launch_through_torchrun_with_the_training_operator_rendezvous() -> None:
    command = launch_command(training_run())
    assert command[:6] == [
        "torchrun",
        "--nnodes=$(PET_NNODES)",
        "--nproc-per-node=1",
        "--node-rank=$(PET_NODE_RANK)",
        "--master-addr=$(PET_MASTER_ADDR)",
        "--master-port=$(PET_MASTER_PORT)",
    ]
    assert command[6:8] == ["-m", "trainrun_trainer"]
    assert "--epochs=5" in command and "--batch-size=16" in command and "--learning-rate=0.001" in command
    assert "--no-pretrained" in command


def test_custom_script_and_command_get_only_extra_flags() -> None:
    script = launch_command(training_run(script="train.py", args=["--fast"], hyperparameters={"extra": {"dropout": "0.1"}}))
    assert script[6:] == ["train.py", "--fast", "--dropout=0.1"]
    command = launch_command(training_run(command=["bash", "run.sh"]))
    assert command[6:] == ["--no-python", "bash", "run.sh"]
    direct = launch_command(training_run(command=["python", "x.py"], launcher="none"))
    assert direct == ["python", "x.py"]


def test_hyperparameters_reach_the_environment() -> None:
    job = render_pytorchjob(training_run(hyperparameters={"model": "cnn", "dataset": "cifar10", "dataDir": "/d"}), pools())
    env = env_of(job)
    assert env["TRAINRUN_MODEL"] == "cnn"
    assert env["TRAINRUN_DATASET"] == "cifar10"
    assert env["TRAINRUN_DATA_DIR"] == "/d"
    assert env["TRAINRUN_EPOCHS"] == "5"
    assert env["OUTPUT_DIR"] == "/outputs"
    assert env["TRAINRUN_RUN_NAME"] == "mnist"


def test_user_env_wins_and_env_from_passes_through() -> None:
    run = training_run(
        env=[{"name": "OUTPUT_DIR", "value": "/mnt/out"}, {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        envFrom=[{"configMapRef": {"name": "settings"}}],
        workingDir="/src",
    )
    job = render_pytorchjob(run, pools())
    env = env_of(job)
    assert env["OUTPUT_DIR"] == "/mnt/out"
    assert env["TOKEN"] == {"secretKeyRef": {"name": "s", "key": "k"}}
    assert container(job)["envFrom"] == [{"configMapRef": {"name": "settings"}}]
    assert container(job)["workingDir"] == "/src"


def test_overrides_merge_over_the_pool() -> None:
    run = training_run(
        resources={
            "pool": "a100",
            "gpus": 4,
            "nodeSelector": {"zone": "eu-1"},
            "tolerations": [{"key": "spot", "operator": "Exists"}],
            "affinity": {"nodeAffinity": {"x": 1}},
            "priorityClassName": "high",
            "gpuResource": "nvidia.com/mig-3g.40gb",
        },
        imagePullSecrets=["regcred"],
        imagePullPolicy="Always",
        podMetadata={"labels": {"team": "vision"}, "annotations": {"note": "x"}},
    )
    template = master(render_pytorchjob(run, pools()))["template"]
    pod = template["spec"]
    assert pod["nodeSelector"] == {"trainrun.dev/pool": "a100", "zone": "eu-1"}
    assert {"key": "spot", "operator": "Exists"} in pod["tolerations"] and len(pod["tolerations"]) == 2
    assert pod["affinity"] == {"nodeAffinity": {"x": 1}}
    assert pod["priorityClassName"] == "high"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["containers"][0]["imagePullPolicy"] == "Always"
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/mig-3g.40gb"] == "4"
    assert template["metadata"]["labels"]["team"] == "vision"
    assert template["metadata"]["labels"]["trainrun.dev/run"] == "mnist"
    assert template["metadata"]["annotations"] == {"note": "x"}


def test_pool_gpu_resource_name_is_used() -> None:
    job = render_pytorchjob(training_run(resources={"pool": "mi300", "gpus": 2}), pools())
    assert container(job)["resources"]["limits"] == {"amd.com/gpu": "2"}


def test_default_pool_applies_without_a_pool() -> None:
    pod = master(render_pytorchjob(training_run(), pools()))["template"]["spec"]
    assert pod["nodeSelector"] == {"trainrun.dev/pool": "cpu"}
    assert "resources" not in pod["containers"][0]


def test_zero_workers_renders_only_a_master() -> None:
    job = render_pytorchjob(training_run(distribution={"workers": 0}), pools())
    assert list(job["spec"]["pytorchReplicaSpecs"]) == ["Master"]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({}, {"backoffLimit": 3, "cleanPodPolicy": "None", "suspend": False}),
        (
            {"backoffLimit": 0, "cleanPodPolicy": "All", "activeDeadlineSeconds": 600, "ttlSecondsAfterFinished": 60, "suspend": True},
            # The job keeps its pods: the operator cleans up (cleanPodPolicy, TTL) once their logs are archived.
            {"backoffLimit": 0, "cleanPodPolicy": "None", "activeDeadlineSeconds": 600, "suspend": True},
        ),
    ],
    ids=["defaults", "the-operator-owns-the-end"],
)
def test_run_policy(policy: dict[str, Any], expected: dict[str, Any]) -> None:
    job = render_pytorchjob(training_run(runPolicy={**policy, "restartPolicy": "ExitCode"}), pools())
    assert job["spec"]["runPolicy"] == expected
    assert master(job)["restartPolicy"] == "ExitCode"


def test_cancel_suspends_the_job_and_a_queued_runs_suspend_is_kueues() -> None:
    assert render_pytorchjob(training_run(cancel=True), pools())["spec"]["runPolicy"]["suspend"] is True
    queued = render_pytorchjob(training_run(resources={"queue": "team-a"}), pools())
    # Kueue's webhook suspends the job at creation and lets it go once admitted: an apply that set it would fight.
    assert "suspend" not in queued["spec"]["runPolicy"]
    assert queued["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"


def test_output_volume_on_the_master_and_scratch_on_workers() -> None:
    run = training_run(output={"uri": "s3://models/mnist", "secretName": "s3", "volume": {"size": "50Gi", "storageClassName": "fast"}})
    job = render_pytorchjob(run, pools())
    master_volumes = master(job)["template"]["spec"]["volumes"]
    worker_volumes = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["volumes"]
    assert {"name": "outputs", "persistentVolumeClaim": {"claimName": "mnist-outputs"}} in master_volumes
    assert {"name": "outputs", "emptyDir": {}} in worker_volumes
    claim = render_volume_claim(run)
    assert claim is not None
    assert claim["metadata"]["name"] == "mnist-outputs"
    assert claim["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "50Gi"}}, "storageClassName": "fast"}
    assert claim["metadata"]["ownerReferences"][0]["uid"] == "1234-abcd"


def test_users_own_claim_is_not_created() -> None:
    run = training_run(output={"uri": "s3://models/x", "volume": {"claimName": "shared"}})
    assert render_volume_claim(run) is None
    assert {"name": "outputs", "persistentVolumeClaim": {"claimName": "shared"}} in master(render_pytorchjob(run, pools()))["template"]["spec"]["volumes"]
    assert render_volume_claim(training_run()) is None


def test_uploader_job() -> None:
    run = training_run(output={"uri": "s3://models/mnist", "secretName": "s3"})
    job = render_uploader_job(run, pools())
    assert job["metadata"]["name"] == "mnist-upload"
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["trainrun", "upload", "/outputs", "s3://models/mnist"]
    assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3"}}]
    assert pod["volumes"][0] == {"name": "outputs", "persistentVolumeClaim": {"claimName": "mnist-outputs"}}
    assert pod["containers"][0]["image"] == "ghcr.io/trainrun/operator:0.1.0"
    # Requests on every container the operator adds: a namespace with a cpu/memory ResourceQuota refuses
    # containers without them, and the run would wait in Uploading for a pod that is never created.
    assert pod["containers"][0]["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}}
    # The lint checks that do not apply to it are named on it (see children.py for why).
    assert job["metadata"]["annotations"] == {
        "kube-score/ignore": "pod-networkpolicy,container-image-pull-policy,container-ephemeral-storage-request-and-limit"
    }
    with pytest.raises(ValueError, match="output.uri"):
        render_uploader_job(training_run(), pools())


def test_uploader_runs_on_the_runs_pool() -> None:
    # It reads the claim the Master wrote, so it goes where the Master went: the pool's nodes, through
    # the pool's taints (a GPU pool's, or a real node's among simulated ones in the tests).
    run = training_run(output={"uri": "s3://models/mnist"}, resources={"pool": "a100", "gpus": 1})
    pod = render_uploader_job(run, pools())["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"trainrun.dev/pool": "a100"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["nodeSelector"] == master(render_pytorchjob(run, pools()))["template"]["spec"]["nodeSelector"]


def test_the_platform_team_sets_the_helper_containers_resources() -> None:
    config = parse_operator_config({**POOLS, "helperResources": {"requests": {"cpu": 1, "memory": "1Gi"}, "limits": {}}})
    run = training_run(output={"uri": "s3://models/mnist"}, inputs=[{"name": "data", "uri": "s3://data/d"}])
    expected = {"requests": {"cpu": "1", "memory": "1Gi"}}
    assert render_uploader_job(run, config)["spec"]["template"]["spec"]["containers"][0]["resources"] == expected
    assert master(render_pytorchjob(run, config))["template"]["spec"]["initContainers"][0]["resources"] == expected
    with pytest.raises(ValueError, match=r"helperResources.requests.memory"):
        parse_operator_config({"helperResources": {"requests": {"memory": "lots"}}})


def test_inputs_and_code_are_staged_by_an_init_container() -> None:
    run = training_run(
        inputs=[{"name": "fashion-mnist", "uri": "s3://data/fmnist"}, {"name": "extra", "uri": "gs://bucket/x", "path": "/data/x"}],
        code={"uri": "s3://code/run-1"},
        output={"secretName": "creds"},
    )
    pod = master(render_pytorchjob(run, pools()))["template"]["spec"]
    init = pod["initContainers"][0]
    assert init["command"] == ["trainrun", "stage-in"]
    assert json.loads(init["env"][0]["value"]) == [
        {"uri": "s3://data/fmnist", "path": "/inputs/fashion-mnist"},
        {"uri": "gs://bucket/x", "path": "/data/x"},
        {"uri": "s3://code/run-1", "path": "/workspace/code"},
    ]
    assert init["envFrom"] == [{"secretRef": {"name": "creds"}}]
    assert init["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}}
    env = env_of({"spec": {"pytorchReplicaSpecs": {"Master": {"template": {"spec": pod}}}}})
    assert env["INPUT_FASHION_MNIST"] == "/inputs/fashion-mnist" and env["INPUT_EXTRA"] == "/data/x"
    assert pod["containers"][0]["workingDir"] == "/workspace/code"


def test_the_stage_in_container_downloads_each_uri_to_its_path_untouched(tmp_path: Path) -> None:
    """URIs and paths may hold spaces, quotes or `$(...)`: `trainrun stage-in`, run with the rendered init
    container's environment, downloads each to its path, and nothing is run."""
    source = tmp_path / "my set" / "it's $(touch pwned) `id`;x"
    source.mkdir(parents=True)
    (source / "data.bin").write_bytes(b"123")
    target = tmp_path / "data with space"
    run = training_run(inputs=[{"name": "odd", "uri": source.as_uri(), "path": str(target)}])
    init = master(render_pytorchjob(run, pools()))["template"]["spec"]["initContainers"][0]
    env = {**os.environ, **{item["name"]: item["value"] for item in init["env"]}}
    done = subprocess.run([sys.executable, "-m", "trainrun.cli", *init["command"][1:]], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (target / "data.bin").read_bytes() == b"123"
    assert not (tmp_path / "pwned").exists()


def test_rendering_is_deterministic() -> None:
    run = training_run(distribution={"workers": 3}, output={"uri": "s3://artifacts/b"})
    assert render_pytorchjob(run, pools()) == render_pytorchjob(run, pools())


def test_operator_env_matches_the_training_operator_contract() -> None:
    env = operator_env(replica_index=2, replica_count=3, nproc_per_node=4, master_addr="job-master-0")
    assert env == {
        "PYTHONUNBUFFERED": "1",
        "MASTER_ADDR": "job-master-0",
        "MASTER_PORT": "23456",
        "PET_MASTER_ADDR": "job-master-0",
        "PET_MASTER_PORT": "23456",
        "WORLD_SIZE": "12",
        "RANK": "2",
        "PET_NODE_RANK": "2",
        "PET_NNODES": "3",
        "PET_NPROC_PER_NODE": "4",
    }


def test_reference_expansion_like_kubernetes() -> None:
    env = {"PET_NNODES": "2"}
    assert expand_references("--nnodes=$(PET_NNODES)", env) == "--nnodes=2"
    assert expand_references("$(UNKNOWN)", env) == "$(UNKNOWN)"
    assert expand_references("$$(PET_NNODES)", env) == "$(PET_NNODES)"


def test_applied_spec_annotation_and_pending_changes() -> None:
    run = training_run(distribution={"workers": 1})
    job = render_pytorchjob(run, pools())
    assert APPLIED_SPEC_ANNOTATION in job["metadata"]["annotations"]
    applied = decode_applied_spec(job)
    assert applied == canonical_spec(run)
    changed = training_run(distribution={"workers": 2}, runPolicy={"suspend": True, "backoffLimit": 9}, image="other:1")
    assert pending_changes(applied, canonical_spec(changed)) == ["spec.distribution.workers", "spec.image"]
    assert decode_applied_spec({"metadata": {"annotations": {APPLIED_SPEC_ANNOTATION: "{broken"}}}) is None
    assert decode_applied_spec({}) is None
    # What a reconcile asks: nothing for the job of the current spec (its annotation read at a glance), the
    # same paths as above for a changed one, and every path of a job whose annotation another version wrote
    # in another layout (decoded and compared field by field, not taken for a change).
    assert changes_since_applied(job, run) == []
    assert changes_since_applied(job, changed) == ["spec.distribution.workers", "spec.image"]
    spaced = {"metadata": {"annotations": {APPLIED_SPEC_ANNOTATION: json.dumps(canonical_spec(run), indent=2)}}}
    assert changes_since_applied(spaced, run) == []
    assert changes_since_applied({}, run) == pending_changes({}, canonical_spec(run)) != []


# Pod Security "restricted" (https://kubernetes.io/docs/concepts/security/pod-security-standards/), as
# the API server's admission checks it: pod-level fields, else the same field on every container.
def restricted_violations(pod: dict[str, Any]) -> list[str]:
    pod_context = pod.get("securityContext") or {}
    found: list[str] = []
    for item in [*pod.get("initContainers", []), *pod["containers"]]:
        context = item.get("securityContext") or {}
        name = item["name"]
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation != false")
        if "ALL" not in (context.get("capabilities") or {}).get("drop", []):
            found.append(f"{name}: capabilities not dropped")
        if set((context.get("capabilities") or {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: capabilities added")
        if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
            found.append(f"{name}: runAsNonRoot != true")
        if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
            found.append(f"{name}: runAsUser 0")
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccomp {seccomp}")
        if context.get("privileged"):
            found.append(f"{name}: privileged")
    for volume in pod.get("volumes", []):
        if not ({"emptyDir", "persistentVolumeClaim", "configMap", "secret", "projected", "downwardAPI"} & volume.keys()):
            found.append(f"volume {volume['name']}: not an allowed type")
    if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
        found.append("host namespaces")
    return found


def every_pod(run: Any, config: Any) -> dict[str, dict[str, Any]]:
    """Every pod spec the operator creates for a run: each replica type, and the uploader."""
    job = render_pytorchjob(run, config)
    pods = {kind: spec["template"]["spec"] for kind, spec in job["spec"]["pytorchReplicaSpecs"].items()}
    if run.spec.output.uri is not None:
        pods["uploader"] = render_uploader_job(run, config)["spec"]["template"]["spec"]
    return pods


FULL_RUN: dict[str, Any] = {
    "resources": {"pool": "a100", "gpus": 8},
    "distribution": {"workers": 2},
    "inputs": [{"name": "data", "uri": "s3://data/d", "path": "/data/d"}],
    "code": {"uri": "s3://code/run-1"},
    "output": {"uri": "s3://models/mnist", "secretName": "s3"},
}


@pytest.mark.parametrize("spec", [{}, {"output": {"uri": "s3://models/mnist"}}, FULL_RUN], ids=["bare", "output", "full"])
def test_every_pod_meets_pod_security_restricted(spec: dict[str, Any]) -> None:
    for kind, pod in every_pod(training_run(**spec), pools()).items():
        assert restricted_violations(pod) == [], kind


def test_helper_containers_are_restricted_with_a_read_only_root() -> None:
    pods = every_pod(training_run(**FULL_RUN), pools())
    helpers = [pods["uploader"]["containers"][0], pods["Master"]["initContainers"][0], pods["Worker"]["initContainers"][0]]
    for helper in helpers:
        assert helper["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": 10001,  # the operator image's user (images/operator/Dockerfile)
            "runAsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        # The only writable places: its mounts, /tmp among them.
        assert {"name": "helper-tmp", "mountPath": "/tmp"} in helper["volumeMounts"]
    for pod in pods.values():
        assert {"name": "helper-tmp", "emptyDir": {"sizeLimit": "1Gi"}} in pod["volumes"]
    assert pods["uploader"]["automountServiceAccountToken"] is False
    assert "helper-tmp" not in [volume["name"] for volume in every_pod(training_run(), pools())["Master"]["volumes"]]


def test_baseline_replica_security_lets_images_run_as_root() -> None:
    config = parse_operator_config({**POOLS, "replicaSecurity": "baseline"})
    pods = every_pod(training_run(**FULL_RUN), config)
    assert container({"spec": {"pytorchReplicaSpecs": {"Master": {"template": {"spec": pods["Master"]}}}}})[
        "securityContext"
    ] == {"allowPrivilegeEscalation": False, "seccompProfile": {"type": "RuntimeDefault"}}
    # The helpers stay restricted whatever the replicas are.
    assert restricted_violations(pods["uploader"]) == []
    assert pods["Master"]["initContainers"][0]["securityContext"]["runAsNonRoot"] is True
    with pytest.raises(ValueError, match="replicaSecurity"):
        parse_operator_config({"replicaSecurity": "privileged"})


def test_a_run_references_only_objects_of_its_own_namespace() -> None:
    """Secrets, claims and ConfigMaps are referenced by name alone: they resolve in the run's namespace."""
    run = training_run(
        **FULL_RUN,
        envFrom=[{"secretRef": {"name": "extra"}}],
        env=[{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "t"}}}],
    )
    config = pools()
    claim = render_volume_claim(run)
    assert claim is not None
    children = [render_pytorchjob(run, config), claim, render_uploader_job(run, config)]
    assert {child["metadata"]["namespace"] for child in children} == {"ml"}

    def references(value: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("secretRef", "secretKeyRef", "configMapRef", "persistentVolumeClaim"):
                    found.append(item)
                found.extend(references(item))
        elif isinstance(value, list):
            for item in value:
                found.extend(references(item))
        return found

    found = references(children)
    assert len(found) >= 6
    assert all("namespace" not in item for item in found)


def test_a_runs_applied_spec_is_encoded_once_and_goes_with_the_run() -> None:
    """Every pass asks whether the job has changes to apply, by the run's encoded canonical spec: it is encoded
    once per parsed run, equal to a fresh encoding, what the rendered job's annotation says, and forgotten with
    the run."""
    run, other = training_run(image="ghcr.io/acme/trainer:1.0"), training_run(image="ghcr.io/acme/trainer:2.0")
    assert applied_spec(run) is applied_spec(run)
    assert applied_spec(run) == json.dumps(canonical_spec(run), sort_keys=True, separators=(",", ":")) != applied_spec(other)
    rendered = render_pytorchjob(run, pools())
    assert applied_annotation(rendered) == applied_spec(run)
    assert changes_since_applied(rendered, other) == ["spec.image"]
    held = len(_applied_specs)
    del run, other, rendered
    gc.collect()
    assert len(_applied_specs) == held - 2
