"""The policy framework (issue 14): the registry, the hook table held to the code, the
scenario key and CLI flag, and a pass-through policy that re-implements v16 through the
hooks giving byte-identical results (so a hook point changes nothing by being there)."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
import textwrap
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

import epcsim
from epcsim import policies
from epcsim.cli import app
from epcsim.errors import EpcsimError, ScenarioError
from epcsim.kernel import epc_cgroup
from epcsim.kernel import reclaim as kreclaim
from epcsim.kernel.hooks import HOOKS, Episode
from epcsim.policies.base import Policy
from epcsim.scenario import load_scenario


def test_registry_names_and_default() -> None:
    assert policies.DEFAULT == "v16"
    assert policies.names()[0] == "v16"
    for name in policies.names():
        cls = policies.policy_class(name)
        assert cls.name == name and issubclass(cls, Policy)
        assert cls.source and cls.changes
        assert cls.__module__ == f"epcsim.policies.{policies.REGISTRY[name]}"
        assert (cls.__module__.split(".")[-1], cls) and importlib.import_module(
            cls.__module__
        ).__doc__
    assert policies.make("v16") is None  # v16 hooks nothing: no policy object at all
    with pytest.raises(EpcsimError, match=r"unknown policy 'nope'; known: v16"):
        policies.policy_class("nope")


def _calls_of(func_path: str) -> str:
    mod, _, name = func_path.rpartition(".")
    if name == "write":  # a method: CgroupFs.write
        mod, _, cls = mod.rpartition(".")
        return inspect.getsource(getattr(importlib.import_module(mod), cls).write)
    return inspect.getsource(getattr(importlib.import_module(mod), name))


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_each_hook_is_called_from_the_function_the_table_names(hook: str) -> None:
    """The table is the code's: the named function reads ``pol.<hook>`` and calls it,
    and no other model module mentions the hook."""
    where, what = HOOKS[hook]
    assert what
    assert getattr(Policy, hook) is None  # v16's behaviour unless a policy sets it
    src = textwrap.dedent(_calls_of(where))
    assert f"pol.{hook} is not None" in src or f"pol.{hook} is None" in src, where
    assert f"pol.{hook}(" in src, where
    kdir = Path(epcsim.kernel.__file__).parent
    users = [
        p.name
        for p in sorted(kdir.glob("*.py"))
        if p.name != "hooks.py" and f"pol.{hook}" in p.read_text()
    ]
    assert users == [where.split(".")[2] + ".py"], users


def test_policy_declares_every_hook_and_nothing_else() -> None:
    declared = {
        n
        for n, v in vars(Policy).items()
        if v is None and not n.startswith("_") and n not in ("name", "source", "changes")
    }
    assert declared == set(HOOKS)
    tree = ast.parse(Path(epcsim.kernel.hooks.__file__).read_text())
    assert any(isinstance(n, ast.ClassDef) and n.name == "Episode" for n in tree.body)


TINY = """\
[host]
epc = "1MiB"
{policy}

[[enclave]]
name = "e"
size = "64KiB"
workload = {{ pattern = "uniform", accesses = 10 }}
"""


def test_scenario_key_default_keeps_the_hash() -> None:
    a = load_scenario(TINY.format(policy=""))
    b = load_scenario(TINY.format(policy='policy = "v16"'))
    assert a.host.policy == b.host.policy == "v16"
    assert a.digest() == b.digest()
    assert "policy" not in a.model_dump()["host"]


def test_unknown_policy_names_the_field() -> None:
    with pytest.raises(ScenarioError) as ei:
        load_scenario(TINY.format(policy='policy = "v99"'))
    e = ei.value
    assert (e.table, e.field) == ("host", "policy")
    assert "unknown policy 'v99'; known: v16" in str(e)


def test_cli_policy_flag_and_list(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["policies"])
    # the names are padded to the longest registered one
    assert r.exit_code == 0 and re.match(r"v16 +the series v16, 2024-08-20", r.output)
    f = tmp_path / "s.toml"
    f.write_text(TINY.format(policy=""))
    r = CliRunner().invoke(app, ["run", str(f), "--policy", "nope", "-o", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert "host.policy: unknown policy 'nope'; known: v16" in r.output
    assert not (tmp_path / "o").exists()
    r = CliRunner().invoke(app, ["run", str(f), "--policy", "v16", "-q", "-o", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["policy"] == "v16"


class PassThrough(Policy):
    """v16 re-expressed through the hooks: the reclaim loop, the charge loop and the age
    test the model runs by default, plus a log of the episodes it saw."""

    name = "pass-through"
    source = "a test: the series v16 through the hooks"
    changes = "nothing"

    def __init__(self, *, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.kinds: Counter[str] = Counter()
        self.episodes: dict[int, Episode] = {}  # by id, kept alive

    def reclaim_pages(self, host, root, charge_task, nr_to_scan, episode: Episode):
        self.kinds[episode.kind] += 1
        self.episodes[id(episode)] = episode
        cnt = 0
        while cnt < nr_to_scan and not epc_cgroup.sgx_cgroup_lru_empty(host, root.cg):
            c = epc_cgroup.sgx_cgroup_next_get(host, root)
            cnt += yield from kreclaim.sgx_reclaim_pages(host, c, charge_task)
            if c is not root:
                epc_cgroup.sgx_put_cg(host, c)
        return cnt

    def age_test(self, host, sgx_cg) -> bool:
        return True


@pytest.mark.parametrize("builtin", ["noisy-neighbour", "nested-fairness", "overcommit"])
def test_a_pass_through_policy_changes_nothing(
    builtin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = epcsim.run(f"builtin:{builtin}", engine="reference")
    made: list[PassThrough] = []

    def make(name: str, *, seed: int = 0) -> PassThrough:
        made.append(PassThrough(seed=seed))
        return made[-1]

    monkeypatch.setattr(policies, "make", make)
    hooked = epcsim.run(f"builtin:{builtin}", engine="reference")
    assert hooked.summary == base.summary
    assert hooked.timeseries.equals(base.timeseries)
    (pol,) = made
    assert sum(pol.kinds.values()) > 0
    # several calls share one episode (a charge loop, a work run, a ksgxd wake-up)
    assert len(pol.episodes) < sum(pol.kinds.values())
    assert sum(e.calls for e in pol.episodes.values()) == sum(pol.kinds.values())
    assert set(pol.kinds) <= {"sync", "async", "ksgxd", "direct", "alloc"}
