"""``advise`` on two built-ins scaled down (issue 16), validated against the brute force:
``epcsim.sweep.sweep`` over the grid of both tenants' limits at the same resolution,
read back with ``pyarrow.dataset``, gives the ground truth (the minimum-sum assignment
meeting every SLO, computed here); advise must return it, or say infeasible where the
grid holds none.  The advice runs into the brute force's dataset (``DIR/points``): its
points are all on the grid, so it runs nothing new (the resume path)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from typer.testing import CliRunner

import epcsim
import epcsim.sweep
from epcsim.advise import advise, parse_slo, rows_of_summary
from epcsim.cli import app

R = 256 * 1024  # the resolution: 8 limits per tenant on a 2 MiB EPC
GRID = [R * k for k in range(1, 9)]
#: name -> (--set, the two tenants, their cgroup indices)
SCENARIOS = {
    "noisy-neighbour": (
        [
            "host.epc=2MiB",
            "enclave.0.size=768KiB",
            "enclave.0.workload.accesses=10000",
            "enclave.1.size=2MiB",
            "enclave.1.workload.duration=2ms",
            "enclave.1.threads=1",
        ],
        ("/tenants/quiet", "/tenants/noisy"),
        (1, 2),
    ),
    # the third tenant left out (never started): two tenants competing for 2 MiB
    "overcommit": (
        [
            "host.epc=2MiB",
            "enclave.2.start=manual",
            "enclave.0.size=1MiB",
            "enclave.1.size=1MiB",
            "enclave.0.workload.accesses=5000",
            "enclave.1.workload.accesses=5000",
            "enclave.1.workload.alpha=0.5",
        ],
        ("/a", "/b"),
        (0, 1),
    ),
}


@pytest.fixture(scope="module")
def brute(tmp_path_factory):
    """name -> (its directory, {(limit a, limit b): rows}): the sweep over the grid."""
    out = {}
    for name, (sets, _, (ia, ib)) in SCENARIOS.items():
        d = tmp_path_factory.mktemp(name)
        res = epcsim.sweep.sweep(
            f"builtin:{name}",
            grid=[f"cgroup.{ia}.max=256KiB..2MiB:8", f"cgroup.{ib}.max=256KiB..2MiB:8"],
            sets=sets,
            out=d / "points",
            jobs=2,
        )
        assert (res.ran, res.errors) == (64, [])
        rows: dict[tuple[int, int], list[dict]] = {}
        for r in ds.dataset(d / "points", partitioning="hive").to_table().to_pylist():
            rows.setdefault((r[f"cgroup.{ia}.max"], r[f"cgroup.{ib}.max"]), []).append(r)
        assert sorted(rows) == list(itertools.product(GRID, GRID))
        out[name] = (d, rows)
    return out


def meets(rows: list[dict], tenant: str, slos: list[str]) -> bool:
    """The rules of docs/ADVISE.md, checked directly on the tenant's cgroup row (each
    tenant here holds its enclave itself): its enclaves complete, each SLO holds."""
    if any(r["enclave"] and r["cgroup"] == tenant and r["outcome"] != "success" for r in rows):
        return False
    (row,) = [r for r in rows if r["enclave"] is None and r["cgroup"] == tenant]
    for text in slos:
        s = parse_slo(text)
        v = row[s.column]
        assert s.op == "<="
        if v is not None and v > s.bound:
            return False
    return True


def ground_truth(rows: dict[tuple[int, int], list[dict]], tenants, slos) -> tuple | None:
    feasible = [
        (la + lb, la, lb)
        for (la, lb), rs in rows.items()
        if all(meets(rs, t, slos) for t in tenants)
    ]
    return min(feasible)[1:] if feasible else None


CASES = [
    ("noisy-neighbour", ["slowdown<=60"], (2 * R, 4 * R)),
    ("noisy-neighbour", ["slowdown<=50", "p99_fault_latency<=20us"], (2 * R, 6 * R)),
    ("noisy-neighbour", ["slowdown<=1.5"], ["/tenants/noisy"]),
    ("overcommit", ["slowdown<=5"], (4 * R, 5 * R)),
    ("overcommit", ["miss_ratio<=0.1"], (4 * R, 4 * R)),
    ("overcommit", ["slowdown<=2"], ["/a"]),
]


@pytest.mark.parametrize(("name", "slos", "truth"), CASES, ids=lambda x: str(x))
def test_advise_returns_the_brute_force_minimum(brute, name, slos, truth):
    sets, tenants, _ = SCENARIOS[name]
    d, rows = brute[name]
    assert ground_truth(rows, tenants, slos) == (truth if isinstance(truth, tuple) else None)
    files = sorted((d / "points").rglob("*.parquet"))
    res = advise(
        f"builtin:{name}",
        slos=slos,
        sets=sets,
        tenants=list(tenants),
        resolution="256KiB",
        out=d,
        jobs=2,
    )
    assert res.feasible is isinstance(truth, tuple)
    if isinstance(truth, tuple):
        assert tuple(res.limits[t] for t in tenants) == truth
        assert res.data["evaluations"] < len(GRID) ** 2
    else:  # the grid holds no assignment: the tenant that cannot meet the SLOs at 2 MiB
        assert res.data["infeasible_tenants"] == truth
    # every point of the advice was on the grid: read from the dataset, none run again
    assert sorted((d / "points").rglob("*.parquet")) == files
    assert json.loads((d / "advise.json").read_text()) == json.loads(json.dumps(res.data))


def test_the_command_from_scratch(tmp_path: Path):
    """epcsim advise end to end in a new directory: the table, advise.json, DIR/points."""
    sets, tenants, _ = SCENARIOS["overcommit"]
    out = tmp_path / "adv"
    args = ["advise", "builtin:overcommit", "--slo", "slowdown<=5", "--resolution", "256KiB"]
    args += [x for s in sets for x in ("--set", s)] + ["--out", str(out), "-j", "2"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert r.output.startswith("overcommit: feasible; limits sum to 2.5MiB (resolution 256KiB")
    data = json.loads((out / "advise.json").read_text())
    # /c holds an enclave (never started): a tenant by default, met at the smallest limit
    assert data["tenants_searched"] == ["/a", "/b", "/c"]
    assert data["limits"] == {"/a": 4 * R, "/b": 5 * R, "/c": R}
    assert sorted(p.name for p in out.iterdir()) == ["advise.json", "points"]
    table = ds.dataset(out / "points", partitioning="hive").to_table()
    assert {"cgroup.0.max", "cgroup.1.max", "cgroup.2.max"} <= set(table.column_names)
    # per point: 4 cgroup rows (/, /a, /b, /c) and 3 enclave rows
    assert table.num_rows == 7 * len(set(table.column("point").to_pylist()))


def test_rows_of_summary_are_the_sweep_rows(brute):
    """An evaluator running epcsim.run itself gives the rows the sweep wrote."""
    sets, tenants, (ia, ib) = SCENARIOS["overcommit"]
    _, rows = brute["overcommit"]
    res = epcsim.run(
        "builtin:overcommit",
        overrides=[*sets, f"cgroup.{ia}.max={3 * R}", f"cgroup.{ib}.max={5 * R}"],
        report=False,
    )
    mine = rows_of_summary(res.summary, 1)
    theirs = rows[(3 * R, 5 * R)]
    assert len(mine) == len(theirs) == 7
    for a, b in zip(mine, theirs, strict=True):
        assert a == {k: b[k] for k in a}
