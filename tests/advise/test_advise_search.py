"""The advise search (issue 16) against synthetic evaluators: exact limits, rounds and
notes for monotone, interacting and non-monotone curves, an infeasible tenant, a budget
too small, several seeds."""

from __future__ import annotations

import json

import pytest
from _advise import TWO, Curve, P, Synthetic, independent

from epcsim.advise import advise
from epcsim.errors import EpcsimError


def run(f: Curve, **kw):
    ev = kw.pop("ev", None) or Synthetic(f)
    kw.setdefault("slos", ["slowdown<=2"])
    kw.setdefault("resolution", "1page")
    return advise(kw.pop("scenario", TWO), evaluate=ev, **kw), ev


def pages(res) -> dict[str, int]:
    return {t: v // P for t, v in res.limits.items()}


def test_monotone_independent_curves():
    res, ev = run(independent)
    assert res.feasible is True
    assert pages(res) == {"/a": 50, "/b": 5}
    d = res.data
    assert d["total"] == 55 * P and d["reason"] is None and d["infeasible_tenants"] == []
    # coarse pass (8 limits per tenant, one batch), bisection in lock-step, combination
    assert [r["kind"] for r in d["rounds"]] == ["coarse"] + ["bisect"] * 3 + ["combination"]
    assert len(ev.batches) == 5 and len(ev.batches[0]) == 16
    assert all(len(b) == 2 for b in ev.batches[1:4]) and ev.batches[4] == [
        {"/a": 50 * P, "/b": 5 * P}
    ]
    a = d["tenants"]["/a"]
    assert a["monotone"] is True and a["notes"] == [] and a["meets"] is True
    assert a["scenario_limit"] == 32 * P
    assert a["metrics"] == {"slowdown<=2": 2.0}
    assert a["margin"]["slowdown<=2"] == {
        "value": 2.0,
        "bound": 2.0,
        "margin": 0.0,
        "relative": 0.0,
    }
    limits = [c["limit"] // P for c in a["curve"]]
    assert limits == [8, 16, 24, 32, 40, 48, 49, 50, 52, 56, 64]
    assert [c["meets"] for c in a["curve"]] == [False] * 7 + [True] * 4


def contended(t: str, p: dict[str, int], seed: int) -> float:
    # a suffers from b's limit; b alone
    return 40 / p["/a"] + p["/b"] / 16 if t == "/a" else 40 / p["/b"]


def test_a_tenant_violating_in_the_combination_is_raised_to_a_fixpoint():
    res, ev = run(contended)
    assert res.feasible is True
    # alone (b at its 8-page scenario limit) a needs 27 pages; with b at 20, 54
    assert pages(res) == {"/a": 54, "/b": 20}
    assert [(r["kind"], r["assignments"]) for r in res.data["rounds"]] == [
        ("coarse", 16), ("bisect", 2), ("bisect", 2), ("bisect", 2), ("combination", 1),
        ("coarse", 8), ("bisect", 1), ("bisect", 1), ("bisect", 1),
        ("combination", 0),  # probed in the last bisection
    ]  # fmt: skip
    curve = res.data["tenants"]["/a"]["curve"]
    # alone first (b at its scenario limit), then above 27 pages with b at 20
    assert [(c["limit"] // P, c["others"], c["meets"]) for c in curve if c["others"]] == [
        (n, {"/b": 20 * P}, n >= 54) for n in (32, 37, 41, 46, 50, 52, 53, 54, 55, 59, 64)
    ]
    notes = res.data["tenants"]["/a"]["notes"]
    assert len(notes) == 1
    assert notes[0].startswith("violated in the combination of round ")
    assert notes[0].endswith("at 108KiB (slowdown<=2 violated (2.73148)); searched again above it")
    assert res.data["tenants"]["/b"]["notes"] == []


def bumpy(t: str, p: dict[str, int], seed: int) -> float:
    if t == "/b":
        return 1.0
    n = p["/a"]
    return 1.0 if 10 <= n < 20 or n >= 30 else 3.0


def test_a_curve_not_monotone_is_scanned_and_said():
    res, _ = run(bumpy)
    assert res.feasible is True
    assert pages(res) == {"/a": 10, "/b": 1}
    a = res.data["tenants"]["/a"]
    assert a["monotone"] is False
    assert a["notes"] == [
        "not monotone (round 1): the SLOs are met at 64KiB but violated at 96KiB; every "
        "limit below 64KiB was evaluated (15 limits) and the smallest meeting the SLOs chosen"
    ]
    assert res.data["tenants"]["/b"]["monotone"] is True


def test_a_tenant_that_cannot_meet_its_slo_is_infeasible_exit_data():
    res, _ = run(lambda t, p, s: 5.0 if t == "/a" else 1.0)
    assert res.feasible is False
    assert res.data["infeasible_tenants"] == ["/a"]
    assert res.data["reason"] == ("slo: /a violates at 256KiB: slowdown<=2 violated (5)")
    assert pages(res) == {"/a": 64, "/b": 1}


def test_an_enclave_that_does_not_complete_violates():
    ev = Synthetic(lambda t, p, s: 1.0, outcome="stuck")
    res, _ = run(None, ev=ev)
    assert res.feasible is False
    assert res.data["infeasible_tenants"] == ["/a", "/b"]
    assert res.data["tenants"]["/a"]["why_not"] == "enclave ea ended stuck (seed 1)"


@pytest.mark.parametrize(
    ("budget", "feasible"), [("55pages", True), ("54pages", False), ("capacity", True)]
)
def test_budget(budget, feasible):
    res, _ = run(independent, budget=budget)
    assert res.feasible is feasible
    assert pages(res) == {"/a": 50, "/b": 5}
    if not feasible:
        assert res.data["reason"] == (
            "budget: the smallest limits found add up to 220KiB, above the budget 216KiB"
        )
        assert res.data["infeasible_tenants"] == []


def test_budget_below_the_grid_is_infeasible_not_an_error():
    res, _ = run(independent, budget="1page")
    assert res.feasible is False and res.data["reason"].startswith("budget: ")


def test_every_seed_must_meet_the_slo():
    def f(t: str, p: dict[str, int], seed: int) -> float:
        return (100 if seed == 1 else 120) / p["/a"] if t == "/a" else 1.0

    res, _ = run(None, ev=Synthetic(f, seeds=(1, 2)), seeds="1,2")
    assert pages(res) == {"/a": 60, "/b": 1}
    assert res.data["seeds"] == [1, 2]
    assert res.data["tenants"]["/a"]["metrics"] == {"slowdown<=2": 2.0}


def test_named_tenant_only_is_searched():
    res, ev = run(independent, tenants=["/b"])
    assert res.limits == {"/b": 5 * P}
    assert all(set(a) == {"/b"} for b in ev.batches for a in b)


def test_advise_json_written_and_deterministic(tmp_path):
    r1, _ = run(independent, out=tmp_path / "x")
    r2, _ = run(independent, out=tmp_path / "x")
    text = (tmp_path / "x" / "advise.json").read_text()
    assert json.loads(text) == json.loads(json.dumps(r2.data))
    assert json.loads(text)["format"] == "epcsim-advise"
    assert r1.data == r2.data
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["advise.json"]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"slos": ["slowdown=2"]}, "slo 'slowdown=2': expected METRIC OP VALUE"),
        (
            {"slos": ["speed<=2"]},
            "slo 'speed<=2': unknown metric 'speed' (known: accesses_per_s, "
            "max_fault_latency, miss_ratio, p50_fault_latency, p99_fault_latency, pages_reclaimed, "
            "retries, slowdown)",
        ),
        ({"slos": ["slowdown<=fast"]}, "slo 'slowdown<=fast': 'fast' is not a number"),
        ({"slos": ["p99_fault_latency<=5parsecs"]}, "'5parsecs' is not a time"),
        ({"slos": []}, "slos: name at least one SLO"),
        ({"tenants": ["/c"]}, "tenant /c: not a cgroup of scenario two (its cgroups: /a, /b)"),
        ({"tenants": ["/"]}, "tenant /: the root cgroup has no misc.max"),
        ({"tenants": ["/a", "a"]}, "tenant /a: named twice"),
        ({"resolution": 0}, "resolution: must be at least one page"),
        (
            {"resolution": "5000"},
            "resolution: '5000' is not a whole number of 4096-byte pages (try 4KiB or 8KiB)",
        ),
        ({"resolution": "1MiB"}, "resolution: 1MiB is above the host's EPC (256KiB)"),
        ({"budget": "lots"}, "budget: not a size: 'lots'"),
        ({"seeds": "x"}, "seeds: expected FROM..TO"),
    ],
)
def test_bad_input(kw, message):
    with pytest.raises(EpcsimError) as e:
        run(independent, **kw)
    assert message in str(e.value)


def test_slo_units():
    from epcsim.advise import parse_slo

    assert parse_slo("p99_fault_latency<=50us").bound == 50_000
    assert parse_slo("p99_fault_latency < 1ms").bound == 1_000_000
    assert parse_slo("p99_fault_latency<=700").bound == 700
    assert parse_slo("miss_ratio>=0.25").op == ">="
    s = parse_slo("accesses_per_s>1e6")
    assert (s.bound, s.holds(2e6), s.holds(1e6), s.holds(None)) == (1e6, True, False, True)


def test_tenant_value_own_row_then_subtree_worst_over_seeds():
    from epcsim.advise import parse_slo, tenant_value

    rows = [
        {"seed": 1, "cgroup": "/t", "enclave": None, "slowdown": None},
        {"seed": 1, "cgroup": "/t/x", "enclave": None, "slowdown": 3.0},
        {"seed": 1, "cgroup": "/t/x", "enclave": "x", "slowdown": 3.0},
        {"seed": 1, "cgroup": "/t/y", "enclave": "y", "slowdown": 5.0},
        {"seed": 2, "cgroup": "/t/x", "enclave": None, "slowdown": 4.0},
        {"seed": 2, "cgroup": "/t/x", "enclave": "x", "slowdown": 4.0},
        {"seed": 1, "cgroup": "/tx", "enclave": "z", "slowdown": 9.0},
        {"seed": 1, "cgroup": "/u", "enclave": None, "slowdown": None},
    ]
    up, down = parse_slo("slowdown<=2"), parse_slo("slowdown>=2")
    assert tenant_value(rows, "/t", up) == 5.0  # its subtree's enclaves (not /tx)
    assert tenant_value(rows, "/t", down) == 3.0
    assert tenant_value(rows, "/t/x", up) == 4.0  # its own row, the worst seed
    assert tenant_value(rows, "/u", up) is None  # nothing measured: meets


def test_warnings_root_enclaves_and_timed_limit_writes():
    text = TWO.replace('name = "eb"', 'name = "eb"\ncount = 1').replace(
        'cgroup = "/b"\nsize', 'cgroup = "/"\nsize'
    )
    text += '[[at]]\ntime = "1ms"\nwrite = { path = "/a/misc.max", value = "sgx_epc 4096" }\n'
    res, _ = run(independent, scenario=text)
    assert res.data["tenants_searched"] == ["/a"]
    assert res.data["warnings"] == [
        "/ holds enclaves (eb): not a tenant (the root has no misc.max)",
        "at.0 writes /a/misc.max: the limit advised for /a is the one it starts with",
    ]
    clean, _ = run(independent)
    assert clean.data["warnings"] == []


def test_a_named_cgroup_without_enclaves_is_a_tenant_met_at_the_smallest_limit():
    text = TWO + '[[cgroup]]\npath = "/idle"\n'
    res, _ = run(independent, scenario=text, tenants=["/idle", "/b"])
    assert res.feasible is True
    assert pages(res) == {"/idle": 1, "/b": 5}
    idle = res.data["tenants"]["/idle"]
    assert idle["scenario_limit"] is None and idle["metrics"] == {"slowdown<=2": None}
    assert idle["margin"]["slowdown<=2"]["margin"] is None
