"""benchmarks/instructions.py: its argument checks, and (slow, with valgrind) a small
row counted for one tree.  No count is asserted beyond being positive: the counts go
to docs/BENCHMARKS.md."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from _bench import ROW_AND_SIZE_ERRORS, run_bench


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
