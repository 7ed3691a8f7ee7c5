"""The batched engine's compiled core (numba): the event loop of the enclave threads,
ksgxd, the ``sgx_cg_wq`` workers and the sampler, over the kernel model's own arrays.

Each function below is a transcription of the kernel-model function it names (see
:mod:`epcsim.kernel`) onto flat arrays, so that a run gives exactly what the
step-by-step engine (:mod:`epcsim.sim.engine` driving :mod:`epcsim.kernel`) gives:
the same state, the same counters, the same virtual times.
``tests/sim/test_batched_exact.py`` checks that on random scenarios.
:mod:`epcsim.compiled.engine` decides when the core may run, packs the state in and out,
runs the end of each thread (task exit) step by step, and hands the run back to the
step-by-step engine when the last thread ends.

Layout (few arguments per call: numba passes every array field by value; the fields
are declared in :mod:`epcsim.compiled.layout`):

- ``S`` (int64): scalars (``S_*``), the ENCLS leaf counts at ``S_LC``, their costs at
  ``S_LCOST``, the EPC sections' first pages at ``S_SECT`` and the free lists (head,
  tail, nr per node) at ``S_NODES``.
- ``CG[f, id]`` (int64): per sgx_cgroup fields (``CG_*``); row ``CG_PRE`` is the
  preorder walk of the tree (by position), row ``CG_LIVE`` the live cgroups in id order,
  row ``CG_WQ`` the ``sgx_cg_wq`` queue (``S_NWQ`` items, oldest first).
- ``EN[f, eid]`` (int64): per enclave fields (``EN_*``), by the enclave's host id.
- ``TH[f, j]`` (int64): per enclave thread fields (``TH_*``); rows ``TH_HEAP``..
  (by position) the threads' binary heap on ``(t, seq)`` (``_heap_*``);
  ``CPUF`` the time each CPU is free again (``Simulation.cpu_free``); ``BUF[j]`` thread
  *j*'s accesses.
- ``R[f, r]`` (int64): the reclaimer actors (r = 0 ksgxd, 1.. workers; ``R_*``), rows
  ``R_PAGES``.. the pages of the actor's current batch, rows ``R_HEAP``.. (by
  position) the scheduled actors' binary heap on ``(t, seq)``.
- ``VA[row, f]`` (int64): VA pages (``VA_*``; one VA page's fields together; enclave
  *e*'s VA page *no* at row ``EN[EN_VAOFF, e] + no``), columns ``VA_BITS``.. their
  512-slot maps.
- ``P32``/``P8``/``PCG``: the EPC pool's ``i32`` (one row per page: prev, next,
  owner_encl, owner_idx: ``P32[page, P_NEXT]``), ``u8`` (one row per page: flags, kind)
  and ``cg`` arrays; ``E32``/``E8``/``EMEM``: the enclaves' ``i32`` (columns epc, va:
  ``E32[off + idx, E_EPC]``), ``u8`` (rows desc, type) and ``memcg`` arrays, one after
  the other (enclave *e* from ``EN[EN_OFF, e]``) (:mod:`epcsim.kernel.epc`,
  :mod:`epcsim.kernel.encl`).
- ``HB``: one bit per enclave page row, set while the page can be hit (resident, not
  blocked): the access loop reads it instead of ``E32`` and ``E8`` (derived by
  :mod:`epcsim.compiled.engine` at each load, kept up to date here).

Hot paths are source-level single call sites inlined by numba (``inline="always"``);
rare paths (the SECS, a new VA page, a failed grow, an enclave release) are out-of-line
functions.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic

from ..compiled._jit import inline, njit_cached, outline
from ..compiled.layout import (  # noqa: F401 (compiled.engine reads them as _core.X)
    BACKING,
    CG_CURSOR,
    CG_EVENTS,
    CG_EVENTS_LOCAL,
    CG_LIMIT,
    CG_LIVE,
    CG_LRU_HEAD,
    CG_LRU_NR,
    CG_LRU_TAIL,
    CG_MAXPAGES,
    CG_MEMD,
    CG_NR_BATCHES,
    CG_NR_ENOMEM,
    CG_NR_EVICTED,
    CG_NR_FAULTS,
    CG_NR_FREED,
    CG_NR_PAGES,
    CG_PARENT,
    CG_PEAK,
    CG_PENDING,
    CG_PRE,
    CG_PREPOS,
    CG_REFCNT,
    CG_RUNNING,
    CG_SUBEND,
    CG_USAGE,
    CG_WQ,
    DESC_ACCESSED,
    DESC_BEING_RECLAIMED,
    DESC_BLOCKED,
    DESC_PRESENT,
    E_DESC,
    E_EPC,
    E_TYPE,
    E_VA,
    EBUSY,
    EN_BACKING,
    EN_BACKING0,
    EN_EMIX,
    EN_LIVE_MMS,
    EN_MEMCG,
    EN_NPAGES,
    EN_NR_EAUG,
    EN_NR_ELDU,
    EN_NR_EVICTED,
    EN_NR_FAULTS,
    EN_NR_SECS_ELDU,
    EN_NR_SECS_EWB,
    EN_NVA,
    EN_OFF,
    EN_PAGE_CNT,
    EN_REFCOUNT,
    EN_RELEASED,
    EN_SECS_CHILD,
    EN_SECS_EPC,
    EN_SECS_MEMCG,
    EN_SECS_VA,
    EN_SIGPEND,
    EN_TRACKED,
    EN_VA_HEAD,
    EN_VA_TAIL,
    EN_VAOFF,
    ENOMEM,
    ERR_NO_VA_SLOT,
    ERR_NO_WORKER_SLOT,
    IS_FREE,
    KIND_ENCL,
    KIND_FREE,
    KIND_SECS,
    KIND_VA,
    L_EAUG,
    L_EBLOCK,
    L_ELDU,
    L_EREMOVE,
    L_ETRACK,
    L_EWB,
    LRU_PF_HOPS,
    NCGF,
    NENF,
    NOT_ACC,
    NOT_ACC_BLOCKED,
    NOT_RECLAIM_BITS,
    NOT_TRACKED,
    NRF,
    NS,
    NSAMPF,
    NTHF,
    NVAF,
    P_FLAGS,
    P_KIND,
    P_NEXT,
    P_OE,
    P_OI,
    P_PREV,
    PAGE,
    PF_AHEAD,
    R_C,
    R_CB,
    R_CG,
    R_CNT,
    R_ES,
    R_GS,
    R_HEAP,
    R_HS,
    R_HT,
    R_KIND,
    R_NP,
    R_NR,
    R_PAGES,
    R_ROOT,
    R_SCHED,
    R_SEQ,
    R_STAGE,
    R_T,
    RC_ERROR,
    RC_FLUSH,
    RC_LIMIT,
    RC_NEED_CHUNK,
    RC_THREAD_DONE,
    S_ACCESS_NS,
    S_ACTIVE,
    S_BATCH_NS,
    S_CUR_NID,
    S_CUR_TCG,
    S_ERR,
    S_FAULT_NS,
    S_KICK,
    S_KSTEP_NS,
    S_LC,
    S_LCOST,
    S_LIMIT,
    S_LRU_PF,
    S_LRU_PF_N,
    S_MIDPOP,
    S_NHP,
    S_NLAT,
    S_NLIVE,
    S_NNODES,
    S_NODES,
    S_NOW,
    S_NR_FREE,
    S_NR_LRU,
    S_NRH,
    S_NSAMP,
    S_NWQ,
    S_ROOT,
    S_SECT,
    S_SEQ,
    S_SGX2,
    S_SM_INTERVAL,
    S_SM_LAST,
    S_SM_SEQ,
    S_SM_T,
    S_STAMP,
    S_STEPCOST,
    S_STUCK,
    S_UNREF,
    S_WHO,
    S_WOKEN,
    SAMP_ROOT_ROWS,
    SAMP_ROWS,
    SGX_CG_LOW_LIMIT,
    SGX_CG_MIN_FREE_PAGE,
    SGX_NR_HIGH_PAGES,
    SGX_NR_LOW_PAGES,
    SGX_NR_TO_SCAN,
    SGX_PAGE_TYPE_REG,
    SGX_VA_SLOT_COUNT,
    ST_END,
    ST_PH2,
    ST_PH3,
    ST_PH4,
    ST_RESCHED,
    ST_START,
    TH_ACC,
    TH_BUFLEN,
    TH_CPU,
    TH_E,
    TH_FAULTS,
    TH_FREED,
    TH_FSTART,
    TH_HEAP,
    TH_HS,
    TH_HT,
    TH_LIVE,
    TH_NID,
    TH_PENDING,
    TH_POS,
    TH_QUIET,
    TH_R,
    TH_REMAIN,
    TH_RETRIES,
    TH_SEQ,
    TH_SIGBUS,
    TH_STARTED,
    TH_STREAK,
    TH_T,
    TH_TCG,
    TH_UNTIL,
    TRACKED,
    VA_BITS,
    VA_EPC,
    VA_NEXT,
    VA_PREV,
    VA_USED,
    VM_FAULT_NOPAGE,
    VM_FAULT_SIGBUS,
)


@intrinsic
def _prefetch(typingctx, arr, i, j):
    """Ask the cache for the line of ``arr[i, j]`` (``llvm.prefetch``, for writing): a
    hint with no effect on any value, so that a later fault or reclaim phase does not
    wait for memory."""
    sig = types.void(arr, i, j)

    def codegen(context, builder, signature, args):
        aryty, ity, jty = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        idx = [
            context.cast(builder, args[1], ity, types.intp),
            context.cast(builder, args[2], jty, types.intp),
        ]
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, idx, wraparound=True)
        i32 = ir.IntType(32)
        ptr = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # rw = 1 (write), locality = 3 (keep), cache type = 1 (data)
        builder.call(fn, [ptr, ir.Constant(i32, 1), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


@inline
def _u(i):
    """*i* as an unsigned index.  numba wraps every signed array index (a negative one
    counts from the end: a compare, an add and a select each time, and the dimension's
    size kept at hand); the core's indices are never negative, so it indexes with
    _u(...) and skips that."""
    return np.uintp(i)


@inline
def _leaf(S, leaf, n):
    S[_u(S_LC + leaf)] += n
    S[S_STEPCOST] += n * S[_u(S_LCOST + leaf)]


@inline
def _hb_set(HB, g):
    """Enclave page row *g* can be hit: resident and not blocked."""
    HB[_u(g >> 6)] |= 1 << (g & 63)


@inline
def _hb_clear(HB, g):
    HB[_u(g >> 6)] &= ~(1 << (g & 63))


@inline
def _lru_pf_step(S, P32):
    """One hop of the LRU's prefetch walk: the next isolation follows the list from its
    head one row at a time, each row a cache miss; between isolations the enclave
    threads' faults walk the same rows ahead of it, one per fault, asking for the next
    row while this one is (by then, a fault later) in the cache.  (Once per step, hit
    runs of a few accesses came back before the row did and waited for it.)  A hint
    only: a link that has changed since (a page isolated, freed, moved) at worst asks
    for a row nobody reads."""
    x = S[S_LRU_PF]
    if x >= 0:
        nx = P32[_u(x), P_NEXT]
        left = S[S_LRU_PF_N] - 1
        if nx >= 0 and nx != x and left > 0:
            _prefetch(P32, nx, P_PREV)
            S[S_LRU_PF] = nx
            S[S_LRU_PF_N] = left
        else:
            S[S_LRU_PF] = -1


# --- lists (lru.py) ----------------------------------------------------------------------


@inline
def _lru_add_tail(CG, P32, c, i):
    """EpcList.add_tail() on cgroup *c*'s LRU (``list_add_tail``)."""
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
def _lru_del_init(CG, P32, c, i):
    """EpcList.del_init() on cgroup *c*'s LRU (``list_del_init``)."""
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


# --- the allocator (epc.py) --------------------------------------------------------------


@inline
def _alloc_from_nodes(S, P32, P8):
    """Models __sgx_alloc_epc_page(): the head of the local node's free list, else of
    the following nodes, wrapping."""
    nodes = S[S_NNODES]
    nid0 = S[S_CUR_NID] if 0 <= S[S_CUR_NID] < nodes else 0
    nid = nid0
    while True:
        b = S_NODES + 3 * nid
        i = S[_u(b)]
        if i >= 0:
            n = P32[_u(i), P_NEXT]
            S[_u(b)] = n
            if n < 0:
                S[_u(b + 1)] = -1
            else:
                P32[_u(n), P_PREV] = -1
                _prefetch(P8, n, P_FLAGS)  # the next allocation's
                _prefetch(P32, n, P_PREV)
            P32[_u(i), P_PREV] = i
            P32[_u(i), P_NEXT] = i
            S[_u(b + 2)] -= 1
            P8[_u(i), P_FLAGS] = 0
            S[S_NR_FREE] -= 1
            return i
        nid = (nid + 1) % nodes
        if nid == nid0:
            return -ENOMEM


@inline
def _free_to_node(S, P32, P8, PCG, page):
    """Models the second half of sgx_free_epc_page() (_sgx_free_epc_page_to_node): owner
    cleared, tail of the page's node's free list, IS_FREE."""
    PCG[_u(page)] = -1
    P8[_u(page), P_KIND] = KIND_FREE
    P32[_u(page), P_OE] = -1
    P32[_u(page), P_OI] = -1
    nid = 0
    for k in range(1, S[S_NNODES]):
        if S[_u(S_SECT + k)] <= page:
            nid = k
    b = S_NODES + 3 * nid
    t = S[_u(b + 1)]
    P32[_u(page), P_PREV] = t
    P32[_u(page), P_NEXT] = -1
    if t < 0:
        S[_u(b)] = page
    else:
        P32[_u(t), P_NEXT] = page
    S[_u(b + 1)] = page
    S[_u(b + 2)] += 1
    P8[_u(page), P_FLAGS] = IS_FREE
    S[S_NR_FREE] += 1


@inline
def _uncharge(CG, c, amount):
    """Models misc_cg_uncharge() up the tree."""
    while c >= 0:
        CG[CG_USAGE, _u(c)] -= amount
        c = CG[CG_PARENT, _u(c)]


@inline
def _count_freed(CG, c, n):
    """Model statistics (epc.py's _count_freed()): *n* pages charged to *c* were freed;
    counted in CG_NR_FREED of *c* and of every ancestor."""
    while c >= 0:
        CG[CG_NR_FREED, _u(c)] += n
        c = CG[CG_PARENT, _u(c)]


@inline
def _lru_empty(S, CG, root):
    """Models sgx_cgroup_lru_empty()."""
    if CG[CG_PARENT, _u(root)] < 0:
        return S[S_NR_LRU] == 0
    for p in range(CG[CG_PREPOS, _u(root)], CG[CG_SUBEND, _u(root)]):  # noqa: SIM110 (numba)
        if CG[CG_LRU_NR, _u(CG[CG_PRE, _u(p)])]:
            return False
    return True


@inline
def _alloc_epc_page(S, CG, P32, P8, PCG, e, kind, oidx):
    """Models sgx_alloc_epc_page(..., SGX_NO_RECLAIM) for the faulting thread's task,
    with sgx_cgroup_try_charge(), __sgx_cgroup_try_charge(), misc_cg_try_charge() and
    queue_work().  Returns the page or -ENOMEM / -EBUSY."""
    c = S[S_CUR_TCG]
    CG[CG_REFCNT, _u(c)] += 1  # sgx_get_current_cg()
    i = c
    failed = -1
    while i >= 0:
        new = CG[CG_USAGE, _u(i)] + PAGE
        CG[CG_USAGE, _u(i)] = new
        if new > CG[CG_LIMIT, _u(i)]:
            failed = i
            break
        if new > CG[CG_PEAK, _u(i)]:
            CG[CG_PEAK, _u(i)] = new
        i = CG[CG_PARENT, _u(i)]
    if failed >= 0:
        return _charge_failed(S, CG, c, failed)
    page = _alloc_from_nodes(S, P32, P8)
    if page >= 0:
        P8[_u(page), P_KIND] = kind
        P32[_u(page), P_OE] = e
        P32[_u(page), P_OI] = oidx
        PCG[_u(page)] = c
        CG[CG_NR_PAGES, _u(c)] += 1
    else:
        if S[S_NR_LRU] > 0:  # sgx_can_reclaim_global(), NO_RECLAIM
            page = -EBUSY
        _uncharge(CG, c, PAGE)
        CG[CG_REFCNT, _u(c)] -= 1
    if S[S_NR_FREE] < SGX_NR_LOW_PAGES and S[S_NR_LRU] > 0:
        S[S_WOKEN] = 1  # sgx_should_reclaim_global(SGX_NR_LOW_PAGES): wake_up(ksgxd)
    return page


@outline
def _charge_failed(S, CG, c, failed):
    """misc_cg_try_charge()'s err_charge (events, undo) and the rest of
    __sgx_cgroup_try_charge() / sgx_cgroup_try_charge(NO_RECLAIM)."""
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
    CG[CG_REFCNT, _u(c)] -= 1  # sgx_put_cg()
    if _lru_empty(S, CG, c):
        CG[CG_NR_ENOMEM, _u(c)] += 1
        return -ENOMEM
    if not CG[CG_PENDING, _u(c)]:  # queue_work(): the tail of sgx_cg_wq
        CG[CG_PENDING, _u(c)] = 1
        CG[CG_WQ, _u(S[S_NWQ])] = c
        S[S_NWQ] += 1
    return -EBUSY


@inline
def _free_epc_page(S, CG, P32, P8, PCG, page):
    """Models sgx_free_epc_page(): uncharge, drop the css reference, free."""
    c = PCG[_u(page)]
    if c >= 0:
        CG[CG_NR_PAGES, _u(c)] -= 1
        _count_freed(CG, c, 1)
        _uncharge(CG, c, PAGE)
        CG[CG_REFCNT, _u(c)] -= 1
    _free_to_node(S, P32, P8, PCG, page)


# --- VA slots (encl.py) ------------------------------------------------------------------


@inline
def _va_unlink(EN, VA, e, no):
    off = EN[EN_VAOFF, _u(e)]
    p = VA[_u(off + no), VA_PREV]
    n = VA[_u(off + no), VA_NEXT]
    if p < 0:
        EN[EN_VA_HEAD, _u(e)] = n
    else:
        VA[_u(off + p), VA_NEXT] = n
    if n < 0:
        EN[EN_VA_TAIL, _u(e)] = p
    else:
        VA[_u(off + n), VA_PREV] = p


@inline
def _va_add_head(EN, VA, e, no):
    off = EN[EN_VAOFF, _u(e)]
    h = EN[EN_VA_HEAD, _u(e)]
    VA[_u(off + no), VA_PREV] = -1
    VA[_u(off + no), VA_NEXT] = h
    if h < 0:
        EN[EN_VA_TAIL, _u(e)] = no
    else:
        VA[_u(off + h), VA_PREV] = no
    EN[EN_VA_HEAD, _u(e)] = no


@inline
def _va_add_tail(EN, VA, e, no):
    off = EN[EN_VAOFF, _u(e)]
    t = EN[EN_VA_TAIL, _u(e)]
    VA[_u(off + no), VA_NEXT] = -1
    VA[_u(off + no), VA_PREV] = t
    if t < 0:
        EN[EN_VA_HEAD, _u(e)] = no
    else:
        VA[_u(off + t), VA_NEXT] = no
    EN[EN_VA_TAIL, _u(e)] = no


@inline
def _alloc_va_slot(S, EN, VA, e):
    """Models sgx_alloc_va_slot() on the first VA page of va_pages (rotated to the
    tail once full)."""
    no = EN[EN_VA_HEAD, _u(e)]
    row = EN[EN_VAOFF, _u(e)] + no
    if no < 0 or VA[_u(row), VA_USED] >= SGX_VA_SLOT_COUNT:
        S[S_ERR] = ERR_NO_VA_SLOT
        return 0
    slot = 0
    for w in range(8):
        word = VA[_u(row), _u(VA_BITS + w)]
        if word != -1:
            # find_first_zero_bit(): the lowest clear bit (llvm.cttz of its complement)
            inv = ~word
            low = inv & -inv
            b = trailing_zeros(inv)
            VA[_u(row), _u(VA_BITS + w)] = word | low
            slot = w * 64 + b
            break
    VA[_u(row), VA_USED] += 1
    if VA[_u(row), VA_USED] == SGX_VA_SLOT_COUNT and EN[EN_VA_TAIL, _u(e)] != no:
        _va_unlink(EN, VA, e, no)
        _va_add_tail(EN, VA, e, no)
    return no * SGX_VA_SLOT_COUNT + slot


@inline
def _free_va_slot(EN, VA, e, slot_id):
    """Models sgx_free_va_slot() + list_move() of its VA page to the head."""
    no = slot_id // SGX_VA_SLOT_COUNT
    slot = slot_id % SGX_VA_SLOT_COUNT
    row = EN[EN_VAOFF, _u(e)] + no
    VA[_u(row), _u(VA_BITS + slot // 64)] &= ~(1 << (slot % 64))
    VA[_u(row), VA_USED] -= 1
    if EN[EN_VA_HEAD, _u(e)] != no:
        _va_unlink(EN, VA, e, no)
        _va_add_head(EN, VA, e, no)


# --- enclave faults (encl.py) ------------------------------------------------------------


@outline
def _load_secs(S, CG, EN, VA, P32, P8, PCG, e):
    """Models sgx_encl_load_secs() with sgx_encl_eldu() of the SECS (rare: the SECS
    goes out only with the enclave's last page).  Returns 0 or a negative errno."""
    page = _alloc_epc_page(S, CG, P32, P8, PCG, e, KIND_SECS, -1)
    if page < 0:
        return page
    _leaf(S, L_ELDU, 1)
    EN[EN_NR_ELDU, _u(e)] += 1
    EN[EN_NR_SECS_ELDU, _u(e)] += 1
    _free_va_slot(EN, VA, e, EN[EN_SECS_VA, _u(e)])
    EN[EN_SECS_VA, _u(e)] = -1
    EN[EN_BACKING, _u(e)] -= BACKING
    CG[CG_MEMD, _u(EN[EN_SECS_MEMCG, _u(e)])] -= BACKING
    EN[EN_SECS_MEMCG, _u(e)] = -1
    EN[EN_SECS_EPC, _u(e)] = page
    return 0


@outline
def _grow(S, CG, EN, VA, P32, P8, PCG, e, page):
    """Models sgx_encl_grow(NO_RECLAIM) when a VA page is due (every 512 page_cnt),
    and sgx_encl_free_epc_page() of the new page when it fails.  Returns 0 or a
    negative errno."""
    vano = EN[EN_NVA, _u(e)]
    vpage = _alloc_epc_page(S, CG, P32, P8, PCG, e, KIND_VA, vano)
    if vpage < 0:
        _leaf(S, L_EREMOVE, 1)
        _free_epc_page(S, CG, P32, P8, PCG, page)
        return vpage
    EN[EN_NVA, _u(e)] += 1
    row = EN[EN_VAOFF, _u(e)] + vano
    VA[_u(row), VA_EPC] = vpage
    VA[_u(row), VA_USED] = 0
    for w in range(8):
        VA[_u(row), _u(VA_BITS + w)] = 0
    _va_add_head(EN, VA, e, vano)
    return 0


@inline
def _vma_fault(S, CG, EN, VA, P32, P8, PCG, E32, E8, EMEM, HB, e, idx):
    """Models sgx_vma_fault() for an in-range page: sgx_encl_eaug_page() for a page not
    in page_array, __sgx_encl_load_page() (sgx_encl_load_secs(), sgx_encl_eldu()) for an
    evicted one, -EBUSY for one being reclaimed.  Returns 0, VM_FAULT_NOPAGE or
    VM_FAULT_SIGBUS."""
    g = EN[EN_OFF, _u(e)] + idx
    present = E8[E_DESC, _u(g)] & DESC_PRESENT
    if present and E32[_u(g), E_EPC] >= 0:
        if E8[E_DESC, _u(g)] & DESC_BEING_RECLAIMED:
            return VM_FAULT_NOPAGE
        E8[E_DESC, _u(g)] &= NOT_ACC_BLOCKED
        _hb_set(HB, g)
        return 0
    if not present and not S[S_SGX2]:
        return VM_FAULT_SIGBUS
    if EN[EN_SECS_EPC, _u(e)] < 0:
        ret = _load_secs(S, CG, EN, VA, P32, P8, PCG, e)
        if ret:
            return VM_FAULT_NOPAGE if ret == -EBUSY else VM_FAULT_SIGBUS
    page = _alloc_epc_page(S, CG, P32, P8, PCG, e, KIND_ENCL, idx)
    if page < 0:
        return VM_FAULT_NOPAGE if page == -EBUSY else VM_FAULT_SIGBUS
    if not present:
        # sgx_encl_eaug_page(): grow, EAUG
        if EN[EN_PAGE_CNT, _u(e)] % SGX_VA_SLOT_COUNT == 0:
            ret = _grow(S, CG, EN, VA, P32, P8, PCG, e, page)
            if ret:
                return VM_FAULT_NOPAGE if ret == -EBUSY else VM_FAULT_SIGBUS
        EN[EN_PAGE_CNT, _u(e)] += 1
        _leaf(S, L_EAUG, 1)
        EN[EN_NR_EAUG, _u(e)] += 1
        E32[_u(g), E_EPC] = page
        E8[E_TYPE, _u(g)] = SGX_PAGE_TYPE_REG
        E8[E_DESC, _u(g)] = DESC_PRESENT
        _hb_set(HB, g)
    else:
        # sgx_encl_eldu(): ELDU, free the VA slot, truncate the backing
        _leaf(S, L_ELDU, 1)
        EN[EN_NR_ELDU, _u(e)] += 1
        _free_va_slot(EN, VA, e, E32[_u(g), E_VA])
        E32[_u(g), E_VA] = -1
        EN[EN_BACKING, _u(e)] -= BACKING
        # the memcg the backing was charged to: the enclave's unless it has changed
        # since some page went out (EN_EMIX; saves a load that misses the cache)
        CG[CG_MEMD, _u(EMEM[_u(g)] if EN[EN_EMIX, _u(e)] else EN[EN_MEMCG, _u(e)])] -= BACKING
        EMEM[_u(g)] = -1
        E32[_u(g), E_EPC] = page
        E8[E_DESC, _u(g)] &= NOT_ACC_BLOCKED
        _hb_set(HB, g)
    EN[EN_SECS_CHILD, _u(e)] += 1
    # sgx_mark_page_reclaimable()
    P8[_u(page), P_FLAGS] |= TRACKED
    _lru_add_tail(CG, P32, PCG[_u(page)], page)
    S[S_NR_LRU] += 1
    return 0


# --- the enclave's release (encl.py) --------------------------------------------------------


@outline
def _encl_release(S, CG, EN, VA, P32, P8, PCG, E32, E8, EMEM, HB, e):
    """Models sgx_encl_release() when a reclaimer drops the last reference (the task
    has exited): every resident page unmarked (sgx_unmark_page_reclaimable()) and freed
    (EREMOVE), the SECS, every VA page, the backing (every memcg charge returned)."""
    EN[EN_RELEASED, _u(e)] = 1
    off = EN[EN_OFF, _u(e)]
    for idx in range(EN[EN_NPAGES, _u(e)]):
        g = off + idx
        page = E32[_u(g), E_EPC]
        if page < 0:
            continue
        if P8[_u(page), P_FLAGS] & TRACKED:
            if P32[_u(page), P_PREV] == page:
                continue  # isolated by a reclaimer: -EBUSY
            c = PCG[_u(page)]
            _lru_del_init(CG, P32, c if c >= 0 else S[S_ROOT], page)
            S[S_NR_LRU] -= 1
            P8[_u(page), P_FLAGS] &= NOT_TRACKED
        _leaf(S, L_EREMOVE, 1)
        _free_epc_page(S, CG, P32, P8, PCG, page)
        EN[EN_SECS_CHILD, _u(e)] -= 1
        E32[_u(g), E_EPC] = -1
        _hb_clear(HB, g)
    if EN[EN_SECS_CHILD, _u(e)] == 0 and EN[EN_SECS_EPC, _u(e)] >= 0:
        _leaf(S, L_EREMOVE, 1)
        _free_epc_page(S, CG, P32, P8, PCG, EN[EN_SECS_EPC, _u(e)])
        EN[EN_SECS_EPC, _u(e)] = -1
    vaoff = EN[EN_VAOFF, _u(e)]
    no = EN[EN_VA_HEAD, _u(e)]
    while no >= 0:
        row = vaoff + no
        _leaf(S, L_EREMOVE, 1)
        _free_epc_page(S, CG, P32, P8, PCG, VA[_u(row), VA_EPC])
        VA[_u(row), VA_EPC] = -1
        no = VA[_u(row), VA_NEXT]
    EN[EN_VA_HEAD, _u(e)] = -1
    EN[EN_VA_TAIL, _u(e)] = -1
    # fput(encl->backing): every memcg charge returned
    for idx in range(EN[EN_NPAGES, _u(e)]):
        g = off + idx
        if E32[_u(g), E_VA] >= 0:
            CG[CG_MEMD, _u(EMEM[_u(g)])] -= BACKING
            E32[_u(g), E_VA] = -1
            EMEM[_u(g)] = -1
        E8[E_DESC, _u(g)] = 0
    if EN[EN_SECS_VA, _u(e)] >= 0:
        CG[CG_MEMD, _u(EN[EN_SECS_MEMCG, _u(e)])] -= BACKING
        EN[EN_SECS_VA, _u(e)] = -1
    EN[EN_BACKING, _u(e)] = -EN[EN_BACKING0, _u(e)]


@inline
def _encl_put(S, CG, EN, VA, P32, P8, PCG, E32, E8, EMEM, HB, e):
    """Models sgx_encl_put(): kref_put(&encl->refcount, sgx_encl_release)."""
    EN[EN_REFCOUNT, _u(e)] -= 1
    if EN[EN_REFCOUNT, _u(e)] == 0:
        _encl_release(S, CG, EN, VA, P32, P8, PCG, E32, E8, EMEM, HB, e)


# --- reclaim (reclaim.py, epc_cgroup.py) ---------------------------------------------------


@inline
def _reclaim_loop(S, CG, EN, R, P32, P8, E32, E8, r):
    """The loop of sgx_cgroup_reclaim_pages() (with sgx_cgroup_next_get()) and phase 1
    of sgx_reclaim_pages() (_sgx_reclaim_isolate()).  Returns True at the
    "reclaim:isolated" yield point (the batch in R[R_PAGES.., r]), False when the loop
    is over."""
    root = R[R_ROOT, _u(r)]
    while R[R_CNT, _u(r)] < R[R_NR, _u(r)] and not _lru_empty(S, CG, root):
        # sgx_cgroup_next_get(): the cgroup at the cursor, which moves on in preorder
        p = CG[CG_CURSOR, _u(root)]
        q = p + 1
        if q >= CG[CG_SUBEND, _u(root)]:
            q = CG[CG_PREPOS, _u(root)]
        CG[CG_CURSOR, _u(root)] = q
        c = CG[CG_PRE, _u(p)]
        if c != root:
            CG[CG_REFCNT, _u(c)] += 1  # css_tryget(), held across the batch
        CG[CG_NR_BATCHES, _u(c)] += 1
        n = 0
        i = CG[CG_LRU_HEAD, _u(c)]
        while i >= 0 and n < SGX_NR_TO_SCAN:
            R[_u(R_PAGES + n), _u(r)] = i
            n += 1
            i = P32[_u(i), P_NEXT]
        if n:
            CG[CG_LRU_HEAD, _u(c)] = i
            if i < 0:
                CG[CG_LRU_TAIL, _u(c)] = -1
            else:
                P32[_u(i), P_PREV] = -1
                S[S_LRU_PF] = i  # the next batch's rows, walked ahead (_lru_pf_step)
                S[S_LRU_PF_N] = LRU_PF_HOPS
            for k in range(n):
                pg = R[_u(R_PAGES + k), _u(r)]
                P32[_u(pg), P_PREV] = pg
                P32[_u(pg), P_NEXT] = pg
            CG[CG_LRU_NR, _u(c)] -= n
            S[S_NR_LRU] -= n
        # kref_get_unless_zero() per page: pages of a released enclave are forgotten
        kept = 0
        for k in range(n):
            pg = R[_u(R_PAGES + k), _u(r)]
            e = P32[_u(pg), P_OE]
            if EN[EN_REFCOUNT, _u(e)] > 0:
                EN[EN_REFCOUNT, _u(e)] += 1
                R[_u(R_PAGES + kept), _u(r)] = pg
                R[_u(R_ES + kept), _u(r)] = e
                g = EN[EN_OFF, _u(e)] + P32[_u(pg), P_OI]
                R[_u(R_GS + kept), _u(r)] = g
                _prefetch(E8, E_DESC, g)  # for phase 2 and 4
                _prefetch(E32, g, E_EPC)  # for phase 4
                kept += 1
            else:
                P8[_u(pg), P_FLAGS] &= NOT_TRACKED
        if kept == 0:
            if c != root:
                CG[CG_REFCNT, _u(c)] -= 1  # sgx_put_cg()
            continue
        R[R_C, _u(r)] = c
        R[R_NP, _u(r)] = kept
        R[R_CB, _u(r)] = kept
        return True
    return False


@inline
def _phase2(S, CG, EN, R, VA, P32, P8, PCG, E32, E8, EMEM, HB, r):
    """Phase 2 of sgx_reclaim_pages(): sgx_reclaimer_age() and the backing (no
    memory.max: every charge fits).  Returns the number of pages kept."""
    c = R[R_C, _u(r)]
    n = R[R_NP, _u(r)]
    kept = 0
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
        if not young:
            EMEM[_u(g)] = EN[EN_MEMCG, _u(e)]
            E8[E_DESC, _u(g)] |= DESC_BEING_RECLAIMED
            EN[EN_BACKING, _u(e)] += BACKING
            CG[CG_MEMD, _u(EN[EN_MEMCG, _u(e)])] += BACKING
            R[_u(R_PAGES + kept), _u(r)] = page
            R[_u(R_ES + kept), _u(r)] = e
            R[_u(R_GS + kept), _u(r)] = g
            kept += 1
        else:
            _lru_add_tail(CG, P32, c, page)
            S[S_NR_LRU] += 1
            _encl_put(S, CG, EN, VA, P32, P8, PCG, E32, E8, EMEM, HB, e)
    R[R_NP, _u(r)] = kept
    return kept


@outline
def _evict_secs(S, CG, EN, VA, P32, P8, PCG, e):
    """sgx_reclaimer_write()'s SECS write-back after its last child: backing, VA slot,
    EWB, sgx_encl_free_epc_page()."""
    EN[EN_BACKING, _u(e)] += BACKING
    CG[CG_MEMD, _u(EN[EN_MEMCG, _u(e)])] += BACKING
    EN[EN_SECS_MEMCG, _u(e)] = EN[EN_MEMCG, _u(e)]
    EN[EN_SECS_VA, _u(e)] = _alloc_va_slot(S, EN, VA, e)
    _leaf(S, L_EWB, 1)
    EN[EN_NR_SECS_EWB, _u(e)] += 1
    secs = EN[EN_SECS_EPC, _u(e)]
    EN[EN_SECS_EPC, _u(e)] = -1
    _leaf(S, L_EREMOVE, 1)
    _free_epc_page(S, CG, P32, P8, PCG, secs)


@inline
def _phase4(S, CG, EN, R, VA, P32, P8, PCG, E32, E8, EMEM, HB, r):
    """Phase 4 of sgx_reclaim_pages(): sgx_reclaimer_write() / sgx_encl_ewb() per page
    (one ETRACK per enclave per batch), the SECS after its last child, kref_put() (which
    may release the enclave), sgx_free_epc_page() (the uncharge of the batch at the
    end)."""
    c = R[R_C, _u(r)]
    k = R[R_NP, _u(r)]
    S[S_STAMP] += 1
    stamp = S[S_STAMP]
    for j in range(k):
        page = R[_u(R_PAGES + j), _u(r)]
        e = R[_u(R_ES + j), _u(r)]
        g = R[_u(R_GS + j), _u(r)]
        if EN[EN_TRACKED, _u(e)] != stamp:
            EN[EN_TRACKED, _u(e)] = stamp
            _leaf(S, L_ETRACK, 1)
        _leaf(S, L_EWB, 1)
        slot = _alloc_va_slot(S, EN, VA, e)
        E8[E_DESC, _u(g)] &= NOT_RECLAIM_BITS
        E32[_u(g), E_VA] = slot
        E32[_u(g), E_EPC] = -1
        EN[EN_SECS_CHILD, _u(e)] -= 1
        EN[EN_NR_EVICTED, _u(e)] += 1
        if EN[EN_SECS_CHILD, _u(e)] == 0 and EN[EN_SECS_EPC, _u(e)] >= 0:
            _evict_secs(S, CG, EN, VA, P32, P8, PCG, e)
        _encl_put(S, CG, EN, VA, P32, P8, PCG, E32, E8, EMEM, HB, e)
        _free_to_node(S, P32, P8, PCG, page)
    CG[CG_NR_PAGES, _u(c)] -= k
    _count_freed(CG, c, k)
    CG[CG_NR_EVICTED, _u(c)] += k
    _uncharge(CG, c, k * PAGE)
    CG[CG_REFCNT, _u(c)] -= k


@inline
def _should_reclaim(S, CG, c):
    """Models sgx_cgroup_should_reclaim()."""
    if _lru_empty(S, CG, c):
        return False
    limit = CG[CG_MAXPAGES, _u(c)]
    if limit > SGX_CG_LOW_LIMIT:
        limit -= SGX_CG_MIN_FREE_PAGE
    return CG[CG_USAGE, _u(c)] // PAGE >= limit


@inline
def _reclaimer_step(S, CG, EN, R, VA, P32, P8, PCG, E32, E8, EMEM, HB, r):
    """One step of ksgxd (ksgxd_step()) or of a sgx_cg_wq worker
    (sgx_cgroup_reclaim_work_func()): from the yield point the actor stopped at to its
    next one.  Returns False when the actor ends (no reschedule)."""
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
                R[R_ROOT, _u(r)] = S[S_ROOT]
                R[R_NR, _u(r)] = SGX_NR_TO_SCAN
                R[R_CNT, _u(r)] = 0
                loop = True
            else:
                S[S_WOKEN] = 0
                nstage = ST_END
        else:
            CG[CG_PENDING, _u(R[R_CG, _u(r)])] = 0
            CG[CG_RUNNING, _u(R[R_CG, _u(r)])] = 1
            check = True
    elif stage == ST_PH2:
        if _phase2(S, CG, EN, R, VA, P32, P8, PCG, E32, E8, EMEM, HB, r):
            nstage = ST_PH3
        else:
            loop = True
    elif stage == ST_PH3:
        n = R[R_NP, _u(r)]
        for k in range(n):
            g = R[_u(R_GS + k), _u(r)]
            E8[E_DESC, _u(g)] |= DESC_BLOCKED
            _hb_clear(HB, g)
        _leaf(S, L_EBLOCK, n)
        nstage = ST_PH4
    elif stage == ST_PH4:
        _phase4(S, CG, EN, R, VA, P32, P8, PCG, E32, E8, EMEM, HB, r)
        loop = True
    elif ksgxd:  # ST_RESCHED: ksgxd_step() returns True (the kstep's last step)
        nstage = ST_START
    else:
        check = True
    if loop and stage != ST_START:
        # back in sgx_cgroup_reclaim_pages() after a batch: count it, put the cgroup
        R[R_CNT, _u(r)] += R[R_CB, _u(r)]
        c = R[R_C, _u(r)]
        if c != R[R_ROOT, _u(r)]:
            CG[CG_REFCNT, _u(c)] -= 1
    if check:
        c = R[R_CG, _u(r)]
        if _should_reclaim(S, CG, c):
            R[R_ROOT, _u(r)] = c
            R[R_NR, _u(r)] = SGX_NR_TO_SCAN
            R[R_CNT, _u(r)] = 0
            loop = True
        else:
            CG[CG_RUNNING, _u(c)] = 0
            nstage = ST_END
    if loop:
        if _reclaim_loop(S, CG, EN, R, P32, P8, E32, E8, r):
            S[S_STEPCOST] += S[S_BATCH_NS]
            nstage = ST_PH2
        else:
            nstage = ST_RESCHED
    R[R_STAGE, _u(r)] = nstage
    return True


# --- the event loop ------------------------------------------------------------------------


# A binary heap on (t, seq) is three rows of an int64 table, by position: row h the
# actor (thread or reclaimer slot), h + 1 its time, h + 2 its seq.  The threads' heap
# is TH[TH_HEAP..], the scheduled reclaimers' R[R_HEAP..]; the actor's own time and seq
# (TH_T / R_T, ...) are kept equal to its entry's.


@inline
def _key_less(ta, sa, tb, sb):
    return ta < tb or (ta == tb and sa < sb)


@inline
def _heap_put(A, h, pos, x, t, seq):
    """Entry *pos* of the heap in rows h.. of *A* is actor *x* at (t, seq)."""
    A[_u(h), _u(pos)] = x
    A[_u(h + 1), _u(pos)] = t
    A[_u(h + 2), _u(pos)] = seq


@inline
def _heap_sift_down(A, h, n, pos):
    """Restore the heap in rows h.. of *A* (*n* entries) below *pos*, whose key grew."""
    x = A[_u(h), _u(pos)]
    xt = A[_u(h + 1), _u(pos)]
    xs = A[_u(h + 2), _u(pos)]
    while True:
        c = 2 * pos + 1
        if c >= n:
            break
        ct = A[_u(h + 1), _u(c)]
        cs = A[_u(h + 2), _u(c)]
        if c + 1 < n and _key_less(A[_u(h + 1), _u(c + 1)], A[_u(h + 2), _u(c + 1)], ct, cs):
            c += 1
            ct = A[_u(h + 1), _u(c)]
            cs = A[_u(h + 2), _u(c)]
        if not _key_less(ct, cs, xt, xs):
            break
        _heap_put(A, h, pos, A[_u(h), _u(c)], ct, cs)
        pos = c
    _heap_put(A, h, pos, x, xt, xs)


@inline
def _heap_rekey_root(A, h, n, t, seq):
    """The root's actor is rescheduled at (t, seq)."""
    A[_u(h + 1), 0] = t
    A[_u(h + 2), 0] = seq
    _heap_sift_down(A, h, n, 0)


@inline
def _heap_pop_root(A, h, n):
    """Take the root off a heap that has *n* entries left."""
    if n:
        _heap_put(A, h, 0, A[_u(h), _u(n)], A[_u(h + 1), _u(n)], A[_u(h + 2), _u(n)])
        _heap_sift_down(A, h, n, 0)


@inline
def _heap_push(A, h, n, x, t, seq):
    """Put actor *x* at (t, seq) on a heap of *n* entries (sift up)."""
    pos = n
    while pos > 0:
        up = (pos - 1) // 2
        ut = A[_u(h + 1), _u(up)]
        us = A[_u(h + 2), _u(up)]
        if not _key_less(t, seq, ut, us):
            break
        _heap_put(A, h, pos, A[_u(h), _u(up)], ut, us)
        pos = up
    _heap_put(A, h, pos, x, t, seq)


@outline
def _record_sample(S, CG, SAMP, SAMPT, now):
    """Simulation._record_sample() for the counters of every live cgroup."""
    k = S[S_NSAMP]
    SAMPT[_u(k)] = now
    for j in range(S[S_NLIVE]):
        c = CG[CG_LIVE, _u(j)]
        # the counters of epcsim.compiled.layout.SAMPLED (the root has no misc.events:
        # its rows are SAMP_ROOT_ROWS)
        if CG[CG_PARENT, _u(c)] >= 0:
            for f in range(NSAMPF):
                SAMP[_u(k), _u(j), _u(f)] = CG[_u(SAMP_ROWS[f]), _u(c)]
        else:
            for f in range(NSAMPF):
                SAMP[_u(k), _u(j), _u(f)] = CG[_u(SAMP_ROOT_ROWS[f]), _u(c)]
    S[S_NSAMP] = k + 1
    S[S_SM_LAST] = now


@outline
def _kick(S, CG, R, now):
    """Simulation._kick_kernel_threads(): start ksgxd if woken and not running, then a
    worker for each runnable sgx_cg_wq item (sgx_cg_wq_take_runnable(): oldest first;
    an item whose work function still runs stays queued).  Returns False if no worker
    slot was free (cannot happen: one slot per cgroup)."""
    if S[S_WOKEN] and not R[R_SCHED, 0]:
        S[S_SEQ] += 1
        R[R_SCHED, 0] = 1
        R[R_T, 0] = now
        R[R_SEQ, 0] = S[S_SEQ]
        R[R_STAGE, 0] = ST_START
        S[S_ACTIVE] += 1
        _heap_push(R, R_HEAP, S[S_NRH], 0, now, S[S_SEQ])
        S[S_NRH] += 1
    nq = S[S_NWQ]
    if nq:
        keep = 0
        nw = R.shape[1]
        for q in range(nq):
            c = CG[CG_WQ, _u(q)]
            if CG[CG_RUNNING, _u(c)]:
                CG[CG_WQ, _u(keep)] = c
                keep += 1
                continue
            slot = -1
            for r in range(1, nw):
                if not R[R_SCHED, _u(r)]:
                    slot = r
                    break
            if slot < 0:
                S[S_ERR] = ERR_NO_WORKER_SLOT
                return False
            S[S_SEQ] += 1
            R[R_SCHED, _u(slot)] = 1
            R[R_T, _u(slot)] = now
            R[R_SEQ, _u(slot)] = S[S_SEQ]
            R[R_STAGE, _u(slot)] = ST_START
            R[R_KIND, _u(slot)] = 1
            R[R_CG, _u(slot)] = c
            S[S_ACTIVE] += 1
            _heap_push(R, R_HEAP, S[S_NRH], slot, now, S[S_SEQ])
            S[S_NRH] += 1
        S[S_NWQ] = keep
    return True


@njit_cached
def run_core(S, CG, EN, TH, CPUF, R, VA, P32, P8, PCG, E32, E8, EMEM, HB, BUF, LAT, SAMP, SAMPT):
    """Run the simulation loop (Simulation.run() with the enclave threads, ksgxd, the
    workers and the sampler) until a thread's next step ends it (RC_THREAD_DONE, thread
    in S_WHO), the next event is past the time limit (RC_LIMIT), a thread needs the
    next chunk of accesses (RC_NEED_CHUNK), a buffer is full (RC_FLUSH) or a model
    invariant broke (RC_ERROR)."""
    access_ns = S[S_ACCESS_NS]
    big = 1 << 62
    while True:
        if S[S_ERR]:
            return RC_ERROR
        if S[S_KICK]:
            S[S_KICK] = 0
            if not _kick(S, CG, R, S[S_NOW]):
                return RC_ERROR
        j = -1  # the thread stepping
        who = -1  # the reclaimer stepping; -2: the sampler
        mid = S[S_MIDPOP]
        if mid:
            j = mid - 1
        else:
            # pop the least (t, prio, seq): threads and kernel threads have priority
            # 1, the sampler 2
            bt = big
            bs = big
            if S[S_NHP]:
                j = TH[TH_HEAP, 0]
                bt = TH[TH_HT, 0]
                bs = TH[TH_HS, 0]
            if S[S_NRH]:
                t = R[R_HT, 0]
                if _key_less(t, R[R_HS, 0], bt, bs):
                    j, who, bt, bs = -1, R[R_HEAP, 0], t, R[R_HS, 0]
            if S[S_SM_T] < bt:
                j, who, bt = -1, -2, S[S_SM_T]
            if bt > S[S_LIMIT]:
                return RC_LIMIT
            if j >= 0 and CPUF[_u(TH[TH_CPU, _u(j)])] > bt:
                # the CPU is busy with another task's step: wait for it
                S[S_SEQ] += 1
                TH[TH_T, _u(j)] = CPUF[_u(TH[TH_CPU, _u(j)])]
                TH[TH_SEQ, _u(j)] = S[S_SEQ]
                _heap_rekey_root(TH, TH_HEAP, S[S_NHP], TH[TH_T, _u(j)], S[S_SEQ])
                continue
            S[S_NOW] = bt
        now = S[S_NOW]
        S[S_STEPCOST] = 0
        if who == -2:
            # the sampler
            if S[S_SM_LAST] != now:
                if S[S_NSAMP] >= SAMP.shape[0]:
                    return RC_FLUSH
                _record_sample(S, CG, SAMP, SAMPT, now)
            S[S_SEQ] += 1
            S[S_SM_SEQ] = S[S_SEQ]
            S[S_SM_T] = now + S[S_SM_INTERVAL]
        elif j < 0:
            if _reclaimer_step(S, CG, EN, R, VA, P32, P8, PCG, E32, E8, EMEM, HB, who):
                d = S[S_KSTEP_NS] + S[S_STEPCOST]
                S[S_SEQ] += 1
                R[R_T, _u(who)] = now + (d if d > 0 else 1)
                R[R_SEQ, _u(who)] = S[S_SEQ]
                _heap_rekey_root(R, R_HEAP, S[S_NRH], R[R_T, _u(who)], S[S_SEQ])  # the root
            else:
                R[R_SCHED, _u(who)] = 0
                S[S_ACTIVE] -= 1
                S[S_NRH] -= 1
                _heap_pop_root(R, R_HEAP, S[S_NRH])
        else:
            # an enclave thread (Simulation._thread); its steps follow one another
            # here as long as no other actor's event comes first
            e = TH[TH_E, _u(j)]
            # the next event of any other actor: the kernel threads and the other
            # enclave threads (the thread is the heap's root: the next is a child) win
            # a tie, the sampler does not; none of them moves while this thread steps
            nxt_k = R[R_HT, 0] if S[S_NRH] else big
            nhp = S[S_NHP]
            if nhp > 1 and TH[TH_HT, 1] < nxt_k:
                nxt_k = TH[TH_HT, 1]
            if nhp > 2 and TH[TH_HT, 2] < nxt_k:
                nxt_k = TH[TH_HT, 2]
            nxt_s = S[S_SM_T]
            nxt_t = nxt_s if nxt_s < nxt_k else nxt_k
            limit = S[S_LIMIT]
            while True:
                # book the last fault's result
                if not mid and TH[TH_PENDING, _u(j)]:
                    rr = TH[TH_R, _u(j)]
                    n = S[S_NLAT]
                    if rr == 0 and n >= LAT.shape[0]:
                        return RC_FLUSH
                    TH[TH_PENDING, _u(j)] = 0
                    if rr == 0:
                        LAT[_u(n)] = now - TH[TH_FSTART, _u(j)]
                        S[S_NLAT] = n + 1
                        TH[TH_FSTART, _u(j)] = -1
                        if S[S_UNREF]:
                            TH[TH_POS, _u(j)] += 1
                            TH[TH_REMAIN, _u(j)] -= 1
                            TH[TH_ACC, _u(j)] += 1
                    elif rr == VM_FAULT_NOPAGE:
                        # the stuck rule (epcsim.sim.stuck): retries with nothing freed
                        # in the task's cgroup's subtree
                        freed = CG[CG_NR_FREED, _u(TH[TH_TCG, _u(j)])]
                        if TH[TH_STREAK, _u(j)] == 1 or freed != TH[TH_FREED, _u(j)]:
                            TH[TH_FREED, _u(j)] = freed
                            TH[TH_QUIET, _u(j)] = 0
                        TH[TH_QUIET, _u(j)] += 1
                    else:
                        TH[TH_SIGBUS, _u(j)] = 1
                        EN[EN_SIGPEND, _u(e)] = 1
                mid = 0
                S[S_MIDPOP] = 0
                if TH[TH_STARTED, _u(j)] < 0:
                    TH[TH_STARTED, _u(j)] = now
                until = TH[TH_UNTIL, _u(j)]
                if (
                    TH[TH_REMAIN, _u(j)] <= 0
                    or TH[TH_SIGBUS, _u(j)]
                    or (until >= 0 and now >= until and TH[TH_STREAK, _u(j)] == 0)
                    or EN[EN_SIGPEND, _u(e)]
                    or TH[TH_QUIET, _u(j)] >= S[S_STUCK]
                ):
                    S[S_WHO] = j
                    TH[TH_LIVE, _u(j)] = 2
                    S[S_NHP] -= 1  # off the thread heap (it is the root)
                    _heap_pop_root(TH, TH_HEAP, S[S_NHP])
                    return RC_THREAD_DONE
                pos = TH[TH_POS, _u(j)]
                if pos >= TH[TH_BUFLEN, _u(j)]:
                    S[S_MIDPOP] = j + 1
                    S[S_WHO] = j
                    return RC_NEED_CHUNK
                # accesses up to the next event of any other actor (nxt_k, nxt_s) or
                # the thread's end: max(1, (tend - now) // access_ns) of them, that is
                # the first always and each next one while it ends by tend (tk: the
                # time after access k, compared with tend raised to the first's end)
                tend = until if 0 <= until < nxt_t else nxt_t
                t_one = now + access_ns
                if tend < t_one:
                    tend = t_one
                n = TH[TH_BUFLEN, _u(j)] - pos
                # sgx_encl_access(): hits set the accessed bit, up to the first miss
                off = EN[EN_OFF, _u(e)]
                npages = EN[EN_NPAGES, _u(e)]
                k = 0
                tk = t_one
                while k < n and tk <= tend:
                    idx = BUF[_u(j), _u(pos + k)]
                    if idx < 0 or idx >= npages:
                        break
                    g = off + idx
                    if not (HB[_u(g >> 6)] >> (g & 63)) & 1:  # not resident, or blocked
                        break
                    E8[E_DESC, _u(g)] |= DESC_ACCESSED
                    k += 1
                    tk += access_ns
                if k:
                    TH[TH_POS, _u(j)] = pos + k
                    TH[TH_REMAIN, _u(j)] -= k
                    TH[TH_ACC, _u(j)] += k
                    TH[TH_STREAK, _u(j)] = 0  # the access was done (another thread's
                    TH[TH_QUIET, _u(j)] = 0  # fault brought the page in)
                    d = k * access_ns
                else:
                    # sgx_vma_fault(); at an access's first fault the next accesses'
                    # rows are asked for
                    idx = BUF[_u(j), _u(pos)]
                    _lru_pf_step(S, P32)
                    if TH[TH_FSTART, _u(j)] < 0:
                        TH[TH_FSTART, _u(j)] = now
                        buflen = TH[TH_BUFLEN, _u(j)]
                        for q in range(pos + 1, min(pos + 1 + PF_AHEAD, buflen)):
                            ix = BUF[_u(j), _u(q)]
                            if 0 <= ix < npages:
                                _prefetch(E32, off + ix, E_EPC)
                                _prefetch(E8, E_DESC, off + ix)
                    EN[EN_NR_FAULTS, _u(e)] += 1
                    if idx < 0 or idx >= npages:
                        rr = VM_FAULT_SIGBUS
                    else:
                        S[S_CUR_TCG] = TH[TH_TCG, _u(j)]
                        S[S_CUR_NID] = TH[TH_NID, _u(j)]
                        rr = _vma_fault(S, CG, EN, VA, P32, P8, PCG, E32, E8, EMEM, HB, e, idx)
                    # counted here, where the fault happens (the result is booked at
                    # the thread's next step, which a run's end may not reach)
                    if rr == 0:
                        CG[CG_NR_FAULTS, _u(TH[TH_TCG, _u(j)])] += 1
                        TH[TH_FAULTS, _u(j)] += 1
                        TH[TH_STREAK, _u(j)] = 0
                        TH[TH_QUIET, _u(j)] = 0
                    elif rr == VM_FAULT_NOPAGE:
                        TH[TH_RETRIES, _u(j)] += 1
                        TH[TH_STREAK, _u(j)] += 1
                    TH[TH_PENDING, _u(j)] = 1
                    TH[TH_R, _u(j)] = rr
                    d = S[S_STEPCOST] + S[S_KSTEP_NS] + S[S_FAULT_NS]
                S[S_SEQ] += 1
                t1 = now + (d if d > 0 else 1)
                TH[TH_T, _u(j)] = t1
                TH[TH_SEQ, _u(j)] = S[S_SEQ]
                TH[TH_HT, 0] = t1  # its heap entry (the root) follows
                TH[TH_HS, 0] = S[S_SEQ]
                CPUF[_u(TH[TH_CPU, _u(j)])] = t1
                # the thread's next step is the next event (its CPU is its own, the
                # heap stays valid: t1 is below the children's keys) unless a kernel
                # thread is to be kicked, another actor comes first or the time is up
                if (
                    t1 >= nxt_k
                    or t1 > nxt_s
                    or t1 > limit
                    or S[S_NWQ]
                    or (S[S_WOKEN] and not R[R_SCHED, 0])
                ):
                    break
                now = t1
                S[S_NOW] = now
                S[S_STEPCOST] = 0
            _heap_sift_down(TH, TH_HEAP, S[S_NHP], 0)
        # _kick_kernel_threads()
        kick = (S[S_WOKEN] and not R[R_SCHED, 0]) or S[S_NWQ]
        if kick and not _kick(S, CG, R, now):
            return RC_ERROR
