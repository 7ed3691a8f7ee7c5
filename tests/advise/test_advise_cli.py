"""``epcsim advise`` (issue 16): the tables, advise.json, exit 0 feasible or not, exit 2
for bad input.  The runs are the synthetic evaluator's (the default evaluator replaced)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _advise import TWO, Synthetic, independent
from typer.testing import CliRunner

import epcsim.advise
from epcsim.cli import app

runner = CliRunner()


@pytest.fixture
def synthetic(monkeypatch):
    ev = Synthetic(independent)
    seen = {}

    def default(sc, tenants, seeds, sets, points, jobs, scheduler):
        seen.update(points=points, jobs=jobs, scheduler=scheduler, seeds=seeds)
        return ev

    monkeypatch.setattr(epcsim.advise, "_default_evaluator", default)
    return seen


def invoke(tmp_path: Path, *args: str):
    scenario = tmp_path / "two.toml"
    scenario.write_text(TWO)
    return runner.invoke(app, ["advise", str(scenario), *map(str, args)])


def test_feasible_table_curves_and_advise_json(tmp_path, synthetic):
    out = tmp_path / "adv"
    r = invoke(tmp_path, "--slo", "slowdown<=2", "--resolution", "4KiB", "--out", out, "-j", "2")
    assert r.exit_code == 0, r.output
    assert "two: feasible; limits sum to 220KiB (resolution 4KiB; seeds 1)" in r.output
    lines = r.output.splitlines()
    row = next(ln for ln in lines if ln.startswith("│ /a "))
    assert [c.strip() for c in row.strip("│").split("│")] == [
        "/a",
        "128KiB",
        "200KiB",
        "2.00",
        "+0.0%",
        "yes",
    ]
    row = next(ln for ln in lines if ln.startswith("│ /b "))
    assert [c.strip() for c in row.strip("│").split("│")] == [
        "/b",
        "32KiB",
        "20KiB",
        "2.00",
        "+0.0%",
        "yes",
    ]
    assert "/a: the curve searched (limit -> metric)" in r.output
    assert "no: slowdown<=2 violated (2.04082)" in r.output  # /a at 49 pages
    assert "23 assignments evaluated in 5 rounds" in r.output
    assert f"wrote {out}/advise.json" in r.output
    data = json.loads((out / "advise.json").read_text())
    assert data["feasible"] is True
    assert data["limits"] == {"/a": 50 * 4096, "/b": 5 * 4096}
    assert synthetic == {
        "points": out.resolve() / "points",
        "jobs": 2,
        "scheduler": None,
        "seeds": [1],
    }


def test_infeasible_is_exit_0(tmp_path, synthetic):
    out = tmp_path / "adv"
    r = invoke(
        tmp_path, "--slo", "slowdown<=2", "--resolution", "4KiB", "--budget", "200KiB", "--out", out
    )
    assert r.exit_code == 0, r.output
    assert "two: NOT feasible; limits sum to 220KiB (resolution 4KiB, budget 200KiB" in r.output
    assert (
        "no assignment meets the SLOs: budget: the smallest limits found add up to 220KiB, "
        "above the budget 200KiB" in r.output
    )
    assert json.loads((out / "advise.json").read_text())["feasible"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--slo", "slowdown=~2"], "slo 'slowdown=~2': expected METRIC OP VALUE"),
        (["--slo", "latency<=5us"], "slo 'latency<=5us': unknown metric 'latency' (known: "),
        (["--slo", "slowdown<=2", "--tenant", "/nope"], "tenant /nope: not a cgroup of scenario"),
        (["--slo", "slowdown<=2", "--resolution", "0"], "resolution: must be at least one page"),
        (["--slo", "slowdown<=2", "--resolution", "6KiB"], "resolution: '6KiB' is not a whole"),
        (["--slo", "slowdown<=2", "--budget", "-1"], "budget: not a size: '-1'"),
        (["--slo", "slowdown<=2", "--set", "host.nope=1"], "host.nope"),
        (
            ["--slo", "slowdown<=2", "--scheduler", "nowhere"],
            "--scheduler 'nowhere': expected tcp://HOST:PORT",
        ),
        (["--slo", "slowdown<=2", "--seeds", "3..1"], "seeds: empty range '3..1'"),
    ],
)
def test_bad_input_is_exit_2_one_line(tmp_path, synthetic, args, message):
    r = invoke(tmp_path, *args, "--out", tmp_path / "adv")
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("epcsim: error: ") and message in lines[0]
    assert not (tmp_path / "adv").exists()


def test_a_directory_holding_other_files_is_refused(tmp_path, synthetic):
    out = tmp_path / "adv"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    r = invoke(tmp_path, "--slo", "slowdown<=2", "--out", out)
    assert r.exit_code == 2
    assert r.output.strip() == (
        f"epcsim: error: out {out}: not an epcsim advice directory (it holds notes.txt); "
        "name a new or empty directory"
    )
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_seeds_and_scheduler_reach_the_evaluator(tmp_path, synthetic):
    out = tmp_path / "adv"
    r = invoke(
        tmp_path,
        "--slo",
        "slowdown<=2",
        "--seeds",
        "1..3",
        "--scheduler",
        "tcp://h:8786",
        "--tenant",
        "/b",
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    assert synthetic == {
        "points": out.resolve() / "points",
        "jobs": None,
        "scheduler": "tcp://h:8786",
        "seeds": [1, 2, 3],
    }
    data = json.loads((out / "advise.json").read_text())
    assert data["seeds"] == [1, 2, 3] and data["tenants_searched"] == ["/b"]
    # the default resolution: capacity / 32 = 8 KiB (2 pages) on this 256 KiB EPC
    assert data["resolution"] == 8192 and data["limits"] == {"/b": 6 * 4096}


def test_help_has_no_bool_metavar_and_no_emoji():
    r = runner.invoke(app, ["advise", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "--slo" in r.stdout and "METRIC<=VALUE" in r.stdout and "<bool>" not in r.stdout
    assert [c for c in r.stdout if ord(c) >= 0x1F000 or 0x2600 <= ord(c) < 0x2800] == []


def test_a_bad_scenario_is_exit_2_nothing_written(tmp_path, synthetic):
    scenario = tmp_path / "bad.toml"
    scenario.write_text(TWO.replace('epc = "256KiB"', 'epc = "lots"'))
    r = runner.invoke(
        app, ["advise", str(scenario), "--slo", "slowdown<=2", "--out", str(tmp_path / "adv")]
    )
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("epcsim: error: ") and len(r.stderr.strip().splitlines()) == 1
    assert "host.epc" in r.stderr
    assert not (tmp_path / "adv").exists() and synthetic == {}


def test_a_curve_not_monotone_is_said(tmp_path, monkeypatch):
    from _advise import P

    def bumpy(t, p, s):
        return 1.0 if t == "/b" or 10 <= p["/a"] < 20 or p["/a"] >= 30 else 3.0

    monkeypatch.setattr(epcsim.advise, "_default_evaluator", lambda *a: Synthetic(bumpy))
    r = invoke(tmp_path, "--slo", "slowdown<=2", "--resolution", "1page", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    row = next(ln for ln in r.output.splitlines() if ln.startswith("│ /a "))
    assert [c.strip() for c in row.strip("│").split("│")][2:] == ["40KiB", "1.00", "+50.0%", "no"]
    assert (
        "/a: not monotone (round 1): the SLOs are met at 64KiB but violated at 96KiB; every "
        "limit below 64KiB was evaluated (15 limits) and the smallest meeting the SLOs chosen"
    ) in r.output
    assert json.loads((tmp_path / "o" / "advise.json").read_text())["limits"]["/a"] == 10 * P


def test_interrupted_is_exit_130_runs_kept(tmp_path, monkeypatch):
    def stop(assignments):
        raise KeyboardInterrupt

    monkeypatch.setattr(epcsim.advise, "_default_evaluator", lambda *a: stop)
    out = tmp_path / "o"
    r = invoke(tmp_path, "--slo", "slowdown<=2", "--out", out)
    assert r.exit_code == 130
    assert (
        r.stderr == f"interrupted; the runs done are in {out}/points (advise resumes from them)\n"
    )
    assert not (out / "advise.json").exists()


def test_a_run_cut_short_by_host_duration_says_so(tmp_path: Path) -> None:
    """Real runs (the default evaluator): workloads longer than host.duration end
    "running"; every limit is a violation, and the reason names the cause and the fix."""
    scenario = tmp_path / "two.toml"
    scenario.write_text(TWO)
    out = tmp_path / "adv"
    args = ["advise", str(scenario), "--slo", "slowdown<=100", "--resolution", "64KiB"]
    r = runner.invoke(app, [*args, "--set", "host.duration=20us", "--out", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads((out / "advise.json").read_text())
    assert data["feasible"] is False
    whys = {p["why_not"] for t in data["tenants"].values() for p in t["curve"]}
    assert whys == {
        f"enclave {e} was still running at host.duration (seed {data['seeds'][0]}): "
        "raise host.duration (--set) or shorten its workload"
        for e in ("ea", "eb")
    }
