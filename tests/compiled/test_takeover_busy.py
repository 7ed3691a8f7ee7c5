"""The compiled engine takes the enclave threads over while ksgxd or a ``sgx_cg_wq``
worker is busy (issue 15): each reclaimer is packed into its R row at the yield point it
stopped at (``ReclaimerTrack``, :mod:`epcsim.kernel.resume`) and the core goes on from
there, byte-identical to the reference engine.

Each case lets the first take-over happen only when a reclaimer is at a given point
(the offer is refused until then, and made at every thread step), then compares the
whole run with the reference engine's.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from _tenants import assert_tenant_counts

import epcsim.compiled.engine as engine_mod
import epcsim.sim.actors as actors_mod
from epcsim.kernel.epc_cgroup import RECLAIM_ASYNC, RECLAIM_KSGXD
from epcsim.kernel.resume import TRACK_RECLAIM, TRACK_RESCHED, TRACK_RETURNED
from epcsim.sim.engine import simulate


def _toml(
    *,
    cgroup_max: str = "max",
    policy: str | None = None,
    epc_pages: int = 256,
    size_pages: int = 1024,
    pattern: str = 'pattern = "zipf", alpha = 0.9',
) -> str:
    host = ['duration = "100s"', 'sample_interval = "100us"', "seed = 3", "cpus = 1"]
    host.append(f'epc = "{epc_pages * 4}KiB"')
    if policy is not None:
        host.append(f'policy = "{policy}"')
    return "\n".join(
        [
            'name = "busy"',
            "[host]",
            *host,
            "[[cgroup]]",
            'path = "/t"',
            f'max = "{cgroup_max}"',
            "[[enclave]]",
            'name = "e"',
            'cgroup = "/t"',
            'build = "eaug"',
            f'size = "{size_pages * 4}KiB"',
            f"workload = {{ {pattern}, accesses = 6000 }}",
        ]
    )


#: the points a reclaimer may be at: (its kind, its track's ``at``, phase or busy)
POINTS = {
    "ksgxd_ph2": (RECLAIM_KSGXD, TRACK_RECLAIM, 2),
    "ksgxd_ph3": (RECLAIM_KSGXD, TRACK_RECLAIM, 3),
    "ksgxd_ph4": (RECLAIM_KSGXD, TRACK_RECLAIM, 4),
    "ksgxd_resched": (RECLAIM_KSGXD, TRACK_RESCHED, None),
    "ksgxd_returned_busy": (RECLAIM_KSGXD, TRACK_RETURNED, True),
    "ksgxd_returned_asleep": (RECLAIM_KSGXD, TRACK_RETURNED, False),
    "worker_ph2": (RECLAIM_ASYNC, TRACK_RECLAIM, 2),
    "worker_ph3": (RECLAIM_ASYNC, TRACK_RECLAIM, 3),
    "worker_ph4": (RECLAIM_ASYNC, TRACK_RECLAIM, 4),
    "worker_resched": (RECLAIM_ASYNC, TRACK_RESCHED, None),
    "worker_returned": (RECLAIM_ASYNC, TRACK_RETURNED, None),
}


def _at(track, point) -> bool:
    kind, at, extra = point
    if track.kind != kind or track.at != at:
        return False
    if at == TRACK_RECLAIM:
        return track.phase == extra
    if at == TRACK_RETURNED and kind == RECLAIM_KSGXD:
        return track.busy == extra
    return True


def _gate(monkeypatch, point) -> dict:
    """Refuse every take-over until a reclaimer on the heap is at *point*; offer the
    threads at every step.  Returns what happened (``hit``: the take-over at it)."""
    seen = {"hit": False, "stages": set()}
    real = engine_mod.take_over

    def take_over(sim, run, cpu, chunk):
        if not seen["hit"]:
            on_heap = {id(e[3]) for e in sim.core.heap}
            here = [
                t for g, t in sim.actors.reclaimers.items() if id(g) in on_heap and _at(t, point)
            ]
            if not here:
                return "waiting for the point under test"
            why = real(sim, run, cpu, chunk)
            seen["hit"] = why is None
            seen["stages"].add(why)
            return why
        return real(sim, run, cpu, chunk)

    monkeypatch.setattr(engine_mod, "take_over", take_over)
    monkeypatch.setattr(actors_mod, "TAKEOVER_BACKOFF_MAX", 1)
    return seen


def _assert_same(ref, bat) -> None:
    a = json.dumps(ref.summary, sort_keys=True)
    b = json.dumps(bat.summary, sort_keys=True)
    assert a == b
    assert ref.timeseries.equals(bat.timeseries)
    assert np.array_equal(ref.fault_latency_ns, bat.fault_latency_ns)
    assert ref.fault_latency is not None and ref.fault_latency.equals(bat.fault_latency)
    assert_tenant_counts(ref.summary)


_UNIFORM = 'pattern = "uniform"'
#: a worker busy (its cgroup's limit binds); uniform accesses: batches not all young
_WORKER = {"cgroup_max": "500KiB", "pattern": _UNIFORM}
#: ksgxd sleeps again while the thread runs (the footprint just above the EPC)
_ASLEEP = {"size_pages": 300, "pattern": _UNIFORM}

CASES = [
    *((p, _ASLEEP if p.endswith("asleep") else {}) for p in POINTS if p.startswith("ksgxd")),
    *((p, _WORKER) for p in POINTS if p.startswith("worker")),
    *((p, {"policy": "v14"}) for p in ("ksgxd_ph2", "ksgxd_ph4", "ksgxd_resched")),
    *((p, {**_WORKER, "policy": "v14"}) for p in ("worker_ph3", "worker_resched")),
    *((p, {"policy": "v13"}) for p in ("ksgxd_ph3", "ksgxd_returned_busy")),
    *((p, {**_WORKER, "policy": "v13"}) for p in ("worker_ph2", "worker_ph4")),
    *((p, {"policy": "limit-only"}) for p in ("ksgxd_ph3", "ksgxd_resched")),
]


@pytest.mark.parametrize(
    ("point", "kw"), CASES, ids=[f"{p}-{kw.get('policy', 'v16')}" for p, kw in CASES]
)
def test_takeover_with_a_busy_reclaimer_matches(monkeypatch, point: str, kw: dict) -> None:
    toml = _toml(**kw)
    ref = simulate(toml, engine="reference")
    seen = _gate(monkeypatch, POINTS[point])
    bat = simulate(toml, engine="auto")
    assert seen["hit"], f"no take-over with a reclaimer at {point}"
    assert bat.engine_events["compiled"] > 0
    _assert_same(ref, bat)


def test_overcommit_runs_compiled_from_the_first_thread_step() -> None:
    """builtin:overcommit has ksgxd busy at nearly every thread step: the threads are
    taken over at their first step all the same."""
    ref = simulate("builtin:overcommit", engine="reference")
    bat = simulate("builtin:overcommit", engine="auto")
    assert bat.engine == "compiled" and bat.engine_note == ""
    assert bat.engine_events["compiled"] > 20 * bat.engine_events["reference"]
    _assert_same(ref, bat)


def test_untracking_policy_hook_refuses_with_the_reason(monkeypatch) -> None:
    """A policy whose reclaim hook keeps no track (``Policy.tracks_reclaim`` False)
    cannot be taken over mid-reclaim: the refusal names the busy reclaimer."""
    from epcsim.policies.v14 import V14

    monkeypatch.setattr(V14, "tracks_reclaim", False)
    toml = _toml(policy="v14")
    ref = simulate(toml, engine="reference")
    seen = _gate(monkeypatch, POINTS["ksgxd_resched"])
    bat = simulate(toml, engine="auto")
    assert not seen["hit"]
    assert seen["stages"] == {
        "ksgxd or a reclaim worker was at a point the compiled engine cannot take over"
    }
    _assert_same(ref, bat)


def test_reclaimer_handed_back_and_taken_over_before_its_next_step() -> None:
    """A reclaimer the core handed back (a new generator with a ``resume=`` state, not
    run yet) is taken over again at the point it resumes from, not at its start
    (hypothesis found it: ksgxd at its cond_resched() across two take-overs)."""
    enclaves = []
    for k, amount in enumerate(["accesses = 23", 'duration = "1us"', "accesses = 1"]):
        enclaves += [
            "[[enclave]]",
            f'name = "e{k}"',
            'build = "eaug"',
            'size = "64KiB"',
            f'workload = {{ pattern = "uniform", {amount} }}',
        ]
    toml = "\n".join(
        [
            'name = "handed-back"',
            "[host]",
            'duration = "20ms"',
            'sample_interval = "10us"',
            "seed = 0",
            "cpus = 4",
            'epc = "256KiB"',
            "misc = false",
            "[[cgroup]]",
            'path = "/a"',
            *enclaves,
            "[[enclave]]",
            'name = "e3"',
            'build = "eaug"',
            'size = "64KiB"',
            'workload = { pattern = "uniform", duration = "65us" }',
            "[[at]]",
            'time = "93us"',
            'write = { path = "/a/memory.max", value = "4096" }',
        ]
    )
    ref = simulate(toml, engine="reference")
    bat = simulate(toml, engine="auto")
    assert bat.engine_events["compiled"] > 0
    _assert_same(ref, bat)


def test_ksgxd_asleep_at_hand_back_leaves_no_stale_v14_episode() -> None:
    """v14: taken over mid-episode (ksgxd busy after e's EADD build), ksgxd goes to
    sleep in the core; handed back before f starts, the host holds no episode (the
    one it had at take-over is over): f's build wakes ksgxd into a new episode whose
    walk starts at the root, as on the reference engine."""
    lines = ['name = "stale"', "[host]", 'duration = "100s"', 'sample_interval = "100us"']
    lines += ["seed = 5", "cpus = 2", 'epc = "1024KiB"', 'policy = "v14"']
    for p in ("/a", "/a/x", "/a/y", "/b"):
        lines += ["[[cgroup]]", f'path = "{p}"', 'max = "max"']
    for name, cg, size, acc, start in (
        ("e", "/a/x", 1200, 20000, None),
        ("g", "/a/y", 100, 100, None),
        ("f", "/b", 800, 3000, "10ms"),
    ):
        lines += ["[[enclave]]", f'name = "{name}"', f'cgroup = "{cg}"', 'build = "eadd"']
        lines += [f'size = "{size}KiB"', f'workload = {{ pattern = "uniform", accesses = {acc} }}']
        if start is not None:
            lines.append(f'start = "{start}"')
    toml = "\n".join(lines) + "\n"
    ref = simulate(toml, engine="reference")
    bat = simulate(toml, engine="auto")
    assert bat.engine == "mixed"
    _assert_same(ref, bat)
