"""Who reclaimed each page: the model counters on ``struct sgx_cgroup`` and the enclave
(``nr_reclaimed_by``, ``nr_scanned``, ``nr_rotated``; in the model, not in the kernel),
filled by ``sgx_reclaim_pages()`` (main.c) under the caller passed down from ksgxd()
(v16 patch 14), sgx_cgroup_reclaim_work_func() (patch 10), the DO_RECLAIM loop of
sgx_cgroup_try_charge() (patch 9) and sgx_reclaim_direct() (patch 13)."""

from __future__ import annotations

from epcsim.kernel import Host, check_invariants, drive, ioctl
from epcsim.kernel.constants import PAGE_SIZE, SGX_DO_RECLAIM
from epcsim.kernel.epc_cgroup import (
    RECLAIM_ASYNC,
    RECLAIM_DIRECT,
    RECLAIM_KSGXD,
    RECLAIM_SYNC,
    RECLAIMERS,
    sgx_cgroup_reclaim_work_func,
    sgx_cgroup_try_charge,
    sgx_cgroup_uncharge,
)
from epcsim.kernel.reclaim import ksgxd_step, sgx_reclaim_direct, sgx_reclaim_pages


def _host(epc: str = "16MiB") -> Host:
    h = Host(epc)
    h.fs.write("/cgroup.subtree_control", "+misc +memory")
    return h


def _cg(h: Host, path: str, max_pages: int | None = None):
    h.fs.mkdir(path)
    if max_pages is not None:
        h.fs.write(path + "/misc.max", f"sgx_epc {max_pages * PAGE_SIZE}")
    return h.sgx_cgroup_of(path)


def _enclave(h: Host, task, npages: int):
    """An enclave with *npages* EADDed pages (charged: + 1 SECS + 1 VA page)."""
    e = ioctl.sgx_open(h, task)
    drive(ioctl.ioc_enclave_create(h, task, e, 1 << 20))
    drive(ioctl.ioc_enclave_add_pages(h, task, e, 0, npages * PAGE_SIZE))
    return e


def _split(**kw: int) -> list[int]:
    return [kw.get(name, 0) for name in RECLAIMERS]


def test_reclaimer_indices_and_names() -> None:
    assert (RECLAIM_KSGXD, RECLAIM_ASYNC, RECLAIM_SYNC, RECLAIM_DIRECT) == (0, 1, 2, 3)
    assert RECLAIMERS == ("ksgxd", "async", "sync", "direct")


def test_batch_counts_scanned_rotated_and_evicted_under_its_caller() -> None:
    """10 pages on the LRU, 4 of them young: phase 1 isolates 10 (scanned), phase 2 puts
    the 4 young ones back (rotated), phase 4 writes back 6, counted against the cgroup
    and the enclave under the caller (direct here)."""
    h = _host()
    a = _cg(h, "/a")
    t = h.spawn("/a")
    e = _enclave(h, t, 10)
    drive(ioctl.encl_access(h, t, e, range(4)))
    assert drive(sgx_reclaim_pages(h, a, None, by=RECLAIM_DIRECT)) == 10
    assert (a.nr_scanned, a.nr_rotated, a.nr_evicted) == (10, 4, 6)
    assert a.nr_reclaimed_by == _split(direct=6)
    assert e.nr_reclaimed_by == _split(direct=6) and e.nr_evicted == 6
    # the next batch: the 4 rotated pages, no longer young
    assert drive(sgx_reclaim_pages(h, a, None, by=RECLAIM_SYNC)) == 4
    assert (a.nr_scanned, a.nr_rotated) == (14, 4)
    assert a.nr_reclaimed_by == _split(direct=6, sync=4)
    assert e.nr_reclaimed_by == _split(direct=6, sync=4)
    check_invariants(h, quiescent=True)


def test_ksgxd_counts_under_ksgxd_on_each_cgroup_it_took_from() -> None:
    """One ksgxd iteration (v16 patch 14): a 16-page global reclaim from the root: the
    root's 10 pages, then 16 of /A's (the batch is not split): 10 + 16 under ksgxd."""
    h = _host("1MiB")  # 256 pages
    root = h.sgx_cg_root
    A = _cg(h, "/A")
    B = _cg(h, "/B")
    _enclave(h, h.spawn("/"), 10)
    ea = _enclave(h, h.spawn("/A"), 100)
    _enclave(h, h.spawn("/B"), 100)
    assert drive(ksgxd_step(h)) is True
    assert root.nr_reclaimed_by == _split(ksgxd=10)
    assert A.nr_reclaimed_by == _split(ksgxd=16) and ea.nr_reclaimed_by == _split(ksgxd=16)
    assert B.nr_reclaimed_by == _split() and B.nr_scanned == 0
    assert (root.nr_scanned, A.nr_scanned) == (10, 16)


def test_async_sync_and_direct_reclaim_count_under_their_caller() -> None:
    """/c at its limit of 20 pages (18 enclave pages + SECS + VA): the work function
    reclaims one 16-page batch (usage 20 -> 4 < 20), the DO_RECLAIM charge loop one batch
    (nr_to_scan 1, a whole batch of 16 isolated), sgx_reclaim_direct() one 16-page
    cgroup pass (free pages stay above SGX_NR_LOW_PAGES: no global pass)."""
    for caller, run in (
        ("async", lambda h, t, c: drive(sgx_cgroup_reclaim_work_func(h, c))),
        ("sync", lambda h, t, c: drive(sgx_cgroup_try_charge(h, t, c, SGX_DO_RECLAIM))),
        ("direct", lambda h, t, c: drive(sgx_reclaim_direct(h, t))),
    ):
        h = _host()
        c = _cg(h, "/c", 20)
        t = h.spawn("/c")
        e = _enclave(h, t, 18)
        assert c.cg.usage == 20 * PAGE_SIZE
        ret = run(h, t, c)
        if caller == "sync":
            assert ret == 0  # charged after the batch
            sgx_cgroup_uncharge(h, c)
        assert c.nr_reclaimed_by == _split(**{caller: 16}), caller
        assert e.nr_reclaimed_by == _split(**{caller: 16}), caller
        assert (c.nr_scanned, c.nr_rotated, c.nr_evicted) == (16, 0, 16)
        assert c.cg.usage == 4 * PAGE_SIZE
