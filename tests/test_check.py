"""``--engine check`` / ``epcsim.run(engine="check")``: both engines run and their
results are compared; a mismatch names the file, the field and both values (exit 3), a
scenario the compiled engine cannot run is refused (exit 2)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from _scenarios import BUSY, tiny
from typer.testing import CliRunner

import epcsim
import epcsim.api
from epcsim.check import (
    compare_files,
    compare_latency,
    compare_results,
    compare_summary,
    compare_timeseries,
)
from epcsim.cli import app
from epcsim.errors import EngineMismatchError, EpcsimError
from epcsim.result import TIMESERIES_SCHEMA
from epcsim.sim import Result
from epcsim.sim.progress import SimProgress

TINY = tiny(expect_success=True)

REFUSAL_TAIL = (
    "; the check compares the compiled engine with the reference, so it needs a scenario "
    "the compiled engine runs"
)

runner = CliRunner()


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def write(tmp_path: Path, text: str = TINY) -> Path:
    p = tmp_path / "tiny.toml"
    p.write_text(text)
    return p


def perturb_compiled(monkeypatch: pytest.MonkeyPatch, change: Callable[[Result], None]) -> None:
    """Make the compiled engine's result differ: *change* is applied to it."""
    real = epcsim.api.simulate

    def simulate(sc, *, seed, progress, engine):  # noqa: ANN001, ANN202
        result = real(sc, seed=seed, progress=progress, engine=engine)
        if engine == "compiled":
            change(result)
        return result

    monkeypatch.setattr(epcsim.api, "simulate", simulate)


def set_cell(table: pa.Table, column: str, row: int, value: int) -> pa.Table:
    values = table.column(column).to_pylist()
    values[row] = value
    i = table.schema.get_field_index(column)
    return table.set_column(i, table.schema.field(i), pa.array(values, pa.int64()))


@pytest.fixture(scope="module")
def reference() -> Result:
    return epcsim.run(TINY, engine="reference")


# --- the command: exit 0, 1, 2, 3 -----------------------------------------------------------


def test_check_equal_exit_0_and_run_json_records_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = invoke("run", write(tmp_path), "--engine", "check", "--out", out)
    assert r.exit_code == 0, r.output
    assert r.stderr == ""
    assert "engine compiled (requested check: the reference engine gave identical results)" in (
        r.stdout
    )
    facts = json.loads((out / "run.json").read_text())
    assert facts["engine_requested"] == "check"
    assert facts["engine"] == "compiled"
    assert facts["check"] == {
        "equal": True,
        "compared": [
            "summary.json",
            "timeseries.parquet",
            "fault_latency.npy",
            "fault_latency.parquet",
        ],
        "bytes": True,
    }
    # the compiled engine's files, nothing of the reference's temporary directory
    assert sorted(p.name for p in out.iterdir()) == sorted(facts["files"])
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    ref = tmp_path / "ref"
    assert invoke("run", write(tmp_path), "--engine", "reference", "-o", ref, "-q").exit_code == 0
    for name in ("summary.json", "timeseries.parquet", "fault_latency.npy"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name


def test_check_equal_but_an_expectation_fails_exit_1(tmp_path: Path) -> None:
    text = TINY.replace('outcome = "success"', 'outcome = "failure"')
    out = tmp_path / "out"
    r = invoke("run", write(tmp_path, text), "--engine", "check", "--out", out, "--quiet")
    assert r.exit_code == 1, r.output
    assert "e succeeds" in r.stdout
    assert json.loads((out / "run.json").read_text())["check"]["equal"] is True


def test_check_refuses_a_scenario_the_compiled_engine_cannot_run_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = invoke("run", "builtin:mixed-priority", "--engine", "check", "-o", out)
    assert r.exit_code == 2, r.output
    assert r.stderr == (
        "epcsim: error: engine check: the compiled engine runs no extension "
        "(host.extensions: epcsim.kernel.rfc_knobs)"
        f"{REFUSAL_TAIL}\n"
    )
    assert not out.exists()


def test_check_refused_at_run_time_is_an_epcsim_error(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(EpcsimError) as e:
        epcsim.run(BUSY, engine="check", out=out)
    assert str(e.value) == (
        "engine check: an EADD build runs under a reclaim design other than v16 (host.policy)"
        f"{REFUSAL_TAIL}"
    )
    assert not out.exists()


def test_check_mismatch_in_summary_exit_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: Result
) -> None:
    faults = reference.summary["enclaves"]["e"]["faults"]

    def change(result: Result) -> None:
        result.summary["enclaves"]["e"]["faults"] += 1

    perturb_compiled(monkeypatch, change)
    out = tmp_path / "out"
    r = invoke("run", write(tmp_path), "--engine", "check", "--out", out)
    assert r.exit_code == 3, r.output
    assert r.stderr == (
        f'epcsim: engine mismatch: summary.json: enclaves["e"].faults: compiled {faults + 1}, '
        f"reference {faults}; {out} was not written\n"
    )
    assert "Traceback" not in r.output
    assert not out.exists()


def test_check_mismatch_in_a_timeseries_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: Result
) -> None:
    ts = reference.timeseries
    # the first cgroup row from row 5 on (the others are enclave rows)
    row = next(i for i in range(5, ts.num_rows) if ts.column("cgroup")[i].is_valid)
    value = ts.column("evictions")[row].as_py()
    time_ns = ts.column("time_ns")[row].as_py()
    cgroup = ts.column("cgroup")[row].as_py()

    def change(result: Result) -> None:
        result.timeseries = set_cell(result.timeseries, "evictions", row, value + 7)

    perturb_compiled(monkeypatch, change)
    with pytest.raises(EngineMismatchError) as e:
        epcsim.run(TINY, engine="check", out=tmp_path / "out")
    assert str(e.value) == (
        f'timeseries.parquet: row {row} (time_ns {time_ns}, cgroup "{cgroup}"): evictions: '
        f"compiled {value + 7}, reference {value}"
    )
    assert (e.value.file, e.value.compiled, e.value.reference) == (
        "timeseries.parquet",
        str(value + 7),
        str(value),
    )
    assert not (tmp_path / "out").exists()


def test_check_mismatch_in_the_latencies(
    monkeypatch: pytest.MonkeyPatch, reference: Result
) -> None:
    value = int(reference.fault_latency_ns[17])

    def change(result: Result) -> None:
        result.fault_latency_ns = result.fault_latency_ns.copy()
        result.fault_latency_ns[17] += 100

    perturb_compiled(monkeypatch, change)
    with pytest.raises(EngineMismatchError) as e:
        epcsim.run(TINY, engine="check")  # no out: compared in memory
    assert str(e.value) == (
        f"fault_latency.npy: index 17: compiled {value + 100}, reference {value}"
    )


def test_check_compares_the_bytes_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``out``, a difference the in-memory comparison misses is found in the files."""

    def change(result: Result) -> None:  # a dtype np.save writes differently
        result.fault_latency_ns = result.fault_latency_ns.astype(">i8")

    perturb_compiled(monkeypatch, change)
    monkeypatch.setattr(epcsim.api, "compare_results", lambda a, b: None)
    with pytest.raises(EngineMismatchError) as e:
        epcsim.run(TINY, engine="check", out=tmp_path / "out")
    assert e.value.file == "fault_latency.npy"
    assert e.value.field.startswith("byte ")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == [".out.lock"]


def test_check_progress_covers_both_runs() -> None:
    seen: list[SimProgress] = []
    epcsim.run(TINY, engine="check", progress=seen.append)
    assert {p.total for p in seen} == {4000}
    assert {p.unit for p in seen} == {"accesses, both engines"}
    dones = [p.done for p in seen]
    assert dones == sorted(dones)
    assert dones[-1] == 4000 and any(d == 2000 for d in dones)


def test_engine_help_lists_check() -> None:
    r = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    assert "check: run both and compare" in " ".join(r.stdout.split())


# --- the comparison functions -------------------------------------------------------------


def test_compare_summary_names_the_first_nested_field() -> None:
    a = {"cgroups": {"/a": {"faults": 3}}, "enclaves": {"a#0": {"faults": 12, "z": 1}}}
    b = {"cgroups": {"/a": {"faults": 3}}, "enclaves": {"a#0": {"faults": 13, "z": 2}}}
    err = compare_summary(a, b)
    assert err is not None
    assert str(err) == 'summary.json: enclaves["a#0"].faults: compiled 12, reference 13'
    assert (err.file, err.field, err.compiled, err.reference) == (
        "summary.json",
        'enclaves["a#0"].faults',
        "12",
        "13",
    )
    assert compare_summary(a, json.loads(json.dumps(a))) is None


@pytest.mark.parametrize(
    "a, b, text",
    [
        ({"x": 1}, {"x": 1.0}, "summary.json: x: compiled 1, reference 1.0"),
        ({"x": True}, {"x": 1}, "summary.json: x: compiled true, reference 1"),
        ({"x": 1}, {}, "summary.json: x: compiled 1, reference (absent)"),
        ({"e": {"s": "a"}}, {"e": {"s": "b"}}, 'summary.json: e.s: compiled "a", reference "b"'),
        ({"e": {"a b": 1}}, {"e": {"a b": 2}}, 'summary.json: e["a b"]: compiled 1, reference 2'),
        ({"ops": [1, 2]}, {"ops": [1]}, "summary.json: ops length: compiled 2, reference 1"),
        (
            {"ops": [{"n": 1}]},
            {"ops": [{"n": 2}]},
            "summary.json: ops[0].n: compiled 1, reference 2",
        ),
        (
            {"costs": {"EWB": 1, "x": 2}},
            {"costs": {"EWB": 5, "x": 2}},
            ("summary.json: costs.EWB: compiled 1, reference 5"),
        ),
    ],
)
def test_compare_summary_cases(a: dict, b: dict, text: str) -> None:
    err = compare_summary(a, b)
    assert err is not None and str(err) == text


def test_compare_summary_nan_equals_nan() -> None:
    assert compare_summary({"x": float("nan")}, {"x": float("nan")}) is None


def _table(evictions: list[int]) -> pa.Table:
    n = len(evictions)
    cols = {f.name: [0] * n for f in TIMESERIES_SCHEMA}
    cols["time_ns"] = [10_000_000 * (i // 2) for i in range(n)]
    cols["cgroup"] = ["/", "/a"] * (n // 2) + ["/"] * (n % 2)
    cols["limit_bytes"] = [None] * n
    for name in ("enclave", "accesses", "resident_pages"):  # cgroup rows only
        cols[name] = [None] * n
    cols["evictions"] = evictions
    return pa.table(cols, schema=TIMESERIES_SCHEMA)


def test_compare_timeseries_names_row_and_column() -> None:
    a = _table([0, 1, 2, 7, 9, 9])
    b = _table([0, 1, 2, 8, 9, 9])
    err = compare_timeseries(a, b)
    assert err is not None
    assert str(err) == (
        'timeseries.parquet: row 3 (time_ns 10000000, cgroup "/a"): evictions: '
        "compiled 7, reference 8"
    )
    assert compare_timeseries(a, _table([0, 1, 2, 7, 9, 9])) is None


def test_compare_timeseries_earliest_row_wins_over_column_order() -> None:
    a = set_cell(_table([0, 0, 0, 0]), "faults", 3, 5)  # faults precedes evictions
    a = set_cell(a, "evictions", 1, 4)
    err = compare_timeseries(a, _table([0, 0, 0, 0]))
    assert err is not None and err.field == 'row 1 (time_ns 0, cgroup "/a"): evictions'


def test_compare_timeseries_rows_and_schema() -> None:
    err = compare_timeseries(_table([0, 1, 2, 3]), _table([0, 1]))
    assert err is not None and str(err) == "timeseries.parquet: rows: compiled 4, reference 2"
    err = compare_timeseries(_table([0, 1, 5]), _table([0, 1, 2, 3]))
    assert err is not None and str(err) == (
        'timeseries.parquet: row 2 (time_ns 10000000, cgroup "/"): evictions: '
        "compiled 5, reference 2 (rows: compiled 3, reference 4)"
    )
    b = _table([0, 1])
    b = b.replace_schema_metadata({"epcsim.timeseries.version": "99"})
    err = compare_timeseries(_table([0, 1]), b)
    assert err is not None and err.field == "schema metadata"
    err = compare_timeseries(_table([0, 1]), _table([0, 1]).drop_columns(["enomem"]))
    assert err is not None and err.field == "columns"


def test_compare_latency() -> None:
    a = np.arange(30, dtype=np.int64) * 100
    b = a.copy()
    assert compare_latency(a, b) is None
    b[17] = 3100
    err = compare_latency(a, b)
    assert (
        err is not None and str(err) == "fault_latency.npy: index 17: compiled 1700, reference 3100"
    )
    err = compare_latency(a, a[:20])
    assert err is not None and str(err) == "fault_latency.npy: length: compiled 30, reference 20"
    err = compare_latency(a[:20], b)
    assert err is not None and str(err) == (
        "fault_latency.npy: index 17: compiled 1700, reference 3100 "
        "(length: compiled 20, reference 30)"
    )
    err = compare_latency(a, a.astype(np.int32))
    assert (
        err is not None and str(err) == "fault_latency.npy: dtype: compiled int64, reference int32"
    )


def test_compare_results_goes_file_by_file(reference: Result) -> None:
    other = Result(
        summary=json.loads(json.dumps(reference.summary)),
        timeseries=reference.timeseries,
        fault_latency_ns=reference.fault_latency_ns[:-1],
    )
    err = compare_results(other, reference)
    assert err is not None and err.file == "fault_latency.npy"
    other.summary["passed"] = not other.summary["passed"]
    err = compare_results(other, reference)
    assert err is not None and err.file == "summary.json" and err.field == "passed"


def test_compare_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "summary.json").write_bytes(b"{}\n")
    (b / "summary.json").write_bytes(b"{}\n")
    (a / "fault_latency.npy").write_bytes(b"\x00\x01\x02")
    (b / "fault_latency.npy").write_bytes(b"\x00\x01\x03")
    assert compare_files(a, b, ["summary.json"]) is None
    err = compare_files(a, b, ["summary.json", "fault_latency.npy"])
    assert (
        err is not None and str(err) == "fault_latency.npy: byte 2: compiled 0x02, reference 0x03"
    )
    (b / "fault_latency.npy").write_bytes(b"\x00\x01\x02\x04")
    err = compare_files(a, b, ["fault_latency.npy"])
    assert err is not None and str(err) == (
        "fault_latency.npy: size in bytes: compiled 3, reference 4"
    )


def test_engine_mismatch_is_not_bad_input() -> None:
    err = EngineMismatchError("summary.json", "x", "1", "2")
    assert not isinstance(err, EpcsimError)
    import pickle

    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.field == "x"
