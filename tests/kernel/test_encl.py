"""Enclave-side behaviour of the model: ECREATE, ADD_PAGES, EINIT, the accessed bit,
the fault path (ELDU, SECS reload, EAUG), EDMM, release and task migration.

Series citations: the enclave structures of encl.h (unchanged by the series); which pages
sgx_mark_page_reclaimable() tracks (v16 patch 7 "x86/sgx: Abstract tracking reclaimable pages
in LRU"); the allocation modes of sgx_alloc_epc_page() (v16 patch 1 "x86/sgx: Replace boolean
parameters with enums", patches 5, 14); the enclave flows of encl.c / ioctl.c; task migration
("Migration" in sgx.rst, v16 patch 15 "Docs/x86/sgx: Add description for cgroup support").
"""

from __future__ import annotations

import errno
import math

import numpy as np
import pytest

from epcsim.kernel import Host, RoundRobin, check_invariants, drive, ioctl, task_exit
from epcsim.kernel import encls as L
from epcsim.kernel.constants import (
    SGX_ENCL_CREATED,
    SGX_ENCL_INITIALIZED,
    SGX_EPC_PAGE_RECLAIMER_TRACKED,
    SGX_PAGE_TYPE_REG,
    SGX_PAGE_TYPE_SECS,
    SGX_PAGE_TYPE_TCS,
    SGX_PAGE_TYPE_TRIM,
    VM_FAULT_SIGBUS,
)
from epcsim.kernel.encl import (
    DESC_ACCESSED,
    DESC_BEING_RECLAIMED,
    DESC_BLOCKED,
    DESC_PRESENT,
    sgx_encl_access,
    sgx_vma_fault,
)
from epcsim.kernel.epc import KIND_SECS, KIND_VA
from epcsim.kernel.epc_cgroup import sgx_cgroup_reclaim_pages, sgx_cgroup_reclaim_work_func
from epcsim.kernel.ioctl import SgxIoctlError
from epcsim.kernel.reclaim import sgx_reclaim_pages

P = 4096
BACKING = 4096 + 128


# --- helpers ------------------------------------------------------------------------------


def mkhost(epc="1MiB", *, limit=None, sgx2=True, path="/a"):
    """A host with misc+memory enabled at the root and one child cgroup *path*."""
    h = Host(epc, sgx2=sgx2)
    h.fs.write("/cgroup.subtree_control", "+misc +memory")
    h.fs.mkdir(path)
    if limit is not None:
        h.fs.write(f"{path}/misc.max", f"sgx_epc {limit * P}")
    return h


def cur(h, path="/a"):
    """misc.current of *path* in pages."""
    text = h.fs.read(f"{path}/misc.current")
    return int(text.split()[1]) // P if text else 0


def mem(h, path="/a"):
    return int(h.fs.read(f"{path}/memory.current"))


def events_local(h, path="/a"):
    text = h.fs.read(f"{path}/misc.events.local")
    return int(text.split()[1]) if text else 0


def build(h, t, npages, *, size=1 << 20, init=False, measure=True, page_type=SGX_PAGE_TYPE_REG):
    e = ioctl.sgx_open(h, t)
    drive(ioctl.ioc_enclave_create(h, t, e, size))
    if npages:
        got = drive(
            ioctl.ioc_enclave_add_pages(
                h, t, e, 0, npages * P, page_type=page_type, measure=measure
            )
        )
        assert got == npages * P
    if init:
        ioctl.ioc_enclave_init(h, t, e)
    return e


def evict_all(h, path="/a"):
    """Reclaim subtree(path) until its LRU is empty (young pages get a second pass)."""
    cg = h.sgx_cgroup_of(path)
    while cg.lru.nr:
        drive(sgx_cgroup_reclaim_pages(h, cg, None, 16))


def evict(h, path, n):
    """One reclaim call with nr_to_scan=*n*, no charge mm."""
    return drive(sgx_cgroup_reclaim_pages(h, h.sgx_cgroup_of(path), None, n))


# --- ECREATE --------------------------------------------------------------------------------


def test_ecreate_charges_va_then_secs():
    """sgx_encl_create() (ioctl.c; DO_RECLAIM of v16 patch 1; VA and SECS are never marked
    reclaimable): ECREATE = grow (page_cnt 0->1, VA page #1) + SECS, both DO_RECLAIM, both charged,
    neither on an LRU."""
    h = mkhost()
    t = h.spawn("/a")
    e = ioctl.sgx_open(h, t)
    assert drive(ioctl.ioc_enclave_create(h, t, e, 1 << 20)) == 0
    assert cur(h) == 2
    assert cur(h, "/") == 2
    assert e.page_cnt == 1
    assert len(e.va_all) == 1 and len(e.va_pages) == 1
    assert h.epc.kind[e.va_all[0].epc] == KIND_VA
    assert h.epc.kind[e.secs_epc] == KIND_SECS
    assert h.nr_lru_pages == 0
    assert h.encls_count[L.ECREATE] == 1
    assert e.flags & SGX_ENCL_CREATED
    assert e.secs_child_cnt == 0
    assert h.epc.nr_free_pages == h.epc.nr_pages - 2
    check_invariants(h, quiescent=True)


@pytest.mark.parametrize("size", [0, P, 3 * P, 12 * P, (1 << 20) + P, (1 << 20) - P])
def test_ecreate_einval_bad_size(size):
    """sgx_ioc_enclave_create() (ioctl.c, SECS size check): size must be a power of two and at least
    2 pages; nothing charged."""
    h = mkhost()
    t = h.spawn("/a")
    e = ioctl.sgx_open(h, t)
    with pytest.raises(SgxIoctlError) as ei:
        drive(ioctl.ioc_enclave_create(h, t, e, size))
    assert ei.value.errno == errno.EINVAL
    assert cur(h) == 0
    assert not e.flags & SGX_ENCL_CREATED


def test_ecreate_minimum_size_ok():
    """sgx_ioc_enclave_create() (ioctl.c, SECS size check): 8192 bytes (2 pages) is the smallest
    valid enclave."""
    h = mkhost()
    t = h.spawn("/a")
    e = ioctl.sgx_open(h, t)
    drive(ioctl.ioc_enclave_create(h, t, e, 2 * P))
    assert e.npages == 2 and cur(h) == 2
    check_invariants(h, quiescent=True)


def test_ecreate_twice_einval():
    """sgx_ioc_enclave_create() (ioctl.c): a second ECREATE on the same enclave is EINVAL, nothing
    charged."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 0)
    with pytest.raises(SgxIoctlError) as ei:
        drive(ioctl.ioc_enclave_create(h, t, e, 1 << 20))
    assert ei.value.errno == errno.EINVAL
    assert cur(h) == 2
    assert h.encls_count[L.ECREATE] == 1
    check_invariants(h, quiescent=True)


def test_ecreate_enomem_unwinds_va_page():
    """sgx_encl_create() (ioctl.c) with the charge of sgx_alloc_epc_page() (v16 patch 5): limit of
    one page: VA page charged, SECS charge fails with nothing reclaimable -> ENOMEM; the VA page is
    freed again (shrink)."""
    h = mkhost(limit=1)
    t = h.spawn("/a")
    e = ioctl.sgx_open(h, t)
    with pytest.raises(SgxIoctlError) as ei:
        drive(ioctl.ioc_enclave_create(h, t, e, 1 << 20))
    assert ei.value.errno == errno.ENOMEM
    assert cur(h) == 0 and cur(h, "/") == 0
    assert e.page_cnt == 0 and not e.va_pages
    assert not e.flags & SGX_ENCL_CREATED
    assert h.epc.nr_free_pages == h.epc.nr_pages
    assert events_local(h) == 1
    # the enclave can be created once the limit allows it
    h.fs.write("/a/misc.max", f"sgx_epc {2 * P}")
    drive(ioctl.ioc_enclave_create(h, t, e, 1 << 20))
    assert cur(h) == 2
    check_invariants(h, quiescent=True)


def test_failed_ecreate_leaves_invariants_intact():
    """sgx_encl_create() (ioctl.c): a failed ECREATE unwinds completely; the model stays consistent
    (the kernel sets encl->size only after ECREATE succeeds)."""
    h = mkhost(limit=1)
    t = h.spawn("/a")
    e = ioctl.sgx_open(h, t)
    with pytest.raises(SgxIoctlError):
        drive(ioctl.ioc_enclave_create(h, t, e, 1 << 20))
    check_invariants(h, quiescent=True)


# --- ADD_PAGES ------------------------------------------------------------------------------


@pytest.mark.parametrize("added", [1, 510, 511, 512, 1023, 1024])
def test_add_pages_va_page_every_512_page_cnt(added):
    """sgx_encl_grow() (encl.c): VA pages = ceil((1 + added) / 512); usage = VA + SECS + added."""
    h = mkhost("8MiB")
    t = h.spawn("/a")
    e = build(h, t, added, size=8 << 20)
    nva = math.ceil((1 + added) / 512)
    assert nva == {1: 1, 510: 1, 511: 1, 512: 2, 1023: 2, 1024: 3}[added]
    assert len(e.va_all) == nva
    assert len(e.va_pages) == nva
    assert e.page_cnt == 1 + added
    assert cur(h) == nva + 1 + added
    assert e.secs_child_cnt == added
    assert e.nr_resident == added
    assert h.nr_lru_pages == added  # only the added pages are reclaimable
    assert h.encls_count[L.EADD] == added
    check_invariants(h, quiescent=True)


def test_add_pages_new_va_page_goes_to_head():
    """sgx_encl_grow() (encl.c; list_add): the newest VA page heads va_pages."""
    h = mkhost("4MiB")
    t = h.spawn("/a")
    e = build(h, t, 512, size=4 << 20)
    assert list(e.va_pages) == [1, 0]


@pytest.mark.parametrize("measure,expect", [(True, 16), (False, 0)])
def test_add_pages_eextend_16_per_measured_page(measure, expect):
    """sgx_encl_add_page() (ioctl.c; SGX_EEXTEND_BLOCK_SIZE 256): 16 EEXTENDs per measured page."""
    h = mkhost()
    t = h.spawn("/a")
    build(h, t, 5, measure=measure)
    assert h.encls_count[L.EEXTEND] == 5 * expect
    assert h.encls_count[L.EADD] == 5


def test_add_pages_tcs_type_recorded():
    """sgx_encl_add_page() (ioctl.c; page types of encl.h): the page type of ADD_PAGES is recorded;
    TCS pages are reclaimable."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 2, page_type=SGX_PAGE_TYPE_TCS)
    assert e.type[:2].tolist() == [SGX_PAGE_TYPE_TCS] * 2
    assert h.nr_lru_pages == 2


def test_add_pages_on_lru_in_order():
    """sgx_mark_page_reclaimable() (main.c, v16 patch 7): each added page goes to the tail of its
    cgroup's LRU, TRACKED."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 6)
    lru = h.sgx_cgroup_of("/a").lru.to_list()
    assert lru == e.epc[:6].tolist()
    assert np.all(h.epc.flags[e.epc[:6]] & SGX_EPC_PAGE_RECLAIMER_TRACKED)


def test_readd_page_fails_state_unchanged():
    """sgx_ioc_enclave_add_pages() (ioctl.c): re-adding a present page fails at that page; the pages
    before it in the range were added, ``count`` reports them, nothing leaks."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 0)
    drive(ioctl.ioc_enclave_add_pages(h, t, e, P, P))
    u = cur(h)
    with pytest.raises(SgxIoctlError) as ei:
        drive(ioctl.ioc_enclave_add_pages(h, t, e, 0, 3 * P))
    assert ei.value.count == P  # page 0 added, page 1 failed
    assert cur(h) == u + 1
    assert e.page_cnt == 3
    assert e.nr_added == 2
    assert h.nr_lru_pages == 2
    check_invariants(h, quiescent=True)


def test_readd_page_at_va_boundary_frees_the_new_va_page():
    """sgx_encl_shrink() (encl.c): a failing add after grow() allocated a VA page shrinks it
    again."""
    h = mkhost("4MiB")
    t = h.spawn("/a")
    e = build(h, t, 511, size=4 << 20)
    assert e.page_cnt == 512 and len(e.va_pages) == 1
    u = cur(h)
    with pytest.raises(SgxIoctlError):
        drive(ioctl.ioc_enclave_add_pages(h, t, e, 0, P))
    assert e.page_cnt == 512
    assert len(e.va_pages) == 1
    assert cur(h) == u
    check_invariants(h, quiescent=True)


def test_readd_page_errno_is_ebusy():
    """sgx_encl_add_page() (ioctl.c): re-adding a page -> EBUSY."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 1)
    with pytest.raises(SgxIoctlError) as ei:
        drive(ioctl.ioc_enclave_add_pages(h, t, e, 0, P))
    assert ei.value.errno == errno.EBUSY
    assert ei.value.count == 0


@pytest.mark.parametrize(
    "offset,length",
    [
        (100, P),  # misaligned offset
        (0, 100),  # misaligned length
        (0, 0),  # empty
        (P, P + 1),
        (7 * P, 2 * P),  # runs past the end (size 8 pages)
        (8 * P, P),  # starts at the end
        (-P, P),
    ],
)
def test_add_pages_einval_range(offset, length):
    """sgx_validate_offset_length() (ioctl.c): EINVAL, nothing charged."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 0, size=8 * P)
    with pytest.raises(SgxIoctlError) as ei:
        drive(ioctl.ioc_enclave_add_pages(h, t, e, offset, length))
    assert ei.value.errno == errno.EINVAL
    assert cur(h) == 2 and e.page_cnt == 1
    check_invariants(h, quiescent=True)


def test_add_pages_last_page_ok():
    """sgx_validate_offset_length() (ioctl.c): offset + length - 4096 < size is the bound: the last
    page fits."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 0, size=8 * P)
    assert drive(ioctl.ioc_enclave_add_pages(h, t, e, 7 * P, P)) == P
    assert e.desc[7] & DESC_PRESENT


def test_add_pages_einval_before_create_and_after_init():
    """sgx_ioc_enclave_add_pages() (ioctl.c): ADD_PAGES needs CREATED and not INITIALIZED."""
    h = mkhost()
    t = h.spawn("/a")
    e = ioctl.sgx_open(h, t)
    with pytest.raises(SgxIoctlError) as ei:
        drive(ioctl.ioc_enclave_add_pages(h, t, e, 0, P))
    assert ei.value.errno == errno.EINVAL
    e = build(h, t, 1, init=True)
    with pytest.raises(SgxIoctlError) as ei:
        drive(ioctl.ioc_enclave_add_pages(h, t, e, P, P))
    assert ei.value.errno == errno.EINVAL
    assert e.nr_added == 1


@pytest.mark.parametrize("ptype", [SGX_PAGE_TYPE_SECS, SGX_PAGE_TYPE_TRIM, 3])
def test_add_pages_einval_bad_type(ptype):
    """sgx_validate_secinfo() (ioctl.c): only REG and TCS pages can be added."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 0)
    with pytest.raises(SgxIoctlError) as ei:
        drive(ioctl.ioc_enclave_add_pages(h, t, e, 0, P, page_type=ptype))
    assert ei.value.errno == errno.EINVAL


def test_add_pages_enomem_count_zero_when_full_of_unreclaimable():
    """sgx_cgroup_try_charge() (epc_cgroup.c, v16 patch 9; the test_sgx case of v16 patch 16): limit
    = VA + SECS: the first page's charge fails with nothing reclaimable -> ENOMEM, count 0."""
    h = mkhost(limit=2)
    t = h.spawn("/a")
    e = build(h, t, 0)
    with pytest.raises(SgxIoctlError) as ei:
        drive(ioctl.ioc_enclave_add_pages(h, t, e, 0, 4 * P))
    assert ei.value.errno == errno.ENOMEM
    assert ei.value.count == 0
    assert cur(h) == 2 and e.page_cnt == 1
    assert h.sgx_cgroup_of("/a").nr_enomem == 1
    check_invariants(h, quiescent=True)


def test_add_pages_partial_enomem_at_va_boundary():
    """sgx_ioc_enclave_add_pages() (ioctl.c) with sync reclaim (sgx_cgroup_try_charge(),
    v16 patch 9; VA never on an LRU): limit 3 pages.  Each add evicts the previous page (sync
    reclaim); the 512th add needs a second VA page, whose charge finds nothing reclaimable (the new
    page is not on the LRU yet) -> ENOMEM, count = 511 pages; the content page is freed again; VA +
    SECS stay charged."""
    h = mkhost("4MiB", limit=3)
    t = h.spawn("/a")
    e = build(h, t, 0, size=4 << 20)
    with pytest.raises(SgxIoctlError) as ei:
        drive(ioctl.ioc_enclave_add_pages(h, t, e, 0, 600 * P))
    assert ei.value.errno == errno.ENOMEM
    assert ei.value.count == 511 * P
    assert e.nr_added == 511
    assert e.page_cnt == 512
    assert len(e.va_pages) == 1
    assert cur(h) == 2  # VA + SECS; every added page evicted
    assert e.nr_resident == 0 and e.nr_swapped == 511
    assert mem(h) == 511 * BACKING
    check_invariants(h, quiescent=True)


def test_add_pages_signal_pending_before_start_eintr():
    """sgx_ioc_enclave_add_pages() (ioctl.c): a pending signal before the first page -> ERESTARTSYS
    (EINTR), count 0; the fatal signal ends the process on return (enclave released)."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 0)
    t.signal_pending = True
    with pytest.raises(SgxIoctlError) as ei:
        drive(ioctl.ioc_enclave_add_pages(h, t, e, 0, 4 * P))
    assert ei.value.errno == errno.EINTR
    assert ei.value.count == 0
    assert e.nr_added == 0
    assert t.exited and t.exit_status == 128 + 15
    assert e.released and cur(h) == 0
    check_invariants(h, quiescent=True)


def test_add_pages_signal_mid_way_returns_partial_count():
    """sgx_ioc_enclave_add_pages() (ioctl.c): a signal after some pages stops the loop and returns
    the count."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 0)
    g = ioctl.ioc_enclave_add_pages(h, t, e, 0, 10 * P)
    for _ in range(3):
        assert next(g) == "cond_resched"  # one page added per turn
    t.signal_pending = True
    assert drive(g) == 3 * P
    assert e.nr_added == 3
    assert t.exited  # fatal signal delivered on return to user space


# --- EINIT ----------------------------------------------------------------------------------


def test_einit_einval_before_create_and_twice():
    """sgx_ioc_enclave_init() (ioctl.c): EINIT needs CREATED and not yet INITIALIZED."""
    h = mkhost()
    t = h.spawn("/a")
    e = ioctl.sgx_open(h, t)
    with pytest.raises(SgxIoctlError) as ei:
        ioctl.ioc_enclave_init(h, t, e)
    assert ei.value.errno == errno.EINVAL
    drive(ioctl.ioc_enclave_create(h, t, e, 1 << 20))
    assert ioctl.ioc_enclave_init(h, t, e) == 0
    assert e.flags & SGX_ENCL_INITIALIZED
    with pytest.raises(SgxIoctlError) as ei:
        ioctl.ioc_enclave_init(h, t, e)
    assert ei.value.errno == errno.EINVAL
    assert h.encls_count[L.EINIT] == 1


def test_secs_not_evicted_before_einit():
    """sgx_reclaimer_write() (main.c; the SECS is never on an LRU): SECS only goes after its last
    child once INITIALIZED."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 4)
    evict_all(h)
    assert e.nr_resident == 0
    assert e.secs_epc >= 0
    assert cur(h) == 2
    check_invariants(h, quiescent=True)


def test_secs_evicted_with_last_child_after_einit():
    """sgx_reclaimer_write() (main.c; the SECS is never on an LRU): after EINIT, evicting the last
    child EWBs and frees the SECS (uncharged, backing charged, one more VA slot)."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 4, init=True)
    evict_all(h)
    assert e.secs_epc < 0 and e.secs_va >= 0
    assert cur(h) == 1  # the VA page only
    assert e.va_all[0].used == 5
    assert mem(h) == 5 * BACKING
    assert h.encls_count[L.EWB] == 5
    check_invariants(h, quiescent=True)


# --- accessed bit ---------------------------------------------------------------------------


def test_access_sets_accessed_bit_returns_leading_hits():
    """sgx_reclaimer_age() input (main.c; the PTE accessed bit): every access to a resident page
    sets the accessed bit; sgx_encl_access returns the number of leading hits."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 8)
    assert not np.any(e.desc[:8] & DESC_ACCESSED)  # EADD leaves it clear
    evict(h, "/a", 1)  # isolates the whole LRU (8 <= 16): all evicted
    drive(ioctl.ioc_enclave_add_pages(h, t, e, 8 * P, 4 * P))
    # pages 8..11 resident, 0..7 evicted
    k = sgx_encl_access(e, np.array([8, 9, 3, 10], dtype=np.int64))
    assert k == 2
    assert e.desc[8] & DESC_ACCESSED and e.desc[9] & DESC_ACCESSED
    assert not e.desc[10] & DESC_ACCESSED  # after the miss: not touched
    assert sgx_encl_access(e, np.array([11], dtype=np.int64)) == 1
    assert e.desc[11] & DESC_ACCESSED
    assert sgx_encl_access(e, np.array([0], dtype=np.int64)) == 0
    assert sgx_encl_access(e, np.array([], dtype=np.int64)) == 0


def test_age_test_clears_accessed_and_rotates_young_pages():
    """sgx_reclaimer_age() in sgx_reclaim_pages() (main.c): young pages (accessed) are rotated to
    the LRU tail with the bit cleared; the others are evicted.  The next pass evicts the rotated
    ones."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 4)
    pages = e.epc[:4].tolist()
    r = drive(ioctl.encl_access(h, t, e, [0, 1]))
    assert r.done == 2 and r.faults == 0
    n = evict(h, "/a", 1)
    assert n == 4  # isolated, including the two young ones
    assert e.epc[2] < 0 and e.epc[3] < 0
    assert e.epc[0] >= 0 and e.epc[1] >= 0
    assert not e.desc[0] & DESC_ACCESSED and not e.desc[1] & DESC_ACCESSED
    assert h.sgx_cgroup_of("/a").lru.to_list() == pages[:2]
    evict(h, "/a", 1)
    assert e.nr_resident == 0
    check_invariants(h, quiescent=True)


def test_fault_clears_accessed_then_retried_access_sets_it():
    """sgx_vma_fault() (encl.c): the fault path clears the accessed bit after mapping the page; the
    retried access sets it."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 2)
    sgx_encl_access(e, np.array([0], dtype=np.int64))
    assert e.desc[0] & DESC_ACCESSED
    assert sgx_vma_fault(h, t, e, 0) == 0  # resident page: just (re)mapped
    assert not e.desc[0] & DESC_ACCESSED
    evict_all(h)
    r = drive(ioctl.encl_access(h, t, e, [1]))
    assert r.faults == 1 and r.done == 1
    assert e.desc[1] & DESC_ACCESSED
    # the fault alone (without the retried access) leaves it clear
    evict_all(h)
    assert sgx_vma_fault(h, t, e, 1) == 0
    assert e.epc[1] >= 0 and not e.desc[1] & DESC_ACCESSED


# --- fault path -------------------------------------------------------------------------------


def test_fault_eldu_reloads_and_recharges():
    """sgx_vma_fault() (encl.c) / sgx_encl_eldu() (NO_RECLAIM of v16 patch 1, charge of v16
    patch 5): fault on an evicted page: ELDU (NO_RECLAIM), charged, back on the LRU tail, backing
    returned to the memcg."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 4)
    evict_all(h)
    assert cur(h) == 2 and mem(h) == 4 * BACKING
    r = drive(ioctl.encl_access(h, t, e, [2]))
    assert (r.done, r.faults, r.retries, r.sigbus) == (1, 1, 0, False)
    assert h.encls_count[L.ELDU] == 1
    assert cur(h) == 3
    assert mem(h) == 3 * BACKING
    assert e.secs_child_cnt == 1
    assert h.sgx_cgroup_of("/a").lru.to_list() == [int(e.epc[2])]
    assert e.va[2] < 0
    check_invariants(h, quiescent=True)


def test_fault_loads_secs_first_when_evicted():
    """sgx_encl_load_secs() / sgx_encl_eldu() (encl.c): EINIT, evict all children -> SECS evicted
    and uncharged; one access then costs 2 ELDUs (SECS, then the page) and 2 charges."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 8, init=True)
    evict_all(h)
    assert e.secs_epc < 0 and cur(h) == 1
    r = drive(ioctl.encl_access(h, t, e, [3]))
    assert r.faults == 1 and not r.sigbus
    assert h.encls_count[L.ELDU] == 2
    assert e.secs_epc >= 0 and e.secs_va < 0
    assert cur(h) == 3
    assert mem(h) == 7 * BACKING  # 7 children still out; SECS backing returned
    assert e.va_all[0].used == 7
    # a second page: the SECS is already in, one ELDU
    drive(ioctl.encl_access(h, t, e, [4]))
    assert h.encls_count[L.ELDU] == 3
    check_invariants(h, quiescent=True)


def test_fault_frees_va_slot_and_moves_va_page_to_head():
    """sgx_encl_eldu() / sgx_free_va_slot() (encl.c): ELDU frees the page's VA slot and moves that
    VA page to the head of va_pages; a full VA page is rotated to the tail by EWB
    (sgx_alloc_va_slot() in sgx_reclaimer_write())."""
    h = mkhost("4MiB")
    t = h.spawn("/a")
    e = build(h, t, 600, size=4 << 20)  # page_cnt 601: VA pages 0 and 1
    assert list(e.va_pages) == [1, 0]
    cg = h.sgx_cgroup_of("/a")
    # evict 513 pages one batch at a time: VA page 1 fills (512 slots) then VA page 0
    while e.nr_swapped < 513:
        drive(sgx_reclaim_pages(h, cg, None))
    assert e.va_all[1].used == 512
    assert e.va_all[0].used == e.nr_swapped - 512
    assert list(e.va_pages) == [0, 1]  # full VA page 1 rotated to the tail
    victim = 0  # evicted first -> slot in VA page 1
    assert e.va[victim] // 512 == 1
    drive(ioctl.encl_access(h, t, e, [victim]))
    assert e.va[victim] < 0
    assert e.va_all[1].used == 511
    assert list(e.va_pages) == [1, 0]
    check_invariants(h, quiescent=True)


def full_with_evicted(h, t, n=8):
    """/a (limit n + 2) at its limit: VA + SECS + pages n..2n-1 resident, 0..n-1
    evicted."""
    e = build(h, t, n)
    evict_all(h)
    drive(ioctl.ioc_enclave_add_pages(h, t, e, n * P, n * P))
    assert cur(h) == n + 2
    assert e.nr_resident == n and e.nr_swapped == n
    return e


def test_fault_at_limit_retries_and_queues_async_work():
    """sgx_vma_fault() (encl.c) with sgx_cgroup_try_charge() (v16 patches 9, 10): at the limit the
    NO_RECLAIM charge fails with EBUSY (LRU not empty): VM_FAULT_NOPAGE -> the access yields
    'fault_retry' and the cgroup's work is queued (one max event per attempt); once the work
    reclaimed, the retried fault succeeds."""
    h = mkhost(limit=10)
    t = h.spawn("/a")
    e = full_with_evicted(h, t)
    cg = h.sgx_cgroup_of("/a")
    ev = events_local(h)
    g = ioctl.encl_access(h, t, e, [0])
    assert next(g) == "fault_retry"
    assert list(h.sgx_cg_wq) == [cg] and cg.work_pending
    assert events_local(h) == ev + 1
    assert cur(h) == 10
    assert h.encls_count[L.ELDU] == 0
    drive(sgx_cgroup_reclaim_work_func(h, cg))
    # limit 10 <= 128: threshold = limit; one 16-page pass takes all 8 resident pages
    assert not cg.work_pending and cur(h) == 2
    r = drive(g)
    assert (r.done, r.faults, r.retries, r.sigbus) == (1, 1, 1, False)
    assert e.epc[0] >= 0 and cur(h) == 3
    assert events_local(h) == ev + 1
    check_invariants(h, quiescent=True)


def test_fault_retry_loop_with_roundrobin_completes():
    """sgx_cgroup_reclaim_work_func() (epc_cgroup.c, v16 patch 10): the retrying fault is unblocked
    by the async worker run between (30 reclaimable pages: the worker's 16-page batch never empties
    the LRU)."""
    h = mkhost(limit=32)
    t = h.spawn("/a")
    e = full_with_evicted(h, t, 30)
    rr = RoundRobin(h)
    rr.add("t", ioctl.encl_access(h, t, e, [0, 1, 2]))
    rr.run(max_steps=1000)
    r = rr.results["t"]
    assert r.done == 3 and r.faults == 3 and r.retries >= 1 and not r.sigbus
    assert cur(h) <= 32
    check_invariants(h, quiescent=True)


def test_fault_sees_empty_lru_while_worker_holds_all_pages():
    """sgx_cgroup_lru_empty() in __sgx_cgroup_try_charge() (v16 patch 9) and the isolation loop of
    sgx_reclaim_pages() (main.c): isolated pages are off the LRU, so a charge that fails while a
    reclaimer holds every reclaimable page of the subtree finds the LRUs empty -> ENOMEM -> SIGBUS.
    (Faithful to the kernel's window: the emptiness test is list_empty() on the LRUs.)"""
    h = mkhost(limit=10)
    t = h.spawn("/a")
    e = full_with_evicted(h, t)
    cg = h.sgx_cgroup_of("/a")
    g = ioctl.encl_access(h, t, e, [0])
    assert next(g) == "fault_retry"
    w = sgx_cgroup_reclaim_work_func(h, cg)
    assert next(w) == "reclaim:isolated"  # all 8 resident pages isolated
    assert cg.lru.nr == 0
    r = drive(g)
    assert r.sigbus
    drive(w)
    assert e.released and cur(h) == 0
    check_invariants(h, quiescent=True)


def test_fault_max_retries_stops():
    """encl_access(max_retries=n) returns after n+1 retries of the same page; each
    retry is one more failed charge attempt (misc.events)."""
    h = mkhost(limit=10)
    t = h.spawn("/a")
    e = full_with_evicted(h, t)
    ev = events_local(h)
    r = drive(ioctl.encl_access(h, t, e, [0], max_retries=2))
    assert r.retries == 3 and r.done == 0 and not r.sigbus
    assert events_local(h) == ev + 3
    assert not t.exited


def test_fault_sigbus_when_nothing_reclaimable():
    """sgx_vma_fault() (encl.c) with sgx_cgroup_try_charge() (v16 patch 9): NO_RECLAIM charge fails
    with ENOMEM (subtree LRUs empty) -> SIGBUS; the process dies (128 + SIGBUS)."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 2)
    evict_all(h)
    h.fs.write("/a/misc.max", f"sgx_epc {2 * P}")  # = VA + SECS
    r = drive(ioctl.encl_access(h, t, e, [0]))
    assert r.sigbus and r.done == 0 and r.faults == 0
    assert t.exited and t.exit_status == 128 + 7
    assert e.released and cur(h) == 0 and mem(h) == 0
    check_invariants(h, quiescent=True)


def test_fault_sigbus_after_secs_reload_keeps_secs():
    """sgx_encl_load_secs() / sgx_encl_eldu() (encl.c): SECS reloaded (ELDU), then the page's charge
    fails with ENOMEM -> SIGBUS; the reloaded SECS stays resident without children (consistent
    state)."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 2, init=True)
    evict_all(h)
    assert cur(h) == 1
    h.fs.write("/a/misc.max", f"sgx_epc {2 * P}")
    assert sgx_vma_fault(h, t, e, 0) == VM_FAULT_SIGBUS
    assert h.encls_count[L.ELDU] == 1  # the SECS only
    assert e.secs_epc >= 0 and e.secs_child_cnt == 0 and e.epc[0] < 0
    assert cur(h) == 2
    check_invariants(h, quiescent=True)


def test_fault_on_page_being_reclaimed_retries():
    """sgx_vma_fault() (encl.c) (sgx_encl_load_page(): BEING_RECLAIMED -> EBUSY): a resident page
    with BEING_RECLAIMED (blocked, PTE zapped) faults with EBUSY -> retry; after write-back it is
    ELDU'ed."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 2)
    g = sgx_reclaim_pages(h, h.sgx_cgroup_of("/a"), None)
    assert next(g) == "reclaim:isolated"
    assert next(g) == "reclaim:aged"
    assert e.desc[0] & DESC_BEING_RECLAIMED
    # PTE still present before the block phase: the access hits
    assert sgx_encl_access(e, np.array([0], dtype=np.int64)) == 1
    assert next(g) == "reclaim:blocked"
    assert e.desc[0] & DESC_BLOCKED
    r = drive(ioctl.encl_access(h, t, e, [0], max_retries=0))
    assert r.retries == 1 and r.done == 0 and not r.sigbus
    assert drive(g) == 2
    r = drive(ioctl.encl_access(h, t, e, [0]))
    assert r.faults == 1 and h.encls_count[L.ELDU] == 1
    check_invariants(h, quiescent=True)


def test_fault_outside_enclave_sigbus():
    """A page index beyond the enclave size is SIGBUS (sgx_vma_fault's range check)."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 1, size=2 * P, init=True)
    r = drive(ioctl.encl_access(h, t, e, [2]))
    assert r.sigbus


# --- EAUG (SGX2) --------------------------------------------------------------------------------


def test_eaug_charges_page_then_va_page_when_due():
    """sgx_encl_eaug_page() (encl.c; NO_RECLAIM of v16 patch 1): fault on an absent page after EINIT
    (SGX2): EAUG; the page is charged, then a VA page when page_cnt % 512 == 0; the page goes on the
    LRU."""
    h = mkhost("4MiB")
    t = h.spawn("/a")
    e = build(h, t, 511, size=4 << 20, init=True)
    assert e.page_cnt == 512
    u = cur(h)
    r = drive(ioctl.encl_access(h, t, e, [600]))
    assert r.faults == 1 and r.done == 1 and not r.sigbus
    assert cur(h) == u + 2
    assert len(e.va_all) == 2 and e.page_cnt == 513
    assert h.encls_count[L.EAUG] == 1
    assert e.type[600] == SGX_PAGE_TYPE_REG
    assert e.desc[600] & DESC_PRESENT and e.desc[600] & DESC_ACCESSED
    assert h.sgx_cgroup_of("/a").lru.to_list()[-1] == int(e.epc[600])
    drive(ioctl.encl_access(h, t, e, [601]))
    assert cur(h) == u + 3 and len(e.va_all) == 2
    check_invariants(h, quiescent=True)


def test_eaug_va_charge_fails_at_limit_retry_frees_page():
    """sgx_encl_eaug_page() (encl.c) with sgx_cgroup_try_charge() (v16 patch 10): one page of room:
    the EAUG page is charged, the VA page's NO_RECLAIM charge fails (EBUSY) -> NOPAGE; the page is
    freed and uncharged, work queued."""
    h = mkhost("4MiB")
    t = h.spawn("/a")
    e = build(h, t, 511, size=4 << 20, init=True)
    u = cur(h)
    h.fs.write("/a/misc.max", f"sgx_epc {(u + 1) * P}")
    ev = events_local(h)
    r = drive(ioctl.encl_access(h, t, e, [600], max_retries=0))
    assert r.retries == 1 and r.faults == 0 and not r.sigbus
    assert cur(h) == u
    assert events_local(h) == ev + 1
    assert e.page_cnt == 512 and len(e.va_all) == 1
    assert not e.desc[600] & DESC_PRESENT
    assert h.encls_count[L.EAUG] == 0
    assert h.sgx_cgroup_of("/a").work_pending
    check_invariants(h, quiescent=True)


def test_eaug_before_einit_sigbus():
    """sgx_encl_eaug_page() (encl.c): EAUG needs an initialised enclave."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 1)
    r = drive(ioctl.encl_access(h, t, e, [5]))
    assert r.sigbus and h.encls_count[L.EAUG] == 0
    assert t.exit_status == 128 + 7


def test_no_sgx2_absent_page_sigbus():
    """sgx_encl_eaug_page() (encl.c): without SGX2 an absent page cannot be added on fault."""
    h = mkhost(sgx2=False)
    t = h.spawn("/a")
    e = build(h, t, 1, init=True)
    assert cur(h) == 3
    r = drive(ioctl.encl_access(h, t, e, [5]))
    assert r.sigbus and h.encls_count[L.EAUG] == 0
    assert t.exited and t.exit_status == 128 + 7
    assert cur(h) == 0


def test_eaug_loads_evicted_secs_first():
    """sgx_encl_eaug_page() (encl.c): EAUG with an evicted SECS reloads it first."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 2, init=True)
    evict_all(h)
    assert e.secs_epc < 0
    r = drive(ioctl.encl_access(h, t, e, [10]))
    assert r.faults == 1
    assert h.encls_count[L.ELDU] == 1 and h.encls_count[L.EAUG] == 1
    assert e.secs_epc >= 0 and cur(h) == 3
    check_invariants(h, quiescent=True)


# --- EDMM (SGX2) ----------------------------------------------------------------------------------


def test_trim_and_remove_frees_page_keeps_va_pages():
    """sgx_ioc_enclave_remove_pages() (ioctl.c; sgx_unmark_page_reclaimable(), v16 patch 7; VA pages
    stay): MODIFY_TYPES REG->TRIM then REMOVE_PAGES: EREMOVE + free + uncharge, page_cnt
    decremented, VA pages never freed."""
    h = mkhost("4MiB")
    t = h.spawn("/a")
    e = build(h, t, 512, size=4 << 20, init=True)
    assert e.page_cnt == 513 and len(e.va_all) == 2
    u = cur(h)
    assert drive(ioctl.ioc_enclave_modify_types(h, t, e, 510 * P, 2 * P, SGX_PAGE_TYPE_TRIM)) == (
        2 * P
    )
    assert e.type[510] == SGX_PAGE_TYPE_TRIM and e.type[511] == SGX_PAGE_TYPE_TRIM
    assert h.encls_count[L.EMODT] == 2
    er = h.encls_count[L.EREMOVE]
    assert drive(ioctl.ioc_enclave_remove_pages(h, t, e, 510 * P, 2 * P)) == 2 * P
    assert cur(h) == u - 2
    assert e.page_cnt == 511
    assert len(e.va_pages) == 2  # no VA page freed
    assert h.encls_count[L.EREMOVE] == er + 2
    assert not e.desc[510] & DESC_PRESENT and e.epc[510] < 0
    assert e.secs_child_cnt == 510
    assert h.nr_lru_pages == 510
    check_invariants(h, quiescent=True)


def test_removed_page_can_be_eaugmented_again():
    """sgx_ioc_enclave_remove_pages() / sgx_encl_eaug_page() (ioctl.c, encl.c): after removal the
    page is absent from page_array -> EAUG on fault."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 2, init=True)
    drive(ioctl.ioc_enclave_modify_types(h, t, e, P, P, SGX_PAGE_TYPE_TRIM))
    drive(ioctl.ioc_enclave_remove_pages(h, t, e, P, P))
    r = drive(ioctl.encl_access(h, t, e, [1]))
    assert r.faults == 1 and h.encls_count[L.EAUG] == 1
    check_invariants(h, quiescent=True)


def test_remove_non_trim_page_eperm():
    """sgx_encl_remove_pages() (ioctl.c): REMOVE_PAGES of a page that is not TRIM -> EPERM, count
    0."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 2, init=True)
    u = cur(h)
    with pytest.raises(SgxIoctlError) as ei:
        drive(ioctl.ioc_enclave_remove_pages(h, t, e, 0, P))
    assert ei.value.errno == errno.EPERM
    assert ei.value.count == 0
    assert cur(h) == u
    check_invariants(h, quiescent=True)


def test_remove_partial_count():
    """The EDMM loop stops at the first failing page; count = bytes done before it."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 3, init=True)
    drive(ioctl.ioc_enclave_modify_types(h, t, e, 0, P, SGX_PAGE_TYPE_TRIM))
    with pytest.raises(SgxIoctlError) as ei:
        drive(ioctl.ioc_enclave_remove_pages(h, t, e, 0, 2 * P))
    assert ei.value.errno == errno.EPERM
    assert ei.value.count == P
    assert not e.desc[0] & DESC_PRESENT
    check_invariants(h, quiescent=True)


@pytest.mark.parametrize(
    "call",
    [
        lambda h, t, e: ioctl.ioc_enclave_restrict_permissions(h, t, e, 0, P),
        lambda h, t, e: ioctl.ioc_enclave_modify_types(h, t, e, 0, P, SGX_PAGE_TYPE_TRIM),
        lambda h, t, e: ioctl.ioc_enclave_remove_pages(h, t, e, 0, P),
    ],
    ids=["restrict", "modify", "remove"],
)
def test_edmm_einval_before_einit_enodev_without_sgx2(call):
    """the EDMM ioctls (ioctl.c): EINVAL before EINIT; ENODEV without SGX2."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 1)
    with pytest.raises(SgxIoctlError) as ei:
        drive(call(h, t, e))
    assert ei.value.errno == errno.EINVAL
    h2 = mkhost(sgx2=False)
    t2 = h2.spawn("/a")
    e2 = build(h2, t2, 1, init=True)
    with pytest.raises(SgxIoctlError) as ei:
        drive(call(h2, t2, e2))
    assert ei.value.errno == errno.ENODEV


def test_edmm_einval_bad_range():
    """sgx_validate_offset_length() (ioctl.c): the EDMM ioctls validate offset/length like
    ADD_PAGES."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 1, size=8 * P, init=True)
    with pytest.raises(SgxIoctlError) as ei:
        drive(ioctl.ioc_enclave_restrict_permissions(h, t, e, 8 * P, P))
    assert ei.value.errno == errno.EINVAL


def test_modify_types_to_reg_einval():
    """ioctl.c: the only target types are TCS and TRIM."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 1, init=True)
    with pytest.raises(SgxIoctlError) as ei:
        drive(ioctl.ioc_enclave_modify_types(h, t, e, 0, P, SGX_PAGE_TYPE_REG))
    assert ei.value.errno == errno.EINVAL


def test_edmm_reclaim_direct_above_threshold():
    """sgx_reclaim_direct() (main.c, v16 patch 13): each EDMM page is preceded by
    sgx_reclaim_direct(): with the cgroup at its threshold (limit 64 <= 128: threshold = limit) a
    16-page pass runs first."""
    h = mkhost(limit=64)
    t = h.spawn("/a")
    e = build(h, t, 62, init=True)
    assert cur(h) == 64
    ewb = h.encls_count[L.EWB]
    drive(ioctl.ioc_enclave_modify_types(h, t, e, 61 * P, P, SGX_PAGE_TYPE_TRIM))
    assert h.encls_count[L.EWB] == ewb + 16
    assert e.nr_evicted == 16
    assert np.all(e.epc[:16] < 0)  # the LRU head
    assert cur(h) == 48
    # the backing of a direct reclaim is charged to current's memcg
    assert mem(h) == 16 * BACKING
    check_invariants(h, quiescent=True)


def test_edmm_reclaim_direct_before_every_page():
    """sgx_cgroup_should_reclaim() (v16 patch 10) in sgx_reclaim_direct() (v16 patch 13): limit 200
    > 128 -> threshold 168.  Usage 200: the direct pass before page 1 takes 16 (184), before page 2
    16 more (168, still >= 168), before page 3 16 more (152); page 4 finds usage below the
    threshold.  (Free EPC stays >= 32: no global pass.)"""
    h = mkhost(limit=200)
    t = h.spawn("/a")
    e = build(h, t, 198, init=True)
    assert cur(h) == 200
    drive(ioctl.ioc_enclave_modify_types(h, t, e, 190 * P, 4 * P, SGX_PAGE_TYPE_TRIM))
    assert h.encls_count[L.EWB] == 48
    assert cur(h) == 152
    assert np.all(e.epc[:48] < 0) and np.all(e.epc[48:198] >= 0)
    check_invariants(h, quiescent=True)


def test_edmm_no_reclaim_below_threshold():
    """sgx_cgroup_should_reclaim() (v16 patch 10) in sgx_reclaim_direct() (v16 patch 13): below the
    threshold sgx_reclaim_direct() does nothing."""
    h = mkhost(limit=100)
    t = h.spawn("/a")
    e = build(h, t, 62, init=True)
    drive(ioctl.ioc_enclave_modify_types(h, t, e, 0, 4 * P, SGX_PAGE_TYPE_TRIM))
    assert h.encls_count[L.EWB] == 0
    assert e.nr_evicted == 0


def test_restrict_permissions_loads_evicted_page():
    """sgx_encl_load_page() from the EDMM ioctls (NO_RECLAIM of v16 patch 1): the EDMM ioctls load
    an evicted page (NO_RECLAIM): SECS first."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 4, init=True)
    evict_all(h)
    assert drive(ioctl.ioc_enclave_restrict_permissions(h, t, e, 2 * P, P)) == P
    assert h.encls_count[L.ELDU] == 2  # SECS + page
    assert e.epc[2] >= 0
    assert h.encls_count[L.EMODPR] == 1
    assert int(e.epc[2]) in h.sgx_cgroup_of("/a").lru.to_list()
    check_invariants(h, quiescent=True)


def test_edmm_load_at_ancestor_limit_eagain():
    """sgx_reclaim_direct() (v16 patch 13), sgx_cgroup_should_reclaim() (v16 patch 10) and
    sgx_cgroup_try_charge() (v16 patch 9): the ancestor /a is full because of a sibling; the
    requester's own usage is far below the threshold, so sgx_reclaim_direct() does nothing; the
    NO_RECLAIM load gets EBUSY (its subtree has reclaimable pages) -> EAGAIN, count 0, and the
    requester's work is queued."""
    h = mkhost(limit=200)
    h.fs.write("/a/cgroup.subtree_control", "+misc")
    h.fs.mkdir("/a/c1")
    h.fs.mkdir("/a/c2")
    t1 = h.spawn("/a/c1")
    t2 = h.spawn("/a/c2")
    e1 = build(h, t1, 10, init=True)
    g = sgx_reclaim_pages(h, h.sgx_cgroup_of("/a/c1"), None)
    drive(g)  # all 10 out (the SECS too)
    drive(ioctl.encl_access(h, t1, e1, [1, 2]))  # two back in: c1 = VA+SECS+2
    assert cur(h, "/a/c1") == 4
    build(h, t2, 196 - 2)  # c2 = 196: /a at 200
    assert cur(h, "/a") == 200
    ewb = h.encls_count[L.EWB]
    with pytest.raises(SgxIoctlError) as ei:
        drive(ioctl.ioc_enclave_restrict_permissions(h, t1, e1, 0, P))
    assert ei.value.errno == errno.EAGAIN
    assert ei.value.count == 0
    assert h.encls_count[L.EWB] == ewb  # no direct reclaim ran
    assert h.sgx_cgroup_of("/a/c1").work_pending
    check_invariants(h, quiescent=True)


def test_modify_types_reg_to_tcs_requeues_on_lru():
    """sgx_enclave_modify_types() (ioctl.c; sgx_unmark/mark_page_reclaimable(), v16 patch 7):
    REG->TCS unmarks the page and marks it reclaimable again (tail)."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 3, init=True)
    drive(ioctl.ioc_enclave_modify_types(h, t, e, 0, P, SGX_PAGE_TYPE_TCS))
    assert e.type[0] == SGX_PAGE_TYPE_TCS
    assert h.sgx_cgroup_of("/a").lru.to_list() == e.epc[[1, 2, 0]].tolist()
    check_invariants(h, quiescent=True)


def test_modify_types_disallowed_transition_einval():
    """ioctl.c sgx_enclave_modify_types(): only REG->{TCS,TRIM} and TCS->TRIM."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 1, init=True)
    drive(ioctl.ioc_enclave_modify_types(h, t, e, 0, P, SGX_PAGE_TYPE_TRIM))
    with pytest.raises(SgxIoctlError) as ei:
        drive(ioctl.ioc_enclave_modify_types(h, t, e, 0, P, SGX_PAGE_TYPE_TRIM))
    assert ei.value.errno == errno.EINVAL


def test_restrict_permissions_on_tcs_page_einval():
    """ioctl.c sgx_enclave_restrict_permissions(): only REG pages."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 1, init=True, page_type=SGX_PAGE_TYPE_TCS)
    with pytest.raises(SgxIoctlError) as ei:
        drive(ioctl.ioc_enclave_restrict_permissions(h, t, e, 0, P))
    assert ei.value.errno == errno.EINVAL
    assert h.encls_count[L.EMODPR] == 0


# --- release ----------------------------------------------------------------------------------


def test_exit_releases_everything():
    """sgx_encl_release() (encl.c) and sgx_free_epc_page() (uncharge of v16 patch 5): process exit
    drops the mm and file references -> release: every resident page, the SECS and all VA pages are
    EREMOVEd and uncharged; the backing of evicted pages goes back to the memcg."""
    h = mkhost("4MiB", limit=300)
    t = h.spawn("/a")
    e = build(h, t, 600, size=4 << 20, init=True)
    assert len(e.va_all) == 2
    assert e.nr_swapped > 0 and e.nr_resident > 0
    assert mem(h) > 0
    used = h.epc.nr_pages - h.epc.nr_free_pages
    er = h.encls_count[L.EREMOVE]
    task_exit(h, t)
    assert e.released
    assert cur(h) == 0 and cur(h, "/") == 0
    assert mem(h) == 0 and h.memcg_root.usage == 0
    assert h.epc.nr_free_pages == h.epc.nr_pages
    assert h.encls_count[L.EREMOVE] - er == used
    assert h.nr_lru_pages == 0
    assert t.backing_bytes == 0
    assert not e.va_pages
    check_invariants(h, quiescent=True)


def test_exit_releases_with_secs_evicted():
    """sgx_encl_release() (encl.c): release with the SECS evicted returns its backing too."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 8, init=True)
    evict_all(h)
    assert mem(h) == 9 * BACKING
    task_exit(h, t, 0)
    assert e.released and cur(h) == 0 and mem(h) == 0
    assert t.exit_status == 0
    check_invariants(h, quiescent=True)


def test_release_deferred_while_reclaimer_holds_pages():
    """sgx_encl_release() (encl.c; the reclaimer's kref): the reclaimer holds an enclave reference
    per isolated page; the enclave is released when the last one is dropped, in the reclaimer."""
    h = mkhost()
    t = h.spawn("/a")
    e = build(h, t, 20)
    g = sgx_reclaim_pages(h, h.sgx_cgroup_of("/a"), None)
    assert next(g) == "reclaim:isolated"
    task_exit(h, t)
    assert not e.released
    assert e.refcount == 16
    check_invariants(h)  # not quiescent: isolated pages exist
    drive(g)
    assert e.released
    assert cur(h) == 0 and mem(h) == 0
    assert h.epc.nr_free_pages == h.epc.nr_pages
    check_invariants(h, quiescent=True)


def test_release_when_last_reference_goes_file_then_mm():
    """sgx_encl_release() (encl.c): the enclave lives while the file or any mm holds it."""
    h = mkhost()
    t1 = h.spawn("/a")
    t2 = h.spawn("/a")
    e = build(h, t1, 4)
    from epcsim.kernel.encl import sgx_encl_mm_add

    sgx_encl_mm_add(h, e, t2)  # t2 maps it too
    task_exit(h, t1)
    assert not e.released and cur(h) == 6
    task_exit(h, t2)
    assert e.released and cur(h) == 0
    check_invariants(h, quiescent=True)


# --- migration ("Migration" in sgx.rst, v16 patch 15) ---------------------------------------------


def test_migration_charges_stay_reload_charges_new_cgroup():
    """The "Migration" section of sgx.rst (v16 patch 15), sgx_mark_page_reclaimable() (v16 patch 7):
    charges never move with the task; a page loaded back after the move is charged to (and tracked
    on the LRU of) the new cgroup."""
    h = mkhost()
    h.fs.mkdir("/b")
    t = h.spawn("/a")
    e = build(h, t, 6)
    h.fs.write("/b/cgroup.procs", str(t.pid))
    assert t.cgroup.path == "/b"
    assert cur(h, "/a") == 8 and cur(h, "/b") == 0
    evict_all(h, "/a")
    assert cur(h, "/a") == 2
    drive(ioctl.encl_access(h, t, e, [0, 1]))
    assert cur(h, "/a") == 2 and cur(h, "/b") == 2
    lru_b = h.sgx_cgroup_of("/b").lru.to_list()
    assert lru_b == e.epc[[0, 1]].tolist()
    assert h.sgx_cgroup_of("/a").lru.nr == 0
    # new pages also go to /b; VA/SECS stay on /a until release
    drive(ioctl.ioc_enclave_add_pages(h, t, e, 10 * P, P))
    assert cur(h, "/b") == 3
    task_exit(h, t)
    assert cur(h, "/a") == 0 and cur(h, "/b") == 0
    check_invariants(h, quiescent=True)


def test_migration_rmdir_old_cgroup_keeps_charges_reclaimable():
    """sgx_cgroup_misc_free() (v16 patch 9; each EPC page pins its css, v16 patch 5): an rmdir'ed
    cgroup with charged pages stays (offline), its pages remain reclaimable, and it is freed when
    the last page goes."""
    h = mkhost()
    h.fs.mkdir("/b")
    t = h.spawn("/a")
    e = build(h, t, 4)
    h.fs.write("/b/cgroup.procs", str(t.pid))
    old = h.sgx_cgroup_of("/a")
    h.fs.rmdir("/a")
    assert not h.fs.exists("/a")
    drive(sgx_cgroup_reclaim_pages(h, h.sgx_cg_root, None, 16))
    assert e.nr_resident == 0 and old.lru.nr == 0
    check_invariants(h, quiescent=True)
    task_exit(h, t)
    assert old.cg.freed
    assert h.misc.root.usage == 0
    check_invariants(h, quiescent=True)


# --- footprint ------------------------------------------------------------------------------------


def test_encl_state_at_most_16_bytes_per_page():
    """DESIGN data layout: per-enclave-page arrays <= 16 bytes per page."""
    h = mkhost("4MiB")
    t = h.spawn("/a")
    e = build(h, t, 0, size=1 << 30)
    assert e.npages == 262144
    assert e.nbytes() / e.npages <= 16
