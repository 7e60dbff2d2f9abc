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

step "control-plane binaries (etcd, kube-apiserver, kwok, training-operator, kubelet, CoreDNS)"
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

step "manifest linter (kube-score, from Go modules, cached; tests/lint checks manifests/ and rendered runs with it)"
bash tests/lint/build.sh

step "static checks: mypy --strict, ruff, import contracts, Dockerfile lint"
mypy
ruff check operator training tests
lint-imports
hadolint --failure-threshold warning images/operator/Dockerfile images/trainer/Dockerfile

step "pytest"
python -m pytest -ra "$@"
