"""Every pair of policies differs on at least one built-in (issue 14, "Done when"): the
designs are not accidentally the same code.  Two built-ins separate all 28 pairs:
``nested-fairness`` (ksgxd and sync reclaim under a parent limit) and
``noisy-neighbour`` (async reclaim of one tenant at its limit)."""

from __future__ import annotations

import itertools

import pytest

import epcsim
from epcsim.policies import names

BUILTINS = ("nested-fairness", "noisy-neighbour")


def _outcome(builtin: str, policy: str) -> dict:
    s = epcsim.run(f"builtin:{builtin}", overrides=[f"host.policy={policy}"], engine="reference")
    s = s.summary
    return {"cgroups": s["cgroups"], "enclaves": s["enclaves"], "encls": s["encls"]}


@pytest.mark.slow
def test_every_pair_of_policies_differs_on_a_builtin() -> None:
    got = {(b, p): _outcome(b, p) for b in BUILTINS for p in names()}
    same = [
        (p, q)
        for p, q in itertools.combinations(names(), 2)
        if all(got[b, p] == got[b, q] for b in BUILTINS)
    ]
    assert same == []
    assert len(names()) == 8
