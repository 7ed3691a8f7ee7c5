"""The compiled engine runs the series' v14 and v13 walks and the limit-only design
(``S_POLICY``; ``compiled/reclaim.py``, ``compiled/epc_cgroup.py``) exactly as the
reference engine runs their policies (epcsim.policies): the fixed scenarios of the
exactness tests, the built-ins, random scenarios, the kernel state at a time limit, and
the hand-back of a reclaim episode in the middle (v14's cursor)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sim.test_engines_exact import (
    FIXED,
    FIXED_MULTI,
    _assert_same,
    _both,
    _toml,
    _toml_multi,
    assert_truncated_states_equal,
    multi_scenarios,
    scenarios,
)

from epcsim.compiled import engine as compiled_engine
from epcsim.compiled.eligibility import COMPILED_POLICIES, static_ineligibility
from epcsim.scenario.schema import Scenario, load_scenario
from epcsim.sim.engine import Simulation

POLICIES = ("v14", "v13", "limit-only")


def _with_policy(toml: str, policy: str) -> str:
    """*toml* (a scenario with a ``[host]`` table) run under *policy*."""
    assert "[host]\n" in toml
    return toml.replace("[host]\n", f'[host]\npolicy = "{policy}"\n', 1)


def test_the_compiled_engine_runs_these_policies_and_refuses_the_others() -> None:
    assert set(POLICIES) | {"v16"} == COMPILED_POLICIES
    for name in POLICIES:
        sc = load_scenario(_with_policy(_toml(), name))
        assert static_ineligibility(sc) is None, name
    for name in ("oom-v2", "global-lru", "memcg-iter", "mglru-memcg"):
        why = static_ineligibility(load_scenario(_with_policy(_toml(), name)))
        assert why == (
            "the compiled engine runs the policies v16, v14, v13 and limit-only (epcsim.policies)"
        ), name


# the fixed scenarios whose reclaim differs by design: ksgxd alone, a limit, a tree, two
# sections, a tiny enclave evicted whole
_FIXED = ("ksgxd", "limit", "tree", "sections", "secs", "loop")


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", _FIXED)
def test_fixed_scenarios_match_under_the_policy(policy: str, name: str) -> None:
    ref, bat = _both(_with_policy(_toml(**FIXED[name]), policy))
    assert bat.engine == "compiled", bat.engine_note
    assert ref.summary["policy"] == policy == bat.summary["policy"]
    _assert_same(ref, bat)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", ["tenants", "parent_limit", "secs", "cpu_wait"])
def test_fixed_multi_scenarios_match_under_the_policy(policy: str, name: str) -> None:
    ref, bat = _both(_with_policy(_toml_multi(**FIXED_MULTI[name]), policy))
    assert bat.engine == "compiled", bat.engine_note
    _assert_same(ref, bat)


@pytest.mark.parametrize("policy", POLICIES)
def test_nested_fairness_matches_under_the_policy(policy: str) -> None:
    sc = load_scenario("builtin:nested-fairness").model_dump(mode="json")
    sc["host"]["policy"] = policy
    ref, bat = _both(sc)
    assert bat.engine == "compiled", bat.engine_note
    _assert_same(ref, bat)


def test_the_designs_reclaim_differently_in_the_compiled_engine() -> None:
    """builtin:nested-fairness in the compiled engine: each design's evictions per leaf
    (/p/a, /p/b/x, /p/b/y), as the reference engine measured them (docs/POLICIES.md);
    an engine that ran v16's walk for every policy fails here."""
    want = {
        "v16": (5209, 2054, 1462),
        "v14": (6371, 768, 775),
        "v13": (6998, 272, 272),
        "limit-only": (16, 0, 0),
    }
    for policy, evictions in want.items():
        sc = load_scenario("builtin:nested-fairness").model_dump(mode="json")
        sc["host"]["policy"] = policy
        res = Simulation(Scenario.model_validate(sc), engine="compiled").run()
        assert res.engine == "compiled"
        cg = res.summary["cgroups"]
        got = tuple(cg[p]["evictions"] for p in ("/p/a", "/p/b/x", "/p/b/y"))
        assert got == evictions, policy
    # limit-only: the tenant at its limit gets -ENOMEM (SIGBUS), no reclaim of its own
    assert cg["/p/b/y"]["enomem"] == 1


# limit-only under a cgroup limit ends in SIGBUS at once: only physical shortage runs on
_TRUNCATED = [(p, n) for p in ("v14", "v13") for n in ("tree", "limit", "ksgxd")] + [
    ("limit-only", "ksgxd"),
    ("limit-only", "sections"),
]


@pytest.mark.parametrize(("policy", "name"), _TRUNCATED)
@pytest.mark.parametrize("stop", ["2ms", "7ms"])
def test_truncated_runs_leave_identical_kernel_state(policy: str, name: str, stop: str) -> None:
    kw = dict(FIXED[name])
    kw.update(duration=stop, accesses=200000)
    assert_truncated_states_equal(_with_policy(_toml(**kw), policy))


def test_v14_hands_back_an_episode_mid_walk(monkeypatch) -> None:
    """Two threads of one enclave under v14 end with ksgxd in a reclaim episode whose
    cursor is on a cgroup other than the root: the reference goes on from it, equal."""
    seen = []
    real = compiled_engine._episode_state

    def spy(p, r):
        state = real(p, r)
        seen.append(state)
        return state

    monkeypatch.setattr(compiled_engine, "_episode_state", spy)
    toml = _with_policy(_toml_multi(**FIXED_MULTI["threads"]), "v14")
    ref, bat = _both(toml)
    assert bat.engine == "compiled"
    assert any(s.get("next_cg") is not None for s in seen), seen
    _assert_same(ref, bat)


@pytest.mark.parametrize("stop", ["1ms", "2ms", "4ms", "7ms"])
def test_v14_episode_cursor_at_a_time_limit_is_the_references(stop: str) -> None:
    """Stopped by the time limit, ksgxd's open episode (``host.ksgxd_episode``) and its
    cursor are the same in both engines (the compiled engine's R_EPI / R_CUR handed
    back): /a/y at each of these stops."""
    kw = dict(FIXED_MULTI["tenants"], duration=stop)
    sc = load_scenario(_with_policy(_toml_multi(**kw), "v14"))
    cursors = []
    for engine in ("reference", "compiled"):
        sim = Simulation(sc, engine=engine)
        res = sim.run()
        assert res.engine == engine and res.summary["truncated"]
        ep = sim.host.ksgxd_episode
        assert ep is not None and ep.kind == "ksgxd"
        nxt = ep.state.get("next_cg")
        cursors.append(None if nxt is None else nxt.cg.path())
    assert cursors == ["/a/y", "/a/y"]


_EXAMPLES = int(os.environ.get("EPCSIM_EXAMPLES_CAP", 20))


@settings(
    max_examples=min(20, _EXAMPLES),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(toml=scenarios(), policy=st.sampled_from(POLICIES))
def test_random_scenarios_match_under_a_policy(toml: str, policy: str) -> None:
    ref, bat = _both(_with_policy(toml, policy))
    _assert_same(ref, bat)


@settings(
    max_examples=min(15, _EXAMPLES),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(toml=multi_scenarios(), policy=st.sampled_from(POLICIES))
def test_random_multi_scenarios_match_under_a_policy(toml: str, policy: str) -> None:
    ref, bat = _both(_with_policy(toml, policy))
    _assert_same(ref, bat)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    toml=st.one_of(scenarios(), scenarios(thrash=True), multi_scenarios()),
    policy=st.sampled_from(POLICIES),
)
def test_random_scenarios_match_under_a_policy_long(toml: str, policy: str) -> None:
    ref, bat = _both(_with_policy(toml, policy))
    _assert_same(ref, bat)
