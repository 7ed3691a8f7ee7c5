"""The ``oom-v2`` policy (epcsim.policies.oom_v2): the dropped design of the series v2
(2022-12-02) to v5 (2023-10) with unreclaimable lists, the ``max_write`` callback and the
EPC OOM killer.  Counts are derived by hand in the comments; hosts are built as in
tests/kernel/test_epc_cgroup.py."""

from __future__ import annotations

import errno
import sys
from pathlib import Path

import numpy as np
import pytest

import epcsim
from epcsim import policies
from epcsim.api import load_resolved
from epcsim.kernel import Host, check_invariants, drive, ioctl
from epcsim.kernel.constants import PAGE_SIZE, SGX_DO_RECLAIM, SGX_ENCL_OOM, SGX_PAGE_TYPE_REG
from epcsim.kernel.encl import sgx_encl_access, sgx_encl_add_page
from epcsim.kernel.epc_cgroup import sgx_cgroup_should_reclaim, sgx_cgroup_try_charge
from epcsim.policies.oom_v2 import sgx_epc_cgroup_reclaim_pages
from epcsim.scenario import load_scenario
from epcsim.sim.engine import Simulation

sys.path.insert(0, str(Path(__file__).parent.parent / "kernel"))
from test_epc_cgroup import mkcg, new_enclave, new_host, run_counting, set_max, usage  # noqa: E402


def host(policy: str = "oom-v2") -> Host:
    h = new_host("1MiB")  # 256 pages
    h.policy = policies.make(policy)
    if h.policy is not None:
        h.policy.attach(h)
    return h


def test_round_bounds() -> None:
    """sgx_epc_cgroup_reclaim_pages(): min(max(over, 16), 32)."""
    assert [sgx_epc_cgroup_reclaim_pages(n) for n in (0, 1, 16, 21, 32, 61)] == [
        16,
        16,
        16,
        21,
        32,
        32,
    ]


def test_charge_round_is_over_bounded_by_16_and_32() -> None:
    """/A's enclave has 68 EADDed pages: 70 charged.  /A's max is set to 10 pages
    directly (no write callback).  Adding one page: over = 70 + 1 - 10 = 61 -> a round of
    32 (two 16-page batches of /A's LRU: 38 left); over = 39 - 10 = 29 -> a round of 29
    (two batches, 32 pages: 6 left); the charge fits: 7.  Then at the limit (max = 7):
    over = 1 -> a round of 16 (/A's LRU has 5 pages: all of them go; 3 left with the new
    page)."""
    h = host()
    log: list[tuple[str, int]] = []
    orig = h.policy.reclaim_pages

    def spy(host_, root, task, nr, episode):
        log.append((episode.kind, nr))
        return (yield from orig(host_, root, task, nr, episode))

    h.policy.reclaim_pages = spy
    mkcg(h, "/A")
    A = h.sgx_cgroup_of("/A")
    t = h.spawn("/A")
    e = new_enclave(h, t, 68, size=1 << 19)
    assert usage(A) == 70
    A.cg.max = 10 * PAGE_SIZE
    assert drive(ioctl.ioc_enclave_add_pages(h, t, e, 68 * PAGE_SIZE, PAGE_SIZE)) == 4096
    assert log == [("sync", 32), ("sync", 29)]
    assert (usage(A), A.nr_evicted, A.nr_reclaim_batches) == (7, 64, 4)
    log.clear()
    A.cg.max = 7 * PAGE_SIZE
    assert drive(ioctl.ioc_enclave_add_pages(h, t, e, 69 * PAGE_SIZE, PAGE_SIZE)) == 4096
    assert log == [("sync", 16)]
    assert (usage(A), A.nr_evicted) == (3, 69)
    check_invariants(h, quiescent=True)


def test_accessed_bit_ignored_after_more_than_5_failed_rounds() -> None:
    """/A (max 20) holds 18 pages, all accessed, and the enclave re-touches every
    resident page at each cond_resched of the charge loop.  Adding a page: rounds 1-6
    find 16 young pages each (rotated, nothing reclaimed: failures 1..6); after the 6th
    (> SGX_EPC_RECLAIM_IGNORE_AGE_THRESHOLD = 5) the accessed bit is ignored: round 7
    writes back 16 pages and the charge fits (20 - 16 + 1 = 5).  7 batches, 7
    cond_resched of the charge loop and 1 of the ioctl."""
    h = host()
    mkcg(h, "/A", 20)
    A = h.sgx_cgroup_of("/A")
    t = h.spawn("/A")
    e = new_enclave(h, t, 18, size=1 << 17, access=True)
    gen = ioctl.ioc_enclave_add_pages(h, t, e, 18 * PAGE_SIZE, PAGE_SIZE)
    points = []
    while True:
        try:
            p = next(gen)
        except StopIteration as stop:
            ret = stop.value
            break
        points.append(p)
        if p == "cond_resched":
            sgx_encl_access(e, np.flatnonzero(e.epc >= 0))
    assert ret == 4096
    assert points.count("cond_resched") == 8
    assert (A.nr_reclaim_batches, A.nr_evicted, usage(A)) == (7, 16, 5)
    check_invariants(h, quiescent=True)


@pytest.mark.parametrize(("policy", "rounds"), [("oom-v2", 5), ("v16", 0)])
def test_enomem_after_more_than_5_empty_rounds(policy: str, rounds: int) -> None:
    """/A (max 2) holds an enclave without pages: VA + SECS, nothing on an LRU.  A
    DO_RECLAIM charge: oom-v2 runs 6 rounds that find every LRU empty (a cond_resched
    after each of the first 5) and returns -ENOMEM after the 6th (> 5); v16 returns
    -ENOMEM at once."""
    h = host(policy)
    mkcg(h, "/A", 2)
    A = h.sgx_cgroup_of("/A")
    t = h.spawn("/A")
    new_enclave(h, t, 0, size=1 << 17)
    ret, points = run_counting(sgx_cgroup_try_charge(h, t, A, SGX_DO_RECLAIM))
    assert ret == -errno.ENOMEM
    assert points == ["cond_resched"] * rounds
    assert (A.nr_enomem, A.nr_reclaim_batches) == (1, 0)


@pytest.mark.parametrize(("policy", "after", "evicted"), [("oom-v2", 26, 16), ("v16", 42, 0)])
def test_lowering_max_below_usage_reclaims(policy: str, after: int, evicted: int) -> None:
    """/A's enclave has 40 pages (42 charged).  Writing misc.max = 30 pages: oom-v2
    reclaims min(max(42 - 30, 16), 32) = 16 pages in the writer's context -> 26 <= 30;
    v16 stores the value and changes nothing (limits are enforced at charge time)."""
    h = host(policy)
    mkcg(h, "/A")
    A = h.sgx_cgroup_of("/A")
    new_enclave(h, h.spawn("/A"), 40, size=1 << 18)
    set_max(h, "/A", 30)
    assert (usage(A), A.nr_evicted) == (after, evicted)
    check_invariants(h, quiescent=True)


def test_lowering_max_kills_the_enclave_of_the_first_unreclaimable_page_in_preorder() -> None:
    """A{A1, A2}.  e2 is created first, in A2; then e1 in A1; neither has pages: /A
    charges 4 unreclaimable pages (each a VA then a SECS), nothing on an LRU.  Writing
    /A's misc.max = 2 pages: 6 rounds find the LRUs empty, then the OOM walk goes
    preorder A (no unreclaimable page), A1: its first page is e1's VA, e1 is alive ->
    e1 is killed although e2 is older: its VA and SECS are freed (usage 2 <= 2, the
    write returns), its mm is drained.  Its task's next access is SIGBUS (128 + 7)."""
    h = host()
    mkcg(h, "/A/A1")
    mkcg(h, "/A/A2")
    A = h.sgx_cgroup_of("/A")
    t2 = h.spawn("/A/A2")
    e2 = new_enclave(h, t2, 0, size=1 << 17)
    ioctl.ioc_enclave_init(h, t2, e2)
    t1 = h.spawn("/A/A1")
    e1 = new_enclave(h, t1, 0, size=1 << 17)
    ioctl.ioc_enclave_init(h, t1, e1)
    lists = {cg: [p for p, _ in v] for cg, v in h.policy.unreclaimable.items()}
    a1, a2 = h.sgx_cgroup_of("/A/A1").id, h.sgx_cgroup_of("/A/A2").id
    assert lists == {a2: [e2.va_all[0].epc, e2.secs_epc], a1: [e1.va_all[0].epc, e1.secs_epc]}
    assert usage(A) == 4
    set_max(h, "/A", 2)
    assert h.policy.killed == [e1.id]
    assert e1.flags & SGX_ENCL_OOM and not e2.flags & SGX_ENCL_OOM
    assert usage(A) == 2
    assert (e1.secs_epc, len(e1.va_pages), e1.mm_list, t1.mapped_encls) == (-1, 0, [], [])
    assert e1.refcount == 1  # the file's reference
    check_invariants(h, quiescent=True)
    # no page goes into a killed enclave (SGX_ENCL_OOM: -ENOMEM, v3 patch 15)
    assert drive(sgx_encl_add_page(h, t1, e1, 0, SGX_PAGE_TYPE_REG, False)) == -errno.ENOMEM
    res = drive(ioctl.encl_access(h, t1, e1, [0]))
    assert res.sigbus and (t1.exited, t1.exit_status, e1.released) == (True, 135, True)
    check_invariants(h, quiescent=True)


@pytest.mark.parametrize(
    ("limit", "pages", "oom_v2", "v16"),
    [
        # limit 20: oom-v2 reclaims above 20 - 1 = 19, v16 from 20 (<= 128: no headroom)
        (20, 17, False, False),  # usage 19
        (20, 18, True, True),  # usage 20
        # limit 64: oom-v2 above 64 - 1 - 8 = 55; v16 from 64
        (64, 53, False, False),  # usage 55
        (64, 54, True, False),  # usage 56
    ],
)
def test_async_threshold(limit: int, pages: int, oom_v2: bool, v16: bool) -> None:
    for policy, expect in (("oom-v2", oom_v2), ("v16", v16)):
        h = host(policy)
        mkcg(h, "/A", limit)
        A = h.sgx_cgroup_of("/A")
        new_enclave(h, h.spawn("/A"), pages, size=1 << 18)
        assert usage(A) == pages + 2
        assert sgx_cgroup_should_reclaim(h, A) is expect, policy


KILL = """\
[host]
epc = "1MiB"
duration = "1s"
policy = "{policy}"

[[cgroup]]
path = "/a"

[[cgroup]]
path = "/b"

[[enclave]]
name = "victim"
cgroup = "/a"
size = "64KiB"
workload = {{ pattern = "uniform", duration = "50ms" }}

[[enclave]]
name = "bystander"
cgroup = "/b"
size = "64KiB"
workload = {{ pattern = "uniform", duration = "50ms" }}

[[at]]
time = "10ms"
write = {{ path = "/a/misc.max", value = "sgx_epc 0" }}
"""


@pytest.mark.parametrize(("policy", "outcome"), [("oom-v2", "killed"), ("v16", "success")])
def test_a_killed_enclave_outcome(policy: str, outcome: str) -> None:
    """/a's enclave (16 pages, VA, SECS) runs when misc.max of /a becomes 0: oom-v2
    reclaims its 16 pages and its SECS (the accessed bit ignored after 6 failed rounds),
    the VA page stays, the LRU is empty: the 6 empty rounds end in a kill; the thread's
    next access is SIGBUS and the outcome is "killed".  v16 lets it run to success."""
    res = epcsim.run(load_scenario(KILL.format(policy=policy)), engine="reference")
    encls = res.summary["enclaves"]
    assert encls["victim"]["outcome"] == outcome
    assert encls["bystander"]["outcome"] == "success"


@pytest.mark.slow
def test_every_builtin_runs_and_keeps_the_invariants() -> None:
    """Every built-in under oom-v2 on the reference engine: the model's invariants hold
    at the end, and the summaries differ from v16's on at least one."""
    differs = []
    for name, _ in epcsim.list_builtins():
        sc = load_resolved(f"builtin:{name}", ("host.policy=oom-v2",))
        sim = Simulation(sc, engine="reference")
        res = sim.run()
        check_invariants(sim.host)
        assert res.summary["policy"] == "oom-v2"
        base = epcsim.run(f"builtin:{name}", engine="reference").summary
        differs.append(
            {k: v for k, v in base.items() if k != "policy"}
            != {k: v for k, v in res.summary.items() if k != "policy"}
        )
    assert any(differs)


IGNORE_KILLED = """
[[expect]]
name = "both succeed"
enclaves = ["victim", "bystander"]
outcome = "success"
ignore_killed = {ignore}
"""


@pytest.mark.parametrize(
    ("ignore", "passed", "detail"),
    [
        ("true", True, "all success: bystander=success"),
        ("false", False, "all success: victim=killed, bystander=success"),
    ],
)
def test_ignore_killed_leaves_out_an_oom_killed_enclave(
    ignore: str, passed: bool, detail: str
) -> None:
    """The victim of KILL is killed by oom-v2's EPC OOM killer (no ``[[at]] kill``):
    ``ignore_killed`` leaves it out, so "all success" holds over the bystander alone;
    without it the victim's outcome ``killed`` fails the verdict."""
    sc = load_scenario(KILL.format(policy="oom-v2") + IGNORE_KILLED.format(ignore=ignore))
    res = epcsim.run(sc, engine="reference")
    assert res.summary["enclaves"]["victim"]["outcome"] == "killed"
    assert res.summary["expectations"] == [
        {"name": "both succeed", "passed": passed, "detail": detail}
    ]
    assert res.summary["passed"] is passed


def test_an_enclave_killed_in_user_space_has_an_error() -> None:
    """The victim of KILL runs on hits in user space when it is OOM-killed (its 16 pages
    resident, no ioctl): its thread's next access is SIGBUS (exit status 135); its error
    names the OOM killer, the policy and the signal.  The bystander has none.  (The
    compiled engine runs no ``[[at]]``: the reference engine only.)"""
    res = epcsim.run(load_scenario(KILL.format(policy="oom-v2")), engine="reference")
    victim = res.summary["enclaves"]["victim"]
    assert (victim["outcome"], victim["exit_status"]) == ("killed", 135)
    assert victim["error"] == "enclave killed by the EPC OOM killer (policy oom-v2): SIGBUS"
    assert res.summary["enclaves"]["bystander"]["error"] == ""
