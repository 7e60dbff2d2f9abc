#!/usr/bin/env bash
# Builds the pinned manifest linter, kube-score, from Go modules (Go module proxy only), into the
# same cache as the control plane (tests/cluster/build.sh):
#   ${TRAINRUN_CACHE:-$HOME/.cache/trainrun}/bin/kube-score-<version>/kube-score
# A second run only checks that the file exists. Prints the binary's path on stdout.
#
# Why kube-score and not kube-linter: golang.stackrox.io/kube-linter is not served by the Go module
# proxy this project can reach (every version is refused), and kube-score is: the same kind of
# tool (static checks of Kubernetes objects: security context, probes, resources, PDBs, selectors).
#
# Called by: tests/run.sh (CI), tests/lint/test_manifests_lint.py when the binary is missing.
set -euo pipefail

KUBE_SCORE_VERSION=v1.20.0
CACHE_DIR="${TRAINRUN_CACHE:-$HOME/.cache/trainrun}"
final="$CACHE_DIR/bin/kube-score-$KUBE_SCORE_VERSION"
if [[ -x "$final/kube-score" ]]; then
  echo "$final/kube-score"
  exit 0
fi
if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
  PATH="/usr/local/go/bin:$PATH"
fi
export GOMODCACHE="$CACHE_DIR/gomod" GOCACHE="$CACHE_DIR/gocache" CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
mkdir -p "$CACHE_DIR/bin" "$CACHE_DIR/src" "$CACHE_DIR/logs"
exec 9>"$CACHE_DIR/kube-score.lock"
flock 9
if [[ -x "$final/kube-score" ]]; then  # another build finished while this one waited
  echo "$final/kube-score"
  exit 0
fi
src="$CACHE_DIR/src/kube-score-$KUBE_SCORE_VERSION"
log="$CACHE_DIR/logs/kube-score-$KUBE_SCORE_VERSION.log"
rm -rf "$src" "$final.partial"
mkdir -p "$src" "$final.partial"
printf 'module trainrun.local/build/kube-score\n\ngo 1.26.0\n' >"$src/go.mod"
if ! (cd "$src" && go get "github.com/zegl/kube-score/cmd/kube-score@$KUBE_SCORE_VERSION" \
  && go build -trimpath -ldflags "-s -w -X main.version=$KUBE_SCORE_VERSION" \
    -o "$final.partial/kube-score" github.com/zegl/kube-score/cmd/kube-score) >"$log" 2>&1; then
  echo "kube-score $KUBE_SCORE_VERSION: build failed; last lines of $log:" >&2
  tail -n 30 "$log" >&2
  exit 1
fi
rm -rf "$final"
mv "$final.partial" "$final"
echo "$final/kube-score"
