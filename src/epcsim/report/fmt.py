"""Number formatting shared by the report's tables and figures.

One rule for every duration and ratio the report shows: three significant digits
(``8.10 µs`` beside ``41.2 µs``, ``1.00 ms``, ``56.1×``), so that no value looks more
precise than its neighbours.  Sizes are exact: whole KiB below 1 MiB (EPC sizes are
multiples of 4 KiB), MiB with two decimals above.
"""

from __future__ import annotations

import math

__all__ = ["MIB", "KIB", "fmt_bytes", "fmt_ns", "fmt_ratio", "sig3"]

KIB = 1 << 10
MIB = 1 << 20

#: (size of the unit in ns, its symbol), smallest first
_TIME_UNITS = ((1.0, "ns"), (1e3, "µs"), (1e6, "ms"), (1e9, "s"), (60e9, "min"), (3600e9, "h"))


def sig3(v: float) -> str:
    """*v* with three significant digits, in fixed notation (``8.10``, ``41.2``, ``150``);
    values of 1000 or more are rounded to a whole number with thousands separators."""
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else str(v)
    a = abs(v)
    if a >= 999.5:
        return f"{v:,.0f}"
    # the decimals that leave three significant digits once *v* is rounded to them
    decimals = max(0, 2 - math.floor(math.log10(a)))
    if abs(round(v, decimals)) >= 10 ** (3 - decimals):  # 9.996 -> 10.0, not 10.00
        decimals = max(0, decimals - 1)
    return f"{v:.{decimals}f}"


def fmt_ns(ns: int | float | None) -> str:
    """A duration or virtual-time instant in ns with three significant digits in the
    largest unit that keeps it at 1 or more (``8.22 ms``, ``3.00 µs``, ``10.0 min``);
    ``None`` as ``—``."""
    if ns is None:
        return "—"
    v = float(ns)
    if v == 0:
        return "0 ns"
    a = abs(v)
    i = 0
    while i + 1 < len(_TIME_UNITS) and a >= _TIME_UNITS[i + 1][0]:
        i += 1
    # rounding to three digits may reach the next unit: 999,600 ns is 1.00 ms
    while (
        i + 1 < len(_TIME_UNITS)
        and float(sig3(a / _TIME_UNITS[i][0]).replace(",", ""))
        >= _TIME_UNITS[i + 1][0] / _TIME_UNITS[i][0]
    ):
        i += 1
    size, unit = _TIME_UNITS[i]
    return f"{sig3(v / size)} {unit}"


def fmt_ratio(x: float | None) -> str:
    """A ratio such as a slowdown, three significant digits and ``×``; ``None`` as ``—``."""
    return "—" if x is None else f"{sig3(float(x))}×"


def fmt_bytes(n: int | float | None) -> str:
    """A size: ``max`` for ``None`` (no limit), whole KiB below 1 MiB, else MiB with two
    decimals (``192 KiB``, ``96.00 MiB``)."""
    if n is None:
        return "max"
    if abs(n) < MIB:
        kib = n / KIB
        return f"{kib:,.0f} KiB" if float(kib).is_integer() else f"{kib:,.2f} KiB"
    return f"{n / MIB:,.2f} MiB"
