"""The ``memcg-iter`` baseline (epcsim.policies.memcg_iter): rounds over every cgroup of
the subtree in preorder, ``lru_size >> priority`` pages from each, priority 12 down to 0,
derived by hand on a small tree (every page old, so every page taken is evicted and the
LRU shrinks by exactly what was taken)."""

from __future__ import annotations

from epcsim import policies
from epcsim.kernel import Host, check_invariants, drive, ioctl
from epcsim.kernel.constants import PAGE_SIZE
from epcsim.kernel.epc_cgroup import sgx_cgroup_reclaim_pages
from epcsim.policies.memcg_iter import DEF_PRIORITY, MemcgIterPolicy


def new_enclave(h: Host, task, npages: int):
    e = ioctl.sgx_open(h, task)
    drive(ioctl.ioc_enclave_create(h, task, e, 1 << 20))
    drive(ioctl.ioc_enclave_add_pages(h, task, e, 0, npages * PAGE_SIZE))
    return e


def run(gen):
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def tree() -> tuple[Host, MemcgIterPolicy]:
    """/p (no pages of its own) with children /p/x (40 pages on its LRU) and /p/y (100)."""
    h = Host("16MiB")
    h.fs.write("/cgroup.subtree_control", "+misc")
    pol = policies.make("memcg-iter")
    assert isinstance(pol, MemcgIterPolicy)
    h.policy = pol
    pol.attach(h)
    h.fs.mkdir("/p")
    h.fs.write("/p/cgroup.subtree_control", "+misc")
    h.fs.mkdir("/p/x")
    h.fs.mkdir("/p/y")
    new_enclave(h, h.spawn("/p/x"), 40)
    new_enclave(h, h.spawn("/p/y"), 100)
    pol.trace = []
    return h, pol


def test_the_priority_sequence_of_one_call() -> None:
    """nr_to_scan 16 from /p.  Priorities 12..7: 40 >> p = 100 >> p = 0, nothing.
    6: x 40>>6 = 0, y 100>>6 = 1 (total 1, short).  5: x 40>>5 = 1, y 99>>5 = 3 (5).
    4: x 39>>4 = 2, y 96>>4 = 6 (13).  3: x 37>>3 = 4, y 90>>3 = 11 (28 >= 16: done)."""
    h, pol = tree()
    assert DEF_PRIORITY == 12
    p, x, y = (h.sgx_cgroup_of(c) for c in ("/p", "/p/x", "/p/y"))
    got = run(sgx_cgroup_reclaim_pages(h, p, None, 16))
    assert got == 28
    assert pol.trace == [
        (6, "/p/y", 1),
        (5, "/p/x", 1),
        (5, "/p/y", 3),
        (4, "/p/x", 2),
        (4, "/p/y", 6),
        (3, "/p/x", 4),
        (3, "/p/y", 11),
    ]
    assert x.lru.nr == 40 - 7 and y.lru.nr == 100 - 21
    assert x.nr_evicted == 7 and y.nr_evicted == 21
    assert pol.counters(h) == {"pages_scanned": {"/p/x": 7, "/p/y": 21}}
    assert (x.nr_scanned, y.nr_scanned, p.nr_scanned) == (7, 21, 0)  # per-tenant
    assert p.next_cg is p  # the series' cursor is never used
    check_invariants(h, quiescent=True)


def test_one_lruvec_stops_at_the_request_and_chunks_are_batches() -> None:
    """nr_to_scan 1 from /p/y alone: 12..7 nothing, 6: 100>>6 = 1 page: done.  From /p
    with nr_to_scan 40: as in the test above to priority 3 (28 taken, short), then
    priority 2: x 33>>2 = 8, y 79>>2 = 19 in chunks of 16 and 3 (each a batch): 55."""
    h, pol = tree()
    y = h.sgx_cgroup_of("/p/y")
    assert run(sgx_cgroup_reclaim_pages(h, y, None, 1)) == 1
    assert pol.trace == [(6, "/p/y", 1)]

    h, pol = tree()
    p = h.sgx_cgroup_of("/p")
    got = run(sgx_cgroup_reclaim_pages(h, p, None, 40))
    assert pol.trace[7:] == [(2, "/p/x", 8), (2, "/p/y", 16), (2, "/p/y", 3)]
    assert got == 28 + 8 + 19
    check_invariants(h, quiescent=True)
