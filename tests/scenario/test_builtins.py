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


# ------------------------------------------------------------------ issue 14's built-ins

#: the built-ins of issue 14 (docs/FINDINGS.md): (name, slow)
FINDINGS_BUILTINS = {
    "empty-lru-race": False,
    "parent-livelock": False,
    "oom-batch-kills": False,
    "root-bias": False,
    "lower-limit": False,
    "fairness-128": True,
}


@cache
def ref(name: str, overrides: tuple[str, ...] = (), seed: int | None = None) -> Result:
    """One reference-engine run per (name, overrides, seed)."""
    return simulate(f"builtin:{name}", overrides=overrides, seed=seed, engine="reference")


def test_the_findings_builtins_are_listed_with_a_description() -> None:
    listed = dict(list_builtins())
    for name in FINDINGS_BUILTINS:
        assert name in listed
        sc = load_scenario(f"builtin:{name}")
        assert sc.name == name and sc.expect
        assert "What the model gives" in sc.description
        assert "A comparison across policies should show" in sc.description
        assert "v16 patch" in sc.description


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if s else n for n, s in FINDINGS_BUILTINS.items()],
)
def test_findings_builtin_passes_its_expectations(name: str) -> None:
    r = ref(name)
    assert r.passed and r.summary["passed"], failed(r)
    assert r.summary["scenario_hash"] == load_scenario(f"builtin:{name}").digest()


@pytest.mark.parametrize("name", [n for n, s in FINDINGS_BUILTINS.items() if not s])
def test_findings_builtin_same_seed_same_result(name: str) -> None:
    a = ref(name)
    b = simulate(f"builtin:{name}", engine="reference")
    assert a.summary == b.summary
    assert a.timeseries.equals(b.timeseries)
    assert np.array_equal(a.fault_latency_ns, b.fault_latency_ns)


def test_empty_lru_race_sigbus_after_one_retry() -> None:
    s = ref("empty-lru-race").summary
    e = s["enclaves"]["e"]
    assert (e["outcome"], e["exit_status"], e["faults"], e["fault_retries"]) == (
        "failure",
        135,
        0,
        1,
    )
    assert e["pages_added"] == 64
    a = s["cgroups"]["/a"]
    assert a["limit_bytes"] == 18 * PAGE and a["peak_bytes"] == 18 * PAGE
    assert a["enomem"] == 1


def test_ancestor_livelock_leaves_stuck_and_late_build_enomem() -> None:
    r = ref("parent-livelock")
    s = r.summary
    assert not s["truncated"]
    for n in ("a", "b"):
        e = s["enclaves"][n]
        assert e["outcome"] == "stuck" and e["stuck_threads"] == 1 and e["exit_status"] is None
        assert e["fault_retries"] == 10_000
    late = s["enclaves"]["late"]
    assert late["error"] == "SGX_IOC_ENCLAVE_CREATE: ENOMEM (Cannot allocate memory)"
    assert late["pages_added"] == 0
    cg = s["cgroups"]
    # no reclaim after the builds: ksgxd never ran, the leaves only reclaimed while building
    assert cg["/"]["reclaim_batches"] == cg["/p"]["reclaim_batches"] == 0
    assert cg["/p/a"]["reclaim_batches"] == cg["/p/b"]["reclaim_batches"] == 17
    assert cg["/p"]["usage_bytes"] == cg["/p"]["limit_bytes"] == s["capacity_bytes"] // 2
    assert cg["/p/a"]["max_events"] == cg["/p/b"]["max_events"] == 0
    assert cg["/p/c"]["enomem"] == 1


def test_oom_batch_kills_three_sigkills_one_survivor() -> None:
    s = ref("oom-batch-kills").summary
    by = {n: (e["outcome"], e["exit_status"]) for n, e in s["enclaves"].items()}
    assert by == {
        "e#0": ("success", 0),
        "e#1": ("failure", 137),
        "e#2": ("failure", 137),
        "e#3": ("failure", 137),
    }
    assert s["enclaves"]["e#0"]["accesses"] == 4000
    # the victims say what killed them (the error was empty: a bare "failure", 137)
    assert {n: e["error"] for n, e in s["enclaves"].items()} == {
        "e#0": "",
        **{f"e#{k}": "killed by SIGKILL (memcg OOM)" for k in (1, 2, 3)},
    }


def test_root_bias_global_reclaim_takes_the_roots_share() -> None:
    s = ref("root-bias").summary
    cg = s["cgroups"]
    ev = {p: cg[p]["evictions"] for p in ("/", "/a", "/b", "/c")}
    assert ev == {"/": 2704, "/a": 2739, "/b": 2740, "/c": 2748}
    assert 0.24 < ev["/"] / sum(ev.values()) < 0.26  # its share of the pages: 1/4
    batches = [cg[p]["reclaim_batches"] for p in ("/", "/a", "/b", "/c")]
    assert max(batches) - min(batches) <= 2
    # only global reclaim: the charges failed at the root's capacity, no child has a limit
    assert cg["/"]["max_events_local"] > 0
    for p in ("/a", "/b", "/c"):
        assert cg[p]["limit_bytes"] is None and cg[p]["max_events"] == 0
    for n in ("r", "a", "b", "c"):
        assert s["enclaves"][n]["accesses"] == 4000
    assert s["enclaves"]["r"]["cgroup"] == "/"


def test_lower_limit_write_reclaims_nothing_new_charges_do() -> None:
    r = ref("lower-limit")
    s = r.summary
    assert s["truncated"] and s["sim_time_ns"] == 20_000_000
    assert [o["result"] for o in s["ops"]] == ["ok", "ok", "ok"]
    a, b = s["cgroups"]["/a"], s["cgroups"]["/b"]
    assert a["evictions"] == a["reclaim_batches"] == a["max_events"] == 0
    assert s["enclaves"]["resident"]["faults"] == 0
    assert s["enclaves"]["resident"]["outcome"] == s["enclaves"]["held"]["outcome"] == "running"
    assert b["evictions"] > 0 and b["max_events"] > 0
    ts = r.timeseries.to_pydict()
    rows = list(zip(ts["time_ns"], ts["cgroup"], ts["usage_bytes"], ts["limit_bytes"], strict=True))
    after = [(t, u, lim) for t, c, u, lim in rows if c == "/a" and t >= 2_000_000]
    assert after and all(u == 202 * PAGE and lim == 128 * PAGE for _, u, lim in after)
    # /b: above its new limit from the write until the newcomer's charges reclaim it
    b_rows = {t: (u, lim) for t, c, u, lim in rows if c == "/b"}
    assert b_rows[3_000_000] == (202 * PAGE, 128 * PAGE)
    assert all(u <= lim for t, (u, lim) in b_rows.items() if t >= 5_000_000)


@pytest.mark.slow
def test_fairness_128_only_ksgxd_reclaims_the_parent() -> None:
    s = ref("fairness-128").summary
    cg = s["cgroups"]
    leaves = [c for p, c in cg.items() if p.startswith("/t/")]
    assert len(leaves) == 128
    assert all(e["outcome"] == "success" for e in s["enclaves"].values())
    assert cg["/t"]["peak_bytes"] == cg["/t"]["limit_bytes"] == s["capacity_bytes"] - 16 * PAGE
    assert cg["/t"]["max_events_local"] > 0
    cycles = cg["/"]["reclaim_batches"]
    assert cycles == 3
    # the leaves' async work never reclaims: every leaf batch is one of ksgxd's turns
    assert all(cycles - 1 <= c["reclaim_batches"] <= cycles for c in leaves)
    assert all(c["max_events"] == 0 for c in leaves)


def test_every_builtin_has_a_row_in_the_scenarios_doc_table() -> None:
    """docs/SCENARIOS.md, "Built-in scenarios": the table has one row per built-in of
    src/epcsim/scenario/builtins/ (first column `` `NAME` ``), and no other."""
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "SCENARIOS.md").read_text()
    section = doc.split("\n## Built-in scenarios\n", 1)[1]
    rows = [ln for ln in section.split("\n### ", 1)[0].splitlines() if ln.startswith("| `")]
    names = [ln.split("|")[1].strip().strip("`") for ln in rows]
    assert len(names) == len(set(names))
    assert sorted(names) == sorted(n for n, _ in list_builtins())
