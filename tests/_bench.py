"""Running a script of ``benchmarks/`` from the tests: a subprocess with this
checkout's ``src`` first on ``PYTHONPATH``, its output captured."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]

#: the argument errors benchmarks/instructions.py and benchmarks/walltime.py share
ROW_AND_SIZE_ERRORS = [
    (("--rows", "nope"), "--rows: expected some of loop, uniform, zipf, real, got 'nope'"),
    (("--rows", ","), "--rows: expected some of loop, uniform, zipf, real, got ','"),
    (("--accesses", "10"), "--accesses must be >= 1000 and --div >= 2"),
    (("--div", "1"), "--accesses must be >= 1000 and --div >= 2"),
]


def run_bench(script: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``python benchmarks/SCRIPT ARGS`` with this checkout's ``src`` importable."""
    env = dict(os.environ)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def load_bench(script: str) -> ModuleType:
    """``benchmarks/SCRIPT`` as a module (its helpers, not its main())."""
    name = Path(script).stem + "_bench"
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / script)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
