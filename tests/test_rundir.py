"""Run directories (docs/OUTPUTS.md): recognised by run.json, replaced only by the same
run or with force, never mixed by two runs, left intact by an interrupted run; and the
report checks a run directory fully before it writes anything."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import numpy as np
import pytest
from _scenarios import tiny

import epcsim
from epcsim.report import check_run_dir, write_report
from epcsim.rundir import RunDirError, lock_path
from epcsim.sim import Result

TINY = tiny()

DATA = ("summary.json", "timeseries.parquet", "fault_latency.npy", "fault_latency.parquet")
REPORT = ("report.html", "usage.png", "rates.png", "fault_latency.png", "slowdown.png")


def _run(out: Path, **kw) -> Result:
    kw.setdefault("engine", "reference")
    return epcsim.run(TINY, out=out, **kw)


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete run directory (with its report), copied by the tests that change it."""
    d = tmp_path_factory.mktemp("made") / "run"
    _run(d)
    return d


def _copy(made: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(made, to)
    return to


# --- what a run writes -------------------------------------------------------------------


def test_run_directory_has_a_manifest_and_nothing_else(made: Path) -> None:
    names = sorted(p.name for p in made.iterdir())
    assert names == sorted((*DATA, *REPORT, "run.json"))
    facts = json.loads((made / "run.json").read_text())
    assert facts["format"] == "epcsim-run" and facts["version"] == 1
    assert facts["files"] == names
    summary = json.loads((made / "summary.json").read_text())
    assert (facts["scenario"], facts["scenario_hash"], facts["seed"]) == (
        "tiny",
        summary["scenario_hash"],
        0,
    )
    assert (facts["engine_requested"], facts["engine"]) == ("reference", "reference")
    assert isinstance(facts["wall_s"], float) and facts["wall_s"] >= 0
    # the lock file is beside the directory, nothing else is left there
    assert sorted(p.name for p in made.parent.iterdir()) == [".run.lock", "run"]
    assert "engine" not in summary  # summary.json stays the same with either engine


def test_report_names_the_engine(made: Path) -> None:
    text = (made / "report.html").read_text()
    assert '<th scope="row">engine</th><td>reference (requested reference)</td>' in text
    assert "wall" not in text  # no wall time: the report stays deterministic


def test_rerun_of_the_same_run_replaces_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _run(out, report=False)
    first = json.loads((out / "run.json").read_text())
    data = {n: (out / n).read_bytes() for n in DATA}
    _run(out, report=False, engine="auto")  # same scenario and seed: allowed
    second = json.loads((out / "run.json").read_text())
    assert second["engine"] == "compiled" and first["engine"] == "reference"
    for n in DATA:  # byte-identical across engines
        assert (out / n).read_bytes() == data[n], n
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.lock", "run"]


def test_a_different_run_needs_force(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r1 = _run(out, report=False)
    before = _snapshot(out)
    with pytest.raises(RunDirError) as e:
        _run(out, seed=2)
    h = r1.summary["scenario_hash"][:12]
    assert str(e.value) == (
        f"out {out}: holds a different run (scenario tiny ({h}), seed 0); "
        "replace it with --force (force=True)"
    )
    assert _snapshot(out) == before
    with pytest.raises(RunDirError, match="holds a different run"):
        _run(out, overrides=["host.epc=8MiB"])
    r2 = _run(out, seed=2, force=True, report=False)
    assert json.loads((out / "run.json").read_text())["seed"] == 2
    assert json.loads((out / "summary.json").read_text()) == r2.summary


def test_directory_that_is_not_a_run_is_refused_even_with_force(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    for force in (False, True):
        with pytest.raises(RunDirError) as e:
            _run(out, force=force)
        assert str(e.value) == (
            f"out {out}: not an epcsim run directory (it holds files and no run.json); "
            "name a new or empty directory"
        )
    assert _snapshot(out) == {"notes.txt": b"keep me"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_run_directory_with_foreign_files_is_not_replaced(made: Path, tmp_path: Path) -> None:
    out = _copy(made, tmp_path / "run")
    (out / "notes.txt").write_text("mine")
    before = _snapshot(out)
    with pytest.raises(RunDirError) as e:
        _run(out, seed=3, force=True)
    assert str(e.value) == (
        f"out {out}: holds files epcsim did not write (notes.txt); epcsim replaces only "
        "its own runs: move them away first"
    )
    assert _snapshot(out) == before


def test_bad_manifest_is_named(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text("[1, 2]")
    with pytest.raises(RunDirError) as e:
        _run(out)
    assert str(e.value) == (
        f'{out / "run.json"}: not an epcsim run manifest (no "format": "epcsim-run")'
    )


def test_empty_directory_is_used(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    _run(out, report=False)
    assert (out / "run.json").is_file()


def test_current_directory_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for out in (".", str(tmp_path), ".."):
        with pytest.raises(RunDirError, match="is the current directory or contains it"):
            _run(Path(out))
    assert list(tmp_path.iterdir()) == []


def test_a_locked_directory_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """A second run into a directory another run is writing fails at once (the lock is
    held here in-process, as the first run would hold it)."""
    out = tmp_path / "run"
    _run(out, report=False)
    before = _snapshot(out)
    lock = lock_path(out.resolve())
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        seen: list[int] = []
        with pytest.raises(RunDirError) as e:
            _run(out, progress=lambda p: seen.append(p.now_ns))
        assert str(e.value) == (
            f"out {out}: another epcsim run is writing it (it holds {lock}); "
            "wait for it to finish or choose another directory"
        )
        assert seen == []  # refused before simulating
        _run(tmp_path / "other", report=False)  # another directory has its own lock
    finally:
        os.close(fd)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".other.lock",
        ".run.lock",
        "other",
        "run",
    ]
    _run(out, report=False)  # released: the same run may run again


def test_interrupt_leaves_the_previous_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _run(out)
    before = _snapshot(out)

    def interrupt(p: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(out, progress=interrupt)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.lock", "run"]
    # a new directory interrupted: nothing appears
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "other", progress=interrupt)
    assert not (tmp_path / "other").exists()


def test_leftovers_of_a_killed_run_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "run"
    for name in (".run.tmp-abcd_123", ".run.old-zz998877", ".run.tmp-zz.tmp-abcdefgh"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text("{}")
    _run(out, report=False)
    # a killed run's directories go; another directory's name that merely starts alike stays
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".run.lock",
        ".run.tmp-zz.tmp-abcdefgh",
        "run",
    ]


# --- reading a run directory: errors name the file, nothing is written -------------------


def _bad(made: Path, tmp_path: Path, name: str, content: bytes) -> tuple[Path, dict]:
    d = _copy(made, tmp_path / "run")
    (d / name).write_bytes(content)
    return d, _snapshot(d)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("summary.json", b"[1, 2]", "summary.json: expected a JSON object, got list"),
        ("summary.json", b"{not json", "summary.json: cannot read it as JSON: "),
        (
            "summary.json",
            b'{"scenario": "x"}',
            "summary.json: scenario_hash: Field required",
        ),
        ("fault_latency.npy", b"garbage", "fault_latency.npy: cannot read the fault latencies: "),
        ("timeseries.parquet", b"PAR1 garbage", "timeseries.parquet: cannot read the time series"),
        ("run.json", b"{", "run.json: cannot read it as JSON: "),
    ],
)
def test_report_checks_before_writing(
    made: Path, tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    d, before = _bad(made, tmp_path, name, content)
    with pytest.raises(RunDirError) as e:
        write_report(d)
    assert str(e.value).startswith(f"{d / message.split(': ')[0]}: ")
    assert message.split(": ", 1)[1] in str(e.value)
    assert _snapshot(d) == before


def test_summary_types_are_checked(made: Path, tmp_path: Path) -> None:
    summary = json.loads((made / "summary.json").read_text())
    summary["cgroups"]["/a"]["peak_bytes"] = "lots"
    d, _ = _bad(made, tmp_path, "summary.json", json.dumps(summary).encode())
    with pytest.raises(RunDirError) as e:
        check_run_dir(d)
    assert str(e.value) == (
        f"{d / 'summary.json'}: cgroups./a.peak_bytes: Input should be a valid integer (got 'lots')"
    )


@pytest.mark.parametrize(
    ("where", "key", "value", "message"),
    [
        ("cgroups", "accesses_per_s", "fast", "Input should be a valid number"),
        ("cgroups", "miss_ratio", [0.5], "Input should be a valid number"),
        ("enclaves", "slowdown", "2x", "Input should be a valid number"),
        ("enclaves", "fault_latency_ns", {"count": 3, "p50": "1us"}, "valid integer"),
        ("enclaves", "pages_reclaimed", {"total": 1, "async": None, "sync": "2"}, "integer"),
    ],
)
def test_per_tenant_summary_types_are_checked(
    made: Path, tmp_path: Path, where: str, key: str, value: object, message: str
) -> None:
    """The per-tenant keys the report's tenants table reads (a string where a number
    belongs made `epcsim report` end in a traceback, found by the long fuzz profile)."""
    summary = json.loads((made / "summary.json").read_text())
    name = next(iter(summary[where]))
    summary[where][name][key] = value
    d, before = _bad(made, tmp_path, "summary.json", json.dumps(summary).encode())
    with pytest.raises(RunDirError) as e:
        write_report(d)
    text = str(e.value)
    assert text.startswith(f"{d / 'summary.json'}: {where}.{name}.{key}")
    assert message in text
    assert _snapshot(d) == before


def test_latencies_must_be_a_1d_integer_array(made: Path, tmp_path: Path) -> None:
    d = _copy(made, tmp_path / "run")
    np.save(d / "fault_latency.npy", np.zeros((2, 2)))
    with pytest.raises(RunDirError) as e:
        check_run_dir(d)
    assert str(e.value) == (
        f"{d / 'fault_latency.npy'}: expected a 1-D integer array, got 2-D float64"
    )


def test_time_series_columns_are_checked(made: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    d = _copy(made, tmp_path / "run")
    ts = pq.read_table(d / "timeseries.parquet").drop_columns(["usage_bytes"])
    pq.write_table(ts, d / "timeseries.parquet")
    with pytest.raises(RunDirError) as e:
        check_run_dir(d)
    assert str(e.value) == f"{d / 'timeseries.parquet'}: no column 'usage_bytes'"


def test_time_series_enclave_columns_are_checked(made: Path, tmp_path: Path) -> None:
    """A time series of schema version 2 keeps its enclave rows apart by the enclave
    column: without it (renamed here) the report stops at the check, nothing written."""
    import pyarrow.parquet as pq

    d = _copy(made, tmp_path / "run")
    ts = pq.read_table(d / "timeseries.parquet")
    assert ts.schema.metadata[b"epcsim.timeseries.version"] == b"2"
    assert ts.column("cgroup").null_count  # the run has enclave rows
    names = ["x" if n == "enclave" else n for n in ts.column_names]
    renamed = ts.rename_columns(names).replace_schema_metadata(ts.schema.metadata)
    pq.write_table(renamed, d / "timeseries.parquet")
    before = _snapshot(d)
    with pytest.raises(RunDirError) as e:
        write_report(d)
    assert str(e.value) == f"{d / 'timeseries.parquet'}: no column 'enclave'"
    assert _snapshot(d) == before


def test_time_series_cgroup_rows_need_a_cgroup(made: Path, tmp_path: Path) -> None:
    """Without the version-2 columns (a version-1 time series), a row without a cgroup
    is refused by name, not drawn as a cgroup named None."""
    import pyarrow.parquet as pq

    d = _copy(made, tmp_path / "run")
    ts = pq.read_table(d / "timeseries.parquet")
    nulls = ts.column("cgroup").null_count
    ts = ts.drop_columns(["enclave", "accesses", "resident_pages"]).replace_schema_metadata(None)
    pq.write_table(ts, d / "timeseries.parquet")
    with pytest.raises(RunDirError) as e:
        check_run_dir(d)
    assert str(e.value) == f"{d / 'timeseries.parquet'}: column 'cgroup' is null in {nulls} rows"


def test_report_rebuild_is_identical(made: Path, tmp_path: Path) -> None:
    d = _copy(made, tmp_path / "run")
    before = _snapshot(d)
    write_report(d)
    assert _snapshot(d) == before
    assert sorted(p.name for p in d.iterdir()) == sorted(before)  # no scratch left


def test_failed_install_puts_the_previous_run_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    _run(out, report=False)
    before = _snapshot(out)
    real = os.replace

    def failing(src, dst):
        if Path(src).name.startswith(".run.tmp-"):
            raise OSError(28, "No space left on device", str(dst))
        return real(src, dst)

    monkeypatch.setattr("epcsim.rundir.os.replace", failing)
    with pytest.raises(OSError, match="No space left"):
        _run(out, report=False)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.lock", "run"]
