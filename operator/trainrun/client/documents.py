"""Reading TrainingRuns, TrainingSweeps and operator configurations from what a user hands over.

A TrainingRun may come as a dict, a YAML string, a path (``-`` is stdin), an open stream or a parsed
``TrainingRun``; a file may hold several YAML documents, of which the TrainingRun ones are used. The
operator configuration is the YAML of the ConfigMap ``trainrun-operator-config`` (or its
``config.yaml`` key alone). Used by ``trainrun.Client`` and the CLI; judging the documents is left to
``trainrun.spec``.
"""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from trainrun.spec import OperatorConfig, TrainingRun, parse_operator_config
from trainrun.spec.config import CONFIG_MAP_KEY
from trainrun.spec.model import KIND
from trainrun.spec.sweep import SWEEP_KIND

Document = dict[str, Any]
Source = Mapping[str, Any] | str | Path | TrainingRun | TextIO


class DocumentError(ValueError):
    """A file or string that does not hold what it should: a clear one-line message, and for a YAML
    syntax error the ``excerpt`` that shows where (the line, a caret under the column)."""

    def __init__(self, message: str, *, excerpt: str | None = None) -> None:
        super().__init__(message)
        self.excerpt = excerpt


def read_yaml_documents(source: str | Path | TextIO) -> list[Any]:
    """Every YAML document of a file, of stdin (``-``), of a stream, or of a YAML string."""
    if isinstance(source, Path) or (isinstance(source, str) and _looks_like_path(source)):
        path = str(source)
        if path == "-":
            text, where = sys.stdin.read(), "stdin"
        else:
            try:
                text, where = Path(path).read_text(), path
            except FileNotFoundError:
                raise DocumentError(f"{path}: no such file") from None
            except OSError as error:
                raise DocumentError(f"{path}: {error.strerror}") from None
    elif isinstance(source, str):
        text, where = source, "the YAML string"
    else:
        text, where = source.read(), getattr(source, "name", "the stream")
    try:
        return [document for document in yaml.safe_load_all(text) if document is not None]
    except yaml.YAMLError as error:
        raise yaml_syntax_error(error, text=text, where=where) from None


def yaml_syntax_error(error: yaml.YAMLError, *, text: str, where: str) -> DocumentError:
    """``run.yaml:5:11: not valid YAML: mapping values are not allowed here``, with the line and a caret under the column
    (as compilers show it); PyYAML's own text names the source ``<unicode string>`` and loses the layout."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if mark is None or problem is None:
        return DocumentError(f"{where} is not valid YAML: {' '.join(str(error).split())}")
    lines = text.splitlines() or [""]
    line, column = mark.line, mark.column
    if line >= len(lines):  # the end of the text: just after its last character
        line, column = len(lines) - 1, len(lines[-1])
    context, context_mark = getattr(error, "context", None), getattr(error, "context_mark", None)
    message = f"{where}:{line + 1}:{column + 1}: not valid YAML: {problem}"
    if context and context_mark is not None and context_mark.line != line:
        message += f" ({context} that starts at line {context_mark.line + 1})"
    elif context:
        message += f" ({context})"
    number = str(line + 1)
    excerpt = f"  {number} | {lines[line]}\n  {' ' * len(number)} | {' ' * column}^"
    return DocumentError(message, excerpt=excerpt)


def training_run_documents(source: Source, overrides: Sequence[str] = ()) -> list[Document]:
    """The TrainingRun documents of source, as dicts (not yet validated), with ``--set`` overrides applied."""
    if isinstance(source, TrainingRun):
        runs = [source.model_dump(mode="json", by_alias=True, exclude_none=True)]
    elif isinstance(source, Mapping):
        runs = [dict(source)]
    else:
        documents = read_yaml_documents(source)
        runs = [dict(item) for item in documents if isinstance(item, Mapping) and item.get("kind") == KIND]
        if not runs:
            kinds = sorted({str(item.get("kind")) for item in documents if isinstance(item, Mapping)})
            found = f" (kinds found: {', '.join(kinds)})" if kinds else ""
            raise DocumentError(f"{_describe(source)} holds no {KIND} document{found}; add one with kind: {KIND}")
    return [apply_overrides(run, overrides) for run in runs]


def apply_overrides(document: Mapping[str, Any], overrides: Sequence[str]) -> Document:
    """A copy of document with each ``PATH=VALUE`` set, as ``az ml job create --set`` and ``helm --set`` do.

    PATH is dotted, with ``[N]`` (or ``.N``) for list items and ``\\.`` for a dot inside a key; it
    starts at the document when its first key is apiVersion, kind, metadata or spec, else at spec
    (``hyperparameters.epochs=1`` is ``spec.hyperparameters.epochs=1``). VALUE is read as YAML
    (``1`` a number, ``true`` a boolean, ``[a, b]`` a list) unless the field holds a string already,
    which stays a string; an empty VALUE removes the field.
    """
    result: Document = copy.deepcopy(dict(document))
    for override in overrides:
        path_text, equals, value_text = override.partition("=")
        keys = _override_path(path_text)
        if not equals or not keys:
            raise DocumentError(f"--set {override!r}: write PATH=VALUE, e.g. --set hyperparameters.epochs=1")
        if keys[0] not in _TOP_LEVEL_KEYS:
            keys = ["spec", *keys]
        try:
            value = yaml.safe_load(value_text) if value_text.strip() else None
        except yaml.YAMLError:
            value = value_text  # not YAML on its own (e.g. "a: b: c"): the text as it is
        _set_path(result, keys, value, value_text, override)
    return result


_TOP_LEVEL_KEYS = frozenset({"apiVersion", "kind", "metadata", "spec"})
_PATH_PART = re.compile(r"((?:[^.\[\]\\]|\\.)+)|\[(\d+)\]")


def _override_path(text: str) -> list[str | int]:
    keys: list[str | int] = []
    position = 0
    text = text.strip()
    while position < len(text):
        if text[position] == "." and keys:
            position += 1
        match = _PATH_PART.match(text, position)
        if match is None:
            return []
        name, index = match.groups()
        if index is not None:
            keys.append(int(index))
        else:
            unescaped = name.replace("\\.", ".")
            keys.append(int(unescaped) if unescaped.isdigit() else unescaped)
        position = match.end()
    return keys


def _set_path(document: Document, keys: list[str | int], value: Any, raw: str, override: str) -> None:
    """Walk keys (making missing mappings and lists on the way), then set, or remove when value is None."""
    node: Any = document
    for depth, key in enumerate(keys):
        if isinstance(key, int):
            if not isinstance(node, list) or key > len(node) or (key == len(node) and value is None):
                where = ".".join(str(part) for part in keys[: depth + 1])
                size = len(node) if isinstance(node, list) else "no"
                raise DocumentError(f"--set {override!r}: {where} is not an item of a list ({size} items there)")
            if key == len(node):
                node.append(None)
        elif not isinstance(node, dict):
            parent = ".".join(str(part) for part in keys[:depth])
            raise DocumentError(f"--set {override!r}: {parent} holds {node!r}, not a mapping with {key!r} in it")
        current = node[key] if isinstance(key, int) else node.get(key)
        if depth == len(keys) - 1:
            if value is None and isinstance(key, int):
                del node[key]
            elif value is None:
                node.pop(key, None)
            else:
                # A field that holds a string keeps one (extra.steps: "200" stays "120", not 120).
                node[key] = raw if isinstance(current, str) else value
            return
        if current is None:
            node[key] = {} if isinstance(keys[depth + 1], str) else []
        node = node[key]


def single_training_run(source: Source, overrides: Sequence[str] = ()) -> Document:
    """The one TrainingRun of source (several are an error: say which file to split)."""
    runs = training_run_documents(source, overrides)
    if len(runs) > 1:
        names = ", ".join(str(run.get("metadata", {}).get("name")) for run in runs)
        raise DocumentError(f"{_describe(source)} holds {len(runs)} TrainingRuns ({names}); this takes one")
    return runs[0]


def single_training_sweep(source: str | Path | TextIO | Mapping[str, Any]) -> Document:
    """The one TrainingSweep of source, a dict or YAML (not yet validated)."""
    if isinstance(source, Mapping):
        return dict(source)
    documents = read_yaml_documents(source)
    sweeps = [dict(item) for item in documents if isinstance(item, Mapping) and item.get("kind") == SWEEP_KIND]
    if len(sweeps) != 1:
        kinds = sorted({str(item.get("kind")) for item in documents if isinstance(item, Mapping)})
        found = f" (kinds found: {', '.join(kinds)})" if kinds else ""
        raise DocumentError(f"{_describe(source)} holds {len(sweeps)} {SWEEP_KIND} documents{found}; this takes one")
    return sweeps[0]


def load_operator_config(path: str | Path | None) -> OperatorConfig | None:
    """The operator configuration in a file: the ConfigMap, or the ``config.yaml`` document alone."""
    if path is None:
        return None
    documents = read_yaml_documents(Path(path))
    if len(documents) != 1 or not isinstance(documents[0], Mapping):
        raise DocumentError(f"{path} must hold one YAML mapping: the operator configuration (pools, defaultPool)")
    document = documents[0]
    if document.get("kind") == "ConfigMap":
        embedded = (document.get("data") or {}).get(CONFIG_MAP_KEY)
        if embedded is None:
            raise DocumentError(f"{path}: the ConfigMap has no data.{CONFIG_MAP_KEY}")
        document = yaml.safe_load(embedded) or {}
    from pydantic import ValidationError

    from trainrun.spec.errors import InvalidTrainingRun, problems_from_validation_error

    try:
        return parse_operator_config(dict(document))
    except ValidationError as error:
        raise InvalidTrainingRun(problems_from_validation_error(error, prefix=f"{path}: ")) from None


def example_operator_config() -> OperatorConfig:
    """The example pools shipped with the package (a100, t4, cpu: those of manifests/base/config.yaml)."""
    from importlib.resources import files

    text = files("trainrun").joinpath("data", "config.yaml").read_text(encoding="utf-8")
    return parse_operator_config(yaml.safe_load(text))


def _looks_like_path(text: str) -> bool:
    return text == "-" or ("\n" not in text and ":" not in text.split("/")[0] and not text.lstrip().startswith("{"))


def _describe(source: Source) -> str:
    if isinstance(source, (str, Path)) and _looks_like_path(str(source)):
        return "stdin" if str(source) == "-" else str(source)
    return "the document"
