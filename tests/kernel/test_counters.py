"""Model statistics the summary and the stuck rule read: per enclave the SECS's ELDUs and
EWBs apart from its pages'; per cgroup ``nr_freed``, the pages freed in its subtree,
raised at every level by each free path (sgx_free_epc_page(), the reclaimer's write-back
batch, the bulk free of sgx_encl_release())."""

from __future__ import annotations

from epcsim.kernel import Host, drive, ioctl, task_exit
from epcsim.kernel import encls as L
from epcsim.kernel.encl import sgx_vma_fault
from epcsim.kernel.epc_cgroup import sgx_cgroup_reclaim_pages

P = 4096


def mkhost() -> Host:
    h = Host("1MiB")
    h.fs.write("/cgroup.subtree_control", "+misc +memory")
    h.fs.mkdir("/a")
    h.fs.write("/a/cgroup.subtree_control", "+misc +memory")
    h.fs.mkdir("/a/b")
    h.fs.mkdir("/c")
    return h


def freed(h: Host, path: str) -> int:
    return h.sgx_cgroup_of(path).nr_freed


def test_nr_freed_counts_every_free_in_the_subtree_at_every_level() -> None:
    h = mkhost()
    t = h.spawn("/a/b")
    e = ioctl.sgx_open(h, t)
    drive(ioctl.ioc_enclave_create(h, t, e, 1 << 20))
    drive(ioctl.ioc_enclave_add_pages(h, t, e, 0, 8 * P))
    ioctl.ioc_enclave_init(h, t, e)
    assert [freed(h, p) for p in ("/", "/a", "/a/b", "/c")] == [0, 0, 0, 0]
    # the reclaimer's batch: 8 pages written back, then the SECS (sgx_free_epc_page())
    sgx_b = h.sgx_cgroup_of("/a/b")
    while sgx_b.lru.nr:
        drive(sgx_cgroup_reclaim_pages(h, sgx_b, None, 16))
    assert (e.nr_evicted, e.nr_secs_evicted) == (8, 1)
    assert h.encls_count[L.EWB] == 9
    assert [freed(h, p) for p in ("/", "/a", "/a/b", "/c")] == [9, 9, 9, 0]
    # a fault reloads the SECS, then the page: two ELDUs, one of them the SECS's
    assert sgx_vma_fault(h, t, e, 3) == 0
    assert (e.nr_eldu, e.nr_secs_eldu) == (2, 1)
    assert h.encls_count[L.ELDU] == 2
    # exit: release frees the SECS, the page and the VA page (bulk and one by one)
    task_exit(h, t)
    assert h.sgx_cgroup_of("/a/b").nr_pages == 0
    assert [freed(h, p) for p in ("/", "/a", "/a/b", "/c")] == [12, 12, 12, 0]


def test_nr_freed_of_a_sibling_does_not_move() -> None:
    h = mkhost()
    tb, tc = h.spawn("/a/b"), h.spawn("/c")
    for t in (tb, tc):
        e = ioctl.sgx_open(h, t)
        drive(ioctl.ioc_enclave_create(h, t, e, 1 << 20))
        drive(ioctl.ioc_enclave_add_pages(h, t, e, 0, 4 * P))
    task_exit(h, tc)
    # /c's enclave: 4 pages, the SECS and its VA page
    assert [freed(h, p) for p in ("/", "/a", "/a/b", "/c")] == [6, 0, 0, 6]
    assert h.sgx_cgroup_of("/a/b").nr_pages == 6
