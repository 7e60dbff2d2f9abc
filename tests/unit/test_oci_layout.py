"""tests/cluster/oci_layout.py: which blobs of an OCI layout its images use, what a re-export prunes,
and what a containerd holding some of them is sent (a made-up layout, written as skopeo writes one)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cluster.oci_layout import missing, prune, referenced_digests

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"


def write_blob(layout: Path, content: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    path = layout / "blobs" / "sha256" / digest.removeprefix("sha256:")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return digest


def write_image(layout: Path, layers: list[bytes], config: bytes) -> dict[str, object]:
    """Writes an image's blobs; returns its index entry (without a name)."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": write_blob(layout, config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": write_blob(layout, layer), "size": len(layer)} for layer in layers],
    }
    text = json.dumps(manifest).encode()
    return {"mediaType": MANIFEST, "digest": write_blob(layout, text), "size": len(text)}


def test_a_reexported_image_keeps_the_shared_base_and_drops_the_old_top(tmp_path: Path) -> None:
    layout = tmp_path / "trainer"
    (layout / "oci-layout").parent.mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    old = write_image(layout, [b"pytorch base", b"package v1"], b'{"v":1}')
    new = write_image(layout, [b"pytorch base", b"package v2"], b'{"v":2}')
    # A copy under a name already in the index leaves the earlier entry there, unnamed.
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [old, {**new, "annotations": {REF_NAME: "ghcr.io/x/trainer:1"}}]}))

    assert prune(layout) == 3  # the old manifest, config and top layer
    index = json.loads((layout / "index.json").read_text())
    assert [entry["digest"] for entry in index["manifests"]] == [new["digest"]]
    used = referenced_digests(layout)
    assert len(used) == 4 and used[0] == new["digest"]  # manifest, config, two layers
    assert sorted(path.name for path in (layout / "blobs" / "sha256").iterdir()) == sorted(digest.removeprefix("sha256:") for digest in used)

    base = "sha256:" + hashlib.sha256(b"pytorch base").hexdigest()
    to_send = missing(layout, {base})
    assert len(to_send) == 3 and f"blobs/sha256/{base.removeprefix('sha256:')}" not in to_send
    assert all((layout / path).is_file() for path in to_send)
    assert missing(layout, set(used)) == []
