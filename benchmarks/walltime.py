"""Wall time of ``epcsim.run`` on peer.py's rows for one or more source trees, runs
interleaved: for judging a change to the compiled core by time, where the count of
instructions (benchmarks/instructions.py) no longer tells it (docs/BENCHMARKS.md,
"Session 20": at the peer rows' size the core runs about as many instructions per
access as libCacheSim's CLOCK, but each takes more cycles).

    python benchmarks/walltime.py [--rows real,loop] [--rounds 8] [--repeat 3]
        [--accesses 10000000] [--div 10] [--real PATH] [--unref] [--phases]
        [--src SRC [--src SRC ...]]

Each row is peer.py's trace at its full footprint (loop: 300,000 pages; uniform:
1,000,000; Zipf(0.9): 1,000,000; real: the shared cloudPhysicsIO trace repeated until
it holds --accesses) with an EPC of 1/--div of it, run by peer.py's scenario (one
enclave, EAUG on demand, misc.max max).  A round runs one Python subprocess per tree
(``PYTHONPATH`` at the tree; each tree compiles into its own ``__pycache__`` or
``NUMBA_CACHE_DIR``, warmed before the first round), in turn, the order reversed every
other round so that a load that comes and goes falls on all trees alike; each
subprocess does an untimed run and then --repeat timed ones, and reports the best.  A
round's ratio is each tree's time over the first tree's in that round; the last line of
a row gives each tree's median ratio and best time.  On this project's 2-core VM a
change of 3 % needs about 8 rounds to show.

--unref runs the rows with ``host.experiments.fault_unreferenced`` (the epcsim side of
peer.py's unreferenced pairing).  --phases also splits each tree's best run by where
its wall time went, in ns per access and shares: ``core`` (the compiled loop:
``_Packed.run``), ``latencies`` (the fault latencies moved out of the core:
``_Packed.flush``), ``write-back``, ``numbering`` (the trace's first-seen numbering
pass: ``TracePattern.__init__``), ``refills`` (the core's access buffers refilled:
``TracePattern.take_into``), ``percentiles`` (the summary's latency percentiles) and
``rest`` (scenario, set-up, summary, hand-back).  A tree without one of these
functions leaves it at 0 and its time in ``rest``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from instructions import parse_rows, source_trees  # noqa: E402 (the scripts' dir)

#: the child: build the row's trace and scenario, warm up, time the runs
CHILD = r"""
import sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, {bench!r})
import peer
import epcsim

row, n, div, repeat, work = {row!r}, {n}, {div}, {repeat}, Path({work!r})
path = work / f"{{row}}-{{n}}.npy"
if not path.exists():
    pages = peer.row_trace(row, n, {real!r})
    tmp = path.with_suffix(".part.npy")
    np.save(tmp, pages)
    tmp.replace(path)
pages = np.load(path, mmap_mode="r")
sc = peer.scenario(path, peer.footprint_of(np.asarray(pages)) // div, unref={unref})
epcsim.run(sc, report=False)
spent = {{}}
if {phases}:
    import importlib

    def timed(where, name, phase):
        # wrap name of where (module[:class]) to add its wall time to spent[phase];
        # a tree without it is left alone (its time falls to "rest")
        mod, _, cls = where.partition(":")
        try:
            obj = importlib.import_module(mod)
        except ImportError:
            return
        for part in filter(None, cls.split(".")):
            obj = getattr(obj, part, None)
        f = getattr(obj, name, None) if obj is not None else None
        if f is None:
            return

        def wrapper(*args, **kw):
            t0 = time.perf_counter()
            try:
                return f(*args, **kw)
            finally:
                spent[phase] = spent.get(phase, 0.0) + time.perf_counter() - t0

        setattr(obj, name, wrapper)

    for where, name, phase in PHASE_HOOKS:
        timed(where, name, phase)
best, best_spent = float("inf"), {{}}
for _ in range(repeat):
    spent.clear()
    t0 = time.perf_counter()
    r = epcsim.run(sc, report=False)
    wall = time.perf_counter() - t0
    if wall < best:
        best, best_spent = wall, dict(spent)
e = r.summary["enclaves"][peer.ENCLAVE]
print("RESULT", best, e["accesses"], r.engine)
if {phases}:
    print("PHASES", " ".join(f"{{k}}={{v!r}}" for k, v in best_spent.items()))
"""

#: the parts of one ``epcsim.run`` that ``--phases`` times: (module[:class], function,
#: phase); a run's wall time less their sum is "rest" (scenario, set-up, summary)
PHASE_HOOKS = (
    ("epcsim.compiled.engine:_Packed", "run", "core"),
    ("epcsim.compiled.engine:_Packed", "flush", "latencies"),
    ("epcsim.compiled.engine:_Packed", "write_back", "write-back"),
    ("epcsim.workload.traces._mapping:TracePattern", "__init__", "numbering"),
    ("epcsim.workload.traces._mapping:TracePattern", "take_into", "refills"),
    ("epcsim.sim.metrics", "latency_percentiles", "percentiles"),
)
PHASES = tuple(dict.fromkeys(p for _, _, p in PHASE_HOOKS)) + ("rest",)


def run_once(
    src: Path, work: Path, row: str, a: argparse.Namespace
) -> tuple[float, int, dict[str, float]]:
    """(best seconds, accesses, seconds by phase of that run: empty without --phases)
    of one subprocess timing *row* with the tree *src*."""
    code = (
        "PHASE_HOOKS = "
        + repr(PHASE_HOOKS)
        + "\n"
        + CHILD.format(
            bench=str(REPO / "benchmarks"),
            row=row,
            n=a.accesses,
            div=a.div,
            repeat=a.repeat,
            work=str(work),
            real=str(a.real),
            unref=bool(a.unref),
            phases=bool(a.phases),
        )
    )
    env = dict(os.environ, PYTHONPATH=str(src))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    lines = [line.split() for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    if r.returncode or not lines:
        sys.exit(f"walltime.py: {row} with {src} failed:\n{r.stderr[-3000:]}")
    best = float(lines[-1][1])
    spent: dict[str, float] = {}
    for line in r.stdout.splitlines():
        if line.startswith("PHASES"):
            spent = {k: float(v) for k, v in (x.split("=", 1) for x in line.split()[1:])}
    if a.phases:
        spent["rest"] = best - sum(spent.values())
    return best, int(lines[-1][2]), spent


def phase_line(row: str, src: Path, accesses: int, spent: dict[str, float]) -> str:
    """One tree's split of its best run: each phase in ns per access and its share."""
    total = sum(spent.values())
    cells = "  ".join(
        f"{p} {spent.get(p, 0.0) / accesses * 1e9:.2f} ({spent.get(p, 0.0) / total:.1%})"
        for p in PHASES
    )
    return f"{row:8} {str(src)[-40:]:40} ns/access: {cells}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="real,loop", help="some of loop,uniform,zipf,real")
    ap.add_argument("--rounds", type=int, default=8, help="interleaved rounds")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per subprocess")
    ap.add_argument("--accesses", type=int, default=10_000_000, help="accesses per row")
    ap.add_argument("--div", type=int, default=10, help="EPC = footprint / DIV")
    ap.add_argument("--real", type=Path, default=None, help="the real trace (oracleGeneral)")
    ap.add_argument(
        "--unref",
        action="store_true",
        help="the rows with fault_unreferenced (peer.py's unreferenced pairing)",
    )
    ap.add_argument(
        "--phases",
        action="store_true",
        help="also split each tree's best run by phase (core, latencies, numbering, ...)",
    )
    ap.add_argument("--src", action="append", type=Path, help="source trees (default: src)")
    ap.add_argument("--work", type=Path, default=None, help="where the traces are kept")
    a = ap.parse_args()
    rows = parse_rows(ap, a.rows)
    if a.rounds < 1 or a.repeat < 1:
        ap.error("--rounds and --repeat must be >= 1")
    if a.accesses < 1000 or a.div < 2:
        ap.error("--accesses must be >= 1000 and --div >= 2")
    import peer

    a.real = (a.real or peer.DEFAULT_REAL).resolve()
    if "real" in rows and not a.real.is_file():
        ap.error(f"--real: {a.real} is not a file")
    srcs = source_trees(ap, a.src)
    work = (a.work or Path(os.environ.get("TMPDIR", "/tmp")) / "epcsim-walltime").resolve()
    work.mkdir(parents=True, exist_ok=True)
    for row in rows:
        for s in srcs:  # the compile and the trace, untimed
            run_once(s, work, row, a)
        times: list[list[float]] = [[] for _ in srcs]
        ratios: list[list[float]] = [[] for _ in srcs]
        split: list[dict[str, float]] = [{} for _ in srcs]  # of each tree's best round
        accesses = 0
        for k in range(a.rounds):
            order = list(range(len(srcs)))
            if k % 2:
                order.reverse()
            got = {}
            for i in order:
                got[i], accesses, spent = run_once(srcs[i], work, row, a)
                if not times[i] or got[i] < min(times[i]):
                    split[i] = spent
            for i in range(len(srcs)):
                times[i].append(got[i])
                ratios[i].append(got[i] / got[0])
            cells = "  ".join(f"{got[i]:.3f}" for i in range(len(srcs)))
            print(f"{row:8} round {k + 1}: {cells} s", flush=True)
        for i, s in enumerate(srcs):
            rel = "" if i == 0 else f"  median x{statistics.median(ratios[i]):.3f}"
            print(
                f"{row:8} {str(s)[-40:]:40} {accesses:>11,} accesses  best {min(times[i]):.3f} s"
                f"  {accesses / min(times[i]) / 1e6:6.2f}M acc/s{rel}"
            )
        if a.phases:
            for i, s in enumerate(srcs):
                print(phase_line(row, s, accesses, split[i]))


if __name__ == "__main__":
    main()
