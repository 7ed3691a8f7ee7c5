"""Every built-in under each external baseline (global-lru, memcg-iter, mglru-memcg) on
the reference engine: the model's invariants hold at the end, and the summary differs
from v16's (each design changes what happens on at least one built-in).  Slow: the
kselftest built-in alone takes one to two minutes per policy."""

from __future__ import annotations

from functools import cache

import pytest

import epcsim
from epcsim import policies
from epcsim.kernel import check_invariants

EXTERNAL = ["global-lru", "memcg-iter", "mglru-memcg"]
BUILTINS = [name for name, _ in epcsim.list_builtins()]


@cache
def _v16(builtin: str) -> dict:
    return epcsim.run(f"builtin:{builtin}", engine="reference").summary


@pytest.mark.slow
@pytest.mark.parametrize("builtin", BUILTINS)
@pytest.mark.parametrize("name", EXTERNAL)
def test_external_policy_runs_every_builtin(
    name: str, builtin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = []
    make = policies.make

    def spy(n: str, *, seed: int = 0):
        pol = make(n, seed=seed)
        if pol is None:  # v16: no policy object
            return pol
        attach = pol.attach

        def record(host) -> None:
            hosts.append(host)
            attach(host)

        pol.attach = record
        return pol

    monkeypatch.setattr(policies, "make", spy)
    r = epcsim.run(
        f"builtin:{builtin}", overrides=[f"host.policy={name}"], engine="reference", report=False
    )
    (host,) = hosts
    assert host.policy.name == name and r.summary["policy"] == name
    check_invariants(host)
    base = _v16(builtin)
    changed = {k for k in ("cgroups", "enclaves", "encls") if r.summary[k] != base[k]}
    assert changed, f"{name} behaves as v16 on {builtin}"
