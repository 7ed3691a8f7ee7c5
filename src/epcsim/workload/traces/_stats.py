"""Trace statistics (``epcsim trace info``): accesses, footprint, reuse (LRU stack)
distances and the working-set size over time.

Reuse distance.  The distance of a re-access is the number of *distinct other* pages
accessed since the previous access to the same page (an immediate re-access has
distance 0), so an LRU cache of C pages hits it exactly when the distance is below C.
First accesses have no distance (they are the footprint's cold misses).

- **Exact** when the trace has at most *max_exact* accesses (10**8 by default): a
  Fenwick tree over positions holding a mark at the latest access of every page gives
  the distance of each re-access as the marks between its previous access and itself
  (:mod:`._reuse`, compiled: O(log n) per access, memory O(footprint)), streamed into a
  histogram of distances, from which the mean, percentiles and maximum are exact.
- **Sampled** beyond: spatially hashed sampling as SHARDS (Waldspurger et al.,
  FAST'15) does.  Pages whose 64-bit hash (splitmix64) falls under ``rate * 2**24``
  are kept, with ``rate = max_exact / accesses``; the exact distances of the sampled
  trace, divided by the rate, estimate the distances of the whole trace (capped at
  footprint - 1, the largest distance there is).  Labelled ``sampled``.

Working-set size.  Distinct pages in each window of *window* consecutive accesses
(tumbling windows; the last one may be shorter).  Not given, the window is a round
number (1, 2 or 5 x 10**k) giving about 20 windows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...errors import EpcsimUsageError
from ._base import PAGE_SIZE, TraceReader
from ._mapping import DenseMapper
from ._reuse import ReuseDistances

__all__ = ["auto_window", "stack_distances", "trace_stats"]

#: Exact reuse distances up to this many accesses (then sampled).
MAX_EXACT = 100_000_000
#: Windows ``auto_window`` aims at.
WINDOWS = 20
_HASH_BITS = 24


def auto_window(accesses: int, windows: int = WINDOWS) -> int:
    """The smallest 1/2/5 x 10**k window giving at most *windows* windows."""
    want = max(1, math.ceil(accesses / windows))
    k = 10 ** max(0, len(str(want)) - 1)
    for m in (1, 2, 5, 10):
        if m * k >= want:
            return m * k
    return 10 * k  # pragma: no cover - unreachable


def stack_distances(pages: np.ndarray) -> np.ndarray:
    """Exact LRU stack distances of the re-accesses of *pages* (any int64 page numbers),
    in the order of the re-accesses (see the module docstring)."""
    pages = np.asarray(pages, dtype=np.int64)
    if pages.size < 2:
        return np.zeros(0, np.int64)
    _, dense = np.unique(pages, return_inverse=True)
    out = ReuseDistances().add(dense.reshape(-1), record=True)
    assert out is not None
    return out


def _hash_keep(pages: np.ndarray, threshold: int) -> np.ndarray:
    """Mask of the pages whose splitmix64 hash's top 24 bits are below *threshold*."""
    z = pages.view(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(64 - _HASH_BITS)) < np.uint64(threshold)


def _distinct_rows(block: np.ndarray) -> np.ndarray:
    """Distinct values in each row of a 2-D array."""
    s = np.sort(block, axis=1)
    return 1 + np.count_nonzero(s[:, 1:] != s[:, :-1], axis=1)


def _quantile_index(n: int, q: float) -> int:
    """The 0-based rank NumPy's ``inverted_cdf`` method takes for quantile *q* of *n*
    sorted values (a value that occurs: no interpolation)."""
    index = np.float64(n) * q - 1
    prev = np.floor(index)
    k = int(prev) + (1 if index - prev > 0 else 0)
    return min(max(k, 0), n - 1)


def _summary(hist: np.ndarray, scale: float, cap: int) -> dict[str, Any]:
    """Mean, p50/p90/p99 (``inverted_cdf``: values that occur) and max of the distances
    counted in *hist* (``hist[d]`` re-accesses at distance d), divided by *scale* and
    capped at *cap*."""
    n = int(hist.sum())
    if n == 0:
        return {"mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    cum = np.cumsum(hist)
    ranks = [_quantile_index(n, q) for q in (0.5, 0.9, 0.99)]
    values = np.searchsorted(cum, np.array(ranks, np.int64) + 1, side="left").tolist()
    top = int(np.flatnonzero(hist)[-1])
    total = int(np.dot(hist, np.arange(hist.size, dtype=np.int64)))

    def est(v: int) -> int:
        return min(round(v / scale), cap)

    return {
        "mean": min(total / n / scale, cap),
        "p50": est(values[0]),
        "p90": est(values[1]),
        "p99": est(values[2]),
        "max": est(top),
    }


def trace_stats(
    reader: TraceReader, *, window: int | None = None, max_exact: int = MAX_EXACT
) -> dict[str, Any]:
    """Statistics of a trace, streamed (one pass, two when the reuse distances are
    sampled, plus a counting pass when *window* is not given and the format cannot
    count cheaply).

    Returns a dict: ``format``, ``path``, ``accesses``, ``footprint_pages``,
    ``footprint_bytes`` (pages x 4096), ``skipped``; ``reuse`` = {``method`` (``exact``
    or ``sampled``), ``rate``, ``reaccesses`` (accesses - footprint), ``sampled``
    (re-accesses measured), ``mean``, ``p50``, ``p90``, ``p99``, ``max``} in pages
    (None without re-accesses); ``window``, ``wss`` (distinct pages per window, a list),
    ``wss_min``, ``wss_mean``, ``wss_max``.
    """
    if window is None:
        window = auto_window(reader.count())
    if window <= 0:
        raise EpcsimUsageError(f"trace_stats: window must be > 0, got {window}")
    mapper = DenseMapper()
    exact: ReuseDistances | None = ReuseDistances()
    wss: list[np.ndarray] = []
    carry = np.zeros(0, np.int64)
    accesses = 0
    for chunk in reader.pages():
        dense = mapper.map(chunk)
        accesses += chunk.size
        if exact is not None:
            if accesses <= max_exact:
                exact.add(dense)
            else:
                exact = None  # too long: sampled in a second pass
        buf = np.concatenate([carry, dense]) if carry.size else dense
        k = buf.size // window
        if k:
            wss.append(_distinct_rows(buf[: k * window].reshape(k, window)))
        carry = buf[k * window :]
    if carry.size:
        wss.append(_distinct_rows(carry.reshape(1, -1)))
    skipped = reader.skipped
    footprint = mapper.footprint

    if exact is not None:
        hist = exact.hist
        rate = 1.0
        method = "exact"
    else:
        rate = max_exact / accesses
        threshold = max(1, round(rate * (1 << _HASH_BITS)))
        rate = threshold / (1 << _HASH_BITS)
        smapper = DenseMapper()
        sampled = ReuseDistances()
        for c in reader.pages():
            sampled.add(smapper.map(c[_hash_keep(c, threshold)]))
        hist = sampled.hist
        method = "sampled"
    w = np.concatenate(wss) if wss else np.zeros(0, np.int64)
    return {
        "format": reader.format_name,
        "path": str(reader.path),
        "accesses": accesses,
        "footprint_pages": footprint,
        "footprint_bytes": footprint * PAGE_SIZE,
        "skipped": skipped,
        "reuse": {
            "method": method,
            "rate": rate,
            "reaccesses": accesses - footprint,
            "sampled": int(hist.sum()),
            **_summary(hist, rate, max(footprint - 1, 0)),
        },
        "window": window,
        "wss": w.tolist(),
        "wss_min": int(w.min()) if w.size else 0,
        "wss_mean": float(w.mean()) if w.size else 0.0,
        "wss_max": int(w.max()) if w.size else 0,
    }
