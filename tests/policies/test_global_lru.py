"""The ``global-lru`` baseline (epcsim.policies.global_lru): one list for every cgroup, a
limit reclaim that scans it for its subtree's pages and rotates the others unaged, the
rotation cap, the emptiness test, the scan cost.  Counts are derived by hand in the
comments from the order pages were added (EADD marks each page reclaimable at the tail).
"""

from __future__ import annotations

import pytest

import epcsim
from epcsim import policies
from epcsim.compiled.eligibility import COMPILED_COSTS, cost_not_compiled
from epcsim.kernel import Host, check_invariants, drive, ioctl
from epcsim.kernel import encls as leaf
from epcsim.kernel.constants import PAGE_SIZE
from epcsim.kernel.encl import DESC_ACCESSED
from epcsim.kernel.epc_cgroup import sgx_cgroup_lru_empty, sgx_cgroup_reclaim_pages
from epcsim.policies.global_lru import GLOBAL_LRU_SKIP_CAP, GlobalLruPolicy


def new_host() -> tuple[Host, GlobalLruPolicy]:
    h = Host("16MiB")
    h.fs.write("/cgroup.subtree_control", "+misc +memory")
    pol = policies.make("global-lru")
    assert isinstance(pol, GlobalLruPolicy)
    h.policy = pol
    pol.attach(h)
    return h, pol


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


def three_runs(h: Host):
    """/a and /b; the global list holds 4 pages of /a, 20 of /b, 4 of /a (head first);
    /b's pages are all young (accessed), /a's old."""
    h.fs.mkdir("/a")
    h.fs.mkdir("/b")
    ta, tb = h.spawn("/a"), h.spawn("/b")
    a1 = new_enclave(h, ta, 4)
    b = new_enclave(h, tb, 20)
    a2 = new_enclave(h, ta, 4)
    drive(ioctl.encl_access(h, tb, b, range(20)))
    return h.sgx_cgroup_of("/a"), h.sgx_cgroup_of("/b"), a1, b, a2


def test_one_list_for_every_cgroup() -> None:
    h, pol = new_host()
    a, b, a1, eb, a2 = three_runs(h)
    assert pol.lru is not None
    order = [int(p) for p in [*a1.epc[:4], *eb.epc[:20], *a2.epc[:4]]]
    assert pol.lru.to_list() == order
    assert a.lru.nr == b.lru.nr == 0  # the cgroups' own LRUs stay empty
    assert pol.lru.per_cg == {a.id: 8, b.id: 20}
    # the time series' reclaimable pages: each cgroup's pages on the global list
    assert (pol.reclaimable_pages(h, a), pol.reclaimable_pages(h, b)) == (8, 20)
    assert not sgx_cgroup_lru_empty(h, a.cg) and not sgx_cgroup_lru_empty(h, b.cg)
    check_invariants(h, quiescent=True)


def test_limit_reclaim_scans_for_its_pages_and_rotates_the_others_unaged() -> None:
    """One pass for /a: the 4 pages of /a at the head are isolated, the 20 of /b rotated
    to the tail with their accessed bit untouched, the 4 of /a behind them isolated; the
    whole list (28 entries) was scanned once for 8 pages, all old: 8 EWBs."""
    h, pol = new_host()
    a, b, a1, eb, a2 = three_runs(h)
    usage_a = a.cg.usage // PAGE_SIZE  # 8 pages + 2 SECS + 2 VA
    assert usage_a == 12
    got = run(pol.sgx_reclaim_pages_scan(h, a, None))
    assert got == 8
    assert pol.nr_scanned == 28
    assert pol.pages_scanned == {a: 8, b: 20} and pol.pages_rotated == {b: 20}
    # the per-tenant pages_scanned: every entry the pass took off the list, per cgroup
    assert (a.nr_scanned, b.nr_scanned) == (8, 20)
    assert pol.lru.to_list() == [int(p) for p in eb.epc[:20]]
    assert all(d & DESC_ACCESSED for d in eb.desc[:20])  # not aged
    assert h.encls_count[leaf.EWB] == 8 and (a1.epc[:4] < 0).all() and (a2.epc[:4] < 0).all()
    assert a.cg.usage // PAGE_SIZE == usage_a - 8 and a.nr_evicted == 8
    assert sgx_cgroup_lru_empty(h, a.cg) and not sgx_cgroup_lru_empty(h, b.cg)
    assert pol.counters(h) == {
        "lru_scanned": 28,
        "pages_scanned": {"/a": 8, "/b": 20},
        "pages_rotated": {"/b": 20},
    }
    check_invariants(h, quiescent=True)


def test_the_rotation_cap_ends_a_pass() -> None:
    """With the cap at 5: /a's 4 head pages are isolated, then 5 of /b are rotated and
    the pass stops (9 scanned, 4 isolated); the list is /b's 15 others, /a's 4, /b's 5."""
    h, pol = new_host()
    a, b, a1, eb, a2 = three_runs(h)
    assert GLOBAL_LRU_SKIP_CAP == 16 << 10
    pol.skip_cap = 5
    assert run(pol.sgx_reclaim_pages_scan(h, a, None)) == 4
    assert pol.nr_scanned == 9 and pol.pages_rotated == {b: 5}
    bp = [int(p) for p in eb.epc[:20]]
    assert pol.lru.to_list() == bp[5:] + [int(p) for p in a2.epc[:4]] + bp[:5]
    # sgx_cgroup_reclaim_pages() (nr_to_scan 1) repeats passes until one isolates: three
    # passes each rotate 5 of /b and isolate nothing (15 scanned); the fourth isolates
    # /a's 4 and rotates 5 of /b (9 scanned): 24 in the call
    got = run(sgx_cgroup_reclaim_pages(h, a, None, 1))
    assert got == 4 and pol.nr_scanned == 9 + 24
    assert pol.pages_rotated == {b: 5 + 15 + 5}
    assert pol.lru.to_list() == bp[5:] + bp[:5]  # /b rotated 25 times: 5 past the start
    check_invariants(h, quiescent=True)


def test_global_reclaim_is_the_mainline_reclaimer() -> None:
    """Rooted at the root (ksgxd) every page is in scope: the first 16 entries (4 of /a,
    12 of /b) are isolated, none rotated; /b's 12 are young and go back to the tail."""
    h, pol = new_host()
    a, b, a1, eb, a2 = three_runs(h)
    assert run(pol.sgx_reclaim_pages_scan(h, h.sgx_cg_root, None)) == 16
    assert pol.nr_scanned == 16 and pol.pages_rotated == {}
    assert pol.pages_scanned == {a: 4, b: 12}
    assert (a.nr_scanned, b.nr_scanned, h.sgx_cg_root.nr_scanned) == (4, 12, 0)
    assert h.encls_count[leaf.EWB] == 4
    bp = [int(p) for p in eb.epc[:20]]
    assert pol.lru.to_list() == bp[12:] + [int(p) for p in a2.epc[:4]] + bp[:12]
    assert not any(d & DESC_ACCESSED for d in eb.desc[:12])  # aged: second chance
    check_invariants(h, quiescent=True)


def test_lru_empty_counts_the_subtree() -> None:
    h, pol = new_host()
    h.fs.mkdir("/p")
    h.fs.write("/p/cgroup.subtree_control", "+misc")
    h.fs.mkdir("/p/c")
    h.fs.mkdir("/q")
    t = h.spawn("/p/c")
    new_enclave(h, t, 3)
    p, c, q = (h.sgx_cgroup_of(x) for x in ("/p", "/p/c", "/q"))
    assert not sgx_cgroup_lru_empty(h, p.cg) and not sgx_cgroup_lru_empty(h, c.cg)
    assert sgx_cgroup_lru_empty(h, q.cg)
    assert pol.lru.per_cg == {c.id: 3}


def test_lru_scan_is_a_cost_only_the_reference_engine_pays() -> None:
    assert "lru_scan" not in COMPILED_COSTS
    assert cost_not_compiled({"lru_scan": 50}, None)


SMALL = """\
[host]
epc = "2MiB"
duration = "10s"
policy = "global-lru"
{costs}

[[cgroup]]
path = "/a"
max = "256KiB"

[[cgroup]]
path = "/b"

[[enclave]]
name = "a"
cgroup = "/a"
size = "512KiB"
workload = {{ pattern = "uniform", accesses = 4000 }}

[[enclave]]
name = "b"
cgroup = "/b"
size = "512KiB"
workload = {{ pattern = "uniform", accesses = 4000 }}
"""


def test_the_simulator_charges_each_scanned_entry() -> None:
    """The same run with lru_scan 0 and the default: the scans cost virtual time."""
    free = epcsim.run(SMALL.format(costs="[host.costs]\nlru_scan = 0"), engine="reference")
    paid = epcsim.run(SMALL.format(costs=""), engine="reference")
    assert free.summary["policy_counters"]["lru_scanned"] > 0
    assert paid.summary["costs_ns"]["lru_scan"] == 100
    assert free.summary["costs_ns"]["lru_scan"] == 0
    assert paid.summary["sim_time_ns"] > free.summary["sim_time_ns"]


@pytest.mark.parametrize("name", ["global-lru", "memcg-iter", "mglru-memcg"])
def test_the_baselines_say_they_are_not_from_the_series(name: str) -> None:
    cls = policies.policy_class(name)
    assert cls.external and cls.source and cls.changes
    assert policies.names().index(name) > policies.names().index("v16")


def test_per_tenant_pages_scanned_are_the_scans_of_the_global_list() -> None:
    """A run under global-lru: each cgroup's per-tenant ``pages_scanned`` is the count
    of its pages the scans took off the global list (``policy_counters``), and they add
    up to every entry scanned (``lru_scanned``): the scan cost `epcsim compare` reads."""
    from sim.test_engines_exact import FIXED_MULTI, _toml_multi

    import epcsim

    toml = _toml_multi(**FIXED_MULTI["tenants"]).replace(
        "[host]\n", '[host]\npolicy = "global-lru"\n', 1
    )
    res = epcsim.run(toml, engine="reference")
    pc = res.summary["policy_counters"]
    cgroups = res.summary["cgroups"]
    per = {p: c["pages_scanned"] for p, c in cgroups.items() if c["pages_scanned"]}
    assert per == pc["pages_scanned"]
    assert sum(per.values()) == pc["lru_scanned"] > 0
