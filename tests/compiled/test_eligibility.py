"""What the compiled engine runs is an allow-list (issue 13, finding 2).

Every field of the scenario schema, every option of ``epcsim.run()`` / ``Simulation``
and every condition of the take-over has a rule in
:data:`epcsim.compiled.eligibility.RULES`; a field without one runs on the reference.
The experiment ``host.experiments.no_age`` (the age test always says "old") is a knob of
the reference model only: ``--engine auto`` runs it on the reference and says why,
``--engine compiled`` refuses it.  And the allow-list is not trivially false: what each
built-in, benchmark and exactness scenario runs on is pinned below, as measured on the
deny-list it replaced.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _scenarios import tiny
from pydantic import BaseModel
from typer.testing import CliRunner

import epcsim
from epcsim.cli import app
from epcsim.compiled import eligibility
from epcsim.compiled.eligibility import (
    ALWAYS,
    COMPILED_COSTS,
    RULES,
    option_ineligibility,
    schema_keys,
    static_ineligibility,
)
from epcsim.costs import CostModel
from epcsim.errors import EpcsimError
from epcsim.mrc import mrc_scenario
from epcsim.scenario import Scenario, list_builtins, load_scenario
from epcsim.sim.engine import Simulation, simulate

ROOT = Path(__file__).resolve().parents[2]

NO_AGE = (
    "the compiled engine does not run the experiment no_age (its age test is the kernel's "
    "sgx_reclaimer_age())"
)


# --- every field, option and condition has a rule ------------------------------------------


def _walk(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every field of *model*, recursively: ``a.b``, lists of tables ``a[].b``, tables of
    free-form keys ``a{}`` (this test's own walk, not the module's)."""
    out = []
    for name, info in model.model_fields.items():
        tp = info.annotation
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = args[0] if len(args) == 1 else tp
        key = prefix + name + ("{}" if typing.get_origin(tp) is dict else "")
        out.append(key)
        inner = typing.get_args(tp)[0] if typing.get_origin(tp) is list else tp
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            out += _walk(inner, key + ("[]." if inner is not tp else "."))
    return out


def test_every_schema_field_has_a_rule_and_every_rule_a_field() -> None:
    fields = _walk(Scenario)
    assert len(fields) == len(set(fields)) > 60
    declared = [k for k in RULES if not k.startswith(("option.", "dynamic."))]
    assert sorted(set(fields) - set(declared)) == [], "fields without a rule"
    assert sorted(set(declared) - set(fields)) == [], "rules of no field"
    assert schema_keys() == fields
    # the walk reaches nested tables, lists of tables and tables of free-form keys
    assert {"host.experiments.no_age", "at[].write.path", "enclave[].workload{}"} <= set(fields)


def test_every_option_has_a_rule_and_every_rule_an_option() -> None:
    params = set()
    for f in (epcsim.run, simulate, Simulation.__init__):
        params |= {p for p in inspect.signature(f).parameters if p != "self"}
    options = {k.removeprefix("option.") for k in RULES if k.startswith("option.")}
    assert options == params


def test_dynamic_rules_are_all_judged() -> None:
    """Each ``dynamic.*`` rule has a predicate, or take_over() refuses with it by name
    (``refusal("dynamic.X")``); every name it uses is a rule."""
    src = (ROOT / "src/epcsim/compiled/engine.py").read_text()
    named = {
        n.args[0].value
        for n in ast.walk(ast.parse(src))
        if isinstance(n, ast.Call)
        and getattr(n.func, "id", "") == "refusal"
        and isinstance(n.args[0], ast.Constant)
    }
    unjudged = {k for k, r in RULES.items() if k.startswith("dynamic.") and r.check is None}
    assert (
        named
        == unjudged
        == {
            "dynamic.reclaimer_busy",
            "dynamic.memcg_phase",
            "dynamic.other_actors",
            "dynamic.no_sampler",
        }
    )
    for k, r in RULES.items():
        assert r.reason, k
        if r.kind == "when":
            assert r.check is not None or k in unjudged, k
            assert r.check is None or r.check.__doc__, k  # a named, documented predicate


def test_a_field_without_a_rule_runs_on_the_reference(monkeypatch) -> None:
    sc = load_scenario(tiny())
    assert static_ineligibility(sc) is None
    monkeypatch.delitem(RULES, "host.sample_interval")
    why = "host.sample_interval is not declared supported by the compiled engine"
    assert static_ineligibility(sc) == why
    with pytest.raises(EpcsimError) as e:
        epcsim.run(sc, engine="compiled")
    assert str(e.value) == f"engine compiled: {why}; use engine reference or auto"


def test_an_option_without_a_rule_is_not_supported(monkeypatch) -> None:
    assert option_ineligibility({"seed": 1, "progress": None}) is None
    monkeypatch.delitem(RULES, "option.progress")
    r = epcsim.run(tiny(400), engine="auto", progress=lambda p: None)
    assert r.engine == "reference"
    assert r.run["engine_reason"] == (
        "auto: option progress is not declared supported by the compiled engine"
    )


def test_every_cost_is_declared() -> None:
    """A cost added to the model is not read by the core until declared.  ``lru_scan``
    is paid only under the global-lru policy, which the core does not run: a scenario
    setting it is refused."""
    assert set(CostModel.model_fields) == COMPILED_COSTS | {"lru_scan"}
    assert "lru_scan" not in COMPILED_COSTS
    sc = load_scenario(tiny())
    fake = sc.model_copy(
        update={"host": sc.host.model_copy(update={"costs": {"ewb": 1, "bogus": 2}})}
    )
    assert static_ineligibility(fake) == "the compiled engine does not read that cost"


# --- the reference-only knob: experiments.no_age ---------------------------------------------


def _no_age(on: bool) -> str:
    """tiny() with Zipf accesses (hot pages stay young), no_age on or off."""
    text = tiny(3000).replace('pattern = "uniform"', 'pattern = "zipf", alpha = 1.2')
    return text.replace(
        'duration = "1s"',
        'duration = "1s"\nexperiments = { no_age = %s }' % ("true" if on else "false"),
    )


def test_no_age_changes_the_reference_model() -> None:
    """The age test says "old": fewer pages rotate back, more faults (a hot page is
    evicted although it was accessed since it was isolated)."""
    off = simulate(_no_age(False), engine="reference").summary
    on = simulate(_no_age(True), engine="reference").summary
    assert on["experiments"] == {"fault_unreferenced": False, "no_age": True}
    assert off["experiments"] == {"fault_unreferenced": False}
    assert on["enclaves"]["e"]["faults"] > off["enclaves"]["e"]["faults"]


def test_no_age_keeps_the_scenario_hash_when_off() -> None:
    """A switch that is off is not dumped: scenario_hash and summary.json of every
    scenario not using it are what they were before it existed (measured on main)."""
    assert load_scenario(tiny()).digest() == TINY_HASH
    assert load_scenario(_no_age(False)).digest() == TINY_HASH_ZIPF
    assert load_scenario(_no_age(True)).digest() != TINY_HASH_ZIPF


def test_no_age_runs_on_the_reference_with_auto(tmp_path: Path) -> None:
    assert static_ineligibility(load_scenario(_no_age(True))) == NO_AGE
    sc = tmp_path / "sc.toml"
    sc.write_text(_no_age(True))
    r = CliRunner().invoke(app, ["run", str(sc), "-q", "-o", str(tmp_path / "auto")])
    assert r.exit_code == 0, r.output
    run = json.loads((tmp_path / "auto" / "run.json").read_text())
    assert (run["engine"], run["engine_reason"]) == ("reference", f"auto: {NO_AGE}")
    res = epcsim.run(sc, engine="auto", report=False)
    assert res.engine == "reference" and res.engine_note == NO_AGE


def test_no_age_is_refused_by_the_compiled_engine(tmp_path: Path) -> None:
    sc = tmp_path / "sc.toml"
    sc.write_text(_no_age(True))
    for engine, head in (("compiled", "engine compiled"), ("check", "engine check")):
        r = CliRunner().invoke(
            app, ["run", str(sc), "--engine", engine, "-q", "-o", str(tmp_path / engine)]
        )
        assert r.exit_code == 2, r.output
        assert f"epcsim: error: {head}: {NO_AGE}; " in r.output
        assert not (tmp_path / engine).exists()


def test_no_age_declared_supported_would_run_compiled_and_be_ignored(monkeypatch) -> None:
    """What the deny-list did: a knob nobody declared unsupported ran compiled, and the
    compiled engine (which has no such knob) ignored it."""
    monkeypatch.setitem(RULES, "host.experiments.no_age", ALWAYS)
    ref = simulate(_no_age(True), engine="reference")
    auto = simulate(_no_age(True), engine="auto")
    assert auto.engine == "compiled"
    assert auto.summary["enclaves"]["e"]["faults"] != ref.summary["enclaves"]["e"]["faults"]
    plain = simulate(_no_age(False), engine="reference").summary
    assert auto.summary["enclaves"]["e"]["faults"] == plain["enclaves"]["e"]["faults"]


#: scenario_hash of tiny() and of _no_age(False) (which dumps as tiny() with Zipf
#: accesses did), measured on main before no_age existed
TINY_HASH = "cfff51c70b6ef9837c1f7fe6da9a95a0a0cd4cc8446ea28bb2395eb8160d8c81"
TINY_HASH_ZIPF = "41e9f9df7bddd032e1df714ce652f182bc8af6e3700dbb79a452be2b869cf08d"


# --- what runs compiled: pinned, as measured on the deny-list -------------------------------


def _module(path: Path, name: str) -> types.ModuleType:
    """A test or benchmark module by path (the one pytest imported, if it did)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _cases(tmp: Path) -> dict[str, Any]:
    """Every built-in, benchmark and exactness scenario, by a name for the table."""
    exact = _module(ROOT / "tests/sim/test_engines_exact.py", "test_engines_exact")
    peer = _module(ROOT / "benchmarks/peer.py", "_bench_peer")
    tenants = _module(ROOT / "benchmarks/tenants.py", "_bench_tenants")
    out: dict[str, Any] = {f"builtin:{n}": f"builtin:{n}" for n, _ in list_builtins()}
    for n, kw in exact.FIXED.items():
        out[f"exact:{n}"] = exact._toml(**kw)
    for n, kw in exact.FIXED_MULTI.items():
        out[f"exact_multi:{n}"] = exact._toml_multi(**kw)
    out["exact:eadd"] = exact._toml(build="eadd", size_pages=128, epc_pages=256)
    out["exact:busy"] = exact._toml(build="eadd", size_pages=1024, epc_pages=256)
    npy = tmp / "zipf.npy"
    np.save(npy, peer.zipf_trace(np.random.default_rng(1), 5000, 2000))
    out["bench:peer"] = peer.scenario(npy, 200)
    out["bench:peer_unref"] = peer.scenario(npy, 200, unref=True)
    out["bench:tenants"] = tenants.scenario(16 << 20, 64000)  # scaled down
    out["bench:mrc"] = mrc_scenario(str(npy), 200, 5000, {}, {})
    out["bench:mrc_unref"] = mrc_scenario(str(npy), 200, 5000, {}, {"fault_unreferenced": True})
    for f in sorted((ROOT / "examples").glob("*.toml")):  # benchmarks/engines.py's too
        out[f"example:{f.stem}"] = str(f)
    return out


ELIGIBLE = "the scenario is eligible for the compiled engine"
#: (engine, reason) that run.json records with --engine auto, measured on main's deny-list
#: ("mixed": the reason the first offer to the compiled engine was refused)
TABLE = {
    # its ADD_PAGES loops run compiled (issue 15, session 12); it has no enclave threads
    "builtin:kselftest": ("compiled", ELIGIBLE),
    "builtin:nested-fairness": ("compiled", ELIGIBLE),
    # the findings' and comparisons' built-ins (issue 14), as they run today
    "builtin:empty-lru-race": ("compiled", ELIGIBLE),
    "builtin:fairness-128": ("compiled", ELIGIBLE),
    "builtin:lower-limit": (
        "mixed",
        "other actors were running when the enclave threads were offered",
    ),
    # memory.max: the reclaim phases whose backing may not fit are the reference's
    # (RC_MEMCG, session 12; the memcg OOM kills of the finding run there)
    "builtin:oom-batch-kills": (
        "mixed",
        "other actors were running when the enclave threads were offered",
    ),
    "builtin:parent-livelock": (
        "mixed",
        "other actors were running when the enclave threads were offered",
    ),
    # ksgxd is busy when the threads start: taken over mid-reclaim (session 12)
    "builtin:root-bias": ("compiled", ELIGIBLE),
    "builtin:mixed-priority": (
        "reference",
        "the compiled engine runs no extension (host.extensions: epcsim.kernel.rfc_knobs)",
    ),
    "builtin:noisy-neighbour": (
        "mixed",
        "other actors were running when the enclave threads were offered",
    ),
    # ksgxd is busy when the threads start: taken over mid-reclaim (session 12)
    "builtin:overcommit": ("compiled", ELIGIBLE),
    **{
        f"exact:{n}": ("compiled", ELIGIBLE)
        for n in (
            "ksgxd",
            "limit",
            "tree",
            "fits",
            "secs",
            "loop",
            "limit_time",
            "duration",
            "unref",
            "nomisc",
            "sections",
            "root",
            "fine_samples",
            "eadd",
        )
    },
    "exact:busy": ("compiled", ELIGIBLE),
    **{
        f"exact_multi:{n}": ("compiled", ELIGIBLE)
        for n in (
            "threads",
            "cpu_wait",
            "tenants",
            "parent_limit",
            "duration",
            "nomisc",
            "secs",
        )
    },
    "bench:peer": ("compiled", ELIGIBLE),
    "bench:peer_unref": ("compiled", ELIGIBLE),
    "bench:tenants": ("compiled", ELIGIBLE),
    "bench:mrc": ("compiled", ELIGIBLE),
    "bench:mrc_unref": ("compiled", ELIGIBLE),
    # tenant B starts at 20 ms while A runs: the issue-15 case of a staggered EADD start
    # (B's build and A's threads run compiled together since session 12: A's threads
    # are first refused while B's build is inside a page, not at a page's end)
    "example:staggered-eadd": (
        "mixed",
        "other actors were running when the enclave threads were offered",
    ),
}


#: the two built-ins the reference runs are cut at 20 ms of virtual time (40 s of wall
#: time saved): the choice is made at the first enclave thread's first step (27 us and
#: 13 ms), before the cut, in the same state; a cut before it would record "the compiled
#: engine did not run", not the pinned reason
CUT = {
    "example:staggered-eadd": ['host.duration="60ms"'],
    "builtin:noisy-neighbour": ['host.duration="20ms"'],
    "builtin:overcommit": ['host.duration="20ms"'],
}


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _cases(tmp_path_factory.mktemp("cases"))


def test_the_table_covers_every_scenario(cases: dict[str, Any]) -> None:
    assert sorted(cases) == sorted(TABLE)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_what_runs_compiled_is_what_ran_before(cases: dict[str, Any], name: str) -> None:
    engine, reason = TABLE[name]
    sc = load_scenario(cases[name], overrides=CUT.get(name, ()), check_memory=False)
    static = static_ineligibility(sc)
    if static is not None:  # known from the scenario: the reference runs it
        assert (engine, reason) == ("reference", static)
        return
    r = epcsim.run(sc, engine="auto", report=False)
    if engine == "mixed":  # refused at first (reason), taken over later
        reason = (
            "the compiled engine took the enclave threads over when they became eligible "
            f"(before: {reason})"
        )
    assert (r.run["engine"], r.run["engine_reason"]) == (engine, f"auto: {reason}")
    assert (r.run["events"]["compiled"] > 0) == (engine != "reference")


def test_the_module_declares_its_key_forms() -> None:
    doc = eligibility.__doc__ or ""
    for form in ("enclave[].start", "host.costs{}", "option.NAME", "dynamic.NAME"):
        assert form in doc
