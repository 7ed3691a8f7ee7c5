"""What a run reports to its ``progress`` callback (``epcsim.sim.progress``): the work
done (enclave threads' accesses, selftest processes) against the work to do, monotone,
ending at the total, the same on both engines."""

from __future__ import annotations

import pytest

import epcsim
from epcsim.sim.progress import SimProgress

MS = 1_000_000

HOST = """
[host]
epc = "{epc}"
cpus = 2
duration = "{duration}"
sample_interval = "1ms"
"""

#: two enclaves over their limit (faults, reclaim), one with 3 threads: 1000 + 5000
ACCESSES = (
    HOST.format(epc="4MiB", duration="10s")
    + """
[[cgroup]]
path = "/a"
max = "256KiB"
[[enclave]]
name = "one"
cgroup = "/a"
size = "512KiB"
build = "eaug"
workload = { pattern = "sequential", accesses = 1000 }
[[enclave]]
name = "three"
cgroup = "/a"
size = "512KiB"
threads = 3
workload = { pattern = "uniform", accesses = 5000 }
"""
)

SELFTEST_ENCLAVES = """
[[enclave]]
name = "t"
count = 2
program = "kselftest"
size = "256KiB"
"""
SELFTEST = HOST.format(epc="1MiB", duration="60s") + SELFTEST_ENCLAVES

#: a workload bounded by virtual time: the work to do is not known in advance
DURATION = (
    HOST.format(epc="4MiB", duration="10s")
    + """
[[enclave]]
name = "d"
size = "64KiB"
workload = { pattern = "uniform", duration = "2ms" }
"""
)


#: one enclave, 2 threads, 300,000 accesses over its limit: the compiled engine runs it
#: and reports between its chunks of 65,536 accesses
BATCHED = (
    HOST.format(epc="4MiB", duration="100s")
    + """
[[cgroup]]
path = "/a"
max = "256KiB"
[[enclave]]
name = "two"
cgroup = "/a"
size = "512KiB"
threads = 2
workload = { pattern = "uniform", accesses = 300000 }
"""
)


def values(toml: str, engine: str, expect_engine: str | None = None) -> list[SimProgress]:
    seen: list[SimProgress] = []
    r = epcsim.run(toml, progress=seen.append, engine=engine)
    if expect_engine is not None:
        assert r.engine == {"batched": "compiled"}.get(expect_engine, expect_engine), r.engine_note
    assert seen and all(isinstance(p, SimProgress) for p in seen)
    return seen


def assert_monotone(seen: list[SimProgress]) -> None:
    dones = [p.done for p in seen]
    assert dones == sorted(dones)
    times = [p.now_ns for p in seen]
    assert times == sorted(times)


@pytest.mark.parametrize("engine", ["reference", "batched"])
def test_progress_of_both_engines_ends_at_the_total(engine: str) -> None:
    seen = values(BATCHED, engine, expect_engine=engine)
    assert_monotone(seen)
    assert {p.total for p in seen} == {300_000}
    assert seen[-1].done == 300_000
    assert len([p for p in seen if 0 < p.done < 300_000]) >= 4, seen


def test_progress_counts_accesses_and_ends_at_the_total() -> None:
    seen = values(ACCESSES, "reference")
    assert_monotone(seen)
    assert {p.total for p in seen} == {6000}
    assert {p.unit for p in seen} == {"accesses"}
    assert {p.limit_ns for p in seen} == {10_000 * MS}
    assert seen[-1].done == 6000
    assert any(0 < p.done < 6000 for p in seen), seen  # reported along the way too


def test_progress_counts_selftest_processes() -> None:
    seen = values(SELFTEST, "auto")
    assert_monotone(seen)
    assert {p.total for p in seen} == {2}
    assert {p.unit for p in seen} == {"selftest processes"}
    assert seen[-1].done == 2


@pytest.mark.parametrize("engine", ["reference", "batched"])
def test_progress_of_a_duration_bound_workload_has_no_total(engine: str) -> None:
    seen = values(DURATION, engine, expect_engine=engine)
    assert_monotone(seen)
    assert {p.total for p in seen} == {None}
    assert seen[-1].done > 0  # the accesses done are still counted


def test_progress_mixes_accesses_and_selftest_processes() -> None:
    toml = ACCESSES + SELFTEST_ENCLAVES
    seen = values(toml, "reference")
    assert {p.unit for p in seen} == {"accesses + selftest processes"}
    assert {p.total for p in seen} == {6002}
    assert seen[-1].done == 6002
