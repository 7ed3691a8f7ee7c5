"""``epcsim sweep`` end to end on a small two-tenant scenario: the dataset (one file per
point, fixed schema, readable as one dataset), resume (a rerun runs nothing; an
interrupted sweep loses nothing finished), the lock, directories that are not this
sweep's, error points, kept runs, and the CLI's exact one-line refusals."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as pads
import pytest
from _scenarios import two_tenants
from typer.testing import CliRunner

from epcsim.cli import app
from epcsim.errors import EpcsimError
from epcsim.rundir import read_manifest
from epcsim.sweep import evaluate, expand, read_dataset, sweep
from epcsim.sweep import points as points_mod
from epcsim.sweep.grid import axes_for

#: two tenants, each in its own 2 MiB cgroup of a 4 MiB EPC
TWO = two_tenants()

GRID = ["cgroup.1.max=1MiB..4MiB:4", "host.policy=v16,v14"]
#: what differs between two runs of the same point
VOLATILE = ("wall_s", "hostname")


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    f = tmp_path / "two.toml"
    f.write_text(TWO)
    return f


def _stable(table) -> list[dict]:
    rows = table.drop_columns(list(VOLATILE)).to_pylist()
    return sorted(rows, key=lambda r: (r["point"], r["cgroup"] or "", r["enclave"] or ""))


def _files(d: Path) -> dict[str, int]:
    return {
        str(p.relative_to(d)): p.stat().st_mtime_ns
        for p in sorted(d.rglob("*"))
        if p.is_file() and p.name != "sweep.html"
    }


def test_grid_runs_locally_and_a_rerun_runs_nothing(scenario: Path, tmp_path: Path) -> None:
    """4 limits x 2 policies x 2 seeds = 16 points, 5 rows each (3 cgroups with the
    root, 2 enclaves); a rerun runs no point and rewrites no file."""
    out = tmp_path / "sw"
    calls: list[tuple[int, int]] = []
    res = sweep(
        scenario,
        grid=GRID,
        seeds="1..2",
        out=out,
        jobs=2,
        progress=lambda k, n: calls.append((k, n)),
    )
    assert (res.ran, res.skipped, res.errors) == (16, 0, [])
    assert calls[0] == (0, 16) and calls[-1] == (16, 16) and len(calls) == 17
    assert sorted(os.listdir(out)) == ["_meta", "seed-1", "seed-2"]
    assert sorted(os.listdir(out / "_meta")) == ["lock", "sweep.html", "sweep.json"]
    assert len(os.listdir(out / "seed-1")) == len(os.listdir(out / "seed-2")) == 8
    for reader in (pads.dataset(out), pads.dataset(out, partitioning="hive")):
        t = reader.to_table()
        assert t.num_rows == 80
        assert t.column_names[:4] == ["point", "cgroup.1.max", "host.policy", "seed"]
        assert str(t.schema.field("cgroup.1.max").type) == "int64"
    t = pads.dataset(out).to_table()
    assert sorted(set(t.column("cgroup.1.max").to_pylist())) == [1 << 20, 2 << 20, 3 << 20, 4 << 20]
    assert sorted(set(t.column("cgroup").to_pylist())) == ["/", "/a", "/b"]
    assert set(t.column("engine").to_pylist()) <= {"compiled", "mixed", "reference"}
    assert set(t.column("outcome").to_pylist()) == {"pass", "success"}
    manifest = json.loads((out / "_meta" / "sweep.json").read_text())
    assert manifest["format"] == "epcsim-sweep" and manifest["seeds"] == [1, 2]
    assert [a["key"] for a in manifest["axes"]] == ["cgroup.1.max", "host.policy"]
    assert manifest["points"] == sorted({p.key for p in res.points})
    assert "time" not in json.dumps(manifest)

    before = _files(out)
    calls.clear()
    t0 = time.monotonic()
    again = sweep(
        scenario,
        grid=GRID,
        seeds="1..2",
        out=out,
        jobs=2,
        progress=lambda k, n: calls.append((k, n)),
    )
    assert (again.ran, again.skipped) == (0, 16)
    assert calls == [(0, 0)]
    assert time.monotonic() - t0 < 10
    assert _files(out) == before
    assert _stable(again.table) == _stable(res.table)

    # the same points run serially elsewhere: the same rows but wall_s and hostname
    serial = sweep(scenario, grid=GRID, seeds="1..2", out=tmp_path / "serial", jobs=1)
    assert _stable(serial.table) == _stable(res.table)

    # more seeds: only the new points run, the manifest lists them all
    more = sweep(scenario, grid=GRID, seeds="1..3", out=out, jobs=2)
    assert (more.ran, more.skipped) == (8, 16)
    manifest = json.loads((out / "_meta" / "sweep.json").read_text())
    assert manifest["seeds"] == [1, 2, 3] and len(manifest["points"]) == 24
    assert pads.dataset(out).to_table().num_rows == 120


def test_evaluate_runs_only_missing_points(scenario: Path, tmp_path: Path) -> None:
    from epcsim.scenario import load_scenario

    sc = load_scenario(str(scenario))
    pts = expand(sc, axes_for(sc, ["host.policy=v16,v14"]), [1])
    out = tmp_path / "ev"
    rows = evaluate(pts[:1], out=out, jobs=1)
    assert list(rows) == [pts[0].key] and len(rows[pts[0].key]) == 5
    n: list[int] = []
    rows = evaluate(pts, out=out, jobs=1, progress=lambda k, total: n.append(total))
    assert n == [1, 1]  # one point to run, reported at 0 and 1
    assert sorted(rows) == sorted(p.key for p in pts)
    assert [r["host.policy"] for r in rows[pts[1].key]] == ["v14"] * 5
    assert read_dataset(out).num_rows == 10


def test_a_point_that_fails_is_data(
    scenario: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A point whose run raises gives one row, outcome "error", the message in
    ``error``; the others run; exit 1; --retry-errors runs it again."""
    real = points_mod._run

    def flaky(sc, **kw):
        if sc.host.policy == "v14":
            raise RuntimeError("boom\nsecond line")
        return real(sc, **kw)

    monkeypatch.setattr(points_mod, "_run", flaky)
    out = tmp_path / "sw"
    args = ["sweep", str(scenario), "--grid", "host.policy=v16,v14", "--out", str(out), "-j", "1"]
    r = CliRunner().invoke(app, args)
    [bad] = [p.key for p in expand_two(scenario) if p.values["host.policy"] == "v14"]
    assert r.exit_code == 1
    assert r.output.splitlines()[-1] == (
        "epcsim: 1 point ended with an error (rows with outcome error, the message in column "
        f"error): {bad}; --retry-errors runs them again"
    )
    t = read_dataset(out)
    rows = [x for x in t.to_pylist() if x["point"] == bad]
    assert len(rows) == 1
    assert (rows[0]["outcome"], rows[0]["error"], rows[0]["cgroup"]) == (
        "error",
        "RuntimeError: boom second line",
        None,
    )
    assert t.num_rows == 6
    # a plain rerun keeps it; --retry-errors runs it (and only it) again
    assert sweep(scenario, grid=["host.policy=v16,v14"], out=out, jobs=1).ran == 0
    monkeypatch.setattr(points_mod, "_run", real)
    res = sweep(scenario, grid=["host.policy=v16,v14"], out=out, jobs=1, retry_errors=True)
    assert (res.ran, res.errors) == (1, [])
    assert read_dataset(out).num_rows == 10


def expand_two(scenario: Path):
    from epcsim.scenario import load_scenario

    sc = load_scenario(str(scenario))
    return expand(sc, axes_for(sc, ["host.policy=v16,v14"]), [0])


def test_keep_runs(scenario: Path, tmp_path: Path) -> None:
    out = tmp_path / "sw"
    res = sweep(scenario, grid=["host.policy=v16"], out=out, jobs=1, keep_runs=True)
    (key,) = [p.key for p in res.points]
    run = out / "_runs" / key
    assert sorted(os.listdir(run)) == [
        "fault_latency.npy",
        "fault_latency.parquet",
        "run.json",
        "summary.json",
        "timeseries.parquet",
    ]
    assert read_manifest(run)["scenario_hash"] == res.table.column("scenario_hash")[0].as_py()
    assert pads.dataset(out).to_table().num_rows == 5  # _runs is not in the dataset


def test_the_lock_refuses_a_concurrent_sweep(scenario: Path, tmp_path: Path) -> None:
    out = tmp_path / "sw"
    (out / "_meta").mkdir(parents=True)
    lock = out / "_meta" / "lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another sweep is writing
        message = (
            f"out {out}: another epcsim sweep is writing it (it holds {lock}); wait for it "
            "to finish or choose another directory"
        )
        with pytest.raises(EpcsimError) as e:
            sweep(scenario, grid=["host.policy=v16"], out=out, jobs=1)
        assert str(e.value) == message
        r = CliRunner().invoke(app, ["sweep", str(scenario), "--out", str(out)])
        assert (r.exit_code, r.output) == (2, f"epcsim: error: {message}\n")
        assert sorted(os.listdir(out)) == ["_meta"] and os.listdir(out / "_meta") == ["lock"]
    finally:
        os.close(fd)
    assert sweep(scenario, grid=["host.policy=v16"], out=out, jobs=1).ran == 1


def test_directories_that_are_not_this_sweep(scenario: Path, tmp_path: Path) -> None:
    out = tmp_path / "sw"
    sweep(scenario, grid=["host.policy=v16,v14"], out=out, jobs=1)
    h = json.loads((out / "_meta" / "sweep.json").read_text())["scenario"]["hash"][:12]
    with pytest.raises(EpcsimError) as e:
        sweep(scenario, grid=["host.cpus=1,2"], out=out, jobs=1)
    assert str(e.value) == (
        f"out {out}: holds another sweep (scenario two ({h}), grid host.policy); replace it "
        "with --force (force=True), or choose another directory"
    )
    with pytest.raises(EpcsimError) as e:
        sweep(scenario, grid=["host.policy=v16"], sets=["host.cpus=1"], out=out, jobs=1)
    assert "holds another sweep (scenario two" in str(e.value)
    assert str(e.value).endswith(
        "grid host.policy); replace it with --force (force=True), or choose another directory"
    )
    res = sweep(scenario, grid=["host.cpus=1,2"], out=out, jobs=1, force=True)
    assert (res.ran, res.skipped) == (2, 0)
    assert read_dataset(out).column_names[1] == "host.cpus"
    assert read_dataset(out).num_rows == 10

    (out / "seed-0" / "notes.txt").write_text("mine")
    with pytest.raises(EpcsimError) as e:
        sweep(scenario, grid=["host.cpus=1,2"], out=out, jobs=1, force=True)
    assert str(e.value) == (
        f"out {out}: holds files epcsim did not write (seed-0/notes.txt); move them away"
    )
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.csv").write_text("x")
    with pytest.raises(EpcsimError) as e:
        sweep(scenario, out=other, jobs=1)
    assert str(e.value) == (
        f"out {other}: not an epcsim sweep directory (it holds files and no "
        "_meta/sweep.json); name a new or empty directory"
    )
    assert os.listdir(other) == ["data.csv"]


def _cli(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, ["sweep", *args])
    return r.exit_code, r.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grid", "host.foo=1"], "--grid host.foo: unknown key ('foo' is not a field of host)"),
        (["--grid", "host.epc="], "--grid host.epc=: no values (give a,b,c, A..B:N or A..B:xN)"),
        (
            ["--grid", "cgroup.0.max=1MiB..4MiB:0"],
            "--grid cgroup.0.max=1MiB..4MiB:0: a range needs N >= 2 points, got 0",
        ),
        (
            ["--grid", "cgroup.0.max=4MiB..1MiB:3"],
            "--grid cgroup.0.max=4MiB..1MiB:3: A..B needs A < B, got 4MiB..1MiB",
        ),
        (
            ["--grid", "cgroup.0.max=0..4MiB:x3"],
            "--grid cgroup.0.max=0..4MiB:x3: geometric spacing (:x3) needs A > 0, got 0",
        ),
        (
            ["--grid", "cgroup.0.max=1MiB,big"],
            "--grid cgroup.0.max=1MiB,big: 'big' is not a size (examples: 96MiB, 4KiB, 4096)",
        ),
        (
            ["--grid", "host.cpus=1,2", "--grid", "host.cpus=3"],
            "--grid host.cpus: the key is given twice",
        ),
        (
            ["--grid", "host.policy=v16,nope"],
            "point host.policy=nope: host.policy: unknown policy 'nope'; known: "
            "v16, v14, v13, limit-only, oom-v2, global-lru, memcg-iter, mglru-memcg",
        ),
        (["--seeds", "3..1"], "seeds: empty range '3..1' (FROM..TO needs FROM <= TO)"),
        (["--seeds", "a"], "seeds: expected FROM..TO, N or N,N,..., got 'a'"),
        (["--seeds", "1,1"], "seeds: a seed is named twice in '1,1'"),
        (["--jobs", "0"], "--jobs: expected a positive integer, got '0'"),
        (["--jobs", "two"], "--jobs: expected a positive integer, got 'two'"),
        # Python's \s matches U+001F, int() refuses it (a traceback, found by the fuzz)
        (["--jobs", "0\x1f"], "--jobs: expected a positive integer, got '0\\x1f'"),
        (
            ["--scheduler", "10.0.0.1:8786"],
            "--scheduler '10.0.0.1:8786': expected tcp://HOST:PORT (or tls://, ws://, wss://, "
            "inproc://)",
        ),
        (["--set", "host.cpus=0"], None),  # the scenario's own error, as `epcsim run` says it
    ],
)
def test_cli_refusals_are_one_line(
    scenario: Path, tmp_path: Path, args: list[str], message: str | None
) -> None:
    out = tmp_path / "sw"
    code, output = _cli(str(scenario), *args, "--out", str(out))
    if message is None:
        assert code == 2 and output.startswith(f"epcsim: error: {scenario}: host.cpus: ")
        assert output.count("\n") == 1
    else:
        assert (code, output) == (2, f"epcsim: error: {message}\n")
    assert not out.exists()


def test_cli_missing_dask_backend(
    scenario: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--scheduler with a well-formed address but no Dask backend importable: one line."""
    monkeypatch.setitem(sys.modules, "epcsim.sweep.dask_backend", None)
    out = tmp_path / "sw"
    code, output = _cli(str(scenario), "--scheduler", "tcp://127.0.0.1:8786", "--out", str(out))
    assert code == 2
    assert output.startswith(
        "epcsim: error: --scheduler tcp://127.0.0.1:8786: the Dask backend is not available ("
    )
    assert output.count("\n") == 1


def test_cli_sweep_table_of_the_file(scenario: Path, tmp_path: Path) -> None:
    """The [sweep] table gives the grid and seeds; --grid for its key replaces it."""
    f = tmp_path / "s.toml"
    f.write_text(TWO + '\n[sweep]\ngrid = { "cgroup.1.max" = "1MiB..2MiB:2" }\nseeds = "1..2"\n')
    out = tmp_path / "sw"
    code, output = _cli(str(f), "--out", str(out), "-j", "1")
    assert code == 0, output
    assert output.splitlines()[0] == (
        f"sweep cgroup.1.max (2) x 2 seeds: 4 points, 4 run now, 0 already in {out}"
    )
    code, output = _cli(str(f), "--grid", "cgroup.1.max=1MiB,3MiB", "--out", str(out), "-j", "1")
    assert code == 0, output
    assert output.splitlines()[0] == (
        f"sweep cgroup.1.max (2) x 2 seeds: 4 points, 2 run now, 2 already in {out}"
    )
    assert sorted(set(read_dataset(out).column("cgroup.1.max").to_pylist())) == [
        1 << 20,
        2 << 20,
        3 << 20,
    ]


@pytest.mark.parametrize("jobs", [1, 2])
def test_ctrl_c_loses_nothing_finished(scenario: Path, tmp_path: Path, jobs: int) -> None:
    """SIGINT to `epcsim sweep` once the first point's file is there: exit 130, every
    file there is a whole point; the rerun runs exactly the others, and the rows equal
    an uninterrupted sweep's.  With 1 job the points run in the command's process,
    with 2 in a pool whose workers the command ends."""
    out = tmp_path / "sw"
    sets = [
        "--set",
        "enclave.0.workload.accesses=60000",
        "--set",
        "enclave.1.workload.accesses=60000",
    ]
    grid = ["--grid", "cgroup.1.max=1MiB..3MiB:3", "--grid", "host.policy=v16,v14"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    cmd = [
        sys.executable,
        "-m",
        "epcsim",
        "sweep",
        str(scenario),
        *grid,
        *sets,
        "--out",
        str(out),
        "-j",
        str(jobs),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not list(out.glob("seed-*/*.parquet")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    done = sorted(p.name for p in out.glob("seed-*/*"))
    assert 1 <= len(done) < 6
    assert err.splitlines()[-1] == (
        f"interrupted; {len(done)} point{'' if len(done) == 1 else 's'} of 6 written to {out}; "
        "a rerun runs the others"
    )
    kw = {"grid": grid[1::2], "sets": sets[1::2], "jobs": 2}
    assert not list(out.rglob(".*tmp*"))  # no partial file left
    res = sweep(scenario, out=out, **kw)
    assert (res.ran, res.skipped) == (6 - len(done), len(done))
    ref = sweep(scenario, out=tmp_path / "ref", **kw)
    assert _stable(read_dataset(out)) == _stable(ref.table)


def test_ctrl_c_while_a_point_is_written_waits_for_its_count(
    scenario: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`epcsim sweep` interrupted while it writes a point counts that point: the line it
    ends with names the points on disk.  The SIGINT is sent from inside the write; before,
    a signal between the file's rename and the count made the command say one point
    fewer than it had written (seen once with -j 2, where it cannot be timed)."""
    import epcsim.sweep as sw

    write = sw._write_point

    def write_then_sigint(*args, **kwargs) -> None:
        write(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(sw, "_write_point", write_then_sigint)
    out = tmp_path / "sw"
    grid = ["--grid", "cgroup.1.max=1MiB..3MiB:3", "--grid", "host.policy=v16,v14"]
    code, output = _cli(str(scenario), *grid, "--out", str(out), "-j", "1")
    assert code == 130, output
    assert len(list(out.glob("seed-*/*.parquet"))) == 1
    assert output.splitlines()[-1] == (
        f"interrupted; 1 point of 6 written to {out}; a rerun runs the others"
    )


def test_a_worker_that_dies(
    scenario: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker process killed under a point (the OOM killer, say): one line, exit 1,
    the points written so far kept."""
    real = points_mod._run

    def dies(sc, **kw):
        if sc.host.policy == "v13":
            os._exit(9)
        return real(sc, **kw)

    monkeypatch.setattr(points_mod, "_run", dies)  # forked workers inherit it
    out = tmp_path / "sw"
    code, output = _cli(
        str(scenario), "--grid", "host.policy=v16,v13", "--out", str(out), "-j", "2"
    )
    assert code == 1
    (line,) = output.splitlines()
    assert line.startswith("epcsim: a worker process died (")
    assert line.endswith(f"written to {out}; a rerun runs the others")
    monkeypatch.setattr(points_mod, "_run", real)
    res = sweep(scenario, grid=["host.policy=v16,v13"], out=out, jobs=1)
    assert res.ran + res.skipped == 2 and res.ran >= 1


def test_a_scenario_object_keeps_its_sweep_table(scenario: Path, tmp_path: Path) -> None:
    from epcsim.scenario import load_scenario

    sc = load_scenario(TWO + '\n[sweep]\ngrid = { "host.policy" = "v16,v14" }\n')
    res = sweep(sc, sets=["host.cpus=1"], out=tmp_path / "sw", jobs=1)
    assert [a.key for a in res.axes] == ["host.policy"] and res.ran == 2


def test_help_shows_the_sweep_table_and_no_emoji() -> None:
    """Rich markup would eat ``[sweep]`` and turn ``:name:`` into emoji."""
    r = CliRunner().invoke(app, ["sweep", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "scenario's [sweep] grid" in r.stdout and "(default: [sweep] seeds" in r.stdout
    assert "<bool>" not in r.stdout
    assert [c for c in r.stdout if ord(c) >= 0x1F000 or 0x2600 <= ord(c) < 0x2800] == []


def test_evaluate_then_sweep_into_the_same_directory(scenario: Path, tmp_path: Path) -> None:
    """A directory evaluate() wrote (points of any scenario) is not a sweep's: refused
    without --force; evaluate() refuses a sweep directory with other grid columns."""
    from epcsim.scenario import load_scenario

    sc = load_scenario(str(scenario))
    out = tmp_path / "ev"
    evaluate(expand(sc, axes_for(sc, ["host.policy=v16"]), [0]), out=out, jobs=1)
    with pytest.raises(EpcsimError) as e:
        sweep(scenario, grid=["host.policy=v16"], out=out, jobs=1)
    assert str(e.value) == (
        f"out {out}: holds another sweep (points written by epcsim.sweep.evaluate, grid "
        "host.policy); replace it with --force (force=True), or choose another directory"
    )
    with pytest.raises(EpcsimError) as e:
        evaluate(expand(sc, axes_for(sc, ["host.cpus=1"]), [0]), out=out, jobs=1)
    assert str(e.value) == (
        f"out {out}: holds a sweep with other grid columns (points written by "
        "epcsim.sweep.evaluate, grid host.policy)"
    )
