"""benchmarks/instructions.py: its argument checks, and (slow, with valgrind) a small
row counted for one tree.  No count is asserted beyond being positive: the counts go
to docs/BENCHMARKS.md."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from _bench import ROW_AND_SIZE_ERRORS, load_bench, run_bench


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return run_bench("instructions.py", *args, timeout=timeout)


@pytest.mark.parametrize(("args", "message"), ROW_AND_SIZE_ERRORS)
def test_bad_arguments_are_refused(args: tuple[str, ...], message: str) -> None:
    proc = _run(*args)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_a_tree_without_epcsim_is_refused(tmp_path: Path) -> None:
    proc = _run("--src", str(tmp_path))
    assert proc.returncode == 2
    assert f"--src: {tmp_path} holds no epcsim package" in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_a_small_loop_row_is_counted() -> None:
    proc = _run("--rows", "loop", "--accesses", "2000", timeout=1800)
    assert proc.returncode == 0, proc.stderr
    row = proc.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"loop\s+\S+\s+2,000\s+([\d,]+)\s+([\d.]+)", row)
    assert m, row
    assert int(m.group(1).replace(",", "")) > 0


def _module():
    """benchmarks/instructions.py as a module (its helpers, not its main())."""
    return load_bench("instructions.py")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--lines", "-1"), "--lines must be >= 0"),
        (("--lines", "5", "--src", "src", "--src", "src"), "--lines: give one --src tree"),
    ],
)
def test_bad_lines_arguments_are_refused(args: tuple[str, ...], message: str) -> None:
    proc = _run(*args)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_self_costs_reads_compressed_positions_and_leaves_out_calls(tmp_path: Path) -> None:
    out = tmp_path / "callgrind.out"
    out.write_text(
        "positions: instr line\n"
        "events: Ir\n"
        "fn=(1) f\n"
        "0x1000 10 5\n"
        "+2 +1 3\n"
        "* * 2\n"
        "calls=1 0x2000 20\n"
        "+4 * 100\n"
        "+1 -1 7\n"
        "-3 * 1\n"
    )
    assert _module().self_costs(out) == {0x1000: 5, 0x1002: 5, 0x1007: 7, 0x1004: 1}


def test_lines_tree_moves_each_compiled_module_by_its_stride(tmp_path: Path) -> None:
    mod = _module()
    src = Path(__file__).resolve().parents[2] / "src"
    names = mod.lines_tree(src, tmp_path)
    assert names == sorted(p.stem for p in (src / "epcsim" / "compiled").glob("*.py"))
    for k, name in enumerate(names):
        moved = (tmp_path / "epcsim" / "compiled" / f"{name}.py").read_text()
        original = (src / "epcsim" / "compiled" / f"{name}.py").read_text()
        assert moved == "\n" * ((k + 1) * mod.LINE_STRIDE) + original
    assert (tmp_path / "epcsim" / "kernel" / "encl.py").read_text() == (
        src / "epcsim" / "kernel" / "encl.py"
    ).read_text()


@pytest.mark.slow
@pytest.mark.skipif(
    not all(shutil.which(t) for t in ("valgrind", "addr2line", "nm", "objdump")),
    reason="valgrind or binutils not installed",
)
def test_lines_attributes_a_small_loop_row_to_the_core_functions() -> None:
    proc = _run("--rows", "loop", "--accesses", "2000", "--lines", "5", timeout=1800)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert re.search(r"^loop: run_core [\d,]+ instructions, [\d.]+ per access", out, re.M), out
    assert re.search(r"^\s+[\d.]+\s+[\d.]+%\s+reclaim\._sgx_reclaim_isolate$", out, re.M), out
    assert "loop: the 5 lines with the most" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--time",), "--time needs --lines N"),
        (("--lines", "5", "--time", "--time-runs", "0"), "--time-runs must be >= 1"),
    ],
)
def test_bad_time_arguments_are_refused(args: tuple[str, ...], message: str) -> None:
    proc = _run(*args)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_perf_samples_counts_each_address_and_leaves_out_other_lines() -> None:
    text = "    7f00001000\n7f00001000\n  7f00001008\n\nperf: some warning\n7f00001000\n"
    assert _module().perf_samples(text) == {0x7F00001000: 3, 0x7F00001008: 1}


def _perf_can_sample(tmp: Path) -> bool:
    """perf is installed and may sample this user's processes (perf_event_paranoid)."""
    if shutil.which("perf") is None:
        return False
    out = tmp / "probe.data"
    cmd = ["perf", "record", "-q", "-e", "cpu-clock", "-o", str(out), "--", "true"]
    return subprocess.run(cmd, capture_output=True).returncode == 0 and out.exists()


@pytest.mark.slow
@pytest.mark.skipif(
    not all(shutil.which(t) for t in ("valgrind", "addr2line", "nm", "objdump")),
    reason="valgrind or binutils not installed",
)
def test_time_puts_the_samples_beside_the_instructions(tmp_path: Path) -> None:
    if not _perf_can_sample(tmp_path):
        pytest.skip("perf cannot sample here")
    proc = _run(
        "--rows", "loop", "--accesses", "20000", "--lines", "5", "--time", "--time-runs", "20",
        timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    m = re.search(r"^loop: ([\d,]+) samples inside run_core", out, re.M)
    assert m and int(m.group(1).replace(",", "")) > 0, out
    # per access, share of the instructions, share of the samples, the function
    assert re.search(r"^\s+[\d.]+\s+[\d.]+%\s+[\d.]+%\s+reclaim\._sgx_reclaim_isolate$", out, re.M)
    assert "loop: the 5 lines with the most samples" in out
