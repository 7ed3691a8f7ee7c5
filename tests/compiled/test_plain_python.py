"""Plain-Python mode: with ``NUMBA_DISABLE_JIT=1`` the compiled core runs as ordinary
Python and must give exactly what it gives compiled -- every integer width is explicit
(epcsim.compiled.bits) -- so the exactness tests pass in that mode too, and their line
coverage of the compiled modules is measured there (numba's machine code has none)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from epcsim.compiled.twins import COMPILED_MODULES

ROOT = Path(__file__).resolve().parents[2]
#: the exactness tests run in plain Python: the fixed scenarios (one enclave and several)
#: of tests/sim/test_engines_exact.py and two hand-offs (an EADD build, a busy
#: reclaimer), the EADD builds the core runs (EADD_BUILDS; not the hand-backs after
#: every 1-60 us): 91.5 % of the compiled modules' lines (measured 2026-12-05).  The slowest
#: hand-offs (a reclaimer releasing an exited enclave, the backing memcg of each page:
#: 220 s together in this mode) and the random draws run compiled in the suite only.
#: The compiled policies (tests/policies/test_compiled_policies.py): v14, v13 and
#: limit-only on the tree and the tenants scenarios.
TESTS = ("tests/sim/test_engines_exact.py", "tests/policies/test_compiled_policies.py")
SELECT = (
    "(fixed_scenarios_match and not policy) or (fixed_multi and not policy)"
    " or eadd_build_then or eadd_builds_run_compiled"
    " or busy_reclaimer or (under_the_policy and (tree or tenants))"
)
EXAMPLES_CAP = "1"
#: the modules numba compiles, as the twin table lists them (the engine side -- take-over,
#: packing, the declared layout, eligibility, the decorators and compile cache -- is not)
INCLUDE = ",".join(f"*/epcsim/compiled/{m.rsplit('.', 1)[1]}.py" for m in COMPILED_MODULES)
MIN_COVERAGE = 90.0


def test_exactness_tests_pass_in_plain_python_and_cover_the_core(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.update(
        NUMBA_DISABLE_JIT="1",
        EPCSIM_EXAMPLES_CAP=EXAMPLES_CAP,
        COVERAGE_FILE=str(tmp_path / ".coverage"),
    )
    run = subprocess.run(
        [sys.executable, "-m", "coverage", "run", f"--include={INCLUDE}",
         "-m", "pytest", "-q", "-x", "-n", "0", "-p", "no:cacheprovider", "-k", SELECT,
         *TESTS],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert " passed" in run.stdout and " failed" not in run.stdout
    report = subprocess.run(
        [sys.executable, "-m", "coverage", "report", "--format=total", "--precision=1"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    total = float(report.stdout.strip())
    assert total >= MIN_COVERAGE, f"line coverage of the compiled modules: {total} %"
