"""The metrics of ``epcsim compare`` on small fixed inputs, each derived by hand in the
comments (docs/COMPARE.md gives the formulas)."""

from __future__ import annotations

import pytest

from epcsim import Host, policies
from epcsim.compare import (
    cpu_time,
    failures,
    fairness,
    overshoot,
    parse_policies,
    parse_seeds,
    scan_cost,
    tenant_metrics,
    time_averaged_reclaimable,
)
from epcsim.errors import EpcsimError
from epcsim.kernel.constants import PAGE_SIZE
from epcsim.kernel.hooks import Episode, pages_needed


def ep(
    kind: str,
    scope: str,
    needed: int,
    reclaimed: dict,
    scanned: dict | None = None,
    started: int = 0,
    ended: int = 0,
) -> dict:
    return {
        "kind": kind,
        "root": scope,
        "scope": scope,
        "needed": needed,
        "calls": 1,
        "isolated": sum((scanned or reclaimed).values()),
        "scanned": scanned if scanned is not None else dict(reclaimed),
        "reclaimed": reclaimed,
        "started_ns": started,
        "ended_ns": ended,
    }


#: /p (no pages of its own) over /p/a and /p/b; a ksgxd episode at the root
LOG = [
    ep("sync", "/p", 1, {"/p/a": 16}),
    ep("sync", "/p", 2, {"/p/a": 14, "/p/b": 2}),
    ep("async", "/p", 33, {"/p/b": 8, "/p/a": 0}),
    ep("ksgxd", "/", 0, {"/p/a": 5}),
]
AVG = {"/": 0.0, "/p": 0.0, "/p/a": 100.0, "/p/b": 300.0}


def test_fairness_by_hand() -> None:
    f = fairness(LOG, AVG)
    p = f["scopes"]["/p"]
    # /p reclaimed a = 16 + 14 + 0 = 30, b = 2 + 8 = 10: R = 40 over 3 episodes; the
    # shares are 100 : 300 of 400, so ideal a = 40 * 100/400 = 10, b = 30
    assert (p["episodes"], p["reclaimed"], p["avg_reclaimable"]) == (3, 40, 400.0)
    assert p["cgroups"]["/p/a"] == {
        "reclaimed": 30,
        "avg_reclaimable": 100.0,
        "ideal": 10.0,
        "ratio": 3.0,
    }
    assert p["cgroups"]["/p/b"]["ratio"] == pytest.approx(1 / 3)
    # /p has no share (ideal 0): no ratio, left out of the statistics
    assert p["cgroups"]["/p"]["ratio"] is None
    # ratios 3 and 1/3: mean 5/3, population stddev |3 - 1/3| / 2 = 4/3 -> CV 0.8;
    # max/min = 3 / (1/3) = 9; pages 30 and 10: mean 20, stddev 10 -> 0.5
    assert p["cv"] == pytest.approx(0.8)
    assert p["max_min"] == pytest.approx(9.0)
    assert p["reclaimed_cv"] == pytest.approx(0.5)
    # the root: R = 5, ideal a = 1.25, b = 3.75; ratios 4 and 0: mean 2, stddev 2 -> CV
    # 1; the min is 0 (b lost nothing), so no max/min
    r = f["scopes"]["/"]
    assert r["cv"] == pytest.approx(1.0)
    assert r["max_min"] is None
    assert r["reclaimed_cv"] == pytest.approx(1.0)  # pages 5 and 0
    assert f["headline"] == "/p"  # 40 pages > 5


def test_fairness_counts_pages_taken_outside_the_scope() -> None:
    # /a's episode took 10 of its own pages and 10 of /b's: R = 20, all of it /a's share
    # (ideal 20, ratio 0.5); /b is listed with ideal 0 and no ratio
    s = fairness([ep("sync", "/a", 1, {"/a": 10, "/b": 10})], {"/a": 50.0, "/b": 50.0})
    a = s["scopes"]["/a"]
    assert a["outside"] == 10 and a["cgroups"]["/a"]["ratio"] == 0.5
    assert a["cgroups"]["/b"] == {
        "reclaimed": 10,
        "avg_reclaimable": 50.0,
        "ideal": 0.0,
        "ratio": None,
    }
    assert a["cv"] == 0.0  # one ratio


def test_fairness_of_equal_shares_is_zero() -> None:
    log = [ep("ksgxd", "/", 64, {"/a": 32, "/b": 32})]
    s = fairness(log, {"/": 0.0, "/a": 50.0, "/b": 50.0})["scopes"]["/"]
    assert (s["cv"], s["max_min"], s["reclaimed_cv"]) == (0.0, 1.0, 0.0)


def test_overshoot_by_hand() -> None:
    o = overshoot(LOG)
    # per episode reclaimed / needed: 16/1 = 16, 16/2 = 8, 8/33; the ksgxd episode
    # needed 0 pages: left out
    assert o["episodes"] == 3 and o["not_needed"] == 1
    assert o["mean"] == pytest.approx((16 + 8 + 8 / 33) / 3)
    # p99 of [8/33, 8, 16] by linear interpolation: rank 0.99 * 2 = 1.98 -> 8 + 0.98 * 8
    assert o["p99"] == pytest.approx(15.84)
    # sync alone: [8, 16]: mean 12, rank 0.99 -> 8 + 0.99 * 8
    assert o["by_kind"]["sync"] == {"episodes": 2, "mean": 12.0, "p99": pytest.approx(15.92)}
    assert o["by_kind"]["async"]["mean"] == pytest.approx(8 / 33)
    assert set(o["by_kind"]) == {"sync", "async"}


def test_time_averaged_reclaimable_by_hand() -> None:
    # a: 0 for [0, 10), 10 for [10, 30); b: absent (0) for [0, 10), 4 for [10, 30)
    # (an enclave row of the time series has no cgroup and no value: skipped)
    avg = time_averaged_reclaimable(
        [0, 10, 10, 10, 30, 30], ["/a", "/a", "/b", None, "/a", "/b"], [0, 10, 4, None, 0, 0]
    )
    assert avg == {"/a": pytest.approx(200 / 30), "/b": pytest.approx(80 / 30)}
    assert time_averaged_reclaimable([5, 5], ["/a", "/b"], [3, 0]) == {"/a": 3.0, "/b": 0.0}


def test_cpu_time_and_scan_cost_by_hand() -> None:
    log = [
        ep("ksgxd", "/", 10, {"/a": 16}, {"/a": 32}, started=100, ended=400),
        ep("async", "/a", 5, {"/a": 4}, {"/a": 16}, started=150, ended=250),
        ep("sync", "/a", 1, {"/a": 0}, {"/a": 16}, started=900, ended=-1),  # under way
    ]
    assert cpu_time(log, 1000) == {
        "ksgxd": 300,
        "async": 100,
        "sync": 100,  # to the end of the run, 1000
        "direct": 0,
        "alloc": 0,
    }
    # scanned 32 + 16 + 16 = 64 for 16 + 4 = 20 reclaimed
    assert scan_cost(log) == {
        "scanned": 64,
        "reclaimed": 20,
        "per_reclaimed": 3.2,
        "source": "episodes",
    }
    # summary.json's pages_scanned wins when every cgroup has it
    cgs = {"/": {"pages_scanned": 0}, "/a": {"pages_scanned": 80}}
    assert scan_cost(log, cgs)["per_reclaimed"] == 4.0
    assert scan_cost(log, cgs)["source"] == "summary"
    assert scan_cost(log, {"/": {}, "/a": {"pages_scanned": 80}})["source"] == "episodes"
    assert scan_cost([])["per_reclaimed"] is None


SUMMARY = {
    "cgroups": {
        "/": {"evictions": 0, "enomem": 0},
        "/a": {"evictions": 20, "enomem": 3},
    },
    "enclaves": {
        "e": {
            "cgroup": "/a",
            "outcome": "failure",
            "exit_status": 135,
            "accesses": 7,
            "fault_retries": 2,
            "slowdown": 1.5,
            "pages_evicted": 12,
            "started_ns": 10,
            "ended_ns": 110,
        },
        "f": {
            "cgroup": "/a",
            "outcome": "killed",
            "exit_status": 137,
            "accesses": 3,
            "fault_retries": 0,
            "slowdown": 4.0,
            "pages_evicted": 8,
            "started_ns": 0,
            "ended_ns": -1,
        },
        "g": {
            "cgroup": "/",
            "outcome": "stuck",
            "exit_status": None,
            "accesses": 1,
            "fault_retries": 9,
            "slowdown": None,
            "pages_evicted": 0,
            "started_ns": 0,
            "ended_ns": -1,
        },
    },
}


def test_failures_by_hand() -> None:
    assert failures(SUMMARY) == {"sigbus": 1, "enomem": 3, "oom_kills": 1, "stuck": 1}


def test_tenant_metrics_derive_what_the_summary_lacks() -> None:
    log = [
        ep("ksgxd", "/", 10, {"/a": 16}, {"/a": 32}),
        ep("sync", "/a", 1, {"/a": 4}, {"/a": 16}),
    ]
    cgroups, enclaves = tenant_metrics(SUMMARY, log)
    a = cgroups["/a"]
    assert a["pages_reclaimed"] == {"total": 20, "ksgxd": 16, "async": 0, "sync": 4, "direct": 0}
    assert (a["pages_scanned"], a["accesses"], a["retries"], a["slowdown"]) == (48, 10, 2, 4.0)
    assert a["fault_latency_ns"] is None and a["miss_ratio"] is None
    e = enclaves["e"]
    assert (e["pages_reclaimed"], e["retries"], e["completion_ns"]) == ({"total": 12}, 2, 100)
    assert enclaves["f"]["completion_ns"] is None  # never ended


def test_tenant_metrics_take_the_summary_keys_when_present() -> None:
    lat = {"count": 4, "p50": 10, "p90": 20, "p99": 30, "max": 40}
    pr = {"total": 5, "ksgxd": 5, "async": 0, "sync": 0, "direct": 0}
    s = {
        "cgroups": {
            "/a": {
                "evictions": 5,
                "fault_latency_ns": lat,
                "pages_reclaimed": pr,
                "pages_scanned": 99,
                "pages_rotated": 7,
                "miss_ratio": 0.25,
            }
        },
        "enclaves": {
            "e": {
                "cgroup": "/a",
                "fault_latency_ns": lat,
                "slowdown": 2.0,
                "retries": 1,
                "completion_ns": 50,
                "pages_reclaimed": pr,
                "fault_retries": 1,
                "pages_evicted": 5,
                "started_ns": 0,
                "ended_ns": 50,
            }
        },
    }
    cgroups, enclaves = tenant_metrics(s, [])
    assert cgroups["/a"]["fault_latency_ns"] == lat
    assert (cgroups["/a"]["pages_scanned"], cgroups["/a"]["pages_rotated"]) == (99, 7)
    assert cgroups["/a"]["pages_reclaimed"] == pr and enclaves["e"]["pages_reclaimed"] == pr


def test_pages_needed_by_hand() -> None:
    h = Host("4MiB")  # 1024 pages
    h.fs.write("/cgroup.subtree_control", "+misc")
    h.fs.mkdir("/p")
    h.fs.write("/p/misc.max", f"sgx_epc {200 * PAGE_SIZE}")
    h.fs.write("/p/cgroup.subtree_control", "+misc")
    h.fs.mkdir("/p/a")
    h.fs.write("/p/a/misc.max", f"sgx_epc {300 * PAGE_SIZE}")
    a, p = h.sgx_cgroup_of("/p/a"), h.sgx_cgroup_of("/p")
    # usages set by hand (the formula only): a 150 pages, p 210 (its subtree)
    a.cg.usage, p.cg.usage = 150 * PAGE_SIZE, 210 * PAGE_SIZE
    # sync: /p/a: 150 + 1 - 300 = -149; /p: 210 + 1 - 200 = 11; /: 0 + 1 - 1024
    assert pages_needed(h, Episode("sync", a)) == (11, p)
    # async: the smallest limit up to the root is /p's 200 > SGX_CG_LOW_LIMIT (128), so
    # the threshold is 200 - 32 = 168; a's own usage 150 - 168 + 1
    assert pages_needed(h, Episode("async", a)) == (-17, p)
    assert pages_needed(h, Episode("direct", p)) == (210 - 168 + 1, p)
    free = h.epc.nr_free_pages
    root = h.sgx_cg_root
    assert pages_needed(h, Episode("ksgxd", root)) == (64 - free, root)
    assert pages_needed(h, Episode("direct", root)) == (32 - free, root)
    assert pages_needed(h, Episode("alloc", root)) == (1 - free, root)


def test_parse_policies_and_seeds() -> None:
    assert parse_policies("v16") == ["v16"]
    with pytest.raises(EpcsimError) as e:
        parse_policies("v16,nope")
    known = ", ".join(policies.names())
    assert str(e.value) == f"policies: unknown policy 'nope'; known: {known}"
    with pytest.raises(EpcsimError) as e:
        parse_policies("v16,v16")
    assert str(e.value) == "policies: 'v16' is named twice"
    assert parse_policies("all") == policies.names()
    assert parse_seeds("1..5") == [1, 2, 3, 4, 5]
    assert parse_seeds("7") == [7] and parse_seeds("3,1") == [3, 1]
    with pytest.raises(EpcsimError) as e:
        parse_seeds("5..1")
    assert str(e.value) == "seeds: empty range '5..1' (FROM..TO needs FROM <= TO)"
    with pytest.raises(EpcsimError) as e:
        parse_seeds("1-5")
    assert str(e.value) == "seeds: expected FROM..TO, N or N,N,..., got '1-5'"
    with pytest.raises(EpcsimError, match="named twice"):
        parse_seeds("1,1")
