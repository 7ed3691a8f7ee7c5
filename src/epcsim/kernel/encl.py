"""Enclaves: pages, VA slots, SECS, backing store, the fault path, EDMM and release.

Models ``arch/x86/kernel/cpu/sgx/encl.c`` / ``encl.h`` and the enclave-building half of
``ioctl.c`` (unchanged by the series): ``sgx_encl_grow()`` / ``sgx_encl_shrink()``,
``sgx_alloc_va_page()``, ``sgx_alloc_va_slot()`` / ``sgx_free_va_slot()``,
``sgx_encl_alloc_backing()`` (patch 11 memcg choice), ``sgx_encl_eldu()``,
``sgx_encl_load_secs()``, ``__sgx_encl_load_page()``, ``sgx_vma_fault()``,
``sgx_encl_eaug_page()``, ``sgx_encl_create()``, ``sgx_encl_add_page()``,
``sgx_encl_init()``, the EDMM ioctls' per-page bodies, ``sgx_encl_free_epc_page()``,
``sgx_encl_release()`` and the enclave's kref / mm_list.

The page table of an enclave is a set of NumPy arrays indexed by the enclave page
number (offset / 4096): ``epc`` (int32, EPC page or -1), ``desc`` (uint8 bits, below),
``type`` (uint8), ``va`` (int32, VA slot while evicted) and ``memcg`` (int16, memcg
charged for the backing while evicted): 12 bytes per enclave page.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Generator
from typing import TYPE_CHECKING

import numpy as np

from . import encls
from .constants import (
    DESC_ACCESSED,
    DESC_BEING_RECLAIMED,
    DESC_BLOCKED,
    DESC_PRESENT,
    EAGAIN,
    EBUSY,
    EFAULT,
    EINVAL,
    ENOMEM,
    EPERM,
    PAGE_SIZE,
    SGX_BACKING_BYTES_PER_PAGE,
    SGX_DO_RECLAIM,
    SGX_EEXTENDS_PER_PAGE,
    SGX_ENCL_CREATED,
    SGX_ENCL_INITIALIZED,
    SGX_ENCL_OOM,
    SGX_EPC_PAGE_RECLAIMER_TRACKED,
    SGX_NO_RECLAIM,
    SGX_PAGE_TYPE_REG,
    SGX_PAGE_TYPE_TCS,
    SGX_PAGE_TYPE_TRIM,
    SGX_VA_SLOT_COUNT,
    VM_FAULT_NOPAGE,
    VM_FAULT_SIGBUS,
)
from .epc import (
    KIND_ENCL,
    KIND_SECS,
    KIND_VA,
    _count_freed,
    _sgx_free_epc_pages_to_node,
    sgx_alloc_epc_page,
    sgx_alloc_epc_page_nowait,
    sgx_free_epc_page,
    sgx_mark_page_reclaimable,
    sgx_unmark_page_reclaimable,
)
from .memcg import MemCg, mem_cgroup_charge_backing, mem_cgroup_uncharge_backing
from .misc import css_put, misc_cg_uncharge

if TYPE_CHECKING:
    from .host import Host, Task
    from .resume import SgxAllocEpcPageState, SgxEnclAddPageState

#: enclave-page index meaning "the SECS" where a page index is expected
SECS_INDEX = -1


class SgxVaPage:
    """Models ``struct sgx_va_page``: an EPC page with 512 version slots."""

    __slots__ = ("no", "epc", "bits", "used")

    def __init__(self, no: int, epc: int) -> None:
        self.no = no
        self.epc = epc
        self.bits = 0
        self.used = 0


class Encl:
    """Models ``struct sgx_encl`` and its ``page_array`` (encl.h).

    ``refcount`` is the kref: one for the open file, one per mm on ``mm_list``, one per
    page a reclaimer has isolated.  ``mm_list`` holds the pids whose mm maps the
    enclave.  Counters named ``nr_*`` are model statistics.
    """

    def __init__(self, host: Host, eid: int, owner: Task) -> None:
        self.host = host
        self.id = eid
        self.owner_pid = owner.pid
        #: the task that created it (holds the file): whose OOM badness its backing is
        self.owner = owner
        self.size = 0
        self.npages = 0
        self.flags = 0
        self.refcount = 1  # the file reference (sgx_open)
        self.mm_list: list[int] = []
        self.nr_live_mms = 0
        self.secs_epc = -1
        self.secs_va = -1
        self.secs_memcg = -1
        self.secs_child_cnt = 0
        self.page_cnt = 0
        self.va_pages: OrderedDict[int, SgxVaPage] = OrderedDict()
        self.va_all: list[SgxVaPage] = []
        self.backing_bytes = 0
        self.released = False
        self.nr_added = 0
        self.nr_eaug = 0
        #: ELDUs of its pages, the SECS's included (nr_secs_eldu of them)
        self.nr_eldu = 0
        self.nr_secs_eldu = 0
        #: .. of its other pages, those the EDMM ioctls loaded (sgx_encl_load_page()
        #: outside a fault; a model counter, the reference engine's: EDMM steps run there)
        self.nr_edmm_eldu = 0
        #: EWBs of its pages (the SECS's not included: nr_secs_evicted)
        self.nr_evicted = 0
        self.nr_secs_evicted = 0
        #: .. of them by each reclaimer kind (RECLAIM_* of epc_cgroup; a model counter)
        self.nr_reclaimed_by = [0, 0, 0, 0]
        self.nr_faults = 0
        self._alloc_arrays(0)

    def _alloc_arrays(self, n: int) -> None:
        # epc/va are the columns of one array (a page's two share a cache line; a fault
        # and an eviction touch both), desc/type the rows of another (hits touch desc
        # only); the compiled engine takes the arrays whole
        self.i32 = np.full((n, 2), -1, dtype=np.int32)
        self.epc, self.va = self.i32.T
        self.u8 = np.zeros((2, n), dtype=np.uint8)
        self.desc, self.type = self.u8
        self.memcg = np.full(n, -1, dtype=np.int16)
        self.m_epc = memoryview(self.epc)
        self.m_desc = memoryview(self.desc)
        self.m_type = memoryview(self.type)
        self.m_va = memoryview(self.va)
        self.m_memcg = memoryview(self.memcg)

    def nbytes(self) -> int:
        """Bytes of per-enclave-page model state."""
        return sum(a.nbytes for a in (self.epc, self.desc, self.type, self.va, self.memcg))

    @property
    def nr_resident(self) -> int:
        return int(np.count_nonzero(self.epc >= 0))

    @property
    def nr_swapped(self) -> int:
        return int(np.count_nonzero(self.va >= 0)) + (1 if self.secs_va >= 0 else 0)

    def __repr__(self) -> str:
        return f"<Encl #{self.id} size={self.size} pages={self.page_cnt}>"


# --- reference counting, mm_list --------------------------------------------------------


def sgx_encl_put(host: Host, encl: Encl) -> None:
    """``kref_put(&encl->refcount, sgx_encl_release)``."""
    encl.refcount -= 1
    if encl.refcount == 0:
        sgx_encl_release(host, encl)


def sgx_encl_mm_add(host: Host, encl: Encl, task: Task) -> None:
    """Models sgx_encl_mm_add() (from sgx_mmap()): the task's mm joins mm_list, taking
    an enclave reference."""
    if task.pid in encl.mm_list:
        return
    encl.mm_list.append(task.pid)
    encl.nr_live_mms += 1
    encl.refcount += 1
    task.mapped_encls.append(encl.id)


def sgx_mmu_notifier_release(host: Host, encl: Encl, task: Task) -> None:
    """Models sgx_mmu_notifier_release() + sgx_mmu_notifier_free(): the mm is torn
    down; it leaves mm_list and drops its enclave reference."""
    encl.mm_list.remove(task.pid)
    encl.nr_live_mms -= 1
    sgx_encl_put(host, encl)


# --- VA pages and slots -----------------------------------------------------------------


def sgx_encl_grow(
    host: Host,
    task: Task,
    encl: Encl,
    reclaim: int,
    *,
    resume: SgxAllocEpcPageState | None = None,
) -> Generator[str, None, int]:
    """Models sgx_encl_grow() (encl.c): a new VA page (``sgx_alloc_va_page()``) every
    SGX_VA_SLOT_COUNT ``page_cnt`` increments, then ``page_cnt += 1``.

    The new VA page goes to the head of ``va_pages`` (``list_add`` by the caller).

    Returns: the new VA page's number, -1 if none was needed, or a negative errno from
    ``sgx_alloc_epc_page()`` (then *page_cnt* is unchanged); as ``-(errno)-1000`` would
    be ambiguous, errors are returned as ``(ret < -1)`` below: -ENOMEM, -EBUSY, ...

    ``resume`` (engine hand-over only, :mod:`epcsim.kernel.resume`): the VA page's
    allocation stopped there.
    """
    vano = -1
    if resume is not None or encl.page_cnt % SGX_VA_SLOT_COUNT == 0:
        vano = len(encl.va_all)
        page = yield from sgx_alloc_epc_page(
            host, task, KIND_VA, encl.id, vano, reclaim, resume=resume
        )
        if page < 0:
            return page
        vp = SgxVaPage(vano, page)
        encl.va_all.append(vp)
        encl.va_pages[vano] = vp
        encl.va_pages.move_to_end(vano, last=False)
    encl.page_cnt += 1
    return vano


def sgx_encl_shrink(host: Host, encl: Encl, vano: int) -> None:
    """Models sgx_encl_shrink(): undo a grow (free the VA page it added, if any)."""
    encl.page_cnt -= 1
    if vano >= 0:
        vp = encl.va_all[vano]
        del encl.va_pages[vano]
        sgx_encl_free_epc_page(host, vp.epc)
        vp.epc = -1


def sgx_alloc_va_slot(encl: Encl) -> int:
    """Models sgx_alloc_va_slot() on the first VA page of ``va_pages`` (rotating it to
    the tail once full, as sgx_encl_ewb() does).  Returns the slot id
    ``va_page_no * 512 + slot`` (the kernel stores the slot offset in desc)."""
    vano = next(iter(encl.va_pages))
    vp = encl.va_pages[vano]
    bits = vp.bits
    slot = (~bits & (bits + 1)).bit_length() - 1  # find_first_zero_bit
    if slot >= SGX_VA_SLOT_COUNT:
        raise AssertionError(f"enclave {encl.id}: no free VA slot")
    vp.bits = bits | (1 << slot)
    vp.used += 1
    if vp.used == SGX_VA_SLOT_COUNT:
        encl.va_pages.move_to_end(vano)
    return vano * SGX_VA_SLOT_COUNT + slot


def sgx_alloc_va_slots(encl: Encl, n: int) -> list[int]:
    """*n* successive :func:`sgx_alloc_va_slot` calls (the same slots, in order)."""
    out = []
    va_pages = encl.va_pages
    while n:
        vano = next(iter(va_pages))
        vp = va_pages[vano]
        bits = vp.bits
        base = vano * SGX_VA_SLOT_COUNT
        while n and vp.used < SGX_VA_SLOT_COUNT:
            slot = (~bits & (bits + 1)).bit_length() - 1  # find_first_zero_bit
            bits |= 1 << slot
            vp.used += 1
            out.append(base + slot)
            n -= 1
        vp.bits = bits
        if vp.used == SGX_VA_SLOT_COUNT:
            va_pages.move_to_end(vano)
        elif n:
            raise AssertionError(f"enclave {encl.id}: no free VA slot")
    return out


def sgx_free_va_slot(encl: Encl, slot_id: int) -> None:
    """Models sgx_free_va_slot() + ``list_move(&va_page->list, &encl->va_pages)``."""
    vano, slot = divmod(slot_id, SGX_VA_SLOT_COUNT)
    vp = encl.va_all[vano]
    vp.bits &= ~(1 << slot)
    vp.used -= 1
    encl.va_pages.move_to_end(vano, last=False)


# --- backing store ----------------------------------------------------------------------


def sgx_encl_backing_memcg(host: Host, encl: Encl, charge_task: Task | None) -> MemCg:
    """The memcg backing is charged to (patch 11): *charge_task*'s mm's memcg, else
    ``sgx_encl_get_mem_cgroup()``: the memcg of the first live mm on mm_list, else the
    root memcg."""
    if charge_task is not None and not charge_task.exited:
        return host.task_memcg(charge_task)
    if encl.mm_list:
        return host.task_memcg(host.tasks[encl.mm_list[0]])
    return host.memcg_root


def sgx_encl_alloc_backing(host: Host, encl: Encl, idx: int, charge_task: Task | None) -> int:
    """Models sgx_encl_alloc_backing() with the memcg choice of v16 patch 11.

    The shmem contents page and PCMD entry (4096 + 128 bytes) are charged to the memcg
    of *charge_task*'s mm, or (None) of the first live mm on the enclave's mm_list, or
    the root memcg if there is none.  A charge above ``memory.max`` OOM-kills (see
    :mod:`epcsim.kernel.memcg`) and fails.

    Args:
        idx: enclave page index, or SECS_INDEX for the SECS (backing index size/4096).

    Returns: 0 or -ENOMEM.
    """
    memcg = sgx_encl_backing_memcg(host, encl, charge_task)
    ret = mem_cgroup_charge_backing(host, memcg, SGX_BACKING_BYTES_PER_PAGE)
    if ret:
        return ret
    if idx == SECS_INDEX:
        encl.secs_memcg = memcg.id
    else:
        encl.m_memcg[idx] = memcg.id
    encl.backing_bytes += SGX_BACKING_BYTES_PER_PAGE
    encl.owner.backing_bytes += SGX_BACKING_BYTES_PER_PAGE
    return 0


def _sgx_encl_drop_backing(host: Host, encl: Encl, memcg_id: int) -> None:
    """Truncate one page's backing (ELDU cleanup): uncharge its memcg."""
    mem_cgroup_uncharge_backing(host, host.memcgs[memcg_id], SGX_BACKING_BYTES_PER_PAGE)
    encl.backing_bytes -= SGX_BACKING_BYTES_PER_PAGE
    encl.owner.backing_bytes -= SGX_BACKING_BYTES_PER_PAGE


# --- freeing ----------------------------------------------------------------------------


def sgx_encl_free_epc_page(host: Host, page: int) -> None:
    """Models sgx_encl_free_epc_page(): EREMOVE, then sgx_free_epc_page().

    The kernel WARNs if the page is still RECLAIMER_TRACKED; the model raises.
    """
    if host.epc.m_flags[page] & SGX_EPC_PAGE_RECLAIMER_TRACKED:
        raise AssertionError(f"EPC page {page} freed while tracked by the reclaimer")
    host.encls_count[encls.EREMOVE] += 1
    sgx_free_epc_page(host, page)


def sgx_encl_release(host: Host, encl: Encl) -> None:
    """Models sgx_encl_release() (encl.c; the kref release).

    Frees (EREMOVE) every resident page, skipping a page a reclaimer holds (unmark
    returns -EBUSY; with atomic phases this cannot coincide with a zero refcount, since
    a reclaimer holding a page holds a reference), then the SECS if it has no children,
    then every VA page, and drops the backing file (every memcg charge returned).

    Deliberate difference: the kernel's cond_resched() every 16 pages is not a yield
    point, because release runs inside whichever kref_put() drops the last reference.
    """
    encl.released = True
    sgx_encl_release_resources(host, encl)
    host.encl_released(encl)


def sgx_encl_release_resources(host: Host, encl: Encl) -> None:
    """The body of sgx_encl_release(): free the EPC and the backing, keep the struct.

    The dropped OOM design split it out as ``__sgx_encl_release()`` (v2 patch 14,
    2022-12-02) to run it when the EPC OOM killer takes an enclave; there a reclaimer
    may hold pages of the enclave (isolated, with a reference): they are skipped, and
    then the VA pages (their EWB needs a slot) and the SECS (a parent of theirs) stay
    for the final release (as v3, 2023-07-12, lets "pages in RECLAIMING_IN_PROGRESS
    be reaped by reclaimers").  Under v16 it runs only from sgx_encl_release(), with
    no page held, and frees everything.
    """
    epc = encl.epc
    resident = np.flatnonzero(epc >= 0)
    m_epc = encl.m_epc
    if resident.size > _BULK_MIN_PAGES and _sgx_encl_release_pages_bulk(host, encl, resident):
        resident = resident[:0]
    held = 0
    for idx in resident.tolist():
        page = m_epc[idx]
        if sgx_unmark_page_reclaimable(host, page):
            held += 1
            continue
        sgx_encl_free_epc_page(host, page)
        encl.secs_child_cnt -= 1
        m_epc[idx] = -1
    if encl.secs_child_cnt == 0 and encl.secs_epc >= 0:
        sgx_encl_free_epc_page(host, encl.secs_epc)
        encl.secs_epc = -1
    if not held and len(encl.va_pages) > _BULK_MIN_VA_PAGES and len(host.epc.free_lists) == 1:
        _sgx_encl_free_va_pages_bulk(host, encl)
    for vano in list(encl.va_pages) if not held else ():
        vp = encl.va_pages.pop(vano)
        sgx_encl_free_epc_page(host, vp.epc)
        vp.epc = -1
    # fput(encl->backing): every evicted page's backing goes away
    evicted = encl.va >= 0
    if evicted.any():
        # per memcg id (small, >= 0), in id order: a count, not a sort of the pages
        counts = np.bincount(encl.memcg[evicted])
        ids = np.flatnonzero(counts)
        for mid, c in zip(ids.tolist(), counts[ids].tolist()):
            mem_cgroup_uncharge_backing(host, host.memcgs[mid], c * SGX_BACKING_BYTES_PER_PAGE)
        encl.va[evicted] = -1
        encl.memcg[evicted] = -1
    if encl.secs_va >= 0:
        mem_cgroup_uncharge_backing(host, host.memcgs[encl.secs_memcg], SGX_BACKING_BYTES_PER_PAGE)
        encl.secs_va = -1
    encl.owner.backing_bytes -= encl.backing_bytes
    encl.backing_bytes = 0
    if not held:
        encl.desc[:] = 0


def sgx_encl_mm_drain(host: Host, encl: Encl) -> None:
    """Models sgx_encl_mm_drain() (the dropped OOM design, v3 patch 15, 2023-07-12; the
    loop of sgx_release() in v16): every mm leaves ``mm_list`` and drops its enclave
    reference (``mmu_notifier_unregister()`` + kref_put), the enclave is mapped by no mm.
    """
    for pid in list(encl.mm_list):
        encl.mm_list.remove(pid)
        encl.nr_live_mms -= 1
        task = host.tasks[pid]
        if encl.id in task.mapped_encls:
            task.mapped_encls.remove(encl.id)
        sgx_encl_put(host, encl)


#: sgx_encl_release_resources() frees more resident pages / VA pages than these in bulk
#: (below, the page-by-page loop is as fast)
_BULK_MIN_PAGES = 64
_BULK_MIN_VA_PAGES = 16


def _sgx_encl_release_pages_bulk(host: Host, encl: Encl, resident: np.ndarray) -> bool:
    """The page loop of sgx_encl_release() in a few array operations, when that is
    certain to leave the state the loop leaves: one EPC node, no page held by a
    reclaimer, every page charged to a cgroup and on that cgroup's own LRU (no policy
    LRU).  The pages are unlinked from their LRUs (other pages there keep their order),
    unmarked, EREMOVEd and freed in index order, exactly as one by one.  Returns False
    (nothing changed) when the loop must run instead."""
    pool = host.epc
    if len(pool.free_lists) != 1:
        return False
    pages = encl.epc[resident].astype(np.int32)
    tracked = (pool.flags[pages] & SGX_EPC_PAGE_RECLAIMER_TRACKED) != 0
    on_lru = pages[tracked]
    if (pool.prev[on_lru] == on_lru).any():
        return False  # isolated by a reclaimer: unmark says -EBUSY
    cgs = pool.cg[pages]
    if (cgs < 0).any():
        return False
    if on_lru.size and host.policy is not None and host.policy.page_lru is not None:
        return False
    # sgx_unmark_page_reclaimable(): list_del_init() from the cgroup's LRU
    if on_lru.size:
        t_cgs = cgs[tracked]
        order = np.argsort(t_cgs, kind="stable")
        t_ids, t_start, t_counts = np.unique(t_cgs[order], return_index=True, return_counts=True)
        for cid, st, cnt in zip(t_ids.tolist(), t_start.tolist(), t_counts.tolist()):
            host.sgx_cgroups[cid].lru.del_init_many(on_lru[order[st : st + cnt]])
        host.nr_lru_pages -= on_lru.size
    pool.flags[pages] &= np.uint8(0xFF & ~SGX_EPC_PAGE_RECLAIMER_TRACKED)
    _sgx_encl_free_epc_pages(host, pages, cgs)
    encl.secs_child_cnt -= len(pages)
    encl.epc[resident] = -1
    return True


def _sgx_encl_free_va_pages_bulk(host: Host, encl: Encl) -> None:
    """The VA-page loop of sgx_encl_release() (sgx_encl_free_epc_page() on each VA page
    in ``va_pages`` order) as array operations, on a host with one EPC node."""
    vps = list(encl.va_pages.values())
    encl.va_pages.clear()
    _sgx_encl_free_epc_pages(host, np.array([vp.epc for vp in vps], dtype=np.int32))
    for vp in vps:
        vp.epc = -1


def _sgx_encl_free_epc_pages(host: Host, pages: np.ndarray, cgs: np.ndarray | None = None) -> None:
    """sgx_encl_free_epc_page() for each of *pages* (int32, none tracked by the
    reclaimer) in order, on a host with one EPC node, as array operations: EREMOVE,
    uncharge and css_put per cgroup, the pages linked at the tail of the free list as
    one run.  *cgs*: ``pool.cg[pages]`` if the caller has it."""
    pool = host.epc
    if cgs is None:
        cgs = pool.cg[pages]
    if (pool.flags[pages] & SGX_EPC_PAGE_RECLAIMER_TRACKED).any():
        page = int(pages[(pool.flags[pages] & SGX_EPC_PAGE_RECLAIMER_TRACKED) != 0][0])
        raise AssertionError(f"EPC page {page} freed while tracked by the reclaimer")
    host.encls_count[encls.EREMOVE] += len(pages)
    charged = cgs[cgs >= 0][::-1]
    ids, last, counts = np.unique(charged, return_index=True, return_counts=True)
    # each cgroup at its last page (the loop's css_put() that may free the css): in the
    # order of those pages
    for k in np.argsort(-last, kind="stable").tolist():
        cid, cnt = int(ids[k]), int(counts[k])
        # sgx_free_epc_page(): sgx_cgroup_uncharge() + sgx_put_cg() per page
        sgx_cg = host.sgx_cgroups[cid]
        sgx_cg.nr_pages -= cnt
        _count_freed(sgx_cg, cnt)
        cg = sgx_cg.cg
        misc_cg_uncharge(cg, cnt * PAGE_SIZE)
        cg.refcnt -= cnt - 1
        css_put(cg)
    _sgx_free_epc_pages_to_node(pool, pages)


# --- loading pages back (fault path) ----------------------------------------------------


def sgx_encl_eldu(host: Host, task: Task, encl: Encl, idx: int) -> int:
    """Models sgx_encl_eldu() (encl.c): allocate (NO_RECLAIM), ELDU, free the VA
    slot (its VA page moves to the head), truncate the backing.

    Args:
        idx: enclave page index or SECS_INDEX.

    Returns: the EPC page, or -EBUSY / -ENOMEM / -EINVAL from the allocator.
    """
    gen = sgx_alloc_epc_page(
        host, task, KIND_SECS if idx == SECS_INDEX else KIND_ENCL, encl.id, idx, SGX_NO_RECLAIM
    )
    page = _run_atomic(gen)
    if page < 0:
        return page
    host.encls_count[encls.ELDU] += 1
    encl.nr_eldu += 1
    host.sgx_cgroups[host.epc.m_cg[page]].nr_eldu += 1  # model counter (sgx_epc.stat)
    if idx == SECS_INDEX:
        encl.nr_secs_eldu += 1
        sgx_free_va_slot(encl, encl.secs_va)
        encl.secs_va = -1
        _sgx_encl_drop_backing(host, encl, encl.secs_memcg)
        encl.secs_memcg = -1
        encl.secs_epc = page
    else:
        sgx_free_va_slot(encl, encl.m_va[idx])
        encl.m_va[idx] = -1
        _sgx_encl_drop_backing(host, encl, encl.m_memcg[idx])
        encl.m_memcg[idx] = -1
        encl.m_epc[idx] = page
    return page


def _run_atomic(gen: Generator[str, None, int]) -> int:
    """Run a NO_RECLAIM allocation, which never reaches a yield point."""
    try:
        point = next(gen)
    except StopIteration as stop:
        return stop.value
    raise AssertionError(f"NO_RECLAIM allocation reached a yield point ({point})")


def sgx_encl_load_secs(host: Host, task: Task, encl: Encl) -> int:
    """Models sgx_encl_load_secs(): ELDU the SECS if it was evicted.

    Returns: 0 or a negative errno from sgx_encl_eldu()."""
    if encl.secs_epc < 0:
        page = sgx_encl_eldu(host, task, encl, SECS_INDEX)
        if page < 0:
            return page
    return 0


def _sgx_encl_load_page(host: Host, task: Task, encl: Encl, idx: int) -> int:
    """Models __sgx_encl_load_page(): make a page resident (SECS first if evicted).

    Returns: 0 if resident; -EFAULT if the page is not in page_array; -EBUSY if it is
    being reclaimed or an allocation got -EBUSY; other allocator errnos.
    """
    if not (0 <= idx < encl.npages) or not encl.m_desc[idx] & DESC_PRESENT:
        return -EFAULT
    if encl.m_epc[idx] >= 0:
        if encl.m_desc[idx] & DESC_BEING_RECLAIMED:
            return -EBUSY
        return 0
    ret = sgx_encl_load_secs(host, task, encl)
    if ret:
        return ret
    page = sgx_encl_eldu(host, task, encl, idx)
    if page < 0:
        return page
    encl.secs_child_cnt += 1
    sgx_mark_page_reclaimable(host, page)
    return 0


def sgx_encl_eaug_page(host: Host, task: Task, encl: Encl, idx: int) -> int:
    """Models sgx_encl_eaug_page() (encl.c; SGX2 fault on an absent page).

    SECS first if evicted, then the page (NO_RECLAIM), then a VA page if due
    (NO_RECLAIM), EAUG, mark reclaimable.

    Returns: 0 (mapped), VM_FAULT_NOPAGE (retry: an allocation got -EBUSY) or
    VM_FAULT_SIGBUS (not initialised, or any other error).
    """
    if not encl.flags & SGX_ENCL_INITIALIZED:
        return VM_FAULT_SIGBUS
    ret = sgx_encl_load_secs(host, task, encl)
    if ret:
        return VM_FAULT_NOPAGE if ret == -EBUSY else VM_FAULT_SIGBUS
    page = _run_atomic(sgx_alloc_epc_page(host, task, KIND_ENCL, encl.id, idx, SGX_NO_RECLAIM))
    if page < 0:
        return VM_FAULT_NOPAGE if page == -EBUSY else VM_FAULT_SIGBUS
    vano = _run_atomic(sgx_encl_grow(host, task, encl, SGX_NO_RECLAIM))
    if vano < -1:
        sgx_encl_free_epc_page(host, page)
        return VM_FAULT_NOPAGE if vano == -EBUSY else VM_FAULT_SIGBUS
    host.encls_count[encls.EAUG] += 1
    encl.nr_eaug += 1
    encl.m_epc[idx] = page
    encl.m_type[idx] = SGX_PAGE_TYPE_REG
    encl.m_desc[idx] = DESC_PRESENT
    encl.secs_child_cnt += 1
    sgx_mark_page_reclaimable(host, page)
    return 0


def sgx_vma_fault(host: Host, task: Task, encl: Encl, idx: int) -> int:
    """Models sgx_vma_fault(); see :func:`_sgx_vma_fault`.  Counts the fault in the
    enclave (every call) and, when resolved, in the task's cgroup (model statistics);
    a resolved fault is told to the policy's ``faulted`` hook (:mod:`epcsim.kernel.hooks`)."""
    encl.nr_faults += 1
    r = _sgx_vma_fault(host, task, encl, idx)
    if r == 0:
        sgx_cg = host.task_misc_cg(task).priv
        sgx_cg.nr_faults += 1
        pol = host.policy
        if pol is not None and pol.faulted is not None:
            pol.faulted(host, sgx_cg)
    return r


def _sgx_vma_fault(host: Host, task: Task, encl: Encl, idx: int) -> int:
    """Models sgx_vma_fault() (encl.c; NO_RECLAIM allocations, v16 patch 10).

    A page absent from page_array is EAUG'ed (SGX2); an evicted page is ELDU'ed (SECS
    first); a resident page being reclaimed gives -EBUSY.  On success the PTE is mapped
    and the accessed bit cleared (``sgx_encl_test_and_clear_young()``): the retried
    access sets it.

    Returns: 0 (mapped; the access is retried and hits), VM_FAULT_NOPAGE (nothing
    mapped: retry the fault), or VM_FAULT_SIGBUS.
    """
    if encl.released or not 0 <= idx < encl.npages:
        return VM_FAULT_SIGBUS
    if encl.flags & SGX_ENCL_OOM:  # the dropped OOM design (v2 patch 14): killed
        return VM_FAULT_SIGBUS
    if not encl.m_desc[idx] & DESC_PRESENT:
        if not host.sgx2:
            return VM_FAULT_SIGBUS
        return sgx_encl_eaug_page(host, task, encl, idx)
    ret = _sgx_encl_load_page(host, task, encl, idx)
    if ret:
        return VM_FAULT_NOPAGE if ret == -EBUSY else VM_FAULT_SIGBUS
    d = encl.m_desc[idx]
    encl.m_desc[idx] = d & ~(DESC_ACCESSED | DESC_BLOCKED)
    return 0


def sgx_encl_access(encl: Encl, idxs: np.ndarray) -> int:
    """Accesses by enclave code to pages *idxs*, in order, up to the first that faults.

    Every access to a resident page that is not blocked for reclaim sets its accessed
    bit (the CPU sets the PTE A bit).  Vectorised: the whole run of hits is one NumPy
    operation.

    Args:
        idxs: enclave page indices; all within ``[0, encl.npages)`` (callers check
            user-supplied addresses: :func:`epcsim.kernel.ioctl.encl_access`).

    Returns: the number of leading accesses that hit; ``len(idxs)`` if all hit.  The
    access at that position needs :func:`sgx_vma_fault`.
    """
    n = len(idxs)
    if n == 0:
        return 0
    npages = encl.npages
    m_epc = encl.m_epc
    m_desc = encl.m_desc
    # Scalar steps for the first few accesses: under thrashing most runs of hits are
    # short, and a NumPy pass costs more than a handful of scalar checks.
    k = 0
    head = idxs[:4].tolist()
    for i in head:
        if not 0 <= i < npages:
            return k
        d = m_desc[i]
        if m_epc[i] < 0 or d & DESC_BLOCKED:
            return k
        m_desc[i] = d | DESC_ACCESSED
        k += 1
    if k == n:
        return n
    idxs = idxs[k:]
    n -= k
    ok = (encl.epc[idxs] >= 0) & ((encl.desc[idxs] & DESC_BLOCKED) == 0)
    m = n if ok.all() else int(np.argmin(ok))
    if m:
        encl.desc[idxs[:m]] |= DESC_ACCESSED
    return k + m


# --- enclave construction (ioctl.c bodies) ------------------------------------------------


def sgx_encl_create(host: Host, task: Task, encl: Encl, size: int) -> Generator[str, None, int]:
    """Models sgx_encl_create() (ioctl.c): grow (VA page #1, DO_RECLAIM),
    the SECS (DO_RECLAIM), ECREATE.  Unwinds in reverse on failure.

    Returns: 0 or a negative errno from the allocator (-ENOMEM, -ERESTARTSYS, -EINVAL).
    """
    vano = yield from sgx_encl_grow(host, task, encl, SGX_DO_RECLAIM)
    if vano < -1:
        return vano
    secs = yield from sgx_alloc_epc_page(host, task, KIND_SECS, encl.id, SECS_INDEX, SGX_DO_RECLAIM)
    if secs < 0:
        sgx_encl_shrink(host, encl, vano)
        return secs
    encl.secs_epc = secs
    host.encls_count[encls.ECREATE] += 1
    # set only after completion, as in the kernel
    encl.size = size
    encl.npages = size // PAGE_SIZE
    encl._alloc_arrays(encl.npages)
    encl.flags |= SGX_ENCL_CREATED
    return 0


def sgx_encl_add_page(
    host: Host,
    task: Task,
    encl: Encl,
    idx: int,
    page_type: int,
    measure: bool,
    *,
    resume: SgxEnclAddPageState | None = None,
) -> Generator[str, None, int]:
    """Models sgx_encl_add_page() (ioctl.c): allocate the page (DO_RECLAIM),
    grow (DO_RECLAIM), insert into page_array, EADD (+16 EEXTEND if measured), count a
    SECS child, mark reclaimable.

    Returns: 0, -EBUSY (page already present: ``xa_insert()``), or an allocator errno;
    -ENOMEM for an enclave the dropped OOM design killed (``SGX_ENCL_OOM``, v3 patch 15).

    ``resume`` (engine hand-over only, :mod:`epcsim.kernel.resume`): the page's or its
    VA page's allocation stopped there.
    """
    grow = None  # the VA page's allocation, resumed
    if resume is None:
        if encl.flags & SGX_ENCL_OOM:
            return -ENOMEM
        page = sgx_alloc_epc_page_nowait(host, task, KIND_ENCL, encl.id, idx)
    elif resume.page < 0:
        page = -1
    else:
        page, grow = resume.page, resume.alloc
    if page < 0:
        page = yield from sgx_alloc_epc_page(
            host,
            task,
            KIND_ENCL,
            encl.id,
            idx,
            SGX_DO_RECLAIM,
            resume=None if resume is None else resume.alloc,
        )
        if page < 0:
            return page
    if grow is not None:
        vano = yield from sgx_encl_grow(host, task, encl, SGX_DO_RECLAIM, resume=grow)
    elif encl.page_cnt % SGX_VA_SLOT_COUNT:
        # sgx_encl_grow() with no VA page due only counts the page (inlined: hot path)
        encl.page_cnt += 1
        vano = -1
    else:
        vano = yield from sgx_encl_grow(host, task, encl, SGX_DO_RECLAIM)
    if vano < -1:
        sgx_encl_free_epc_page(host, page)
        return vano
    if encl.m_desc[idx] & DESC_PRESENT:
        # xa_insert() on an occupied index
        sgx_encl_shrink(host, encl, vano)
        sgx_encl_free_epc_page(host, page)
        return -EBUSY
    host.encls_count[encls.EADD] += 1
    if measure:
        host.encls_count[encls.EEXTEND] += SGX_EEXTENDS_PER_PAGE
    encl.m_epc[idx] = page
    encl.m_type[idx] = page_type
    encl.m_desc[idx] = DESC_PRESENT
    encl.secs_child_cnt += 1
    encl.nr_added += 1
    sgx_mark_page_reclaimable(host, page)
    return 0


def sgx_encl_init(host: Host, encl: Encl) -> int:
    """Models sgx_encl_init(): EINIT, then INITIALIZED (the SECS may now be evicted)."""
    host.encls_count[encls.EINIT] += 1
    encl.flags |= SGX_ENCL_INITIALIZED
    return 0


# --- EDMM (SGX2) per-page bodies ----------------------------------------------------------


def sgx_encl_load_for_edmm(host: Host, task: Task, encl: Encl, idx: int) -> int:
    """``sgx_encl_load_page()`` as the EDMM ioctls call it (NO_RECLAIM, encl mutex).

    Returns: 0; -EAGAIN if the load got -EBUSY; -EFAULT otherwise; -ENOMEM for an
    enclave the dropped OOM design killed (``sgx_ioc_sgx2_ready()``, v3 patch 15).
    """
    if encl.flags & SGX_ENCL_OOM:
        return -ENOMEM
    before = encl.nr_eldu - encl.nr_secs_eldu
    ret = _sgx_encl_load_page(host, task, encl, idx)
    encl.nr_edmm_eldu += encl.nr_eldu - encl.nr_secs_eldu - before
    if ret:
        return -EAGAIN if ret == -EBUSY else -EFAULT
    return 0


def sgx_enclave_restrict_permissions_page(host: Host, task: Task, encl: Encl, idx: int) -> int:
    """Per-page body of sgx_enclave_restrict_permissions(): load, EMODPR, ETRACK.

    Returns: 0; -EAGAIN / -EFAULT from the load; -EINVAL for a page that is not REG.
    """
    ret = sgx_encl_load_for_edmm(host, task, encl, idx)
    if ret:
        return ret
    if encl.m_type[idx] != SGX_PAGE_TYPE_REG:
        return -EINVAL
    host.encls_count[encls.EMODPR] += 1
    host.encls_count[encls.ETRACK] += 1
    return 0


def sgx_enclave_modify_types_page(
    host: Host, task: Task, encl: Encl, idx: int, page_type: int
) -> int:
    """Per-page body of sgx_enclave_modify_types(): load, EMODT; a page becoming TCS is
    unmarked (its PTEs zapped) and marked reclaimable again (ioctl.c, sgx_enclave_modify_types()).

    Returns: 0; -EAGAIN (load busy, or the reclaimer holds the page); -EFAULT; -EINVAL
    for a transition other than REG->TCS, REG->TRIM, TCS->TRIM.
    """
    ret = sgx_encl_load_for_edmm(host, task, encl, idx)
    if ret:
        return ret
    cur = encl.m_type[idx]
    if not (
        (cur == SGX_PAGE_TYPE_REG and page_type in (SGX_PAGE_TYPE_TCS, SGX_PAGE_TYPE_TRIM))
        or (cur == SGX_PAGE_TYPE_TCS and page_type == SGX_PAGE_TYPE_TRIM)
    ):
        return -EINVAL
    host.encls_count[encls.EMODT] += 1
    if page_type == SGX_PAGE_TYPE_TCS:
        page = encl.m_epc[idx]
        if sgx_unmark_page_reclaimable(host, page):
            return -EAGAIN
        encl.m_desc[idx] &= ~DESC_ACCESSED
        sgx_mark_page_reclaimable(host, page)
    encl.m_type[idx] = page_type
    return 0


def sgx_encl_remove_page(host: Host, task: Task, encl: Encl, idx: int) -> int:
    """Per-page body of sgx_encl_remove_pages() (ioctl.c, EDMM): load, require TRIM,
    unmark (the reclaimer holding it gives -EBUSY), zap, EREMOVE + free, erase from
    page_array, shrink (VA pages are never freed here).

    Returns: 0, -EAGAIN, -EFAULT, -EPERM (not TRIM), -EBUSY (held by a reclaimer).
    """
    ret = sgx_encl_load_for_edmm(host, task, encl, idx)
    if ret:
        return ret
    if encl.m_type[idx] != SGX_PAGE_TYPE_TRIM:
        return -EPERM
    page = encl.m_epc[idx]
    if sgx_unmark_page_reclaimable(host, page):
        return -EBUSY
    sgx_encl_free_epc_page(host, page)
    encl.secs_child_cnt -= 1
    encl.m_epc[idx] = -1
    encl.m_desc[idx] = 0
    encl.m_type[idx] = 0
    sgx_encl_shrink(host, encl, -1)
    return 0
