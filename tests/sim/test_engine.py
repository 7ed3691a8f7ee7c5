"""The simulator: cost accounting, faults, limits, reclaim, timed operations, outputs.

Scenarios are small TOML strings (1-8 MiB of EPC, virtual runs of a few ms).  Where the
model makes a value exact (no reclaim, no races) it is pinned from the ``CostModel``
defaults and the engine's accounting: a step costs the ENCLS leaves it executed plus one
``kernel_step``; ECREATE is one step, ADD_PAGES one step per page plus the final return,
EINIT one step; a fault costs its leaves + ``kernel_step`` + ``fault``; a run of resident
hits costs ``n * access``.

Series citations: sgx_alloc_epc_page(), sgx_cgroup_try_charge() and
sgx_cgroup_reclaim_work_func() (v16 patches 5, 9, 10, 14; the async work stops on the
requester's own usage), ksgxd() (v16 patch 14), sgx_reclaim_direct() before each EDMM page
(v16 patch 13), misc_cg_try_charge() (hierarchical charge, max events; kernel/cgroup/misc.c),
cgroup_disable=misc (everything on the root).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

import epcsim
from epcsim.errors import ScenarioError
from epcsim.result import TIMESERIES_SCHEMA
from epcsim.scenario import load_scenario
from epcsim.sim import CostModel, Result, Simulation, simulate

P = 4096
C = CostModel()
MS = 1_000_000

HOST = """
[host]
epc = "{epc}"
duration = "{duration}"
sample_interval = "1ms"
misc = {misc}
sgx2 = {sgx2}
"""


def host(epc="4MiB", duration="0.2s", misc=True, sgx2=True) -> str:
    return HOST.format(epc=epc, duration=duration, misc=str(misc).lower(), sgx2=str(sgx2).lower())


@functools.lru_cache(maxsize=16)
def run(toml: str, seed: int | None = None) -> tuple[Simulation, Result]:
    """Simulate *toml* (cached: tests only read the result)."""
    sim = Simulation(load_scenario(toml), seed=seed)
    return sim, sim.run()


def rows(result: Result, cgroup: str | None = None) -> list[dict]:
    """The time series' cgroup rows as a list of row dicts (optionally one cgroup's;
    the per-enclave rows, whose cgroup is null, left out)."""
    out = result.timeseries.to_pylist()
    return [r for r in out if r["cgroup"] is not None and (cgroup is None or r["cgroup"] == cgroup)]


def with_costs(toml: str, *lines: str) -> str:
    """*toml* with a ``[host.costs]`` table of *lines* appended."""
    return toml + "\n[host.costs]\n" + "\n".join(lines) + "\n"


def build_cost(pages: int, costs: CostModel = C) -> int:
    """Virtual time of ECREATE + ADD_PAGES(pages, unmeasured) + EINIT without reclaim."""
    return (
        costs.ecreate
        + costs.kernel_step  # ECREATE: one step
        + pages * (costs.eadd + costs.kernel_step)  # one step per page (cond_resched)
        + costs.kernel_step  # ADD_PAGES returning
        + costs.einit
        + costs.kernel_step  # EINIT: one step
    )


# --- the cost model ---------------------------------------------------------------------

FITS = (
    host()
    + """
[[cgroup]]
path = "/a"
max = "1MiB"
[[enclave]]
name = "e"
cgroup = "/a"
size = "64KiB"
workload = { pattern = "sequential", accesses = 1000 }
"""
)


def test_cost_model_exact_time_of_a_fitting_enclave():
    """ECREATE + 16 EADD + kernel steps + EINIT + 1000 resident accesses, nothing else."""
    sim, r = run(FITS)
    s = r.summary
    npages, n = 16, 1000
    assert s["sim_time_ns"] == build_cost(npages) + n * C.access == 110_900
    assert not s["truncated"]
    e = s["enclaves"]["e"]
    assert e["outcome"] == "success" and e["exit_status"] == 0
    assert e["accesses"] == n and e["faults"] == 0 and e["fault_retries"] == 0
    assert e["slowdown"] == 1.0
    assert e["started_ns"] == 0 and e["ended_ns"] == s["sim_time_ns"]
    (th,) = sim.instances["e"].threads
    assert th.started_ns == build_cost(npages)
    assert th.ended_ns - th.started_ns == n * C.access
    assert s["encls"]["ECREATE"] == 1 and s["encls"]["EADD"] == npages
    assert s["encls"]["EINIT"] == 1 and s["encls"]["EEXTEND"] == 0
    assert s["encls"]["EWB"] == s["encls"]["ELDU"] == s["encls"]["EAUG"] == 0
    # data pages + SECS + one VA page, all freed at exit
    assert s["cgroups"]["/a"]["peak_bytes"] == (npages + 2) * P
    assert s["cgroups"]["/a"]["usage_bytes"] == 0
    # lru_scan is paid by the global-lru policy only: v16's summary does not list it
    assert s["costs_ns"] == C.model_dump(exclude={"lru_scan"})
    assert s["fault_latency"] == {} and len(r.fault_latency_ns) == 0


def test_cost_override_access_doubles_the_access_part():
    toml = with_costs(FITS, "access = 100")
    sim, r = run(toml)
    n = 1000
    costs = C.model_copy(update={"access": 100})
    assert r.summary["costs_ns"]["access"] == 100
    assert r.summary["sim_time_ns"] == build_cost(16) + n * 100
    (th,) = sim.instances["e"].threads
    assert th.ended_ns - th.started_ns == 2 * n * C.access
    # the build is unchanged; slowdown is relative to the (overridden) access cost
    assert th.started_ns == build_cost(16, costs)
    assert r.summary["enclaves"]["e"]["slowdown"] == 1.0


def test_cost_override_of_a_leaf_and_time_units():
    toml = with_costs(FITS, 'eadd = "3us"', 'einit = "20us"', "kernel_step = 10")
    _, r = run(toml)
    costs = C.model_copy(update={"eadd": 3000, "einit": 20_000, "kernel_step": 10})
    assert r.summary["sim_time_ns"] == build_cost(16, costs) + 1000 * C.access
    assert r.summary["sim_time_ns"] == 10_000 + 16 * 3000 + 20_000 + 19 * 10 + 50_000


def test_unknown_cost_key_is_a_scenario_error():
    toml = with_costs(FITS, "foo = 5")
    with pytest.raises(ScenarioError) as ei:
        load_scenario(toml)
    assert ei.value.table == "host.costs" and ei.value.field == "foo"
    with pytest.raises(ScenarioError):
        epcsim.run(toml)


def test_bad_cost_value_is_a_scenario_error():
    toml = with_costs(FITS, 'access = "5 parsecs"')
    with pytest.raises(ScenarioError) as ei:
        load_scenario(toml)
    assert ei.value.table == "host.costs" and ei.value.field == "access"


@pytest.mark.parametrize("value", ['"0ns"', "0"])
def test_zero_access_cost_is_a_scenario_error(value):
    """A zero access cost would divide by zero where a run of hits is cut at the next
    event (it was a ZeroDivisionError traceback): a scenario error naming the field."""
    toml = with_costs(FITS, f"access = {value}")
    with pytest.raises(ScenarioError, match="must be > 0") as ei:
        load_scenario(toml)
    assert ei.value.table == "host.costs" and ei.value.field == "access"
    with pytest.raises(ScenarioError):
        epcsim.run(toml)
    with pytest.raises(ScenarioError):
        epcsim.run(FITS, overrides=["host.costs.access=0"])


def test_zero_cost_of_an_encls_leaf_is_allowed():
    _, r = run(with_costs(FITS, "eadd = 0"))
    assert r.summary["sim_time_ns"] > 0


# --- faults ----------------------------------------------------------------------------


@pytest.mark.parametrize("npages", [1, 16, 40])
def test_eaug_enclave_faults_each_page_once(npages):
    """P distinct pages touched once: P faults, P EAUGs, each fault one round trip."""
    toml = (
        host()
        + f"""
[[cgroup]]
path = "/a"
[[enclave]]
name = "e"
cgroup = "/a"
size = "{npages * P}"
build = "eaug"
workload = {{ pattern = "sequential", accesses = {npages} }}
"""
    )
    sim, r = run(toml)
    s = r.summary
    e = s["enclaves"]["e"]
    assert e["outcome"] == "success"
    assert e["faults"] == npages and e["fault_retries"] == 0 and e["accesses"] == npages
    assert s["encls"]["EAUG"] == npages and s["encls"]["EADD"] == 0
    assert s["cgroups"]["/a"]["faults"] == npages
    assert s["cgroups"]["/"]["faults"] == 0
    # misc usage = P data pages + one VA page + the SECS
    assert s["cgroups"]["/a"]["peak_bytes"] == (npages + 2) * P
    fault = C.eaug + C.kernel_step + C.fault
    assert np.array_equal(r.fault_latency_ns, np.full(npages, fault))
    assert s["fault_latency"]["count"] == npages
    assert s["fault_latency"]["p50_ns"] == s["fault_latency"]["max_ns"] == fault
    (th,) = sim.instances["e"].threads
    build = C.ecreate + C.kernel_step + C.einit + C.kernel_step  # no ADD_PAGES
    assert th.started_ns == build
    assert th.ended_ns - th.started_ns == npages * (fault + C.access)
    assert s["sim_time_ns"] == build + npages * (fault + C.access)
    assert rows(r, "/a")[-1]["faults"] == npages


def test_eaug_usage_while_alive_is_pages_plus_va_plus_secs():
    """A live EAUG enclave looping over its first 10 pages: misc.current = 10 + VA + SECS
    at every sample, and the final file read agrees."""
    toml = (
        host(duration="5ms")
        + """
[[cgroup]]
path = "/a"
[[enclave]]
name = "e"
cgroup = "/a"
size = "256KiB"
build = "eaug"
workload = { pattern = "loop", start = 0, length = 10, duration = "1s" }
[[expect]]
file = "/a/misc.current"
equals = "sgx_epc 49152"
"""
    )
    _, r = run(toml)
    s = r.summary
    assert s["truncated"] and s["sim_time_ns"] == 5 * MS
    assert s["enclaves"]["e"]["outcome"] == "running"
    assert s["enclaves"]["e"]["faults"] == 10 and s["encls"]["EAUG"] == 10
    live = [x for x in rows(r, "/a") if x["time_ns"] >= MS]
    assert live and all(x["usage_bytes"] == 12 * P for x in live)
    assert s["cgroups"]["/a"]["usage_bytes"] == 12 * P
    assert s["passed"]


EAUG16 = (
    host()
    + """
[[cgroup]]
path = "/a"
[[enclave]]
name = "e"
cgroup = "/a"
size = "64KiB"
build = "eaug"
workload = { pattern = "sequential", accesses = 16 }
"""
)


def test_eaug_pages_count_as_added():
    _, r = run(EAUG16)
    assert r.summary["encls"]["EAUG"] == 16
    assert r.summary["enclaves"]["e"]["pages_added"] == 16


def test_when_added_fires_for_an_eaug_enclave():
    toml = (
        EAUG16
        + """
[[at]]
when = { enclave = "e", added = "32KiB" }
mkdir = "/w"
"""
    )
    _, r = run(toml)
    (rec,) = r.summary["ops"]
    assert rec["op"] == "mkdir /w" and rec["result"] == "ok"
    # 8 EAUG faults in: after ECREATE + EINIT and 7 complete faults + accesses
    build = C.ecreate + C.kernel_step + C.einit + C.kernel_step
    fault = C.eaug + C.kernel_step + C.fault
    assert build + 7 * (fault + C.access) <= rec["time_ns"] <= build + 8 * (fault + C.access)


# --- limits ----------------------------------------------------------------------------

LIMITED = (
    host(misc="{misc}")
    + """
[[cgroup]]
path = "/a"
max = "256KiB"
[[enclave]]
name = "e"
cgroup = "/a"
size = "512KiB"
workload = { pattern = "loop", start = 0, length = 128, accesses = 2000 }
"""
)


def limited(misc: bool) -> str:
    return LIMITED.replace("misc = {misc}", f"misc = {str(misc).lower()}")


def test_enclave_over_its_limit_is_reclaimed_and_never_exceeds_it():
    _, r = run(limited(True))
    s = r.summary
    a = s["cgroups"]["/a"]
    limit = 256 * 1024
    assert a["limit_bytes"] == limit
    assert a["evictions"] > 0 and a["max_events"] > 0 and a["reclaim_batches"] > 0
    assert a["max_events_local"] == a["max_events"]
    assert a["peak_bytes"] <= limit
    assert s["encls"]["EWB"] > 0 and s["encls"]["ELDU"] > 0
    e = s["enclaves"]["e"]
    assert e["outcome"] == "success" and e["accesses"] == 2000
    assert e["pages_evicted"] > 0 and e["faults"] > 0 and e["slowdown"] > 1.0
    ts = rows(r, "/a")
    assert ts
    for x in ts:
        assert x["limit_bytes"] == limit
        assert x["usage_bytes"] <= x["limit_bytes"]
        assert x["peak_bytes"] <= x["limit_bytes"]
    # the root has no limit and sees the max events of no one
    assert s["cgroups"]["/"]["limit_bytes"] is None
    assert s["cgroups"]["/"]["max_events"] == 0
    assert all(x["limit_bytes"] is None for x in rows(r, "/"))


# --- baseline without the EPC cgroup (cgroup_disable=misc) ----------------------------------------


@pytest.mark.parametrize(
    "size,epc,fits", [("512KiB", "4MiB", True), ("2MiB", "1MiB", False)], ids=["fits", "over"]
)
def test_baseline_misc_disabled_everything_on_the_root(size, epc, fits):
    """misc = false: one cgroup (the root) in every output, no max events on a child,
    the enclave bounded only by the EPC's capacity."""
    toml = (
        host(epc=epc, misc=False)
        + f"""
[[enclave]]
name = "e"
size = "{size}"
workload = {{ pattern = "loop", start = 0, length = 128, accesses = 2000 }}
"""
    )
    _, r = run(toml)
    s = r.summary
    assert s["misc_enabled"] is False
    assert list(s["cgroups"]) == ["/"]
    assert {x["cgroup"] for x in rows(r)} == {"/"}
    root = s["cgroups"]["/"]
    assert root["limit_bytes"] is None
    assert root["peak_bytes"] <= s["capacity_bytes"]
    assert s["enclaves"]["e"]["outcome"] == "success"
    assert s["enclaves"]["e"]["accesses"] == 2000
    if fits:
        # fits: every page resident, no reclaim, no failed charge anywhere
        assert root["max_events"] == root["max_events_local"] == 0
        assert root["peak_bytes"] == (128 + 2) * P
        assert root["evictions"] == 0 and s["encls"]["EWB"] == 0
    else:
        assert root["peak_bytes"] == s["capacity_bytes"]
        assert root["evictions"] > 0 and s["encls"]["EWB"] > 0


def test_baseline_same_scenario_with_cgroups_runs_on_the_root():
    """The limits scenario run both ways: with misc disabled the limit does not exist and
    every page is charged to the root (sgx_get_current_cg() with misc disabled)."""
    _, r = run(limited(False))
    s = r.summary
    assert list(s["cgroups"]) == ["/"]
    assert {x["cgroup"] for x in rows(r)} == {"/"}
    root = s["cgroups"]["/"]
    assert root["max_events_local"] == 0 and root["evictions"] == 0
    assert root["peak_bytes"] == (128 + 2) * P
    e = s["enclaves"]["e"]
    assert e["outcome"] == "success" and e["faults"] == 0 and e["slowdown"] == 1.0


# --- ksgxd / global reclaim --------------------------------------------------------------

OVERCOMMIT = (
    host(epc="1MiB")
    + """
[[cgroup]]
path = "/a"
[[cgroup]]
path = "/b"
[[enclave]]
name = "x"
cgroup = "/a"
size = "768KiB"
workload = { pattern = "sequential", accesses = 1000 }
[[enclave]]
name = "y"
cgroup = "/b"
size = "768KiB"
workload = { pattern = "sequential", accesses = 1000 }
[[expect]]
enclaves = ["x", "y"]
outcome = "success"
"""
)


def test_global_reclaim_when_enclaves_exceed_the_epc():
    """No limits, 2 x 192 pages on a 256-page EPC: reclaim rooted at the root (the
    allocator's and ksgxd's) evicts from both cgroups' LRUs; everything succeeds."""
    _, r = run(OVERCOMMIT)
    s = r.summary
    assert s["passed"] and not s["truncated"]
    assert s["encls"]["EWB"] > 0 and s["encls"]["ELDU"] > 0
    root = s["cgroups"]["/"]
    # only a reclaim rooted at the root visits the root's (empty) LRU
    assert root["reclaim_batches"] > 0 and root["evictions"] == 0
    assert root["peak_bytes"] <= s["capacity_bytes"]
    for cg, name in (("/a", "x"), ("/b", "y")):
        c = s["cgroups"][cg]
        assert c["limit_bytes"] is None and c["max_events"] == 0
        assert c["evictions"] > 0
        assert c["evictions"] == s["enclaves"][name]["pages_evicted"]
        e = s["enclaves"][name]
        assert e["outcome"] == "success" and e["accesses"] == 1000
        assert e["faults"] <= c["faults"] <= e["faults"] + e["fault_retries"]
    evicted = sum(c["evictions"] for c in s["cgroups"].values())
    # every EWB is a data page counted on an LRU, or a SECS written back after its children
    assert evicted <= s["encls"]["EWB"]
    assert max(x["usage_bytes"] for x in rows(r, "/")) <= s["capacity_bytes"]


# --- async work and retries --------------------------------------------------------------

EAUG_OVER = (
    host()
    + """
[[cgroup]]
path = "/a"
max = "256KiB"
[[enclave]]
name = "e"
cgroup = "/a"
size = "512KiB"
build = "eaug"
workload = { pattern = "sequential", accesses = 1000 }
"""
)


def test_eaug_over_limit_retries_until_async_work_reclaims():
    """NO_RECLAIM charges fail with EBUSY, queue the cgroup's work and the fault is
    retried (one max event per failed attempt); the work reclaims and faults resolve."""
    _, r = run(EAUG_OVER)
    s = r.summary
    e = s["enclaves"]["e"]
    a = s["cgroups"]["/a"]
    assert e["outcome"] == "success" and e["accesses"] == 1000
    assert e["fault_retries"] > 0 and e["faults"] > 0
    # the cgroup's counter: the resolved faults of its tasks (at most every call)
    assert e["faults"] <= a["faults"] <= e["faults"] + e["fault_retries"]
    # every retried fault is one failed charge attempt, hence one max event
    # (misc_cg_event(), kernel/cgroup/misc.c)
    assert a["max_events"] == e["fault_retries"]
    # only the async work reclaims here (faults never reclaim synchronously)
    assert a["reclaim_batches"] > 0 and a["evictions"] > 0
    assert a["peak_bytes"] <= 256 * 1024
    lat = s["fault_latency"]
    assert lat["count"] == e["faults"] == len(r.fault_latency_ns)
    assert lat["p50_ns"] <= lat["p90_ns"] <= lat["p99_ns"] <= lat["max_ns"]
    assert lat["max_ns"] == int(r.fault_latency_ns.max())
    # a fault is at least one round trip; a retried one at least two
    assert r.fault_latency_ns.min() >= C.fault
    assert r.fault_latency_ns.max() >= 2 * C.fault


# --- stuck (sgx_cgroup_should_reclaim() on the requester's own usage, v16 patch 10) ---------------

STUCK = (
    host(duration="50ms")
    + """
[[cgroup]]
path = "/p"
max = "256KiB"
[[cgroup]]
path = "/p/a"
[[cgroup]]
path = "/p/b"
# a: created first, EAUGs 4 pages (so its LRU is not empty), then wants more
[[enclave]]
name = "a"
cgroup = "/p/a"
size = "128KiB"
build = "eaug"
workload = { pattern = "phases", accesses = 200000, phases = [
    { pattern = "loop", start = 0, length = 4, accesses = 100000 },
    { pattern = "sequential", accesses = 1000 } ] }
# b: fills /p exactly (56 + VA + SECS + a's 6 = 64 pages) and stays alive on its pages
[[enclave]]
name = "b"
cgroup = "/p/b"
size = "224KiB"
start = "1ms"
workload = { pattern = "loop", start = 0, length = 56, duration = "1s" }
"""
)


def test_child_under_binding_parent_limit_is_stuck():
    """/p is full; /p/a's own usage (6 pages) is far below /p's limit - 32, so its async
    work exits at once and a's fault retries until the time limit."""
    _, r = run(STUCK)
    s = r.summary
    assert s["truncated"] is True
    assert s["sim_time_ns"] == s["time_limit_ns"] == 50 * MS
    a = s["enclaves"]["a"]
    assert a["outcome"] == "stuck"
    assert a["exit_status"] is None and a["ended_ns"] == -1
    assert a["faults"] == 4 and a["fault_retries"] > 1000
    assert s["enclaves"]["b"]["outcome"] == "running"
    p = s["cgroups"]["/p"]
    assert p["usage_bytes"] == p["limit_bytes"] == 64 * P
    assert s["cgroups"]["/p/a"]["usage_bytes"] == 6 * P
    # the failures are at /p's limit; nothing is ever reclaimed
    assert p["max_events_local"] >= a["fault_retries"]
    assert s["cgroups"]["/p/a"]["max_events"] == 0
    # /p/a's fault counter: at least the 4 resolved ones; at most every call (the last
    # retry may still be in flight at the limit)
    assert 4 <= s["cgroups"]["/p/a"]["faults"] <= a["faults"] + a["fault_retries"] + 1
    assert s["encls"]["EWB"] == 0
    assert all(c["evictions"] == 0 for c in s["cgroups"].values())


def test_stuck_thread_is_counted():
    _, r = run(STUCK)
    a = r.summary["enclaves"]["a"]
    assert a["outcome"] == "stuck"
    assert a["stuck_threads"] >= 1


# --- timed operations ------------------------------------------------------------------

OPS = (
    host()
    + """
[[cgroup]]
path = "/a"
[[cgroup]]
path = "/b"
[[enclave]]
name = "e"
cgroup = "/a"
size = "256KiB"
workload = { pattern = "sequential", duration = "20ms" }
[[enclave]]
name = "late"
cgroup = "/c"
size = "64KiB"
start = "manual"
workload = { pattern = "sequential", accesses = 100 }
[[enclave]]
name = "k"
cgroup = "/b"
size = "64KiB"
workload = { pattern = "sequential", duration = "1s" }
[[at]]
time = "5ms"
write = { path = "/a/misc.max", value = "sgx_epc 131072" }
[[at]]
time = "6ms"
rmdir = "/a"
[[at]]
time = "7ms"
mkdir = "/c"
[[at]]
time = "8ms"
start = "late"
[[at]]
time = "9ms"
kill = "k"
[[at]]
time = "10ms"
migrate = { enclave = "e", cgroup = "/b" }
[[at]]
time = "1ms"
after = "late"
write = { path = "/b/misc.max", value = "sgx_epc capacity/4" }
[[at]]
time = "0s"
when = { enclave = "e", added = "128KiB" }
mkdir = "/w"
[[at]]
time = "12ms"
rmdir = "/w"
"""
)


@pytest.fixture(scope="module")
def ops_run() -> tuple[Simulation, Result]:
    return run(OPS)


def _op(r: Result, prefix: str) -> dict:
    (rec,) = [o for o in r.summary["ops"] if o["op"].startswith(prefix)]
    return rec


def test_op_write_misc_max_takes_effect_at_its_time(ops_run):
    _, r = ops_run
    rec = _op(r, "write /a/misc.max")
    assert rec["result"] == "ok" and rec["time_ns"] == 5 * MS and rec["index"] == 0
    a = rows(r, "/a")
    assert {x["limit_bytes"] for x in a if x["time_ns"] < 5 * MS} == {None}
    assert {x["limit_bytes"] for x in a if x["time_ns"] >= 5 * MS} == {131072}
    # a limit below usage evicts nothing (non-preemptive max, misc_cg_try_charge())
    assert all(x["usage_bytes"] == (64 + 2) * P for x in a if MS <= x["time_ns"] < 20 * MS)
    assert r.summary["cgroups"]["/a"]["limit_bytes"] == 131072
    assert r.summary["cgroups"]["/a"]["evictions"] == 0


def test_op_rmdir_of_a_busy_cgroup_is_a_recorded_ebusy(ops_run):
    _, r = ops_run
    rec = _op(r, "rmdir /a")
    assert rec["result"].startswith("EBUSY: ")
    assert rec["time_ns"] == 6 * MS
    assert "/a" in r.summary["cgroups"]
    assert any(x["cgroup"] == "/a" and x["time_ns"] > 6 * MS for x in rows(r))


def test_op_mkdir_then_start_an_enclave_there(ops_run):
    _, r = ops_run
    assert _op(r, "mkdir /c")["result"] == "ok"
    assert _op(r, "start late")["result"] == "ok"
    late = r.summary["enclaves"]["late"]
    assert late["outcome"] == "success" and late["cgroup"] == "/c"
    assert late["started_ns"] == 8 * MS
    assert late["ended_ns"] == 8 * MS + build_cost(16) + 100 * C.access
    assert r.summary["cgroups"]["/c"]["peak_bytes"] == (16 + 2) * P
    assert min(x["time_ns"] for x in rows(r, "/c")) == 7 * MS


def test_op_kill(ops_run):
    _, r = ops_run
    assert _op(r, "kill k")["result"] == "ok"
    k = r.summary["enclaves"]["k"]
    assert k["outcome"] == "killed" and k["exit_status"] == 143
    assert k["ended_ns"] == 9 * MS
    assert r.summary["cgroups"]["/b"]["usage_bytes"] == 0


def test_op_migrate_keeps_charges(ops_run):
    """The "Migration" section of sgx.rst (v16 patch 15): migrating a task does not move its
    existing charges."""
    sim, r = ops_run
    assert _op(r, "migrate e /b")["result"] == "ok"
    assert sim.instances["e"].task.cgroup.path == "/b"
    during = [x for x in rows(r, "/a") if 10 * MS <= x["time_ns"] < 20 * MS]
    assert during and all(x["usage_bytes"] == 66 * P for x in during)
    assert all(x["usage_bytes"] == 0 for x in rows(r, "/b") if 10 * MS <= x["time_ns"] < 20 * MS)
    e = r.summary["enclaves"]["e"]
    assert e["outcome"] == "success"
    assert r.summary["cgroups"]["/a"]["usage_bytes"] == 0  # uncharged at exit


def test_op_after_runs_once_the_group_ended(ops_run):
    _, r = ops_run
    rec = _op(r, "write /b/misc.max")
    assert rec["result"] == "ok"
    assert rec["time_ns"] == r.summary["enclaves"]["late"]["ended_ns"] + MS
    assert r.summary["cgroups"]["/b"]["limit_bytes"] == r.summary["capacity_bytes"] // 4


def test_op_when_fires_during_the_build(ops_run):
    """The op waits for 32 pages (128 KiB) to have been added: it fires inside
    ADD_PAGES, after ECREATE, before EINIT."""
    sim, r = ops_run
    rec = _op(r, "mkdir /w")
    assert rec["result"] == "ok" and rec["index"] == 7
    step = C.eadd + C.kernel_step
    after_ecreate = C.ecreate + C.kernel_step
    assert after_ecreate + 31 * step <= rec["time_ns"] <= after_ecreate + 32 * step
    assert rec["time_ns"] < sim.instances["e"].threads[0].started_ns


def test_op_rmdir_of_an_empty_cgroup_removes_its_rows(ops_run):
    _, r = ops_run
    assert _op(r, "rmdir /w")["result"] == "ok"
    w = rows(r, "/w")
    assert w and max(x["time_ns"] for x in w) < 12 * MS
    assert "/w" not in r.summary["cgroups"]


def test_ops_are_recorded_in_time_order(ops_run):
    _, r = ops_run
    times = [o["time_ns"] for o in r.summary["ops"]]
    assert times == sorted(times) and len(times) == 9


def test_op_refused_write_is_an_outcome_not_an_exception():
    """A write the kernel refuses only because of the state at that time (misc.max of
    a cgroup removed earlier) is recorded, the run goes on."""
    toml = (
        host(duration="5ms")
        + """
[[at]]
time = "1ms"
mkdir = "/x"
[[at]]
time = "2ms"
rmdir = "/x"
[[at]]
time = "3ms"
write = { path = "/x/misc.max", value = "sgx_epc 4096" }
"""
    )
    _, r = run(toml)
    results = [o["result"] for o in r.summary["ops"]]
    assert results[:2] == ["ok", "ok"]
    assert results[2].startswith("ENOENT: ")


def test_kill_ends_a_stuck_enclave():
    """SIGTERM reaches a thread that is re-faulting: it exits, its charges go."""
    toml = STUCK + '[[at]]\ntime = "20ms"\nkill = "a"\n'
    _, r = run(toml)
    a = r.summary["enclaves"]["a"]
    assert a["outcome"] == "killed" and a["exit_status"] == 143
    assert a["ended_ns"] == 20 * MS and a["stuck_threads"] == 0
    assert r.summary["cgroups"]["/p/a"]["usage_bytes"] == 0
    assert all(x["usage_bytes"] == 0 for x in rows(r, "/p/a") if x["time_ns"] >= 20 * MS)
    assert r.summary["truncated"]  # b is still running


def test_kill_during_the_build():
    """A signal during ADD_PAGES stops the loop: no EINIT, no access, all pages freed."""
    toml = (
        host()
        + """
[[enclave]]
name = "e"
size = "1MiB"
workload = { pattern = "sequential", accesses = 1000 }
[[at]]
time = "100us"
kill = "e"
"""
    )
    _, r = run(toml)
    s = r.summary
    e = s["enclaves"]["e"]
    assert e["outcome"] == "killed" and e["exit_status"] == 143
    assert e["accesses"] == 0 and 0 < e["pages_added"] < 256
    assert s["encls"]["EINIT"] == 0 and s["encls"]["EADD"] == e["pages_added"]
    assert s["encls"]["EREMOVE"] == e["pages_added"] + 2
    assert s["cgroups"]["/"]["usage_bytes"] == 0
    assert not s["truncated"]


def test_migrate_then_rmdir_new_charges_follow_the_task_old_ones_go_offline():
    """After migrating, new EAUG pages charge the new cgroup; the old one, removed while
    still charged, lives on as "(offline #ID)" until the enclave exits (each EPC page pins its css,
    v16 patch 5; "Migration" in sgx.rst, v16 patch 15). A group started ``after:e`` runs once e has
    ended."""
    toml = (
        host()
        + """
[[cgroup]]
path = "/a"
[[cgroup]]
path = "/b"
[[enclave]]
name = "e"
cgroup = "/a"
size = "64KiB"
build = "eaug"
workload = { pattern = "phases", duration = "10ms", phases = [
    { pattern = "loop", start = 0, length = 4, accesses = 100000 },
    { pattern = "sequential", accesses = 100000 } ] }
[[enclave]]
name = "f"
cgroup = "/b"
size = "64KiB"
count = 2
start = "after:e"
workload = { pattern = "sequential", accesses = 10 }
[[at]]
time = "1ms"
migrate = { enclave = "e", cgroup = "/b" }
[[at]]
time = "2ms"
rmdir = "/a"
"""
    )
    _, r = run(toml)
    s = r.summary
    assert [o["result"] for o in s["ops"]] == ["ok", "ok"]
    e = s["enclaves"]["e"]
    assert e["outcome"] == "success" and e["faults"] == 16
    data = rows(r)
    at = {(x["time_ns"], x["cgroup"]): x["usage_bytes"] for x in data}
    # before: 4 pages + VA + SECS on /a; after the phase change 12 more pages on /b
    assert at[(MS, "/a")] == 6 * P and at[(MS, "/b")] == 0
    offline = {x["cgroup"] for x in data if x["cgroup"].startswith("(offline #")}
    assert len(offline) == 1
    (off,) = offline
    assert min(x["time_ns"] for x in data if x["cgroup"] == off) == 2 * MS
    assert max(x["time_ns"] for x in data if x["cgroup"] == "/a") == MS
    assert at[(7 * MS, off)] == 6 * P and at[(7 * MS, "/b")] == 12 * P
    assert at[(7 * MS, "/")] == 18 * P
    assert "/a" not in s["cgroups"] and off not in s["cgroups"]
    assert s["cgroups"]["/b"]["peak_bytes"] >= 12 * P
    for k in (0, 1):
        f = s["enclaves"][f"f#{k}"]
        assert f["outcome"] == "success" and f["started_ns"] == e["ended_ns"]


def test_threads_share_the_accesses():
    toml = FITS.replace('name = "e"', 'name = "e"\nthreads = 2').replace(
        "accesses = 1000", "accesses = 1001"
    )
    sim, r = run(toml)
    ths = sim.instances["e"].threads
    assert [t.accesses for t in ths] == [501, 500]
    assert all(t.started_ns == build_cost(16) for t in ths)
    assert [t.ended_ns - t.started_ns for t in ths] == [501 * C.access, 500 * C.access]
    assert r.summary["sim_time_ns"] == build_cost(16) + 501 * C.access
    assert r.summary["enclaves"]["e"]["accesses"] == 1001
    assert r.summary["enclaves"]["e"]["slowdown"] == 1.0


# --- expectations -------------------------------------------------------------------------

EXPECT = (
    host(duration="20ms")
    + """
[[cgroup]]
path = "/a"
max = "256KiB"
[[cgroup]]
path = "/tiny"
max = "4KiB"
[[enclave]]
name = "ok"
cgroup = "/a"
size = "64KiB"
count = 2
workload = { pattern = "sequential", accesses = 100 }
[[enclave]]
name = "bad"
cgroup = "/tiny"
size = "64KiB"
workload = { pattern = "sequential", accesses = 100 }
[[enclave]]
name = "k"
cgroup = "/a"
size = "8KiB"
workload = { pattern = "sequential", duration = "1s" }
[[at]]
time = "1ms"
kill = "k"
[[expect]]
name = "all ok"
enclaves = ["ok"]
outcome = "success"
[[expect]]
enclaves = ["ok#1", "bad"]
outcome = "failure"
quantifier = "any"
[[expect]]
enclaves = ["ok", "bad"]
outcome = "failure"
quantifier = "none"
[[expect]]
enclaves = ["ok", "k"]
outcome = "success"
ignore_killed = true
[[expect]]
enclaves = ["ok", "k"]
outcome = "success"
[[expect]]
file = "/a/misc.max"
equals = "sgx_epc 262144"
[[expect]]
file = "/a/misc.current"
equals = "sgx_epc 0\\n"
[[expect]]
file = "/gone/misc.max"
equals = "sgx_epc max"
"""
)


def test_expectations_quantifiers_files_and_ignore_killed():
    _, r = run(EXPECT)
    s = r.summary
    en = s["enclaves"]
    assert en["ok#0"]["outcome"] == en["ok#1"]["outcome"] == "success"
    assert en["ok#0"]["group"] == "ok"
    assert en["bad"]["outcome"] == "failure" and en["bad"]["exit_status"] == 1
    assert "ENOMEM" in en["bad"]["error"] or "memory" in en["bad"]["error"].lower()
    assert en["k"]["outcome"] == "killed"
    verdicts = [(x["name"], x["passed"]) for x in s["expectations"]]
    assert verdicts == [
        ("all ok", True),
        ("expect[1]", True),
        ("expect[2]", False),
        ("expect[3]", True),
        ("expect[4]", False),
        ("expect[5]", True),
        ("expect[6]", True),
        ("expect[7]", False),
    ]
    assert "<ENOENT>" in s["expectations"][7]["detail"]
    assert s["passed"] is False and r.passed is False
    assert s["outcome"] == "fail"


def test_passed_when_every_expectation_holds_and_when_there_are_none():
    toml = EXPECT.split("[[expect]]")[0]
    _, r = run(toml + '[[expect]]\nenclaves = ["bad"]\noutcome = "failure"\n')
    assert r.summary["passed"] is True and r.passed
    assert r.summary["outcome"] == "pass"
    _, r = run(toml)
    assert r.summary["expectations"] == [] and r.summary["passed"] is True


# --- EDMM --------------------------------------------------------------------------------

EDMM = (
    host()
    + """
[[cgroup]]
path = "/a"
[[enclave]]
name = "e"
cgroup = "/a"
size = "64KiB"
edmm = { remove_pages = 4, at_access = 100 }
workload = { pattern = "loop", start = 4, length = 12, duration = "5ms" }
"""
)


def test_edmm_remove_pages_drops_usage_by_four_pages():
    sim, r = run(EDMM)
    s = r.summary
    (rec,) = s["ops"]
    assert rec["op"] == "edmm remove e" and rec["result"] == "ok"
    assert s["encls"]["EMODT"] == 4
    # 4 removed by the ioctl, the other 12 + SECS + VA at exit
    assert s["encls"]["EREMOVE"] == 4 + 12 + 2
    th = sim.instances["e"].threads[0]
    assert th.started_ns < rec["time_ns"]
    after = [x for x in rows(r, "/a") if rec["time_ns"] <= x["time_ns"] < 5 * MS]
    assert after and all(x["usage_bytes"] == (18 - 4) * P for x in after)
    assert s["cgroups"]["/a"]["peak_bytes"] == 18 * P
    e = s["enclaves"]["e"]
    assert e["outcome"] == "success" and e["faults"] == 0


def test_edmm_remove_pages_exact_usage_drop_via_files():
    """Same, read through misc.current: 18 pages before the op, 14 after."""
    toml = EDMM.replace('duration = "0.2s"', 'duration = "3ms"')
    _, r = run(toml + '[[expect]]\nfile = "/a/misc.current"\nequals = "sgx_epc 57344"\n')
    assert r.summary["truncated"] and r.summary["passed"]


def test_edmm_needs_sgx2():
    with pytest.raises(ScenarioError) as ei:
        load_scenario(EDMM.replace("sgx2 = true", "sgx2 = false"))
    assert ei.value.field == "edmm"


# --- vEPC --------------------------------------------------------------------------------


def test_vepc_pages_are_charged_and_never_evicted():
    """16 vEPC pages in /vm next to an enclave over /vm's limit: the enclave is reclaimed,
    the vEPC pages stay charged for the whole run."""
    toml = (
        host(duration="10ms")
        + """
[[cgroup]]
path = "/vm"
max = "256KiB"
[[vepc]]
name = "guest"
cgroup = "/vm"
pages = 16
[[enclave]]
name = "e"
cgroup = "/vm"
size = "256KiB"
start = "1ms"
workload = { pattern = "loop", start = 0, length = 64, duration = "1s" }
"""
    )
    _, r = run(toml)
    s = r.summary
    g = s["enclaves"]["guest"]
    assert g["outcome"] == "success" and g["faults"] == 16 and g["accesses"] == 16
    vm = s["cgroups"]["/vm"]
    assert vm["evictions"] > 0
    assert vm["evictions"] == s["enclaves"]["e"]["pages_evicted"]
    assert vm["peak_bytes"] <= 256 * 1024
    ts = rows(r, "/vm")
    assert ts[0]["time_ns"] == 0 and ts[0]["usage_bytes"] == 16 * P
    assert all(x["usage_bytes"] >= 16 * P for x in ts)
    # the vEPC owner keeps its pages until the end (the enclave is still running)
    assert vm["usage_bytes"] >= 16 * P


def test_vepc_alone_exact_charge():
    toml = (
        host(duration="3ms")
        + """
[[cgroup]]
path = "/vm"
[[vepc]]
name = "guest"
cgroup = "/vm"
pages = 40
[[expect]]
file = "/vm/misc.current"
equals = "sgx_epc 163840"
"""
    )
    _, r = run(toml)
    assert r.summary["cgroups"]["/vm"]["usage_bytes"] == 40 * P
    assert r.summary["cgroups"]["/vm"]["evictions"] == 0
    assert r.summary["passed"]


# --- the sampler ---------------------------------------------------------------------------


def test_timeseries_schema_and_sampling_grid():
    _, r = run(EAUG_OVER)
    ts = r.timeseries
    assert ts.schema.equals(TIMESERIES_SCHEMA, check_metadata=True)
    assert ts.column_names == [f.name for f in TIMESERIES_SCHEMA]
    data = rows(r)
    end = r.summary["sim_time_ns"]
    times = sorted({x["time_ns"] for x in data})
    # every sample_interval from 0, plus one final sample at the end of the run
    assert times == [*range(0, end, MS), end]
    cgroups = set(r.summary["cgroups"])
    for t in times:
        assert {x["cgroup"] for x in data if x["time_ns"] == t} == cgroups
    assert len(data) == len(times) * len(cgroups)


@pytest.mark.parametrize("toml", [EAUG_OVER, OVERCOMMIT, STUCK], ids=["eaug", "global", "stuck"])
def test_timeseries_counters_are_cumulative(toml):
    _, r = run(toml)
    data = rows(r)
    counters = ("peak_bytes", "max_events", "faults", "evictions", "reclaim_batches", "enomem")
    for cg in r.summary["cgroups"]:
        series = [x for x in data if x["cgroup"] == cg]
        assert [x["time_ns"] for x in series] == sorted(x["time_ns"] for x in series)
        for c in counters:
            vals = [x[c] for x in series]
            assert vals == sorted(vals), (cg, c)
        last = series[-1]
        summ = r.summary["cgroups"][cg]
        for c in ("usage_bytes", "peak_bytes", "faults", "evictions", "reclaim_batches"):
            assert last[c] == summ[c], (cg, c)
        assert all(x["usage_bytes"] <= x["peak_bytes"] for x in series)


# --- the Python API ---------------------------------------------------------------------------


def _report_available() -> bool:
    try:
        from epcsim.report import write_report  # noqa: F401
    except ImportError:
        return False
    return True


def test_python_api_writes_a_run_directory(tmp_path: Path):
    out = tmp_path / "run"
    has_report = _report_available()
    r = epcsim.run(EAUG_OVER, out=out, report=has_report)
    assert isinstance(r, epcsim.Result)
    for f in ("summary.json", "timeseries.parquet", "fault_latency.npy", "fault_latency.parquet"):
        assert (out / f).is_file(), f
    if has_report:
        assert (out / "report.html").is_file()
    assert not (out / "INCOMPLETE").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(json.dumps(r.summary))
    back = Result.read(out)
    assert back.summary == summary
    assert back.timeseries.equals(r.timeseries)
    assert np.array_equal(back.fault_latency_ns, r.fault_latency_ns)
    assert back.fault_latency is not None and back.fault_latency.equals(r.fault_latency)
    assert back.passed == r.passed


def test_python_api_accepts_scenario_object_path_and_dict(tmp_path: Path):
    sc = load_scenario(FITS)
    f = tmp_path / "s.toml"
    f.write_text(FITS)
    a = epcsim.run(sc).summary
    b = epcsim.run(f).summary
    c = epcsim.run(str(f)).summary
    d = simulate(sc.model_dump(mode="json")).summary
    assert a["sim_time_ns"] == b["sim_time_ns"] == c["sim_time_ns"] == d["sim_time_ns"]
    assert a["scenario_hash"] == b["scenario_hash"] == c["scenario_hash"] == d["scenario_hash"]
    # overrides apply to a Scenario object too
    e = epcsim.run(sc, overrides=["host.costs.access=100"]).summary
    assert e["sim_time_ns"] == build_cost(16) + 1000 * 100
    assert e["scenario_hash"] != a["scenario_hash"]


def test_python_api_progress_is_called_with_virtual_times():
    seen: list[tuple[int, int]] = []
    epcsim.run(EAUG_OVER, progress=lambda p: seen.append((p.now_ns, p.limit_ns)))
    assert seen
    assert all(lim == 200 * MS for _, lim in seen)
    ts = [t for t, _ in seen]
    assert ts == sorted(ts)


def test_python_api_bad_scenario_runs_nothing(tmp_path: Path):
    out = tmp_path / "run"
    with pytest.raises(ScenarioError):
        epcsim.run(FITS.replace('size = "64KiB"', 'size = "64 parsecs"'), out=out)
    assert not out.exists()


@pytest.mark.parametrize("engine", ["compiled", "reference"])
def test_simulate_frees_the_run_without_the_cycle_collector(engine, monkeypatch):
    """A finished simulate() holds nothing of its run: the host's EPC pool, each
    enclave (its arrays) and the compiled engine's buffers are freed by reference counting
    once the result is made (Simulation.close(), Host.close()), not when Python's cycle
    collector runs (a process running one simulation after another kept them all)."""
    import gc
    import weakref

    from epcsim.compiled import engine as cengine
    from epcsim.kernel import encl as kencl
    from epcsim.kernel import epc as kepc

    made: list[weakref.ref] = []
    for cls in (kepc.EpcPool, kencl.Encl, cengine._Packed):
        init = cls.__init__

        def spy(self, *a, _init=init, **k):
            _init(self, *a, **k)
            made.append(weakref.ref(self))

        monkeypatch.setattr(cls, "__init__", spy)
    toml = host("1MiB") + (
        '[[cgroup]]\npath = "/t"\nmax = "512KiB"\n'
        '[[enclave]]\nname = "e"\ncgroup = "/t"\nsize = "1MiB"\nbuild = "eaug"\n'
        'workload = { pattern = "loop", start = 0, length = 200, accesses = 4000 }\n'
    )
    gc.collect()
    gc.disable()
    try:
        res = simulate(toml, engine=engine)
        kinds = sorted({type(r()).__name__ for r in made if r() is not None})
    finally:
        gc.enable()
    assert res.engine == engine
    assert res.summary["enclaves"]["e"]["accesses"] == 4000
    assert len(made) >= (3 if engine == "compiled" else 2)
    assert kinds == []
