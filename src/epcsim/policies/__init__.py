"""Reclaim designs as policies: the series' history and external baselines.

A policy is one module of this package plus one line of :data:`REGISTRY` (libCacheSim's
one-file-per-algorithm).  A scenario picks one with ``[host] policy = "NAME"`` (the CLI:
``--policy NAME``); the default is ``v16``, the series as posted (v16 with the v17
iterator fix), which sets no hook at all.  A policy changes the kernel model only through
the hook points declared in :data:`epcsim.policies.base.HOOKS`, so the model's functions
stay the series' functions; everything a policy does not hook is v16's.

Every policy runs on the reference engine; the compiled engine runs a policy only where
its allow-list (:mod:`epcsim.compiled.eligibility`) says so.
"""

from __future__ import annotations

import importlib

from ..errors import EpcsimError
from .base import HOOKS, Episode, Policy

__all__ = ["DEFAULT", "REGISTRY", "HOOKS", "Episode", "Policy", "names", "make", "policy_class"]

#: the policy of a scenario that names none: the series as posted
DEFAULT = "v16"

#: name -> module (in ``epcsim.policies``) defining the policy class ``POLICY``; the
#: order is the order ``--policy all`` runs them in
REGISTRY: dict[str, str] = {
    "v16": "v16",
    "v14": "v14",
    "v13": "v13",
    "limit-only": "limit_only",
    "oom-v2": "oom_v2",
    "global-lru": "global_lru",
    "memcg-iter": "memcg_iter",
    "mglru-memcg": "mglru_memcg",
}


def names() -> list[str]:
    """The registered policy names, in registry order."""
    return list(REGISTRY)


def policy_class(name: str) -> type[Policy]:
    """The class of policy *name*.  Raises EpcsimError for an unknown name."""
    if name not in REGISTRY:
        raise EpcsimError(f"unknown policy {name!r}; known: {', '.join(REGISTRY)}")
    mod = importlib.import_module(f"{__name__}.{REGISTRY[name]}")
    cls = mod.POLICY
    assert cls.name == name, (cls.name, name)
    return cls


def make(name: str, *, seed: int = 0) -> Policy | None:
    """A fresh instance of policy *name* for one host (None for ``v16``: the kernel model
    calls no hook at all).  *seed*: the run's seed, for policies that draw (seeded,
    deterministic)."""
    cls = policy_class(name)
    if name == DEFAULT:
        return None
    return cls(seed=seed)
