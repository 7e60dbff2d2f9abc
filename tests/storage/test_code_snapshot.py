"""Code snapshots: .trainrunignore rules, the default exclusions and the size limit (file:// targets)."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainrun.storage import UploadError, download, upload_code_snapshot
from trainrun.storage.ignore import IgnoreRules, Rule


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for key, content in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


@pytest.mark.parametrize(
    ("lines", "key", "is_dir", "ignored"),
    [
        ([], ".git", True, True),
        ([], "pkg/__pycache__", True, True),
        ([], "pkg/mod.pyc", False, True),
        ([], "train.py", False, False),
        (["*.ckpt"], "deep/model.ckpt", False, True),
        (["data/"], "data", True, True),
        (["data/"], "data", False, False),
        (["/notes.txt"], "notes.txt", False, True),
        (["sub/*.csv"], "sub/a.csv", False, True),
        (["sub/*.csv"], "other/sub/a.csv", False, False),
        (["*.csv", "!keep.csv"], "keep.csv", False, False),
        (["# comment", "", "*.log"], "x.log", False, True),
    ],
)
def test_rules(lines: list[str], key: str, is_dir: bool, ignored: bool, tmp_path: Path) -> None:
    (tmp_path / ".trainrunignore").write_text("\n".join(lines))
    assert IgnoreRules.for_directory(tmp_path).ignores(key, is_dir=is_dir) is ignored


def test_comment_lines_are_no_rules() -> None:
    assert Rule.parse("  # nothing") is None and Rule.parse("") is None


def test_snapshot_leaves_ignored_files_behind_and_round_trips(tmp_path: Path) -> None:
    code = make_tree(
        tmp_path / "code",
        {
            "train.py": b"print('hi')",
            "pkg/util.py": b"X = 1",
            "pkg/__pycache__/util.cpython-311.pyc": b"\0",
            ".venv/bin/python": b"#!",
            "data/big.bin": b"x" * 1000,
            "runs/old/status.json": b"{}",
            ".trainrunignore": b"data/\n",
        },
    )
    result = upload_code_snapshot(code, (tmp_path / "snapshot").as_uri())
    assert sorted(record.path for record in result.manifest.files) == [".trainrunignore", "pkg/util.py", "train.py"]
    copied = download((tmp_path / "snapshot").as_uri(), tmp_path / "copy")
    assert copied.verified and (tmp_path / "copy" / "pkg" / "util.py").read_bytes() == b"X = 1"


def test_oversized_snapshot_is_refused_naming_the_largest_files_and_the_fix(tmp_path: Path) -> None:
    code = make_tree(tmp_path / "code", {"train.py": b"x", "weights.bin": b"w" * 5000, "notes.txt": b"n" * 100})
    with pytest.raises(UploadError, match=r"over the 0.001 MB limit.*weights\.bin.*\.trainrunignore"):
        upload_code_snapshot(code, (tmp_path / "snapshot").as_uri(), max_bytes=1000)
    assert not (tmp_path / "snapshot").exists() or not any((tmp_path / "snapshot").iterdir())
    (code / ".trainrunignore").write_text("*.bin\n")
    result = upload_code_snapshot(code, (tmp_path / "snapshot").as_uri(), max_bytes=1000)
    assert result.manifest.file_count == 3
