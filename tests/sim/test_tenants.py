"""Per-tenant metrics (issue 14): the per-enclave and per-cgroup keys of summary.json,
the tagged fault latencies (``fault_latency.parquet``) and the per-enclave rows of the
time series, hand-derived on a small run; and an independent check that the reclaim
split adds up to the ENCLS counts on built-ins and random scenarios, in both engines."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest
from _tenants import RECLAIMERS, assert_tenant_counts

import epcsim
from epcsim.result import TIMESERIES_SCHEMA_VERSION, cgroup_rows, enclave_rows
from epcsim.sim.engine import simulate

#: "hot" (EADD, 8 pages, 100 accesses) never faults; "cold" (EAUG, 16 pages, 64
#: sequential accesses) faults on each page's first access: 16 faults of EAUG 1000 +
#: fault 3000 + kernel step 100 = 4100 ns each, each on its own CPU, nothing reclaimed
TWO = """
name = "two"
[host]
epc = "1MiB"
cpus = 2
sample_interval = "10us"
[[cgroup]]
path = "/h"
[[cgroup]]
path = "/c"
[[enclave]]
name = "hot"
cgroup = "/h"
build = "eadd"
size = "32KiB"
workload = { pattern = "sequential", accesses = 100 }
[[enclave]]
name = "cold"
cgroup = "/c"
build = "eaug"
size = "64KiB"
workload = { pattern = "sequential", accesses = 64 }
"""

NO_RECLAIM = dict.fromkeys(("total", *RECLAIMERS), 0)


@pytest.fixture(scope="module")
def two() -> epcsim.Result:
    return simulate(TWO, engine="reference")


def test_enclave_keys_hand_derived(two: epcsim.Result) -> None:
    hot, cold = two.summary["enclaves"]["hot"], two.summary["enclaves"]["cold"]
    # hot: 100 hits of 50 ns, no fault
    assert (hot["accesses"], hot["faults"]) == (100, 0)
    assert hot["fault_latency_ns"] is None
    assert hot["miss_ratio"] == 0.0
    assert hot["accesses_per_s"] == 100 * 1e9 / (100 * 50)
    assert hot["slowdown"] == 1.0
    assert hot["retries"] == 0
    assert hot["pages_reclaimed"] == NO_RECLAIM
    assert hot["completion_ns"] == hot["ended_ns"] - hot["started_ns"] > 0
    # cold: 16 faults of 4100 ns, 64 accesses: run 64 * 50 + 16 * 4100 = 68800 ns
    assert (cold["accesses"], cold["faults"]) == (64, 16)
    assert cold["fault_latency_ns"] == {
        "count": 16,
        "p50": 4100,
        "p90": 4100,
        "p99": 4100,
        "max": 4100,
    }
    assert cold["miss_ratio"] == 0.25
    assert cold["accesses_per_s"] == round(64e9 / 68800, 3) == 930232.558
    assert cold["slowdown"] == 21.5
    assert cold["pages_reclaimed"] == NO_RECLAIM


def test_cgroup_keys_hand_derived(two: epcsim.Result) -> None:
    cgs = two.summary["cgroups"]
    h, c, root = cgs["/h"], cgs["/c"], cgs["/"]
    assert (h["accesses"], h["miss_ratio"], h["fault_latency_ns"]) == (100, 0.0, None)
    assert (h["slowdown"], h["accesses_per_s"], h["retries"]) == (1.0, 2e7, 0)
    assert c["fault_latency_ns"] == two.summary["enclaves"]["cold"]["fault_latency_ns"]
    assert (c["accesses"], c["miss_ratio"], c["slowdown"]) == (64, 0.25, 21.5)
    assert c["accesses_per_s"] == 930232.558
    # the root's own tenants: none
    assert (root["accesses"], root["miss_ratio"], root["fault_latency_ns"]) == (0, None, None)
    assert (root["accesses_per_s"], root["slowdown"], root["retries"]) == (None, None, 0)
    for x in (h, c, root):
        assert x["pages_reclaimed"] == NO_RECLAIM
        assert (x["pages_scanned"], x["pages_rotated"]) == (0, 0)
    # the whole run's percentiles are those of cold's faults (the only timed ones)
    assert two.summary["fault_latency"]["p99_ns"] == 4100


def test_fault_latencies_tagged(two: epcsim.Result) -> None:
    t = two.fault_latency
    assert t is not None and t.column_names == ["latency_ns", "enclave", "cgroup"]
    assert t.column("latency_ns").to_pylist() == two.fault_latency_ns.tolist() == [4100] * 16
    assert set(t.column("enclave").to_pylist()) == {"cold"}
    assert set(t.column("cgroup").to_pylist()) == {"/c"}


def test_timeseries_enclave_rows(two: epcsim.Result) -> None:
    ts = two.timeseries
    assert ts.schema.metadata[b"epcsim.timeseries.version"] == b"2"
    assert two.summary["timeseries_schema_version"] == TIMESERIES_SCHEMA_VERSION == 2
    cg, en = cgroup_rows(ts), enclave_rows(ts)
    assert cg.num_rows + en.num_rows == ts.num_rows
    assert cg.column("enclave").null_count == cg.num_rows
    assert en.column("cgroup").null_count == en.num_rows
    assert en.column("usage_bytes").null_count == en.num_rows
    # one row per enclave per sample, after the sample's cgroup rows
    times = sorted(set(ts.column("time_ns").to_pylist()))
    assert en.num_rows == 2 * len(times)
    end = en.filter(pc.equal(en["time_ns"], times[-1])).to_pylist()
    got = {r["enclave"]: (r["accesses"], r["faults"], r["evictions"]) for r in end}
    assert got == {"hot": (100, 0, 0), "cold": (64, 16, 0)}
    # resident: hot's 8 EADDed pages, cold's 16 EAUGed ones; none once released at exit
    assert [r["resident_pages"] for r in end] == [0, 0]
    for name, most in (("hot", 8), ("cold", 16)):
        rows = en.filter(pc.equal(en["enclave"], name))
        assert pc.max(rows["resident_pages"]).as_py() == most
    first = en.filter(pc.equal(en["time_ns"], 0)).to_pylist()
    assert [r["accesses"] for r in first] == [0, 0]


def test_run_directory_and_report_show_tenants(tmp_path) -> None:
    from typer.testing import CliRunner

    from epcsim.cli import app

    sc = tmp_path / "two.toml"
    sc.write_text(TWO)
    r = CliRunner().invoke(app, ["run", str(sc), "-o", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "p99 fault" in out and "miss ratio" in out
    assert "│ cold │ /c │ success │ 0 │ 4.1us │ 25.00% │ 21.5x │" in out
    assert "│ /h │ 40KiB │ - │ 0 │ 0 │ 0 │ 0 │ - │ 0.00% │ 1.00x │" in out
    back = epcsim.Result.read(tmp_path / "out")
    assert back.fault_latency is not None and back.fault_latency.num_rows == 16
    html = (tmp_path / "out" / "report.html").read_text()
    assert 'id="tenants"' in html and "25.0 %" in html


# --- the independent check: the reclaim split adds up --------------------------------


LIMIT = """
name = "limit"
[host]
epc = "1MiB"
cpus = 2
[[cgroup]]
path = "/a"
max = "600KiB"
[[cgroup]]
path = "/b"
[[enclave]]
name = "a"
cgroup = "/a"
size = "2MiB"
workload = { pattern = "zipf", alpha = 0.9, accesses = 6000 }
[[enclave]]
name = "b"
cgroup = "/b"
size = "1MiB"
workload = { pattern = "uniform", accesses = 4000 }
"""


@pytest.mark.parametrize("engine", ["reference", "compiled"])
def test_reclaim_split_adds_up_in_both_engines(engine: str) -> None:
    r = simulate(LIMIT, engine=engine)
    assert r.engine == engine
    s = r.summary
    assert_tenant_counts(s)
    # /a's EADD build (DO_RECLAIM) reclaims synchronously past its limit, then its
    # faults' charges (NO_RECLAIM) queue its worker; ksgxd reclaims as the EPC fills;
    # nothing runs EDMM (no direct reclaim)
    pr = {p: c["pages_reclaimed"] for p, c in s["cgroups"].items()}
    # (/b's build also reclaims synchronously once the EPC is full: the charge fails at
    # the root's capacity and reclaims the requester's subtree)
    assert pr["/a"] == {"total": 1377, "ksgxd": 1037, "async": 100, "sync": 240, "direct": 0}
    assert pr["/b"] == {"total": 1167, "ksgxd": 1087, "async": 0, "sync": 80, "direct": 0}
    assert pr["/"]["total"] == 0


@pytest.mark.parametrize(
    ("builtin", "engine"),
    [("nested-fairness", "compiled"), ("nested-fairness", "reference")],
)
def test_reclaim_split_adds_up_on_builtins(builtin: str, engine: str) -> None:
    r = epcsim.run(f"builtin:{builtin}", engine=engine)
    assert_tenant_counts(r.summary)


@pytest.mark.slow
@pytest.mark.parametrize("builtin", ["noisy-neighbour", "overcommit", "kselftest"])
def test_reclaim_split_adds_up_on_reference_only_builtins(builtin: str) -> None:
    r = epcsim.run(f"builtin:{builtin}", engine="reference")
    assert_tenant_counts(r.summary)
