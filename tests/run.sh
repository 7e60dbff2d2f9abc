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

step "python environment: $venv"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip setuptools wheel
"$venv/bin/python" -m pip install -q -e '.[train,test]'
export PATH="$venv/bin:$PATH" TRAINRUN_VENV_BIN="$venv/bin"

# The registry tests' MLflow server runs from a virtualenv of its own: the package never imports mlflow, and
# mlflow's 850 MB stay out of the one above. Pinned (3.18.0 does not install from the index we reach).
mlflow_version=3.17.2
export TRAINRUN_MLFLOW_VENV="${TRAINRUN_MLFLOW_VENV:-$TRAINRUN_CACHE/mlflow-venv}"
step "MLflow server for the registry tests: $TRAINRUN_MLFLOW_VENV (mlflow==$mlflow_version)"
if ! "$TRAINRUN_MLFLOW_VENV/bin/python" -c "import mlflow, sys; sys.exit(mlflow.__version__ != '$mlflow_version')" 2>/dev/null; then
  [ -x "$TRAINRUN_MLFLOW_VENV/bin/python" ] || "$python" -m venv "$TRAINRUN_MLFLOW_VENV"
  "$TRAINRUN_MLFLOW_VENV/bin/python" -m pip install -q --upgrade pip
  "$TRAINRUN_MLFLOW_VENV/bin/python" -m pip install -q "mlflow==$mlflow_version" boto3
fi

step "control-plane binaries (etcd, kube-apiserver, kwok, training-operator, JobSet, Trainer v2, Kueue, kubelet, CoreDNS)"
bash tests/cluster/build.sh

step "real node packages (Debian: containerd, runc, CNI plugins, buildah, skopeo, mmdebstrap; tests/realpod)"
real_node_packages=(containerd runc containernetworking-plugins iptables socat buildah skopeo mmdebstrap gcc libc6-dev)
missing_packages=()
for package in "${real_node_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing_packages+=("$package")
done
if ((${#missing_packages[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_packages[@]}" >/dev/null
fi

step "real node images (buildah from images/*/Dockerfile on local Debian bases, cached by content)"
bash tests/cluster/images.sh >/dev/null

step "object-store emulators (fake-gcs-server from Go modules, Azurite from npm; cached; tests/storage and the cloud-store cluster tests)"
if ! command -v npm >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
bash tests/storage/emulators.sh >/dev/null

step "manifest linter (kube-score, from Go modules, cached; tests/lint checks manifests/ and rendered runs with it)"
bash tests/lint/build.sh

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
sleepy=(tests/integration/test_log_archive.py tests/integration/test_operator_ha.py tests/integration/test_progress_restarts.py
  tests/integration/test_artifacts.py tests/integration/test_chaos_soak.py tests/integration/test_sweeps.py)
# The real pods' lane, and a local sweep's training after them (its cores are free once the real pods are done).
realpods=(tests/realpod tests/local/test_local_sweep.py)
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
step "pytest, in ${#lanes[@]} lanes at once"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait; exit 130' INT TERM  # each session stops its clusters on SIGTERM
for index in "${!lanes[@]}"; do
  # shellcheck disable=SC2086 # a lane is a list of words
  python -m pytest -ra --durations=10 -p no:cacheprovider ${lanes[index]} >"$logs/$index.log" 2>&1 &
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
step "pytest lanes, in sum"
for index in "${!lanes[@]}"; do
  printf 'lane %d: %s\n' "$index" "$(tail -n 1 "$logs/$index.log")"
  grep -E '^(FAILED|ERROR) ' "$logs/$index.log" || true
done
# A cluster that did not start (up.sh keeps its logs there): why, from its components' own logs, so that a
# failed run's last lines say it without the whole output.
failed_clusters="${TRAINRUN_CLUSTER_DIR:-${TMPDIR:-/tmp}/trainrun-clusters}-failed"
find "$failed_clusters" -mindepth 1 -maxdepth 1 -type d -newer "$logs/started" 2>/dev/null | while read -r cluster; do
  printf 'cluster %s did not start; the last errors of its logs (all kept in %s):\n' "$(basename "$cluster")" "$cluster"
  find "$cluster" -name '*.log' | sort | while read -r log; do
    grep -iE 'error|fatal|panic' "$log" | tail -n 2 | cut -c1-400 | sed "s|^|  $(basename "$log"): |"
  done
done
exit "$failed"
