"""The series' earlier cursors as policies (issue 14): ``v14`` (the caller holds the
"next" cgroup for one reclaim episode, sgx_cgroup_reclaim_pages() of v14, 2024-05-31)
and ``v13`` (every call walks from the subtree root, sgx_cgroup_reclaim_pages() of v13,
2024-04-30), against v16's persistent ``next_cg`` (v16 patch 9).

The cursor orders are derived by hand in each test's comments over the tree
R{a{x}, b}: R (the root) holds 40 pages of a task in the root cgroup, a is an interior
cgroup with an empty LRU, x 40 pages, b 8 pages; every page is old (EADD, never
touched), so each batch of sgx_reclaim_pages() evicts what it isolates.
"""

from __future__ import annotations

import pytest

import epcsim
from epcsim import policies
from epcsim.kernel import Host, check_invariants, drive, ioctl
from epcsim.kernel import reclaim as kreclaim
from epcsim.kernel.constants import PAGE_SIZE
from epcsim.kernel.epc_cgroup import sgx_cgroup_reclaim_pages, sgx_cgroup_reclaim_work_func
from epcsim.kernel.hooks import Episode
from epcsim.scenario import load_scenario
from epcsim.sim.engine import Simulation

# --- helpers ------------------------------------------------------------------------------


def new_host(epc: str = "16MiB", policy: str = "v16") -> Host:
    h = Host(epc)
    h.fs.write("/cgroup.subtree_control", "+misc +memory")
    h.policy = policies.make(policy)
    if h.policy is not None:
        h.policy.attach(h)
    return h


def new_enclave(h: Host, task, npages: int) -> None:
    """An enclave of *npages* EADDed pages (plus its SECS and one VA page, off the LRU)."""
    e = ioctl.sgx_open(h, task)
    drive(ioctl.ioc_enclave_create(h, task, e, 1 << 20))
    drive(ioctl.ioc_enclave_add_pages(h, task, e, 0, npages * PAGE_SIZE))


def tree(h: Host, pages: dict[str, int]):
    """R{a{x}, b} with *pages* EADDed by a task of each named cgroup; returns a dict
    name -> sgx_cgroup (R for the root)."""
    h.fs.mkdir("/a")
    h.fs.write("/a/cgroup.subtree_control", "+misc")
    h.fs.mkdir("/a/x")
    h.fs.mkdir("/b")
    paths = {"R": "/", "a": "/a", "x": "/a/x", "b": "/b"}
    for name, n in pages.items():
        new_enclave(h, h.spawn(paths[name]), n)
    return {name: h.sgx_cgroup_of(p) for name, p in paths.items()}


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every sgx_reclaim_pages() call, as (cgroup name, pages isolated); the names are
    those of :func:`tree` (set ``scans.names`` after building it)."""
    log: list[tuple[str, int]] = []
    real = kreclaim.sgx_reclaim_pages

    def logged(host, sgx_cg, charge_task, **kw):
        n = yield from real(host, sgx_cg, charge_task, **kw)
        log.append((NAMES[sgx_cg.cg.path()], n))
        return n

    monkeypatch.setattr(kreclaim, "sgx_reclaim_pages", logged)
    return log


NAMES = {"/": "R", "/a": "a", "/a/x": "x", "/a/y": "y", "/b": "b"}
PAGES = {"R": 40, "x": 40, "b": 8}


def calls(h: Host, root, episodes: list[int], nr_to_scan: int, log) -> list[list]:
    """Run sgx_cgroup_reclaim_pages(root, nr_to_scan) as *episodes* (the number of
    calls of each; v16 has no episode), returning the scans of each call."""
    out = []
    for ncalls in episodes:
        ep = Episode("sync", root) if h.policy is not None else None
        for _ in range(ncalls):
            before = len(log)
            drive(sgx_cgroup_reclaim_pages(h, root, None, nr_to_scan, episode=ep))
            out.append(log[before:])
    return out


# --- cursor orders: sync calls (nr_to_scan 1) over three episodes of two calls -------------

#: v16: one persistent cursor R.next_cg visits R, a, x, b, R, ... whatever the episode;
#: a call ends at the first batch that isolates a page (nr_to_scan 1).
#:   1: R 16            (cursor a)      2: a empty, x 16  (cursor b)
#:   3: b 8             (cursor R)      4: R 16           (cursor a)
#:   5: a empty, x 16   (cursor b)      6: b empty (0), then R: its last 8
V16_SYNC = [
    [("R", 16)],
    [("a", 0), ("x", 16)],
    [("b", 8)],
    [("R", 16)],
    [("a", 0), ("x", 16)],
    [("b", 0), ("R", 8)],
]
#: v14: the cursor lives in the episode; each episode starts at R.
#:   episode 1: R 16 (next a); a empty, x 16 (next b)
#:   episode 2: R 16 (next a); a empty, x 16 (next b)
#:   episode 3: R 8 (its last; next a); a empty, x 8 (its last)
#: b is never reached: 0 of its 8 pages evicted.
V14_SYNC = [
    [("R", 16)],
    [("a", 0), ("x", 16)],
    [("R", 16)],
    [("a", 0), ("x", 16)],
    [("R", 8)],
    [("a", 0), ("x", 8)],
]
#: v13: every call walks from R: R is drained first (16, 16, 8), then each call scans
#: R (empty) and a (empty) before x.
V13_SYNC = [
    [("R", 16)],
    [("R", 16)],
    [("R", 8)],
    [("R", 0), ("a", 0), ("x", 16)],
    [("R", 0), ("a", 0), ("x", 16)],
    [("R", 0), ("a", 0), ("x", 8)],
]


@pytest.mark.parametrize(
    "policy, expected, evicted",
    [
        ("v16", V16_SYNC, {"R": 40, "x": 32, "b": 8}),
        ("v14", V14_SYNC, {"R": 40, "x": 40, "b": 0}),
        ("v13", V13_SYNC, {"R": 40, "x": 40, "b": 0}),
    ],
)
def test_sync_cursor_orders_over_episodes(policy, expected, evicted, scans) -> None:
    h = new_host(policy=policy)
    cg = tree(h, PAGES)
    got = calls(h, cg["R"], [2, 2, 2], 1, scans)
    assert got == expected
    assert {n: cg[n].nr_evicted for n in evicted} == evicted
    # v16's persistent cursor ends after R (at a); v14 and v13 never move it
    assert cg["R"].next_cg is (cg["a"] if policy == "v16" else cg["R"])
    check_invariants(h, quiescent=True)


# --- nr_to_scan 16 (async / ksgxd size), one episode of four calls --------------------------

#: v16: 1: R 16.  2: a 0, x 16.  3: b 8, then (8 < 16) the cursor wraps to R: 16 more
#: (24 in all).  4: a 0, x 16.
V16_16 = [[("R", 16)], [("a", 0), ("x", 16)], [("b", 8), ("R", 16)], [("a", 0), ("x", 16)]]
#: v14: 1: R 16 (next a).  2: a 0, x 16 (next b).  3: b 8, then the walk passes the
#: end of the subtree: v14 returns NULL with 8 isolated, no wrap.  4: from R again: 16.
V14_16 = [[("R", 16)], [("a", 0), ("x", 16)], [("b", 8)], [("R", 16)]]
#: v13: 1: R 16.  2: R 16.  3: R 8, a 0, x 16 (24).  4: R 0, a 0, x 16.
V13_16 = [
    [("R", 16)],
    [("R", 16)],
    [("R", 8), ("a", 0), ("x", 16)],
    [("R", 0), ("a", 0), ("x", 16)],
]


@pytest.mark.parametrize("policy, expected", [("v16", V16_16), ("v14", V14_16), ("v13", V13_16)])
def test_one_episode_of_16_page_calls(policy, expected, scans) -> None:
    h = new_host(policy=policy)
    cg = tree(h, PAGES)
    assert calls(h, cg["R"], [4], 16, scans) == expected
    check_invariants(h, quiescent=True)


def test_v14_episode_counts_and_cursor_state(scans) -> None:
    """The episode carries v14's cursor: after call 2 of V14_16 it is b; after call 3
    (past the end) None; the episode counts its calls and pages."""
    h = new_host(policy="v14")
    cg = tree(h, PAGES)
    ep = Episode("async", cg["R"])
    seen = []
    for _ in range(4):
        drive(sgx_cgroup_reclaim_pages(h, cg["R"], None, 16, episode=ep))
        seen.append(ep.state["next_cg"])
    assert seen == [cg["a"], cg["b"], None, cg["a"]]
    assert (ep.calls, ep.isolated) == (4, 16 + 16 + 8 + 16)


def test_v14_cursor_on_a_freed_cgroup_restarts_at_the_root(scans) -> None:
    """The model's v14 cursor holds no reference: if its cgroup is freed between two
    calls (b: emptied, removed), the next call starts at the root, as v14 did on a dead
    next cgroup."""
    h = new_host(policy="v14")
    cg = tree(h, {"R": 40, "x": 40})
    ep = Episode("sync", cg["R"])
    drive(sgx_cgroup_reclaim_pages(h, cg["R"], None, 1, episode=ep))  # R 16, next a
    drive(sgx_cgroup_reclaim_pages(h, cg["R"], None, 1, episode=ep))  # a 0, x 16, next b
    assert ep.state["next_cg"] is cg["b"]
    b = cg["b"]
    h.fs.rmdir("/b")  # no page charged: the last reference goes, b is freed
    assert b.cg.freed
    before = len(scans)
    # R had 40 - 16 = 24 left: 16 of them
    assert drive(sgx_cgroup_reclaim_pages(h, cg["R"], None, 1, episode=ep)) == 16
    assert scans[before:] == [("R", 16)]
    assert ep.state["next_cg"] is cg["a"]
    check_invariants(h, quiescent=True)


# --- ksgxd: one wake-up is one episode ---------------------------------------------------


def _ksgxd_wakeup(h: Host, log) -> list[list]:
    """ksgxd_step() until ksgxd sleeps: the scans of each step."""
    out = []
    while True:
        before = len(log)
        if not drive(kreclaim.ksgxd_step(h)):
            return out
        out.append(log[before:])


#: A 1 MiB EPC (256 pages): R 96 pages, x 60, b 60, each enclave with its SECS and VA:
#: 222 used, 34 free (< SGX_NR_HIGH_PAGES = 64, ksgxd runs, 16 pages a step).
#: Wake-up 1: 34 -> 50 -> 66 free: two steps.  A second enclave of 38 pages in R
#: (40 pages with SECS and VA) leaves 26 free; wake-up 2: 26 -> 42 -> 58 -> 74: three.
#:   v16: wake-up 1: R 16; a 0, x 16 (cursor b).  wake-up 2 continues: b 16; R 16;
#:        a 0, x 16.
#:   v14: wake-up 1: R 16; a 0, x 16.  wake-up 2 starts at R again: R 16; a 0, x 16;
#:        b 16.
#:   v13: every step from R: R 16 each time (R holds 96 + 38 pages).
KSGXD = {
    "v16": (
        [[("R", 16)], [("a", 0), ("x", 16)]],
        [[("b", 16)], [("R", 16)], [("a", 0), ("x", 16)]],
    ),
    "v14": (
        [[("R", 16)], [("a", 0), ("x", 16)]],
        [[("R", 16)], [("a", 0), ("x", 16)], [("b", 16)]],
    ),
    "v13": ([[("R", 16)], [("R", 16)]], [[("R", 16)], [("R", 16)], [("R", 16)]]),
}


@pytest.mark.parametrize("policy", list(KSGXD))
def test_ksgxd_wakeups(policy, scans) -> None:
    h = new_host("1MiB", policy=policy)
    cg = tree(h, {"R": 96, "x": 60, "b": 60})
    assert h.epc.nr_free_pages == 34
    first = _ksgxd_wakeup(h, scans)
    assert h.epc.nr_free_pages == 66 and h.ksgxd_episode is None
    new_enclave(h, h.spawn("/"), 38)
    assert h.epc.nr_free_pages == 26
    second = _ksgxd_wakeup(h, scans)
    assert (first, second) == KSGXD[policy]
    assert cg["R"].nr_evicted == {"v16": 32, "v14": 32, "v13": 80}[policy]
    check_invariants(h, quiescent=True)


# --- async work: one run of the work function is one episode -----------------------------

#: /a (misc.max 200 pages: the work reclaims while usage >= 200 - 32) over /a/x and
#: /a/y, 98 pages each (100 with SECS and VA): usage 200.
#:   run 1 (both): a 0, x 16 (184); y 16 (168); a 0, x 16 (152): stop (< 168).
#:     v16's cursor of /a is then at y; v14's episode ended.
#: A second enclave of 32 pages in /a/x (34 charged): 186.
#:   run 2, v16: y 16 (170); a 0, x 16 (154).   v14: from /a again: a 0, x 16 (170); y 16.
WORK = {
    "v16": [("a", 0), ("x", 16), ("y", 16), ("a", 0), ("x", 16), ("y", 16), ("a", 0), ("x", 16)],
    "v14": [("a", 0), ("x", 16), ("y", 16), ("a", 0), ("x", 16), ("a", 0), ("x", 16), ("y", 16)],
}


@pytest.mark.parametrize("policy", list(WORK))
def test_work_runs(policy, scans) -> None:
    h = new_host(policy=policy)
    h.fs.mkdir("/a")
    h.fs.write("/a/misc.max", f"sgx_epc {200 * PAGE_SIZE}")
    h.fs.write("/a/cgroup.subtree_control", "+misc")
    h.fs.mkdir("/a/x")
    h.fs.mkdir("/a/y")
    new_enclave(h, h.spawn("/a/x"), 98)
    new_enclave(h, h.spawn("/a/y"), 98)
    a = h.sgx_cgroup_of("/a")
    assert a.cg.usage // PAGE_SIZE == 200
    drive(sgx_cgroup_reclaim_work_func(h, a))
    assert a.cg.usage // PAGE_SIZE == 152
    new_enclave(h, h.spawn("/a/x"), 32)
    drive(sgx_cgroup_reclaim_work_func(h, a))
    assert a.cg.usage // PAGE_SIZE == 154
    assert scans == WORK[policy]
    check_invariants(h, quiescent=True)


# --- the root bias Kai Huang reported on v13 (2024-05-07) --------------------------------

#: pages in the root cgroup and in two children, no limit: only ksgxd reclaims (global
#: reclaim rooted at /), so who loses pages is decided by the cursor alone
ROOT_BIAS = """\
[host]
epc = "4MiB"
cpus = 4
seed = 1
duration = "1s"
policy = "{policy}"

[[cgroup]]
path = "/a"

[[cgroup]]
path = "/b"

[[enclave]]
name = "r"
cgroup = "/"
size = "2MiB"
workload = {{ pattern = "uniform", accesses = 20_000 }}

[[enclave]]
name = "a"
cgroup = "/a"
size = "2MiB"
workload = {{ pattern = "uniform", accesses = 20_000 }}

[[enclave]]
name = "b"
cgroup = "/b"
size = "2MiB"
workload = {{ pattern = "uniform", accesses = 20_000 }}
"""


def _root_share(policy: str) -> tuple[float, dict]:
    res = epcsim.run(ROOT_BIAS.format(policy=policy), engine="reference")
    ev = {p: c["evictions"] for p, c in res.summary["cgroups"].items()}
    return ev["/"] / sum(ev.values()), ev


def test_root_bias_v13_reclaims_mostly_from_the_root() -> None:
    """Under global reclaim the root's share of the pages reclaimed is larger under v13
    (every 16-page call satisfied by the root's LRU first) than under v16 (the cursor
    rotates /, /a, /b one batch each)."""
    v16, ev16 = _root_share("v16")
    v13, ev13 = _root_share("v13")
    assert v13 > v16, (ev16, ev13)
    assert v13 > 0.5, ev13  # the root loses most of the pages


# --- every built-in under each policy ------------------------------------------------------


def _run(builtin: str, policy: str) -> tuple[dict, Host]:
    sc = load_scenario(f"builtin:{builtin}", overrides=[f"host.policy={policy}"])
    sim = Simulation(sc, engine="reference")
    res = sim.run()
    assert res.summary["policy"] == policy
    return res.summary, sim.host


#: v16's summaries of the built-ins, run once for both policies
_V16: dict[str, dict] = {}


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["v14", "v13"])
def test_every_builtin_runs_and_keeps_the_invariants(policy: str) -> None:
    """Every built-in runs under the policy on the reference engine, the model's
    invariants hold at the end, and the per-cgroup or per-enclave results differ from
    v16's on at least one built-in."""
    differs = []
    for builtin, _ in epcsim.list_builtins():
        summary, host = _run(builtin, policy)
        check_invariants(host)
        if builtin not in _V16:
            _V16[builtin] = _run(builtin, "v16")[0]
        base = _V16[builtin]
        if (summary["cgroups"], summary["enclaves"]) != (base["cgroups"], base["enclaves"]):
            differs.append(builtin)
    assert differs, f"{policy} gives v16's results on every built-in"


def test_v13_overcommit_drains_a_then_sigbus() -> None:
    """builtin:overcommit under v13: / holds no page, so every ksgxd call walks /, /a
    and takes /a's pages first; once /a's LRU is empty a fault of /a whose charge fails
    at the root's capacity finds nothing reclaimable in /a's subtree: ENOMEM (one),
    SIGBUS (exit status 128 + 7).  Under v16 the built-in's expectation holds (every
    enclave succeeds)."""
    res = epcsim.run("builtin:overcommit", overrides=["host.policy=v13"], engine="reference")
    s = res.summary
    assert {p: c["enomem"] for p, c in s["cgroups"].items()} == {"/": 0, "/a": 1, "/b": 0, "/c": 0}
    assert {n: (e["outcome"], e["exit_status"]) for n, e in s["enclaves"].items()} == {
        "a": ("failure", 135),
        "b": ("success", 0),
        "c": ("success", 0),
    }


def test_builtin_root_bias_v13_takes_most_from_the_root() -> None:
    """The same on ``builtin:root-bias`` (four equal enclaves, one in /): v16's rotating
    cursor takes the root's quarter, v13 (each call walks from the root) takes 207 of
    its 303 evictions from the root."""
    shares = {}
    for policy in ("v16", "v13"):
        r = epcsim.run("builtin:root-bias", overrides=[f"host.policy={policy}"], engine="reference")
        shares[policy] = {p: c["evictions"] for p, c in r.summary["cgroups"].items()}
    assert shares["v16"] == {"/": 2704, "/a": 2739, "/b": 2740, "/c": 2748}
    assert shares["v13"] == {"/": 207, "/a": 32, "/b": 32, "/c": 32}
