#!/usr/bin/env bash
# Installs the object-store emulators the storage tests run against, besides SeaweedFS (S3, from PyPI):
#   - fake-gcs-server v1.56.1 (Google Cloud Storage), built from the Go module proxy with the XML API writes
#     object_store needs (tests/storage/fakegcs/main.go says why), into
#     ${TRAINRUN_CACHE:-$HOME/.cache/trainrun}/bin/fake-gcs-server-<version>-<source hash>/fake-gcs-server
#   - Azurite 3.37.0 (Azure Blob Storage), from the npm registry, into
#     ${TRAINRUN_CACHE:-$HOME/.cache/trainrun}/azurite-<version>/node_modules/.bin/azurite-blob
# Cached outside the repo: a second run only checks that the files exist. Prints the two paths, one a line.
#
# Called by: tests/run.sh (CI), and tests/storage/emulators.py when a test session finds one missing.
# Usage: tests/storage/emulators.sh [--check]   (--check: install nothing, exit 1 if something is missing)
set -euo pipefail

FAKE_GCS_VERSION=v1.56.1
AZURITE_VERSION=3.37.0
CACHE_DIR="${TRAINRUN_CACHE:-$HOME/.cache/trainrun}"
SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")/fakegcs" && pwd)/main.go"
GCS_DIR="$CACHE_DIR/bin/fake-gcs-server-$FAKE_GCS_VERSION-$(sha256sum "$SOURCE" | cut -c1-12)"
GCS_BIN="$GCS_DIR/fake-gcs-server"
AZURITE_DIR="$CACHE_DIR/azurite-$AZURITE_VERSION"
AZURITE_BIN="$AZURITE_DIR/node_modules/.bin/azurite-blob"

if [[ "${1:-}" == "--check" ]]; then
  missing=0
  [[ -x "$GCS_BIN" ]] || { echo "missing: $GCS_BIN" >&2; missing=1; }
  [[ -x "$AZURITE_BIN" ]] || { echo "missing: $AZURITE_BIN" >&2; missing=1; }
  exit "$missing"
fi

mkdir -p "$CACHE_DIR/bin" "$CACHE_DIR/src" "$CACHE_DIR/logs"
exec 9>"$CACHE_DIR/emulators.lock"
flock 9  # a second session waits here, then finds everything installed

if [[ ! -x "$GCS_BIN" ]]; then
  if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
    PATH="/usr/local/go/bin:$PATH"
  fi
  export GOMODCACHE="$CACHE_DIR/gomod" GOCACHE="$CACHE_DIR/gocache" CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
  src="$CACHE_DIR/src/fake-gcs-server-$FAKE_GCS_VERSION"
  log="$CACHE_DIR/logs/fake-gcs-server-$FAKE_GCS_VERSION.log"
  rm -rf "$src" "$GCS_DIR.partial"
  mkdir -p "$src" "$GCS_DIR.partial"
  printf 'module trainrun.local/build/fakegcs\n\ngo 1.26.0\n' >"$src/go.mod"
  cp "$SOURCE" "$src/main.go"
  if ! (cd "$src" && go get "github.com/fsouza/fake-gcs-server@$FAKE_GCS_VERSION" \
    && go build -trimpath -ldflags "-s -w" -o "$GCS_DIR.partial/fake-gcs-server" .) >"$log" 2>&1; then
    echo "fake-gcs-server $FAKE_GCS_VERSION: build failed; last lines of $log:" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
  rm -rf "$GCS_DIR"
  mv "$GCS_DIR.partial" "$GCS_DIR"
fi

if [[ ! -x "$AZURITE_BIN" ]]; then
  log="$CACHE_DIR/logs/azurite-$AZURITE_VERSION.log"
  rm -rf "$AZURITE_DIR.partial"
  mkdir -p "$AZURITE_DIR.partial"
  if ! npm install --prefix "$AZURITE_DIR.partial" --no-audit --no-fund "azurite@$AZURITE_VERSION" >"$log" 2>&1; then
    echo "azurite $AZURITE_VERSION: npm install failed; last lines of $log:" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
  rm -rf "$AZURITE_DIR"
  mv "$AZURITE_DIR.partial" "$AZURITE_DIR"
fi

echo "$GCS_BIN"
echo "$AZURITE_BIN"
