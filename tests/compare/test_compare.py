"""``epcsim compare`` end to end on a small two-tenant scenario: the directory and the
Parquet schema, determinism (serial and parallel give the same bytes), ``--policy all``,
the exact one-line errors, and the episode log under it (results unchanged, the
compiled engine refuses it)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import epcsim
from epcsim import policies
from epcsim.cli import app
from epcsim.compare import COMPARE_FILES, PARQUET_SCHEMA, compare
from epcsim.errors import EpcsimError
from epcsim.policies.base import Policy

#: /p (2 MiB) over /p/a (a 1 MiB enclave) and /p/b (2 MiB): /p's limit binds
TWO = """\
name = "two"
[host]
epc = "4MiB"
duration = "1s"
cpus = 2
sample_interval = "100us"

[[cgroup]]
path = "/p"
max = "2MiB"

[[cgroup]]
path = "/p/a"

[[cgroup]]
path = "/p/b"

[[enclave]]
name = "a"
cgroup = "/p/a"
size = "1MiB"
workload = { pattern = "uniform", accesses = 3000 }

[[enclave]]
name = "b"
cgroup = "/p/b"
size = "2MiB"
workload = { pattern = "uniform", accesses = 3000 }
"""


class NoAgeTest(Policy):
    """A throwaway design for these tests: every isolated page is old."""

    name = "no-age-test"
    source = "a test"
    changes = "sgx_reclaimer_age() never tests the accessed bit"

    def age_test(self, host, sgx_cg) -> bool:
        return False


@pytest.fixture
def throwaway(monkeypatch: pytest.MonkeyPatch) -> str:
    """Register NoAgeTest as ``no-age-test`` (a module in epcsim.policies; forked
    worker processes inherit it)."""
    mod = types.ModuleType("epcsim.policies._no_age_test")
    mod.POLICY = NoAgeTest  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setitem(policies.REGISTRY, "no-age-test", "_no_age_test")
    return "no-age-test"


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    f = tmp_path / "two.toml"
    f.write_text(TWO)
    return f


def test_directory_schema_and_rows(scenario: Path, tmp_path: Path, throwaway: str) -> None:
    out = tmp_path / "cmp"
    res = compare(scenario, policies="v16,no-age-test", seeds="1..2", jobs=1, out=out)
    assert sorted(p.name for p in out.iterdir()) == sorted(COMPARE_FILES)
    t = pq.read_table(out / "compare.parquet")
    assert t.schema.equals(PARQUET_SCHEMA, check_metadata=True)
    # per point 4 cgroups (/, /p, /p/a, /p/b) then 2 enclaves; policies, then seeds
    cols = t.select(["policy", "seed", "cgroup", "enclave"]).to_pylist()
    point = [
        ("/", None),
        ("/p", None),
        ("/p/a", None),
        ("/p/b", None),
        ("/p/a", "a"),
        ("/p/b", "b"),
    ]
    want = [
        {"policy": p, "seed": s, "cgroup": c, "enclave": e}
        for p in ("v16", "no-age-test")
        for s in (1, 2)
        for c, e in point
    ]
    assert cols == want
    data = json.loads((out / "compare.json").read_text())
    assert data["format"] == "epcsim-compare" and data["engine"] == "reference"
    assert data["policies"] == ["v16", "no-age-test"] and data["seeds"] == [1, 2]
    assert [(p["policy"], p["seed"]) for p in data["points"]] == [
        ("v16", 1),
        ("v16", 2),
        ("no-age-test", 1),
        ("no-age-test", 2),
    ]
    # pages reclaimed per cgroup row = the run's evictions; the episodes account for them
    for pt in res.points:
        ev = {c: s["evictions"] for c, s in pt.summary["cgroups"].items()}
        rows = [
            r
            for r in t.to_pylist()
            if (r["policy"], r["seed"]) == (pt.policy, pt.seed) and r["enclave"] is None
        ]
        assert {r["cgroup"]: r["pages_reclaimed"] for r in rows} == ev
        assert sum(sum(e["reclaimed"].values()) for e in pt.episodes) == sum(ev.values()) > 0
    # the designs differ: with no age test fewer pages are scanned per page reclaimed
    by = data["by_policy"]
    assert by["no-age-test"]["scanned_per_reclaimed"] < by["v16"]["scanned_per_reclaimed"]
    page = (out / "compare.html").read_text()
    assert "<img src='compare.png'" in page and "http" not in page


def test_serial_and_parallel_give_identical_bytes(scenario: Path, tmp_path: Path) -> None:
    compare(scenario, policies="v16", seeds="1..2", jobs=1, out=tmp_path / "s")
    compare(scenario, policies="v16", seeds="1..2", jobs=2, out=tmp_path / "p")
    for name in COMPARE_FILES:
        assert (tmp_path / "s" / name).read_bytes() == (tmp_path / "p" / name).read_bytes(), name


def test_policy_all_expands_to_the_registry(
    scenario: Path, throwaway: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``all`` is every registered policy in registry order (here the registry, whatever
    else it holds, is cut to v16 and the throwaway)."""
    monkeypatch.setattr(policies, "REGISTRY", {"v16": "v16", "no-age-test": "_no_age_test"})
    res = compare(scenario, policies="all", jobs=1)
    assert res.data["policies"] == ["v16", "no-age-test"]
    assert [p.summary["policy"] for p in res.points] == ["v16", "no-age-test"]


def _cli(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, ["compare", *args])
    return r.exit_code, r.output


def test_cli_runs_and_prints_the_table(scenario: Path, tmp_path: Path) -> None:
    out = tmp_path / "c"
    args = ["--policy", "v16", "--set", "host.cpus=1", "--out", str(out), "-j", "1"]
    code, output = _cli(str(scenario), *args)
    assert code == 0, output
    assert "fairness CV" in output and "v16" in output
    assert output.rstrip().endswith(f"wrote {out}")
    data = json.loads((out / "compare.json").read_text())
    assert data["overrides"] == ["host.cpus=1"] and data["seeds"] == [0]


def test_cli_bad_arguments_exit_2_with_one_line(scenario: Path, tmp_path: Path) -> None:
    out = tmp_path / "c"
    code, output = _cli(str(scenario), "--policy", "v16,nope", "--out", str(out))
    known = ", ".join(policies.names())
    assert (code, output) == (
        2,
        f"epcsim: error: policies: unknown policy 'nope'; known: {known}\n",
    )
    code, output = _cli(str(scenario), "--seeds", "5..1", "--out", str(out))
    assert (code, output) == (
        2,
        "epcsim: error: seeds: empty range '5..1' (FROM..TO needs FROM <= TO)\n",
    )
    assert not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, output = _cli(str(scenario), "--policy", "v16", "--out", str(out))
    assert (code, output) == (
        2,
        f"epcsim: error: out {out}: not an epcsim comparison directory (it holds files and "
        "no compare.json); name a new or empty directory\n",
    )
    other = tmp_path / "d"
    assert _cli(str(scenario), "--policy", "v16", "--out", str(other), "-j", "1")[0] == 0
    before = (other / "compare.json").read_bytes()
    code, output = _cli(str(scenario), "--policy", "v16", "--out", str(other))
    assert (code, output) == (
        2,
        f"epcsim: error: out {other}: holds a comparison; replace it with --force (force=True)\n",
    )
    assert (other / "compare.json").read_bytes() == before
    code, output = _cli(str(scenario), "--policy", "v16", "--out", str(other), "--force", "-j", "1")
    assert code == 0, output


def test_the_episode_log_changes_no_result(scenario: Path) -> None:
    base = epcsim.run(scenario, engine="reference")
    logged = epcsim.run(scenario, engine="reference", episode_log=True)
    assert base.episodes is None
    assert logged.summary == base.summary
    assert logged.timeseries.equals(base.timeseries)
    assert (logged.fault_latency_ns == base.fault_latency_ns).all()
    eps = logged.episodes
    assert eps and {e["kind"] for e in eps} <= {"sync", "async", "ksgxd", "direct", "alloc"}
    # /p's limit binds: sync reclaim is rooted at the requester, its need set by /p
    sync = [e for e in eps if e["kind"] == "sync"]
    assert sync and all(e["scope"] == "/p" and e["root"] in ("/p/a", "/p/b") for e in sync)
    assert all(e["needed"] >= 1 for e in sync)
    assert all(0 <= e["started_ns"] <= e["ended_ns"] for e in eps)
    per_cg: dict[str, int] = {}
    for e in eps:
        for c, n in e["reclaimed"].items():
            per_cg[c] = per_cg.get(c, 0) + n
    ev = {c: s["evictions"] for c, s in base.summary["cgroups"].items() if s["evictions"]}
    assert per_cg == ev


def test_auto_runs_the_reference_and_compiled_refuses(scenario: Path) -> None:
    r = epcsim.run(scenario, engine="auto", episode_log=True)
    assert r.engine == "reference"
    why = "the compiled engine does not record reclaim episodes (episode_log)"
    assert r.run["engine_reason"] == f"auto: {why}"
    with pytest.raises(EpcsimError) as e:
        epcsim.run(scenario, engine="compiled", episode_log=True)
    assert str(e.value) == f"engine compiled: {why}; use engine reference or auto"


class OwnLoop(Policy):
    """A throwaway design whose reclaim_pages hook is v16's loop calling
    sgx_reclaim_pages() without passing the episode."""

    name = "own-loop"
    source = "a test"
    changes = "nothing"

    def reclaim_pages(self, host, root, charge_task, nr_to_scan, episode):
        from epcsim.kernel import epc_cgroup
        from epcsim.kernel import reclaim as kreclaim

        cnt = 0
        while cnt < nr_to_scan and not epc_cgroup.sgx_cgroup_lru_empty(host, root.cg):
            c = epc_cgroup.sgx_cgroup_next_get(host, root)
            cnt += yield from kreclaim.sgx_reclaim_pages(host, c, charge_task)
            if c is not root:
                epc_cgroup.sgx_put_cg(host, c)
        return cnt


def test_a_hooks_reclaim_counts_into_its_episode(
    scenario: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hooks.run_in_episode: the hook's sgx_reclaim_pages() calls are the episode's,
    and the log (with v16's loop run by a hook) equals v16's log."""
    base = epcsim.run(scenario, engine="reference", episode_log=True)
    monkeypatch.setattr(policies, "make", lambda name, *, seed=0: OwnLoop(seed=seed))
    hooked = epcsim.run(scenario, engine="reference", episode_log=True)
    assert hooked.summary == base.summary
    assert hooked.episodes == base.episodes


def test_cli_counts_the_external_baselines_reclaim(scenario: Path, tmp_path: Path) -> None:
    """`epcsim compare SCENARIO --policy global-lru,memcg-iter --out DIR` (session 10:
    their rows read 0 pages reclaimed and no fairness): each policy's pages reclaimed
    (from the episode log) are the pages its cgroups counted as reclaimed (summary.json),
    and its scans are counted."""
    out = tmp_path / "c"
    code, output = _cli(
        str(scenario), "--policy", "global-lru,memcg-iter", "--out", str(out), "-j", "1"
    )
    assert code == 0, output
    data = json.loads((out / "compare.json").read_text())
    for p in data["points"]:
        evicted = sum(c["pages_reclaimed"]["total"] for c in p["cgroups"].values())
        by = data["by_policy"][p["policy"]]
        assert evicted > 0 and by["pages_reclaimed"] == evicted, p["policy"]
        assert p["scan"]["scanned"] >= evicted and p["scan"]["source"] == "summary"
