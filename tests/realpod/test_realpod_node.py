"""The real node itself (tests/cluster/node.sh), on a cluster of its own: what pods get, and what it leaves.

A pod on it resolves Services by name through CoreDNS and reaches the API server through the
kubernetes Service with its ServiceAccount token (what the operator in a pod needs); after
`node.sh down` no process, mount, bridge, iptables rule or cgroup of the node is left, and the kernel
settings the kubelet changed are back once no real node runs. Only the small images are imported.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cluster.harness import (
    CLUSTER_SCRIPTS_DIR,
    REAL_NODE,
    REAL_NODE_TOLERATION,
    REAL_POOL,
    node_images,
    script_env,
    start_cluster,
    stop_cluster,
    wait_until,
)
from realpods import REALPOD_TIMEOUT, require_real_node

pytestmark = [pytest.mark.realpod, pytest.mark.timeout(REALPOD_TIMEOUT), pytest.mark.cluster]

SYSCTLS = ("kernel.panic", "kernel.panic_on_oops", "vm.overcommit_memory", "net.ipv4.ip_forward")
POD_SCRIPT = """
set -e
nslookup kubernetes.default.svc.cluster.local
token=$(cat /var/run/secrets/kubernetes.io/serviceaccount/token)
python3 - "$token" <<'EOF'
import json, os, ssl, sys, urllib.request
context = ssl.create_default_context(cafile="/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
url = f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}/version"
request = urllib.request.Request(url, headers={"Authorization": "Bearer " + sys.argv[1]})
print("apiserver", json.load(urllib.request.urlopen(request, context=context))["gitVersion"])
EOF
"""


def sysctl(name: str) -> str:
    return subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, check=True).stdout.strip()


def node_leftovers(state_dir: Path, containerd_root: Path, bridge: str, chain: str, cgroup: str) -> list[str]:
    """Everything of one node still on the machine: processes, mounts (below its folder or its
    containerd root, which may be the images kept for the next node), its bridge, chain and cgroups."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(state_dir) in command:
                found.append(f"process {proc.name}: {command[:120]}")
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    found += [f"mount {mount}" for mount in mounts if mount.startswith((f"{state_dir}/", f"{containerd_root}/"))]
    if subprocess.run(["ip", "link", "show", bridge], capture_output=True, check=False).returncode == 0:
        found.append(f"bridge {bridge}")
    rules = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True, check=True).stdout
    found += [f"iptables {line}" for line in rules.splitlines() if chain in line]
    found += [f"cgroup {path}" for path in Path("/sys/fs/cgroup").glob(f"*/{cgroup}")]
    return found


def test_a_real_node_serves_dns_and_the_api_server_to_pods_and_leaves_nothing() -> None:
    require_real_node()
    images = [path for path in node_images() if Path(path).name in ("pause", "debian")]
    cluster = start_cluster()
    stopped = False
    try:
        clusters_dir = cluster.state_dir.parent
        record = clusters_dir / ".real-node-sysctls"
        others_first = record.exists()  # another cluster's real node runs: it recorded the settings
        before = {name: sysctl(name) for name in SYSCTLS}
        node_up = subprocess.run(["bash", str(CLUSTER_SCRIPTS_DIR / "node.sh"), "up", cluster.name, *images], check=False,
                                 env=script_env())
        assert node_up.returncode == 0
        state_dir = cluster.state_dir
        index = (state_dir / "node" / "index").read_text().strip()
        containerd_root = Path((state_dir / "node" / "containerd-root").read_text().strip())
        recorded = dict(line.split("=", 1) for line in record.read_text().split())
        if not others_first:
            assert {name: recorded[name] for name in SYSCTLS} == before
        node = cluster.get("node", REAL_NODE)
        assert node is not None
        assert node["metadata"]["labels"]["trainrun.dev/pool"] == REAL_POOL
        assert node["spec"]["taints"] == [{"key": "trainrun.dev/real-node", "value": "true", "effect": "NoSchedule"}]

        cluster.create_namespace("probe")
        cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "probe", "namespace": "probe"},
                "spec": {
                    "nodeSelector": {"trainrun.dev/pool": REAL_POOL},
                    "tolerations": [REAL_NODE_TOLERATION],
                    "restartPolicy": "Never",
                    "containers": [{"name": "probe", "image": "trainrun.local/debian:bookworm", "command": ["bash", "-c", POD_SCRIPT]}],
                },
            }
        )

        def ended() -> str | None:
            pod = cluster.get("pod", "probe", "probe")
            phase = pod["status"].get("phase") if pod else None
            return phase if phase in ("Succeeded", "Failed") else None

        phase = wait_until(ended, timeout=120, what="the probe pod to end")
        logs = cluster.kubectl("logs", "probe", "-n", "probe").stdout
        assert phase == "Succeeded", logs
        assert "Address: 10.0.0.1" in logs and "apiserver v1." in logs, logs

        stopped = True
        stop_cluster(cluster.name)
        leftovers = node_leftovers(state_dir, containerd_root, f"trn{index}", f"TRAINRUN-NODE-{index}", f"trainrun.{cluster.name}")
        assert not leftovers, leftovers
        if any((folder / "node").exists() for folder in clusters_dir.iterdir() if folder.is_dir()):
            assert record.exists()  # another real node runs: the settings come back when the last one stops
        else:
            assert {name: sysctl(name) for name in SYSCTLS} == {name: recorded[name] for name in SYSCTLS}
            assert not record.exists()
    finally:
        if not stopped:
            stop_cluster(cluster.name)
