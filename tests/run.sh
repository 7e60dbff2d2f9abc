#!/usr/bin/env bash
# The whole test suite, from a fresh machine: a virtualenv with the package and its test tools,
# the control-plane binaries built from Go modules (cached), the static checks, then pytest.
# Caches live outside the repo: $TRAINRUN_CACHE (default ~/.cache/trainrun).
# Extra arguments go to pytest, e.g. `bash tests/run.sh tests/unit -x`.
set -euo pipefail
cd "$(dirname "$0")/.."

export TRAINRUN_CACHE="${TRAINRUN_CACHE:-$HOME/.cache/trainrun}"
venv="${TRAINRUN_VENV:-$TRAINRUN_CACHE/venv}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3

step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

# Debian packages first (seconds when installed): the real node's (containerd, runc, CNI plugins, and buildah,
# skopeo, mmdebstrap for its images; tests/realpod) and npm for Azurite.
step "Debian packages: the real node's (containerd, runc, CNI plugins, buildah, skopeo, mmdebstrap) and npm"
apt_packages=(containerd runc containernetworking-plugins iptables socat buildah skopeo mmdebstrap gcc libc6-dev)
command -v npm >/dev/null || apt_packages+=(nodejs npm)
missing_packages=()
for package in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing_packages+=("$package")
done
if ((${#missing_packages[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_packages[@]}" >/dev/null
fi

# The Go builds (the control plane and its add-ons, kube-score) run in the background beside the installs below,
# and are printed whole once done. On a cold 2-core machine (tests/README.md) they are 18 minutes of compiling
# and the installs about 22 (downloads and unpacking); the cores are busy throughout, so running the installs
# side by side as well only slowed the Go builds down (25 minutes of set-up instead of 23).
go_builds_log=$(mktemp)
step "in the background: Go-built binaries: the control plane (etcd, kube-apiserver, kwok, training-operator, JobSet, Trainer v2, Kueue, kubelet, CoreDNS) and kube-score, the manifest linter (tests/lint)"
(bash tests/cluster/build.sh && bash tests/lint/build.sh >/dev/null) >"$go_builds_log" 2>&1 &
go_builds=$!
trap 'kill "$go_builds" 2>/dev/null; rm -f "$go_builds_log"' EXIT

# The virtualenvs are filled by uv (pinned; from PyPI like the rest): the same packages and versions as pip's
# resolver picks, in a fraction of its CPU (a cold install of torch and the rest: 3.5 minutes beside the Go
# builds instead of pip's 14), on a machine whose two cores the Go builds keep busy.
uv_version=0.13.9
uv_venv="$TRAINRUN_CACHE/uv-$uv_version"
step "uv $uv_version, the installer: $uv_venv"
[ -x "$uv_venv/bin/uv" ] || { "$python" -m venv "$uv_venv" && "$uv_venv/bin/python" -m pip install -q "uv==$uv_version"; }
export UV_NO_CACHE=1 UV_NATIVE_TLS=1 UV_LINK_MODE=copy  # no cache: what it downloads is installed once, and the disk is short
uv_install() { "$uv_venv/bin/uv" pip install -q --python "$@"; }

step "python environment: $venv"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
uv_install "$venv/bin/python" --upgrade pip setuptools wheel
uv_install "$venv/bin/python" -e '.[train,test]'
export PATH="$venv/bin:$PATH" TRAINRUN_VENV_BIN="$venv/bin"

# The registry tests' MLflow server runs from a virtualenv of its own: the package never imports mlflow, and
# mlflow's 850 MB stay out of the one above. Pinned (3.18.0 does not install from the index we reach).
mlflow_version=3.17.2
export TRAINRUN_MLFLOW_VENV="${TRAINRUN_MLFLOW_VENV:-$TRAINRUN_CACHE/mlflow-venv}"
step "MLflow server for the registry tests: $TRAINRUN_MLFLOW_VENV (mlflow==$mlflow_version)"
if ! "$TRAINRUN_MLFLOW_VENV/bin/python" -c "import mlflow, sys; sys.exit(mlflow.__version__ != '$mlflow_version')" 2>/dev/null; then
  [ -x "$TRAINRUN_MLFLOW_VENV/bin/python" ] || "$python" -m venv "$TRAINRUN_MLFLOW_VENV"
  uv_install "$TRAINRUN_MLFLOW_VENV/bin/python" "mlflow==$mlflow_version" boto3
fi

step "real node images (buildah from images/*/Dockerfile on local Debian bases, cached by content)"
bash tests/cluster/images.sh >/dev/null

step "object-store emulators (fake-gcs-server from Go modules, Azurite from npm; cached; tests/storage and the cloud-store cluster tests)"
bash tests/storage/emulators.sh >/dev/null

step "waiting for the Go builds"
go_status=0
wait "$go_builds" || go_status=$?
cat "$go_builds_log"
rm -f "$go_builds_log"
((go_status == 0)) || { echo "the Go builds failed (exit $go_status)" >&2; exit 1; }

# The Go build and module caches (13 GB after a cold build) serve only a rebuild: every binary above is cached
# by version and source, so they go (TRAINRUN_KEEP_GO_CACHES=1 keeps them, for whoever rebuilds often).
if [[ "${TRAINRUN_KEEP_GO_CACHES:-}" != 1 ]]; then
  step "disk: the Go build and module caches go ($(du -sch "$TRAINRUN_CACHE/gocache" "$TRAINRUN_CACHE/gomod" 2>/dev/null | tail -n 1 | cut -f1))"
  for cache in "$TRAINRUN_CACHE/gocache" "$TRAINRUN_CACHE/gomod"; do
    [[ -d "$cache" ]] || continue
    chmod -R u+w "$cache"  # the module cache is read-only
    rm -rf "$cache"
  done
fi

step "static checks: mypy --strict, ruff, import contracts, Dockerfile lint"
export MYPY_CACHE_DIR="$TRAINRUN_CACHE/mypy-cache" RUFF_CACHE_DIR="$TRAINRUN_CACHE/ruff-cache"  # warm runs reuse them
mypy
ruff check operator training tests
lint-imports
hadolint --failure-threshold warning images/operator/Dockerfile images/trainer/Dockerfile

if (($#)); then
  step "pytest $*"
  exec python -m pytest -ra "$@"
fi

# Four pytest sessions at once: the suite spends much of its time waiting (operators killed and restarted,
# logs written at a pace, pods started), so on 2 cores one session leaves them half idle. Each lane has its
# own clusters and S3 servers; its output is printed whole when all are done. The real pods have a lane of
# their own (their cluster stops with it); in the third, pytest's folder order puts the other cluster tests
# first, beside the real pods' training, and the local runs' training after them.
sleepy=(tests/integration/test_log_archive.py tests/integration/test_progress_restarts.py
  tests/integration/test_artifacts.py tests/integration/test_chaos_soak.py)
# The real pods' lane, then a local sweep's training (its cores are free once the real pods are done), then more
# sleepy cluster tests on a cluster of its own: HA and the 12-trial sweep (the chaos soak alone varies by minutes).
realpods=(tests/realpod tests/local/test_local_sweep.py tests/integration/test_operator_ha.py tests/integration/test_sweeps.py)
# The tests of the platform cluster (JobSet, Trainer v2, Kueue: a second control plane) beside the storage and
# trainer tests, which start no cluster.
platform=(tests/integration/test_platform.py tests/integration/test_trainjob_backend.py tests/integration/test_kueue_runs.py
  tests/integration/test_replica_contract.py tests/integration/test_kubeflow_sdk.py)
# The storage lane: every store (SeaweedFS, fake-gcs-server, Azurite) and the operator's storage path on GCS and
# Azure on a cluster of its own. Model registration and tracking (test_model_registry.py, an MLflow server of its
# own) runs with the other cluster tests, on their cluster.
stores=(tests/integration/test_cloud_stores.py)
lanes=(
  "${sleepy[*]}"
  "${realpods[*]}"
  "tests ${sleepy[*]/#/--ignore=} ${platform[*]/#/--ignore=} ${stores[*]/#/--ignore=} ${realpods[*]/#/--ignore=} --ignore=tests/training --ignore=tests/storage"
  "tests/storage tests/training ${stores[*]} ${platform[*]}"
)
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
touch "$logs/started"
# The disk the lanes write to (the cache, /tmp), in MiB free where it has least: printed at the start and, as the
# lowest seen every 5 s, at the end. A run short of disk fails in odd places (SeaweedFS stores nothing with less
# than 1% of its disk free; the kubelet evicts), so a failed run's last lines say how much there was.
disk_free_mib() { df -P -BM "$TRAINRUN_CACHE" "${TMPDIR:-/tmp}" | awk 'NR > 1 {sub("M", "", $4); print $4}' | sort -n | head -n 1; }
disk_at_start=$(disk_free_mib)
echo "$disk_at_start" >"$logs/disk-lowest"
(while sleep 5; do
  free=$(disk_free_mib)
  ((free < $(cat "$logs/disk-lowest"))) && echo "$free" >"$logs/disk-lowest"
done) &
disk_sampler=$!
step "pytest, in ${#lanes[@]} lanes at once ($((disk_at_start / 1024)) GiB of disk free)"
pids=()
trap 'kill "${pids[@]}" "$disk_sampler" 2>/dev/null; wait; exit 130' INT TERM  # each session stops its clusters on SIGTERM
for index in "${!lanes[@]}"; do
  # shellcheck disable=SC2086 # a lane is a list of words
  python -m pytest -ra --durations=25 -p no:cacheprovider ${lanes[index]} >"$logs/$index.log" 2>&1 &
  pids+=($!)
done
failed=0
for index in "${!lanes[@]}"; do
  status=0
  wait "${pids[index]}" || status=$?
  printf '\n== lane %d: pytest %s: exit %d (%s)\n' "$index" "${lanes[index]}" "$status" "$(date -u +%H:%M:%S)"
  cat "$logs/$index.log"
  ((status == 0)) || failed=1
done
kill "$disk_sampler" 2>/dev/null || true
step "pytest lanes, in sum"
printf 'disk: %d GiB free at the start of the lanes, %d GiB at least during them, %d GiB at the end\n' \
  "$((disk_at_start / 1024))" "$(($(cat "$logs/disk-lowest") / 1024))" "$(($(disk_free_mib) / 1024))"
for index in "${!lanes[@]}"; do
  printf 'lane %d: %s\n' "$index" "$(tail -n 1 "$logs/$index.log")"
  grep -E '^(FAILED|ERROR) ' "$logs/$index.log" || true
done
# A cluster that did not start (up.sh keeps its logs there): why, from its components' own logs, so that a
# failed run's last lines say it without the whole output.
# The folder exists only where a cluster ever failed: looked at only then (under set -e -o pipefail a failed find
# would end the script here with its own status, after every lane had passed).
failed_clusters="${TRAINRUN_CLUSTER_DIR:-${TMPDIR:-/tmp}/trainrun-clusters}-failed"
if [[ -d "$failed_clusters" ]]; then
  while read -r cluster; do
    printf 'cluster %s did not start; the last errors of its logs (all kept in %s):\n' "$(basename "$cluster")" "$cluster"
    while read -r log; do
      { grep -iE 'error|fatal|panic' "$log" || true; } | tail -n 2 | cut -c1-400 | sed "s|^|  $(basename "$log"): |"
    done < <(find "$cluster" -name '*.log' | sort)
  done < <(find "$failed_clusters" -mindepth 1 -maxdepth 1 -type d -newer "$logs/started")
fi
if ((failed)); then
  echo "tests/run.sh: exit 1: a lane failed (its FAILED and ERROR lines above)" >&2
else
  echo "tests/run.sh: exit 0: every lane passed"
fi
exit "$failed"
