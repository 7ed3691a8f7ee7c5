"""Enclaves as the compiled core runs them (:mod:`epcsim.kernel.encl`): the fault,
the VA slots, the SECS, the release; the enclave pages' rows in ``E32`` / ``E8`` /
``EMEM`` and the hit bitmap ``HB``."""

from __future__ import annotations

from ..kernel.constants import (
    DESC_BEING_RECLAIMED,
    DESC_PRESENT,
    SGX_PAGE_TYPE_REG,
    SGX_VA_SLOT_COUNT,
    VM_FAULT_NOPAGE,
    VM_FAULT_SIGBUS,
)
from ..kernel.epc import KIND_ENCL, KIND_SECS, KIND_VA
from ._jit import inline, outline
from .bits import _u, bit64, lowbit, trailing_zeros
from .encls import encls_leaf
from .epc import sgx_alloc_epc_page, sgx_free_epc_page
from .layout import (
    BACKING,
    CG_MEMD,
    E_DESC,
    E_EPC,
    E_TYPE,
    E_VA,
    EBUSY,
    EN_BACKING,
    EN_BACKING0,
    EN_EMIX,
    EN_MEMCG,
    EN_NPAGES,
    EN_NR_EAUG,
    EN_NR_ELDU,
    EN_NR_SECS_ELDU,
    EN_NVA,
    EN_OFF,
    EN_PAGE_CNT,
    EN_REFCOUNT,
    EN_RELEASED,
    EN_SECS_CHILD,
    EN_SECS_EPC,
    EN_SECS_MEMCG,
    EN_SECS_VA,
    EN_VA_HEAD,
    EN_VA_TAIL,
    EN_VAOFF,
    ERR_NO_VA_SLOT,
    L_EAUG,
    L_ELDU,
    L_EREMOVE,
    NOT_ACC_BLOCKED,
    NOT_TRACKED,
    P_FLAGS,
    P_PREV,
    S_ERR,
    S_NR_LRU,
    S_ROOT,
    S_SGX2,
    TRACKED,
    VA_BITS,
    VA_EPC,
    VA_NEXT,
    VA_OPEN,
    VA_PREV,
    VA_SLOT_SHIFT,
    VA_USED,
    VA_WORDS,
)
from .lru import list_add_tail, list_del_init

__all__ = [
    "emem_keep",
    "hb_clear",
    "hb_set",
    "sgx_alloc_va_slot",
    "sgx_encl_grow",
    "sgx_encl_load_secs",
    "sgx_encl_put",
    "sgx_encl_release",
    "sgx_encl_va_page_due",
    "sgx_free_va_slot",
    "sgx_vma_fault",
    "va_pages_add_head",
    "va_pages_add_tail",
    "va_pages_del",
]


@inline
def hb_set(HB, g):
    """No kernel twin (packing): enclave page row *g* can be hit (resident and not
    blocked), in the hit bitmap the access loop reads instead of ``E32`` and ``E8``."""
    HB[_u(g >> 6)] |= bit64(g & 63)


@inline
def hb_clear(HB, g):
    """No kernel twin (packing): enclave page row *g* cannot be hit."""
    HB[_u(g >> 6)] &= ~bit64(g & 63)


# --- VA pages: the va_pages list as links of the VA table -----------------------------


@inline
def va_pages_del(EN, VA, e, no):
    """No kernel twin (packing): VA page *no* off enclave *e*'s va_pages links."""
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
def va_pages_add_head(EN, VA, e, no):
    """No kernel twin (packing): VA page *no* at the head of enclave *e*'s va_pages."""
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
def va_pages_add_tail(EN, VA, e, no):
    """No kernel twin (packing): VA page *no* at the tail of enclave *e*'s va_pages."""
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
def sgx_alloc_va_slot(S, EN, VA, e):
    """Models sgx_alloc_va_slot() (specialised from epcsim.kernel.encl.sgx_alloc_va_slot)
    on the first VA page of va_pages (rotated to the tail once full).  Returns the slot
    id (VA page number * SGX_VA_SLOT_COUNT + slot)."""
    no = EN[EN_VA_HEAD, _u(e)]
    row = EN[EN_VAOFF, _u(e)] + no
    if no < 0 or VA[_u(row), VA_USED] >= SGX_VA_SLOT_COUNT:
        S[S_ERR] = ERR_NO_VA_SLOT
        return 0
    # find_first_zero_bit(): the first word with a free slot (VA_OPEN: no branch per
    # word, whose exit the CPU would mispredict), then its lowest clear bit (llvm.cttz
    # of the complement); VA_USED < SGX_VA_SLOT_COUNT, so a word is open
    open_words = VA[_u(row), VA_OPEN]
    w = trailing_zeros(open_words)
    word = VA[_u(row), _u(VA_BITS + w)]
    inv = ~word
    word |= lowbit(inv)
    VA[_u(row), _u(VA_BITS + w)] = word
    VA[_u(row), VA_OPEN] = open_words & ~(int(word == -1) << w)
    slot = w * 64 + trailing_zeros(inv)
    VA[_u(row), VA_USED] += 1
    if VA[_u(row), VA_USED] == SGX_VA_SLOT_COUNT and EN[EN_VA_TAIL, _u(e)] != no:
        va_pages_del(EN, VA, e, no)
        va_pages_add_tail(EN, VA, e, no)
    return no * SGX_VA_SLOT_COUNT + slot


@inline
def sgx_free_va_slot(EN, VA, e, slot_id):
    """Models sgx_free_va_slot() (specialised from epcsim.kernel.encl.sgx_free_va_slot)
    and the list_move() of its VA page to the head of va_pages."""
    no = slot_id >> VA_SLOT_SHIFT  # slot_id // SGX_VA_SLOT_COUNT (slot_id >= 0)
    slot = slot_id & (SGX_VA_SLOT_COUNT - 1)
    row = EN[EN_VAOFF, _u(e)] + no
    VA[_u(row), _u(VA_BITS + (slot >> 6))] &= ~bit64(slot & 63)
    VA[_u(row), VA_OPEN] |= bit64(slot >> 6)
    VA[_u(row), VA_USED] -= 1
    if EN[EN_VA_HEAD, _u(e)] != no:
        va_pages_del(EN, VA, e, no)
        va_pages_add_head(EN, VA, e, no)


@outline
def emem_keep(EN, E32, E8, EMEM, e):
    """No kernel twin (packing): from now on ``EMEM`` is kept for enclave *e*
    (``EN_EMIX`` 1): its rows set to the backing memcgs ``EN_EMIX`` 0 implied
    (layout.implied_backing_memcgs(): ``EN_MEMCG`` where the backing is charged -- a VA
    slot, or ``DESC_BEING_RECLAIMED`` -- else -1).  Rare: a reclaimer charging a page's
    backing to another memcg (an EADD build's task's)."""
    off = EN[EN_OFF, _u(e)]
    m = EN[EN_MEMCG, _u(e)]
    for idx in range(EN[EN_NPAGES, _u(e)]):
        g = off + idx
        if E32[_u(g), E_VA] >= 0 or E8[E_DESC, _u(g)] & DESC_BEING_RECLAIMED:
            EMEM[_u(g)] = m
        else:
            EMEM[_u(g)] = -1
    EN[EN_EMIX, _u(e)] = 1


# --- enclave faults --------------------------------------------------------------------


@outline
def sgx_encl_load_secs(S, CG, EN, VA, P32, P8, PCG, e):
    """Models sgx_encl_load_secs() (specialised from epcsim.kernel.encl.sgx_encl_load_secs)
    with sgx_encl_eldu() of the SECS (rare: the SECS goes out only with the enclave's
    last page).  Returns 0 or a negative errno."""
    page = sgx_alloc_epc_page(S, CG, P32, P8, PCG, e, KIND_SECS, -1)
    if page < 0:
        return page
    encls_leaf(S, L_ELDU, 1)
    EN[EN_NR_ELDU, _u(e)] += 1
    EN[EN_NR_SECS_ELDU, _u(e)] += 1
    sgx_free_va_slot(EN, VA, e, EN[EN_SECS_VA, _u(e)])
    EN[EN_SECS_VA, _u(e)] = -1
    EN[EN_BACKING, _u(e)] -= BACKING
    CG[CG_MEMD, _u(EN[EN_SECS_MEMCG, _u(e)])] -= BACKING
    EN[EN_SECS_MEMCG, _u(e)] = -1
    EN[EN_SECS_EPC, _u(e)] = page
    return 0


@inline
def sgx_encl_va_page_due(EN, e):
    """Models sgx_encl_grow()'s opening test (specialised from
    epcsim.kernel.encl.sgx_encl_grow): enclave *e*'s next page needs a new VA page
    (every SGX_VA_SLOT_COUNT page_cnt increments)."""
    return (EN[EN_PAGE_CNT, _u(e)] & (SGX_VA_SLOT_COUNT - 1)) == 0  # % (page_cnt >= 0)


@inline
def sgx_encl_grow_va_page(EN, VA, e, vpage):
    """Models sgx_encl_grow() (specialised from epcsim.kernel.encl.sgx_encl_grow) once
    its VA page *vpage* is allocated: the enclave's next VA page, every slot free, at
    the head of encl->va_pages.  Returns its number."""
    vano = EN[EN_NVA, _u(e)]
    EN[EN_NVA, _u(e)] += 1
    row = EN[EN_VAOFF, _u(e)] + vano
    VA[_u(row), VA_EPC] = vpage
    VA[_u(row), VA_USED] = 0
    VA[_u(row), VA_OPEN] = (1 << VA_WORDS) - 1
    for w in range(VA_WORDS):
        VA[_u(row), _u(VA_BITS + w)] = 0
    va_pages_add_head(EN, VA, e, vano)
    return vano


@outline
def sgx_encl_grow(S, CG, EN, VA, P32, P8, PCG, e, page):
    """Models sgx_encl_grow() (specialised from epcsim.kernel.encl.sgx_encl_grow) with
    NO_RECLAIM when a VA page is due (every 512 page_cnt), and sgx_encl_free_epc_page()
    of the new page when it fails.  Returns 0 or a negative errno."""
    vano = EN[EN_NVA, _u(e)]
    vpage = sgx_alloc_epc_page(S, CG, P32, P8, PCG, e, KIND_VA, vano)
    if vpage < 0:
        encls_leaf(S, L_EREMOVE, 1)
        sgx_free_epc_page(S, CG, P32, P8, PCG, page)
        return vpage
    sgx_encl_grow_va_page(EN, VA, e, vpage)
    return 0


@inline
def sgx_vma_fault(S, CG, EN, VA, P32, P8, PCG, E32, E8, EMEM, HB, e, idx):
    """Models sgx_vma_fault() (specialised from epcsim.kernel.encl._sgx_vma_fault) for
    an in-range page: sgx_encl_eaug_page() for a page not in page_array,
    __sgx_encl_load_page() (sgx_encl_load_secs(), sgx_encl_eldu()) for an evicted one,
    -EBUSY for one being reclaimed; sgx_mark_page_reclaimable() of the new page.
    Returns 0, VM_FAULT_NOPAGE or VM_FAULT_SIGBUS."""
    g = EN[EN_OFF, _u(e)] + idx
    present = E8[E_DESC, _u(g)] & DESC_PRESENT
    if present and E32[_u(g), E_EPC] >= 0:
        if E8[E_DESC, _u(g)] & DESC_BEING_RECLAIMED:
            return VM_FAULT_NOPAGE
        E8[E_DESC, _u(g)] &= NOT_ACC_BLOCKED
        hb_set(HB, g)
        return 0
    if not present and not S[S_SGX2]:
        return VM_FAULT_SIGBUS
    if EN[EN_SECS_EPC, _u(e)] < 0:
        ret = sgx_encl_load_secs(S, CG, EN, VA, P32, P8, PCG, e)
        if ret:
            return VM_FAULT_NOPAGE if ret == -EBUSY else VM_FAULT_SIGBUS
    page = sgx_alloc_epc_page(S, CG, P32, P8, PCG, e, KIND_ENCL, idx)
    if page < 0:
        return VM_FAULT_NOPAGE if page == -EBUSY else VM_FAULT_SIGBUS
    if not present:
        # sgx_encl_eaug_page(): grow, EAUG
        if sgx_encl_va_page_due(EN, e):
            ret = sgx_encl_grow(S, CG, EN, VA, P32, P8, PCG, e, page)
            if ret:
                return VM_FAULT_NOPAGE if ret == -EBUSY else VM_FAULT_SIGBUS
        EN[EN_PAGE_CNT, _u(e)] += 1
        encls_leaf(S, L_EAUG, 1)
        EN[EN_NR_EAUG, _u(e)] += 1
        E32[_u(g), E_EPC] = page
        E8[E_TYPE, _u(g)] = SGX_PAGE_TYPE_REG
        E8[E_DESC, _u(g)] = DESC_PRESENT
        hb_set(HB, g)
    else:
        # sgx_encl_eldu(): ELDU, free the VA slot, truncate the backing
        encls_leaf(S, L_ELDU, 1)
        EN[EN_NR_ELDU, _u(e)] += 1
        sgx_free_va_slot(EN, VA, e, E32[_u(g), E_VA])
        E32[_u(g), E_VA] = -1
        EN[EN_BACKING, _u(e)] -= BACKING
        # the memcg the backing was charged to: the enclave's unless some page's has
        # been another since (EN_EMIX: only then is EMEM kept; a load and a store that
        # miss the cache saved)
        if EN[EN_EMIX, _u(e)]:
            CG[CG_MEMD, _u(EMEM[_u(g)])] -= BACKING
            EMEM[_u(g)] = -1
        else:
            CG[CG_MEMD, _u(EN[EN_MEMCG, _u(e)])] -= BACKING
        E32[_u(g), E_EPC] = page
        E8[E_DESC, _u(g)] &= NOT_ACC_BLOCKED
        hb_set(HB, g)
    EN[EN_SECS_CHILD, _u(e)] += 1
    # sgx_mark_page_reclaimable()
    P8[_u(page), P_FLAGS] |= TRACKED
    list_add_tail(CG, P32, PCG[_u(page)], page)
    S[S_NR_LRU] += 1
    return 0


# --- the enclave's release -------------------------------------------------------------


@outline
def sgx_encl_release(S, CG, EN, VA, P32, P8, PCG, E32, E8, EMEM, HB, e):
    """Models sgx_encl_release() (specialised from epcsim.kernel.encl.sgx_encl_release)
    when a reclaimer drops the last reference (the task has exited): every resident
    page unmarked (sgx_unmark_page_reclaimable()) and freed (EREMOVE), the SECS, every
    VA page, the backing (every memcg charge returned)."""
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
            list_del_init(CG, P32, c if c >= 0 else S[S_ROOT], page)
            S[S_NR_LRU] -= 1
            P8[_u(page), P_FLAGS] &= NOT_TRACKED
        encls_leaf(S, L_EREMOVE, 1)
        sgx_free_epc_page(S, CG, P32, P8, PCG, page)
        EN[EN_SECS_CHILD, _u(e)] -= 1
        E32[_u(g), E_EPC] = -1
        hb_clear(HB, g)
    if EN[EN_SECS_CHILD, _u(e)] == 0 and EN[EN_SECS_EPC, _u(e)] >= 0:
        encls_leaf(S, L_EREMOVE, 1)
        sgx_free_epc_page(S, CG, P32, P8, PCG, EN[EN_SECS_EPC, _u(e)])
        EN[EN_SECS_EPC, _u(e)] = -1
    vaoff = EN[EN_VAOFF, _u(e)]
    no = EN[EN_VA_HEAD, _u(e)]
    while no >= 0:
        row = vaoff + no
        encls_leaf(S, L_EREMOVE, 1)
        sgx_free_epc_page(S, CG, P32, P8, PCG, VA[_u(row), VA_EPC])
        VA[_u(row), VA_EPC] = -1
        no = VA[_u(row), VA_NEXT]
    EN[EN_VA_HEAD, _u(e)] = -1
    EN[EN_VA_TAIL, _u(e)] = -1
    # fput(encl->backing): every memcg charge returned, to the memcg EMEM names where
    # it is kept (EN_EMIX), else to the enclave's
    kept = EN[EN_EMIX, _u(e)]
    m = EN[EN_MEMCG, _u(e)]
    for idx in range(EN[EN_NPAGES, _u(e)]):
        g = off + idx
        if E32[_u(g), E_VA] >= 0:
            if kept:
                CG[CG_MEMD, _u(EMEM[_u(g)])] -= BACKING
                EMEM[_u(g)] = -1
            else:
                CG[CG_MEMD, _u(m)] -= BACKING
            E32[_u(g), E_VA] = -1
        E8[E_DESC, _u(g)] = 0
    if EN[EN_SECS_VA, _u(e)] >= 0:
        CG[CG_MEMD, _u(EN[EN_SECS_MEMCG, _u(e)])] -= BACKING
        EN[EN_SECS_VA, _u(e)] = -1
    EN[EN_BACKING, _u(e)] = -EN[EN_BACKING0, _u(e)]


@inline
def sgx_encl_put(S, CG, EN, VA, P32, P8, PCG, E32, E8, EMEM, HB, e):
    """Models sgx_encl_put() (specialised from epcsim.kernel.encl.sgx_encl_put):
    kref_put(&encl->refcount, sgx_encl_release)."""
    EN[EN_REFCOUNT, _u(e)] -= 1
    if EN[EN_REFCOUNT, _u(e)] == 0:
        sgx_encl_release(S, CG, EN, VA, P32, P8, PCG, E32, E8, EMEM, HB, e)
