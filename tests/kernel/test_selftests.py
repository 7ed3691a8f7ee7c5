"""The kernel selftests of the series (v16 patch 16 "selftests/sgx: Add scripts for EPC cgroup
testing") replayed on the model.

``run_epc_cg_selftests.sh`` is replayed by
:func:`epcsim.programs.kselftest.run_epc_cg_selftests`, whose concurrent processes run in
a lockstep round-robin interleave (one yield point each per turn), so every outcome is
deterministic and the exit statuses are pinned here.  Exit statuses: 0 pass, 1 an ioctl
failed (the harness assertion), 135 SIGBUS, 137 SIGKILL (memcg OOM), 143 SIGTERM (the
Test E kill).

Also checked: the per-process page arithmetic of ``test_sgx -t unclobbered_vdso_oversubscribed``
(the workload of the script) and the worked example for the EPC capacity of the v12 test run
reported on the list (C = 98,566,144 bytes), computed from the formulas the replay writes to
cgroupfs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from epcsim.kernel import Host, check_invariants, drive
from epcsim.kernel import ioctl as sgx_ioctl
from epcsim.kernel.cgroupfs import CgroupFs
from epcsim.kernel.constants import (
    PAGE_SIZE,
    SGX_CG_LOW_LIMIT,
    SGX_CG_MIN_FREE_PAGE,
    SGX_EPC_PAGE_RECLAIMER_TRACKED,
    SGX_VA_SLOT_COUNT,
    VM_FAULT_SIGBUS,
)
from epcsim.kernel.encl import sgx_encl_access
from epcsim.kernel.epc import KIND_ENCL, stuck_watch
from epcsim.kernel.epc_cgroup import sgx_cgroup_max_pages_to_root
from epcsim.kernel.reclaim import sgx_reclaim_pages
from epcsim.programs import kselftest as ks

MiB = 1 << 20
BASE = "/sgx_kselftest"
TESTS = ("A small", "B large positive", "C large negative", "D larger", "E random kill", "F memcg")

#: exit statuses per test, in process order (deterministic under the lockstep replay)
PINNED = {
    16 * MiB: {
        "A small": [1],
        "B large positive": [1, 0, 1, 1],
        "C large negative": [1, 1, 1, 0, 1],
        "D larger": [0] * 8,
        "E random kill": [0, 0, 0, 143, 0, 0, 0, 0],
        "F memcg": [137, 137, 1, 1],
    },
    32 * MiB: {
        "A small": [1],
        "B large positive": [1, 1, 0, 0],
        "C large negative": [0, 1, 1, 1, 0],
        "D larger": [0] * 8,
        "E random kill": [0, 0, 0, 143, 0, 0, 0, 0],
        "F memcg": [137, 1, 137, 137],
    },
    64 * MiB: {
        "A small": [1],
        "B large positive": [0, 1, 0, 1],
        "C large negative": [1, 0, 1, 0, 1],
        "D larger": [0] * 8,
        "E random kill": [0, 0, 0, 143, 0, 0, 0, 0],
        "F memcg": [137, 137, 137, 137],
    },
}


def selftest_limits(c: int) -> dict[str, int]:
    """Steps 3 and 9 of run_epc_cg_selftests.sh (v16 patch 16, limits and memory.max): the bytes the
    script writes for capacity *c*."""
    return {
        f"{BASE}/sgx_test_small_parent/misc.max": c // 512,
        f"{BASE}/sgx_test_large/misc.max": 4 * c // 512,
        f"{BASE}/sgx_test_larger/misc.max": c,
        f"{BASE}/sgx_test_large/memory.max": c - 2 * (c // 128),
    }


def va_pages(n_pages: int) -> int:
    """sgx_encl_grow() (encl.c; ADD_PAGES of the test_sgx enclave): VA pages of an enclave of
    *n_pages* added pages."""
    return math.ceil((n_pages + 1) / SGX_VA_SLOT_COUNT)


def async_threshold(limit_pages: int) -> int:
    """sgx_cgroup_should_reclaim() (epc_cgroup.c, v16 patch 10): usage (pages) at which the
    async/direct reclaimer starts."""
    return limit_pages - SGX_CG_MIN_FREE_PAGE if limit_pages > SGX_CG_LOW_LIMIT else limit_pages


def check_spec_outcomes(rep: ks.SelftestReport) -> None:
    """The PASS conditions of run_epc_cg_selftests.sh (v16 patch 16): A fail; B >= 1 pass; C >= 1
    fail; D all pass; E all non-killed pass; F all fail; final usage 0."""
    st = rep.statuses
    assert list(rep.results) == [*TESTS, "leak check"]
    assert st["A small"] != [0] and len(st["A small"]) == 1
    assert len(st["B large positive"]) == 4 and 0 in st["B large positive"]
    assert len(st["C large negative"]) == 5 and any(s != 0 for s in st["C large negative"])
    assert st["D larger"] == [0] * 8
    e = st["E random kill"]
    assert len(e) == 8 and e[3] == 143
    assert all(s == 0 for k, s in enumerate(e) if k != 3)
    assert len(st["F memcg"]) == 4 and all(s != 0 for s in st["F memcg"])
    assert all(s in (1, 137) for s in st["F memcg"]), "F fails by ENOMEM or memcg OOM kill"
    assert rep.results["leak check"] == (True, "misc.current reads 'sgx_epc 0'")
    for name in TESTS:
        assert rep.results[name][0], (name, rep.results[name])
    assert rep.passed
    assert rep.lines()[-1] == "PASS: ALL cgroup limit tests"


@pytest.fixture(scope="module")
def replays():
    """One replay per capacity, shared by the tests below (each takes seconds)."""
    cache: dict[int, tuple[ks.SelftestReport, list[tuple[str, str]]]] = {}

    def get(capacity: int):
        if capacity not in cache:
            writes: list[tuple[str, str]] = []
            orig = CgroupFs.write

            def recording(self, path, data, *, task=None):
                ret = orig(self, path, data, task=task)
                writes.append((path, data))
                return ret

            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(CgroupFs, "write", recording)
                rep = ks.run_epc_cg_selftests(capacity, check=True)
            cache[capacity] = (rep, writes)
        return cache[capacity]

    return get


# --- run_epc_cg_selftests.sh (v16 patch 16) outcomes ----------------------------------------------


@pytest.mark.parametrize("capacity", [16 * MiB, 32 * MiB], ids=["16MiB", "32MiB"])
def test_selftests_reach_spec_outcomes(replays, capacity):
    """Every test A-F and the leak check reach the outcome run_epc_cg_selftests.sh (v16 patch 16)
    passes on."""
    rep, _ = replays(capacity)
    assert rep.capacity == capacity
    check_spec_outcomes(rep)


@pytest.mark.parametrize("capacity", [16 * MiB, 32 * MiB], ids=["16MiB", "32MiB"])
def test_selftests_pinned_statuses(replays, capacity):
    """The exit status of every process of every test (lockstep interleave)."""
    rep, _ = replays(capacity)
    assert {k: v for k, v in rep.statuses.items() if k != "leak check"} == PINNED[capacity]
    assert rep.statuses["leak check"] == []


@pytest.mark.parametrize("capacity", [16 * MiB, 32 * MiB], ids=["16MiB", "32MiB"])
def test_selftests_write_spec_limits(replays, capacity):
    """Steps 1-3 and 9 of run_epc_cg_selftests.sh (v16 patch 16): directories, controllers and the
    exact limit bytes."""
    _, writes = replays(capacity)
    limits = selftest_limits(capacity)
    assert writes[:3] == [
        ("/cgroup.subtree_control", "+misc +memory"),
        (f"{BASE}/cgroup.subtree_control", "+misc +memory"),
        (f"{BASE}/sgx_test_small_parent/cgroup.subtree_control", "+misc"),
    ]
    got = {path: data for path, data in writes[3:] if data != "max"}
    assert got == {
        path: (f"sgx_epc {v}" if path.endswith("misc.max") else str(v))
        for path, v in limits.items()
    }
    # memory.max is restored after Test F
    assert writes[-1] == (f"{BASE}/sgx_test_large/memory.max", "max")


@pytest.mark.slow
def test_selftests_64mib():
    rep = ks.run_epc_cg_selftests(64 * MiB, check=True)
    check_spec_outcomes(rep)
    assert {k: v for k, v in rep.statuses.items() if k != "leak check"} == PINNED[64 * MiB]


def test_selftests_deterministic(replays):
    """Two replays on fresh hosts give identical statuses and verdicts."""
    rep, _ = replays(16 * MiB)
    again = ks.run_epc_cg_selftests(16 * MiB, check=True)
    assert again.statuses == rep.statuses
    assert again.results == rep.results
    assert again.lines() == rep.lines()


def test_selftests_8mib_b_fails_by_isolation_race(monkeypatch):
    """At 8 MiB Test B fails in the lockstep replay: a genuine v16 race, not a model bug.

    sgx_test_large's limit is C/128 = 16 pages.  Each enclave needs VA + SECS =
    ceil((2048 + 7 + 1) / 512) + 1 = 6 unreclaimable pages, so three of the four processes
    die of ENOMEM in ADD_PAGES (status 1) and free their pages; the survivor finishes
    ADD_PAGES and EINIT with the cgroup full.  Its EENTER then faults on an evicted page:
    the NO_RECLAIM charge fails, queues the async work and the fault is retried
    (sgx_alloc_epc_page(), sgx_cgroup_try_charge(), v16 patches 9, 10).  The worker
    (sgx_cgroup_reclaim_work_func(), v16 patch 10) isolates *every* page of the cgroup's LRU into
    its batch (the isolation loop of sgx_reclaim_pages(), main.c); before it writes them back the
    fault is retried, finds the limit still reached and ``sgx_cgroup_lru_empty()`` true — isolated
    pages are off the list — so the charge returns ENOMEM, which the fault path turns into SIGBUS
    (status 135).  In the kernel the same window exists between isolation and EWB.
    From 16 MiB on (limit 32 pages, 10 unreclaimable each) the same interleave lets a
    process pass; Test C at 8 MiB still passes (a SIGBUS is a failure too).
    """
    seen = []
    orig = sgx_ioctl.sgx_vma_fault

    def spy(host, task, encl, idx):
        r = orig(host, task, encl, idx)
        if r == VM_FAULT_SIGBUS:
            pool = host.epc
            sgx_cg = host.task_misc_cg(task).priv
            mine = [
                p
                for p in range(pool.nr_pages)
                if pool.cg[p] == sgx_cg.id and pool.kind[p] == KIND_ENCL
            ]
            isolated = [
                p
                for p in mine
                if pool.flags[p] & SGX_EPC_PAGE_RECLAIMER_TRACKED and pool.prev[p] == p
            ]
            seen.append(
                {
                    "cgroup": sgx_cg.cg.path(),
                    "full": sgx_cg.cg.usage == sgx_cg.cg.max,
                    "lru": sgx_cg.lru.nr,
                    "all_isolated": bool(mine) and isolated == mine,
                    "worker": sgx_cg.work_running,
                }
            )
        return r

    monkeypatch.setattr(sgx_ioctl, "sgx_vma_fault", spy)
    rep = ks.run_epc_cg_selftests(8 * MiB, check=True)
    assert rep.statuses == {
        "A small": [1],
        "B large positive": [135, 1, 1, 1],
        "C large negative": [1, 135, 1, 1, 1],
        "D larger": [0] * 8,
        "E random kill": [0, 0, 0, 143, 0, 0, 0, 0],
        "F memcg": [137, 1, 1, 1],
        "leak check": [],
    }
    assert rep.results["B large positive"][0] is False
    assert not rep.passed
    for name in ("A small", "C large negative", "D larger", "E random kill", "F memcg"):
        assert rep.results[name][0], name
    assert rep.results["leak check"][0]
    # both SIGBUSes (B and C) are the race: the worker holds every page of the cgroup
    race = {
        "cgroup": f"{BASE}/sgx_test_large",
        "full": True,
        "lru": 0,
        "all_isolated": True,
        "worker": True,
    }
    assert seen == [race, race]


# --- per-process arithmetic of test_sgx (the workload of v16 patch 16) ----------------------------


@pytest.mark.parametrize("c", [16 * MiB, 32 * MiB, 64 * MiB, 98_566_144, 4 << 30])
def test_sgx_pages_arithmetic(c):
    """test_sgx -t unclobbered_vdso_oversubscribed (run by v16 patch 16): N_pages = C/4096 + 7 (2
    TCS, 2 text, 3 data, the heap); enclave size = smallest power of two >= N_pages pages (about
    2C)."""
    n, size = ks.test_sgx_pages(c)
    assert n == c // PAGE_SIZE + 7
    assert sum(p for _, p, _, _ in ks.TEST_ENCL_LAYOUT) == 7
    assert size & (size - 1) == 0 and size >= n * PAGE_SIZE > size // 2
    assert c < size <= 4 * c


def test_sgx_pages_small_heaps():
    assert ks.test_sgx_pages(0) == (7, 8 * PAGE_SIZE)
    assert ks.test_sgx_pages(PAGE_SIZE) == (8, 8 * PAGE_SIZE)
    assert ks.test_sgx_pages(2 * PAGE_SIZE) == (9, 16 * PAGE_SIZE)


@pytest.mark.parametrize("heap_pages", [504, 505, 1016, 1017])
def test_va_pages_of_the_test_enclave(heap_pages):
    """test_sgx (run by v16 patch 16), sgx_encl_grow() (encl.c): building the test enclave allocates
    ceil((N + 1) / 512) VA pages (page_cnt starts at 1 for the SECS); unreclaimable = VA + SECS."""
    host = Host("8MiB")
    t = host.spawn("/")
    heap = heap_pages * PAGE_SIZE
    n, size = ks.test_sgx_pages(heap)
    e = sgx_ioctl.sgx_open(host, t)
    drive(sgx_ioctl.ioc_enclave_create(host, t, e, size))
    off = 0
    layout = (*ks.TEST_ENCL_LAYOUT, ("heap", heap_pages, 2, False))
    for _name, npages, ptype, measured in layout:
        drive(
            sgx_ioctl.ioc_enclave_add_pages(
                host, t, e, off, npages * PAGE_SIZE, page_type=ptype, measure=measured
            )
        )
        off += npages * PAGE_SIZE
    assert e.nr_added == n and e.page_cnt == n + 1
    assert len(e.va_all) == len(e.va_pages) == va_pages(n)
    assert va_pages(n) == {504: 1, 505: 2, 1016: 2, 1017: 3}[heap_pages]
    assert host.misc.root.usage == (n + va_pages(n) + 1) * PAGE_SIZE
    assert host.nr_lru_pages == n  # VA and SECS are never on an LRU
    check_invariants(host, quiescent=True)


# --- worked example for the capacity of the reported v12 test run ---------------------------------


def test_worked_example_98566144():
    """run_epc_cg_selftests.sh (v16 patch 16) limits for C = 98,566,144 B (P = 24,064 pages), from
    the formulas the replay writes (pinned against it above) and the model's own limit
    arithmetic."""
    c = 98_566_144
    p = c // PAGE_SIZE
    assert p == 24_064
    limits = selftest_limits(c)
    small = limits[f"{BASE}/sgx_test_small_parent/misc.max"]
    large = limits[f"{BASE}/sgx_test_large/misc.max"]
    larger = limits[f"{BASE}/sgx_test_larger/misc.max"]
    assert (small, large, larger) == (192_512, 770_048, 98_566_144)
    assert limits[f"{BASE}/sgx_test_large/memory.max"] == 97_026_048
    assert c - 97_026_048 == 1_540_096

    # limits in pages as the model computes them (floor(max / 4096) up to the root)
    host = Host(c)
    fs = host.fs
    fs.write("/cgroup.subtree_control", "+misc +memory")
    for name, v in (("small_parent", small), ("large", large), ("larger", larger)):
        fs.mkdir(f"/{name}")
        fs.write(f"/{name}/misc.max", f"sgx_epc {v}")
    pages = {
        name: sgx_cgroup_max_pages_to_root(host.sgx_cgroup_of(f"/{name}"))
        for name in ("small_parent", "large", "larger")
    }
    assert pages == {"small_parent": 47, "large": 188, "larger": 24_064}
    assert (small // PAGE_SIZE, large // PAGE_SIZE, larger // PAGE_SIZE) == (p // 512, p // 128, p)

    # headroom kept by async/direct reclaim (sgx_cgroup_should_reclaim(), v16 patch 10)
    assert async_threshold(47) == 47  # <= 128: no headroom
    assert async_threshold(188) == 156
    assert async_threshold(24_064) == 24_032

    # per-enclave unreclaimable pages: VA 48 + SECS 1
    n, size = ks.test_sgx_pages(c)
    assert n == 24_071 and size == 128 * MiB
    unreclaimable = va_pages(n) + 1
    assert va_pages(n) == 48 and unreclaimable == 49
    assert unreclaimable > 47  # Test A must fail
    assert 4 * unreclaimable == 196 > 188  # not all four of B can finish
    assert 5 * unreclaimable == 245 > 188  # C must fail
    assert 8 * unreclaimable == 392 < 24_064  # D fits
    # Test F: backing of one fully evicted enclave ~ C * (1 + 1/32) ~ 101.6 MB per process
    assert round(c * (1 + 1 / 32) / 1e6, 1) == 101.6
    assert 4 * c * (1 + 1 / 32) > 97_026_048


# --- failures say what failed; a livelocked access is stuck --------------------------------


def _full_parent_host() -> Host:
    """/p (1 MiB) over /p/a and /p/b, in a 32 MiB EPC (ksgxd never needed)."""
    h = Host("32MiB")
    h.fs.write("/cgroup.subtree_control", "+misc +memory")
    h.fs.mkdir("/p")
    h.fs.write("/p/cgroup.subtree_control", "+misc +memory")
    h.fs.mkdir("/p/a")
    h.fs.mkdir("/p/b")
    h.fs.write("/p/misc.max", f"sgx_epc {1 << 20}")
    return h


def test_test_sgx_stuck_when_an_ancestor_is_full_of_a_siblings_pages() -> None:
    """v16 has no OOM killer: test_sgx's first EENTER faults on its evicted TCS while
    /p is full of /p/b's pages; sgx_vma_fault() returns VM_FAULT_NOPAGE for ever (the
    async work of /p/a stops at once: /p/a's own usage is far below /p's limit).  With
    the simulator's stuck rule the process stops there, stuck, without exiting."""
    h = _full_parent_host()
    ta, tb = h.spawn("/p/a"), h.spawn("/p/b")
    heap = 1 << 20
    npages, _ = ks.test_sgx_pages(heap)

    def fill_parent(task, added: int) -> None:
        encl = h.encls[ta.encl_fds[0]]
        if encl.nr_added == npages and not tb.encl_fds:
            # A is built: /p/b takes what is left of /p
            e = sgx_ioctl.sgx_open(h, tb)
            drive(sgx_ioctl.ioc_enclave_create(h, tb, e, 4 << 20))
            off = 0
            while h.fs.read("/p/misc.current") != f"sgx_epc {1 << 20}\n":
                drive(sgx_ioctl.ioc_enclave_add_pages(h, tb, e, off, PAGE_SIZE))
                off += PAGE_SIZE

    stats = ks.TestSgxStats(stuck_retries=5)
    status = drive(ks.test_sgx_process(h, ta, heap, progress=fill_parent, stats=stats))
    assert status is None and stats.stuck and not ta.exited
    assert stats.error == (
        "EENTER 1: access to enclave page 0: stuck after 5 retries with no page freed under the "
        "limit of /p"
    )
    assert (stats.accesses, stats.faults, stats.retries) == (0, 0, 5)


@pytest.mark.parametrize("evict", [False, True])
def test_stuck_rule_watches_the_limit_that_refuses(evict: bool) -> None:
    """A's charge is refused at /p's limit, /p full of its sibling B's pages.  Pages of
    /p/b aged between A's retries are progress under that limit (the stuck rule watches
    the subtree of the cgroup whose limit refuses, not A's own): 20 retries with B's
    pages aged, then 5 quiet ones and A is stuck (at its 25th retry, not its 5th); or a
    batch that evicts B's pages lets A's fault through."""
    h = _full_parent_host()
    ta, tb = h.spawn("/p/a"), h.spawn("/p/b")
    ea = sgx_ioctl.sgx_open(h, ta)
    drive(sgx_ioctl.ioc_enclave_create(h, ta, ea, 64 << 10))
    drive(sgx_ioctl.ioc_enclave_add_pages(h, ta, ea, 0, PAGE_SIZE))
    sgx_ioctl.ioc_enclave_init(h, ta, ea)
    eb = sgx_ioctl.sgx_open(h, tb)
    drive(sgx_ioctl.ioc_enclave_create(h, tb, eb, 4 * MiB))
    nb = 0
    while h.fs.read("/p/misc.current") != f"sgx_epc {MiB}\n":
        drive(sgx_ioctl.ioc_enclave_add_pages(h, tb, eb, nb * PAGE_SIZE, PAGE_SIZE))
        nb += 1
    sgx_ioctl.ioc_enclave_init(h, tb, eb)
    p, pb = h.task_misc_cg(ta).parent, h.task_misc_cg(tb)
    res = sgx_ioctl.FaultResult()
    # page 5 was not added: its fault EAUGs a page, charged to /p/a, refused at /p
    access = sgx_ioctl.encl_access(h, ta, ea, [5], res=res, stuck_retries=5)
    for k in range(20):
        assert next(access) == "fault_retry", k
        assert stuck_watch(h.task_misc_cg(ta))[0] == p.priv.id
        sgx_encl_access(eb, np.arange(nb))  # B's code touches its pages: all young
        drive(sgx_reclaim_pages(h, pb.priv, None))  # one batch: rotated, none freed
        assert h.fs.read("/p/misc.current") == f"sgx_epc {MiB}\n"
    assert (res.retries, res.faults, pb.priv.nr_freed) == (20, 0, 0)
    if evict:  # batches until B's pages are found old: written back and freed
        for _ in range(nb // 16 + 2):
            drive(sgx_reclaim_pages(h, pb.priv, None))
            if pb.priv.nr_freed:
                break
        assert pb.priv.nr_freed > 0
    try:
        while True:
            assert next(access) == "fault_retry"
    except StopIteration:
        pass
    if evict:
        assert (res.stuck, res.faults, res.retries, res.done) == (False, 1, 20, 1)
    else:
        assert (res.stuck, res.block, res.faults, res.retries) == (True, p.priv.id, 0, 25)
    check_invariants(h)


def test_test_sgx_failure_names_the_ioctl_and_errno() -> None:
    """Test A's process (run_epc_cg_selftests.sh, v16 patch 16): its ADD_PAGES fails with ENOMEM;
    the error says so."""
    h = _full_parent_host()
    h.fs.write("/p/misc.max", "sgx_epc 8192")  # VA page + SECS: no room for a page
    t = h.spawn("/p/a")
    stats = ks.TestSgxStats()
    assert drive(ks.test_sgx_process(h, t, 1 << 20, stats=stats)) == 1
    assert stats.error == "SGX_IOC_ENCLAVE_ADD_PAGES: ENOMEM (Cannot allocate memory)"
    assert stats.eenters == []
