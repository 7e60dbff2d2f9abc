#!/usr/bin/env bash
# Stops a local test cluster started by tests/cluster/up.sh and removes its state folder,
# leaving no process behind: its real node (node.sh) if it has one, the add-on controllers (JobSet,
# Trainer, Kueue) and the training-operator, then kwokctl's components (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kwok). Safe to run twice, and on a cluster whose start failed
# half way.
#
# Called by: tests/cluster/harness.py (fixture teardown, atexit; --abandoned before a start),
# up.sh on failure, CI, developers.
# Usage: tests/cluster/down.sh NAME          stop cluster NAME (the name up.sh printed)
#        tests/cluster/down.sh --abandoned   stop every cluster whose starting process has died
#                                            (a test session killed before its teardown)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$SCRIPT_DIR/common.sh"

stop_cluster() {
  local name="$1" start=$SECONDS cluster_workdir file pid component
  cluster_paths "$name"
  # The supervisor first, so that nothing is started again while the cluster stops.
  stop_pid_file "$STATE_DIR/supervisor.pid"
  # The real node first (if any), while the API server still answers.
  "$SCRIPT_DIR/node.sh" down "$name"
  for component in "${ADDON_COMPONENTS[@]}"; do
    stop_pid_file "$STATE_DIR/$component.pid"
  done
  stop_pid_file "$OPERATOR_PID_FILE"

  cluster_workdir="$KWOK_WORKDIR/clusters/$name"
  if [[ -d "$cluster_workdir" ]]; then
    # kwokctl's own pid files, read before `kwokctl delete` removes them: the fallback below
    # kills whatever it leaves running.
    local component_pids=()
    for file in "$cluster_workdir"/pids/*.pid; do
      [[ -s "$file" ]] && component_pids+=("$(cat "$file")")
    done
    KWOK_WORKDIR="$KWOK_WORKDIR" "$KWOKCTL" delete cluster --name "$name" --kubeconfig "$KUBECONFIG_PATH" >&2 ||
      echo "down.sh: kwokctl delete cluster failed; killing its processes directly" >&2
    for pid in "${component_pids[@]}"; do
      # Only a process that still runs from this cluster's folder (a pid may have been reused).
      if is_running "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$cluster_workdir"; then
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done
  fi

  rm -rf "$STATE_DIR"
  echo "[down $name] stopped in $((SECONDS - start))s" >&2
}

case "${1:-}" in
  "")
    echo "usage: $0 NAME | --abandoned   (running clusters: ls $CLUSTERS_DIR)" >&2
    exit 2
    ;;
  --abandoned)
    for dir in "$CLUSTERS_DIR"/*/; do
      [[ -d "$dir" ]] || continue
      owner="$(cat "$dir/owner.pid" 2>/dev/null || true)"
      # A folder without owner.pid younger than a minute may be an up.sh that just started.
      if [[ -z "$owner" && -z "$(find "$dir" -maxdepth 0 -mmin +1)" ]]; then
        continue
      fi
      if [[ -z "$owner" ]] || ! is_running "$owner"; then
        echo "down.sh: cluster $(basename "$dir") outlived the process that started it (pid ${owner:-unknown})" >&2
        stop_cluster "$(basename "$dir")"
      fi
    done
    ;;
  *)
    stop_cluster "$1"
    ;;
esac
