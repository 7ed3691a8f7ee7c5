"""The EPC allocator as the compiled core runs it (:mod:`epcsim.kernel.epc`): the
per-node free lists in ``S`` (at ``S_NODES``, ``NODE_*``: each a pristine range of
never-used pages, then the pages freed since, as :class:`epcsim.kernel.lru.EpcFreeList`),
the pool's arrays ``P32`` / ``P8`` / ``PCG``."""

from __future__ import annotations

from ..kernel.constants import SGX_NR_LOW_PAGES
from ..kernel.epc import KIND_FREE
from ._jit import inline
from .bits import _u, prefetch
from .epc_cgroup import sgx_cgroup_try_charge
from .layout import (
    CG_LIMIT,
    CG_NR_AGED,
    CG_NR_FREED,
    CG_NR_PAGES,
    CG_PARENT,
    CG_REFCNT,
    CG_USAGE,
    EBUSY,
    ENOMEM,
    IS_FREE,
    NODE_END,
    NODE_HEAD,
    NODE_HWM,
    NODE_NR,
    NODE_TAIL,
    NODE_W,
    P_FLAGS,
    P_KIND,
    P_NEXT,
    P_OE,
    P_OI,
    P_PREV,
    PAGE,
    S_CUR_NID,
    S_CUR_TCG,
    S_NNODES,
    S_NODES,
    S_NR_FREE,
    S_NR_LRU,
    S_SECT,
    S_WOKEN,
)
from .misc import misc_cg_uncharge

__all__ = [
    "_count_freed",
    "_sgx_alloc_epc_page",
    "_sgx_free_epc_page_to_node",
    "sgx_alloc_epc_page",
    "stuck_watch",
    "sgx_free_epc_page",
]


@inline
def _sgx_alloc_epc_page(S, P32, P8, PCG):
    """Models __sgx_alloc_epc_page() (specialised from
    epcsim.kernel.epc._sgx_alloc_epc_page): the head of the local node's free list,
    else of the following nodes, wrapping; a list's head is the first page of its
    pristine range while that is non-empty (its row written now, as
    epcsim.kernel.epc._sgx_alloc_epc_page_from_node does), else the first page freed
    since.  Returns the page or -ENOMEM."""
    nodes = S[S_NNODES]
    nid0 = S[S_CUR_NID] if 0 <= S[S_CUR_NID] < nodes else 0
    nid = nid0
    while True:
        b = S_NODES + NODE_W * nid
        i = S[_u(b + NODE_HWM)]
        if i < S[_u(b + NODE_END)]:
            S[_u(b + NODE_HWM)] = i + 1
            P32[_u(i), P_PREV] = i
            P32[_u(i), P_NEXT] = i
            P32[_u(i), P_OE] = -1
            P32[_u(i), P_OI] = -1
            PCG[_u(i)] = -1
            P8[_u(i), P_KIND] = KIND_FREE
            S[_u(b + NODE_NR)] -= 1
            P8[_u(i), P_FLAGS] = 0
            S[S_NR_FREE] -= 1
            return i
        i = S[_u(b + NODE_HEAD)]
        if i >= 0:
            n = P32[_u(i), P_NEXT]
            S[_u(b + NODE_HEAD)] = n
            if n < 0:
                S[_u(b + NODE_TAIL)] = -1
            else:
                P32[_u(n), P_PREV] = -1
                prefetch(P8, n, P_FLAGS)  # the next allocation's
                prefetch(P32, n, P_PREV)
            P32[_u(i), P_PREV] = i
            P32[_u(i), P_NEXT] = i
            S[_u(b + NODE_NR)] -= 1
            P8[_u(i), P_FLAGS] = 0
            S[S_NR_FREE] -= 1
            return i
        nid = (nid + 1) % nodes
        if nid == nid0:
            return -ENOMEM


@inline
def _sgx_free_epc_page_to_node(S, P32, P8, PCG, page):
    """Models _sgx_free_epc_page_to_node() (specialised from
    epcsim.kernel.epc._sgx_free_epc_page_to_node), the second half of
    sgx_free_epc_page(): owner cleared, tail of the page's node's free list, IS_FREE."""
    PCG[_u(page)] = -1
    P8[_u(page), P_KIND] = KIND_FREE
    P32[_u(page), P_OE] = -1
    P32[_u(page), P_OI] = -1
    nid = 0
    for k in range(1, S[S_NNODES]):
        if S[_u(S_SECT + k)] <= page:
            nid = k
    b = S_NODES + NODE_W * nid
    t = S[_u(b + NODE_TAIL)]
    P32[_u(page), P_PREV] = t
    P32[_u(page), P_NEXT] = -1
    if t < 0:
        S[_u(b + NODE_HEAD)] = page
    else:
        P32[_u(t), P_NEXT] = page
    S[_u(b + NODE_TAIL)] = page
    S[_u(b + NODE_NR)] += 1
    P8[_u(page), P_FLAGS] = IS_FREE
    S[S_NR_FREE] += 1


@inline
def _count_aged(CG, c, n):
    """Models _count_aged() (specialised from epcsim.kernel.epc._count_aged; model
    statistics, no kernel function): *n* pages of *c*'s LRU were found young; counted in
    CG_NR_AGED of *c* and of every ancestor."""
    while c >= 0:
        CG[CG_NR_AGED, _u(c)] += n
        c = CG[CG_PARENT, _u(c)]


@inline
def _count_freed(CG, c, n):
    """Models _count_freed() (specialised from epcsim.kernel.epc._count_freed; model
    statistics, no kernel function): *n* pages charged to *c* were freed; counted in
    CG_NR_FREED of *c* and of every ancestor."""
    while c >= 0:
        CG[CG_NR_FREED, _u(c)] += n
        c = CG[CG_PARENT, _u(c)]


@inline
def stuck_watch(CG, c):
    """Models stuck_watch() (specialised from epcsim.kernel.epc.stuck_watch; model
    statistics, no kernel function): the first of *c* and its ancestors whose limit
    (CG_LIMIT: max and the capacity) one more page would exceed, and its CG_NR_FREED +
    CG_NR_AGED; (-1, 0) if a page fits."""
    while c >= 0:
        if CG[CG_USAGE, _u(c)] + PAGE > CG[CG_LIMIT, _u(c)]:
            return c, CG[CG_NR_FREED, _u(c)] + CG[CG_NR_AGED, _u(c)]
        c = CG[CG_PARENT, _u(c)]
    return -1, 0


@inline
def sgx_alloc_epc_page(S, CG, P32, P8, PCG, e, kind, oidx):
    """Models sgx_alloc_epc_page() (specialised from epcsim.kernel.epc.sgx_alloc_epc_page)
    with SGX_NO_RECLAIM for the faulting thread's task: sgx_get_current_cg(),
    sgx_cgroup_try_charge(), __sgx_alloc_epc_page(), and the wake-up of ksgxd.  Returns
    the page or -ENOMEM / -EBUSY."""
    c = S[S_CUR_TCG]
    CG[CG_REFCNT, _u(c)] += 1  # sgx_get_current_cg()
    ret = sgx_cgroup_try_charge(S, CG, c)
    if ret:
        return ret
    page = _sgx_alloc_epc_page(S, P32, P8, PCG)
    if page >= 0:
        P8[_u(page), P_KIND] = kind
        P32[_u(page), P_OE] = e
        P32[_u(page), P_OI] = oidx
        PCG[_u(page)] = c
        CG[CG_NR_PAGES, _u(c)] += 1
    else:
        if S[S_NR_LRU] > 0:  # sgx_can_reclaim_global(), NO_RECLAIM
            page = -EBUSY
        misc_cg_uncharge(CG, c, PAGE)
        CG[CG_REFCNT, _u(c)] -= 1
    if S[S_NR_FREE] < SGX_NR_LOW_PAGES and S[S_NR_LRU] > 0:
        S[S_WOKEN] = 1  # sgx_should_reclaim_global(SGX_NR_LOW_PAGES): wake_up(ksgxd)
    return page


@inline
def sgx_free_epc_page(S, CG, P32, P8, PCG, page):
    """Models sgx_free_epc_page() (specialised from epcsim.kernel.epc.sgx_free_epc_page):
    uncharge, drop the css reference, free."""
    c = PCG[_u(page)]
    if c >= 0:
        CG[CG_NR_PAGES, _u(c)] -= 1
        _count_freed(CG, c, 1)
        misc_cg_uncharge(CG, c, PAGE)
        CG[CG_REFCNT, _u(c)] -= 1
    _sgx_free_epc_page_to_node(S, P32, P8, PCG, page)
