"""Which files of a code folder go into a snapshot: ``.trainrunignore`` rules (a subset of .gitignore).

Read by :func:`trainrun.storage.upload_directory` when ``trainrun submit --code DIR`` (or
``Client.create(code=DIR)``) uploads a folder, so caches, virtualenvs and run outputs never travel.
Rules, one per line: blank lines and ``#`` comments are skipped; ``name`` matches a file or folder
at any depth; a pattern with a ``/`` inside matches from the folder's root; a trailing ``/`` matches
folders only; ``*``, ``?`` and ``[...]`` are wildcards; ``!pattern`` takes a file back in. Pure
apart from reading the rules file.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

IGNORE_FILE = ".trainrunignore"
# Like Azure ML's snapshot limit: a code folder past this is almost always data or an environment.
CODE_SNAPSHOT_LIMIT_BYTES = 300 * 1000 * 1000
# Never worth shipping, whatever the folder's own rules say (a rule with ! can still take one back).
DEFAULT_PATTERNS = (
    ".git/",
    "__pycache__/",
    "*.pyc",
    ".venv/",
    "venv/",
    ".mypy_cache/",
    ".pytest_cache/",
    ".ipynb_checkpoints/",
    "runs/",
    "outputs/",
)


@dataclass(frozen=True)
class Rule:
    """One line of a rules file."""

    pattern: str
    negated: bool
    directory_only: bool
    anchored: bool

    @classmethod
    def parse(cls, line: str) -> Rule | None:
        text = line.strip()
        if not text or text.startswith("#"):
            return None
        negated = text.startswith("!")
        text = text.removeprefix("!")
        directory_only = text.endswith("/")
        text = text.rstrip("/")
        anchored = "/" in text
        return cls(pattern=text.lstrip("/"), negated=negated, directory_only=directory_only, anchored=anchored)

    def matches(self, key: str, *, is_dir: bool) -> bool:
        if self.directory_only and not is_dir:
            return False
        if self.anchored:
            return fnmatch.fnmatchcase(key, self.pattern)
        return fnmatch.fnmatchcase(key.rsplit("/", 1)[-1], self.pattern)


@dataclass(frozen=True)
class IgnoreRules:
    """The rules of one folder: the defaults, then its ``.trainrunignore``; the last match wins."""

    rules: tuple[Rule, ...]

    @classmethod
    def for_directory(cls, root: Path) -> IgnoreRules:
        lines = list(DEFAULT_PATTERNS)
        rules_file = root / IGNORE_FILE
        if rules_file.is_file():
            lines.extend(rules_file.read_text(encoding="utf-8").splitlines())
        return cls(tuple(rule for rule in map(Rule.parse, lines) if rule is not None))

    def ignores(self, key: str, *, is_dir: bool) -> bool:
        """Whether the file or folder at ``key`` (relative, ``/``-separated) stays behind."""
        ignored = False
        for rule in self.rules:
            if rule.matches(key, is_dir=is_dir):
                ignored = not rule.negated
        return ignored
