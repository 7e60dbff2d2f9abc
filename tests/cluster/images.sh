#!/usr/bin/env bash
# Builds the images the real node (node.sh) runs, with no Docker engine and no registry, and prints
# the paths of their OCI image layouts (folders node.sh imports into containerd), one per line:
#   trainrun.local/pause:3.10          the pods' sandbox: pause.c, static
#   trainrun.local/debian:bookworm     a local base: Debian bookworm (mmdebstrap) with python3, pip and
#                                      nslookup; also the training-operator's Worker init container
#   (trainrun.local/pytorch:<key>      that base + PyTorch from PyPI: the trainer's base, kept in
#                                      buildah's storage only, not printed: the trainer holds it)
#   ghcr.io/trainrun/operator:0.1.0    images/operator/Dockerfile, BASE_IMAGE=trainrun.local/debian
#   ghcr.io/trainrun/trainer:0.1.0     images/trainer/Dockerfile, BASE_IMAGE=trainrun.local/pytorch
# Our two images are built from the project's own Dockerfiles by `buildah bud --isolation chroot`,
# with only their BASE_IMAGE build argument changed (their defaults are the public bases).
#
# Called by: tests/run.sh (CI), tests/realpod/conftest.py when an image is missing, developers.
# Cached under ${TRAINRUN_CACHE:-~/.cache/trainrun}/images/: each image's layout (oci/NAME) records
# the key of what it was made from (oci/NAME.key: its recipe here, its Dockerfile, the package's
# files, its base's key), so a change to any of them rebuilds that image and those built on it.
# Layers are written uncompressed (containerd unpacks them without a gzip pass) and a rebuilt
# image's unchanged layers are not written again: the 5.5 GB PyTorch layer stays where it is, and
# node.sh imports only the blobs its containerd lacks.
# Usage: images.sh [--check]   (--check: build nothing, exit 1 if an image is missing)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$SCRIPT_DIR/common.sh"

IMAGES_DIR="$CACHE_DIR/images"
STORAGE=(--root "$IMAGES_DIR/storage" --runroot "$IMAGES_DIR/run" --storage-driver overlay)
# The pins of the local bases; editing them changes the keys.
DEBIAN_SUITE=bookworm
DEBIAN_PACKAGES=python3,python3-pip,python-is-python3,ca-certificates,bind9-dnsutils
DEBIAN_MIRRORS=("deb http://deb.debian.org/debian $DEBIAN_SUITE main"
  "deb http://deb.debian.org/debian $DEBIAN_SUITE-updates main"
  "deb http://deb.debian.org/debian-security $DEBIAN_SUITE-security main")
TORCH_PINS=(torch==2.15.0 torchvision==0.29.2 numpy==2.4.6 pillow==13.0.0)
# The host's CA bundle is lent to every RUN (pip behind a TLS-intercepting proxy), never kept.
HOST_CA=/etc/ssl/certs/ca-certificates.crt

CHECK_ONLY=false
case "${1:-}" in
  --check) CHECK_ONLY=true ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

log() { printf '[images %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
key_of() { sha256sum | cut -c1-16; }
ca_volume() { [[ -s "$HOST_CA" ]] && printf '%s\n' --volume "$HOST_CA:/etc/ssl/certs/ca-certificates.crt:ro"; }
bah() { buildah "${STORAGE[@]}" "$@"; }

# The build context of our Dockerfiles: the repository's files (tracked or not ignored by git),
# less what the Dockerfiles' .dockerignore leaves out at the top (tests, manifests, crds, images).
context_files() {
  git -C "$REPO_ROOT" ls-files -co --exclude-standard -z |
    grep -zv -E '^(tests|manifests|crds|images|\.ci|runs)/' | sort -z
}
context_key() {
  (cd "$REPO_ROOT" && context_files | xargs -0 sha256sum) | key_of
}

PAUSE_KEY="$(key_of <"$SCRIPT_DIR/pause.c")"
DEBIAN_KEY="$(printf '%s\n' "$DEBIAN_SUITE" "$DEBIAN_PACKAGES" "${DEBIAN_MIRRORS[@]}" | key_of)"
TORCH_KEY="$(printf '%s\n' "$DEBIAN_KEY" "${TORCH_PINS[@]}" | key_of)"
CONTEXT_KEY="$(context_key)"
OPERATOR_KEY="$(cat "$REPO_ROOT/images/operator/Dockerfile" "$REPO_ROOT/images/operator/Dockerfile.dockerignore" |
  { cat; echo "$DEBIAN_KEY $CONTEXT_KEY"; } | key_of)"
TRAINER_KEY="$(cat "$REPO_ROOT/images/trainer/Dockerfile" "$REPO_ROOT/images/trainer/Dockerfile.dockerignore" |
  { cat; echo "$TORCH_KEY $CONTEXT_KEY"; } | key_of)"

TORCH_BASE_IMAGE="trainrun.local/pytorch:$TORCH_KEY"
# name|image|key|build function|kind: a layout the node imports (printed), or a base kept only in
# buildah's storage (5.5 GB that no node imports on its own)
IMAGES=(
  "pause|$PAUSE_IMAGE|$PAUSE_KEY|build_pause|layout"
  "debian|$INIT_IMAGE|$DEBIAN_KEY|build_debian|layout"
  "pytorch|$TORCH_BASE_IMAGE|$TORCH_KEY|build_pytorch|storage"
  "operator|$OPERATOR_IMAGE|$OPERATOR_KEY|build_operator|layout"
  "trainer|$TRAINER_IMAGE|$TRAINER_KEY|build_trainer|layout"
)

LAYOUTS_DIR="$IMAGES_DIR/oci"
layout_of() { echo "$LAYOUTS_DIR/$1"; }

# Makes sure IMAGE (exported to LAYOUT) is in buildah's storage, as a base to build on.
ensure_in_storage() {
  local image="$1" layout="$2"
  bah inspect --type image "$image" >/dev/null 2>&1 && return
  bah pull --quiet "oci:$layout:$image" >/dev/null
}

# Writes IMAGE (in buildah's storage) into LAYOUT with uncompressed layers, replacing the version
# there; blobs the layout already holds are not written again, those no longer used are deleted.
# skopeo, not `buildah push`: buildah 1.28 gzips layers for an oci: destination even with
# --disable-compression.
export_layout() {
  local image="$1" layout="$2"
  skopeo copy --quiet --dest-oci-accept-uncompressed-layers \
    "containers-storage:[overlay@$IMAGES_DIR/storage+$IMAGES_DIR/run]$image" "oci:$layout:$image" >&2
  python3 "$SCRIPT_DIR/oci_layout.py" prune "$layout"
}

build_pause() {
  local image="$1" layout="$2" work container
  work="$(mktemp -d)"
  cc -static -O2 -Wall -Wextra -o "$work/pause" "$SCRIPT_DIR/pause.c"
  container="$(bah from scratch)"
  bah copy --chmod 0755 "$container" "$work/pause" /pause >/dev/null
  bah config --entrypoint '["/pause"]' --user 65535:65535 "$container"
  bah commit --quiet --rm "$container" "$image" >/dev/null
  rm -rf "$work"
  export_layout "$image" "$layout"
}

build_debian() {
  local image="$1" layout="$2" work container
  work="$(mktemp -d)"
  mmdebstrap --quiet --variant=minbase --include="$DEBIAN_PACKAGES" "$DEBIAN_SUITE" "$work/rootfs.tar" "${DEBIAN_MIRRORS[@]}"
  container="$(bah from scratch)"
  bah add "$container" "$work/rootfs.tar" / >/dev/null
  # Debian's python3 is "externally managed": the Dockerfiles' pip installs go to the system, as on
  # the public bases.
  bah config --env PIP_BREAK_SYSTEM_PACKAGES=1 --env LANG=C.UTF-8 --cmd '["/bin/bash"]' "$container"
  bah commit --quiet --rm "$container" "$image" >/dev/null
  rm -rf "$work"
  export_layout "$image" "$layout"
}

build_pytorch() {
  local image="$1" container
  ensure_in_storage "$INIT_IMAGE" "$(layout_of debian)"
  container="$(bah from --pull-never "$INIT_IMAGE")"
  # shellcheck disable=SC2046  # ca_volume prints two words or none
  bah run --isolation chroot $(ca_volume) "$container" -- \
    pip install --no-cache-dir --no-compile "${TORCH_PINS[@]}" >&2
  bah commit --quiet --rm "$container" "$image" >/dev/null
}

# Builds images/NAME/Dockerfile on BASE into IMAGE, from a copy of the build context.
build_dockerfile() {
  local name="$1" base="$2" image="$3" layout="$4" context
  context="$(mktemp -d)"
  (cd "$REPO_ROOT" && context_files | xargs -0 cp --parents -t "$context")
  # shellcheck disable=SC2046  # ca_volume prints two words or none
  bah bud --quiet --isolation chroot --pull-never $(ca_volume) --build-arg "BASE_IMAGE=$base" \
    -f "$REPO_ROOT/images/$name/Dockerfile" -t "$image" "$context" >&2
  rm -rf "$context"
  export_layout "$image" "$layout"
}

build_operator() {
  ensure_in_storage "$INIT_IMAGE" "$(layout_of debian)"
  build_dockerfile operator "$INIT_IMAGE" "$@"
}

build_trainer() {
  build_dockerfile trainer "$TORCH_BASE_IMAGE" "$@"
}

mkdir -p "$LAYOUTS_DIR"
if ! $CHECK_ONLY; then
  for tool in buildah skopeo mmdebstrap cc git python3; do
    command -v "$tool" >/dev/null || { echo "images.sh: $tool not found (apt-get install buildah skopeo mmdebstrap gcc)" >&2; exit 1; }
  done
  # A second images.sh (another test session) waits here, then finds everything cached.
  exec 9>"$CACHE_DIR/images.lock"
  flock 9
  # Docker archives of the earlier cache format (and their interrupted writes): 6 GB not read any more.
  find "$IMAGES_DIR" -maxdepth 1 -name '*.tar*' -delete
fi

# True when IMAGE of KIND is built: its layout holds the current key, or for a base kept in
# storage, the image itself is there.
is_built() {
  local kind="$1" image="$2" layout="$3" key="$4"
  if [[ "$kind" == storage ]]; then
    [[ -d "$IMAGES_DIR/storage" ]] && bah inspect --type image "$image" >/dev/null 2>&1
  else
    [[ "$(cat "$layout.key" 2>/dev/null)" == "$key" ]]
  fi
}

missing=false
for entry in "${IMAGES[@]}"; do
  IFS='|' read -r name image key func kind <<<"$entry"
  layout="$(layout_of "$name")"
  if is_built "$kind" "$image" "$layout" "$key"; then
    log "$image: cached ($([[ "$kind" == storage ]] && echo "buildah storage" || echo "oci/$name, key $key"))"
  elif $CHECK_ONLY; then
    log "$image: missing (key $key)"
    missing=true
    continue
  else
    start=$SECONDS
    log "$image: building"
    # The key is written last: an interrupted build leaves the image to build again.
    rm -f "$layout.key"
    "$func" "$image" "$layout"
    [[ "$kind" == layout ]] && echo "$key" >"$layout.key"
    log "$image: done in $((SECONDS - start))s"
    # Older PyTorch bases, and layers no image uses any more, are not needed.
    for old in $(bah images --format '{{.Name}}:{{.Tag}}' | grep "^${TORCH_BASE_IMAGE%:*}:" | grep -vx "$TORCH_BASE_IMAGE"); do
      bah rmi "$old" >/dev/null 2>&1 || true
    done
    bah rmi --prune >/dev/null 2>&1 || true
  fi
  [[ "$kind" == layout ]] && echo "$layout"
done
! $missing
