"""The EPC pool: sections, NUMA nodes, per-page state, free lists, allocation and free.

Models the allocator half of ``arch/x86/kernel/cpu/sgx/main.c`` and ``struct
sgx_epc_page`` of ``sgx.h``: ``__sgx_alloc_epc_page_from_node()``,
``__sgx_alloc_epc_page()``, ``sgx_alloc_epc_page()`` (charging since v16 patch 5),
``sgx_free_epc_page()``, ``sgx_mark_page_reclaimable()`` /
``sgx_unmark_page_reclaimable()`` and ``sgx_epc_page_lru()`` (per-cgroup LRUs since v16
patch 14).

Per-page state lives in NumPy arrays indexed by the EPC page number (DESIGN.md, "Data
layout"); scalar paths use memoryviews of the same buffers, which are about twice as
fast as NumPy scalar indexing.  Bytes of state per EPC page: ``prev``/``next`` (4+4,
the page's ``list_head``), ``owner_encl``/``owner_idx`` (4+4, ``owner``), ``cg`` (2,
``sgx_cg``), ``flags`` (1) and ``kind`` (1): 20 bytes.  The section is derived from the
index (sections are contiguous), as ``sgx_epc_page.section`` is fixed per page.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .constants import (
    EBUSY,
    ENOMEM,
    ERESTARTSYS,
    PAGE_SIZE,
    SGX_EPC_PAGE_IS_FREE,
    SGX_EPC_PAGE_RECLAIMER_TRACKED,
    SGX_MAX_EPC_SECTIONS,
    SGX_NO_RECLAIM,
    SGX_NR_LOW_PAGES,
)
from .lru import EpcFreeList, SgxEpcLruList
from .misc import css_put, misc_cg_charge_if_fits, misc_cg_refuser, misc_cg_uncharge

if TYPE_CHECKING:
    from .epc_cgroup import SgxCgroup
    from .host import Host, Task
    from .misc import MiscCg
    from .resume import SgxAllocEpcPageState

__all__ = [
    "KIND_FREE",
    "KIND_ENCL",
    "KIND_SECS",
    "KIND_VA",
    "KIND_VEPC",
    "EpcPool",
    "sgx_alloc_epc_page",
    "sgx_free_epc_page",
    "sgx_mark_page_reclaimable",
    "sgx_unmark_page_reclaimable",
    "sgx_epc_page_lru",
    "sgx_can_reclaim_global",
    "sgx_should_reclaim_global",
    "wake_up_ksgxd",
    "stuck_retry",
    "stuck_watch",
]

# What an EPC page is used for (the type of its ``owner``); model bookkeeping that the
# kernel keeps implicitly in the owner pointer.
KIND_FREE = 0
KIND_ENCL = 1  #: a REG/TCS/TRIM page of an enclave (owner = sgx_encl_page)
KIND_SECS = 2  #: an enclave's SECS
KIND_VA = 3  #: a version-array page
KIND_VEPC = 4  #: a KVM guest (vEPC) page
KIND_NAMES = {0: "free", 1: "encl", 2: "secs", 3: "va", 4: "vepc"}


class EpcPool:
    """The EPC pages of a host: ``sgx_epc_sections[]`` and ``sgx_numa_nodes[]``.

    Each section is its own NUMA node.  Pages are numbered 0..nr_pages-1, sections
    contiguously in order.
    """

    def __init__(self, section_pages: Sequence[int]) -> None:
        if not 1 <= len(section_pages) <= SGX_MAX_EPC_SECTIONS:
            raise ValueError(f"1..{SGX_MAX_EPC_SECTIONS} EPC sections, got {len(section_pages)}")
        n = int(sum(section_pages))
        self.nr_pages = n
        self.section_pages = [int(s) for s in section_pages]
        self.section_start = np.cumsum([0, *self.section_pages[:-1]]).astype(np.int64)
        # the int32 and uint8 fields are columns of two arrays, one row per page (a
        # page's list links and owner share a cache line; the compiled engine takes
        # the arrays whole).  Zero-filled (calloc): a page's row is written when the
        # page is first allocated, never before, so memory grows with the pages used,
        # not with the EPC (the pristine ranges of the free lists, EpcFreeList).
        self.i32 = np.zeros((n, 4), dtype=np.int32)
        self.prev, self.next, self.owner_encl, self.owner_idx = self.i32.T
        self.cg = np.zeros(n, dtype=np.int16)
        self.u8 = np.zeros((n, 2), dtype=np.uint8)
        self.flags, self.kind = self.u8.T
        self.m_prev = memoryview(self.prev)
        self.m_next = memoryview(self.next)
        self.m_owner_encl = memoryview(self.owner_encl)
        self.m_owner_idx = memoryview(self.owner_idx)
        self.m_cg = memoryview(self.cg)
        self.m_flags = memoryview(self.flags)
        self.m_kind = memoryview(self.kind)
        # Free lists, one per node: the whole section, in index order, as a pristine
        # range (EpcFreeList); nothing is written per page.
        self.free_lists: list[EpcFreeList] = [
            EpcFreeList(self.m_prev, self.m_next, start, start + cnt)
            for start, cnt in zip(self.section_start.tolist(), self.section_pages)
        ]
        #: ``sgx_nr_free_pages``
        self.nr_free_pages = n

    @property
    def capacity_bytes(self) -> int:
        return self.nr_pages * PAGE_SIZE

    def nbytes(self) -> int:
        """Bytes of model state held per EPC page, summed over all pages."""
        return sum(
            a.nbytes
            for a in (
                self.prev,
                self.next,
                self.owner_encl,
                self.owner_idx,
                self.cg,
                self.flags,
                self.kind,
            )
        )

    def touched(self) -> np.ndarray:
        """The pages whose rows hold state (every page but the free lists' pristine
        ranges), in index order (int64)."""
        parts = [
            np.arange(start, fl.hwm, dtype=np.int64)
            for start, fl in zip(self.section_start.tolist(), self.free_lists)
        ]
        return np.concatenate(parts)

    def is_pristine(self, pages: np.ndarray) -> np.ndarray:
        """For each page of *pages*: in its node's pristine range (never allocated; its
        row holds no state, the page is free by definition)."""
        pages = np.asarray(pages, dtype=np.int64)
        nid = np.searchsorted(self.section_start, pages, side="right") - 1
        hwm = np.array([fl.hwm for fl in self.free_lists], dtype=np.int64)
        return pages >= hwm[nid]

    def section_of(self, i: int) -> int:
        """``sgx_epc_page.section``: derived from the page number."""
        return int(np.searchsorted(self.section_start, i, side="right")) - 1


def _sgx_alloc_epc_page_from_node(pool: EpcPool, nid: int) -> int:
    """Models __sgx_alloc_epc_page_from_node() (main.c).

    Returns:
        the page taken from the head of node *nid*'s free list, or -ENOMEM if empty: the
        first page of its pristine range while that is non-empty (the head of the list
        the kernel builds at boot), else the first page freed since
        (:class:`~epcsim.kernel.lru.EpcFreeList`).
    """
    fl = pool.free_lists[nid]
    i = fl.hwm
    if i < fl.end:
        # the first page of the pristine range: its row is written now, as the
        # eagerly built list would hold it once popped (self-linked, no owner, no
        # cgroup, KIND_FREE)
        fl.hwm = i + 1
        fl.nr -= 1
        pool.m_prev[i] = i
        pool.m_next[i] = i
        pool.m_owner_encl[i] = -1
        pool.m_owner_idx[i] = -1
        pool.m_cg[i] = -1
        pool.m_kind[i] = KIND_FREE
    else:
        i = fl.pop_head()
        if i < 0:
            return -ENOMEM
    pool.m_flags[i] = 0
    pool.nr_free_pages -= 1
    return i


def _sgx_alloc_epc_page(pool: EpcPool, local_nid: int) -> int:
    """Models __sgx_alloc_epc_page() (main.c): take a free page, no reclaim.

    The local node first if it has EPC, else the first EPC node after it; then the
    following nodes in order (``next_node_in()``, wrapping), once each.

    Returns:
        an EPC page index, or -ENOMEM when every free list is empty.
    """
    nodes = len(pool.free_lists)
    # node ids are 0..nodes-1; next_node_in() past the last EPC node wraps to node 0
    nid_start = local_nid if 0 <= local_nid < nodes else 0
    nid = nid_start
    while True:
        i = _sgx_alloc_epc_page_from_node(pool, nid)
        if i >= 0:
            return i
        nid = (nid + 1) % nodes
        if nid == nid_start:
            return -ENOMEM


def sgx_alloc_epc_page(
    host: Host,
    task: Task,
    kind: int,
    owner_encl: int,
    owner_idx: int,
    reclaim: int,
    *,
    resume: SgxAllocEpcPageState | None = None,
) -> Generator[str, None, int]:
    """Models sgx_alloc_epc_page() (main.c, v16 after patch 14).

    Charges one page to the current task's misc cgroup (``sgx_cgroup_try_charge``), then
    takes a free page; on physical shortage reclaims globally (DO_RECLAIM only).

    Args:
        host: the host.
        task: the allocating task ("current").
        kind, owner_encl, owner_idx: the new page's owner (``page->owner``).
        reclaim: ``SGX_DO_RECLAIM`` or ``SGX_NO_RECLAIM``.

    Returns (generator return value):
        the EPC page index (>= 0), or
        -ENOMEM: the charge failed with nothing reclaimable in the requester's subtree, or
            no free page and nothing reclaimable anywhere;
        -EBUSY: NO_RECLAIM and the cgroup is at its limit (work queued) or no free page;
        -ERESTARTSYS: a signal is pending while reclaim would be needed;
        -EINVAL: capacity not set (misc charge refused).

    Context: yields ("cond_resched") after each global reclaim pass and inside the
    charge loop and reclaim batches; the css reference taken here is held across them.

    ``resume`` (engine hand-over only, :mod:`epcsim.kernel.resume`; the series' v16
    without episodes) continues an allocation stopped in its charge loop's reclaim or
    in its global reclaim (``resume.charged``), inside it or at the ``cond_resched()``
    that follows it (``resume.reclaim`` None).
    """
    pool = host.epc
    if resume is None:
        # sgx_get_current_cg(), inlined (hot path)
        cg = host.task_misc_cg(task)
        cg.refcnt += 1
        sgx_cg = cg.priv
        # The first attempt of sgx_cgroup_try_charge() inline (no generator unless the
        # charge loop is needed); the loop continues from this attempt's result.
        ret = epc_cgroup._sgx_cgroup_try_charge(host, task, sgx_cg)
        if ret == -EBUSY:
            ret = yield from epc_cgroup.sgx_cgroup_try_charge(
                host, task, sgx_cg, reclaim, first=ret
            )
    else:
        sgx_cg = resume.sgx_cg
        if resume.charged:
            ret = 0
            if resume.reclaim is not None:
                from .reclaim import sgx_reclaim_pages_global

                yield from sgx_reclaim_pages_global(
                    host, task, resume=resume.reclaim, by=epc_cgroup.RECLAIM_SYNC
                )
                yield "cond_resched"
        else:
            ret = yield from epc_cgroup.sgx_cgroup_try_charge(
                host, task, sgx_cg, reclaim, resume=resume
            )
    if ret:
        epc_cgroup.sgx_put_cg(host, sgx_cg)
        return ret
    while True:
        page = _sgx_alloc_epc_page(pool, task.nid)
        if page >= 0:
            pool.m_kind[page] = kind
            pool.m_owner_encl[page] = owner_encl
            pool.m_owner_idx[page] = owner_idx
            break
        if not sgx_can_reclaim_global(host):
            page = -ENOMEM
            break
        if reclaim == SGX_NO_RECLAIM:
            page = -EBUSY
            break
        if task.signal_pending:
            page = -ERESTARTSYS
            break
        from .reclaim import sgx_reclaim_pages_global

        episode = None
        if host.policy is not None or host.episode_log is not None:
            from .hooks import Episode, episode_end

            episode = Episode("alloc", host.sgx_cg_root)
        yield from sgx_reclaim_pages_global(host, task, episode=episode, by=epc_cgroup.RECLAIM_SYNC)
        if episode is not None:
            episode_end(host, episode)
        yield "cond_resched"
    if page >= 0:
        _sgx_epc_page_set_cgroup(pool, page, sgx_cg)
        pol = host.policy
        if pol is not None and pol.record_page is not None:
            pol.record_page(host, page, kind)
    else:
        epc_cgroup.sgx_cgroup_uncharge(host, sgx_cg)
        epc_cgroup.sgx_put_cg(host, sgx_cg)
    if sgx_should_reclaim_global(host, SGX_NR_LOW_PAGES):
        wake_up_ksgxd(host)
    return page


def _sgx_epc_page_set_cgroup(pool: EpcPool, page: int, sgx_cg) -> None:
    """``sgx_epc_page_set_cgroup()``: the css reference taken at the start of the
    allocation is now held by the page (sgx_put_cg() in sgx_free_epc_page())."""
    pool.m_cg[page] = sgx_cg.id
    sgx_cg.nr_pages += 1


def sgx_alloc_epc_page_nowait(
    host: Host, task: Task, kind: int, owner_encl: int, owner_idx: int
) -> int:
    """sgx_alloc_epc_page() when its outcome is certain without waiting: the charge
    fits at every level and a free page exists.  Then it does exactly what
    :func:`sgx_alloc_epc_page` does on that path (charge, take a page, set the cgroup,
    maybe wake ksgxd) without creating a generator.

    Returns: the page, or -1 with nothing changed when the full (generator) path is
    needed.
    """
    pool = host.epc
    if not pool.nr_free_pages:
        return -1
    cg = host.task_misc_cg(task)
    if not misc_cg_charge_if_fits(cg, PAGE_SIZE):
        return -1
    cg.refcnt += 1
    page = _sgx_alloc_epc_page(pool, task.nid)
    pool.m_kind[page] = kind
    pool.m_owner_encl[page] = owner_encl
    pool.m_owner_idx[page] = owner_idx
    _sgx_epc_page_set_cgroup(pool, page, cg.priv)
    if sgx_should_reclaim_global(host, SGX_NR_LOW_PAGES):
        wake_up_ksgxd(host)
    return page


def _count_aged(sgx_cg: SgxCgroup, n: int) -> None:
    """Model statistics: *n* pages on *sgx_cg*'s LRU were found young by
    sgx_reclaimer_age() (accessed bit cleared, rotated); count them in ``nr_aged`` of the
    cgroup and of every ancestor (reclaim progress for the simulator's stuck rule: the
    next pass over them may free them)."""
    cg = sgx_cg.cg
    while cg is not None:
        cg.priv.nr_aged += n
        cg = cg.parent


def _count_freed(sgx_cg: SgxCgroup, n: int) -> None:
    """Model statistics: *n* EPC pages charged to *sgx_cg* were freed and uncharged;
    count them in ``nr_freed`` of the cgroup and of every ancestor (the simulator's
    stuck rule compares a faulting task's cgroup's count between retries)."""
    cg = sgx_cg.cg
    while cg is not None:
        cg.priv.nr_freed += n
        cg = cg.parent


def stuck_watch(cg: MiscCg) -> tuple[int, int]:
    """Model statistics, no kernel function: what the simulator's stuck rule watches
    while a task charging misc cgroup *cg* retries a fault.

    The cgroup whose limit refuses one more page now -- the first of *cg* and its
    ancestors at which misc_cg_try_charge() would stop, its usage plus a page above its
    ``max`` or the capacity -- and the count of pages freed or aged in its subtree
    (``nr_freed + nr_aged``): its sgx id and that count; ``(-1, 0)`` if a page fits.
    Only pages freed under the limit that refuses can let the charge through, wherever
    in that cgroup's subtree they are (a sibling's pages under a common ancestor's
    limit too)."""
    i = misc_cg_refuser(cg, PAGE_SIZE)
    if i is None:
        return -1, 0
    sc = i.priv
    return sc.id, sc.nr_freed + sc.nr_aged


def stuck_retry(
    cg: MiscCg, streak: int, block: int, freed: int, quiet: int
) -> tuple[int, int, int]:
    """Model statistics, no kernel function: the stuck rule's count at a VM_FAULT_NOPAGE
    retry (the *streak*-th of one access) of a task charging *cg*, from the last retry's
    ``(block, freed, quiet)`` (:func:`stuck_watch`'s pair and the quiet retries).  The
    count starts again at the first retry, when a page fits, or when the refusing
    cgroup or its freed + aged count changed.  Returns the new triple."""
    b, f = stuck_watch(cg)
    if streak == 1 or b < 0 or b != block or f != freed:
        return b, f, 1
    return b, f, quiet + 1


def sgx_free_epc_page(host: Host, page: int) -> None:
    """Models sgx_free_epc_page() (main.c; the uncharge of v16 patch 5).

    Uncharges the page's cgroup and drops the css reference the page held, then puts
    the page at the tail of its node's free list.  ``sgx_encl_free_epc_page()`` (EREMOVE
    first) is :func:`epcsim.kernel.encl.sgx_encl_free_epc_page`.
    """
    pool = host.epc
    cgid = pool.m_cg[page]
    if cgid >= 0:
        sgx_cg = host.sgx_cgroups[cgid]
        pool.m_cg[page] = -1
        sgx_cg.nr_pages -= 1
        _count_freed(sgx_cg, 1)
        # sgx_cgroup_uncharge() + sgx_put_cg()
        cg = sgx_cg.cg
        misc_cg_uncharge(cg, PAGE_SIZE)
        css_put(cg)
    _sgx_free_epc_page_to_node(pool, page)


def _sgx_free_epc_page_to_node(pool: EpcPool, page: int) -> None:
    """The second half of sgx_free_epc_page(): under the node lock, owner = NULL, tail
    of the node's free list, flags = IS_FREE, ``sgx_nr_free_pages`` + 1.  The caller has
    cleared ``sgx_cg`` (and uncharged)."""
    pool.m_cg[page] = -1
    pool.m_kind[page] = KIND_FREE
    pool.m_owner_encl[page] = -1
    pool.m_owner_idx[page] = -1
    nid = pool.section_of(page) if len(pool.free_lists) > 1 else 0
    pool.free_lists[nid].add_tail(page)
    pool.m_flags[page] = SGX_EPC_PAGE_IS_FREE
    pool.nr_free_pages += 1


def _sgx_free_epc_pages_to_node(pool: EpcPool, pages: list[int] | np.ndarray) -> None:
    """:func:`_sgx_free_epc_page_to_node` for *pages* in order (the same state): the
    pages' fields are reset and they are linked at the tail of their nodes' free lists
    as one run per node.  *pages*: a list or an int32 array (an enclave's release: no
    list of Python ints for its pages)."""
    if len(pages) == 1 or len(pool.free_lists) > 1:
        for p in pages.tolist() if isinstance(pages, np.ndarray) else pages:
            _sgx_free_epc_page_to_node(pool, p)
        return
    arr = np.asarray(pages, dtype=np.int32)
    pool.cg[arr] = -1
    pool.kind[arr] = KIND_FREE
    pool.owner_encl[arr] = -1
    pool.owner_idx[arr] = -1
    pool.flags[arr] = SGX_EPC_PAGE_IS_FREE
    fl = pool.free_lists[0]
    pool.prev[arr[1:]] = arr[:-1]
    pool.next[arr[:-1]] = arr[1:]
    first, last = int(arr[0]), int(arr[-1])
    t = fl.tail
    pool.m_prev[first] = t
    if t < 0:
        fl.head = first
    else:
        pool.m_next[t] = first
    pool.m_next[last] = -1
    fl.tail = last
    fl.nr += len(pages)
    pool.nr_free_pages += len(pages)


def sgx_can_reclaim_global(host: Host) -> bool:
    """Models sgx_can_reclaim_global(): some LRU of the whole tree is non-empty."""
    return host.nr_lru_pages > 0


def sgx_should_reclaim_global(host: Host, watermark: int) -> bool:
    """Models sgx_should_reclaim_global(): free pages below *watermark* and something
    reclaimable."""
    return host.epc.nr_free_pages < watermark and host.nr_lru_pages > 0


def wake_up_ksgxd(host: Host) -> None:
    """``wake_up(&ksgxd_waitq)``: make ksgxd runnable (it re-checks its condition)."""
    host.ksgxd_woken = True


def sgx_epc_page_lru(host: Host, page: int) -> SgxEpcLruList:
    """Models sgx_epc_page_lru() (main.c, patch 14): the LRU of the page's cgroup.

    A page without a cgroup (never the case for pages the model allocates) belongs to
    the root's LRU, which is the global LRU.
    """
    pol = host.policy
    if pol is not None and pol.page_lru is not None:
        return pol.page_lru(host, page)
    cgid = host.epc.m_cg[page]
    if cgid < 0:
        return host.sgx_cg_root.lru
    return host.sgx_cgroups[cgid].lru


def sgx_mark_page_reclaimable(host: Host, page: int) -> None:
    """Models sgx_mark_page_reclaimable() (main.c; v16 patch 7).

    Sets RECLAIMER_TRACKED and adds the page at the tail of its cgroup's LRU.
    """
    pool = host.epc
    pool.m_flags[page] |= SGX_EPC_PAGE_RECLAIMER_TRACKED
    sgx_epc_page_lru(host, page).add_tail(page)
    host.nr_lru_pages += 1


def sgx_unmark_page_reclaimable(host: Host, page: int) -> int:
    """Models sgx_unmark_page_reclaimable() (main.c; v16 patch 7).

    Returns:
        0 if the page was unlinked from its LRU (TRACKED cleared) or was not tracked;
        -EBUSY if the page is TRACKED but isolated by a reclaimer (list empty).
    """
    pool = host.epc
    if pool.m_flags[page] & SGX_EPC_PAGE_RECLAIMER_TRACKED:
        if pool.m_prev[page] == page:
            return -EBUSY
        sgx_epc_page_lru(host, page).del_init(page)
        host.nr_lru_pages -= 1
        pool.m_flags[page] &= ~SGX_EPC_PAGE_RECLAIMER_TRACKED
    return 0


# Cycle-safe late import: epc_cgroup -> reclaim -> encl -> epc.
from . import epc_cgroup  # noqa: E402
