"""The blobs of an OCI image layout (a folder `buildah push oci:` writes) that its index still uses.

Called by: images.sh (`prune LAYOUT`: after copying a new version of an image into its layout, the
index entries the copy left without a name and the blobs only they used are deleted) and node.sh (`missing LAYOUT`: given the digests a
containerd already holds on stdin, prints the layout's files it lacks, so an import sends only new
layers). Standard library only: the scripts run it with any python3.
Usage: oci_layout.py prune LAYOUT | missing LAYOUT < digests
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REF_NAME = "org.opencontainers.image.ref.name"
INDEX_TYPES = {"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"}


def blob_path(layout: Path, digest: str) -> Path:
    algorithm, encoded = digest.split(":", 1)
    return layout / "blobs" / algorithm / encoded


def referenced_digests(layout: Path) -> list[str]:
    """Every digest the layout's index.json reaches (manifests, nested indexes, configs, layers), in
    the order met, each once."""
    seen: dict[str, None] = {}
    pending = list(json.loads((layout / "index.json").read_text())["manifests"])
    while pending:
        descriptor = pending.pop(0)
        digest = descriptor["digest"]
        if digest in seen:
            continue
        seen[digest] = None
        media_type = descriptor.get("mediaType", "")
        if media_type in INDEX_TYPES:
            pending += json.loads(blob_path(layout, digest).read_text())["manifests"]
        elif media_type.endswith("manifest.v1+json") or media_type.endswith("manifest.v2+json"):
            manifest = json.loads(blob_path(layout, digest).read_text())
            pending += [manifest["config"], *manifest.get("layers", [])]
    return list(seen)


def prune(layout: Path) -> int:
    """Drops the index's unnamed entries (an image copied under a name already there leaves the
    earlier one unnamed), then deletes the blobs no named image uses; returns how many."""
    index_file = layout / "index.json"
    index = json.loads(index_file.read_text())
    named = [entry for entry in index["manifests"] if REF_NAME in entry.get("annotations", {})]
    if len(named) != len(index["manifests"]):
        index["manifests"] = named
        index_file.write_text(json.dumps(index, separators=(",", ":")))
    keep = {blob_path(layout, digest) for digest in referenced_digests(layout)}
    unused = [path for path in (layout / "blobs").glob("*/*") if path not in keep]
    for path in unused:
        path.unlink()
    return len(unused)


def missing(layout: Path, held: set[str]) -> list[str]:
    """The files (relative to the layout) of the blobs it uses that are not among HELD digests."""
    return [str(blob_path(layout, digest).relative_to(layout)) for digest in referenced_digests(layout) if digest not in held]


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("prune", "missing"):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    layout = Path(argv[2])
    if argv[1] == "prune":
        print(f"{prune(layout)} unused blobs deleted from {layout}", file=sys.stderr)
    else:
        for path in missing(layout, {line.strip() for line in sys.stdin if line.strip()}):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
