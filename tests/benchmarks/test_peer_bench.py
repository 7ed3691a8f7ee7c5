"""benchmarks/peer.py: its argument checks (the throughput rows need libCacheSim and
minutes of work: their numbers go to docs/BENCHMARKS.md)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from _bench import run_bench


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return run_bench("peer.py", *args, timeout=timeout)


def test_a_missing_real_trace_is_refused_not_skipped(tmp_path: Path) -> None:
    """A row asked for is never dropped: without the trace file peer.py stops before
    any work (exit 2), naming the path."""
    missing = tmp_path / "none.bin"
    proc = _run("--traces", "zipf,real", "--real", str(missing))
    assert proc.returncode == 2
    assert (
        f"--real {missing}: no such trace file (give its path with --real, or leave "
        f"'real' out of --traces)"
    ) in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--traces", "zipf,nope"), "unknown trace 'nope'"),
        (("--accesses", "0"), "--accesses"),
        (("--repeat", "0"), "--repeat"),
        (("--insert", "referenced,nope"), "unknown pairing 'nope'"),
        (("--insert", ","), "argument --insert: no pairing given"),
        (("--traces", " , "), "argument --traces: no trace given"),
    ],
)
def test_bad_arguments_are_refused(args: tuple[str, ...], message: str) -> None:
    proc = _run(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
