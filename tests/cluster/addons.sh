# shellcheck shell=bash
# The add-on controllers of a test cluster, which up.sh starts only when TRAINRUN_CLUSTER_ADDONS asks:
# 'trainer' is JobSet and Kubeflow Trainer v2 (and the ClusterTrainingRuntime of manifests/trainer-v2),
# 'kueue' is Kueue. Each runs as a plain process bound to 127.0.0.1 on ports up.sh chose, logs to
# $STATE_DIR/<component>.log and serves its webhooks over the cluster's self-signed certificate; its CRDs and
# webhook configurations are the ones of its Go module (build.sh copies them), pointed at that process by
# webhooks.py (a `url` and the certificate as `caBundle`, no Service, no cert-manager). down.sh stops them.
#
# Sourced by up.sh, after common.sh, cluster_paths and require_kubectl.

# Kueue's job integrations: those of Kueue's own default configuration whose CRDs an add-on cluster has,
# and kubeflow.org/pytorchjob, which Kueue v0.19 no longer switches on by default. Not pod, deployment or
# statefulset: their webhooks would see every pod the cluster creates.
KUEUE_FRAMEWORKS=(batch/job jobset.x-k8s.io/jobset trainer.kubeflow.org/trainjob kubeflow.org/pytorchjob)
# The resources whose webhooks Kueue's configurations keep: its own API's and those of the integrations above.
KUEUE_WEBHOOK_RESOURCES=clusterqueues,cohorts,resourceflavors,workloads,jobs,jobsets,trainjobs,pytorchjobs
# Kueue reads a metrics serving pair from this folder whenever its internal cert management is off (the path
# is fixed in its cmd/kueue/main.go), even with its metrics server off: one pair for the machine.
KUEUE_METRICS_CERT_DIR=/etc/kueue/metrics/certs

# The add-ons' TMPDIR: Trainer's webhook server reads its pair from $TMPDIR/k8s-webhook-server/serving-certs
# (controller-runtime's default, not configurable in Trainer), and JobSet's and Kueue's are told the same folder.
ADDON_TMPDIR="$STATE_DIR/addon-tmp"
ADDON_CERT_DIR="$ADDON_TMPDIR/k8s-webhook-server/serving-certs"
declare -A ADDON_WEBHOOK_PORT ADDON_HEALTH_PORT

# The add-on components of the words in TRAINRUN_CLUSTER_ADDONS (spaces or commas), on one line in the
# order they start; fails on an unknown word.
addon_components() {
  local asked="${TRAINRUN_CLUSTER_ADDONS:-}" words word components=() trainer=false kueue=false
  read -ra words <<<"${asked//,/ }"
  for word in "${words[@]}"; do
    case "$word" in
      trainer) trainer=true ;;
      kueue) kueue=true ;;
      *) echo "TRAINRUN_CLUSTER_ADDONS: unknown add-on '$word' (known: trainer, kueue)" >&2; return 1 ;;
    esac
  done
  if $trainer; then components+=(jobset trainer); fi
  if $kueue; then components+=(kueue); fi
  echo "${components[*]}"
}

# Gives each add-on component of ADDONS (up.sh's list) its webhook and health ports, two by two from the
# arguments, and writes the serving pair of the cluster's webhooks.
prepare_addons() {
  local component
  ((${#ADDONS[@]})) || return 0
  for component in "${ADDONS[@]}"; do
    ADDON_WEBHOOK_PORT[$component]="$1"
    ADDON_HEALTH_PORT[$component]="$2"
    shift 2
  done
  write_self_signed_pair "$ADDON_CERT_DIR" "trainrun test cluster add-on webhooks" "IP:127.0.0.1,DNS:localhost"
}

# Applies PART (crd or webhook) of COMPONENT's manifests, served by its controller on this machine.
apply_addon_manifests() {
  local component="$1" part="$2" args
  args=(--url "https://127.0.0.1:${ADDON_WEBHOOK_PORT[$component]}" --ca-bundle "$ADDON_CERT_DIR/tls.crt")
  case "$component" in
    jobset) args+=(--prefix jobset-) ;;
    kueue) args+=(--prefix kueue- --resources "$KUEUE_WEBHOOK_RESOURCES") ;;
  esac
  kubectl kustomize "$(addon_dir "$component")/$part" | python "$SCRIPT_DIR/webhooks.py" "${args[@]}" |
    kubectl apply --server-side -f - >&2
}

# Writes the configuration of COMPONENT's controller (its own Configuration kind) and prints its path.
# Each one: webhooks on 127.0.0.1, health probes on 127.0.0.1 (/readyz once the webhooks are served),
# no metrics server, no leader election, no certificate management of its own.
write_addon_config() {
  local component="$1" file="$STATE_DIR/$1-config.yaml" framework
  local webhook_port="${ADDON_WEBHOOK_PORT[$component]}" health="127.0.0.1:${ADDON_HEALTH_PORT[$component]}"
  case "$component" in
    jobset)
      cat >"$file" <<EOF
apiVersion: config.jobset.x-k8s.io/v1alpha1
kind: Configuration
webhook: {host: 127.0.0.1, port: $webhook_port, certDir: "$ADDON_CERT_DIR"}
health: {healthProbeBindAddress: "$health"}
metrics: {bindAddress: "0"}
leaderElection: {leaderElect: false}
internalCertManagement: {enable: false}
EOF
      ;;
    trainer)
      cat >"$file" <<EOF
apiVersion: config.trainer.kubeflow.org/v1alpha1
kind: Configuration
webhook: {host: 127.0.0.1, port: $webhook_port}
health: {healthProbeBindAddress: "$health"}
metrics: {bindAddress: "0"}
leaderElection: {leaderElect: false}
certManagement: {enable: false}
EOF
      ;;
    kueue)
      {
        cat <<EOF
apiVersion: config.kueue.x-k8s.io/v1beta2
kind: Configuration
namespace: kueue-system
webhook: {host: 127.0.0.1, port: $webhook_port, certDir: "$ADDON_CERT_DIR"}
health: {healthProbeBindAddress: "$health"}
metrics: {bindAddress: "0"}
leaderElection: {leaderElect: false}
internalCertManagement: {enable: false}
manageJobsWithoutQueueName: false
# The visibility API server would listen on :8082 on every interface (and needs an APIService).
featureGates: {VisibilityOnDemand: false}
integrations:
  frameworks:
EOF
        for framework in "${KUEUE_FRAMEWORKS[@]}"; do
          echo "  - $framework"
        done
      } >"$file"
      ;;
  esac
  echo "$file"
}

# Starts COMPONENT's controller in the background (await_addon waits for it); for Kueue, its namespace first.
launch_addon() {
  local component="$1" config
  config="$(write_addon_config "$component")"
  if [[ "$component" == kueue ]]; then
    ensure_self_signed_pair "$KUEUE_METRICS_CERT_DIR" kueue-metrics "IP:127.0.0.1,DNS:localhost" kueue-metrics-certs
    kubectl create namespace kueue-system >&2
  fi
  launch_controller "$component" env TMPDIR="$ADDON_TMPDIR" KUBECONFIG="$KUBECONFIG" \
    "$(addon_dir "$component")/manager" --config="$config"
}

# Waits until COMPONENT's controller serves its webhooks, then registers them; for Trainer, then applies our
# ClusterTrainingRuntime (which its webhook validates).
await_addon() {
  local component="$1"
  await_controller "$component" "serving its webhooks (/readyz)" \
    curl -fsS "http://127.0.0.1:${ADDON_HEALTH_PORT[$component]}/readyz"
  apply_addon_manifests "$component" webhook
  if [[ "$component" == trainer ]]; then
    kubectl apply --server-side -k "$REPO_ROOT/manifests/trainer-v2" >&2
  fi
}
