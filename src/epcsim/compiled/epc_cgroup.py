"""The EPC cgroup as the compiled core runs it (:mod:`epcsim.kernel.epc_cgroup`):
the subtree's LRUs, the charge, the cursor step, the worker's loop condition."""

from __future__ import annotations

from ..kernel.constants import SGX_CG_LOW_LIMIT, SGX_CG_MIN_FREE_PAGE, SGX_NR_LOW_PAGES
from ._jit import inline, outline
from .bits import _u
from .layout import (
    CG_CURSOR,
    CG_EVENTS,
    CG_EVENTS_LOCAL,
    CG_LRU_NR,
    CG_MAX,
    CG_MAXPAGES,
    CG_NR_ENOMEM,
    CG_PARENT,
    CG_PENDING,
    CG_PRE,
    CG_PREPOS,
    CG_REFCNT,
    CG_SUBEND,
    CG_USAGE,
    CG_WQ,
    EBUSY,
    ENOMEM,
    PAGE,
    POLICY_LIMIT_ONLY,
    S_NR_FREE,
    S_NR_LRU,
    S_NWQ,
    S_POLICY,
    S_WOKEN,
)
from .misc import misc_cg_try_charge

__all__ = [
    "_sgx_cgroup_try_charge",
    "sgx_cgroup_lru_empty",
    "sgx_cgroup_next_desc_pre",
    "sgx_cgroup_next_get",
    "sgx_cgroup_should_reclaim",
    "sgx_cgroup_try_charge",
    "sgx_cgroup_try_charge_limit_only",
    "sgx_cgroup_try_charge_reclaim",
]


@inline
def sgx_cgroup_lru_empty(S, CG, root):
    """Models sgx_cgroup_lru_empty() (specialised from
    epcsim.kernel.epc_cgroup.sgx_cgroup_lru_empty): the subtree's LRUs by their
    preorder range."""
    if CG[CG_PARENT, _u(root)] < 0:
        return S[S_NR_LRU] == 0
    for p in range(CG[CG_PREPOS, _u(root)], CG[CG_SUBEND, _u(root)]):  # noqa: SIM110 (numba)
        if CG[CG_LRU_NR, _u(CG[CG_PRE, _u(p)])]:
            return False
    return True


@inline
def misc_cg_err_charge(CG, c, failed):
    """Models misc_cg_try_charge() at its err_charge label (specialised from
    epcsim.kernel.misc.misc_cg_try_charge) once the charge of a page failed at level
    *failed*: ``misc.events`` max there (local) and up to the root's child
    (hierarchical), and the page uncharged again from *c* up to *failed*."""
    CG[CG_EVENTS_LOCAL, _u(failed)] += 1
    j = failed
    while j >= 0 and CG[CG_PARENT, _u(j)] >= 0:
        CG[CG_EVENTS, _u(j)] += 1
        j = CG[CG_PARENT, _u(j)]
    j = c
    while True:
        CG[CG_USAGE, _u(j)] -= PAGE
        if j == failed:
            break
        j = CG[CG_PARENT, _u(j)]


@outline
def _sgx_cgroup_try_charge(S, CG, c, failed):
    """Models __sgx_cgroup_try_charge() (specialised from
    epcsim.kernel.epc_cgroup._sgx_cgroup_try_charge) once misc_cg_try_charge() failed
    at level *failed*: misc_cg_try_charge()'s err_charge (events, undo), then
    sgx_cgroup_try_charge(NO_RECLAIM)'s queue_work() and sgx_put_cg().  Returns -ENOMEM
    or -EBUSY."""
    misc_cg_err_charge(CG, c, failed)
    CG[CG_REFCNT, _u(c)] -= 1  # sgx_put_cg()
    if S[S_POLICY] == POLICY_LIMIT_ONLY:  # a design without per-cgroup reclaim
        return sgx_cgroup_try_charge_limit_only(S, CG, c)
    if sgx_cgroup_lru_empty(S, CG, c):
        CG[CG_NR_ENOMEM, _u(c)] += 1
        return -ENOMEM
    if not CG[CG_PENDING, _u(c)]:  # queue_work(): the tail of sgx_cg_wq
        CG[CG_PENDING, _u(c)] = 1
        CG[CG_WQ, _u(S[S_NWQ])] = c
        S[S_NWQ] += 1
    return -EBUSY


@outline
def sgx_cgroup_try_charge_limit_only(S, CG, c):
    """Models sgx_cgroup_try_charge() of the limit-only design (specialised from
    epcsim.policies.limit_only.LimitOnly.try_charge, with its nothing_reclaimable() and
    sgx_cgroup_over_max()) with SGX_NO_RECLAIM, once misc_cg_try_charge() failed and
    was undone: -ENOMEM over some level's misc.max (a limit, not the capacity) or with
    nothing reclaimable anywhere; else (the capacity alone) ksgxd is woken below
    SGX_NR_LOW_PAGES free pages and the fault retries (-EBUSY).  No work is queued."""
    over = False
    j = c
    while j >= 0:
        if CG[CG_USAGE, _u(j)] + PAGE > CG[CG_MAX, _u(j)]:
            over = True
            break
        j = CG[CG_PARENT, _u(j)]
    if over or S[S_NR_LRU] == 0:  # sgx_cgroup_over_max() or !sgx_can_reclaim_global()
        CG[CG_NR_ENOMEM, _u(c)] += 1
        return -ENOMEM
    if S[S_NR_FREE] < SGX_NR_LOW_PAGES:  # sgx_should_reclaim_global(SGX_NR_LOW_PAGES)
        S[S_WOKEN] = 1  # wake_up(ksgxd)
    return -EBUSY


@inline
def sgx_cgroup_try_charge(S, CG, c):
    """Models sgx_cgroup_try_charge(NO_RECLAIM) (specialised from
    epcsim.kernel.epc_cgroup.sgx_cgroup_try_charge) of one page to cgroup *c*, whose
    reference the caller holds (and which a failed charge drops).  Returns 0, -ENOMEM
    or -EBUSY."""
    failed = misc_cg_try_charge(CG, c, PAGE)
    if failed >= 0:
        return _sgx_cgroup_try_charge(S, CG, c, failed)
    return 0


@inline
def sgx_cgroup_next_desc_pre(CG, root, c):
    """Models sgx_cgroup_next_desc_pre() (specialised from
    epcsim.kernel.epc_cgroup.sgx_cgroup_next_desc_pre): the cgroup after *c* in the
    preorder walk of subtree(*root*), referenced (css_tryget(): every cgroup in the walk
    is online), or *root* (no reference) past the end."""
    q = CG[CG_PREPOS, _u(c)] + 1
    if q >= CG[CG_SUBEND, _u(root)]:
        return root
    n = CG[CG_PRE, _u(q)]
    CG[CG_REFCNT, _u(n)] += 1
    return n


@inline
def sgx_cgroup_next_get(CG, root):
    """Models sgx_cgroup_next_get() (specialised from
    epcsim.kernel.epc_cgroup.sgx_cgroup_next_get): the cgroup at *root*'s cursor,
    referenced unless it is *root* (css_tryget(): every cgroup in the walk is online);
    the cursor moves on in preorder, wrapping to *root*."""
    p = CG[CG_CURSOR, _u(root)]
    q = p + 1
    if q >= CG[CG_SUBEND, _u(root)]:
        q = CG[CG_PREPOS, _u(root)]
    CG[CG_CURSOR, _u(root)] = q
    c = CG[CG_PRE, _u(p)]
    if c != root:
        CG[CG_REFCNT, _u(c)] += 1  # css_tryget(), held across the batch
    return c


@inline
def sgx_cgroup_should_reclaim(S, CG, c):
    """Models sgx_cgroup_should_reclaim() (specialised from
    epcsim.kernel.epc_cgroup.sgx_cgroup_should_reclaim), with
    sgx_cgroup_max_pages_to_root() packed (CG_MAXPAGES)."""
    if sgx_cgroup_lru_empty(S, CG, c):
        return False
    limit = CG[CG_MAXPAGES, _u(c)]
    if limit > SGX_CG_LOW_LIMIT:
        limit -= SGX_CG_MIN_FREE_PAGE
    return CG[CG_USAGE, _u(c)] // PAGE >= limit


@inline
def sgx_cgroup_try_charge_reclaim(S, CG, c, failed):
    """Models __sgx_cgroup_try_charge() (specialised from
    epcsim.kernel.epc_cgroup._sgx_cgroup_try_charge) for sgx_cgroup_try_charge() with
    SGX_DO_RECLAIM, once misc_cg_try_charge() failed at level *failed*: its err_charge
    (events, undo), then -ENOMEM (nothing on the subtree's LRUs) or -EBUSY (the caller
    reclaims; the reference on *c* stays held).  No signal is pending (the core runs no
    task with one)."""
    misc_cg_err_charge(CG, c, failed)
    if sgx_cgroup_lru_empty(S, CG, c):
        CG[CG_NR_ENOMEM, _u(c)] += 1
        return -ENOMEM
    return -EBUSY
