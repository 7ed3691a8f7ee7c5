"""Trace statistics (``epcsim trace info``): accesses, footprint, reuse (LRU stack)
distances and the working-set size over time.

Reuse distance.  The distance of a re-access is the number of *distinct other* pages
accessed since the previous access to the same page (an immediate re-access has
distance 0), so an LRU cache of C pages hits it exactly when the distance is below C.
First accesses have no distance (they are the footprint's cold misses).

- **Exact** when the trace has at most *max_exact* accesses (10**6 by default): the
  distance of the re-access at position i whose previous access is p is
  ``(i - p - 1) - #{earlier re-accesses (p', i') with p' > p}`` (the accesses in between
  whose page is accessed again before i are the repeats), and that count is a
  per-element inversion count, done with a vectorised merge (log2(n) NumPy passes:
  about 1 s for 10**6 accesses).
- **Approximate** beyond: spatially hashed sampling as SHARDS (Waldspurger et al.,
  FAST'15) does.  Pages whose 64-bit hash (splitmix64) falls under ``rate * 2**24``
  are kept, with ``rate = max_exact / accesses``; the exact distances of the sampled
  trace, divided by the rate, estimate the distances of the whole trace.

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

__all__ = ["auto_window", "stack_distances", "trace_stats"]

#: Exact reuse distances up to this many accesses (then sampled).
MAX_EXACT = 1_000_000
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


def _greater_before(a: np.ndarray) -> np.ndarray:
    """``out[k] = #{j < k: a[j] > a[k]}`` (a of int64), by a bottom-up merge sort in
    NumPy: log2(n) levels, each a row-wise stable argsort of rows made of two sorted
    runs (linear in timsort).  In a merged row, an element of the right run that lands
    at position k and was j-th in its run has ``k - j`` elements of the left run before
    it, i.e. not greater than it (ties keep the left first); the other ``s - (k - j)``
    of the left run are greater, and every one of them came earlier in *a*.  The array
    is padded to a power of two at the end (the pads only meet each other)."""
    m = a.size
    if m < 2:
        return np.zeros(m, np.int64)
    size = 1 << (m - 1).bit_length()
    srt = np.full(size, np.iinfo(np.int64).max, np.int64)
    srt[:m] = a  # values, sorted within each block of s
    perm = np.arange(size, dtype=np.int64)  # their positions in a
    cnt = np.zeros(size, np.int64)
    s = 1
    while s < size:
        rows = size // (2 * s)
        order = np.argsort(srt.reshape(rows, 2 * s), axis=1, kind="stable")
        k = np.nonzero(order >= s)
        j = order[k] - s
        src = perm.reshape(rows, 2 * s)[k[0], order[k]]
        cnt[src] += s - (k[1] - j)
        srt = np.take_along_axis(srt.reshape(rows, 2 * s), order, axis=1).ravel()
        perm = np.take_along_axis(perm.reshape(rows, 2 * s), order, axis=1).ravel()
        s <<= 1
    return cnt[:m]


def stack_distances(pages: np.ndarray) -> np.ndarray:
    """Exact LRU stack distances of the re-accesses of *pages* (any int64 page numbers),
    in the order of the re-accesses (see the module docstring)."""
    pages = np.asarray(pages, dtype=np.int64)
    if pages.size < 2:
        return np.zeros(0, np.int64)
    order = np.argsort(pages, kind="stable")
    srt = pages[order]
    same = srt[1:] == srt[:-1]
    cur = order[1:][same]
    prev = order[:-1][same]
    by_pos = np.argsort(cur)
    cur, prev = cur[by_pos], prev[by_pos]
    return (cur - prev - 1) - _greater_before(prev)


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


def _summary(d: np.ndarray, scale: float) -> dict[str, Any]:
    if d.size == 0:
        return {"mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    x = d.astype(np.float64) / scale
    q = np.percentile(x, [50, 90, 99], method="inverted_cdf")
    return {
        "mean": float(x.mean()),
        "p50": round(float(q[0])),
        "p90": round(float(q[1])),
        "p99": round(float(q[2])),
        "max": round(float(x.max())),
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
    kept: list[np.ndarray] = []
    n_kept = 0
    keeping = True
    wss: list[np.ndarray] = []
    carry = np.zeros(0, np.int64)
    accesses = 0
    for chunk in reader.pages():
        dense = mapper.map(chunk)
        accesses += chunk.size
        if keeping:
            if n_kept + dense.size <= max_exact:
                kept.append(dense)
                n_kept += dense.size
            else:
                keeping, kept = False, []
        buf = np.concatenate([carry, dense]) if carry.size else dense
        k = buf.size // window
        if k:
            wss.append(_distinct_rows(buf[: k * window].reshape(k, window)))
        carry = buf[k * window :]
    if carry.size:
        wss.append(_distinct_rows(carry.reshape(1, -1)))
    skipped = reader.skipped
    footprint = mapper.footprint

    if keeping:
        d = stack_distances(np.concatenate(kept) if kept else np.zeros(0, np.int64))
        rate = 1.0
        method = "exact"
    else:
        rate = max_exact / accesses
        threshold = max(1, round(rate * (1 << _HASH_BITS)))
        rate = threshold / (1 << _HASH_BITS)
        smapper = DenseMapper()
        parts = [smapper.map(c[_hash_keep(c, threshold)]) for c in reader.pages()]
        d = stack_distances(np.concatenate(parts) if parts else np.zeros(0, np.int64))
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
            "sampled": int(d.size),
            **_summary(d, rate),
        },
        "window": window,
        "wss": w.tolist(),
        "wss_min": int(w.min()) if w.size else 0,
        "wss_mean": float(w.mean()) if w.size else 0.0,
        "wss_max": int(w.max()) if w.size else 0,
    }
