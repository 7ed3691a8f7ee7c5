"""The per-tenant metrics' independent check (issue 14), shared by the test modules
that run scenarios: :func:`assert_tenant_counts` on a ``summary.json`` dict."""

from __future__ import annotations

RECLAIMERS = ("ksgxd", "async", "sync", "direct")


def assert_tenant_counts(summary: dict) -> None:
    """Per-cgroup pages reclaimed = EWB - SECS write-backs = evictions (summed); each
    split sums to its total; the per-enclave splits sum to the per-cgroup ones; the
    per-cgroup timed faults sum the per-enclave ones."""
    cgs, encs = summary["cgroups"], summary["enclaves"]
    total = sum(c["pages_reclaimed"]["total"] for c in cgs.values())
    secs = sum(e["secs_evicted"] for e in encs.values())
    assert total == summary["encls"]["EWB"] - secs == sum(c["evictions"] for c in cgs.values())
    for x in (*cgs.values(), *encs.values()):
        pr = x["pages_reclaimed"]
        assert sum(pr[k] for k in RECLAIMERS) == pr["total"]
    for e in encs.values():
        assert e["pages_reclaimed"]["total"] == e["pages_evicted"]
    for k in RECLAIMERS:
        assert sum(c["pages_reclaimed"][k] for c in cgs.values()) == sum(
            e["pages_reclaimed"][k] for e in encs.values()
        )
    timed = [e["fault_latency_ns"]["count"] for e in encs.values() if e["fault_latency_ns"]]
    timed_cg = [c["fault_latency_ns"]["count"] for c in cgs.values() if c["fault_latency_ns"]]
    assert sum(timed) == sum(timed_cg) == summary["fault_latency"].get("count", 0)
    by_cg: dict[str, int] = {}
    for e in encs.values():
        if e.get("kind") != "vepc":  # a vEPC owner's faults are not enclave faults
            by_cg[e["cgroup"]] = by_cg.get(e["cgroup"], 0) + e["faults"]
    # an enclave's faults count in the cgroups its task was in when it faulted; its
    # summary names the last one (a migrated task's faults are split)
    migrated = any(
        o.get("op", "").startswith("migrate") and o.get("result") == "ok"
        for o in summary.get("ops", [])
    )
    if summary["misc_enabled"] and not migrated:
        for path, c in cgs.items():
            assert c["faults"] == by_cg.get(path, 0), path
    for c in cgs.values():
        assert c["pages_rotated"] <= c["pages_scanned"]
