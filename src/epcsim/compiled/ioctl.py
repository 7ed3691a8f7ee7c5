"""An enclave's EADD build as the compiled core runs it (:mod:`epcsim.kernel.ioctl`,
``SGX_IOC_ENCLAVE_ADD_PAGES``, and :func:`epcsim.kernel.encl.sgx_encl_add_page`): one
step of the ioctl's loop at a time, for a build actor of the reclaimer table
(``R_KIND`` ``KIND_BUILD``, its ``R_B_*`` fields): a page's SGX_DO_RECLAIM allocations
(the charge loop with its synchronous reclaim of the task's subtree, the allocator's
global reclaim, each batch phase by phase by :func:`epcsim.compiled.reclaim.ksgxd_step`
for the build's row), the
VA page of ``sgx_encl_grow()`` every 512 pages, EADD and EEXTEND, and
``sgx_mark_page_reclaimable()``.

The failure paths are the reference's: a step that may fail (-ENOMEM: a charge over a
limit with nothing on the subtree's LRUs, or no free page and nothing reclaimable; a
page already present) and the ioctl's end are not run here: the core returns before
them (``RC_BUILD``, :func:`sgx_ioc_enclave_add_pages_ends`) and the reference runs the
step.  No task the core runs has a signal pending (EINTR), and the build runs under
the series' v16 only (no policy hooks)."""

from __future__ import annotations

from ..kernel.constants import SGX_NR_LOW_PAGES, SGX_NR_TO_SCAN
from ._jit import inline, outline
from .bits import _u
from .encl import hb_set, sgx_encl_grow_va_page, sgx_encl_va_page_due
from .encls import encls_leaf
from .epc import _sgx_alloc_epc_page
from .epc_cgroup import sgx_cgroup_lru_empty, sgx_cgroup_try_charge_reclaim
from .layout import (
    CG_NR_PAGES,
    CG_REFCNT,
    DESC_PRESENT,
    E_DESC,
    E_EPC,
    E_TYPE,
    EBUSY,
    EN_NR_ADDED,
    EN_NVA,
    EN_OFF,
    EN_PAGE_CNT,
    EN_SECS_CHILD,
    ERR_BUILD_FAILED,
    KIND_ENCL,
    KIND_VA,
    L_EADD,
    L_EEXTEND,
    P_FLAGS,
    P_KIND,
    P_OE,
    P_OI,
    PAGE,
    R_B_C,
    R_B_CG,
    R_B_E,
    R_B_EXT,
    R_B_FIRST,
    R_B_GLOBAL,
    R_B_LEN,
    R_B_PAGE,
    R_B_TCG,
    R_B_TYPE,
    R_B_VA,
    R_CNT,
    R_NR,
    R_ROOT,
    R_STAGE,
    S_ERR,
    S_NR_FREE,
    S_NR_LRU,
    S_ROOT,
    S_WOKEN,
    ST_B_ALLOC,
    ST_B_CHARGE,
    ST_B_RECLAIM,
    ST_B_TOP,
    TRACKED,
)
from .lru import list_add_tail
from .misc import misc_cg_charge_if_fits, misc_cg_fits, misc_cg_try_charge

__all__ = ["sgx_encl_add_page_done", "sgx_ioc_enclave_add_pages", "sgx_ioc_enclave_add_pages_ends"]

# what the build does next within its step
_A_PAGE = 0  # a page: its allocation (the nowait path first)
_A_CHARGE = 1  # a charge attempt of sgx_cgroup_try_charge()
_A_ALLOC = 2  # __sgx_alloc_epc_page() in sgx_alloc_epc_page()'s loop
_A_GOT = 3  # the allocation has its page


@inline
def sgx_ioc_enclave_add_pages_ends(S, CG, EN, R, E8, r):
    """No kernel twin (the hand-over rule): whether build *r*'s next step is the
    reference's: the ioctl's loop ends (every page added: it returns), or a charge or
    an allocation of the step may fail (-ENOMEM: the pages the step charges over a
    limit with nothing on the task's subtree's LRUs, or fewer free pages than it
    allocates with nothing on any LRU), or the page is present already (-EBUSY).

    What the step charges and allocates: the page (unless its charge is done: the
    allocation loop's retry, ST_B_ALLOC), and a VA page when one is due after it
    (sgx_encl_grow() every SGX_VA_SLOT_COUNT pages, R_B_VA not yet set); once R_B_VA is
    set the page is allocated and the step charges (at ST_B_CHARGE) and allocates the
    VA page alone."""
    stage = R[R_STAGE, _u(r)]
    if stage != ST_B_TOP and stage != ST_B_CHARGE and stage != ST_B_ALLOC:
        return False
    if stage == ST_B_TOP:
        c = R[R_B_C, _u(r)]
        if c >= R[R_B_LEN, _u(r)]:
            return True
        g = EN[EN_OFF, _u(R[R_B_E, _u(r)])] + R[R_B_FIRST, _u(r)] + c
        if E8[E_DESC, _u(g)] & DESC_PRESENT:
            return True
    va_due = 0
    if R[R_B_VA, _u(r)] == 0:
        e = R[R_B_E, _u(r)]
        va_due = int(sgx_encl_va_page_due(EN, e))
    charges = va_due + (0 if stage == ST_B_ALLOC else 1)
    allocs = 1 + va_due
    tcg = R[R_B_TCG, _u(r)]
    if charges and not misc_cg_fits(CG, tcg, charges * PAGE) and sgx_cgroup_lru_empty(S, CG, tcg):
        return True
    return S[S_NR_FREE] < allocs and S[S_NR_LRU] == 0


@inline
def sgx_encl_add_page_done(S, CG, EN, R, P32, P8, PCG, E32, E8, HB, r, page):
    """Models sgx_encl_add_page() (specialised from epcsim.kernel.encl.sgx_encl_add_page)
    from where its page (and VA page) are allocated: EADD (+ EEXTENDs), the page in
    page_array, a SECS child, sgx_mark_page_reclaimable(); then the ioctl counts the
    page."""
    e = R[R_B_E, _u(r)]
    g = EN[EN_OFF, _u(e)] + R[R_B_FIRST, _u(r)] + R[R_B_C, _u(r)]
    encls_leaf(S, L_EADD, 1)
    if R[R_B_EXT, _u(r)]:
        encls_leaf(S, L_EEXTEND, R[R_B_EXT, _u(r)])
    E32[_u(g), E_EPC] = page
    E8[E_TYPE, _u(g)] = R[R_B_TYPE, _u(r)]
    E8[E_DESC, _u(g)] = DESC_PRESENT
    hb_set(HB, g)
    EN[EN_SECS_CHILD, _u(e)] += 1
    EN[EN_NR_ADDED, _u(e)] += 1
    # sgx_mark_page_reclaimable()
    P8[_u(page), P_FLAGS] |= TRACKED
    list_add_tail(CG, P32, PCG[_u(page)], page)
    S[S_NR_LRU] += 1
    R[R_B_C, _u(r)] += 1


@outline
def sgx_ioc_enclave_add_pages(S, CG, EN, R, VA, P32, P8, PCG, E32, E8, HB, r):
    """Models one step of sgx_ioc_enclave_add_pages() (specialised from
    epcsim.kernel.ioctl.ioc_enclave_add_pages) for build *r* at its loop's head or at
    its allocation's charge or allocation loop: a page's sgx_encl_add_page()
    (sgx_alloc_epc_page_nowait(), else sgx_alloc_epc_page() with SGX_DO_RECLAIM:
    sgx_cgroup_try_charge()'s loop, then the allocation loop; sgx_encl_grow() every 512
    pages) up to the "cond_resched" after it; or up to where a reclaim starts
    (ST_B_RECLAIM: the charge loop's sgx_cgroup_reclaim_pages() of the task's subtree,
    one page, or the allocation loop's sgx_reclaim_pages_global(), 16 pages), which
    reclaim.ksgxd_step() runs, batch phase by batch phase, in the same step.  The step's
    failure paths are not run here: when sgx_ioc_enclave_add_pages_ends() says the step
    is the reference's, nothing changes and it returns True (else False)."""
    if sgx_ioc_enclave_add_pages_ends(S, CG, EN, R, E8, r):
        return True
    stage = R[R_STAGE, _u(r)]
    e = R[R_B_E, _u(r)]
    act = _A_PAGE
    page = -1
    if stage == ST_B_CHARGE:
        act = _A_CHARGE
    elif stage == ST_B_ALLOC:
        act = _A_ALLOC
    while True:
        if act == _A_PAGE:
            c = R[R_B_TCG, _u(r)]
            R[R_B_CG, _u(r)] = c
            CG[CG_REFCNT, _u(c)] += 1  # sgx_get_current_cg()
            # sgx_alloc_epc_page_nowait(): a free page and a charge that fits; else
            # sgx_alloc_epc_page(SGX_DO_RECLAIM)
            if S[S_NR_FREE] and misc_cg_charge_if_fits(CG, c, PAGE):
                act = _A_ALLOC
            else:
                act = _A_CHARGE
        elif act == _A_CHARGE:
            c = R[R_B_CG, _u(r)]
            failed = misc_cg_try_charge(CG, c, PAGE)
            if failed < 0:
                act = _A_ALLOC
            else:
                if sgx_cgroup_try_charge_reclaim(S, CG, c, failed) != -EBUSY:
                    S[S_ERR] = ERR_BUILD_FAILED  # -ENOMEM: excluded (..._ends)
                    return False
                # the charge loop's reclaim: one page from subtree(c)
                R[R_ROOT, _u(r)] = c
                R[R_NR, _u(r)] = 1
                R[R_CNT, _u(r)] = 0
                R[R_B_GLOBAL, _u(r)] = 0
                R[R_STAGE, _u(r)] = ST_B_RECLAIM
                return False
        elif act == _A_ALLOC:
            page = _sgx_alloc_epc_page(S, P32, P8, PCG)
            if page >= 0:
                act = _A_GOT
            else:
                # sgx_reclaim_pages_global(): 16 pages from the root's subtree
                R[R_ROOT, _u(r)] = S[S_ROOT]
                R[R_NR, _u(r)] = SGX_NR_TO_SCAN
                R[R_CNT, _u(r)] = 0
                R[R_B_GLOBAL, _u(r)] = 1
                R[R_STAGE, _u(r)] = ST_B_RECLAIM
                return False
        else:  # _A_GOT: the allocation's page (owner, cgroup), maybe wake ksgxd
            c = R[R_B_CG, _u(r)]
            va = R[R_B_VA, _u(r)]
            P8[_u(page), P_KIND] = KIND_VA if va else KIND_ENCL
            P32[_u(page), P_OE] = e
            if va:
                P32[_u(page), P_OI] = EN[EN_NVA, _u(e)]
            else:
                P32[_u(page), P_OI] = R[R_B_FIRST, _u(r)] + R[R_B_C, _u(r)]
            PCG[_u(page)] = c
            CG[CG_NR_PAGES, _u(c)] += 1
            if S[S_NR_FREE] < SGX_NR_LOW_PAGES and S[S_NR_LRU] > 0:
                S[S_WOKEN] = 1  # wake_up(ksgxd)
            if va:
                # sgx_encl_grow(): the new VA page at the head of va_pages
                sgx_encl_grow_va_page(EN, VA, e, page)
                EN[EN_PAGE_CNT, _u(e)] += 1
                R[R_B_VA, _u(r)] = 0
                page = R[R_B_PAGE, _u(r)]
                R[R_B_PAGE, _u(r)] = -1
            elif sgx_encl_va_page_due(EN, e):
                # sgx_encl_grow(): a VA page is due (sgx_alloc_epc_page(SGX_DO_RECLAIM))
                R[R_B_PAGE, _u(r)] = page
                R[R_B_VA, _u(r)] = 1
                c = R[R_B_TCG, _u(r)]
                R[R_B_CG, _u(r)] = c
                CG[CG_REFCNT, _u(c)] += 1
                act = _A_CHARGE
                continue
            else:
                EN[EN_PAGE_CNT, _u(e)] += 1
            sgx_encl_add_page_done(S, CG, EN, R, P32, P8, PCG, E32, E8, HB, r, page)
            R[R_STAGE, _u(r)] = ST_B_TOP
            return False
