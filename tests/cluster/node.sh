#!/usr/bin/env bash
# A real node for a running test cluster: Debian's containerd + runc and the CNI bridge plugin, a
# kubelet built at KUBE_VERSION (build.sh), CoreDNS as cluster DNS, and the `kubernetes` Service
# reachable from pods. It joins beside the kwok nodes, which kwok alone manages (nodes.yaml).
#
# Called by: up.sh (--real-node), down.sh (every cluster), tests/cluster/harness.py, developers.
# Usage: node.sh up NAME [LAYOUT...]    add the node to cluster NAME, after importing the images of
#                                       the OCI layouts (folders images.sh writes)
#        node.sh down NAME              stop it (a no-op when the cluster has none)
#
# The node: name `real-0`, label trainrun.dev/pool=real, taint trainrun.dev/real-node=true:NoSchedule
# (pods must tolerate it and select the pool). Its pod network is 10.213.<i>.0/24 on the bridge
# trn<i> (i unique on this machine), the bridge holding .1: the node's InternalIP, where the kubelet,
# CoreDNS (the pods' nameserver) and a proxy to the API server listen. A pod reaches the API server
# through the `kubernetes` Service's ClusterIP: a DNAT rule of the chain TRAINRUN-NODE-<i> (nat
# PREROUTING, this bridge only) sends it to that proxy, the one ClusterIP pods here need (no
# kube-proxy: training pods find each other through headless Services, which DNS answers with pod
# IPs). Needs root and the Debian packages containerd, runc, containernetworking-plugins, iptables,
# socat (tests/run.sh installs them).
#
# Everything of the node lives under <cluster>/node/ and cgroup trainrun.<NAME>; down removes it all:
# pods, shims, mounts, network namespaces, the bridge, the iptables chain, the cgroups. One thing is
# kept: the images. containerd's root (content and unpacked layers, no containers) is
# $TRAINRUN_CACHE/node-containerd, so the next node imports only the layers it lacks (seconds, not the
# minutes 6 GB take); the running node's processes hold its lock, and a node started while another
# holds it gets a root of its own under <cluster>/node/, removed with it. The kernel
# settings the kubelet and the bridge plugin change (kernel.panic, kernel.panic_on_oops,
# vm.overcommit_memory, vm.panic_on_oom, kernel.keys.*, net.ipv4.ip_forward) are put back when the
# last real node on this machine stops, to what they were before the first started.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$SCRIPT_DIR/common.sh"

NODE_NAME=real-0
SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward)
# Machine-wide (beside every cluster's folder, whichever cache started it): the kernel settings from
# before the first real node, and the lock guarding them and the choice of network indexes.
SYSCTL_SAVE="$CLUSTERS_DIR/.real-node-sysctls"
NODE_LOCK="$CLUSTERS_DIR/.real-node.lock"
CGROUP_FS=/sys/fs/cgroup
SHARED_CONTAINERD_ROOT="$CACHE_DIR/node-containerd"

node_paths() {
  cluster_paths "$1"
  NODE_DIR="$STATE_DIR/node"
  CGROUP_ROOT="/trainrun.$1"
}

say() { printf '[node %s +%ss] %s\n' "$NAME" "$((SECONDS - START))" "$*" >&2; }

# Network index i of this node: the lowest not used by another cluster's node nor by a link.
allocate_index() {
  local i used
  for ((i = 1; i < 250; i++)); do
    used=false
    for f in "$CLUSTERS_DIR"/*/node/index; do
      [[ -s "$f" && "$(cat "$f")" == "$i" ]] && used=true
    done
    $used || ip link show "trn$i" >/dev/null 2>&1 || { echo "$i"; return; }
  done
  echo "node.sh: no free pod network index" >&2
  return 1
}

# The v1 hierarchies (and the unified one) this machine mounts, one path per line.
cgroup_hierarchies() {
  local dir
  for dir in "$CGROUP_FS"/*/; do
    dir="${dir%/}"
    [[ -e "$dir/cgroup.procs" && ! -L "$dir" ]] && echo "$dir"
  done
}

running_nodes() {
  local f count=0
  for f in "$CLUSTERS_DIR"/*/node/kubelet.pid; do
    [[ -s "$f" ]] && is_running "$(cat "$f")" && count=$((count + 1))
  done
  echo "$count"
}

# Waits until COMMAND succeeds (90 s at most) while process PID runs; else shows the end of its LOG.
wait_for() {
  local what="$1" pid="$2" log="$3" deadline=$((SECONDS + 90))
  shift 3
  until "$@" >/dev/null 2>&1; do
    if ! is_running "$pid" || ((SECONDS > deadline)); then
      echo "node.sh: $what did not start; last lines of $log:" >&2
      tail -n 30 "$log" >&2
      return 1
    fi
    sleep 0.2
  done
}

node_ready() {
  kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -q True
}

write_containerd_config() {
  cat <<EOF
version = 2
root = "$CONTAINERD_ROOT"
state = "$NODE_DIR/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$NODE_DIR/containerd.sock"
[ttrpc]
  address = "$NODE_DIR/containerd.sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE_DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # root here lacks CAP_SYS_RESOURCE: runc cannot lower a sandbox's oom_score_adj to -998.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_DIR/cni"
EOF
}

write_cni_config() {
  cat <<EOF
{
  "cniVersion": "0.4.0",
  "name": "trainrun-$NAME",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$NODE_DIR/cni-ipam",
              "ranges": [[{"subnet": "$SUBNET", "gateway": "$NODE_IP"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "loopback"}
  ]
}
EOF
}

write_kubelet_config() {
  cat <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzPort: 0
# Kubernetes >= 1.35 refuses cgroup v1 unless told; this machine is cgroup v1 (hybrid).
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: $CGROUP_ROOT
failSwapOn: false
protectKernelDefaults: false
makeIPTablesUtilChains: false
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
clusterDomain: cluster.local
clusterDNS: [$NODE_IP]
resolvConf: $NODE_DIR/resolv.conf
podCIDR: $SUBNET
podLogsDir: $NODE_DIR/pod-logs
volumePluginDir: $NODE_DIR/kubelet/volume-plugins
staticPodPath: ""
# Images are imported, never pulled: none may be collected. Nor does the disk evict ("0%": no threshold):
# the eviction manager's reclaim deletes every image no running pod uses, whatever the GC thresholds say,
# and on a machine whose disk others fill too, a dip under 1% free took the node's 6 GB of images away
# (and tainted it DiskPressure, so the next run's pods stayed Pending).
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: "0%", imagefs.available: "0%", nodefs.inodesFree: "0%"}
registerWithTaints:
- {key: trainrun.dev/real-node, value: "true", effect: NoSchedule}
containerRuntimeEndpoint: unix://$NODE_DIR/containerd.sock
imageServiceEndpoint: unix://$NODE_DIR/containerd.sock
EOF
}

write_corefile() {
  cat <<EOF
.:53 {
    bind $NODE_IP
    errors
    ready $NODE_IP:$DNS_READY_PORT
    cache 5
    kubernetes cluster.local {
        kubeconfig $KUBECONFIG_PATH
    }
}
EOF
}

# Only containerd (and its shims) may inherit fd 8, the image store's lock: not a ctr that outlives
# a node.sh killed while it imports.
ctr_k8s() { ctr --address "$NODE_DIR/containerd.sock" -n k8s.io "$@" 8>&-; }

# CONTAINERD_ROOT: the shared root when its lock is free (fd 8 holds it, and every process of
# containerd inherits it, so it is held until the last shim exits), else one under NODE_DIR.
choose_containerd_root() {
  mkdir -p "$CACHE_DIR"
  exec 8>"$SHARED_CONTAINERD_ROOT.lock"
  if flock -n 8; then
    CONTAINERD_ROOT="$SHARED_CONTAINERD_ROOT"
  else
    exec 8>&-
    CONTAINERD_ROOT="$NODE_DIR/containerd/root"
  fi
  echo "$CONTAINERD_ROOT" >"$NODE_DIR/containerd-root"
}

start_containerd() {
  write_containerd_config >"$NODE_DIR/containerd.toml"
  setsid containerd --config "$NODE_DIR/containerd.toml" >>"$NODE_DIR/containerd.log" 2>&1 </dev/null &
  echo $! >"$NODE_DIR/containerd.pid"
  wait_for containerd "$!" "$NODE_DIR/containerd.log" test -S "$NODE_DIR/containerd.sock"
}

# Imports the image of an OCI layout, sending only the blobs this containerd does not hold yet:
# the index and, after a package change, the trainer's top layer, not its 5.5 GB PyTorch layer.
# Each of them is first hard-linked into containerd's content store (the layout is on the same
# filesystem): containerd still receives the data (`ctr images import` names no digest ahead), but
# finding the blob in its store it drops what it received, so a first import keeps the unpacked
# layers only (about 6 GB) and not a second copy of the layers beside them (12 GB in all, more than a
# test machine may have free). Where no link can be made, containerd keeps its copy as before.
import_layout() {
  local layout="$1" blobs blob size=0 store="$CONTAINERD_ROOT/io.containerd.content.v1.content/blobs/sha256"
  [[ -s "$layout/index.json" ]] || { echo "node.sh: $layout is not an OCI image layout (images.sh writes them)" >&2; return 1; }
  mapfile -t blobs < <(ctr_k8s content ls -q | python3 "$SCRIPT_DIR/oci_layout.py" missing "$layout")
  ((${#blobs[@]} == 0)) || size="$(cd "$layout" && du -ch "${blobs[@]}" | tail -n1 | cut -f1)"
  mkdir -p "$store"
  for blob in "${blobs[@]}"; do
    [[ "$blob" == blobs/sha256/* ]] && ln "$layout/$blob" "$store/${blob##*/}" 2>/dev/null || true
  done
  say "importing $(basename "$layout"): ${#blobs[@]} blobs ($size) it lacks"
  # containerd, finding a blob it has just received already in its store (the link above), links it
  # anew: the layout's file is the same inode, so its ctime moves, and tar, seeing that after reading it,
  # says "file changed as we read it" and exits 1. The bytes are the same (content-addressed, and checked
  # by containerd against their digest), so that exit is not a failure; any other is.
  local statuses
  set +e
  tar -C "$layout" --warning=no-file-changed -cf - oci-layout index.json "${blobs[@]}" 8>&- | ctr_k8s images import - >/dev/null
  statuses=("${PIPESTATUS[@]}")
  set -e
  if ((statuses[0] > 1 || statuses[1] != 0)); then
    echo "node.sh: importing $layout failed (tar exit ${statuses[0]}, ctr exit ${statuses[1]})" >&2
    return 1
  fi
}

# Kills and deletes every container and sandbox of this node's containerd (the shims exit with
# them), then unmounts and removes their network namespaces (bind mounts outside the node's folder).
delete_containers() {
  local id path netns=()
  for id in $(ctr_k8s containers ls -q 2>/dev/null); do
    path="$(ctr_k8s containers info "$id" 2>/dev/null |
      python3 -c 'import json,sys; s=json.load(sys.stdin).get("Spec") or {}; print(next((n.get("path","") for n in s.get("linux",{}).get("namespaces",[]) if n.get("type")=="network"), ""))' 2>/dev/null || true)"
    [[ -n "$path" ]] && netns+=("$path")
    ctr_k8s tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
  done
  sleep 0.5
  for id in $(ctr_k8s containers ls -q 2>/dev/null); do
    ctr_k8s tasks delete -f "$id" >/dev/null 2>&1 || true
    ctr_k8s containers delete "$id" >/dev/null 2>&1 || true
  done
  for path in "${netns[@]}"; do
    umount "$path" 2>/dev/null || true
    rm -f "$path"
  done
}

node_up() {
  local index
  require_binaries
  require_kubectl
  for file in "$KUBELET" "$COREDNS"; do
    [[ -x "$file" ]] || { echo "node.sh: missing $file (run tests/cluster/build.sh)" >&2; return 1; }
  done
  for tool in containerd ctr runc socat iptables ip; do
    command -v "$tool" >/dev/null || { echo "node.sh: $tool not found (apt-get install containerd runc containernetworking-plugins iptables socat)" >&2; return 1; }
  done
  [[ -x /usr/lib/cni/bridge ]] || { echo "node.sh: no CNI plugins in /usr/lib/cni (apt-get install containernetworking-plugins)" >&2; return 1; }
  [[ -s "$KUBECONFIG_PATH" ]] || { echo "node.sh: cluster $NAME is not running (no $KUBECONFIG_PATH)" >&2; return 1; }
  [[ ! -e "$NODE_DIR" ]] || { echo "node.sh: $NODE_DIR exists: run node.sh down $NAME first" >&2; return 1; }
  export KUBECONFIG="$KUBECONFIG_PATH"
  mkdir -p "$NODE_DIR"/{containerd,cni,cni-ipam,pod-logs,kubelet}

  (
    flock 9
    index="$(allocate_index)"
    echo "$index" >"$NODE_DIR/index"
    if [[ "$(running_nodes)" == 0 ]]; then
      for key in "${SYSCTLS[@]}"; do echo "$key=$(sysctl -n "$key")"; done >"$SYSCTL_SAVE"
    fi
  ) 9>"$NODE_LOCK"
  # kubelet.pid marks a node that counts as running from here on (down reads it).
  echo 0 >"$NODE_DIR/kubelet.pid"
  node_vars
  say "pod network $SUBNET on $BRIDGE, node IP $NODE_IP"

  ip link add "$BRIDGE" type bridge
  ip addr add "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  write_cni_config >"$NODE_DIR/cni/10-trainrun.conflist"
  : >"$NODE_DIR/resolv.conf"

  local hierarchy
  while read -r hierarchy; do
    mkdir -p "$hierarchy$CGROUP_ROOT"
    if [[ -e "$hierarchy/cpuset.cpus" ]]; then
      cat "$hierarchy/cpuset.cpus" >"$hierarchy$CGROUP_ROOT/cpuset.cpus"
      cat "$hierarchy/cpuset.mems" >"$hierarchy$CGROUP_ROOT/cpuset.mems"
    fi
  done < <(cgroup_hierarchies)

  choose_containerd_root
  say "starting containerd (root $CONTAINERD_ROOT)"
  start_containerd
  if [[ -n "$(ctr_k8s containers ls -q)" ]]; then
    # A node that stopped without node.sh down left containers: deleted, then containerd restarted
    # so that its CRI plugin does not remember them.
    say "deleting containers an earlier node left in $CONTAINERD_ROOT"
    delete_containers
    stop_pid_file "$NODE_DIR/containerd.pid"
    start_containerd
  fi
  local layout
  for layout in "$@"; do
    import_layout "$layout"
  done
  if ! ctr_k8s images check "name==$PAUSE_IMAGE" | grep -q complete; then
    echo "node.sh: the sandbox image $PAUSE_IMAGE was not among the images imported (images.sh makes it)" >&2
    return 1
  fi

  say "starting the API server proxy and CoreDNS"
  local server host_port
  server="$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
  host_port="${server#https://}"
  setsid socat "TCP-LISTEN:$API_PROXY_PORT,bind=$NODE_IP,reuseaddr,fork" "TCP:$host_port" \
    >"$NODE_DIR/api-proxy.log" 2>&1 </dev/null 8>&- &
  echo $! >"$NODE_DIR/api-proxy.pid"
  local service_ip
  service_ip="$(kubectl get service kubernetes -n default -o jsonpath='{.spec.clusterIP}')"
  iptables -t nat -N "$CHAIN"
  iptables -t nat -A "$CHAIN" -d "$service_ip/32" -p tcp --dport 443 -j DNAT --to-destination "$NODE_IP:$API_PROXY_PORT"
  iptables -t nat -A PREROUTING -i "$BRIDGE" -j "$CHAIN"
  write_corefile >"$NODE_DIR/Corefile"
  setsid "$COREDNS" -conf "$NODE_DIR/Corefile" >"$NODE_DIR/coredns.log" 2>&1 </dev/null 8>&- &
  echo $! >"$NODE_DIR/coredns.pid"

  say "starting the kubelet (log: $NODE_DIR/kubelet.log)"
  write_kubelet_config >"$NODE_DIR/kubelet.yaml"
  setsid "$KUBELET" --config "$NODE_DIR/kubelet.yaml" --kubeconfig "$KUBECONFIG_PATH" \
    --root-dir "$NODE_DIR/kubelet/root" --cert-dir "$NODE_DIR/kubelet/pki" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
    --node-labels "trainrun.dev/pool=real,type=real" \
    >"$NODE_DIR/kubelet.log" 2>&1 </dev/null 8>&- &
  echo $! >"$NODE_DIR/kubelet.pid"
  wait_for "the kubelet (node $NODE_NAME Ready)" "$(cat "$NODE_DIR/kubelet.pid")" "$NODE_DIR/kubelet.log" node_ready
  wait_for CoreDNS "$(cat "$NODE_DIR/coredns.pid")" "$NODE_DIR/coredns.log" curl -fs "http://$NODE_IP:$DNS_READY_PORT/ready"
  say "node $NODE_NAME Ready"
}

# Names derived from the index: BRIDGE, SUBNET, NODE_IP, CHAIN and the ports.
node_vars() {
  local index
  index="$(cat "$NODE_DIR/index")"
  BRIDGE="trn$index"
  SUBNET="10.213.$index.0/24"
  NODE_IP="10.213.$index.1"
  CHAIN="TRAINRUN-NODE-$index"
  # Every listener binds NODE_IP, unique to this node, so fixed ports never collide.
  KUBELET_PORT=10250
  API_PROXY_PORT=6443
  DNS_READY_PORT=8181
}

# Every mount point at or below DIR, deepest first.
mounts_below() {
  awk -v dir="$1" '$5 == dir || index($5, dir "/") == 1 {print $5}' /proc/self/mountinfo | sort -r
}

node_down() {
  [[ -d "$NODE_DIR" ]] || return 0
  local start=$SECONDS sock="$NODE_DIR/containerd.sock" root=""
  export KUBECONFIG="$KUBECONFIG_PATH"
  # The kubelet first, so nothing restarts what is stopped next.
  stop_pid_file "$NODE_DIR/kubelet.pid"
  [[ -S "$sock" ]] && delete_containers
  stop_pid_file "$NODE_DIR/containerd.pid"
  # Whatever is still in the node's cgroups (a shim, a container process) is killed.
  local hierarchy pid
  while read -r hierarchy; do
    [[ -d "$hierarchy$CGROUP_ROOT" ]] || continue
    for pid in $(find "$hierarchy$CGROUP_ROOT" -name cgroup.procs -exec cat {} + 2>/dev/null); do
      kill -KILL "$pid" 2>/dev/null || true
    done
  done < <(cgroup_hierarchies)
  for pid in $(pgrep -f -- "-address $sock" || true); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  stop_pid_file "$NODE_DIR/coredns.pid"
  stop_pid_file "$NODE_DIR/api-proxy.pid"

  # Mounts below the node's folder and its containerd root (the pods' /dev/shm are there); what
  # containerd kept of its pods' sandboxes in a shared root goes (their containers are deleted).
  [[ -s "$NODE_DIR/containerd-root" ]] && root="$(cat "$NODE_DIR/containerd-root")"
  local mount
  for mount in $(mounts_below "$NODE_DIR") ${root:+$(mounts_below "$root")}; do
    umount "$mount" 2>/dev/null || umount -l "$mount" 2>/dev/null || true
  done
  [[ -n "$root" ]] && rm -rf "$root/io.containerd.grpc.v1.cri/sandboxes" "$root/io.containerd.grpc.v1.cri/containers"
  # Cgroups, deepest first, once their processes are gone.
  while read -r hierarchy; do
    [[ -d "$hierarchy$CGROUP_ROOT" ]] || continue
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      find "$hierarchy$CGROUP_ROOT" -depth -type d -exec rmdir {} + 2>/dev/null || true
      [[ -d "$hierarchy$CGROUP_ROOT" ]] || break
      sleep 0.2
    done
  done < <(cgroup_hierarchies)

  if [[ -s "$NODE_DIR/index" ]]; then
    node_vars
    while iptables -t nat -D PREROUTING -i "$BRIDGE" -j "$CHAIN" 2>/dev/null; do :; done
    iptables -t nat -F "$CHAIN" 2>/dev/null || true
    iptables -t nat -X "$CHAIN" 2>/dev/null || true
    ip link del "$BRIDGE" 2>/dev/null || true
  fi
  rm -rf "$NODE_DIR"
  (
    flock 9
    if [[ -s "$SYSCTL_SAVE" && "$(running_nodes)" == 0 ]]; then
      while IFS='=' read -r key value; do
        sysctl -q -w "$key=$value" >/dev/null || echo "node.sh: could not restore $key=$value" >&2
      done <"$SYSCTL_SAVE"
      rm -f "$SYSCTL_SAVE"
    fi
  ) 9>"$NODE_LOCK"
  echo "[node $NAME] stopped in $((SECONDS - start))s" >&2
}

START=$SECONDS
case "${1:-}" in
  up | down)
    [[ $# -ge 2 ]] || { echo "usage: $0 up NAME [ARCHIVE...] | down NAME" >&2; exit 2; }
    command="$1" NAME="$2"
    shift 2
    node_paths "$NAME"
    if [[ "$command" == up ]]; then
      trap 'status=$?; ((status == 0)) || { say "FAILED (exit $status); stopping what was started"; node_down || true; }' EXIT
      node_up "$@"
      trap - EXIT
    else
      node_down
    fi
    ;;
  *)
    echo "usage: $0 up NAME [ARCHIVE...] | down NAME" >&2
    exit 2
    ;;
esac
