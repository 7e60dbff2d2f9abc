"""Kubernetes quantities (``8``, ``500m``, ``16Gi``, ``1e3``) read exactly as the API server reads them.

``quantity_sign`` follows k8s.io/apimachinery's ``resource.ParseQuantity`` step by step (its scanner,
its suffix table, and the few strings it refuses only on its slow path), because that is what the
CRD's CEL rule ``isQuantity()`` calls: ``trainrun validate`` and the API server must refuse the same
strings. tests/unit/test_spec.py holds the two to the same verdicts on hand-picked and generated
strings, asking the real parser through tests/kubecheck. Used by ``trainrun.spec.model``. Pure.
"""

from __future__ import annotations

_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_SUFFIX_LETTERS = frozenset("eEinumkKMGTP")
_DIGITS = frozenset("0123456789")
_NANO = -9
_INT64 = 2**63


def _int32(value: int) -> int:
    """Go's int32(value): the low 32 bits, signed."""
    return (value + 2**31) % 2**32 - 2**31


def _decimal_exponent(suffix: str) -> int | None:
    """The exponent of an ``e``/``E`` suffix (Go's strconv.ParseInt on the rest), or None."""
    if len(suffix) < 2 or suffix[0] not in "eE":
        return None
    rest = suffix[1:]
    digits = rest[1:] if rest[0] in "+-" else rest
    if not digits or not set(digits) <= _DIGITS:
        return None
    exponent = int(rest)
    return exponent if -_INT64 <= exponent < _INT64 else None


def quantity_sign(text: str) -> int | None:
    """-1, 0 or 1 for a quantity the API server accepts; None for a string it refuses."""
    if not text:
        return None
    position = 1 if text[0] in "+-" else 0
    # The number: digits, then an optional fraction ("1", "1.5", "1.", ".5"; even "." or nothing).
    end = position
    while end < len(text) and text[end] in _DIGITS:
        end += 1
    digits = text[position:end]
    fraction = ""
    if end < len(text) and text[end] == ".":
        start = end + 1
        end = start
        while end < len(text) and text[end] in _DIGITS:
            end += 1
        fraction = text[start:end]
    # The suffix: letters of the suffix alphabet, then an optional sign and digits, then nothing.
    suffix_end = end
    while suffix_end < len(text) and text[suffix_end] in _SUFFIX_LETTERS:
        suffix_end += 1
    if suffix_end < len(text) and text[suffix_end] in "+-":
        suffix_end += 1
    while suffix_end < len(text) and text[suffix_end] in _DIGITS:
        suffix_end += 1
    if suffix_end != len(text):
        return None
    suffix = text[end:]
    exponent = _DECIMAL_SUFFIXES.get(suffix, _BINARY_SUFFIXES.get(suffix, _decimal_exponent(suffix)))
    if exponent is None:
        return None
    if not digits and not fraction:
        # Only ParseQuantity's slow path reads the number itself, and finds no digit in it. It takes that
        # path for a scale below nano, and for a binary suffix too large for its int64 fast path (Pi, Ei).
        if suffix in _BINARY_SUFFIXES:
            slow = 15 - 1 - exponent * 3 // 10 - 1 < 0
        else:
            slow = _int32(exponent) < _NANO
        return None if slow else 0
    if set(digits + fraction) <= {"0"}:
        return 0
    return -1 if text[0] == "-" else 1
