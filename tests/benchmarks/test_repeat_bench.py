"""benchmarks/repeat.py: its argument checks, its verdict on a resident set that grows,
and a small row run three times in one process (no time is asserted)."""

from __future__ import annotations

import re
import subprocess

import pytest
from _bench import load_bench, run_bench

MB = 1 << 20


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return run_bench("repeat.py", *args, timeout=timeout)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--row", "nope"), "argument --row: invalid choice: 'nope'"),
        (("--accesses", "0"), "--accesses and --div must be >= 1"),
        (("--div", "0"), "--accesses and --div must be >= 1"),
        (("--runs", "1"), "--runs must be >= 2 (the growth is counted from the second run)"),
        (("--max-growth-mb", "-1"), "--max-growth-mb must be >= 0"),
        (
            ("--row", "real", "--real", "/nonexistent/t.bin"),
            "--real: /nonexistent/t.bin is not a file",
        ),
    ],
)
def test_bad_arguments_are_refused(args: tuple[str, ...], message: str) -> None:
    proc = _run(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stdout == ""


def test_the_verdict_counts_the_growth_from_the_second_run() -> None:
    """The first run loads the compiled code: the growth is the last run's resident set
    less the second's; over the limit the verdict fails."""
    verdict = load_bench("repeat.py").verdict
    walls = [1.5, 0.8, 0.75, 1.2]
    line, ok = verdict([300 * MB, 400 * MB, 410 * MB, 464 * MB], walls, 64)
    assert ok
    assert line == (
        "RSS after run 2: 400 MB, after run 4: 464 MB: growth +64 MB (limit 64 MB); "
        "wall: best 0.750 s, slowest after the first 1.200 s (x1.60)"
    )
    line, ok = verdict([300 * MB, 400 * MB, 410 * MB, 465 * MB], walls, 64)
    assert not ok
    assert "growth +65 MB (limit 64 MB)" in line
    line, ok = verdict([300 * MB, 400 * MB, 400 * MB - MB // 3], walls[:3], 0)
    assert ok
    assert "growth +0 MB (limit 0 MB)" in line


def test_a_small_row_run_three_times_stays_flat() -> None:
    proc = _run("--row", "loop", "--accesses", "20000", "--runs", "3", timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 4
    for k, x in enumerate(lines[:3], 1):
        assert re.fullmatch(rf"run {k:2d}: [\d.]+ s  RSS [\d,]+ MB", x), x
    assert re.fullmatch(
        r"RSS after run 2: [\d,]+ MB, after run 3: [\d,]+ MB: growth [+-][\d,]+ MB "
        r"\(limit 64 MB\); wall: best [\d.]+ s, slowest after the first [\d.]+ s \(x[\d.]+\)",
        lines[3],
    ), lines[3]
