"""KVM guest EPC (vEPC) pages.

Series citations: vEPC pages (virt.c) are allocated NO_RECLAIM, charged (v16 patch 5), never
on an LRU and freed only at release; sgx_vepc_fault() maps -EBUSY -> VM_FAULT_RETRY and
anything else -> SIGBUS; vEPC usage counts as unreclaimable (the v16 cover letter).
"""

from __future__ import annotations

import numpy as np

from epcsim.kernel import Host, RoundRobin, check_invariants, drive, ioctl, task_exit
from epcsim.kernel import encls as L
from epcsim.kernel.constants import VM_FAULT_RETRY, VM_FAULT_SIGBUS
from epcsim.kernel.epc import KIND_VEPC
from epcsim.kernel.epc_cgroup import sgx_cgroup_reclaim_pages, sgx_cgroup_reclaim_work_func
from epcsim.kernel.reclaim import ksgxd_step
from epcsim.kernel.virt import sgx_vepc_fault

P = 4096


def mkhost(epc="1MiB", limit=None):
    h = Host(epc)
    h.fs.write("/cgroup.subtree_control", "+misc +memory")
    h.fs.mkdir("/a")
    if limit is not None:
        h.fs.write("/a/misc.max", f"sgx_epc {limit * P}")
    return h


def cur(h, path="/a"):
    text = h.fs.read(f"{path}/misc.current")
    return int(text.split()[1]) // P if text else 0


def events_local(h, path="/a"):
    text = h.fs.read(f"{path}/misc.events.local")
    return int(text.split()[1]) if text else 0


def test_vepc_fault_in_charged_never_on_lru():
    """sgx_vepc_fault() (virt.c; charged since v16 patch 5): each first touch allocates (NO_RECLAIM)
    and charges one page to the task's cgroup; vEPC pages are never put on an LRU."""
    h = mkhost()
    t = h.spawn("/a")
    v = ioctl.vepc_open(h, t, 16)
    assert cur(h) == 0  # nothing until touched
    r = drive(ioctl.vepc_access(h, t, v, [0, 1, 2, 5]))
    assert (r.done, r.faults, r.retries, r.sigbus) == (4, 4, 0, False)
    assert cur(h) == 4 and cur(h, "/") == 4
    assert v.nr_resident == 4
    assert np.all(h.epc.kind[v.epc[[0, 1, 2, 5]]] == KIND_VEPC)
    assert h.nr_lru_pages == 0
    assert h.sgx_cgroup_of("/a").lru.nr == 0
    # touching present pages again allocates nothing
    r = drive(ioctl.vepc_access(h, t, v, [0, 1, 2, 5, 5]))
    assert r.done == 5 and r.faults == 0
    assert cur(h) == 4
    check_invariants(h, quiescent=True)


def test_vepc_pages_never_reclaimed():
    """sgx_mark_page_reclaimable() is never called for vEPC pages (v16 cover letter): reclaim
    (cgroup, global, ksgxd) never touches vEPC pages."""
    h = mkhost("256KiB")  # 64 pages
    t = h.spawn("/a")
    v = ioctl.vepc_open(h, t, 60)
    drive(ioctl.vepc_access(h, t, v, range(60)))
    assert h.epc.nr_free_pages == 4
    before = v.epc.copy()
    assert drive(sgx_cgroup_reclaim_pages(h, h.sgx_cgroup_of("/a"), None, 16)) == 0
    assert drive(sgx_cgroup_reclaim_pages(h, h.sgx_cg_root, None, 16)) == 0
    assert not drive(ksgxd_step(h))  # nothing reclaimable: ksgxd sleeps
    assert np.array_equal(v.epc, before)
    assert h.encls_count[L.EWB] == 0
    assert not h.ksgxd_woken
    check_invariants(h, quiescent=True)


def test_vepc_at_limit_nothing_reclaimable_sigbus():
    """__sgx_vepc_fault() -> sgx_alloc_epc_page() -> sgx_cgroup_try_charge() (v16 patch 9): the
    charge fails and subtree(cg) has no reclaimable page -> ENOMEM -> SIGBUS (the VMM dies, its vEPC
    is released)."""
    h = mkhost(limit=4)
    t = h.spawn("/a")
    v = ioctl.vepc_open(h, t, 8)
    r = drive(ioctl.vepc_access(h, t, v, range(8)))
    assert r.sigbus and r.done == 4 and r.faults == 4 and r.retries == 0
    assert t.exited and t.exit_status == 128 + 7
    assert v.released and cur(h) == 0
    assert events_local(h) == 1
    check_invariants(h, quiescent=True)


def test_vepc_fault_returns_sigbus_direct():
    """sgx_vepc_fault() (virt.c): sgx_vepc_fault maps ENOMEM to VM_FAULT_SIGBUS (no work queued)."""
    h = mkhost(limit=1)
    t = h.spawn("/a")
    v = ioctl.vepc_open(h, t, 4)
    assert sgx_vepc_fault(h, t, v, 0) == 0
    assert sgx_vepc_fault(h, t, v, 1) == VM_FAULT_SIGBUS
    assert not h.sgx_cg_wq
    assert sgx_vepc_fault(h, t, v, 4) == VM_FAULT_SIGBUS  # outside the vEPC


def test_vepc_at_limit_with_reclaimable_enclave_pages_retries():
    """sgx_cgroup_try_charge() (NO_RECLAIM, v16 patch 10) from sgx_vepc_fault(): with reclaimable
    enclave pages in the subtree the NO_RECLAIM charge gets EBUSY: VM_FAULT_RETRY, the cgroup's
    async work is queued; after the work ran, the retried fault succeeds."""
    h = mkhost(limit=12)
    t1 = h.spawn("/a")
    t2 = h.spawn("/a")
    e = ioctl.sgx_open(h, t1)
    drive(ioctl.ioc_enclave_create(h, t1, e, 1 << 20))
    drive(ioctl.ioc_enclave_add_pages(h, t1, e, 0, 8 * P))
    v = ioctl.vepc_open(h, t2, 4)
    drive(ioctl.vepc_access(h, t2, v, [0, 1]))
    assert cur(h) == 12
    cg = h.sgx_cgroup_of("/a")
    assert sgx_vepc_fault(h, t2, v, 2) == VM_FAULT_RETRY
    assert list(h.sgx_cg_wq) == [cg] and cg.work_pending
    g = ioctl.vepc_access(h, t2, v, [2, 3])
    assert next(g) == "fault_retry"
    assert len(h.sgx_cg_wq) == 1  # already pending: not queued twice
    drive(sgx_cgroup_reclaim_work_func(h, cg))
    assert e.nr_resident == 0 and cur(h) == 4  # VA + SECS + 2 vEPC pages
    r = drive(g)
    assert (r.done, r.faults, r.retries, r.sigbus) == (2, 2, 1, False)
    assert cur(h) == 6 and v.nr_resident == 4
    check_invariants(h, quiescent=True)


def test_vepc_retry_loop_with_roundrobin():
    """sgx_cgroup_reclaim_work_func() (epc_cgroup.c, v16 patch 10): a retrying vEPC fault completes
    once the async worker reclaimed."""
    h = mkhost(limit=40)
    t1 = h.spawn("/a")
    t2 = h.spawn("/a")
    e = ioctl.sgx_open(h, t1)
    drive(ioctl.ioc_enclave_create(h, t1, e, 1 << 20))
    drive(ioctl.ioc_enclave_add_pages(h, t1, e, 0, 38 * P))
    v = ioctl.vepc_open(h, t2, 4)
    rr = RoundRobin(h)
    rr.add("vmm", ioctl.vepc_access(h, t2, v, range(4)))
    rr.run(max_steps=10_000)
    r = rr.results["vmm"]
    assert r.done == 4 and r.faults == 4 and r.retries >= 1 and not r.sigbus
    assert cur(h) <= 40
    check_invariants(h, quiescent=True)


def test_vepc_max_retries_stops():
    """vepc_access(max_retries=n) gives up after n+1 retries of one page."""
    h = mkhost(limit=3)
    t = h.spawn("/a")
    e = ioctl.sgx_open(h, t)
    drive(ioctl.ioc_enclave_create(h, t, e, 1 << 20))
    drive(ioctl.ioc_enclave_add_pages(h, t, e, 0, P))
    v = ioctl.vepc_open(h, t, 2)
    r = drive(ioctl.vepc_access(h, t, v, [0], max_retries=1))
    assert r.retries == 2 and r.done == 0 and not r.sigbus
    assert not t.exited
    assert events_local(h) == 2


def test_vepc_usage_makes_enclave_add_fail_enomem():
    """the v16 cover letter: vEPC pages are unreclaimable usage: an enclave sharing the
    cgroup gets ENOMEM once vEPC + VA + SECS fill the limit."""
    h = mkhost(limit=6)
    t1 = h.spawn("/a")
    t2 = h.spawn("/a")
    v = ioctl.vepc_open(h, t2, 4)
    drive(ioctl.vepc_access(h, t2, v, range(4)))
    e = ioctl.sgx_open(h, t1)
    drive(ioctl.ioc_enclave_create(h, t1, e, 1 << 20))
    try:
        drive(ioctl.ioc_enclave_add_pages(h, t1, e, 0, P))
    except ioctl.SgxIoctlError as ex:
        assert ex.errno == 12 and ex.count == 0
    else:
        raise AssertionError("expected ENOMEM")
    check_invariants(h, quiescent=True)


def test_vepc_physical_shortage_with_reclaimable_pages_retries_and_wakes_ksgxd():
    """sgx_alloc_epc_page() (main.c): no free page, something reclaimable, NO_RECLAIM -> EBUSY
    (retry); ksgxd is woken (free < 32) and its reclaim lets the fault through."""
    h = Host("256KiB")  # 64 pages, misc unlimited
    t1 = h.spawn("/")
    t2 = h.spawn("/")
    e = ioctl.sgx_open(h, t1)
    drive(ioctl.ioc_enclave_create(h, t1, e, 1 << 20))
    drive(ioctl.ioc_enclave_add_pages(h, t1, e, 0, 62 * P))
    assert h.epc.nr_free_pages == 0
    v = ioctl.vepc_open(h, t2, 2)
    assert sgx_vepc_fault(h, t2, v, 0) == VM_FAULT_RETRY
    assert h.ksgxd_woken
    assert cur(h, "/") == 64  # the failed allocation was uncharged again
    assert drive(ksgxd_step(h))
    assert h.epc.nr_free_pages == 16
    assert sgx_vepc_fault(h, t2, v, 0) == 0
    check_invariants(h, quiescent=True)


def test_vepc_physical_shortage_nothing_reclaimable_sigbus():
    """sgx_alloc_epc_page() (sgx_can_reclaim_global(), v16 patch 14): no free page and nothing on
    any LRU -> ENOMEM -> SIGBUS."""
    h = Host("64KiB")  # 16 pages
    t = h.spawn("/")
    v = ioctl.vepc_open(h, t, 20)
    r = drive(ioctl.vepc_access(h, t, v, range(20)))
    assert r.sigbus and r.done == 16
    assert v.released and h.epc.nr_free_pages == 16
    check_invariants(h, quiescent=True)


def test_vepc_release_frees_all():
    """sgx_vepc_release() (virt.c): vEPC release (file close at exit) EREMOVEs and frees every
    page."""
    h = mkhost()
    t = h.spawn("/a")
    v1 = ioctl.vepc_open(h, t, 8)
    v2 = ioctl.vepc_open(h, t, 8)
    drive(ioctl.vepc_access(h, t, v1, range(8)))
    drive(ioctl.vepc_access(h, t, v2, [1, 3]))
    assert cur(h) == 10
    er = h.encls_count[L.EREMOVE]
    task_exit(h, t)
    assert v1.released and v2.released
    assert v1.nr_resident == 0 and v2.nr_resident == 0
    assert cur(h) == 0 and cur(h, "/") == 0
    assert h.encls_count[L.EREMOVE] - er == 10
    assert h.epc.nr_free_pages == h.epc.nr_pages
    check_invariants(h, quiescent=True)


def test_vepc_charge_follows_faulting_task_cgroup():
    """sgx_alloc_epc_page() from sgx_vepc_fault() (v16 patch 5): each vEPC page is charged to the
    cgroup of the task faulting it in."""
    h = mkhost()
    h.fs.mkdir("/b")
    t = h.spawn("/a")
    v = ioctl.vepc_open(h, t, 4)
    drive(ioctl.vepc_access(h, t, v, [0]))
    h.fs.write("/b/cgroup.procs", str(t.pid))
    drive(ioctl.vepc_access(h, t, v, [1, 2]))
    assert cur(h, "/a") == 1 and cur(h, "/b") == 2
    task_exit(h, t)
    assert cur(h, "/a") == 0 and cur(h, "/b") == 0
    check_invariants(h, quiescent=True)
