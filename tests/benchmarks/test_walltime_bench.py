"""benchmarks/walltime.py: its argument checks, and a small row timed for one tree in
one round (no time is asserted: the times go to docs/BENCHMARKS.md)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from _bench import ROW_AND_SIZE_ERRORS, run_bench


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return run_bench("walltime.py", *args, timeout=timeout)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        *ROW_AND_SIZE_ERRORS,
        (("--rounds", "0"), "--rounds and --repeat must be >= 1"),
        (("--repeat", "0"), "--rounds and --repeat must be >= 1"),
    ],
)
def test_bad_arguments_are_refused(args: tuple[str, ...], message: str) -> None:
    proc = _run(*args)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_a_tree_without_epcsim_or_a_missing_trace_is_refused(tmp_path: Path) -> None:
    proc = _run("--rows", "loop", "--src", str(tmp_path))
    assert proc.returncode == 2
    assert f"--src: {tmp_path} holds no epcsim package" in proc.stderr
    missing = tmp_path / "none.bin"
    proc = _run("--rows", "real", "--real", str(missing))
    assert proc.returncode == 2
    assert f"--real: {missing} is not a file" in proc.stderr


def test_a_small_loop_row_is_timed(tmp_path: Path) -> None:
    args = ("--rows", "loop", "--accesses", "2000", "--rounds", "2", "--repeat", "1")
    proc = _run(*args, "--work", str(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [re.sub(r"[\d.]+ s$", "T s", x) for x in lines[:2]] == [
        "loop     round 1: T s",
        "loop     round 2: T s",
    ]
    m = re.fullmatch(r"loop\s+\S+\s+2,000 accesses  best ([\d.]+) s\s+[\d.]+M acc/s", lines[2])
    assert m and float(m.group(1)) > 0, lines[2]
    assert len(lines) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loop-2000.npy"]


def test_phases_split_the_best_run(tmp_path: Path) -> None:
    """--phases: one line per tree splitting its best run; the phases are named in
    order, the core's share is positive and the shares add up to the whole run (here
    with --unref: the row's scenario with fault_unreferenced runs too)."""
    args = ("--rows", "loop", "--accesses", "2000", "--rounds", "1", "--repeat", "1")
    proc = _run(*args, "--phases", "--unref", "--work", str(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3, lines
    assert re.fullmatch(r"loop\s+\S+\s+2,000 accesses  best [\d.]+ s\s+[\d.]+M acc/s", lines[1])
    head, _, cells = lines[2].partition(" ns/access: ")
    assert head.split()[0] == "loop"
    got = re.findall(r"([a-z-]+) (-?[\d.]+) \((-?[\d.]+)%\)", cells)
    assert [name for name, _, _ in got] == [
        "core",
        "latencies",
        "write-back",
        "numbering",
        "refills",
        "percentiles",
        "rest",
    ]
    shares = {name: float(share) for name, _, share in got}
    assert shares["core"] > 0 and shares["numbering"] > 0
    assert abs(sum(shares.values()) - 100) < 0.5
