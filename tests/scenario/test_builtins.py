"""The built-in scenarios: each loads, runs with ``simulate("builtin:NAME")`` and passes
its expectations; fast variants (``--set`` overrides) keep the suite quick; the
behaviour each built-in's description claims is checked against its summary; runs are
deterministic for a seed."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from epcsim.result import Result
from epcsim.scenario import list_builtins, load_scenario
from epcsim.sim.engine import simulate

PAGE = 4096
BUILTINS = ("kselftest", "noisy-neighbour", "overcommit", "nested-fairness")

#: --set overrides that shrink each built-in to about a second of wall time
FAST: dict[str, tuple[str, ...]] = {
    "kselftest": ("host.epc=16MiB",),
    "noisy-neighbour": ("enclave.1.workload.duration=40ms", "enclave.0.workload.accesses=600_000"),
    "overcommit": (
        "host.epc=8MiB",
        "enclave.0.workload.accesses=20_000",
        "enclave.1.workload.accesses=20_000",
        "enclave.2.workload.accesses=20_000",
    ),
    "nested-fairness": (
        "enclave.0.workload.duration=15ms",
        "enclave.1.workload.duration=15ms",
        "enclave.2.workload.duration=15ms",
    ),
}
#: built-ins whose default run takes more than 15 s of wall time on a 2-core machine
SLOW = {"kselftest"}

#: /p's limit no longer wakes ksgxd when reached: the leaves livelock
#: (sgx_cgroup_should_reclaim() looks at the requester's own usage, v16 patch 10)
LIVELOCK = ("cgroup.0.max=capacity/2", "host.duration=20ms")


@cache
def run(name: str, overrides: tuple[str, ...] = (), seed: int | None = None) -> Result:
    """One run per (name, overrides, seed) for the whole module."""
    return simulate(f"builtin:{name}", overrides=overrides, seed=seed)


def failed(r: Result) -> list[str]:
    return [f"{x['name']}: {x['detail']}" for x in r.summary["expectations"] if not x["passed"]]


def default_params() -> list:
    return [
        pytest.param(n, marks=pytest.mark.slow) if n in SLOW else pytest.param(n) for n in BUILTINS
    ]


# ------------------------------------------------------------------ every built-in


def test_the_four_builtins_are_listed() -> None:
    assert set(BUILTINS) <= {n for n, _ in list_builtins()}


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_loads(name: str) -> None:
    sc = load_scenario(f"builtin:{name}")
    assert sc.name == name
    assert sc.expect
    assert load_scenario(f"builtin:{name}", overrides=list(FAST[name])).name == name


@pytest.mark.parametrize("name", default_params())
def test_builtin_runs_and_passes(name: str) -> None:
    r = run(name)
    s = r.summary
    assert r.passed and s["passed"], failed(r)
    assert not s["truncated"]
    assert s["scenario"] == name
    assert s["scenario_hash"] == load_scenario(f"builtin:{name}").digest()


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_fast_variant_passes(name: str) -> None:
    r = run(name, FAST[name])
    assert r.passed, failed(r)
    assert not r.summary["truncated"]


def test_kselftest_16mib_passes_all_seven() -> None:
    r = run("kselftest", FAST["kselftest"])
    s = r.summary
    assert s["capacity_bytes"] == 16 << 20
    names = [x["name"] for x in s["expectations"]]
    assert len(names) == 7
    assert [n.split(" ")[0] for n in names] == ["Test"] * 6 + ["leak"]
    assert all(x["passed"] for x in s["expectations"]), failed(r)
    by = {k: v["outcome"] for k, v in s["enclaves"].items()}
    assert by["A"] == "failure"
    assert by["E#3"] == "killed"
    assert all(by[f"D#{k}"] == "success" for k in range(8))
    assert all(by[f"F#{k}"] == "failure" for k in range(4))


# ------------------------------------------------------------------ determinism


@pytest.mark.parametrize("name", BUILTINS)
def test_same_seed_same_result(name: str) -> None:
    a = run(name, FAST[name])
    b = simulate(f"builtin:{name}", overrides=FAST[name])
    assert a.summary == b.summary
    assert a.timeseries.equals(b.timeseries)
    assert np.array_equal(a.fault_latency_ns, b.fault_latency_ns)


def test_seed_argument_overrides_host_seed() -> None:
    fast = FAST["nested-fairness"]
    a = run("nested-fairness", fast, seed=7)
    b = run("nested-fairness", (*fast, "host.seed=7"))
    assert a.summary["seed"] == b.summary["seed"] == 7
    assert a.summary["enclaves"] == b.summary["enclaves"]
    c = run("nested-fairness", fast)
    assert c.summary["seed"] == 1
    assert c.summary["enclaves"] != a.summary["enclaves"]


# ------------------------------------------------------------------ noisy-neighbour


def test_noisy_neighbour_quiet_tenant_is_unaffected() -> None:
    s = run("noisy-neighbour").summary
    quiet, noisy = s["enclaves"]["quiet"], s["enclaves"]["noisy"]
    cq, cn = s["cgroups"]["/tenants/quiet"], s["cgroups"]["/tenants/noisy"]
    # the quiet tenant: every access a hit after its build, nothing taken from it
    assert quiet["outcome"] == "success"
    assert quiet["accesses"] == 4_000_000
    assert quiet["faults"] == quiet["fault_retries"] == quiet["pages_evicted"] == 0
    assert quiet["slowdown"] == 1.0
    assert cq["evictions"] == cq["max_events"] == cq["reclaim_batches"] == 0
    assert cq["peak_bytes"] < cq["limit_bytes"]
    # the noisy tenant thrashes against its own limit
    assert noisy["outcome"] == "success"
    assert noisy["faults"] > 0.8 * noisy["accesses"]
    assert noisy["slowdown"] > 50
    assert cn["peak_bytes"] == cn["limit_bytes"]
    assert cn["max_events_local"] > 0 and cn["evictions"] > 0
    # the EPC never ran low: no global reclaim (the root is visited by every global pass)
    assert s["cgroups"]["/"]["reclaim_batches"] == 0
    assert s["cgroups"]["/"]["peak_bytes"] <= s["capacity_bytes"] - 32 * PAGE


def test_noisy_neighbour_quiet_alone_is_the_same() -> None:
    """With the noisy tenant never started, the quiet one's record is identical."""
    fast = FAST["noisy-neighbour"]
    with_noisy = run("noisy-neighbour", fast).summary["enclaves"]["quiet"]
    alone = run("noisy-neighbour", (*fast, "enclave.1.start=manual")).summary
    assert alone["enclaves"]["noisy"]["outcome"] == "not started"
    assert alone["enclaves"]["quiet"] == with_noisy


# ------------------------------------------------------------------ overcommit


def test_overcommit_fills_the_epc_and_ksgxd_shares_it() -> None:
    s = run("overcommit").summary
    cap = s["capacity_bytes"]
    leaves = [s["cgroups"][p] for p in ("/a", "/b", "/c")]
    root = s["cgroups"]["/"]
    assert sum(c["limit_bytes"] for c in leaves) == 3 * cap // 2
    # charges fail at the root's capacity, never at a cgroup's own limit
    assert root["peak_bytes"] == cap
    assert root["max_events_local"] > 0
    for c in leaves:
        assert c["max_events"] == 0
        assert c["peak_bytes"] < c["limit_bytes"]
        assert c["evictions"] > 0
    # the root cursor gives every cgroup one batch per cycle
    batches = [c["reclaim_batches"] for c in leaves]
    assert min(batches) >= root["reclaim_batches"] > 0
    assert max(batches) - min(batches) <= 0.05 * max(batches)
    for name in ("a", "b", "c"):
        e = s["enclaves"][name]
        assert e["outcome"] == "success" and e["accesses"] == 100_000
        assert e["fault_retries"] > 0  # faults waited for ksgxd (VM_FAULT_NOPAGE)


# ------------------------------------------------------------------ nested-fairness


def test_nested_fairness_rotation_and_who_loses() -> None:
    s = run("nested-fairness").summary
    cg = s["cgroups"]
    # /p's limit is the one that binds
    assert cg["/p"]["max_events_local"] > 0
    assert cg["/p"]["peak_bytes"] == cg["/p"]["limit_bytes"]
    for p in ("/p/a", "/p/b", "/p/b/x", "/p/b/y"):
        assert cg[p]["max_events"] == 0
    # preorder rotation: every cgroup of the tree gets one batch per cycle; the empty
    # interior ones (/, /p, /p/b) only through ksgxd, the leaves also through their own
    # build-time sync reclaim
    cycle = cg["/"]["reclaim_batches"]
    assert cycle > 100
    for p in ("/p", "/p/b"):
        assert abs(cg[p]["reclaim_batches"] - cycle) <= 1
        assert cg[p]["evictions"] == 0
    leaves = {n: cg[p] for n, p in (("a", "/p/a"), ("x", "/p/b/x"), ("y", "/p/b/y"))}
    extra = [c["reclaim_batches"] - cycle for c in leaves.values()]
    assert all(0 <= d <= 0.05 * cycle for d in extra)
    # ... but the evictions are not shared: the leaf that still faults loses most
    ev = {n: c["evictions"] for n, c in leaves.items()}
    slow = {n: s["enclaves"][n]["slowdown"] for n in leaves}
    loser = max(ev, key=ev.get)
    assert loser == max(slow, key=slow.get)
    assert ev[loser] > 2 * min(ev.values())


def test_nested_fairness_ancestor_limit_below_ksgxd_watermark_livelocks() -> None:
    """With /p.max = capacity/2 a full /p leaves plenty of free EPC: ksgxd never runs, no
    one reclaims from /p, and each leaf's faults retry for ever (sgx_cgroup_should_reclaim() looks
    at the requester's own usage, v16 patch 10)."""
    r = run("nested-fairness", LIVELOCK)
    s = r.summary
    assert s["truncated"] and not r.passed
    assert s["cgroups"]["/"]["reclaim_batches"] == 0
    assert s["cgroups"]["/p"]["usage_bytes"] == s["cgroups"]["/p"]["limit_bytes"]
    for n in ("a", "x", "y"):
        e = s["enclaves"][n]
        assert e["outcome"] == "stuck"
        assert e["fault_retries"] > 100 * max(e["faults"], 1)


def test_noisy_neighbour_threads_that_ran_their_duration_are_not_stuck() -> None:
    noisy = run("noisy-neighbour", FAST["noisy-neighbour"]).summary["enclaves"]["noisy"]
    assert noisy["outcome"] == "success"
    assert noisy["stuck_threads"] == 0
