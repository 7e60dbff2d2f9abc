#!/usr/bin/env bash
# Builds the pinned binaries of the local test control plane from Go modules (Go module proxy only):
# etcd, the Kubernetes control plane, kwok and the training-operator; the add-on controllers JobSet,
# Kubeflow Trainer v2 and Kueue (with their CRDs and webhook configurations, for addons.sh); for the real
# node (node.sh) a kubelet and CoreDNS; and tests/kubecheck (kstatus and the API server's quantity parser,
# asked by the unit tests).
#
# Called by: CI (.ci/run) before pytest, tests/integration/conftest.py when a binary is missing,
# and developers by hand. Output goes to a cache OUTSIDE the repo, one folder per component and
# version, so a second run only checks that the files exist:
#   ${TRAINRUN_CACHE:-$HOME/.cache/trainrun}/bin/<component>-<version>/
# GOMODCACHE and GOCACHE also live under that cache, so CI can keep them between runs.
# Each component is built in its own wrapper module: Go's minimal version selection would
# otherwise pull one component's Kubernetes libraries up to another's version.
#
# Usage: tests/cluster/build.sh [--check]   (--check: build nothing, exit 1 if something is missing)
set -euo pipefail

# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
SRC_DIR="$CACHE_DIR/src"
LOG_DIR="$CACHE_DIR/logs"

CHECK_ONLY=false
case "${1:-}" in
  --check) CHECK_ONLY=true ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

export GOMODCACHE="$CACHE_DIR/gomod"
export GOCACHE="$CACHE_DIR/gocache"
export CGO_ENABLED=0
export GOFLAGS=-mod=mod
# Never download another toolchain: only the Go module proxy is reachable.
export GOTOOLCHAIN=local
mkdir -p "$BIN_DIR" "$SRC_DIR" "$LOG_DIR" "$GOMODCACHE" "$GOCACHE"

log() { printf '[build %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

# Creates an empty wrapper module in a fresh folder and prints its path.
new_wrapper_module() {
  local name="$1"
  local dir="$SRC_DIR/$name"
  rm -rf "$dir"
  mkdir -p "$dir"
  printf 'module trainrun.local/build/%s\n\ngo 1.26.0\n' "$name" >"$dir/go.mod"
  echo "$dir"
}

build_etcd() {
  local out="$1" dir
  dir="$(new_wrapper_module "etcd-$ETCD_VERSION")"
  cd "$dir"
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3
}

# The control plane, and the real node's kubelet (node.sh) in the same build: they share most packages.
build_kubernetes() {
  local out="$1" dir gomod minor_patch info commit major minor
  dir="$(new_wrapper_module "kubernetes-$KUBE_VERSION")"
  cd "$dir"
  # k8s.io/kubernetes maps its staging modules to ./staging/...: replace each with the
  # published v0.<minor>.<patch> module. The list comes from the release's own go.mod.
  gomod="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')"
  if [[ ! -s "$gomod" ]]; then
    echo "could not download k8s.io/kubernetes@$KUBE_VERSION from the Go module proxy" >&2
    return 1
  fi
  minor_patch="${KUBE_VERSION#v1.}"
  {
    printf '\nrequire k8s.io/kubernetes %s\n\n' "$KUBE_VERSION"
    sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/.*#replace \1 => \1 v0.'"$minor_patch"'#p' "$gomod"
  } >>go.mod
  grep -c '^replace' go.mod | sed 's/^/staging replace lines: /'
  go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION" \
    "k8s.io/kubernetes/cmd/kube-controller-manager@$KUBE_VERSION" \
    "k8s.io/kubernetes/cmd/kube-scheduler@$KUBE_VERSION" \
    "k8s.io/kubernetes/cmd/kubelet@$KUBE_VERSION"
  info="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION")"
  commit="$(printf '%s\n' "$info" | sed -n 's/^\t\t"Hash": "\(.*\)",*$/\1/p' | head -n1)"
  major="${KUBE_VERSION#v}"; major="${major%%.*}"
  minor="${minor_patch%%.*}"
  local ldflags="-s -w" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitCommit=${commit:-unknown} -X $pkg.gitTreeState=clean"
    ldflags+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  go build -trimpath -ldflags "$ldflags" -o "$out/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubelet
}

# CoreDNS with the plugins of coredns/main.go: the real node's cluster DNS.
build_coredns() {
  local out="$1" dir
  dir="$(new_wrapper_module "coredns-$COREDNS_BUILD")"
  cd "$dir"
  cp "$COREDNS_SOURCE" main.go
  go get "github.com/coredns/coredns@$COREDNS_VERSION"
  go build -trimpath -ldflags "-s -w" -o "$out/coredns" .
}

build_kwok() {
  local out="$1" dir
  dir="$(new_wrapper_module "kwok-$KWOK_VERSION")"
  cd "$dir"
  go get "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
  # The release's version constants are in its source (pkg/consts): no -X needed.
  go build -trimpath -ldflags "-s -w" -o "$out/" sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl
}

build_training_operator() {
  local out="$1" dir moddir
  dir="$(new_wrapper_module "training-operator-$TRAINING_OPERATOR_VERSION")"
  cd "$dir"
  go get "github.com/kubeflow/training-operator/cmd/training-operator.v1@$TRAINING_OPERATOR_VERSION"
  go build -trimpath -ldflags "-s -w" -o "$out/training-operator" \
    github.com/kubeflow/training-operator/cmd/training-operator.v1
  moddir="$(go list -m -f '{{.Dir}}' "github.com/kubeflow/training-operator")"
  cp "$moddir/manifests/base/crds/kubeflow.org_pytorchjobs.yaml" "$out/kubeflow.org_pytorchjobs.yaml"
  chmod 644 "$out/kubeflow.org_pytorchjobs.yaml"
}

# An add-on controller (addons.sh starts it when a cluster asks for it): the main package PACKAGE of module
# MODULE at VERSION, built in a wrapper module as 'manager' (version -X flags in LDFLAGS), and the
# kustomizations of its CRDs (CRD_DIR) and webhook configurations (WEBHOOK_DIR) copied from the module, as
# crd/ and webhook/ (kustomize takes a folder under a path with github.com in it for a remote one).
build_addon() {
  local out="$1" module="$2" version="$3" package="$4" crd_dir="$5" webhook_dir="$6" ldflags="$7" dir moddir
  dir="$(new_wrapper_module "$(basename "$out" .partial)")"
  cd "$dir"
  go get "$package@$version"
  # 'manager', as in the projects' images: a client's default user agent, so the field manager of its
  # writes (Trainer's status updates), is the binary's name.
  go build -trimpath -ldflags "-s -w $ldflags" -o "$out/manager" "$package"
  moddir="$(go list -m -f '{{.Dir}}' "$module")"
  cp -r "$moddir/$crd_dir" "$out/crd"
  cp -r "$moddir/$webhook_dir" "$out/webhook"
  chmod -R u+w "$out/crd" "$out/webhook"
}

build_jobset() {
  build_addon "$1" sigs.k8s.io/jobset "$JOBSET_VERSION" sigs.k8s.io/jobset \
    config/components/crd config/components/webhook "-X sigs.k8s.io/jobset/pkg/version.GitVersion=$JOBSET_VERSION"
}

build_trainer() {
  build_addon "$1" github.com/kubeflow/trainer/v2 "$TRAINER_VERSION" \
    github.com/kubeflow/trainer/v2/cmd/trainer-controller-manager manifests/base/crds manifests/base/webhook ""
}

build_kueue() {
  build_addon "$1" sigs.k8s.io/kueue "$KUEUE_VERSION" sigs.k8s.io/kueue/cmd/kueue \
    config/components/crd config/components/webhook "-X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION"
}

# kubecheck: our small Go program over kstatus and the quantity parser (see its main.go).
build_kubecheck() {
  local out="$1" dir
  dir="$(new_wrapper_module "kubecheck-$KUBECHECK_VERSION")"
  cd "$dir"
  cp "$KUBECHECK_SOURCE" main.go
  go get "sigs.k8s.io/cli-utils@$CLI_UTILS_VERSION"
  go build -trimpath -ldflags "-s -w" -o "$out/kubecheck" .
}

# component name, version, build function, files that must exist when it is complete
COMPONENTS=(
  "etcd|$ETCD_VERSION|build_etcd|etcd"
  "kubernetes|$KUBE_VERSION|build_kubernetes|kube-apiserver kube-controller-manager kube-scheduler kubelet"
  "kwok|$KWOK_VERSION|build_kwok|kwok kwokctl"
  "training-operator|$TRAINING_OPERATOR_VERSION|build_training_operator|training-operator kubeflow.org_pytorchjobs.yaml"
  "jobset|$JOBSET_VERSION|build_jobset|${ADDON_FILES[*]}"
  "trainer|$TRAINER_VERSION|build_trainer|${ADDON_FILES[*]}"
  "kueue|$KUEUE_VERSION|build_kueue|${ADDON_FILES[*]}"
  "kubecheck|$KUBECHECK_VERSION|build_kubecheck|kubecheck"
  "coredns|$COREDNS_BUILD|build_coredns|coredns"
)

is_complete() {
  local dir="$1" file
  shift
  for file in "$@"; do
    [[ -s "$dir/$file" ]] || return 1
  done
}

# Builds one component into a temporary folder and renames it into place only when it is
# complete, so an interrupted build never looks finished.
build_component() {
  local name="$1" version="$2" func="$3" final="$4" tmp start
  tmp="$final.partial"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  start=$SECONDS
  log "$name $version: building (log: $LOG_DIR/$name-$version.log)"
  if ("$func" "$tmp") >"$LOG_DIR/$name-$version.log" 2>&1; then
    rm -rf "$final"
    mv "$tmp" "$final"
    log "$name $version: done in $((SECONDS - start))s ($(du -sh "$final" | cut -f1))"
  else
    log "$name $version: FAILED after $((SECONDS - start))s; last lines of the log:"
    tail -n 30 "$LOG_DIR/$name-$version.log" >&2
    return 1
  fi
}

if ! $CHECK_ONLY; then
  # Go >= 1.26 (most modules declare go 1.26.0); Debian's golang package is older.
  if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
    PATH="/usr/local/go/bin:$PATH"
  fi
  go_minor="$(go env GOVERSION 2>/dev/null | sed -n 's/^go1\.\([0-9]*\).*/\1/p')"
  if [[ -z "$go_minor" ]] || ((go_minor < 26)); then
    echo "build.sh needs Go >= 1.26 on PATH (found: $(go env GOVERSION 2>/dev/null || echo none))" >&2
    exit 1
  fi
  # A second build.sh (another test session) waits here, then finds everything cached.
  exec 9>"$CACHE_DIR/build.lock"
  flock 9
fi

total_start=$SECONDS
pids=()
names=()
failed=()
for entry in "${COMPONENTS[@]}"; do
  IFS='|' read -r name version func files <<<"$entry"
  final="$BIN_DIR/$name-$version"
  # shellcheck disable=SC2086  # files is a space-separated list on purpose
  if is_complete "$final" $files; then
    log "$name $version: cached in $final"
    continue
  fi
  if $CHECK_ONLY; then
    log "$name $version: missing"
    failed+=("$name")
    continue
  fi
  # All components build at once: the downloads overlap with compilation, and even the
  # kube-apiserver link stays far below the machine's 24 GiB.
  build_component "$name" "$version" "$func" "$final" &
  pids+=("$!")
  names+=("$name")
done

for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || failed+=("${names[$i]}")
done
log "total $((SECONDS - total_start))s, binaries under $BIN_DIR"
if ((${#failed[@]})); then
  log "not built: ${failed[*]}"
  exit 1
fi
