"""Compiled first-seen numbering for :class:`~epcsim.workload.traces.DenseMapper`'s
table mode (numba): one pass over a chunk instead of a sort of its new pages."""

from __future__ import annotations

from numba import njit


@njit(cache=True, _nrt=False)
def number_chunk(table, chunk, out, order, n, top):  # pragma: no cover - compiled
    """Dense numbers of *chunk* into *out* (uint16 or int32), numbering pages not in
    *table* (-1) as n, n+1, ... in the order of their first access; new pages go to
    *order*.  Returns the number of new pages, or -(k + 1) as soon as a new page's
    number would be above *top* (the largest *out* holds; n <= top + 1), its k new
    pages before it numbered in *table* and listed in *order*."""
    k = 0
    for i in range(chunk.shape[0]):
        p = chunk[i]
        c = table[p]
        if c < 0:
            c = n + k
            if c > top:
                return -(k + 1)
            table[p] = c
            order[k] = p
            k += 1
        out[i] = c
    return k
