"""The README and the test READMEs say what is true: commands that exist, links that lead somewhere, every
file of a run folder explained, every benchmark's figure with its date and command, no run logs in the guide.

The commands themselves run in tests/local (test_own_script.py runs the README's custom-script command).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from trainrun.client.local import RUNNER_LOG
from trainrun.local import folder as run_folder_layout

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
GUIDES = [README, REPO / "tests" / "README.md", REPO / "tests" / "bench" / "README.md"]


def prose(text: str) -> str:
    """The text without its code blocks and inline code (examples may hold dates and hashes)."""
    return re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", text, flags=re.DOTALL))


def anchors(text: str) -> set[str]:
    """GitHub's anchors of the headings: lower case, punctuation dropped, spaces as dashes."""
    headings = re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("guide", GUIDES, ids=[str(path.relative_to(REPO)) for path in GUIDES])
def test_every_link_leads_to_a_file_and_heading_that_exist(guide: Path) -> None:
    text = guide.read_text()
    for link in re.findall(r"\]\(([^)\s]+)\)", text):
        if link.startswith(("http://", "https://")):
            continue
        path, _, fragment = link.partition("#")
        target = (guide.parent / path).resolve() if path else guide
        assert target.exists(), link
        if fragment:
            assert fragment in anchors(target.read_text()), link


def test_the_first_command_installs_what_the_quick_start_uses() -> None:
    first = next(line for line in README.read_text().splitlines() if line.startswith("python3 -m venv .venv"))
    installing = re.search(r"pip install -e '\.\[([a-z,]+)\]'", first)
    assert installing is not None, first
    extras = set(installing.group(1).split(","))
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installed = {re.split(r"[<>=\[ ]", requirement)[0] for extra in extras for requirement in declared[extra]}
    assert {"torch", "onnx"} <= installed  # trainrun run --local trains with the built-in trainer and exports
    assert "--plot" in README.read_text().split("## Your own script")[0]  # the quick start draws the curves...
    assert "matplotlib" in installed  # ...with what the first command installed


def readme_commands() -> list[list[str]]:
    lines = [line.split(" #")[0] for line in README.read_text().splitlines() if line.startswith(".venv/bin/trainrun ")]
    return [shlex.split(line)[1:] for line in lines]


@pytest.mark.parametrize("arguments", readme_commands(), ids=lambda arguments: " ".join(arguments))
def test_every_trainrun_command_of_the_readme_has_its_verb_and_flags(arguments: list[str]) -> None:
    verb = arguments[0]
    shown = subprocess.run([sys.executable, "-m", "trainrun.cli", verb, "--help"], capture_output=True, text=True,
                           env={**os.environ, "COLUMNS": "200"}, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    for flag in (argument.split("=")[0] for argument in arguments if argument.startswith("--")):
        assert re.search(rf"(^|[\s,]){re.escape(flag)}([\s,/]|$)", shown.stdout, flags=re.MULTILINE), (flag, shown.stdout)


def test_every_file_of_a_run_folder_is_explained() -> None:
    section = README.read_text().split("### The run folder of a local run")[1].split("\n#")[0]
    names = [value for name, value in vars(run_folder_layout).items() if name.endswith(("_FILE", "_DIR")) and
             isinstance(value, str)]
    assert len(names) >= 9, names
    for name in [*names, RUNNER_LOG, "code/", "inputs/"]:
        assert f"`{name}" in section, name


def test_the_guide_holds_no_run_logs() -> None:
    text = prose(README.read_text())
    assert not re.search(r"\b\d{1,2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]* 20\d\d\b", text)
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text)
    assert not re.search(r"\b[0-9a-f]{7,40}\b", text), "a commit hash"
    for words in ("since fixed", "before this change", "measured on", "was measured", "no longer", "used to "):
        assert words not in text.lower(), words
    counts = re.findall(r"\b(\d[\d,]*) tests\b", text)
    assert not counts, counts  # test counts live in tests/README.md, measured, once


def test_every_benchmark_has_its_current_table_with_date_and_command() -> None:
    text = (REPO / "tests" / "bench" / "README.md").read_text()
    sections = {heading: body for heading, body in re.findall(r"^## ([^\n]+)\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)}
    scripts = sorted(path.name for path in (REPO / "tests" / "bench").glob("bench_*.py"))
    for script in scripts:
        heading = next((heading for heading in sections if f"`{script}`" in heading), None)
        assert heading is not None, f"no section for {script}"
        body = sections[heading]
        assert re.search(r"\bgoals?\b", body, flags=re.IGNORECASE), f"{heading}: no goal"
        assert re.search(r"\b\d{1,2} (Nov|Dec) 2026\b", body), f"{heading}: no date"
        assert f"python tests/bench/{script}" in body, f"{heading}: no command"
        assert "2-core machine" in body, f"{heading}: no machine"
