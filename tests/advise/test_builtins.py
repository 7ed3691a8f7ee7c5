"""``advise`` on two built-ins scaled down (issue 16): the brute force over the grid at
the same resolution gives the ground truth (the minimum-sum assignment meeting every
SLO); advise must return it, or say infeasible where the grid holds none."""

from __future__ import annotations

import functools
import itertools

import pytest

import epcsim
from epcsim.advise import advise, parse_slo, rows_of_summary, tenant_value
from epcsim.scenario import load_scenario

R = 256 * 1024  # the resolution: 8 limits per tenant on a 2 MiB EPC
GRID = [R * k for k in range(1, 9)]
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
    ),
}


@functools.cache
def _run(name: str, key: tuple[tuple[str, int], ...]) -> list[dict]:
    sets, _ = SCENARIOS[name]
    sc = load_scenario(f"builtin:{name}", overrides=sets)
    index = {c.path: i for i, c in enumerate(sc.cgroup)}
    res = epcsim.run(sc, overrides=[f"cgroup.{index[t]}.max={v}" for t, v in key], report=False)
    return rows_of_summary(res.summary, sc.host.seed)


def serial(name: str):
    """An evaluator that runs epcsim.run itself, one point after the other (cached)."""

    def evaluate(assignments: list[dict[str, int]]) -> list[list[dict]]:
        return [_run(name, tuple(sorted(a.items()))) for a in assignments]

    return evaluate


def meets(rows: list[dict], tenant: str, slos: list[str]) -> bool:
    """The SLOs of docs/ADVISE.md checked directly: every enclave of the tenant
    completes and each SLO's worst value holds."""
    if any(r["enclave"] and r["cgroup"] == tenant and r["outcome"] != "success" for r in rows):
        return False
    for text in slos:
        s = parse_slo(text)
        v = tenant_value(rows, tenant, s)
        if v is not None and not (v <= s.bound if s.op == "<=" else v < s.bound):
            return False
    return True


def brute_force(name: str, slos: list[str]) -> tuple[int, int] | None:
    _, (a, b) = SCENARIOS[name]
    ev = serial(name)
    best = None
    for la, lb in itertools.product(GRID, GRID):
        (rows,) = ev([{a: la, b: lb}])
        if meets(rows, a, slos) and meets(rows, b, slos):
            cand = (la + lb, la, lb)
            best = cand if best is None or cand < best else best
    return None if best is None else (best[1], best[2])


CASES = [
    ("noisy-neighbour", ["slowdown<=60"], (2 * R, 4 * R)),
    ("noisy-neighbour", ["slowdown<=50", "p99_fault_latency<=20us"], (2 * R, 6 * R)),
    ("noisy-neighbour", ["slowdown<=1.5"], ["/tenants/noisy"]),
    ("overcommit", ["slowdown<=5"], (4 * R, 5 * R)),
    ("overcommit", ["miss_ratio<=0.1"], (4 * R, 4 * R)),
    ("overcommit", ["slowdown<=2"], ["/a"]),
]


@pytest.mark.parametrize(("name", "slos", "truth"), CASES, ids=lambda x: str(x))
def test_advise_returns_the_brute_force_minimum(name, slos, truth):
    sets, tenants = SCENARIOS[name]
    assert brute_force(name, slos) == (truth if isinstance(truth, tuple) else None)
    res = advise(
        f"builtin:{name}",
        slos=slos,
        sets=sets,
        tenants=list(tenants),
        resolution="256KiB",
        evaluate=serial(name),
    )
    assert res.feasible is isinstance(truth, tuple)
    if isinstance(truth, tuple):
        assert tuple(res.limits[t] for t in tenants) == truth
        assert res.data["evaluations"] < len(GRID) ** 2
    else:  # the grid holds no assignment: the tenants that cannot meet the SLOs at 2 MiB
        assert res.data["infeasible_tenants"] == truth
