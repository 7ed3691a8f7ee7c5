"""The episode log against an independent count, under every policy: the pages the
reclaim episodes say they evicted are the evictions the cgroups counted (summary.json),
per cgroup; and the time series' reclaimable pages are where the policy keeps them.
`epcsim compare` builds its fairness, overshoot and scan cost on these."""

from __future__ import annotations

import pytest
from _tenants import assert_tenant_counts

import epcsim
from epcsim.policies import REGISTRY

# four tenants in two limited cgroups of one parent (both per-cgroup and ksgxd reclaim)
TOML = """
name = "episode-counts"
[host]
epc = "1600KiB"
duration = "200ms"
sample_interval = "1ms"
cpus = 8
policy = "POLICY"
[[cgroup]]
path = "/a"
max = "max"
[[cgroup]]
path = "/a/x"
max = "700KiB"
[[cgroup]]
path = "/a/y"
max = "1200KiB"
[[enclave]]
name = "x"
cgroup = "/a/x"
size = "1024KiB"
count = 2
workload = { pattern = "zipf", alpha = 0.9, accesses = 2000 }
[[enclave]]
name = "y"
cgroup = "/a/y"
size = "1200KiB"
workload = { pattern = "zipf", alpha = 0.9, accesses = 9000 }
[[enclave]]
name = "u"
cgroup = "/a/y"
size = "1024KiB"
workload = { pattern = "uniform", accesses = 5000 }
"""


@pytest.mark.parametrize("policy", sorted(REGISTRY))
def test_episodes_account_for_every_eviction(policy: str) -> None:
    res = epcsim.run(TOML.replace("POLICY", policy), engine="reference", episode_log=True)
    cgroups = res.summary["cgroups"]
    evicted = {p: c["evictions"] for p, c in cgroups.items() if c["evictions"]}
    assert sum(evicted.values()) > 0, policy
    logged: dict[str, int] = {}
    for ep in res.episodes or []:
        for p, n in ep["reclaimed"].items():
            logged[p] = logged.get(p, 0) + n
    assert logged == evicted, policy
    assert_tenant_counts(res.summary)
    # reclaimable pages are sampled where the policy keeps them: some tenant has some
    ts = res.timeseries
    rows = [
        (c, n)
        for c, n in zip(
            ts.column("cgroup").to_pylist(), ts.column("reclaimable_pages").to_pylist(), strict=True
        )
        if c in ("/a/x", "/a/y")
    ]
    assert max(n for _, n in rows) > 0, policy
