"""Scenario enclaves whose workload is a trace: ``workload = { trace = PATH, ... }``.

Paths resolve against the scenario file's folder; without ``accesses`` or ``duration``
each thread runs its trace once; the enclave's size defaults to the trace's footprint
(distinct pages); an enclave of several threads takes one trace, or one per thread;
every mistake is a ScenarioError naming ``enclave[i].workload`` and the field.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from epcsim.errors import ScenarioError
from epcsim.scenario import load_scenario
from epcsim.sim import simulate

#: sparse page numbers: 4 distinct pages, 7 accesses
TRACE = np.array([1000, 5, 1000, 7, 5, 99_999, 7], dtype=np.int64)
FOOTPRINT = 4


def scenario(workload: str, *, threads: int = 1, extra: str = "", build: str = "eadd") -> str:
    return f"""\
name = "trace-workload"
[host]
epc = "1MiB"
duration = "1s"

[[enclave]]
name = "e"
threads = {threads}
build = "{build}"
{extra}
workload = {workload}
"""


def write(d: Path, text: str, name: str = "s.toml") -> Path:
    p = d / name
    p.write_text(text)
    return p


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scenario folder holding t.npy; the cwd is elsewhere, so a relative trace path
    can only resolve against the scenario file."""
    d = tmp_path / "scenarios"
    d.mkdir()
    np.save(d / "t.npy", TRACE)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return d


def enclave(sc) -> dict:
    return simulate(sc).summary["enclaves"]["e"]


def test_relative_trace_runs_once_with_the_footprint_as_size(folder: Path) -> None:
    sc = load_scenario(write(folder, scenario('{ trace = "t.npy" }')))
    assert sc.enclave[0].workload == {"trace": str(folder / "t.npy")}
    assert sc.enclave[0].size is None
    e = enclave(sc)
    assert e["outcome"] == "success"
    assert e["accesses"] == len(TRACE)  # one pass
    assert e["pages_added"] == FOOTPRINT  # EADD of the footprint, not of the sparse span


def test_eaug_trace_faults_each_page_in_once(folder: Path) -> None:
    sc = load_scenario(write(folder, scenario('{ trace = "t.npy" }', build="eaug")))
    e = enclave(sc)
    assert e["accesses"] == len(TRACE)
    assert e["faults"] == FOOTPRINT


def test_subfolder_and_absolute_paths(folder: Path, tmp_path: Path) -> None:
    (folder / "sub").mkdir()
    np.save(folder / "sub" / "u.npy", TRACE[:3])
    sc = load_scenario(write(folder, scenario('{ trace = "sub/u.npy", format = "npy" }')))
    assert enclave(sc)["accesses"] == 3
    absolute = tmp_path / "abs.npy"
    np.save(absolute, TRACE[:5])
    sc = load_scenario(write(folder, scenario(f'{{ trace = "{absolute}" }}')))
    assert sc.enclave[0].workload["trace"] == str(absolute)
    assert enclave(sc)["accesses"] == 5


def test_accesses_replay_the_trace_and_size_is_a_minimum(folder: Path) -> None:
    sc = load_scenario(write(folder, scenario('{ trace = "t.npy", accesses = 20 }')))
    assert enclave(sc)["accesses"] == 20  # wraps around: almost three passes
    # a size below the footprint is raised to it; above it, the whole size is added
    small = write(folder, scenario('{ trace = "t.npy" }', extra='size = "4KiB"'))
    assert enclave(load_scenario(small))["pages_added"] == FOOTPRINT
    big = write(folder, scenario('{ trace = "t.npy" }', extra='size = "64KiB"'))
    assert enclave(load_scenario(big))["pages_added"] == 16


def test_duration_instead_of_accesses(folder: Path) -> None:
    sc = load_scenario(write(folder, scenario('{ trace = "t.npy", duration = "50us" }')))
    e = enclave(sc)
    assert e["outcome"] == "success"
    assert e["accesses"] > len(TRACE)  # replayed until the duration


def test_one_trace_shared_by_every_thread(folder: Path) -> None:
    sc = load_scenario(write(folder, scenario('{ trace = "t.npy" }', threads=3)))
    assert enclave(sc)["accesses"] == 3 * len(TRACE)  # each thread reads it once


def test_one_trace_per_thread(folder: Path) -> None:
    np.save(folder / "a.npy", np.array([1, 2, 3], np.int64))
    np.save(folder / "b.npy", np.arange(100, 110, dtype=np.int64))
    sc = load_scenario(write(folder, scenario('{ trace = ["a.npy", "b.npy"] }', threads=2)))
    assert sc.enclave[0].workload["trace"] == [str(folder / "a.npy"), str(folder / "b.npy")]
    e = enclave(sc)
    assert e["accesses"] == 3 + 10
    # each trace is numbered densely on its own: the enclave holds the larger footprint
    assert e["pages_added"] == 10


def test_trace_options_reach_the_reader(folder: Path) -> None:
    (folder / "a.txt").write_text("0x1008\n0x1010\n0x2000\n0x1000\n")
    sc = load_scenario(write(folder, scenario('{ trace = "a.txt", unit = "address" }')))
    e = enclave(sc)
    assert e["accesses"] == 4
    assert e["pages_added"] == 2  # pages 1 and 2


def test_dict_and_overrides(folder: Path) -> None:
    """A dict scenario has no folder: its trace paths are used as given."""
    data = {
        "name": "d",
        "host": {"epc": "1MiB", "duration": "1s"},
        "enclave": [{"name": "e", "workload": {"trace": str(folder / "t.npy")}}],
    }
    assert enclave(load_scenario(data))["accesses"] == len(TRACE)
    path = write(folder, scenario('{ trace = "t.npy" }'))
    sc = load_scenario(path, overrides=["enclave.0.workload.accesses=9"])
    assert enclave(sc)["accesses"] == 9


@pytest.mark.parametrize(
    ("workload", "threads", "field", "message"),
    [
        pytest.param('{ trace = "missing.npy" }', 1, "trace", "missing.npy: no such file",
                     id="missing-file"),
        pytest.param('{ trace = ["t.npy", "missing.npy"] }', 2, "trace", "no such file",
                     id="missing-file-in-list"),
        pytest.param('{ trace = ["t.npy", "t.npy", "t.npy"] }', 2, "trace",
                     "one trace, or one per thread (2); got 3", id="list-length"),
        pytest.param('{ trace = ["t.npy", "t.npy"] }', 1, "trace",
                     "one trace, or one per thread (1); got 2", id="list-for-one-thread"),
        pytest.param('{ trace = "t.npy", bogus = 1 }', 1, "trace",
                     "format 'npy': unknown option 'bogus'", id="bad-option"),
        pytest.param('{ trace = "t.npy", format = "xml" }', 1, "trace",
                     "unknown trace format 'xml'", id="unknown-format"),
        pytest.param('{ trace = "t.npy", accesses = 10, duration = "1s" }', 1, "accesses",
                     "give at most one of accesses or duration", id="accesses-and-duration"),
        pytest.param('{ trace = "t.npy", accesses = -1 }', 1, "accesses",
                     "must be a count >= 0", id="negative-accesses"),
        pytest.param('{ trace = "t.npy", accesses = "10" }', 1, "accesses",
                     "must be a count >= 0", id="accesses-not-a-count"),
        pytest.param('{ trace = "t.npy", duration = "soon" }', 1, "duration", "soon",
                     id="bad-duration"),
        pytest.param("{ trace = 5 }", 1, "trace", "a path or a list of paths, got 5",
                     id="not-a-path"),
        pytest.param("{ trace = [1, 2] }", 2, "trace", "a path or a list of paths",
                     id="list-of-non-paths"),
    ],
)  # fmt: skip
def test_trace_workload_errors(
    folder: Path, workload: str, threads: int, field: str, message: str
) -> None:
    path = write(folder, scenario(workload, threads=threads))
    with pytest.raises(ScenarioError) as ei:
        load_scenario(path)
    err = ei.value
    assert err.file == str(path)
    assert err.table == "enclave[0].workload"
    assert err.field == field
    assert message in err.message, err.message
    assert str(err).startswith(f"{path}: enclave[0].workload.{field}: ")


def test_error_names_the_enclave_index(folder: Path) -> None:
    text = scenario('{ trace = "t.npy" }') + (
        '\n[[enclave]]\nname = "f"\nworkload = { trace = "t.npy", accesses = 1, duration = "1s" }\n'
    )
    with pytest.raises(ScenarioError) as ei:
        load_scenario(write(folder, text))
    assert (ei.value.table, ei.value.field) == ("enclave[1].workload", "accesses")


def test_a_pattern_workload_still_needs_a_size(folder: Path) -> None:
    path = write(folder, scenario('{ pattern = "uniform", accesses = 10 }'))
    with pytest.raises(ScenarioError) as ei:
        load_scenario(path)
    assert (ei.value.table, ei.value.field) == ("enclave[0]", "size")
