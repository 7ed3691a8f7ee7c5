"""Tests of the EPC reclaimer (``epcsim.kernel.reclaim``): the phases of
``sgx_reclaim_pages()``, ksgxd and global reclaim, direct reclaim, and the allocator's
physical-shortage path.

Each test names the kernel function and the v16 patch it checks.  Generators are stepped
by hand so that the transient states between the reclaimer's phases can be observed.
"""

from __future__ import annotations

import errno

import numpy as np
import pytest

from epcsim.kernel import Host, InvariantError, check_invariants, drive, ioctl, task_exit
from epcsim.kernel import encls as leaf
from epcsim.kernel.constants import (
    EBUSY,
    ENOMEM,
    ERESTARTSYS,
    PAGE_SIZE,
    SGX_DO_RECLAIM,
    SGX_EPC_PAGE_IS_FREE,
    SGX_EPC_PAGE_RECLAIMER_TRACKED,
    SGX_NO_RECLAIM,
    SGX_PAGE_TYPE_REG,
    SGX_PAGE_TYPE_TCS,
    SGX_PAGE_TYPE_TRIM,
    VM_FAULT_NOPAGE,
)
from epcsim.kernel.encl import (
    DESC_ACCESSED,
    DESC_BEING_RECLAIMED,
    DESC_BLOCKED,
    sgx_encl_access,
    sgx_encl_release,
    sgx_vma_fault,
)
from epcsim.kernel.epc import (
    KIND_ENCL,
    sgx_alloc_epc_page,
    sgx_should_reclaim_global,
    sgx_unmark_page_reclaimable,
)
from epcsim.kernel.epc_cgroup import queue_work, sgx_cgroup_reclaim_work_func
from epcsim.kernel.reclaim import (
    ksgxd_step,
    sgx_reclaim_direct,
    sgx_reclaim_pages,
    sgx_reclaim_pages_global,
)

# --- helpers ------------------------------------------------------------------------------


def new_host(epc: str = "16MiB") -> Host:
    """A host with misc and memory enabled for the root's children."""
    h = Host(epc)
    h.fs.write("/cgroup.subtree_control", "+misc +memory")
    return h


def mkcg(h: Host, path: str, max_pages: int | None = None):
    """mkdir a child of the root; return its sgx_cgroup."""
    h.fs.mkdir(path)
    if max_pages is not None:
        h.fs.write(path + "/misc.max", f"sgx_epc {max_pages * PAGE_SIZE}")
    return h.sgx_cgroup_of(path)


def new_enclave(h: Host, task, npages: int, *, size: int = 1 << 20, init: bool = False):
    """Open/create an enclave, EADD *npages* pages (indices 0..npages-1), maybe EINIT.

    Usage charged: 1 VA + 1 SECS + the pages still resident."""
    e = ioctl.sgx_open(h, task)
    drive(ioctl.ioc_enclave_create(h, task, e, size))
    if npages:
        drive(ioctl.ioc_enclave_add_pages(h, task, e, 0, npages * PAGE_SIZE))
    if init:
        ioctl.ioc_enclave_init(h, task, e)
    return e


def usage(cg) -> int:
    """misc.current of an sgx_cgroup, in pages."""
    return cg.cg.usage // PAGE_SIZE


def va_slots_used(e) -> int:
    return sum(vp.used for vp in e.va_all if vp.epc >= 0)


def epc_pages(e, idxs) -> list[int]:
    return [int(e.epc[i]) for i in idxs]


def run_counting(gen) -> tuple[object, list[str]]:
    """Drive *gen* to completion; return (value, list of yielded points)."""
    points = []
    while True:
        try:
            points.append(next(gen))
        except StopIteration as stop:
            return stop.value, points


# --- the phases of sgx_reclaim_pages() (main.c, v16 patches 8, 9, 11) -----------------------------


def test_reclaim_phases_step_by_step():
    """sgx_reclaim_pages() (main.c) and sgx_unmark_page_reclaimable() (v16 patch 7): isolate
    (TRACKED, self-linked, off the LRU, unmark → -EBUSY), age (young pages rotated to the tail with
    their bit cleared, others BEING_RECLAIMED), block (an access faults and the fault returns
    VM_FAULT_NOPAGE), write back (evicted, VA slot taken, uncharged); returns the number
    isolated."""
    h = new_host()
    a = mkcg(h, "/a")
    t = h.spawn("/a")
    e = new_enclave(h, t, 20)
    pool = h.epc
    pages = epc_pages(e, range(20))
    assert drive(ioctl.encl_access(h, t, e, [0, 1, 2, 3])).done == 4
    ref0 = e.refcount
    free0 = pool.nr_free_pages
    assert usage(a) == 22 and a.lru.to_list() == pages

    gen = sgx_reclaim_pages(h, a, None)
    # Phase 1
    assert next(gen) == "reclaim:isolated"
    assert a.lru.to_list() == pages[16:] and h.nr_lru_pages == 4
    for p in pages[:16]:
        assert pool.flags[p] & SGX_EPC_PAGE_RECLAIMER_TRACKED
        assert pool.prev[p] == p and pool.next[p] == p
    assert e.refcount == ref0 + 16
    check_invariants(h)
    with pytest.raises(InvariantError):
        check_invariants(h, quiescent=True)
    assert sgx_unmark_page_reclaimable(h, pages[5]) == -EBUSY
    assert pool.flags[pages[5]] & SGX_EPC_PAGE_RECLAIMER_TRACKED  # unchanged
    assert sgx_unmark_page_reclaimable(h, e.secs_epc) == 0  # never tracked

    # Phase 2
    assert next(gen) == "reclaim:aged"
    assert a.lru.to_list() == pages[16:] + pages[:4]  # second chance, at the tail
    for i in range(4):
        assert not e.desc[i] & (DESC_ACCESSED | DESC_BEING_RECLAIMED)
    for i in range(4, 16):
        assert e.desc[i] & DESC_BEING_RECLAIMED
    for i in range(16, 20):
        assert not e.desc[i] & DESC_BEING_RECLAIMED
    assert e.refcount == ref0 + 12
    # a fault on a page being reclaimed is retried (-EBUSY → VM_FAULT_NOPAGE)
    assert sgx_vma_fault(h, t, e, 5) == VM_FAULT_NOPAGE

    # Phase 3
    assert next(gen) == "reclaim:blocked"
    assert h.encls_count[leaf.EBLOCK] == 12
    for i in range(4, 16):
        assert e.desc[i] & DESC_BLOCKED
    assert sgx_encl_access(e, np.array([7])) == 0  # PTE zapped: the access faults
    access = ioctl.encl_access(h, t, e, [7])
    assert next(access) == "fault_retry"

    # Phase 4
    ret, points = run_counting(gen)
    assert ret == 16 and points == []
    assert h.encls_count[leaf.EWB] == 12 and h.encls_count[leaf.ETRACK] == 1
    assert (e.epc[4:16] == -1).all() and (e.va[4:16] >= 0).all()
    assert (e.epc[:4] >= 0).all() and (e.epc[16:20] >= 0).all()
    assert (e.va[:4] == -1).all() and (e.va[16:20] == -1).all()
    assert not (e.desc[4:16] & (DESC_BEING_RECLAIMED | DESC_BLOCKED)).any()
    assert va_slots_used(e) == 12
    assert usage(a) == 22 - 12 and a.nr_pages == 10 and a.nr_evicted == 12
    assert pool.nr_free_pages == free0 + 12
    for p in pages[4:16]:
        assert pool.flags[p] == SGX_EPC_PAGE_IS_FREE and pool.cg[p] == -1
    assert e.refcount == ref0
    assert e.secs_epc >= 0  # not initialised: the SECS stays
    check_invariants(h, quiescent=True)

    # the retried access now loads the page back (ELDU)
    res = drive(access)
    assert (res.done, res.faults, res.retries, res.sigbus) == (1, 1, 1, False)
    assert e.epc[7] >= 0 and e.va[7] == -1 and usage(a) == 11
    assert a.lru.to_list()[-1] == e.epc[7]
    assert va_slots_used(e) == 11
    check_invariants(h, quiescent=True)


def test_reclaim_all_young_rotates_everything_and_returns_isolated():
    """sgx_reclaim_pages() (main.c): when every isolated page is young the call stops after phase 2,
    evicts nothing and still returns the number isolated."""
    h = new_host()
    a = mkcg(h, "/a")
    t = h.spawn("/a")
    e = new_enclave(h, t, 10)
    drive(ioctl.encl_access(h, t, e, range(10)))
    ret, points = run_counting(sgx_reclaim_pages(h, a, None))
    assert ret == 10 and points == ["reclaim:isolated"]
    assert a.nr_evicted == 0 and a.lru.to_list() == epc_pages(e, range(10))
    assert not (e.desc[:10] & DESC_ACCESSED).any()
    ret, points = run_counting(sgx_reclaim_pages(h, a, None))
    assert ret == 10 and points == ["reclaim:isolated", "reclaim:aged", "reclaim:blocked"]
    assert a.nr_evicted == 10
    # an empty LRU: nothing isolated, no yield
    assert run_counting(sgx_reclaim_pages(h, a, None)) == (0, [])
    check_invariants(h, quiescent=True)


def test_backing_failure_skips_page_to_lru_tail():
    """sgx_reclaim_pages() (main.c; backing charged to a memcg since v16 patch 11): a page whose
    backing cannot be allocated (memory.max reached: the memcg OOM-kills the enclave's owner and the
    charge fails) is skipped: back to the LRU tail, no BEING_RECLAIMED, its enclave reference
    dropped.  Pages after it are aged without a live mm (not young) and backed by the root memcg."""
    h = new_host()
    a = mkcg(h, "/a")
    h.fs.write("/a/memory.max", str(3 * PAGE_SIZE))  # room for 2 backings of 4224 bytes
    t = h.spawn("/a")
    e = new_enclave(h, t, 20)
    pages = epc_pages(e, range(20))
    ref0 = e.refcount
    gen = sgx_reclaim_pages(h, a, None)
    assert next(gen) == "reclaim:isolated"
    assert next(gen) == "reclaim:aged"
    assert t.oom_killed and t.exited and e.nr_live_mms == 0
    assert a.lru.to_list() == pages[16:] + [pages[2]]
    assert not e.desc[2] & DESC_BEING_RECLAIMED
    assert e.refcount == ref0 - 2 + 15  # file + mm dropped by the exit; 15 kept
    memcg_a = h.cgroup("/a").memcg
    assert memcg_a.usage == 2 * 4224 and h.memcg_root.usage == 15 * 4224
    assert drive(gen) == 16
    assert e.released and usage(a) == 0
    assert memcg_a.usage == 0 and h.memcg_root.usage == 0
    check_invariants(h, quiescent=True)


@pytest.mark.parametrize("initialized", [False, True])
def test_secs_written_back_after_last_child_only_when_initialized(initialized):
    """sgx_reclaimer_write() (main.c; the SECS is never on an LRU): the SECS is EWB'd and freed
    (uncharged) after its last resident child is evicted, only if the enclave is INITIALIZED."""
    h = new_host()
    a = mkcg(h, "/a")
    t = h.spawn("/a")
    e = new_enclave(h, t, 20, init=initialized)
    assert drive(sgx_reclaim_pages(h, a, None)) == 16
    assert e.secs_epc >= 0 and e.secs_child_cnt == 4 and usage(a) == 6
    eremove0 = h.encls_count[leaf.EREMOVE]
    assert drive(sgx_reclaim_pages(h, a, None)) == 4
    assert e.secs_child_cnt == 0
    if initialized:
        assert e.secs_epc == -1 and e.secs_va >= 0
        assert usage(a) == 1  # the VA page only
        assert va_slots_used(e) == 21
        assert h.encls_count[leaf.EWB] == 21
        assert h.encls_count[leaf.EREMOVE] == eremove0 + 1
        assert e.nr_swapped == 21
    else:
        assert e.secs_epc >= 0 and e.secs_va == -1
        assert usage(a) == 2
        assert va_slots_used(e) == 20
        assert h.encls_count[leaf.EWB] == 20
    check_invariants(h, quiescent=True)
    # a fault reloads the SECS first if it was evicted
    res = drive(ioctl.encl_access(h, t, e, [3]))
    assert res.faults == 1 and not res.sigbus
    assert h.encls_count[leaf.ELDU] == (2 if initialized else 1)
    assert e.secs_epc >= 0 and usage(a) == 3
    check_invariants(h, quiescent=True)


def test_edmm_on_isolated_page_is_busy():
    """sgx_unmark_page_reclaimable() (main.c, v16 patch 7): while the reclaimer holds a page, EDMM
    remove gives EBUSY and a REG→TCS type change gives EAGAIN; once evicted the page can be reloaded
    and removed."""
    h = new_host()
    a = mkcg(h, "/a")
    t = h.spawn("/a")
    e = new_enclave(h, t, 4, init=True)
    assert drive(ioctl.ioc_enclave_modify_types(h, t, e, 0, PAGE_SIZE, SGX_PAGE_TYPE_TRIM)) == 4096
    assert e.type[0] == SGX_PAGE_TYPE_TRIM
    gen = sgx_reclaim_pages(h, a, None)
    assert next(gen) == "reclaim:isolated"
    with pytest.raises(ioctl.SgxIoctlError) as ei:
        drive(ioctl.ioc_enclave_remove_pages(h, t, e, 0, PAGE_SIZE))
    assert ei.value.errno == errno.EBUSY and ei.value.count == 0
    with pytest.raises(ioctl.SgxIoctlError) as ei:
        drive(ioctl.ioc_enclave_modify_types(h, t, e, PAGE_SIZE, PAGE_SIZE, SGX_PAGE_TYPE_TCS))
    assert ei.value.errno == errno.EAGAIN
    assert e.type[1] == SGX_PAGE_TYPE_REG
    assert e.epc[0] >= 0 and e.desc[0]
    assert drive(gen) == 4
    assert (e.epc[:4] == -1).all() and e.secs_epc == -1
    check_invariants(h, quiescent=True)
    # after the write-back: reload (SECS + page) and remove
    assert drive(ioctl.ioc_enclave_remove_pages(h, t, e, 0, PAGE_SIZE)) == PAGE_SIZE
    assert e.epc[0] == -1 and e.va[0] == -1 and e.desc[0] == 0
    assert usage(a) == 2  # VA + reloaded SECS
    check_invariants(h, quiescent=True)


def test_dying_enclave_pages_dropped_not_counted():
    """sgx_reclaim_pages() (main.c; kref_get_unless_zero() when isolating, white box): a page whose
    enclave refcount is already 0 is taken off the LRU with TRACKED cleared and left to the
    releaser; it is not counted.

    Not reachable through the model's API (release runs atomically inside the last
    kref_put), so the refcount is forced to 0 to emulate a release in progress."""
    h = new_host()
    a = mkcg(h, "/a")
    e1 = new_enclave(h, h.spawn("/a"), 6)
    e2 = new_enclave(h, h.spawn("/a"), 6)
    p1, p2 = epc_pages(e1, range(6)), epc_pages(e2, range(6))
    assert a.lru.to_list() == p1 + p2
    saved = e1.refcount
    e1.refcount = 0
    assert drive(sgx_reclaim_pages(h, a, None)) == 6
    assert a.lru.nr == 0 and a.nr_evicted == 6
    for p in p1:
        assert not h.epc.flags[p] & SGX_EPC_PAGE_RECLAIMER_TRACKED
        assert h.epc.prev[p] == p
    assert (e1.epc[:6] >= 0).all() and (e2.epc[:6] == -1).all()
    assert e1.refcount == 0
    # the releaser: frees the dropped pages (no longer tracked), SECS, VA
    sgx_encl_release(h, e1)
    e1.refcount = saved  # keep the owner task's later puts balanced (never exits here)
    assert usage(a) == 2 + 0  # e2's VA + SECS
    check_invariants(h, quiescent=True)


@pytest.mark.parametrize("point", ["reclaim:aged", "reclaim:blocked"])
def test_invariants_hold_between_reclaim_phases(point):
    """check_invariants() without *quiescent* is documented to accept the state of an
    operation suspended mid-way; sgx_reclaim_pages() allocates the backing before the EWB."""
    h = new_host()
    a = mkcg(h, "/a")
    new_enclave(h, h.spawn("/a"), 20)
    gen = sgx_reclaim_pages(h, a, None)
    while next(gen) != point:
        pass
    check_invariants(h)


def test_invariants_hold_after_isolation():
    """Counterpart of the test above: right after phase 1 the checker accepts the
    isolated pages (and rejects them when told the state is quiescent)."""
    h = new_host()
    a = mkcg(h, "/a")
    new_enclave(h, h.spawn("/a"), 20)
    gen = sgx_reclaim_pages(h, a, None)
    assert next(gen) == "reclaim:isolated"
    check_invariants(h)
    with pytest.raises(InvariantError):
        check_invariants(h, quiescent=True)


@pytest.mark.parametrize("point", ["reclaim:isolated", "reclaim:aged", "reclaim:blocked"])
def test_enclave_released_by_reclaimer_dropping_last_reference(point):
    """sgx_reclaim_pages() (main.c; its kref_put() may run sgx_encl_release()): the process exits
    while a reclaimer holds some of its enclave's pages; the enclave is released when the reclaimer
    drops its last reference, and everything is freed and uncharged."""
    h = new_host()
    a = mkcg(h, "/a")
    t = h.spawn("/a")
    e = new_enclave(h, t, 20)
    drive(ioctl.encl_access(h, t, e, [0, 1]))
    total = h.epc.nr_pages
    gen = sgx_reclaim_pages(h, a, None)
    while next(gen) != point:
        pass
    task_exit(h, t)
    assert not e.released
    held = 16 if point == "reclaim:isolated" else 14
    assert e.refcount == held
    assert e.nr_live_mms == 0
    ret = drive(gen)
    assert ret == 16
    assert e.released and e.refcount == 0
    assert usage(a) == 0 and a.nr_pages == 0 and a.lru.nr == 0
    assert h.epc.nr_free_pages == total and h.nr_lru_pages == 0
    assert all(m.usage == 0 for m in h.memcgs)  # the backing went with the enclave
    check_invariants(h, quiescent=True)


def test_no_reclaim_fault_sees_lru_emptied_by_async_worker():
    """sgx_cgroup_try_charge() (v16 patch 9) vs sgx_cgroup_reclaim_work_func() (v16 patch 10) in
    sgx_reclaim_pages(), a race (kernel-faithful, not a bug): the async worker has isolated every
    page of the cgroup; a NO_RECLAIM fault charge at the limit sees an empty LRU, gets -ENOMEM
    instead of -EBUSY, and the process gets SIGBUS."""
    h = new_host()
    a = mkcg(h, "/a", 18)
    t = h.spawn("/a")
    e = new_enclave(h, t, 16, init=True)
    assert usage(a) == 18
    assert queue_work(h, a)
    assert h.sgx_cg_wq.popleft() is a
    worker = sgx_cgroup_reclaim_work_func(h, a)
    assert next(worker) == "reclaim:isolated"
    assert a.lru.nr == 0 and h.nr_lru_pages == 0
    # EAUG fault on an absent page: charge fails, subtree LRU empty → ENOMEM → SIGBUS
    res = drive(ioctl.encl_access(h, t, e, [100]))
    assert res.sigbus and res.done == 0 and res.retries == 0
    assert a.nr_enomem == 1 and a.cg.events_local == 1
    assert t.exited and t.exit_status == 128 + 7
    assert not e.released  # the worker still holds 16 references
    drive(worker)
    assert e.released and usage(a) == 0
    assert a.nr_evicted == 16
    check_invariants(h, quiescent=True)


def test_same_fault_without_the_race_retries():
    """Contrast for the race above: with the pages on the LRU, the same fault gets
    -EBUSY → VM_FAULT_NOPAGE (retry) and queues the work."""
    h = new_host()
    a = mkcg(h, "/a", 18)
    t = h.spawn("/a")
    e = new_enclave(h, t, 16, init=True)
    res = drive(ioctl.encl_access(h, t, e, [100], max_retries=0))
    assert not res.sigbus and res.retries == 1
    assert list(h.sgx_cg_wq) == [a]
    drive(sgx_cgroup_reclaim_work_func(h, h.sgx_cg_wq.popleft()))
    res = drive(ioctl.encl_access(h, t, e, [100]))
    assert res.faults == 1 and e.epc[100] >= 0
    check_invariants(h, quiescent=True)


# --- ksgxd() and sgx_reclaim_pages_global() (main.c, v16 patches 12, 14) --------------------------


def test_allocator_wakes_ksgxd_below_low_watermark():
    """sgx_alloc_epc_page() (main.c) and ksgxd() (v16 patch 14): the allocator wakes ksgxd once free
    < 32 and something is reclaimable."""
    h = new_host("512KiB")  # 128 pages
    t = h.spawn("/")
    e = new_enclave(h, t, 94)
    assert h.epc.nr_free_pages == 32 and not h.ksgxd_woken
    drive(ioctl.ioc_enclave_add_pages(h, t, e, 94 * PAGE_SIZE, PAGE_SIZE))
    assert h.epc.nr_free_pages == 31 and h.ksgxd_woken


def test_allocator_does_not_wake_ksgxd_with_nothing_reclaimable():
    """sgx_alloc_epc_page() (main.c; sgx_should_reclaim_global(), v16 patch 8): below the watermark
    but with every LRU empty: no wake-up."""
    h = new_host("512KiB")
    t = h.spawn("/")
    v = ioctl.vepc_open(h, t, 100)
    res = drive(ioctl.vepc_access(h, t, v, range(100)))
    assert res.done == 100 and h.epc.nr_free_pages == 28
    assert not h.ksgxd_woken
    assert not sgx_should_reclaim_global(h, 32)


def test_ksgxd_hysteresis_32_64():
    """ksgxd() (main.c, v16 patch 14 "x86/sgx: Turn on per-cgroup EPC reclamation"): woken below 32
    free pages, ksgxd reclaims 16 pages per step while free < 64, then sleeps (returns False,
    ksgxd_woken cleared)."""
    h = new_host("512KiB")
    t = h.spawn("/")
    new_enclave(h, t, 95)
    assert h.epc.nr_free_pages == 31 and h.ksgxd_woken
    free = []
    while drive(ksgxd_step(h)):
        free.append(h.epc.nr_free_pages)
    assert free == [47, 63, 79]
    assert not h.ksgxd_woken
    assert h.sgx_cg_root.nr_evicted == 48
    # asleep: a step does nothing
    assert run_counting(ksgxd_step(h)) == (False, [])
    check_invariants(h, quiescent=True)


def test_ksgxd_step_yields_and_reclaims_rooted_at_root():
    """ksgxd() (v16 patch 14): one ksgxd iteration = one 16-page global reclaim (no charge mm) + a
    cond_resched."""
    h = new_host("512KiB")
    t = h.spawn("/")
    new_enclave(h, t, 100)
    ret, points = run_counting(ksgxd_step(h))
    assert ret is True
    assert points == ["reclaim:isolated", "reclaim:aged", "reclaim:blocked", "cond_resched"]


def test_global_reclaim_rotates_over_all_cgroups_with_root_cursor():
    """sgx_reclaim_pages_global() (main.c, v16 patches 12, 14): global reclaim = rotating reclaim
    rooted at the root over every cgroup (the root's own LRU holds root tasks' pages), continuing
    via root.next_cg; a batch is split over cgroups whose LRU holds fewer than 16 pages."""
    h = new_host("1MiB")  # 256 pages
    R = h.sgx_cg_root
    A = mkcg(h, "/A")
    B = mkcg(h, "/B")
    new_enclave(h, h.spawn("/"), 10)
    new_enclave(h, h.spawn("/A"), 100)
    new_enclave(h, h.spawn("/B"), 100)
    assert h.epc.nr_free_pages == 40
    assert drive(ksgxd_step(h)) is True
    assert (R.nr_evicted, A.nr_evicted, B.nr_evicted) == (10, 16, 0)
    assert R.next_cg is B
    assert h.epc.nr_free_pages == 66
    assert drive(ksgxd_step(h)) is False
    got = [drive(sgx_reclaim_pages_global(h, None)) for _ in range(3)]
    assert got == [16, 16, 16]
    assert (R.nr_evicted, A.nr_evicted, B.nr_evicted) == (10, 32, 32)
    assert R.nr_reclaim_batches == 2  # visited again (empty) at the start of the cycle
    check_invariants(h, quiescent=True)


def _fill(h, *, extra_capacity: int = 0):
    """/A (no limit) holds 120 reclaimable pages; /B's task has an enclave with 4 pages
    and takes the last free page: EPC full, neither cgroup at a limit.

    *extra_capacity* (white box) raises the misc capacity above the physical EPC: every
    used page is charged and charge/free are atomic in the model, so a charge at full
    EPC always fails at the root's capacity first (misc_cg_try_charge() checks the capacity at every
    level) and the allocator's physical shortage path (the free-page loop of sgx_alloc_epc_page(),
    main.c) is only reached in the kernel's windows (a page uncharged but not yet back on a free
    list, unsanitised pages).  The bump emulates such a window."""
    A = mkcg(h, "/A")
    B = mkcg(h, "/B")
    new_enclave(h, h.spawn("/A"), 120)
    tb = h.spawn("/B")
    eb = new_enclave(h, tb, 4)
    assert h.epc.nr_free_pages == 0 and usage(h.sgx_cg_root) == 128
    if extra_capacity:
        h.misc.misc_cg_set_capacity(h.misc.capacity + extra_capacity * PAGE_SIZE)
    return A, B, tb, eb


def test_full_epc_charge_fails_at_root_capacity_and_reclaims_requester_subtree():
    """misc_cg_try_charge() (kernel/cgroup/misc.c) and sgx_cgroup_try_charge() (v16 patch 9): with
    every EPC page charged the charge fails at the root (capacity is checked at every level): one
    event in the root's events_local, and the charge loop reclaims subtree(requester) only, even
    though another cgroup holds the reclaimable bulk."""
    h = new_host("512KiB")
    A, B, tb, eb = _fill(h)
    R = h.sgx_cg_root
    ret, points = run_counting(ioctl.ioc_enclave_add_pages(h, tb, eb, 4 * PAGE_SIZE, PAGE_SIZE))
    assert ret == PAGE_SIZE
    assert R.cg.events_local == 1 and R.cg.events == 0
    assert B.cg.events == 0 and A.cg.events == 0
    assert (A.nr_evicted, B.nr_evicted) == (0, 4)
    assert R.nr_reclaim_batches == 0 and A.nr_reclaim_batches == 0
    assert h.epc.nr_free_pages == 3 and usage(B) == 3
    check_invariants(h, quiescent=True)


def test_full_epc_requester_without_reclaimable_pages_gets_enomem():
    """misc_cg_try_charge() (kernel/cgroup/misc.c) and sgx_cgroup_try_charge() (v16 patch 9; scope =
    the requester's subtree): at full EPC a requester whose subtree has nothing on its LRUs gets
    ENOMEM although other cgroups have reclaimable pages."""
    h = new_host("512KiB")
    A = mkcg(h, "/A")
    C = mkcg(h, "/C")
    new_enclave(h, h.spawn("/A"), 124)
    tc = h.spawn("/C")
    e = new_enclave(h, tc, 0)
    assert h.epc.nr_free_pages == 0
    with pytest.raises(ioctl.SgxIoctlError) as ei:
        drive(ioctl.ioc_enclave_add_pages(h, tc, e, 0, PAGE_SIZE))
    assert ei.value.errno == errno.ENOMEM
    assert A.nr_evicted == 0 and C.nr_enomem == 1
    assert h.sgx_cg_root.cg.events_local == 1
    check_invariants(h, quiescent=True)


def test_physical_shortage_do_reclaim_reclaims_globally():
    """sgx_alloc_epc_page() -> sgx_reclaim_pages_global() (v16 patch 14; white box, see _fill):
    charged but no free page: DO_RECLAIM runs global reclaim rooted at the root (any cgroup) and
    retries; no max event."""
    h = new_host("512KiB")
    A, B, tb, eb = _fill(h, extra_capacity=64)
    R = h.sgx_cg_root
    ret, points = run_counting(sgx_alloc_epc_page(h, tb, KIND_ENCL, eb.id, 50, SGX_DO_RECLAIM))
    assert ret >= 0
    assert points == ["reclaim:isolated", "reclaim:aged", "reclaim:blocked", "cond_resched"]
    assert (R.nr_reclaim_batches, A.nr_reclaim_batches, B.nr_reclaim_batches) == (1, 1, 0)
    assert A.nr_evicted == 16 and B.nr_evicted == 0
    assert usage(A) == 106 and usage(B) == 7
    assert h.epc.nr_free_pages == 15 and h.ksgxd_woken
    assert B.cg.events == 0 and R.cg.events_local == 0
    assert R.next_cg is B
    # sgx_reclaim_pages() with the charge_mm of v16 patch 11: the backing of A's pages is charged to
    # current's (B's) memcg
    assert h.cgroup("/B").memcg.usage == 16 * 4224
    assert h.cgroup("/A").memcg.usage == 0
    # ksgxd (no mm): charged to the memcg of the enclave's first live mm (A's)
    # (its batch continues at B's 4 pages, then R, then A: split batch)
    assert drive(ksgxd_step(h)) is True
    assert (A.nr_evicted, B.nr_evicted) == (32, 4)
    assert h.cgroup("/A").memcg.usage == 16 * 4224
    assert h.cgroup("/B").memcg.usage == (16 + 4) * 4224


def test_physical_shortage_no_reclaim_is_ebusy():
    """sgx_alloc_epc_page() (main.c; white box, see _fill): NO_RECLAIM with no free page → -EBUSY,
    the charge and css reference undone, no work queued (the charge itself succeeded); an
    EAUG fault retries."""
    h = new_host("512KiB")
    A, B, tb, eb = _fill(h, extra_capacity=64)
    ref = B.cg.refcnt
    ret = drive(sgx_alloc_epc_page(h, tb, KIND_ENCL, eb.id, 50, SGX_NO_RECLAIM))
    assert ret == -EBUSY
    assert usage(B) == 6 and B.cg.refcnt == ref and B.cg.events == 0
    assert not h.sgx_cg_wq
    ioctl.ioc_enclave_init(h, tb, eb)
    res = drive(ioctl.encl_access(h, tb, eb, [50], max_retries=0))
    assert res.retries == 1 and not res.sigbus
    assert A.nr_evicted == 0 and not h.sgx_cg_wq
    check_invariants(h, quiescent=True)


def test_physical_shortage_signal_pending_is_erestartsys():
    """sgx_alloc_epc_page() (main.c; white box, see _fill): DO_RECLAIM, no free page, signal pending
    →
    -ERESTARTSYS, nothing reclaimed, charge undone."""
    h = new_host("512KiB")
    A, B, tb, eb = _fill(h, extra_capacity=64)
    tb.signal_pending = True
    ret = drive(sgx_alloc_epc_page(h, tb, KIND_ENCL, eb.id, 50, SGX_DO_RECLAIM))
    assert ret == -ERESTARTSYS and usage(B) == 6 and A.nr_evicted == 0
    tb.signal_pending = False
    check_invariants(h, quiescent=True)


@pytest.mark.parametrize("extra_capacity", [0, 64])
def test_nothing_reclaimable_anywhere_is_enomem(extra_capacity):
    """sgx_alloc_epc_page() (sgx_can_reclaim_global(), v16 patch 14) and sgx_cgroup_try_charge()
    (v16 patch 9): the EPC is full of vEPC pages (never on an LRU): -ENOMEM in both modes, from the
    charge (capacity reached, root event) or, past the charge (white box), from the physical
    shortage path (no event)."""
    h = new_host("512KiB")
    a = mkcg(h, "/a")
    tv = h.spawn("/")
    v = ioctl.vepc_open(h, tv, 128)
    assert drive(ioctl.vepc_access(h, tv, v, range(128))).done == 128
    assert h.epc.nr_free_pages == 0 and not h.ksgxd_woken
    if extra_capacity:
        h.misc.misc_cg_set_capacity(h.misc.capacity + extra_capacity * PAGE_SIZE)
    t = h.spawn("/a")
    ref = a.cg.refcnt
    for mode in (SGX_DO_RECLAIM, SGX_NO_RECLAIM):
        assert drive(sgx_alloc_epc_page(h, t, KIND_ENCL, 0, 0, mode)) == -ENOMEM
    assert usage(a) == 0 and a.cg.refcnt == ref
    assert h.sgx_cg_root.cg.events_local == (0 if extra_capacity else 2)
    assert not h.sgx_cg_wq


def test_failed_ecreate_leaves_consistent_state():
    """sgx_encl_create() (ioctl.c) with sgx_alloc_epc_page() (v16 patch 5): ECREATE failing with
    ENOMEM unwinds (nothing charged, enclave not created) and the model state stays consistent."""
    h = new_host("512KiB")
    tv = h.spawn("/")
    v = ioctl.vepc_open(h, tv, 128)
    drive(ioctl.vepc_access(h, tv, v, range(128)))
    a = mkcg(h, "/a")
    t = h.spawn("/a")
    e = ioctl.sgx_open(h, t)
    with pytest.raises(ioctl.SgxIoctlError) as ei:
        drive(ioctl.ioc_enclave_create(h, t, e, 1 << 20))
    assert ei.value.errno == errno.ENOMEM
    assert usage(a) == 0 and e.secs_epc == -1 and not e.va_pages
    check_invariants(h, quiescent=True)


# --- direct reclaim: sgx_reclaim_direct() (main.c, v16 patch 13) ----------------------------------


@pytest.mark.parametrize(("npages", "evicted"), [(197, 16), (166, 16), (165, 0)])
def test_reclaim_direct_per_cgroup_pass_only_if_should_reclaim(npages, evicted):
    """sgx_cgroup_reclaim_direct() (epc_cgroup.c, v16 patch 13 "x86/sgx: implement direct
    reclamation for cgroups"): one 16-page pass over subtree(current cg) iff should_reclaim (usage
    >= 200 - 32 here); a single pass even if still above the threshold."""
    h = new_host()
    a = mkcg(h, "/a", 200)
    t = h.spawn("/a")
    new_enclave(h, t, npages)
    drive(sgx_reclaim_direct(h, t))
    assert a.nr_evicted == evicted
    assert usage(a) == npages + 2 - evicted
    assert h.sgx_cg_root.nr_reclaim_batches == 0  # no global pass (plenty free)
    check_invariants(h, quiescent=True)


def test_reclaim_direct_global_pass_only_if_free_below_32():
    """sgx_reclaim_direct() (main.c, v16 patch 13): a global pass (16 pages) only while free <
    32."""
    h = new_host("512KiB")
    a = mkcg(h, "/a")
    t = h.spawn("/a")
    new_enclave(h, t, 100)
    assert h.epc.nr_free_pages == 26
    drive(sgx_reclaim_direct(h, t))
    assert a.nr_evicted == 16 and h.epc.nr_free_pages == 42
    drive(sgx_reclaim_direct(h, t))
    assert a.nr_evicted == 16


def test_reclaim_direct_both_passes():
    """sgx_reclaim_direct() (v16 patch 13): the per-cgroup pass first, then the global pass if free
    is still < 32."""
    h = new_host("1MiB")  # 256 pages
    b = mkcg(h, "/b")
    a = mkcg(h, "/a", 200)
    new_enclave(h, h.spawn("/b"), 40)
    t = h.spawn("/a")
    new_enclave(h, t, 198)
    assert h.epc.nr_free_pages == 14
    drive(sgx_reclaim_direct(h, t))
    # per-cgroup: 16 from /a (free 30 < 32); global from the root cursor: R, b
    assert (a.nr_evicted, b.nr_evicted) == (16, 16)
    assert h.epc.nr_free_pages == 46
    check_invariants(h, quiescent=True)


def test_edmm_ioctl_runs_direct_reclaim_before_each_page():
    """sgx_reclaim_direct() (v16 patch 13): the EDMM ioctls call sgx_reclaim_direct() before each
    page."""
    h = new_host()
    a = mkcg(h, "/a", 200)
    t = h.spawn("/a")
    e = new_enclave(h, t, 198, init=True)
    n = drive(ioctl.ioc_enclave_restrict_permissions(h, t, e, 190 * PAGE_SIZE, 2 * PAGE_SIZE))
    assert n == 2 * PAGE_SIZE
    # 200 -> 184 (>= 168) -> 168 (>= 168): two passes, one per page
    assert a.nr_evicted == 32 and usage(a) == 168
    check_invariants(h, quiescent=True)
