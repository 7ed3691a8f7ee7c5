"""Reclaim as the compiled core runs it (:mod:`epcsim.kernel.reclaim`, and the reclaim
loop of :mod:`epcsim.kernel.epc_cgroup`): the phases of sgx_reclaim_pages() one
yield point at a time, the loop over the subtree's LRUs, and one step of ksgxd or of
a ``sgx_cg_wq`` worker.  The batch of reclaimer *r* is ``R[R_PAGES.., r]`` (pages),
``R[R_ES.., r]`` (their enclaves), ``R[R_GS.., r]`` (their enclave page rows)."""

from __future__ import annotations

from ..kernel.constants import (
    DESC_ACCESSED,
    DESC_BEING_RECLAIMED,
    DESC_BLOCKED,
    SGX_NR_HIGH_PAGES,
    SGX_NR_TO_SCAN,
)
from ._jit import inline, outline
from .bits import _u, prefetch
from .encl import emem_keep, hb_clear, sgx_alloc_va_slot, sgx_encl_put
from .encls import encls_leaf
from .epc import _count_aged, _count_freed, _sgx_free_epc_page_to_node, sgx_free_epc_page
from .epc_cgroup import (
    sgx_cgroup_lru_empty,
    sgx_cgroup_next_desc_pre,
    sgx_cgroup_next_get,
    sgx_cgroup_should_reclaim,
)
from .layout import (
    BACKING,
    CG_LRU_HEAD,
    CG_LRU_NR,
    CG_LRU_TAIL,
    CG_MEMD,
    CG_NR_BATCHES,
    CG_NR_EVICTED,
    CG_NR_PAGES,
    CG_NR_RECL,
    CG_NR_ROTATED,
    CG_NR_SCANNED,
    CG_PENDING,
    CG_REFCNT,
    CG_RUNNING,
    E_DESC,
    E_EPC,
    E_VA,
    EN_BACKING,
    EN_EMIX,
    EN_INIT,
    EN_LIVE_MMS,
    EN_MEMCG,
    EN_NR_RECL,
    EN_NR_SECS_EWB,
    EN_OFF,
    EN_REFCOUNT,
    EN_SECS_CHILD,
    EN_SECS_EPC,
    EN_SECS_MEMCG,
    EN_SECS_VA,
    EN_TRACKED,
    KIND_BUILD,
    L_EBLOCK,
    L_EREMOVE,
    L_ETRACK,
    L_EWB,
    NOT_ACC,
    NOT_RECLAIM_BITS,
    NOT_TRACKED,
    P_FLAGS,
    P_NEXT,
    P_OE,
    P_OI,
    P_PREV,
    PAGE,
    POLICY_V13,
    POLICY_V14,
    R_B_GLOBAL,
    R_C,
    R_CB,
    R_CG,
    R_CNT,
    R_CUR,
    R_EPI,
    R_ES,
    R_GS,
    R_KIND,
    R_MEMCG,
    R_NP,
    R_NR,
    R_PAGES,
    R_ROOT,
    R_STAGE,
    S_BATCH_NS,
    S_LRU_PF,
    S_LRU_PF_N,
    S_NR_FREE,
    S_NR_LRU,
    S_POLICY,
    S_ROOT,
    S_STAMP,
    S_STEPCOST,
    S_WOKEN,
    ST_B_ALLOC,
    ST_B_CHARGE,
    ST_B_RECLAIM,
    ST_END,
    ST_PH2,
    ST_PH3,
    ST_PH4,
    ST_RESCHED,
    ST_START,
)
from .lru import LRU_PF_HOPS, list_add_tail
from .misc import misc_cg_uncharge

__all__ = [
    "_sgx_reclaim_isolate",
    "ksgxd_step",
    "sgx_cgroup_reclaim_pages",
    "sgx_cgroup_reclaim_pages_v13",
    "sgx_cgroup_reclaim_pages_v14",
    "sgx_cgroup_walk_on",
    "sgx_reclaimer_age",
    "sgx_reclaimer_block",
    "sgx_reclaimer_write",
    "sgx_reclaimer_write_secs",
]


@inline
def _sgx_reclaim_isolate(S, CG, EN, R, P32, P8, E32, E8, r, c):
    """Models sgx_reclaim_pages()'s phase 1 (specialised from
    epcsim.kernel.reclaim._sgx_reclaim_isolate): the first SGX_NR_TO_SCAN pages of
    cgroup *c*'s LRU, unlinked together (each self-linked), then kref_get_unless_zero()
    per page: pages of a released enclave are forgotten (TRACKED cleared).  The pages
    kept are reclaimer *r*'s batch (of cgroup R_C, R_NP pages); returns their number."""
    CG[CG_NR_BATCHES, _u(c)] += 1
    # one walk: each page unlinked (self-linked, list_del_init()), then
    # kref_get_unless_zero() on its enclave (pages of a released enclave are
    # forgotten); the list's new head is linked once the walk is over
    n = 0
    kept = 0
    i = CG[CG_LRU_HEAD, _u(c)]
    while i >= 0 and n < SGX_NR_TO_SCAN:
        nx = P32[_u(i), P_NEXT]
        P32[_u(i), P_PREV] = i
        P32[_u(i), P_NEXT] = i
        n += 1
        e = P32[_u(i), P_OE]
        if EN[EN_REFCOUNT, _u(e)] > 0:
            EN[EN_REFCOUNT, _u(e)] += 1
            R[_u(R_PAGES + kept), _u(r)] = i
            R[_u(R_ES + kept), _u(r)] = e
            g = EN[EN_OFF, _u(e)] + P32[_u(i), P_OI]
            R[_u(R_GS + kept), _u(r)] = g
            prefetch(E8, E_DESC, g)  # for phase 2 and 4
            prefetch(E32, g, E_EPC)  # for phase 4
            kept += 1
        else:
            P8[_u(i), P_FLAGS] &= NOT_TRACKED
        i = nx
    if n:
        CG[CG_LRU_HEAD, _u(c)] = i
        if i < 0:
            CG[CG_LRU_TAIL, _u(c)] = -1
        else:
            P32[_u(i), P_PREV] = -1
            S[S_LRU_PF] = i  # the next batch's rows, walked ahead (lru_prefetch_step)
            S[S_LRU_PF_N] = LRU_PF_HOPS
        CG[CG_LRU_NR, _u(c)] -= n
        S[S_NR_LRU] -= n
        CG[CG_NR_SCANNED, _u(c)] += n
    if kept:  # the batch reclaimer r goes on with (R_C, R_NP, R_CB)
        R[R_C, _u(r)] = c
        R[R_NP, _u(r)] = kept
        R[R_CB, _u(r)] = kept
    return kept


@inline
def sgx_cgroup_reclaim_pages(S, CG, EN, R, P32, P8, E32, E8, r):
    """Models sgx_cgroup_reclaim_pages() (specialised from
    epcsim.kernel.epc_cgroup.sgx_cgroup_reclaim_pages) for reclaimer *r* (root
    R_ROOT, R_NR pages to scan, R_CNT counted): sgx_cgroup_next_get() and phase 1 of
    sgx_reclaim_pages() until a batch is isolated.  Returns True at the
    "reclaim:isolated" yield point (the batch of cgroup R_C in R[R_PAGES.., r]), False
    when the loop is over."""
    root = R[R_ROOT, _u(r)]
    while R[R_CNT, _u(r)] < R[R_NR, _u(r)] and not sgx_cgroup_lru_empty(S, CG, root):
        c = sgx_cgroup_next_get(CG, root)
        if _sgx_reclaim_isolate(S, CG, EN, R, P32, P8, E32, E8, r, c):
            return True
        if c != root:
            CG[CG_REFCNT, _u(c)] -= 1  # sgx_put_cg()
    return False


@inline
def sgx_cgroup_walk_on(CG, root, pos):
    """Models sgx_cgroup_next_desc_pre() and the sgx_put_cg() that follows it: the walk
    step of sgx_cgroup_reclaim_pages() in the series' v14 and v13 (specialised from
    epc_cgroup.sgx_cgroup_next_desc_pre as epcsim.policies.v14 and v13 call it): the
    next cgroup of subtree(*root*) in preorder (referenced), then *pos* put unless it is
    the root.  Returns *root* past the end of the subtree."""
    nxt = sgx_cgroup_next_desc_pre(CG, root, pos)
    if pos != root:
        CG[CG_REFCNT, _u(pos)] -= 1  # sgx_put_cg()
    return nxt


@outline
def sgx_cgroup_reclaim_pages_v14(S, CG, EN, R, P32, P8, E32, E8, r, after):
    """Models sgx_cgroup_reclaim_pages() of the series' v14, (root, start, charge_mm)
    (specialised from epcsim.policies.v14.sgx_cgroup_reclaim_pages) for reclaimer *r*:
    the walk from its episode's cursor (R_CUR; the root at -1) in preorder, phase 1 of
    sgx_reclaim_pages() on each cgroup until a batch is isolated (True, as
    :func:`sgx_cgroup_reclaim_pages`) or the call ends (False): R_NR pages counted, the
    cursor left on the next cgroup (unreferenced), or past the end of the subtree
    (R_CUR -1).  *after*: the call goes on after the batch of R_C (counted, put)."""
    root = R[R_ROOT, _u(r)]
    if after:
        pos = sgx_cgroup_next_desc_pre(CG, root, R[R_C, _u(r)])
        if pos == root:  # past the end of the subtree: v14 returned NULL
            R[R_CUR, _u(r)] = -1
            return False
    else:
        pos = R[R_CUR, _u(r)]
        if pos < 0:
            pos = root
        elif pos != root:
            CG[CG_REFCNT, _u(pos)] += 1  # css_tryget(): every cgroup is online
    while R[R_CNT, _u(r)] < R[R_NR, _u(r)]:
        kept = _sgx_reclaim_isolate(S, CG, EN, R, P32, P8, E32, E8, r, pos)
        if kept:
            return True
        pos = sgx_cgroup_walk_on(CG, root, pos)
        if pos == root:
            R[R_CUR, _u(r)] = -1
            return False
    if pos != root:
        CG[CG_REFCNT, _u(pos)] -= 1  # the model's cursor holds no reference
    R[R_CUR, _u(r)] = pos
    return False


@outline
def sgx_cgroup_reclaim_pages_v13(S, CG, EN, R, P32, P8, E32, E8, r, after):
    """Models sgx_cgroup_reclaim_pages() of the series' v13, (root, charge_mm)
    (specialised from epcsim.policies.v13.sgx_cgroup_reclaim_pages) for reclaimer *r*: the preorder
    walk of subtree(R_ROOT) from the root, phase 1 of sgx_reclaim_pages() on each
    cgroup until a batch is isolated (True, as :func:`sgx_cgroup_reclaim_pages`) or the
    call ends (False): R_NR pages counted or the walk past the last cgroup.  *after*:
    the walk goes on after the batch of R_C (counted, put)."""
    root = R[R_ROOT, _u(r)]
    if after:
        if R[R_CNT, _u(r)] >= R[R_NR, _u(r)]:
            return False
        pos = sgx_cgroup_next_desc_pre(CG, root, R[R_C, _u(r)])
        if pos == root:  # the walk ended
            return False
    else:
        pos = root
    while True:
        kept = _sgx_reclaim_isolate(S, CG, EN, R, P32, P8, E32, E8, r, pos)
        if kept:
            return True
        # nothing counted: cnt < nr_to_scan still holds
        pos = sgx_cgroup_walk_on(CG, root, pos)
        if pos == root:
            return False


@inline
def sgx_reclaimer_age(S, CG, EN, R, VA, P32, P8, PCG, E32, E8, EMEM, HB, r):
    """Models sgx_reclaimer_age() (specialised from
    epcsim.kernel.reclaim._sgx_reclaim_age_and_back): phase 2 of sgx_reclaim_pages(),
    the age test and the backing (no memory.max: every charge fits) charged to the
    memcg of the enclave's first mm, or of a build's task (R_MEMCG); young pages go
    back to the LRU tail and drop their enclave reference.  Returns the number of pages
    kept."""
    c = R[R_C, _u(r)]
    n = R[R_NP, _u(r)]
    kept = 0
    aged = 0
    mem = R[R_MEMCG, _u(r)] - 1  # a build's task's memcg (its charge mm), else -1
    for k in range(n):
        page = R[_u(R_PAGES + k), _u(r)]
        e = R[_u(R_ES + k), _u(r)]
        g = R[_u(R_GS + k), _u(r)]
        young = False
        if EN[EN_LIVE_MMS, _u(e)]:
            d = E8[E_DESC, _u(g)]
            if d & DESC_ACCESSED:
                E8[E_DESC, _u(g)] = d & NOT_ACC
                young = True
                aged += 1
        if not young:
            m = EN[EN_MEMCG, _u(e)]
            if mem >= 0 and mem != m:
                m = mem
                if not EN[EN_EMIX, _u(e)]:
                    emem_keep(EN, E32, E8, EMEM, e)
            if EN[EN_EMIX, _u(e)]:  # (else EMEM is not kept: EN_MEMCG is implied)
                EMEM[_u(g)] = m
            E8[E_DESC, _u(g)] |= DESC_BEING_RECLAIMED
            EN[EN_BACKING, _u(e)] += BACKING
            CG[CG_MEMD, _u(m)] += BACKING
            R[_u(R_PAGES + kept), _u(r)] = page
            R[_u(R_ES + kept), _u(r)] = e
            R[_u(R_GS + kept), _u(r)] = g
            kept += 1
        else:
            list_add_tail(CG, P32, c, page)
            S[S_NR_LRU] += 1
            sgx_encl_put(S, CG, EN, VA, P32, P8, PCG, E32, E8, EMEM, HB, e)
    if aged:  # every young page went back to the LRU tail
        CG[CG_NR_ROTATED, _u(c)] += aged
        _count_aged(CG, c, aged)
    R[R_NP, _u(r)] = kept
    return kept


@inline
def sgx_reclaimer_block(S, R, E8, HB, r):
    """Models sgx_reclaimer_block() (specialised from
    epcsim.kernel.reclaim._sgx_reclaimer_block): phase 3 of sgx_reclaim_pages(), each
    kept page blocked (its PTEs zapped: no longer hit) and EBLOCKed."""
    n = R[R_NP, _u(r)]
    for k in range(n):
        g = R[_u(R_GS + k), _u(r)]
        E8[E_DESC, _u(g)] |= DESC_BLOCKED
        hb_clear(HB, g)
    encls_leaf(S, L_EBLOCK, n)


@outline
def sgx_reclaimer_write_secs(S, CG, EN, VA, P32, P8, PCG, e):
    """Models sgx_reclaimer_write()'s SECS write-back after its last child (specialised
    from epcsim.kernel.reclaim._sgx_reclaimer_write_run): backing, VA slot, EWB
    (__sgx_encl_ewb()), sgx_encl_free_epc_page()."""
    EN[EN_BACKING, _u(e)] += BACKING
    CG[CG_MEMD, _u(EN[EN_MEMCG, _u(e)])] += BACKING
    EN[EN_SECS_MEMCG, _u(e)] = EN[EN_MEMCG, _u(e)]
    EN[EN_SECS_VA, _u(e)] = sgx_alloc_va_slot(S, EN, VA, e)
    encls_leaf(S, L_EWB, 1)
    EN[EN_NR_SECS_EWB, _u(e)] += 1
    secs = EN[EN_SECS_EPC, _u(e)]
    EN[EN_SECS_EPC, _u(e)] = -1
    encls_leaf(S, L_EREMOVE, 1)
    sgx_free_epc_page(S, CG, P32, P8, PCG, secs)


@inline
def sgx_reclaimer_write(S, CG, EN, R, VA, P32, P8, PCG, E32, E8, EMEM, HB, r):
    """Models sgx_reclaimer_write() (specialised from
    epcsim.kernel.reclaim._sgx_reclaimer_write_batch and _sgx_reclaimer_write_run):
    phase 4 of sgx_reclaim_pages(), sgx_encl_ewb() per page (one ETRACK per enclave per
    batch), the SECS after its last child once initialised, kref_put() (which may
    release the enclave), sgx_free_epc_page() (the uncharge of the batch at the end).
    The pages are counted under the reclaimer's kind (R_KIND: RECLAIM_KSGXD,
    RECLAIM_ASYNC, or RECLAIM_SYNC for a build's), and only there: an enclave's EWBs
    are EN_NR_EVICTED plus those (enclave_evicted())."""
    c = R[R_C, _u(r)]
    k = R[R_NP, _u(r)]
    by = R[R_KIND, _u(r)]
    S[S_STAMP] += 1
    stamp = S[S_STAMP]
    for j in range(k):
        page = R[_u(R_PAGES + j), _u(r)]
        e = R[_u(R_ES + j), _u(r)]
        g = R[_u(R_GS + j), _u(r)]
        if EN[EN_TRACKED, _u(e)] != stamp:
            EN[EN_TRACKED, _u(e)] = stamp
            encls_leaf(S, L_ETRACK, 1)
        slot = sgx_alloc_va_slot(S, EN, VA, e)
        E8[E_DESC, _u(g)] &= NOT_RECLAIM_BITS
        E32[_u(g), E_VA] = slot
        E32[_u(g), E_EPC] = -1
        EN[EN_SECS_CHILD, _u(e)] -= 1
        EN[_u(EN_NR_RECL + by), _u(e)] += 1  # EN_NR_EVICTED follows (enclave_evicted)
        if EN[EN_SECS_CHILD, _u(e)] == 0 and EN[EN_SECS_EPC, _u(e)] >= 0 and EN[EN_INIT, _u(e)]:
            sgx_reclaimer_write_secs(S, CG, EN, VA, P32, P8, PCG, e)
        sgx_encl_put(S, CG, EN, VA, P32, P8, PCG, E32, E8, EMEM, HB, e)
        _sgx_free_epc_page_to_node(S, P32, P8, PCG, page)
    encls_leaf(S, L_EWB, k)  # one per page (counts and costs add up: no order)
    CG[CG_NR_PAGES, _u(c)] -= k
    _count_freed(CG, c, k)
    CG[CG_NR_EVICTED, _u(c)] += k
    CG[_u(CG_NR_RECL + by), _u(c)] += k
    misc_cg_uncharge(CG, c, k * PAGE)
    CG[CG_REFCNT, _u(c)] -= k


@inline
def ksgxd_step(S, CG, EN, R, VA, P32, P8, PCG, E32, E8, EMEM, HB, r):
    """Models ksgxd_step() (specialised from epcsim.kernel.reclaim.ksgxd_step) for
    reclaimer 0, sgx_cgroup_reclaim_work_func() (specialised from
    epcsim.kernel.epc_cgroup.sgx_cgroup_reclaim_work_func) for a sgx_cg_wq worker, and
    an EADD build's synchronous or global reclaim (ST_B_RECLAIM, then its phases):
    from the yield point the actor stopped at to its next one; the reclaim is the
    series' v16 walk or, by S_POLICY, v14's or v13's.  Returns False when the actor
    ends (no reschedule)."""
    stage = R[R_STAGE, _u(r)]
    if stage == ST_END:
        return False
    ksgxd = R[R_KIND, _u(r)] == 0
    nstage = ST_RESCHED
    loop = False  # (re)enter the reclaim loop
    check = False  # a worker's loop head: while (sgx_cgroup_should_reclaim())
    if stage == ST_START:
        if ksgxd:
            if S[S_NR_FREE] < SGX_NR_HIGH_PAGES and S[S_NR_LRU] > 0:
                S[S_WOKEN] = 1
                R[R_EPI, _u(r)] = 1  # one wake-up is one reclaim episode
                R[R_ROOT, _u(r)] = S[S_ROOT]
                R[R_NR, _u(r)] = SGX_NR_TO_SCAN
                R[R_CNT, _u(r)] = 0
                loop = True
            else:
                S[S_WOKEN] = 0
                R[R_EPI, _u(r)] = 0  # the episode ends: ksgxd sleeps
                R[R_CUR, _u(r)] = -1
                nstage = ST_END
        else:
            CG[CG_PENDING, _u(R[R_CG, _u(r)])] = 0
            CG[CG_RUNNING, _u(R[R_CG, _u(r)])] = 1
            R[R_CUR, _u(r)] = -1  # one run of the work function is one episode
            check = True
    elif stage == ST_PH2:
        if sgx_reclaimer_age(S, CG, EN, R, VA, P32, P8, PCG, E32, E8, EMEM, HB, r):
            nstage = ST_PH3
        else:
            loop = True
    elif stage == ST_PH3:
        sgx_reclaimer_block(S, R, E8, HB, r)
        nstage = ST_PH4
    elif stage == ST_PH4:
        sgx_reclaimer_write(S, CG, EN, R, VA, P32, P8, PCG, E32, E8, EMEM, HB, r)
        loop = True
    elif stage == ST_B_RECLAIM:  # an EADD build's reclaim starts (R_ROOT, R_NR, R_CNT)
        loop = True
    elif ksgxd:  # ST_RESCHED: ksgxd_step() returns True (the kstep's last step)
        nstage = ST_START
    else:
        check = True
    after = loop and stage != ST_START and stage != ST_B_RECLAIM
    if after:
        # back in sgx_cgroup_reclaim_pages() after a batch: count it, put the cgroup
        R[R_CNT, _u(r)] += R[R_CB, _u(r)]
        c = R[R_C, _u(r)]
        if c != R[R_ROOT, _u(r)]:
            CG[CG_REFCNT, _u(c)] -= 1
    if check:
        c = R[R_CG, _u(r)]
        if sgx_cgroup_should_reclaim(S, CG, c):
            R[R_ROOT, _u(r)] = c
            R[R_NR, _u(r)] = SGX_NR_TO_SCAN
            R[R_CNT, _u(r)] = 0
            loop = True
        else:
            CG[CG_RUNNING, _u(c)] = 0
            nstage = ST_END
    if loop:
        pol = S[S_POLICY]
        if pol == POLICY_V14:
            found = sgx_cgroup_reclaim_pages_v14(S, CG, EN, R, P32, P8, E32, E8, r, after)
        elif pol == POLICY_V13:
            found = sgx_cgroup_reclaim_pages_v13(S, CG, EN, R, P32, P8, E32, E8, r, after)
        else:
            found = sgx_cgroup_reclaim_pages(S, CG, EN, R, P32, P8, E32, E8, r)
        if found:
            S[S_STEPCOST] += S[S_BATCH_NS]
            nstage = ST_PH2
        elif R[R_KIND, _u(r)] == KIND_BUILD:
            # a build's reclaim returns: its charge or allocation loop's cond_resched()
            nstage = ST_B_ALLOC if R[R_B_GLOBAL, _u(r)] else ST_B_CHARGE
        else:
            nstage = ST_RESCHED
    R[R_STAGE, _u(r)] = nstage
    return True
