"""``epcsim sweep --scheduler`` on a real Dask cluster on loopback: the rows are the
local run's (``wall_s`` and ``hostname`` apart), also when a worker exits mid-sweep.

Issue 16: "epcsim.sweep.sweep(..., scheduler=addr) of a two-tenant scenario over 4
limits × 2 seeds gives rows identical (except wall_s, hostname) to the local run, also
when a worker exits mid-sweep"; "a clear EpcsimError naming the address if it cannot
connect within a few seconds ... exit 2 message through the CLI".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _dask_cluster import LoopbackCluster, free_port, start_cluster
from _dask_fns import EXIT_AFTER_ENV, ExitAfter, fail_seed_2
from _scenarios import two_tenants
from typer.testing import CliRunner

import epcsim.sweep
from epcsim.cli import app
from epcsim.sweep import read_dataset, sweep
from epcsim.sweep.dask_backend import CONNECT_TIMEOUT_S

#: two tenants, each in its own cgroup of a 4 MiB EPC
TWO = two_tenants(b='pattern = "zipf", alpha = 0.9')

GRID = ["cgroup.1.max=1MiB..4MiB:4"]
SEEDS = "1..2"
VOLATILE = ("wall_s", "hostname")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    f = tmp_path_factory.mktemp("scenario") / "two.toml"
    f.write_text(TWO)
    return f


@pytest.fixture(scope="module")
def local(scenario: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local sweep (one process): the reference rows; it also fills the compiled
    engine's cache the workers read."""
    out = tmp_path_factory.mktemp("local") / "sweep"
    res = sweep(scenario, grid=GRID, seeds=SEEDS, out=out, jobs=1)
    assert res.ran == 8
    return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackCluster]:
    c = start_cluster(tmp_path_factory.mktemp("dask"))
    try:
        yield c
    finally:
        c.stop()


def stable(out: Path) -> list[dict[str, Any]]:
    rows = read_dataset(out).drop_columns(list(VOLATILE)).to_pylist()
    return sorted(rows, key=lambda r: (r["point"], r["cgroup"] or "", r["enclave"] or ""))


def data_files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*.parquet"))


def test_the_cli_on_a_cluster_gives_the_local_rows(
    scenario: Path, local: Path, cluster: LoopbackCluster, tmp_path: Path
) -> None:
    out = tmp_path / "sweep"
    args = ["sweep", str(scenario), "--grid", GRID[0], "--seeds", SEEDS, "--out", str(out)]
    r = CliRunner().invoke(app, [*args, "--scheduler", cluster.address])
    assert r.exit_code == 0, r.output
    rows = stable(out)
    assert len(rows) == 8 * 5  # 8 points: the root, /a, /b, enclaves a and b
    assert rows == stable(local)
    assert data_files(out) == data_files(local)
    # sweep.html shows neither wall_s nor hostname: the same page
    page = (out / "_meta" / "sweep.html").read_text()
    assert page == (local / "_meta" / "sweep.html").read_text()
    assert "<h1>two: sweep</h1>" in page


def test_a_worker_exiting_mid_sweep_loses_no_row(
    scenario: Path, local: Path, cluster: LoopbackCluster, tmp_path: Path
) -> None:
    """A third worker exits as its first point finishes (before the scheduler hears of
    it): the point is computed again elsewhere and the rows are the local ones."""
    client = cluster.client
    client.register_plugin(ExitAfter())
    try:
        doomed = cluster.add_worker({EXIT_AFTER_ENV: "1"})
        client.wait_for_workers(3, timeout=60)
        out = tmp_path / "sweep"
        res = sweep(scenario, grid=GRID, seeds=SEEDS, out=out, scheduler=cluster.address)
        assert doomed.wait(timeout=30) == 1, cluster.log(f"worker-{len(cluster.workers) - 1}")
    finally:
        client.unregister_worker_plugin(ExitAfter.name)
    assert (res.ran, res.errors) == (8, [])
    assert stable(out) == stable(local)


def test_a_scheduler_that_does_not_answer_is_one_line(scenario: Path, tmp_path: Path) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "sweep"
    args = ["sweep", str(scenario), "--grid", GRID[0], "--out", str(out)]
    r = CliRunner().invoke(app, [*args, "--scheduler", address])
    assert r.exit_code == 2
    t = f"{CONNECT_TIMEOUT_S:g}"
    assert r.output == (
        f"epcsim: error: scheduler {address}: cannot connect within {t} s (Timed out trying "
        f"to connect to {address} after {t} s); is `dask scheduler` running there and "
        "reachable from this host?\n"
    )


def test_points_failing_on_the_cluster_exit_1_and_a_rerun_runs_them(
    scenario: Path,
    local: Path,
    cluster: LoopbackCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tasks that raise on the workers (not a point's own error: a broken worker) are
    the cluster's counterpart of a local worker process that died: the other points are
    written, one line names the failed ones, exit 1; a rerun runs just those."""
    out = tmp_path / "sweep"
    args = ["sweep", str(scenario), "--grid", GRID[0], "--seeds", SEEDS, "--out", str(out)]
    with monkeypatch.context() as m:
        m.setattr(epcsim.sweep, "run_point", fail_seed_2)
        r = CliRunner().invoke(app, [*args, "--scheduler", cluster.address])
    assert r.exit_code == 1
    match = re.fullmatch(
        rf"epcsim: scheduler {cluster.address}: 4 of 8 points failed on the cluster, the "
        r"others were delivered: point ([0-9a-f]{16}): RuntimeError: no EPC for point "
        rf"\1 \(and 3 more\); 4 points of 8 written to {out}; a rerun runs the others\n",
        r.output,
    )
    assert match, r.output
    assert set(read_dataset(out).column("seed").to_pylist()) == {1}
    res = sweep(scenario, grid=GRID, seeds=SEEDS, out=out, scheduler=cluster.address)
    assert (res.ran, res.skipped) == (4, 4)
    assert stable(out) == stable(local)


def test_evaluate_on_a_cluster_gives_the_local_rows(
    scenario: Path, local: Path, cluster: LoopbackCluster, tmp_path: Path
) -> None:
    """``evaluate`` (what ``epcsim advise`` runs its points with) on the cluster: the rows
    of every point, those of the local sweep; a second call runs nothing."""
    from epcsim.scenario import load_scenario
    from epcsim.sweep import evaluate, expand
    from epcsim.sweep.grid import axes_for

    sc = load_scenario(str(scenario))
    points = expand(sc, axes_for(sc, GRID), [1, 2])
    out = tmp_path / "points"
    rows = evaluate(points, out=out, scheduler=cluster.address)
    local_rows = stable(local)
    assert (
        sorted(rows) == sorted({p.key for p in points}) == sorted({r["point"] for r in local_rows})
    )

    def drop(rs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(
            ({k: v for k, v in r.items() if k not in VOLATILE} for r in rs),
            key=lambda r: (r["cgroup"] or "", r["enclave"] or ""),
        )

    for key, rs in rows.items():
        assert drop(rs) == drop([r for r in local_rows if r["point"] == key])
    calls: list[tuple[int, int]] = []
    evaluate(points, out=out, scheduler=cluster.address, progress=lambda d, n: calls.append((d, n)))
    assert calls == [(0, 0)]


def test_advise_on_a_cluster_gives_the_local_advice(
    scenario: Path, local: Path, cluster: LoopbackCluster, tmp_path: Path
) -> None:
    """``epcsim advise --scheduler``: the searched curves, the limits and the verdict of
    the local advice (advise.json byte for byte)."""
    args = ["advise", str(scenario), "--slo", "slowdown<=4", "--resolution", "512KiB"]
    here = CliRunner().invoke(app, [*args, "--jobs", "1", "--out", str(tmp_path / "here")])
    assert here.exit_code == 0, here.output
    there = CliRunner().invoke(
        app, [*args, "--scheduler", cluster.address, "--out", str(tmp_path / "there")]
    )
    assert there.exit_code == 0, there.output
    doc = (tmp_path / "here" / "advise.json").read_text()
    assert json.loads(doc)["feasible"] is True
    assert (tmp_path / "there" / "advise.json").read_text() == doc


def test_advise_points_failing_on_the_cluster_exit_1(
    scenario: Path, cluster: LoopbackCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "advice"
    args = ["advise", str(scenario), "--slo", "slowdown<=4", "--resolution", "512KiB"]
    with monkeypatch.context() as m:
        m.setattr(epcsim.sweep, "run_point", fail_seed_2)
        r = CliRunner().invoke(
            app, [*args, "--seeds", "1..2", "--scheduler", cluster.address, "--out", str(out)]
        )
    assert r.exit_code == 1, r.output
    assert r.output.startswith(f"epcsim: scheduler {cluster.address}: ")
    assert r.output.endswith(f"; the runs done are in {out}/points (advise resumes from them)\n")
    assert not (out / "advise.json").exists()
