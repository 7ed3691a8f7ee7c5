"""The compiled core's event heaps (no kernel twin: the reference engine's ``heapq``).

A binary heap on (t, seq) is three rows of an int64 table, by position: row h the
actor (thread or reclaimer slot), h + 1 its time, h + 2 its seq.  The threads' heap
is TH[TH_HEAP..], the scheduled reclaimers' R[R_HEAP..]; the actor's own time and seq
(TH_T / R_T, ...) are kept equal to its entry's."""

from __future__ import annotations

from ._jit import inline
from .bits import _u

__all__ = [
    "heap_pop_root",
    "heap_push",
    "heap_put",
    "heap_rekey_root",
    "heap_sift_down",
    "key_less",
]


@inline
def key_less(ta, sa, tb, sb):
    """No kernel twin (heap): (ta, sa) < (tb, sb)."""
    return ta < tb or (ta == tb and sa < sb)


@inline
def heap_put(A, h, pos, x, t, seq):
    """No kernel twin (heap): entry *pos* of the heap in rows h.. of *A* is actor *x*
    at (t, seq)."""
    A[_u(h), _u(pos)] = x
    A[_u(h + 1), _u(pos)] = t
    A[_u(h + 2), _u(pos)] = seq


@inline
def heap_sift_down(A, h, n, pos):
    """No kernel twin (heap): restore the heap in rows h.. of *A* (*n* entries) below
    *pos*, whose key grew."""
    x = A[_u(h), _u(pos)]
    xt = A[_u(h + 1), _u(pos)]
    xs = A[_u(h + 2), _u(pos)]
    while True:
        c = 2 * pos + 1
        if c >= n:
            break
        ct = A[_u(h + 1), _u(c)]
        cs = A[_u(h + 2), _u(c)]
        if c + 1 < n and key_less(A[_u(h + 1), _u(c + 1)], A[_u(h + 2), _u(c + 1)], ct, cs):
            c += 1
            ct = A[_u(h + 1), _u(c)]
            cs = A[_u(h + 2), _u(c)]
        if not key_less(ct, cs, xt, xs):
            break
        heap_put(A, h, pos, A[_u(h), _u(c)], ct, cs)
        pos = c
    heap_put(A, h, pos, x, xt, xs)


@inline
def heap_rekey_root(A, h, n, t, seq):
    """No kernel twin (heap): the root's actor is rescheduled at (t, seq)."""
    A[_u(h + 1), 0] = t
    A[_u(h + 2), 0] = seq
    heap_sift_down(A, h, n, 0)


@inline
def heap_pop_root(A, h, n):
    """No kernel twin (heap): take the root off a heap that has *n* entries left."""
    if n:
        heap_put(A, h, 0, A[_u(h), _u(n)], A[_u(h + 1), _u(n)], A[_u(h + 2), _u(n)])
        heap_sift_down(A, h, n, 0)


@inline
def heap_push(A, h, n, x, t, seq):
    """No kernel twin (heap): put actor *x* at (t, seq) on a heap of *n* entries (sift
    up)."""
    pos = n
    while pos > 0:
        up = (pos - 1) >> 1  # (pos - 1) // 2, pos > 0
        ut = A[_u(h + 1), _u(up)]
        us = A[_u(h + 2), _u(up)]
        if not key_less(t, seq, ut, us):
            break
        heap_put(A, h, pos, A[_u(h), _u(up)], ut, us)
        pos = up
    heap_put(A, h, pos, x, t, seq)
