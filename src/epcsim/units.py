"""Sizes with units, as epcsim's users write them ("96MiB", "4KiB", "0x1000", 4096)."""

from __future__ import annotations

import re
from fractions import Fraction

from .errors import EpcsimError

__all__ = ["parse_size", "format_size", "parse_time", "format_time"]

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1000,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mb": 1000**2,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 1000**3,
    "gib": 1 << 30,
    "t": 1 << 40,
    "tb": 1000**4,
    "tib": 1 << 40,
    "p": 4096,
    "page": 4096,
    "pages": 4096,
}
#: longer numbers are refused before any conversion (Python's int() refuses past 4300
#: digits with a ValueError; no size or time of the model needs more than 20)
_MAX_DIGITS = 64
#: ASCII digits and spaces only (re.ASCII: Python's \d and \s also match other scripts'
#: digits and U+001C..U+001F); a hex number has at least one digit ("0x_" is not one)
_RE = re.compile(
    r"^\s*(0[xX]_*[0-9a-fA-F][0-9a-fA-F_]*|\d[\d_]*(?:\.\d+)?)\s*([A-Za-z]*)\s*$", re.ASCII
)


def parse_size(value: int | str, *, what: str = "size") -> int:
    """Parse a size in bytes: an int, or a string with an optional unit.

    Units: B, K/KiB (1024), KB (1000), M/MiB, MB, G/GiB, GB, T/TiB, TB, and "pages"
    (4096 bytes).  Hex without a unit is accepted ("0x1000").

    Raises:
        EpcsimError: naming *what* and the value, for anything else or a negative size.
    """
    if isinstance(value, bool):
        raise EpcsimError(f"{what}: expected a size, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise EpcsimError(f"{what}: size must not be negative, got {value}")
        return value
    if not isinstance(value, str):
        raise EpcsimError(f"{what}: expected a size, got {value!r}")
    m = _RE.match(value)
    if not m:
        raise EpcsimError(f"{what}: not a size: {value!r} (examples: 96MiB, 4KiB, 4096)")
    num, unit = m.group(1).replace("_", ""), m.group(2).lower()
    if unit not in _UNITS:
        raise EpcsimError(
            f"{what}: unknown unit {m.group(2)!r} in {value!r} (use B, KiB, MiB, GiB, TiB, "
            "KB, MB, GB, TB or pages)"
        )
    if len(num) > _MAX_DIGITS:
        raise EpcsimError(f"{what}: {value[:20]!r}... has more than {_MAX_DIGITS} digits")
    if num.lower().startswith("0x"):
        if unit not in ("", "b"):
            raise EpcsimError(f"{what}: a hex size takes no unit: {value!r}")
        return int(num, 16)
    out = Fraction(num) * _UNITS[unit]  # exact: "1.5KiB" is 1536, "0.1B" is refused
    if out.denominator != 1:
        raise EpcsimError(f"{what}: {value!r} is not a whole number of bytes")
    return int(out)


def format_size(n: int) -> str:
    """Bytes as the shortest exact binary-unit string (e.g. 100663296 -> "96MiB")."""
    for unit, mult in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n and n % mult == 0:
            return f"{n // mult}{unit}"
    return f"{n}B"


_TIME_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "min": 60_000_000_000,
}
_TRE = re.compile(r"^\s*(\d[\d_]*(?:\.\d+)?)\s*([a-zµ]*)\s*$", re.ASCII)


def parse_time(value: int | str, *, what: str = "time") -> int:
    """Parse a duration into nanoseconds: an int (ns) or "5us", "40ns", "1.5ms", "2s".

    Raises:
        EpcsimError: naming *what* and the value.
    """
    if isinstance(value, bool):
        raise EpcsimError(f"{what}: expected a time, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise EpcsimError(f"{what}: time must not be negative, got {value}")
        return value
    if not isinstance(value, str):
        raise EpcsimError(f"{what}: expected a time such as '5us' or '2s', got {value!r}")
    m = _TRE.match(value)
    if not m or m.group(2) not in _TIME_UNITS:
        raise EpcsimError(f"{what}: not a time: {value!r} (a number with ns, us, ms, s or min)")
    digits = m.group(1).replace("_", "")
    if len(digits) > _MAX_DIGITS:
        raise EpcsimError(f"{what}: {value[:20]!r}... has more than {_MAX_DIGITS} digits")
    num = Fraction(digits) * _TIME_UNITS[m.group(2)]  # exact, whatever the size
    if num.denominator != 1:
        raise EpcsimError(f"{what}: {value!r} is not a whole number of nanoseconds")
    return int(num)


def format_time(ns: int) -> str:
    """Nanoseconds as a short human string (e.g. 1500000 -> "1.5ms")."""
    for unit, mult in (("s", 1_000_000_000), ("ms", 1_000_000), ("us", 1_000)):
        if ns >= mult:
            v = ns / mult
            return f"{v:.3g}{unit}"
    return f"{ns}ns"
