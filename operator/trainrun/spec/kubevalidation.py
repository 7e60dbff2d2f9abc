"""What the API server's validation checks in a replica pod, checked before the run starts.

A TrainingRun's labels, annotations, node selector and tolerations become a pod's, and a pod the API
server refuses is never created: the run would wait for replicas that can never exist. These are the
rules of k8s.io/apimachinery/pkg/util/validation (IsQualifiedName, IsValidLabelValue) and of
ValidateTolerations, each as a function that says in words what is wrong (for ``trainrun validate``
and the operator, through ``trainrun.spec.model``) and as a pattern or CEL rule the CRD carries. The
patterns are RE2 and Python alike: no construct either reads otherwise. Pure.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import JsonValue

NAME_MAX = 63
PREFIX_MAX = 253
# [prefix/]name: the longest a key can be.
QUALIFIED_NAME_MAX = PREFIX_MAX + 1 + NAME_MAX
LABEL_VALUE_MAX = 63
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_BOUNDED_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
# An RFC 1123 subdomain: a key's prefix, and the name of most objects.
DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
QUALIFIED_NAME_PATTERN = rf"^({DNS_SUBDOMAIN}/)?{_BOUNDED_NAME}$"
LABEL_VALUE_PATTERN = rf"^({_BOUNDED_NAME})?$"
# An extended resource (the GPU): a qualified name with a domain prefix, e.g. amd.com/gpu.
RESOURCE_NAME_PATTERN = rf"^{DNS_SUBDOMAIN}/{_BOUNDED_NAME}$"
_NAME_WORDS = "letters, digits, '-', '_' and '.', starting and ending with a letter or digit"


def qualified_name_problem(key: str) -> str | None:
    """Why ``key`` is not a label or annotation key (``[prefix/]name``), or None when it is one. The
    message does not repeat the key: the field it belongs to names it."""
    prefix, slash, name = key.rpartition("/")
    invalid = "is not a valid key:"
    if slash and "/" in prefix:
        return f"{invalid} it has more than one '/'; write [prefix/]name, e.g. team or example.com/team"
    if slash and not re.fullmatch(DNS_SUBDOMAIN, prefix):
        return (
            f"{invalid} its prefix {prefix!r} is not a DNS subdomain (lower-case letters, digits, '-' and '.'), "
            "e.g. example.com/team"
        )
    if len(prefix) > PREFIX_MAX:
        return f"{invalid} its prefix has {len(prefix)} characters; at most {PREFIX_MAX}"
    if len(name) > NAME_MAX:
        return f"{invalid} its name (after any prefix/) has {len(name)} characters; at most {NAME_MAX}"
    if not re.fullmatch(_NAME, name):
        return f"{invalid} its name must be {_NAME_WORDS}, e.g. team or example.com/team"
    return None


def label_value_problem(value: str) -> str | None:
    """Why ``value`` is not a label value (at most 63 characters, may be empty), or None when it is one."""
    if len(value) > LABEL_VALUE_MAX:
        return f"value {_shown(value)} is {len(value)} characters; a label value has at most {LABEL_VALUE_MAX}"
    if value and not re.fullmatch(_NAME, value):
        return f"value {_shown(value)} is not a valid label value: use {_NAME_WORDS} (or leave it empty)"
    return None


def toleration_problems(key: str | None, operator: str, value: str | None, effect: str | None, seconds: int | None) -> list[str]:
    """What ValidateTolerations refuses in a toleration, beside its key and value taken alone."""
    problems = []
    if operator == "Exists" and value:
        problems.append(
            f"value {value!r} must be empty when operator is Exists (Exists matches every value of the key): "
            "remove the value, or use operator: Equal"
        )
    if not key and operator != "Exists":
        problems.append("a toleration without a key must have operator: Exists (it then tolerates every taint)")
    if seconds is not None and effect != "NoExecute":
        problems.append("tolerationSeconds applies to effect NoExecute only: set effect: NoExecute or remove it")
    return problems


# The same rules for the API server: CEL on a toleration of the CRD.
TOLERATION_RULES: list[JsonValue] = [
    {
        "rule": "!(self.operator == 'Exists' && has(self.value) && self.value != '')",
        "message": "value must be empty when operator is Exists (Exists matches every value of the key)",
    },
    {
        "rule": "(has(self.key) && self.key != '') || self.operator == 'Exists'",
        "message": "a toleration without a key must have operator: Exists (it then tolerates every taint)",
    },
    {
        "rule": "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
        "message": "tolerationSeconds applies to effect NoExecute only",
    },
]


def key_rule(what: str) -> dict[str, Any]:
    """The CEL rule of a map whose keys are qualified names (``what``: label, annotation, node label)."""
    return {
        "rule": f"self.all(k, k.matches(r'{QUALIFIED_NAME_PATTERN}') && (!k.contains('/') || k.matches(r'^[^/]{{1,{PREFIX_MAX}}}/')))",
        "message": f"every {what} key must be [prefix/]name: the name at most {NAME_MAX} {_NAME_WORDS}, "
        f"the prefix a DNS subdomain of at most {PREFIX_MAX} characters",
    }


def _shown(value: str) -> str:
    return repr(value) if len(value) <= 80 else repr(value[:77] + "...")
