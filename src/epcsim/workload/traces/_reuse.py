"""Exact reuse (LRU stack) distances, streamed, with a Fenwick tree over positions.

The reuse distance of a re-access is the number of distinct other pages accessed since
the previous access to the same page.  Keep a mark at the latest position of every page
seen; the distance of the access at time t to a page last accessed at p is the number
of marks after p (each is a distinct page accessed since p; none is after t): the marks
so far minus the marks up to p, a prefix count; then the mark moves from p to t.
O(log n) per access, compiled with numba.

The marks are a bitmap (64 positions a word) under a Fenwick (binary indexed) tree of
per-word counts: a prefix count is the tree's prefix over whole words plus a popcount
in the last word, and the tree is 64 times smaller than one over positions, so both fit
in the CPU's caches for footprints of millions of pages.

The positions are a window: when time reaches its end, the live marks (one per page
seen) are renumbered 1..F in their order and a window of max(2F, F + 2**16) positions
is rebuilt, so memory is O(footprint), not O(accesses), and the rebuilds cost O(1) per
access amortised.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["ReuseDistances"]

#: the smallest window (positions)
_MIN_TREE = 1 << 16

_ONE = np.uint64(1)
_SIX = np.uint64(6)
_63 = np.uint64(63)
_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)


@njit(cache=True, _nrt=False, inline="always")
def _popcount(x):  # pragma: no cover - compiled
    x = x - ((x >> _ONE) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return np.int64((x * _H01) >> np.uint64(56))


@njit(cache=True, _nrt=False)
def _run(pages, start, last, words, tree, owner, state, hist, out):  # pragma: no cover
    """Distances of ``pages[start:]`` until the window's positions run out; returns the
    index reached.  ``state`` = [time, marks, distances recorded into *out* (when it
    has room)]; ``last[x]`` is the position (1-based) of page x's latest access, 0 when
    not seen; ``words`` the marks' bitmap, ``tree`` the Fenwick tree of the counts of
    its words before the one holding the time (word w at index w + 1; that last word
    joins when it is full, one tree update per 64 accesses instead of one each),
    ``owner[q]`` the page accessed at position q."""
    cap = words.shape[0] * 64 - 1
    nt = tree.shape[0] - 1
    t = state[0]
    live = state[1]
    k = state[2]
    cur = t >> 6  # the word being filled: not in the tree yet
    i = start
    n = pages.shape[0]
    while i < n and t < cap:
        x = pages[i]
        p = last[x]
        if p > 0:
            w = p >> 6
            b = np.uint64(p) & _63
            m = ((_ONE << b) - _ONE) | (_ONE << b)
            s = _popcount(words[w] & m)
            j = w
            while j > 0:
                s += tree[j]
                j -= j & -j
            d = live - s
            hist[d] += 1
            if k < out.shape[0]:
                out[k] = d
            k += 1
            words[w] &= ~(_ONE << b)
            if w < cur:
                j = w + 1
                while j <= nt:
                    tree[j] -= 1
                    j += j & -j
        else:
            live += 1
        t += 1
        w = t >> 6
        if w != cur:  # the word filled: its marks go to the tree
            c = _popcount(words[cur])
            j = cur + 1
            while j <= nt:
                tree[j] += c
                j += j & -j
            cur = w
        words[w] |= _ONE << (np.uint64(t) & _63)
        last[x] = t
        owner[t] = x
        i += 1
    state[0] = t
    state[1] = live
    state[2] = k
    return i


@njit(cache=True, _nrt=False)
def _renumber(words, owner, t, last, new_owner):  # pragma: no cover - compiled
    """Renumber the marked positions up to *t* 1, 2, ... in their order (``last`` and
    ``new_owner`` of their pages); returns the marks."""
    n = 0
    for w in range(t // 64 + 1):
        bits = words[w]
        if bits == 0:
            continue
        for b in range(64):
            if (bits >> np.uint64(b)) & _ONE:
                n += 1
                x = owner[w * 64 + b]
                last[x] = n
                new_owner[n] = x
    return n


class ReuseDistances:
    """Exact reuse distances of a stream of pages numbered 0, 1, ... (dense numbers,
    e.g. from :class:`~epcsim.workload.traces.DenseMapper`), fed in chunks with
    :meth:`add`.  ``hist[d]`` counts the re-accesses at distance d (d < footprint)."""

    def __init__(self) -> None:
        self.last = np.zeros(1024, np.int64)
        self.hist = np.zeros(1024, np.int64)
        self._window(0)

    def _window(self, marks: int) -> None:
        """A fresh window with the positions 1..*marks* marked."""
        cap = max(2 * marks, marks + _MIN_TREE)
        nwords = cap // 64 + 1
        full, rest = divmod(marks + 1, 64)  # positions 0..marks; 0 is never marked
        words = np.zeros(nwords, np.uint64)
        counts = np.zeros(nwords, np.int64)
        words[:full] = np.uint64(2**64 - 1)
        counts[:full] = 64
        words[full] = np.uint64((1 << rest) - 1)  # full < nwords: cap > marks
        counts[full] = rest
        words[0] &= ~np.uint64(1)
        counts[0] -= 1
        counts[marks // 64] = 0  # the word being filled joins the tree when full
        # the Fenwick tree of the counts: tree[i] = counts[i - lowbit(i)] + ... + counts[i - 1]
        prefix = np.concatenate([np.zeros(1, np.int64), np.cumsum(counts)])
        i = np.arange(1, nwords + 1, dtype=np.int64)
        self.tree = np.zeros(nwords + 1, np.int32)
        self.tree[1:] = prefix[i] - prefix[i - (i & -i)]
        self.words = words
        self.owner = np.zeros(nwords * 64, np.int64)
        self._state = np.array([marks, marks, 0], np.int64)

    def _grow(self, pages: int) -> None:
        size = self.last.size
        while size < pages:
            size *= 2
        if size != self.last.size:
            self.last = np.concatenate([self.last, np.zeros(size - self.last.size, np.int64)])
            self.hist = np.concatenate([self.hist, np.zeros(size - self.hist.size, np.int64)])

    def _compact(self) -> None:
        """Renumber the live marks 1..F in their order, in a new window."""
        words, owner = self.words, self.owner
        t, f, k = (int(v) for v in self._state)
        self._window(f)
        _renumber(words, owner, t, self.last, self.owner)
        self._state[2] = k

    def add(self, pages: np.ndarray, *, record: bool = False) -> np.ndarray | None:
        """Feed the next *pages* (int64 dense numbers); with *record*, return the
        distances of their re-accesses in order."""
        pages = np.ascontiguousarray(pages, dtype=np.int64)
        if pages.size:
            self._grow(int(pages.max()) + 1)
        out = np.empty(pages.size if record else 0, np.int64)
        self._state[2] = 0
        i = 0
        while i < pages.size:
            i = _run(
                pages, i, self.last, self.words, self.tree, self.owner, self._state, self.hist, out
            )
            if i < pages.size:
                self._compact()
        return out[: self._state[2]] if record else None
