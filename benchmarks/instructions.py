"""Instructions per access of ``epcsim.run`` on scaled-down peer.py rows, counted by
valgrind's callgrind: an exact count where wall time on a shared machine moves by a
third between days (docs/BENCHMARKS.md), for judging a change to the compiled core.

    python benchmarks/instructions.py [--rows loop,uniform,zipf,real] [--accesses 200000]
        [--div 10] [--src SRC [--src SRC ...]]

Each row is peer.py's trace at a tenth of its footprint (loop: 30,000 pages; uniform and
Zipf(0.9): 100,000; real: the shared cloudPhysicsIO trace, once) with an EPC of
1/--div of it, run by peer.py's scenario (one enclave, EAUG on demand, misc.max max).
For each source tree (``--src``, default this checkout's ``src``) and row, a Python
subprocess with ``PYTHONPATH`` at the tree runs the row once outside valgrind (the
compile, into a cache directory per tree), then once more under
``valgrind --tool=callgrind --instr-atstart=no``: one untimed run (the cached code
loaded), then ``callgrind_control -i on`` around one ``epcsim.run`` call.  The count is
every instruction of that call (the core, numpy, Python) over its accesses.

The core is compiled for ``haswell`` (``NUMBA_CPU_NAME``, no extra features): valgrind
runs no AVX-512, and one target makes the counts comparable between machines.  With
several trees the last column is each tree's count over the first's.  Needs valgrind
(``callgrind_control`` beside it); about 15 s per row and tree.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROWS = ("loop", "uniform", "zipf", "real")
#: the synthetic traces' footprints are peer.py's (peer.FOOTPRINT) over this
SCALE = 10

#: the child: build the row's trace and scenario, warm up, count one run
CHILD = r"""
import os, subprocess, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, {bench!r})
import peer
import epcsim

row, n, div, work = {row!r}, {n}, {div}, Path({work!r})
rng = np.random.default_rng(1)
fp = peer.FOOTPRINT.get(row, 0) // {scale}
if row == "loop":
    pages = peer.loop_trace(n, fp)
elif row == "uniform":
    pages = peer.uniform_trace(rng, n, fp)
elif row == "zipf":
    pages = peer.zipf_trace(rng, n, fp)
else:
    pages = peer.real_trace(str(peer.DEFAULT_REAL))
path = work / f"{{row}}.npy"
if not path.exists():
    np.save(path, pages)
sc = peer.scenario(path, peer.footprint_of(pages) // div)
epcsim.run(sc, report=False)
ctl = os.environ.get("EPCSIM_IR_CTL")
if ctl:
    subprocess.run([ctl, "-i", "on", str(os.getpid())], check=True, capture_output=True)
r = epcsim.run(sc, report=False)
if ctl:
    subprocess.run([ctl, "-i", "off", str(os.getpid())], check=True, capture_output=True)
e = r.summary["enclaves"][peer.ENCLAVE]
print("RESULT", e["accesses"], e["faults"], r.engine)
"""


def run_row(src: Path, cache: Path, work: Path, row: str, n: int, div: int) -> tuple[int, int]:
    """(instructions, accesses) of one ``epcsim.run`` of *row* with the tree *src*."""
    code = CHILD.format(
        bench=str(REPO / "benchmarks"),
        row=row,
        n=n,
        div=div,
        work=str(work),
        scale=SCALE,
    )
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(src),
        NUMBA_CACHE_DIR=str(cache),
        NUMBA_CPU_NAME="haswell",
        NUMBA_CPU_FEATURES="",
    )
    env.pop("EPCSIM_IR_CTL", None)
    warm = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if warm.returncode:
        sys.exit(f"instructions.py: {row} with {src} failed:\n{warm.stderr}")
    env["EPCSIM_IR_CTL"] = shutil.which("callgrind_control") or "callgrind_control"
    out = work / f"callgrind.{row}.out"
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-c",
        code,
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"instructions.py: {row} under valgrind failed:\n{r.stderr[-3000:]}")
    result = [line.split() for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    collected = [line for line in r.stderr.splitlines() if "Collected :" in line]
    if not result or not collected:
        sys.exit(f"instructions.py: no count for {row}:\n{r.stderr[-3000:]}")
    accesses = int(result[-1][1])
    return int(collected[-1].split(":")[-1].replace(",", "")), accesses


def parse_rows(ap: argparse.ArgumentParser, text: str) -> list[str]:
    """The rows of ``--rows`` *text* (some of ROWS, comma-separated); an argument error
    otherwise.  Shared with benchmarks/walltime.py."""
    rows = [r.strip() for r in text.split(",") if r.strip()]
    if not rows or any(r not in ROWS for r in rows):
        ap.error(f"--rows: expected some of {', '.join(ROWS)}, got {text!r}")
    return rows


def source_trees(ap: argparse.ArgumentParser, given: list[Path] | None) -> list[Path]:
    """The ``--src`` trees (default: this checkout's ``src``), resolved; an argument
    error for one that holds no epcsim package.  Shared with benchmarks/walltime.py."""
    srcs = [s.resolve() for s in (given or [REPO / "src"])]
    for s in srcs:
        if not (s / "epcsim" / "__init__.py").is_file():
            ap.error(f"--src: {s} holds no epcsim package")
    return srcs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default=",".join(ROWS[:3]), help="loop,uniform,zipf,real")
    ap.add_argument("--accesses", type=int, default=200_000, help="synthetic rows' accesses")
    ap.add_argument("--div", type=int, default=10, help="EPC = footprint / DIV")
    ap.add_argument("--src", action="append", type=Path, help="source trees (default: src)")
    a = ap.parse_args()
    rows = parse_rows(ap, a.rows)
    if a.accesses < 1000 or a.div < 2:
        ap.error("--accesses must be >= 1000 and --div >= 2")
    if shutil.which("valgrind") is None:
        sys.exit("instructions.py: valgrind is not installed (apt install valgrind)")
    srcs = source_trees(ap, a.src)
    with tempfile.TemporaryDirectory(prefix="epcsim-ir-") as tmp:
        work = Path(tmp)
        caches = [work / f"numba-{k}" for k in range(len(srcs))]
        print(f"{'row':8} {'tree':40} {'accesses':>9} {'instructions':>14} {'per access':>10}")
        for row in rows:
            first = None
            for k, src in enumerate(srcs):
                ir, acc = run_row(src, caches[k], work, row, a.accesses, a.div)
                per = ir / acc
                rel = "" if first is None else f"  x{per / first:.3f}"
                first = per if first is None else first
                print(f"{row:8} {str(src)[-40:]:40} {acc:>9,} {ir:>14,} {per:>10.1f}{rel}")


if __name__ == "__main__":
    main()
