"""Operations started inside a compiled run: ``[[at]] when`` (pages added) and what a
group's end starts (``start = "after:GROUP"``, ``[[at]] after``).

The reference checks the watchers after every step (``Simulation.run()``:
``Actors.check_watchers()``) and starts what a group's end starts in that group's last
thread's end step.  The compiled engine ends its run of steps at the fault that adds the
pages watched (``EN_WATCH``, ``RC_WATCH``), lets the reference start the operation and
goes on; a thread's end step runs on the reference between two core runs, and what it
starts is a foreign event.  Both give the reference's outputs byte for byte.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "sim"))
from test_engines_exact import _assert_same, _both, _toml_multi  # noqa: E402

from epcsim.compiled.eligibility import static_ineligibility  # noqa: E402
from epcsim.scenario import load_scenario  # noqa: E402

#: a runs 30,000 Zipf accesses over 200 pages in /a/x (EAUG: each first touch adds a
#: page); b starts when a's group ends
TWO = dict(epc_pages=256, cpus=2, duration="300ms")
A = {"name": "a", "accesses": 30000, "size_pages": 200, "cgroup": "/a/x"}


def _ops(res) -> list[tuple[int, str, str]]:
    return [(o["time_ns"], o["op"], o["result"]) for o in res.summary["ops"]]


def test_watched_write_fires_inside_the_core() -> None:
    """/a/x's limit is lowered to 75 pages once a has added 100: the core runs a from
    its first step, ends its run at the 100th EAUG (RC_WATCH), the reference starts the
    write, whose step is a foreign event; the run stays "compiled" (no thread step on
    the reference) and gives the reference's outputs."""
    toml = _toml_multi(
        [A], **TWO, watches=[("0us", "a", 100, "/a/x/misc.max", f"sgx_epc {75 * 4096}")]
    )
    ref, bat = _both(toml)
    assert bat.engine == "compiled"
    assert bat.engine_events["reference"] < 30
    ops = _ops(ref)
    assert [(op, r) for _, op, r in ops] == [("write /a/x/misc.max 'sgx_epc 307200'", "ok")]
    assert _ops(bat) == ops
    # the write ran before a's next fault: /a/x's peak is its 100 pages, the SECS and
    # the VA page; then the new limit held
    assert ref.summary["cgroups"]["/a/x"]["peak_bytes"] == 102 * 4096
    _assert_same(ref, bat)


def test_two_watchers_of_one_enclave_fire_in_turn() -> None:
    """Two watchers on a (20 and 150 pages added, the second 10 us later): two RC_WATCH
    returns, each write at the reference's time."""
    toml = _toml_multi(
        [A],
        **TWO,
        watches=[
            ("10us", "a", 150, "/a/x/misc.max", "sgx_epc max"),
            ("0us", "a", 20, "/a/x/misc.max", f"sgx_epc {120 * 4096}"),
        ],
    )
    ref, bat = _both(toml)
    assert bat.engine == "compiled"
    assert [op for _, op, _ in _ops(ref)] == [
        "write /a/x/misc.max 'sgx_epc 491520'",
        "write /a/x/misc.max 'sgx_epc max'",
    ]
    _assert_same(ref, bat)


def test_watcher_never_reached_is_dropped_at_its_process_exit() -> None:
    """a touches at most 200 pages: a watcher of 250 never fires, and is dropped when a
    exits (a thread's end step, between two core runs)."""
    toml = _toml_multi([A], **TWO, watches=[("0us", "a", 250, "/a/x/misc.max", "sgx_epc max")])
    ref, bat = _both(toml)
    assert bat.engine == "compiled"
    assert _ops(ref) == [] == _ops(bat)
    _assert_same(ref, bat)


def test_group_started_by_an_end_inside_the_core() -> None:
    """b starts when a's group ends: a's last thread's end step (on the reference,
    between two core runs) starts b's process, a foreign event; b's EAUG build and
    thread run compiled after it."""
    b = {"name": "b", "accesses": 8000, "size_pages": 120, "cgroup": "/a/y", "start": "after:a"}
    ref, bat = _both(_toml_multi([A, b], **TWO))
    assert bat.engine == "compiled"
    en = ref.summary["enclaves"]
    assert en["b"]["started_ns"] == en["a"]["ended_ns"] > 0
    _assert_same(ref, bat)


def test_operation_after_a_group_inside_the_core() -> None:
    """An [[at]] write 5 us after a's group ends (``after``): started by a's end step."""
    toml = _toml_multi([A], **TWO)
    toml += '[[at]]\nafter = "a"\ntime = "5us"\n'
    toml += 'write = { path = "/a/x/misc.max", value = "sgx_epc max" }\n'
    ref, bat = _both(toml)
    assert bat.engine == "compiled"
    ((t, op, r),) = _ops(ref)
    assert t == ref.summary["enclaves"]["a"]["ended_ns"] + 5000
    _assert_same(ref, bat)


@pytest.mark.parametrize(
    "extra",
    [
        '[[at]]\ntime = "0us"\nwhen = { enclave = "a", added = "4KiB" }\nkill = "a"\n',
        '[[enclave]]\nname = "b"\ncgroup = "/a/y"\nbuild = "eaug"\nsize = "64KiB"\n'
        'start = "after:a"\nworkload = { pattern = "uniform", accesses = 10 }\n',
    ],
)
def test_after_and_when_are_eligible(extra: str) -> None:
    sc = load_scenario(_toml_multi([A], **TWO) + extra)
    assert static_ineligibility(sc) is None
