"""Kubernetes quantities (``8``, ``500m``, ``16Gi``, ``1e3``) read exactly as the API server reads them.

``parse_quantity`` follows k8s.io/apimachinery's ``resource.ParseQuantity`` step by step (its scanner,
its suffix table, and the few strings it refuses only on its slow path), because that is what the
CRD's CEL rule ``isQuantity()`` calls: ``trainrun validate`` and the API server must refuse the same
strings. It keeps the exact amount, so that a quantity too large for Kubernetes to count (``1e400``:
the scheduler and the kubelet read it in 64-bit thousandths, and it overflows) is refused like the CRD's
``quantity(self).compareTo(...)`` refuses it. tests/unit/test_spec_inputs.py holds the two to the same
verdicts on hand-picked and generated strings, asking the real parser through tests/kubecheck. Used by
``trainrun.spec.model``. Pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_SUFFIX_LETTERS = frozenset("eEinumkKMGTP")
_DIGITS = frozenset("0123456789")
_NANO = -9
_KEPT_DIGITS = 40
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


# The largest amount Kubernetes counts without overflow: 2^63 - 1 thousandths (a cpu's millicores, the
# scheduler's sums), about 9.2 x 10^15 of the unit.
QUANTITY_MAX = Fraction(2**63 - 1, 1000)
QUANTITY_MAX_TEXT = f"{2**63 - 1}m"


@dataclass(frozen=True)
class Amount:
    """A quantity's exact value: sign x coefficient x 10^decimal_exponent x 2^binary_exponent."""

    sign: int  # -1, 0 or 1
    coefficient: int = 0
    decimal_exponent: int = 0
    binary_exponent: int = 0

    def compare(self, limit: Fraction) -> int:
        """-1, 0 or 1 as the amount is below, at or above ``limit`` (more than 0)."""
        if self.sign <= 0:
            return -1
        # An exponent may have 19 digits: compare orders of magnitude before computing any value.
        digits = len(str(self.coefficient))
        magnitude = digits + self.decimal_exponent + self.binary_exponent * math.log10(2)
        bound = math.log10(limit)
        if magnitude - 1 > bound + 1:
            return 1
        if magnitude < bound - 1:
            return -1
        exact = self.coefficient * Fraction(10) ** self.decimal_exponent * Fraction(2) ** self.binary_exponent
        return (exact > limit) - (exact < limit)

    def exceeds(self, limit: Fraction) -> bool:
        return self.compare(limit) > 0


def parse_quantity(text: str) -> Amount | None:
    """The amount of a quantity the API server accepts; None for a string it refuses."""
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
        return None if slow else Amount(0)
    significant = (digits + fraction).lstrip("0")
    if not significant:
        return Amount(0)
    # Python reads at most 4300 digits as an int: keep the first ones, rounded up (a limit has far fewer
    # digits, so rounding up never takes an amount below it over it).
    kept = significant[:_KEPT_DIGITS].rstrip("0")
    dropped = len(significant) - len(kept)
    coefficient = int(kept) + (significant[len(kept) :].strip("0") != "")
    sign = -1 if text[0] == "-" else 1
    if suffix in _BINARY_SUFFIXES:
        return Amount(sign, coefficient, dropped - len(fraction), exponent)
    # ParseQuantity computes the decimal scale in 32 bits (int32, inf.Scale), wrapping as Go does: 1e4294967296
    # is 1, and 1e2147483648 is 10^2147483648.
    scale = _int32(len(fraction) + _int32(-_int32(exponent)))
    return Amount(sign, coefficient, dropped - scale)
