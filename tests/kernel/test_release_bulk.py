"""sgx_encl_release()'s bulk page loop leaves exactly the state of the page-by-page loop."""

from __future__ import annotations

import numpy as np
import pytest

from epcsim.kernel import Host, check_invariants, drive, ioctl, task_exit
from epcsim.kernel import encl as encl_mod
from epcsim.kernel.constants import PAGE_SIZE
from epcsim.kernel.reclaim import sgx_reclaim_pages


def _state(h: Host) -> dict:
    pool = h.epc
    out = {
        "i32": pool.i32.copy(),
        "u8": pool.u8.copy(),
        "cg": pool.cg.copy(),
        "free": [(f.head, f.tail, f.nr) for f in pool.free_lists],
        "nr_free": pool.nr_free_pages,
        "nr_lru": h.nr_lru_pages,
        "encls": list(h.encls_count),
        "cgroups": [
            (s.lru.head, s.lru.tail, s.lru.nr, s.nr_pages, s.cg.usage, s.cg.refcnt)
            for s in h.sgx_cgroups
            if s is not None
        ],
        "memcg": [m.usage for m in h.memcgs],
    }
    return out


def _run(bulk: bool, monkeypatch, *, npages: int, epc: str, other: bool, evict: int = 3) -> dict:
    if not bulk:
        monkeypatch.setattr(encl_mod, "_sgx_encl_release_pages_bulk", lambda *a: False)
    h = Host(epc)
    h.fs.write("/cgroup.subtree_control", "+misc +memory")
    h.fs.mkdir("/a")
    t = h.spawn("/a")
    e = ioctl.sgx_open(h, t)
    drive(ioctl.ioc_enclave_create(h, t, e, 1 << 22))
    drive(ioctl.ioc_enclave_add_pages(h, t, e, 0, npages * PAGE_SIZE))
    ioctl.ioc_enclave_init(h, t, e)
    for _ in range(evict):  # some pages evicted, some rotated
        drive(sgx_reclaim_pages(h, h.sgx_cgroup_of("/a"), None))
    drive(ioctl.encl_access(h, t, e, np.arange(npages)[::-3]))
    if other:  # a second enclave in the same cgroup: its pages stay on the LRU
        t2 = h.spawn("/a")
        e2 = ioctl.sgx_open(h, t2)
        drive(ioctl.ioc_enclave_create(h, t2, e2, 1 << 20))
        drive(ioctl.ioc_enclave_add_pages(h, t2, e2, 0, 8 * PAGE_SIZE))
    task_exit(h, t)
    check_invariants(h)
    return _state(h)


@pytest.mark.parametrize(
    "npages, epc, other",
    [(300, "4MiB", False), (100, "1MiB", True), (900, "8MiB", False)],
)
def test_bulk_release_equals_page_loop(monkeypatch, npages, epc, other) -> None:
    with monkeypatch.context() as m:
        loop = _run(False, m, npages=npages, epc=epc, other=other)
    bulk = _run(True, monkeypatch, npages=npages, epc=epc, other=other)
    assert loop.keys() == bulk.keys()
    for k in loop:
        if isinstance(loop[k], np.ndarray):
            assert np.array_equal(loop[k], bulk[k]), k
        else:
            assert loop[k] == bulk[k], k


def test_bulk_release_is_used(monkeypatch) -> None:
    calls = []
    real = encl_mod._sgx_encl_release_pages_bulk
    monkeypatch.setattr(
        encl_mod, "_sgx_encl_release_pages_bulk", lambda *a: calls.append(1) or real(*a)
    )
    _run(True, monkeypatch, npages=300, epc="4MiB", other=False)
    assert calls
