"""The ``mglru-memcg`` baseline (epcsim.policies.mglru_memcg): cgroups in an old and a
young generation of MEMCG_NR_BINS bins each, global reclaim from the head of a random old
bin, moves to the young generation on reclaim and on a fault, the generation swap.  With
seed 7 the policy's draws (numpy default_rng(7).integers(8)) are, in order:
7, 5, 5, 7, 4, 6, 6, 1, 0, 2, 2, 6, 7, 0, 3, 6, 1, 6, 0, 3."""

from __future__ import annotations

import numpy as np

from epcsim import policies
from epcsim.kernel import Host, check_invariants, drive, ioctl
from epcsim.kernel.constants import PAGE_SIZE
from epcsim.kernel.epc_cgroup import sgx_cgroup_reclaim_pages
from epcsim.kernel.reclaim import sgx_reclaim_pages, sgx_reclaim_pages_global
from epcsim.policies.mglru_memcg import MEMCG_NR_BINS, MglruMemcgPolicy


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


def new_host() -> tuple[Host, MglruMemcgPolicy]:
    h = Host("16MiB")
    h.fs.write("/cgroup.subtree_control", "+misc")
    pol = policies.make("mglru-memcg", seed=7)
    assert isinstance(pol, MglruMemcgPolicy)
    h.policy = pol
    pol.attach(h)
    return h, pol


def test_the_draws_of_seed_7() -> None:
    r = np.random.default_rng(7)
    assert [int(r.integers(MEMCG_NR_BINS)) for _ in range(20)] == [
        7, 5, 5, 7, 4, 6, 6, 1, 0, 2, 2, 6, 7, 0, 3, 6, 1, 6, 0, 3,
    ]  # fmt: skip


def test_bins_generations_and_the_swap() -> None:
    h, pol = new_host()
    for c in ("/a", "/b", "/c"):
        h.fs.mkdir(c)
        new_enclave(h, h.spawn(c), 20)
    root, a, b, c = (h.sgx_cgroup_of(x) for x in ("/", "/a", "/b", "/c"))
    assert MEMCG_NR_BINS == 8
    # placed in id order into the old generation (0): root 7, a 5, b 5, c 7
    pol._sync(h)
    assert pol.where == {root: (0, 7), a: (0, 5), b: (0, 5), c: (0, 7)}
    assert list(pol.bins[0][5]) == [a, b] and list(pol.bins[0][7]) == [root, c]
    # a fault in b moves it to the young generation (draw 4); a second one changes nothing
    pol.faulted(h, b)
    pol.faulted(h, b)
    assert pol.where[b] == (1, 4) and list(pol.bins[0][5]) == [a]

    # global reclaim of 16: bin 6 (draw) is empty, 7 holds root first: root goes young
    # (draw 6) with nothing to reclaim; bin 1 (draw) .. 5: a, young (draw 0), 16 pages
    assert run(sgx_reclaim_pages_global(h, None)) == 16
    assert pol.where == {root: (1, 6), a: (1, 0), b: (1, 4), c: (0, 7)}
    assert a.nr_evicted == 16 and c.nr_evicted == 0
    # bin 2 (draw) .. 7: c, young (draw 2), 16 pages; the old generation is empty
    assert run(sgx_reclaim_pages_global(h, None)) == 16
    assert c.nr_evicted == 16 and pol.where[c] == (1, 2) and not any(pol.bins[0])
    assert pol.nr_swaps == 0

    # the next reclaim swaps: generation 1 is old.  Bin 6 (draw): root, young in 0
    # (draw 7), nothing; bin 0 (draw): a, young (draw 3), its 4 pages; bin 6 (draw) ..
    # 2: c, young (draw 1), 4 pages; bin 6 (draw) .. 4: b, young (draw 0), 16 of 20
    assert run(sgx_reclaim_pages_global(h, None)) == 24
    assert pol.old == 1 and pol.nr_swaps == 1
    assert pol.where == {root: (0, 7), a: (0, 3), b: (0, 0), c: (0, 1)}
    assert (a.nr_evicted, b.nr_evicted, c.nr_evicted) == (20, 16, 20)
    assert pol.counters(h) == {
        "pages_scanned": {},
        "generation_swaps": 1,
        "global_batches": {"/a": 2, "/c": 2, "/b": 1},
    }
    check_invariants(h, quiescent=True)


def test_a_resolved_fault_moves_its_cgroup_young() -> None:
    """sgx_vma_fault() tells the policy: /a's page 0, evicted, is loaded back (ELDU) and
    /a leaves the old generation (draws: root 7, a 5, then 5 for the move)."""
    h, pol = new_host()
    h.fs.mkdir("/a")
    t = h.spawn("/a")
    e = new_enclave(h, t, 20)
    a = h.sgx_cgroup_of("/a")
    pol._sync(h)
    assert pol.where[a] == (0, 5)
    run(sgx_reclaim_pages(h, a, None))  # the series' batch: pages 0..15 evicted
    assert e.epc[0] < 0 and pol.where[a] == (0, 5)
    res = drive(ioctl.encl_access(h, t, e, [0]))
    assert res.faults == 1
    assert pol.where[a] == (1, 5)
    check_invariants(h, quiescent=True)


def test_limit_reclaim_is_memcg_iter() -> None:
    """Rooted below the root the policy runs memcg-iter: one call of 16 on /a with 40
    pages: 12..6 nothing (40 >> 6 = 0), then 40>>5 = 1, 39>>4 = 2, 37>>3 = 4, 33>>2 = 8
    (15, short) and 25>>1 = 12 (27)."""
    h, pol = new_host()
    h.fs.mkdir("/a")
    new_enclave(h, h.spawn("/a"), 40)
    a = h.sgx_cgroup_of("/a")
    pol.trace = []
    assert run(sgx_cgroup_reclaim_pages(h, a, None, 16)) == 27
    assert pol.trace == [(5, "/a", 1), (4, "/a", 2), (3, "/a", 4), (2, "/a", 8), (1, "/a", 12)]
    assert pol.where == {}  # the memcg LRU is for global reclaim only
