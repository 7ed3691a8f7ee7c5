"""The ``epcsim`` command line: exit statuses, outputs, and one-line errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _scenarios import BUSY, tiny
from rich.console import Console
from typer.testing import CliRunner

import epcsim
from epcsim.cli import LazyProgress, app, default_out
from epcsim.sim.progress import SimProgress

TINY = tiny(20000, expect_success=True)

runner = CliRunner()


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def write(tmp_path: Path, text: str, name: str = "tiny.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def assert_no_crash(r) -> None:
    """A clean exit: no exception escaped the command, no traceback printed."""
    assert not isinstance(r.exception, Exception), r.exception
    assert "Traceback" not in r.output


@pytest.fixture(scope="module")
def passed_run(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("run")
    scenario = write(d, TINY)
    out = d / "out"
    r = invoke("run", scenario, "--out", out)
    return r, out


# --- run ----------------------------------------------------------------------------------


def test_run_passes_writes_run_directory(passed_run) -> None:
    r, out = passed_run
    assert_no_crash(r)
    assert r.exit_code == 0, r.output
    for f in ("summary.json", "timeseries.parquet", "fault_latency.npy", "report.html"):
        assert (out / f).is_file(), f
    assert not (out / "INCOMPLETE").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scenario"] == "tiny"
    assert summary["passed"] is True
    lines = r.stdout.strip().splitlines()
    assert lines[-1] == "PASS: all expectations"
    assert "PASS: e succeeds" in lines
    assert "cost-model estimates" in r.stdout
    assert f"wrote {out}" in r.stdout
    # the tables: the limited cgroup and the enclave with its outcome
    assert "/a" in r.stdout and "1MiB" in r.stdout
    assert "success" in r.stdout
    assert r.stderr == ""


def test_run_expectation_fails_exit_1(tmp_path: Path) -> None:
    scenario = write(tmp_path, TINY.replace('outcome = "success"', 'outcome = "failure"'))
    r = invoke("run", scenario, "--out", tmp_path / "out")
    assert_no_crash(r)
    assert r.exit_code == 1, r.output
    lines = r.stdout.strip().splitlines()
    assert any(line.startswith("FAIL: e succeeds: ") for line in lines)
    assert lines[-1].startswith("FAIL: 1 of 1 expectations failed")
    assert (tmp_path / "out" / "summary.json").is_file()
    assert not (tmp_path / "out" / "INCOMPLETE").exists()


def test_seed_override_quiet_and_default_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = write(tmp_path, TINY)
    monkeypatch.chdir(tmp_path)
    r = invoke("run", scenario, "--seed", "7", "--quiet")
    assert_no_crash(r)
    assert r.exit_code == 0, r.output
    assert r.stdout == ""  # --quiet: nothing unless an expectation fails
    digest = epcsim.load_scenario(scenario).digest()
    out = tmp_path / default_out("tiny", 7, digest)
    assert out == tmp_path / "epcsim-runs" / f"tiny-seed7-{digest[:12]}"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 7


def test_refused_runtime_write_is_recorded_not_an_error(tmp_path: Path) -> None:
    text = TINY + '\n[[at]]\ntime = "1ms"\nrmdir = "/a"\n'
    scenario = write(tmp_path, text)
    out = tmp_path / "out"
    r = invoke("run", scenario, "--out", out)
    assert_no_crash(r)
    assert r.exit_code == 0, r.output
    ops = json.loads((out / "summary.json").read_text())["ops"]
    assert [op["op"] for op in ops] == ["rmdir /a"]
    assert ops[0]["result"].startswith("EBUSY")
    assert "EBUSY" in r.stdout


def test_builtin_kselftest_small_capacity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = invoke("run", "builtin:kselftest", "--set", "host.epc=8MiB", "--quiet")
    assert_no_crash(r)
    assert r.exit_code == 0, r.output
    digest = epcsim.load_scenario("builtin:kselftest", overrides=["host.epc=8MiB"]).digest()
    run_dir = tmp_path / f"epcsim-runs/kselftest-seed1-{digest[:12]}"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["capacity_bytes"] == 8 << 20
    assert len(summary["expectations"]) == 7


def test_interrupt_leaves_the_previous_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C: exit 130, the directory keeps the previous run (or does not appear)."""
    scenario = write(tmp_path, TINY)
    out = tmp_path / "out"
    assert invoke("run", scenario, "--out", out, "--engine", "reference").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("epcsim.api.simulate", interrupted)
    r = invoke("run", scenario, "--out", out)
    assert r.exit_code == 130, r.output
    assert r.stderr == f"interrupted; {out} was not written (a previous run there is unchanged)\n"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    r = invoke("run", scenario, "--out", tmp_path / "new")
    assert r.exit_code == 130, r.output
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".new.lock",
        ".out.lock",
        "out",
        "tiny.toml",
    ]


def test_out_is_a_file(tmp_path: Path) -> None:
    scenario = write(tmp_path, TINY)
    f = tmp_path / "afile"
    f.write_text("x")
    r = invoke("run", scenario, "--out", f)
    assert_no_crash(r)
    assert r.exit_code == 2
    assert r.stderr.startswith("epcsim: error: ")
    assert "not a directory" in r.stderr


# --- bad input: exit 2, one line naming file/table/field ----------------------------------

BAD_TOML = [
    pytest.param(
        TINY.replace('duration = "1s"', 'duration = "1s"\nbogus = 1'),
        ["tiny.toml", "host.bogus", "unknown key"],
        id="unknown-key",
    ),
    pytest.param(
        TINY.replace('duration = "1s"', 'duration = "1s"\ncpus = "four"'),
        ["tiny.toml", "host.cpus", "four"],
        id="wrong-type",
    ),
    pytest.param(
        TINY.replace('size = "2MiB"', 'size = "64XB"'),
        ["tiny.toml", "enclave[0].size", "64XB"],
        id="size-unit",
    ),
    pytest.param(
        TINY.replace('cgroup = "/a"', 'cgroup = "/nope"'),
        ["tiny.toml", "enclave[0].cgroup", "/nope", "does not exist"],
        id="cgroup-missing",
    ),
    pytest.param(
        TINY + '\n[[at]]\ntime = "1ms"\nwrite = { path = "/a/misc.max", value = "sgx_epc -1" }\n',
        ["tiny.toml", "at[0].write.value", "sgx_epc -1", "refuses"],
        id="misc-max-refused",
    ),
    pytest.param(
        TINY.replace("[host]", "[host\n"),
        ["tiny.toml", "not valid TOML"],
        id="toml-syntax",
    ),
]


@pytest.mark.parametrize("text, fragments", BAD_TOML)
@pytest.mark.parametrize("command", ["run", "validate"])
def test_bad_scenario_exit_2(tmp_path: Path, command: str, text: str, fragments) -> None:
    scenario = write(tmp_path, text)
    extra = ["--out", tmp_path / "out"] if command == "run" else []
    r = invoke(command, scenario, *extra)
    assert_no_crash(r)
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("epcsim: error: ")
    assert len(r.stderr.strip().splitlines()) == 1
    for frag in fragments:
        assert frag in r.stderr, (frag, r.stderr)
    assert not (tmp_path / "out").exists()  # nothing was run


@pytest.mark.parametrize(
    "args, fragments",
    [
        pytest.param(["{tmp}/missing.toml"], ["missing.toml", "no such file"], id="missing-file"),
        pytest.param(["{tiny}", "--set", "hostepc"], ["--set", "KEY=VALUE"], id="bad-set"),
        pytest.param(
            ["{tiny}", "--set", "host.bogus=1"], ["host.bogus", "unknown key"], id="set-unknown"
        ),
        pytest.param(["{tiny}", "--set", "host.epc=64XB"], ["host.epc", "64XB"], id="set-bad-size"),
        pytest.param(["builtin:nope"], ["builtin:nope", "kselftest"], id="unknown-builtin"),
    ],
)
def test_bad_arguments_exit_2(tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    tiny = write(tmp_path, TINY)
    argv = [a.format(tmp=tmp_path, tiny=tiny) for a in args]
    r = invoke("run", *argv, "--out", tmp_path / "out")
    assert_no_crash(r)
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("epcsim: error: ")
    for frag in fragments:
        assert frag in r.stderr, (frag, r.stderr)
    assert not (tmp_path / "out").exists()


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    tiny = write(tmp_path, TINY)
    for argv in (["run"], ["run", str(tiny), "--seed", "x"], ["run", str(tiny), "--seed", "-1"]):
        r = invoke(*argv)
        assert r.exit_code == 2, (argv, r.output)
        assert "Traceback" not in r.output


# --- scenarios, validate, report, version -------------------------------------------------


def test_scenarios_lists_builtins() -> None:
    r = invoke("scenarios")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert any(line.split()[0] == "kselftest" and len(line.split()) > 1 for line in lines)
    assert len(lines) == len(epcsim.list_builtins())


def test_validate_ok(tmp_path: Path) -> None:
    scenario = write(tmp_path, TINY)
    digest = epcsim.load_scenario(scenario).digest()
    r = invoke("validate", scenario)
    assert r.exit_code == 0, r.output
    assert r.stdout == f"ok: tiny ({digest[:12]})\n"
    r2 = invoke("validate", scenario, "--set", "host.epc=8MiB")
    assert r2.exit_code == 0, r2.output
    assert r2.stdout.startswith("ok: tiny (") and r2.stdout != r.stdout
    r3 = invoke("validate", "builtin:kselftest")
    assert r3.exit_code == 0 and r3.stdout.startswith("ok: kselftest (")


def test_report_rejects_non_run_directory(tmp_path: Path) -> None:
    r = invoke("report", tmp_path)
    assert_no_crash(r)
    assert r.exit_code == 2
    assert r.stderr.startswith("epcsim: error: ")
    assert "not a run directory" in r.stderr and "summary.json" in r.stderr
    r = invoke("report", tmp_path / "nope")
    assert r.exit_code == 2 and "no such directory" in r.stderr
    write(tmp_path, TINY)
    r = invoke("report", tmp_path / "tiny.toml")
    assert r.exit_code == 2 and "not a directory" in r.stderr


def test_report_rebuilds(passed_run) -> None:
    _, out = passed_run
    html = out / "report.html"
    html.unlink(missing_ok=True)
    r = invoke("report", out)
    assert_no_crash(r)
    assert r.exit_code == 0, r.output
    assert html.is_file()
    assert "report.html" in r.stdout


def test_version() -> None:
    r = invoke("--version")
    assert r.exit_code == 0
    assert r.stdout == f"epcsim {epcsim.__version__}\n"


def test_version_subprocess() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "epcsim.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"epcsim {epcsim.__version__}\n"


def test_bad_input_subprocess(tmp_path: Path) -> None:
    """The real entry point (``python -m epcsim``): one line on stderr, exit 2."""
    p = subprocess.run(
        [sys.executable, "-m", "epcsim", "validate", str(tmp_path / "missing.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2
    assert p.stdout == ""
    assert p.stderr.startswith("epcsim: error: ") and "no such file" in p.stderr
    assert "Traceback" not in p.stderr


# --- the lazy progress bar ----------------------------------------------------------------


def _terminal() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=True, width=100), buf


def sp(done: int, total: int | None, now: int = 0, limit: int = 10**9) -> SimProgress:
    return SimProgress(now, limit, done, total, "accesses")


def test_progress_not_shown_for_short_runs() -> None:
    console, buf = _terminal()
    p = LazyProgress(delay=60, console=console)
    p.begin(1_000_000_000)
    for t in range(0, 1_000_000_000, 5_000_000):
        p(sp(t // 1000, 10**6, t))
    p.close()
    assert not p.shown
    assert buf.getvalue() == ""


def test_progress_shown_after_delay_from_callback() -> None:
    console, buf = _terminal()
    p = LazyProgress(delay=0, console=console)
    p(sp(250_000, 1_000_000, 250_000_000))
    assert p.shown
    assert p.describe() == ("simulating", 1_000_000, 250_000, "250,000 / 1,000,000 accesses")
    p(sp(500_000, 1_000_000, 500_000_000))
    p.close()
    p.close()  # idempotent
    assert "500,000 / 1,000,000 accesses" in buf.getvalue()
    assert "eta" in buf.getvalue()


def test_progress_shown_by_timer_without_callbacks() -> None:
    console, _ = _terminal()
    p = LazyProgress(delay=0.01, console=console)
    p.begin(10**9)
    deadline = time.monotonic() + 5
    while not p.shown and time.monotonic() < deadline:
        time.sleep(0.01)
    # nothing reported yet: no claim about the virtual time or the work
    assert p.describe() == ("simulating", None, 0, "")
    p.close()
    assert p.shown


def test_progress_disabled() -> None:
    console, buf = _terminal()
    p = LazyProgress(enabled=False, delay=0, console=console)
    p.begin(10**9)
    p(sp(1, 10))
    p.close()
    assert not p.shown and buf.getvalue() == ""


def test_progress_measures_work_not_virtual_time() -> None:
    """The bar measured virtual time against host.duration (``784ms / 600s``, about 0%
    throughout): it measures the work done against the work to do."""
    console, _ = _terminal()
    p = LazyProgress(delay=0, console=console)
    p(SimProgress(784_000_000, 600 * 10**9, 3, 8, "selftest processes"))
    assert p.describe() == ("simulating", 8, 3, "3 / 8 selftest processes")
    p(SimProgress(784_000_000, 600 * 10**9, 0, 1, "selftest processes"))
    assert p.describe()[3] == "0 / 1 selftest process"
    # the work to do is not known (a duration-bound workload): virtual time, said so
    p(SimProgress(784_000_000, 600 * 10**9, 5000, None, "accesses"))
    assert p.describe() == (
        "simulating",
        None,
        0,
        "virtual time 784ms / 600s (the work to do is not known in advance)",
    )
    p.close()


def test_progress_says_compiling_until_work_is_done() -> None:
    """The first compiled run compiles for 30-40 s behind a bar that said "simulating"."""
    from epcsim.cli import COMPILING_LABEL

    assert COMPILING_LABEL == "compiling the engine (first run only)"
    console, buf = _terminal()
    p = LazyProgress(delay=0, console=console, compiling=True)
    p(sp(0, 1000))
    assert p.describe()[0] == COMPILING_LABEL
    assert COMPILING_LABEL in buf.getvalue()
    p(sp(10, 1000))
    assert p.describe()[0] == "simulating"
    p(sp(10, 1000))
    assert p.describe()[0] == "simulating"
    p.close()


def test_will_compile_only_when_the_cache_is_cold(monkeypatch: pytest.MonkeyPatch) -> None:
    import epcsim.sim.progress
    from epcsim.cli import _will_compile
    from epcsim.scenario import load_scenario

    sc = load_scenario(TINY)
    kself = load_scenario("builtin:mixed-priority")  # not run by the compiled engine
    monkeypatch.setattr(epcsim.sim.progress, "compiled_core_cached", lambda: False)
    assert _will_compile(sc, "auto") and _will_compile(sc, "batched")
    assert not _will_compile(sc, "reference") and not _will_compile(kself, "auto")
    monkeypatch.setattr(epcsim.sim.progress, "compiled_core_cached", lambda: True)
    assert not _will_compile(sc, "auto")


def test_compiled_core_cached_reads_numbas_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cold: numba's index of the core's cache has no entry for the current source."""
    from epcsim.compiled.loop import run_core
    from epcsim.sim.progress import compiled_core_cached

    cache_file = run_core._cache._cache_file
    monkeypatch.setattr(cache_file, "_load_index", lambda: {})
    assert compiled_core_cached() is False
    monkeypatch.setattr(cache_file, "_load_index", lambda: {("sig", "target"): "data"})
    assert compiled_core_cached() is True

    def moved() -> dict:
        raise AttributeError("numba internals moved")

    monkeypatch.setattr(cache_file, "_load_index", moved)
    assert compiled_core_cached() is True  # cannot tell: do not claim a compile


@pytest.mark.parametrize(
    "argv",
    [[], ["run"], ["scenarios"], ["validate"], ["report"], ["mrc"], ["trace"],
     ["trace", "info"], ["trace", "convert"]],
    ids=lambda a: " ".join(a) or "epcsim",
)  # fmt: skip
def test_help_has_no_bool_metavar_and_no_emoji(argv: list[str]) -> None:
    """Typer's rich help showed ``<bool>`` after every flag (``--help`` included) and
    rich turned ``:B:`` in ``A:B:N`` into an emoji."""
    r = runner.invoke(app, [*argv, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "--help" in r.stdout
    assert "<bool>" not in r.stdout
    emoji = [c for c in r.stdout if ord(c) >= 0x1F000 or 0x2600 <= ord(c) < 0x2800]
    assert emoji == [], emoji
    help_line = next(x for x in r.stdout.splitlines() if "--help" in x)
    assert help_line.split()[2:4] == ["Show", "this"], help_line


# --- run directories (docs/OUTPUTS.md) ----------------------------------------------------


def one_error_line(r) -> str:
    """The single ``epcsim: error:`` line of an exit-2 result."""
    assert_no_crash(r)
    assert r.exit_code == 2, r.output
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("epcsim: error: "), r.stderr
    return lines[0]


def test_out_holding_other_files_is_refused(tmp_path: Path) -> None:
    """``--out DIR`` where DIR is not an epcsim run used to write beside its files."""
    scenario = write(tmp_path, TINY)
    d = tmp_path / "mine"
    d.mkdir()
    (d / "thesis.tex").write_text("keep")
    for extra in ([], ["--force"]):
        r = invoke("run", scenario, "--out", d, *extra)
        assert one_error_line(r) == (
            f"epcsim: error: out {d}: not an epcsim run directory (it holds files and no "
            "run.json); name a new or empty directory"
        )
    assert [p.name for p in d.iterdir()] == ["thesis.tex"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "tiny.toml"]


def test_out_empty_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--out ''`` used to spray the run's files into the current directory."""
    scenario = write(tmp_path, TINY)
    monkeypatch.chdir(tmp_path)
    r = invoke("run", scenario, "--out", "")
    assert one_error_line(r) == "epcsim: error: out: empty path: name the run directory"
    r = invoke("run", scenario, "--out", ".")
    assert one_error_line(r) == (
        "epcsim: error: out .: is the current directory or contains it; "
        "name a directory for the run"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.toml"]


def test_same_run_twice_and_set_gets_its_own_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's main job twice works; ``--set`` no longer replaces the default run."""
    scenario = write(tmp_path, TINY)
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        r = invoke("run", scenario, "--quiet")
        assert_no_crash(r)
        assert r.exit_code == 0, r.output
    r = invoke("run", scenario, "--quiet", "--set", "host.epc=8MiB")
    assert r.exit_code == 0, r.output
    runs = sorted(p.name for p in (tmp_path / "epcsim-runs").iterdir() if p.is_dir())
    d1 = epcsim.load_scenario(scenario).digest()[:12]
    d2 = epcsim.load_scenario(scenario, overrides=["host.epc=8MiB"]).digest()[:12]
    assert runs == sorted([f"tiny-seed0-{d1}", f"tiny-seed0-{d2}"])
    big = json.loads((tmp_path / "epcsim-runs" / f"tiny-seed0-{d2}" / "summary.json").read_text())
    assert big["capacity_bytes"] == 8 << 20


def test_replacing_a_different_run_needs_force(tmp_path: Path) -> None:
    scenario = write(tmp_path, TINY)
    out = tmp_path / "out"
    assert invoke("run", scenario, "--out", out, "--quiet").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    digest = epcsim.load_scenario(scenario).digest()
    r = invoke("run", scenario, "--out", out, "--seed", "5")
    assert one_error_line(r) == (
        f"epcsim: error: out {out}: holds a different run (scenario tiny ({digest[:12]}), "
        "seed 0); replace it with --force (force=True)"
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    r = invoke("run", scenario, "--out", out, "--seed", "5", "--force", "--quiet")
    assert r.exit_code == 0, r.output
    assert json.loads((out / "run.json").read_text())["seed"] == 5


def test_concurrent_run_into_the_same_directory_is_refused(tmp_path: Path) -> None:
    """The lock a running ``epcsim run`` holds (held here in-process) makes a second one
    fail before it writes anything."""
    import fcntl
    import os

    from epcsim.rundir import lock_path

    scenario = write(tmp_path, TINY)
    out = tmp_path / "out"
    lock = lock_path(out)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = invoke("run", scenario, "--out", out)
    finally:
        os.close(fd)
    assert one_error_line(r) == (
        f"epcsim: error: out {out}: another epcsim run is writing it (it holds {lock}); "
        "wait for it to finish or choose another directory"
    )
    assert not out.exists()


# --- which engine ran -----------------------------------------------------------------


def test_header_names_the_engine(passed_run, tmp_path: Path) -> None:
    r, out = passed_run
    head = r.stdout.splitlines()[1]
    assert head.startswith(
        "engine compiled (auto: the scenario is eligible for the compiled engine), wall "
    ), head
    facts = json.loads((out / "run.json").read_text())
    assert (facts["engine_requested"], facts["engine"]) == ("auto", "compiled")
    scenario = write(tmp_path, TINY)
    r = invoke("run", scenario, "--out", tmp_path / "ref", "--engine", "reference")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[1].startswith("engine reference (requested reference), wall ")
    for f in ("summary.json", "timeseries.parquet", "fault_latency.npy"):
        assert (out / f).read_bytes() == (tmp_path / "ref" / f).read_bytes(), f


@pytest.mark.parametrize("name", ["compiled", "batched"])
def test_engine_compiled_refuses_with_the_reason(tmp_path: Path, name: str) -> None:
    """``--engine batched`` used to fall back to the reference engine with exit 0."""
    out = tmp_path / "out"
    r = invoke("run", "builtin:mixed-priority", "--engine", name, "--out", out)
    assert one_error_line(r) == (
        "epcsim: error: engine compiled: the compiled engine runs no extension "
        "(host.extensions: epcsim.kernel.rfc_knobs); use engine reference or auto"
    )
    assert not out.exists()


def test_engine_compiled_refuses_at_run_time(tmp_path: Path) -> None:
    """Ineligible only once the run is under way (an EADD build under v14): exit 2 with
    the reason, no run directory."""
    busy = write(tmp_path, BUSY, "busy.toml")
    out = tmp_path / "out"
    r = invoke("run", busy, "--engine", "compiled", "--out", out)
    assert one_error_line(r) == (
        "epcsim: error: engine compiled: an EADD build runs under a reclaim design other "
        "than v16 (host.policy); use engine reference or auto"
    )
    assert not out.exists()


def test_run_help_describes_engine_behaviour() -> None:
    r = invoke("run", "--help")
    assert r.exit_code == 0
    text = " ".join(r.stdout.replace("│", " ").split())
    assert "compiled: refuse (exit 2, with the reason) if it cannot run" in text
    assert "--force" in text


# --- report: the run directory is checked before anything is written ---------------------


@pytest.fixture
def run_copy(passed_run, tmp_path: Path) -> Path:
    import shutil

    _, out = passed_run
    d = tmp_path / "copy"
    shutil.copytree(out, d)
    return d


@pytest.mark.parametrize(
    "name, content, message",
    [
        pytest.param("summary.json", b"[1,2]", "expected a JSON object, got list", id="list"),
        pytest.param(
            "summary.json", b'{"scenario":"x"}', "scenario_hash: Field required", id="partial"
        ),
        pytest.param("summary.json", b"{", "cannot read it as JSON: ", id="json"),
        pytest.param(
            "fault_latency.npy", b"\x93NUMPY garbage", "cannot read the fault latencies: ", id="npy"
        ),
        pytest.param("timeseries.parquet", b"nope", "cannot read the time series: ", id="parquet"),
    ],
)
def test_report_bad_run_directory(run_copy: Path, name: str, content: bytes, message: str) -> None:
    """``summary.json`` = ``[1,2]`` used to end in an AttributeError traceback after
    rewriting 3 of 4 figures; ``{"scenario":"x"}`` gave a report without complaint."""
    (run_copy / name).write_bytes(content)
    before = {p.name: p.read_bytes() for p in run_copy.iterdir()}
    r = invoke("report", run_copy)
    line = one_error_line(r)
    assert line.startswith(f"epcsim: error: {run_copy / name}: "), line
    assert message in line
    assert {p.name: p.read_bytes() for p in run_copy.iterdir()} == before


def test_report_time_series_with_its_enclave_column_renamed(run_copy: Path) -> None:
    """The long fuzz profile's case: ``timeseries.parquet`` rewritten with its
    ``enclave`` column renamed (pyarrow drops the schema's version on the way) made
    ``epcsim report`` draw the enclave rows as a cgroup named None (a TypeError
    traceback); now one error naming the file and the column, nothing written."""
    import pyarrow.parquet as pq

    path = run_copy / "timeseries.parquet"
    ts = pq.read_table(path)
    nulls = ts.column("cgroup").null_count
    assert nulls  # the run has enclave rows
    pq.write_table(ts.rename_columns(["x" if n == "enclave" else n for n in ts.column_names]), path)
    before = {p.name: p.read_bytes() for p in run_copy.iterdir()}
    r = invoke("report", run_copy)
    line = one_error_line(r)
    assert line == f"epcsim: error: {path}: column 'cgroup' is null in {nulls} rows"
    assert {p.name: p.read_bytes() for p in run_copy.iterdir()} == before


def test_report_warns_about_an_incomplete_run(run_copy: Path) -> None:
    (run_copy / "INCOMPLETE").write_text("run in progress or interrupted\n")
    r = invoke("report", run_copy)
    assert r.exit_code == 0, r.output
    assert r.stderr == f"note: {run_copy} is marked INCOMPLETE (an interrupted run)\n"
    html = (run_copy / "report.html").read_text()
    engine = "compiled (auto: the scenario is eligible for the compiled engine)"
    assert f'<th scope="row">engine</th><td>{engine}</td>' in html


def test_memory_estimate_warning_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--set host.epc=1TiB` on a trivial scenario warns as ``epcsim: warning: ...`` (one
    line on stderr), not in Python's warning format with a source line."""
    monkeypatch.setenv("EPCSIM_MEMORY_AVAILABLE", "40GiB")
    r = invoke("validate", "builtin:overcommit", "--set", "host.epc=1TiB")
    assert r.exit_code == 0, r.output
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("epcsim: warning: "), r.stderr
    assert "MemoryEstimateWarning" not in r.stderr


STAGGERED = """\
name = "staggered"
[host]
epc = "1MiB"
duration = "50ms"
cpus = 2

[[cgroup]]
path = "/a"
max = "512KiB"

[[enclave]]
name = "early"
cgroup = "/a"
size = "512KiB"
workload = { pattern = "uniform", accesses = 20000 }

[[enclave]]
name = "late"
size = "256KiB"
start = "300us"
workload = { pattern = "uniform", accesses = 5000 }
"""


def test_header_gives_a_mixed_runs_share_of_events(tmp_path: Path) -> None:
    """A tenant starting later: the reference runs some thread steps, the compiled
    engine the rest; the engine line says so with the share run.json's events give."""
    out = tmp_path / "out"
    r = invoke("run", write(tmp_path, STAGGERED), "--out", out)
    assert r.exit_code == 0, r.output
    facts = json.loads((out / "run.json").read_text())
    assert facts["engine"] == "mixed"
    ev = facts["events"]
    n = ev["compiled"] + ev["reference"]
    assert r.stdout.splitlines()[1].startswith(
        "engine mixed (auto: the compiled engine took the enclave threads over when they "
        "became eligible (before: other actors were running when the enclave threads were "
        f"offered); {100 * ev['compiled'] / n:.1f} % of {n:,} events compiled), wall "
    ), r.stdout
