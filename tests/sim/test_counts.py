"""Honest counts and verdicts: the per-process counters add up to the ENCLS leaf counts,
a failed selftest process says what failed, and a livelocked thread is "stuck" (not a
success) in both engines (epcsim.sim.stuck)."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from test_engines_exact import _assert_same, multi_scenarios, scenarios
from typer.testing import CliRunner

from epcsim.cli import app
from epcsim.report.html import render_html
from epcsim.result import Result
from epcsim.scenario import list_builtins
from epcsim.sim.engine import simulate
from epcsim.sim.stuck import STUCK_RETRIES

#: the issue's command: /p's limit no longer wakes ksgxd, the three leaves livelock
LIVELOCK = ("cgroup.0.max=capacity/2",)


@cache
def builtin(name: str, overrides: tuple[str, ...] = (), engine: str = "auto") -> Result:
    return simulate(f"builtin:{name}", overrides=overrides, engine=engine)


def assert_identities(s: dict) -> None:
    """Per-process counters against the ENCLS leaves: every EADD / EAUG, ELDU and EWB
    counted in the process whose enclave it was for."""
    encls = s["encls"]
    en = s["enclaves"].values()
    keys = ("pages_added", "pages_evicted", "secs_evicted", "eldu", "secs_eldu", "faults")
    keys += ("edmm_eldu",)
    total = {k: sum(e[k] for e in en) for k in keys}
    assert total["pages_added"] == encls["EADD"] + encls["EAUG"]
    assert total["eldu"] == encls["ELDU"]
    # EWB of enclave pages; the SECS's write-backs are counted apart
    assert total["pages_evicted"] + total["secs_evicted"] == encls["EWB"]
    # every ELDU of an enclave page and every EAUG is in a resolved fault, but those the
    # EDMM ioctls did (edmm_eldu); a fault may also reload the SECS first (secs_eldu)
    loads = encls["ELDU"] - total["secs_eldu"] - total["edmm_eldu"]
    assert total["faults"] >= loads + encls["EAUG"]
    # the cgroup table counts the same resolved faults
    if all(e["kind"] == "enclave" for e in en):
        assert sum(c["faults"] for c in s["cgroups"].values()) == total["faults"]


@pytest.mark.parametrize("name", [n for n, _ in list_builtins()])
def test_builtin_counters_add_up_to_the_encls_leaves(name: str) -> None:
    assert_identities(builtin(name).summary)


def test_kselftest_counts_every_process() -> None:
    """`epcsim run builtin:kselftest` reported 0 pages/faults/accesses for 29 of 30
    processes next to EADD 623,013 and ELDU 63."""
    s = builtin("kselftest").summary
    assert s["encls"]["EADD"] == 623_013 and s["encls"]["ELDU"] == 63
    en = s["enclaves"]
    assert all(e["pages_added"] > 0 for e in en.values())
    passed = [n for n, e in en.items() if e["outcome"] == "success"]
    assert len(passed) == 21
    # each passing process: 2 EENTERs of 3 accesses; the heap was evicted during the
    # build, so the first EENTER faults the 3 pages back (ELDU)
    for n in passed:
        e = en[n]
        assert (e["accesses"], e["faults"], e["eldu"]) == (6, 3, 3), n
    assert sum(e["faults"] for e in en.values()) == 63
    assert sum(c["faults"] for c in s["cgroups"].values()) == 63
    # their accesses are EENTERs, not timed accesses: no slowdown (it read 611,236.7x
    # once the accesses were counted)
    assert all(e["slowdown"] is None for e in en.values())


def test_kselftest_failures_say_what_failed() -> None:
    en = builtin("kselftest").summary["enclaves"]
    enomem = "SGX_IOC_ENCLAVE_ADD_PAGES: ENOMEM (Cannot allocate memory)"
    assert {n: e["error"] for n, e in en.items() if e["outcome"] == "failure"} == {
        "A": enomem,
        "B#3": enomem,
        "C#3": enomem,
        "C#4": enomem,
        **{
            f"F#{k}": "killed by SIGKILL (memcg OOM) during SGX_IOC_ENCLAVE_ADD_PAGES"
            for k in range(4)
        },
    }
    assert en["E#3"]["error"] == "killed by SIGTERM during SGX_IOC_ENCLAVE_ADD_PAGES"
    assert all(e["error"] == "" for e in en.values() if e["outcome"] == "success")


def test_kselftest_report_text_matches_its_tables() -> None:
    """The report said "No faults: every access hit a resident page" next to cgroup
    faults of 18 and 45."""
    r = builtin("kselftest")
    text = render_html(r, [])
    assert "No faults" not in text
    assert "63 faults resolved, none of them timed" in text


def test_kselftest_latency_figure_note_matches_its_tables(tmp_path) -> None:
    """The latency figure's note said "no enclave fault was resolved" on kselftest runs
    whose enclave table has 63 faults (none of them timed)."""
    from epcsim.report.figures import write_figures

    r = builtin("kselftest")
    notes = {f.filename: f.note for f in write_figures(r, tmp_path)}
    assert notes["fault_latency.png"] == (
        "no timed fault (63 faults resolved, none by an enclave thread)"
    )
    assert not (tmp_path / "fault_latency.png").exists()


settings_ = settings(
    # EPCSIM_EXAMPLES_CAP: fewer draws (the plain-Python run, tests/compiled/)
    max_examples=min(25, int(os.environ.get("EPCSIM_EXAMPLES_CAP", 25))),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@settings_
@given(scenarios())
def test_random_scenario_counters_add_up(toml: str) -> None:
    assert_identities(simulate(toml).summary)


@settings_
@given(multi_scenarios())
def test_random_multi_scenario_counters_add_up(toml: str) -> None:
    assert_identities(simulate(toml).summary)


#: found by hypothesis in CI: e0's EDMM ioctls loaded one evicted page back (ELDU outside a
#: fault), so Σ faults (188) < ELDU (1) + EAUG (188) before edmm_eldu was counted
EDMM_LOADS = """
name = "exact-multi"
[host]
duration = "20ms"
sample_interval = "10us"
seed = 0
cpus = 3
epc = "840KiB"
misc = false
[[cgroup]]
path = "/a"
max = "max"
[[cgroup]]
path = "/a/x"
max = "max"
[[cgroup]]
path = "/a/y"
max = "max"
[[cgroup]]
path = "/b"
max = "max"
[[enclave]]
name = "e0"
cgroup = "/"
build = "eaug"
size = "1676KiB"
threads = 3
count = 1
workload = { pattern = "uniform", accesses = 241 }
edmm = { restrict_pages = 1, remove_pages = 1, at_access = 80 }
[[enclave]]
name = "e1"
cgroup = "/"
build = "eaug"
size = "64KiB"
threads = 1
count = 1
workload = { pattern = "uniform", accesses = 1 }
[[enclave]]
name = "e2"
cgroup = "/"
build = "eaug"
size = "64KiB"
threads = 1
count = 1
workload = { pattern = "uniform", accesses = 1 }
"""


@pytest.mark.parametrize("engine", ["reference", "auto"])
def test_edmm_ioctl_loads_are_counted_apart_from_faults(engine: str) -> None:
    s = simulate(EDMM_LOADS, engine=engine).summary
    e0 = s["enclaves"]["e0"]
    assert (s["encls"]["ELDU"], s["encls"]["EAUG"]) == (1, 188)
    assert (e0["eldu"], e0["secs_eldu"], e0["edmm_eldu"], e0["faults"]) == (1, 0, 1, 186)
    assert_identities(s)


#: found by hypothesis: e0#1's process gets a SIGBUS pending (its other thread's fault)
#: inside SGX_IOC_ENCLAVE_MODIFY_TYPES and dies on return to user space; the model then
#: made the second ioctl of the removal (SGX_IOC_ENCLAVE_REMOVE_PAGES) for the dead task
#: (EpcsimUsageError: task 101 has exited)
EDMM_EXIT = """
name = "exact-multi"
[host]
duration = "20ms"
sample_interval = "10us"
seed = 0
cpus = 4
epc = "1288KiB"
[host.costs]
access = "135ns"
fault = "100ns"
ewb = "10ns"
eldu = "10ns"
reclaim_batch = "3463ns"
kernel_step = "0ns"
[[cgroup]]
path = "/a"
max = "max"
[[cgroup]]
path = "/a/x"
max = "880KiB"
[[cgroup]]
path = "/a/y"
max = "160KiB"
[[cgroup]]
path = "/b"
max = "1168KiB"
[[enclave]]
name = "e0"
cgroup = "/a/y"
build = "eaug"
size = "2000KiB"
threads = 2
count = 2
workload = { pattern = "loop", length = 375, accesses = 402 }
start = "300us"
edmm = { restrict_pages = 1, remove_pages = 3, at_access = 171 }
[[enclave]]
name = "e1"
cgroup = "/a/y"
build = "eaug"
size = "288KiB"
threads = 2
count = 2
workload = { pattern = "uniform", accesses = 2505 }
start = "300us"
[[at]]
time = "412us"
write = { path = "/a/x/memory.max", value = "536576" }
"""


@pytest.mark.parametrize("engine", ["reference", "auto"])
def test_a_process_dead_between_its_edmm_ioctls_makes_no_second(engine: str) -> None:
    s = simulate(EDMM_EXIT, engine=engine).summary
    ops = [(o["op"], o["result"]) for o in s["ops"] if o["op"].startswith("edmm")]
    assert ops == [
        ("edmm restrict e0#0", "ok"),
        ("edmm restrict e0#1", "ok"),
        ("edmm remove e0#0", "EFAULT: Bad address"),
        ("edmm remove e0#1", "killed by SIGBUS before SGX_IOC_ENCLAVE_REMOVE_PAGES"),
    ]
    # and each process a signal ended says which
    assert {n: (e["exit_status"], e["error"]) for n, e in s["enclaves"].items()} == {
        n: (135, "killed by SIGBUS") for n in ("e0#0", "e0#1", "e1#0", "e1#1")
    }
    assert_identities(s)


# --- stuck ---------------------------------------------------------------------------


def test_nested_fairness_livelock_is_stuck_not_success(tmp_path: Path) -> None:
    """`epcsim run builtin:nested-fairness --set cgroup.0.max=capacity/2` ended at
    64.8 ms with every enclave `success` and exit 0 after ~16,000 retries each."""
    out = tmp_path / "run"
    r = CliRunner().invoke(
        app, ["run", "builtin:nested-fairness", "--set", LIVELOCK[0], "--out", str(out)]
    )
    assert r.exit_code == 1, r.output
    assert "FAIL: every leaf's enclave completes: all success: a=stuck, x=stuck, y=stuck" in (
        r.output
    )
    s = json.loads((out / "summary.json").read_text())
    assert not s["truncated"] and not s["passed"]
    # each leaf's thread ended at its STUCK_RETRIES-th retry with nothing freed in its
    # cgroup, long before its 50 ms and the 2 s limit
    assert s["sim_time_ns"] < 50_000_000
    for n in ("a", "x", "y"):
        e = s["enclaves"][n]
        assert (e["outcome"], e["exit_status"], e["stuck_threads"]) == ("stuck", None, 1)
        assert e["ended_ns"] == -1  # the process never exits: it keeps its pages
        assert e["fault_retries"] >= STUCK_RETRIES
    assert s["cgroups"]["/p"]["usage_bytes"] == s["cgroups"]["/p"]["limit_bytes"]


@pytest.mark.parametrize("engine", ["reference", "auto"])
def test_livelocked_counted_workload_ends_stuck_at_the_retry_limit(engine: str) -> None:
    """A workload of N accesses (no duration) would retry until the 2 s limit: it ends
    at its STUCK_RETRIES-th quiet retry."""
    wl = '{pattern = "uniform", accesses = 1000000}'
    sets = (*LIVELOCK, *(f"enclave.{k}.workload={wl}" for k in range(3)))
    s = builtin("nested-fairness", sets, engine).summary
    assert not s["truncated"] and s["sim_time_ns"] < 100_000_000
    assert {n: e["outcome"] for n, e in s["enclaves"].items()} == dict.fromkeys("axy", "stuck")
    for e in s["enclaves"].values():
        assert e["stuck_threads"] == 1 and e["accesses"] < 1000000


def test_livelock_engines_agree() -> None:
    _assert_same(
        builtin("nested-fairness", LIVELOCK, "reference"), builtin("nested-fairness", LIVELOCK)
    )


@pytest.mark.parametrize("engine", ["reference", "auto"])
def test_fault_unresolved_when_the_duration_ends_is_finished_first(engine: str) -> None:
    """A thread whose 5 ms end in the middle of a fault goes on retrying that access: in
    the livelock it ends stuck at its STUCK_RETRIES-th quiet retry, after its 5 ms."""
    sets = (*LIVELOCK, *(f"enclave.{k}.workload.duration=5ms" for k in range(3)))
    s = builtin("nested-fairness", sets, engine).summary
    assert not s["truncated"]
    for e in s["enclaves"].values():
        assert (e["outcome"], e["stuck_threads"]) == ("stuck", 1)
        assert e["fault_retries"] >= STUCK_RETRIES
    assert s["sim_time_ns"] > STUCK_RETRIES * 3000  # each retry costs >= costs.fault


def test_fault_unresolved_at_the_time_limit_is_stuck() -> None:
    s = builtin("nested-fairness", (*LIVELOCK, "host.duration=25ms")).summary
    assert s["truncated"] and s["sim_time_ns"] == 25_000_000
    for e in s["enclaves"].values():
        assert (e["outcome"], e["stuck_threads"]) == ("stuck", 1)
        assert 0 < e["fault_retries"] < STUCK_RETRIES


def test_healthy_nested_fairness_is_not_stuck() -> None:
    s = builtin("nested-fairness").summary
    assert s["passed"]
    assert all(e["stuck_threads"] == 0 for e in s["enclaves"].values())


def test_the_retry_limit_is_one_parameter_of_both_engines(monkeypatch) -> None:
    """Both engines read STUCK_RETRIES at run time (the compiled core gets it in S)."""
    import epcsim.compiled.engine
    import epcsim.sim.actors

    monkeypatch.setattr(epcsim.sim.actors, "STUCK_RETRIES", 50)
    monkeypatch.setattr(epcsim.compiled.engine, "STUCK_RETRIES", 50)
    src = "builtin:nested-fairness"
    ref = simulate(src, overrides=LIVELOCK, engine="reference")
    bat = simulate(src, overrides=LIVELOCK)
    assert bat.engine == "compiled"
    _assert_same(ref, bat)
    for e in ref.summary["enclaves"].values():
        assert (e["outcome"], e["fault_retries"]) == ("stuck", 50)


#: test_sgx in /p/a while /p/b's enclave holds half of /p: after its build /p is full,
#: its first EENTER faults on its evicted TCS and /p/a's async work has nothing to do
#: (/p/a's own usage is far below /p's limit): a livelock
KSELFTEST_LIVELOCK = """
name = "ks-livelock"
[host]
epc = "32MiB"
cpus = 2
duration = "1s"
[[cgroup]]
path = "/p"
max = "1MiB"
[[cgroup]]
path = "/p/a"
[[cgroup]]
path = "/p/b"
[[enclave]]
name = "B"
cgroup = "/p/b"
size = "512KiB"
build = "eadd"
workload = { pattern = "uniform", duration = "500ms" }
[[enclave]]
name = "A"
cgroup = "/p/a"
size = "532KiB"
program = "kselftest"
start = "5ms"
[[expect]]
enclaves = ["A"]
outcome = "success"
"""


def test_kselftest_process_livelocked_is_stuck() -> None:
    r = simulate(KSELFTEST_LIVELOCK)
    s = r.summary
    assert not s["passed"] and not s["truncated"]
    a = s["enclaves"]["A"]
    assert (a["outcome"], a["exit_status"], a["ended_ns"], a["stuck_threads"]) == (
        "stuck",
        None,
        -1,
        1,
    )
    assert a["fault_retries"] == STUCK_RETRIES
    assert a["error"] == (
        "EENTER 1: access to enclave page 0: stuck after 10,000 retries with no page freed "
        "under the limit of /p"
    )
    assert s["enclaves"]["B"]["outcome"] == "success"
    assert_identities(s)
