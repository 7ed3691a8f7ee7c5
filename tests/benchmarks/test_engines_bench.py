"""A smoke run of benchmarks/engines.py (issue 15): it runs, compares both engines'
outputs and ends with its summary line.  No timing is asserted (speed is measured in
docs/BENCHMARKS.md, never in the tests)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks/engines.py"


def test_quick_row_runs_and_ends_with_the_worst_speed_up() -> None:
    env = dict(os.environ)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--rows", "nested-fairness", "--repeat", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert re.fullmatch(r"worst speed-up \d+\.\d× \(nested-fairness\)", lines[-1]), lines[-1]
    # the table names the engine the default run used
    assert any(re.match(r"nested-fairness\s.*\syes\s+(compiled|reference)", ln) for ln in lines)


def test_unknown_row_is_refused() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--rows", "nope"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "unknown row 'nope'" in proc.stderr
