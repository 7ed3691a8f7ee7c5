"""The LRU lists of the compiled core: list operations on the EPC pool's links
(:mod:`epcsim.kernel.lru`), and the prefetch walk of the next isolation."""

from __future__ import annotations

from ..kernel.constants import SGX_NR_TO_SCAN
from ._jit import inline
from .bits import _u, prefetch
from .layout import CG_LRU_HEAD, CG_LRU_NR, CG_LRU_TAIL, P_NEXT, P_PREV, S_LRU_PF, S_LRU_PF_N

__all__ = ["LRU_PF_HOPS", "PF_AHEAD", "list_add_tail", "list_del_init", "lru_prefetch_step"]

#: accesses after a fault whose enclave page rows are prefetched
PF_AHEAD = 4
#: rows of an LRU the prefetch walk reads ahead of its next isolation
LRU_PF_HOPS = 2 * SGX_NR_TO_SCAN


@inline
def list_add_tail(CG, P32, c, i):
    """Models list_add_tail() (specialised from epcsim.kernel.lru.EpcList.add_tail) on
    cgroup *c*'s LRU."""
    t = CG[CG_LRU_TAIL, _u(c)]
    P32[_u(i), P_PREV] = t
    P32[_u(i), P_NEXT] = -1
    if t < 0:
        CG[CG_LRU_HEAD, _u(c)] = i
    else:
        P32[_u(t), P_NEXT] = i
    CG[CG_LRU_TAIL, _u(c)] = i
    CG[CG_LRU_NR, _u(c)] += 1


@inline
def list_del_init(CG, P32, c, i):
    """Models list_del_init() (specialised from epcsim.kernel.lru.EpcList.del_init) on
    cgroup *c*'s LRU."""
    p = P32[_u(i), P_PREV]
    n = P32[_u(i), P_NEXT]
    if p < 0:
        CG[CG_LRU_HEAD, _u(c)] = n
    else:
        P32[_u(p), P_NEXT] = n
    if n < 0:
        CG[CG_LRU_TAIL, _u(c)] = p
    else:
        P32[_u(n), P_PREV] = p
    P32[_u(i), P_PREV] = i
    P32[_u(i), P_NEXT] = i
    CG[CG_LRU_NR, _u(c)] -= 1


@inline
def lru_prefetch_step(S, P32):
    """No kernel twin (prefetch): one hop of the LRU's prefetch walk.  The next
    isolation follows the list from its head one row at a time, each row a cache miss;
    between isolations the enclave threads' faults walk the same rows ahead of it, one
    per fault, asking for the next row while this one is (by then, a fault later) in the
    cache.  (Once per step, hit runs of a few accesses came back before the row did and
    waited for it.)  A hint only: a link that has changed since (a page isolated, freed,
    moved) at worst asks for a row nobody reads."""
    x = S[S_LRU_PF]
    if x >= 0:
        nx = P32[_u(x), P_NEXT]
        left = S[S_LRU_PF_N] - 1
        if nx >= 0 and nx != x and left > 0:
            prefetch(P32, nx, P_PREV)
            S[S_LRU_PF] = nx
            S[S_LRU_PF_N] = left
        else:
            S[S_LRU_PF] = -1
