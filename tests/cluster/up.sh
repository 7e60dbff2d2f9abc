#!/usr/bin/env bash
# Starts a local Kubernetes control plane for the tests, with no Docker, and prints the path of
# its kubeconfig on the LAST line of stdout (everything else goes to stderr).
#
# Called by: tests/cluster/harness.py (the pytest fixture kube_cluster) and developers by hand.
# Stop it with tests/cluster/down.sh NAME.
#
# What runs, all as plain processes bound to 127.0.0.1 (ports picked free by kwokctl):
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok  (kwokctl, binary runtime)
#   training-operator (PyTorchJob only)                                  (background process)
#   supervise.py: starts the controllers again when they exit            (background process)
#   only when TRAINRUN_CLUSTER_ADDONS asks (addons.sh):                  (background processes)
#     trainer: JobSet and Kubeflow Trainer v2 controllers;  kueue: Kueue
# What it creates: the PyTorchJob CRD, this repo's CRDs (crds/*.yaml), the simulated node pools
# (nodes.yaml), the namespaces kubeflow and trainrun-system, the operator config ConfigMap
# (manifests/base/config.yaml); with add-ons their CRDs and webhook configurations, for trainer the
# ClusterTrainingRuntime of manifests/trainer-v2, for kueue the namespace kueue-system. Pod behaviour
# comes from stages.yaml.
#
# Usage: tests/cluster/up.sh [NAME]     NAME defaults to trainrun-<random>.
# Environment:
#   TRAINRUN_CACHE        where build.sh put the binaries (default ~/.cache/trainrun)
#   TRAINRUN_CLUSTER_DIR  parent of the per-cluster state folder (default ${TMPDIR:-/tmp}/trainrun-clusters)
#   TRAINRUN_CLUSTER_OWNER_PID  the process whose death makes the cluster "abandoned" for
#                         `down.sh --abandoned` (default: the caller of up.sh)
#   TRAINRUN_VENV_BIN     folder with the kubectl to use (default: $VIRTUAL_ENV/bin, else <repo>/.venv/bin, else PATH)
#   TRAINRUN_CRDS_DIR     this project's CRDs, a kustomization or *.yaml (default <repo>/crds)
#   TRAINRUN_CLUSTER_ADDONS  add-ons to start: words 'trainer' and/or 'kueue' (default: none)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$SCRIPT_DIR/common.sh"

NAME="${1:-trainrun-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')}"
cluster_paths "$NAME"
# shellcheck source=addons.sh source-path=SCRIPTDIR
source "$SCRIPT_DIR/addons.sh"
START=$SECONDS
say() { printf '[up %s +%ss] %s\n' "$NAME" "$((SECONDS - START))" "$*" >&2; }

addons_line="$(addon_components)"
read -ra ADDONS <<<"$addons_line"
require_binaries
require_addon_binaries "${ADDONS[@]}"
require_kubectl

if [[ -e "$STATE_DIR" ]]; then
  echo "up.sh: $STATE_DIR already exists: cluster $NAME is running or was not stopped; run tests/cluster/down.sh $NAME" >&2
  exit 1
fi
mkdir -p "$STATE_DIR" "$KWOK_WORKDIR"
echo "${TRAINRUN_CLUSTER_OWNER_PID:-$PPID}" >"$OWNER_PID_FILE"

# Anything that fails from here on must not leave processes behind; the logs are kept.
on_exit() {
  local status=$?
  ((status == 0)) && return
  local kept="$CLUSTERS_DIR-failed/$NAME"
  rm -rf "$kept"
  mkdir -p "$kept"
  cp -r "$STATE_DIR"/*.log "$STATE_DIR/kwokctl.yaml" "$KWOK_WORKDIR/clusters/$NAME/logs" "$kept/" 2>/dev/null || true
  say "FAILED (exit $status); logs kept in $kept; stopping what was started"
  "$SCRIPT_DIR/down.sh" "$NAME" >&2 || true
}
trap on_exit EXIT

write_kwokctl_config() {
  cat <<EOF
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  runtime: binary
  bindAddress: 127.0.0.1
  kubeVersion: $KUBE_VERSION
  etcdBinary: $BIN_DIR/etcd-$ETCD_VERSION/etcd
  kubeApiserverBinary: $BIN_DIR/kubernetes-$KUBE_VERSION/kube-apiserver
  kubeControllerManagerBinary: $BIN_DIR/kubernetes-$KUBE_VERSION/kube-controller-manager
  kubeSchedulerBinary: $BIN_DIR/kubernetes-$KUBE_VERSION/kube-scheduler
  kwokControllerBinary: $BIN_DIR/kwok-$KWOK_VERSION/kwok
  kubectlBinary: $KUBECTL
  # The kubernetes Service's ClusterIP: pods of a real node (node.sh) reach the API server there.
  kubeApiserverCertSANs: [10.0.0.1]
  # Logs: tests point a pod's container at a log file while the cluster runs.
  enableCRDs:
  - Logs
  - ClusterLogs
# kwok manages only the nodes annotated kwok.x-k8s.io/node=fake (nodes.yaml), so a real kubelet's node
# can join the cluster beside them; the API server reaches a real kubelet by its InternalIP.
componentsPatches:
- name: kwok-controller
  extraArgs:
  - {key: manage-all-nodes, value: "false", override: true}
  - {key: manage-nodes-with-annotation-selector, value: kwok.x-k8s.io/node=fake}
- name: kube-apiserver
  extraArgs:
  - {key: kubelet-preferred-address-types, value: "InternalIP,Hostname"}
---
EOF
  cat "$SCRIPT_DIR/stages.yaml"
}
write_kwokctl_config >"$STATE_DIR/kwokctl.yaml"

# kwokctl picks free ports by probing them; two clusters created at the same moment could pick
# the same ones, so creations are serialized across sessions on this machine. The daemons kwokctl
# starts must not inherit the lock's fd 9 (9>&-): they would hold the lock for the cluster's whole
# life, and the next cluster would wait for this one to stop.
say "creating the control plane (kwokctl, binary runtime)"
(
  flock 9
  KWOK_WORKDIR="$KWOK_WORKDIR" "$KWOKCTL" create cluster --name "$NAME" \
    --config "$STATE_DIR/kwokctl.yaml" --kubeconfig "$KUBECONFIG_PATH" --wait 2m >&2 9>&-
  # The ports of the training-operator's webhook server and of each add-on's webhook and health servers
  # are chosen under the same lock, for the same reason.
  free_ports $((1 + 2 * ${#ADDONS[@]})) >"$STATE_DIR/ports"
) 9>"$CACHE_DIR/cluster-create.lock"
export KUBECONFIG="$KUBECONFIG_PATH"
mapfile -t PORTS <"$STATE_DIR/ports"
prepare_addons "${PORTS[@]:1}"
say "control plane up: $(kubectl version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -n1)"

say "applying CRDs"
kubectl apply --server-side -f "$BIN_DIR/training-operator-$TRAINING_OPERATOR_VERSION/kubeflow.org_pytorchjobs.yaml" >&2
CRDS_DIR="${TRAINRUN_CRDS_DIR:-$REPO_ROOT/crds}"
if [[ -e "$CRDS_DIR/kustomization.yaml" ]]; then
  kubectl apply --server-side -k "$CRDS_DIR" >&2
elif compgen -G "$CRDS_DIR/*.yaml" >/dev/null; then
  kubectl apply --server-side -f "$CRDS_DIR" >&2
fi
for component in "${ADDONS[@]}"; do
  apply_addon_manifests "$component" crd
done
wait_for_all Established crd

say "creating nodes and namespaces"
kubectl apply -f "$SCRIPT_DIR/nodes.yaml" >&2
kubectl create namespace kubeflow >&2
kubectl create namespace trainrun-system >&2
# The operator configuration the install ships (manifests/base/config.yaml) names the pools of nodes.yaml.
kubectl apply -n trainrun-system -f "$REPO_ROOT/manifests/base/config.yaml" >&2

say "starting the training-operator${ADDONS[*]:+ and ${ADDONS[*]}}"
launch_training_operator "${PORTS[0]}"
for component in "${ADDONS[@]}"; do
  launch_addon "$component"
done
await_controller training-operator "its PyTorchJob controller" grep -q 'Starting workers.*pytorchjob-controller' "$OPERATOR_LOG"
for component in "${ADDONS[@]}"; do
  await_addon "$component"
done

wait_for_all Ready node
# The controllers are restarted when they exit (after an API-server outage), as a kubelet would (supervise.py).
setsid python3 "$SCRIPT_DIR/supervise.py" "$STATE_DIR" >>"$STATE_DIR/supervisor.log" 2>&1 </dev/null &
echo "$!" >"$STATE_DIR/supervisor.pid"
say "ready: $(kubectl get nodes --no-headers | wc -l) nodes; controller logs $STATE_DIR/*.log"
trap - EXIT
echo "$KUBECONFIG_PATH"
