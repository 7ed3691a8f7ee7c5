"""Memory and wall time of ``epcsim.run`` called again and again in one process, as a
sweep's worker or a benchmark's repeats call it: a finished run must leave nothing
behind, so the process's resident set stays flat and each run takes the time the first
warm one took.

    python benchmarks/repeat.py [--row loop|uniform|zipf|real] [--accesses 10000000]
        [--div 10] [--runs 12] [--max-growth-mb 64] [--real PATH]

The row is peer.py's trace and scenario (one enclave, EAUG on demand, misc.max max;
loop: 300,000 pages, uniform and Zipf(0.9): 1,000,000, real: the shared cloudPhysicsIO
trace repeated until it holds --accesses) with an EPC of 1/--div of its footprint.  It
runs --runs times in this process (the first also loads the compiled code); after each
run the script prints its wall time and the process's resident set (``/proc/self/statm``).
The last line compares the resident set after the last run with the one after the
second, and the slowest run after the first with the fastest; the exit status is 1 when
the resident set grew by more than --max-growth-mb.

Until 1aee3fc a finished run waited in reference cycles for Python's cycle collector:
``--div 2`` grew from 497 MB after run 2 to 1,246 MB after run 12 (exit 1), and runs
made at 1.7 to 2 GB took up to 1.7 times as long (docs/BENCHMARKS.md, "Session 26").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import peer  # noqa: E402 (the scripts' dir)

ROWS = ("loop", "uniform", "zipf", "real")
MB = 1 << 20


def rss_bytes() -> int:
    """The process's resident set (bytes), from ``/proc/self/statm``."""
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def verdict(rss: list[int], walls: list[float], max_growth: float) -> tuple[str, bool]:
    """(the last line, whether the resident set stayed within *max_growth* MB): the
    resident set after the last run against the one after the second, and the slowest
    run after the first against the fastest."""
    growth = (rss[-1] - rss[1]) / MB
    rest = walls[1:]
    line = (
        f"RSS after run 2: {rss[1] / MB:,.0f} MB, after run {len(rss)}: {rss[-1] / MB:,.0f} MB: "
        f"growth {round(growth):+,d} MB (limit {max_growth:g} MB); wall: best {min(rest):.3f} s, "
        f"slowest after the first {max(rest):.3f} s (x{max(rest) / min(rest):.2f})"
    )
    return line, growth <= max_growth


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--row", choices=ROWS, default="loop")
    ap.add_argument("--accesses", type=int, default=10_000_000, metavar="N")
    ap.add_argument("--div", type=int, default=10)
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--max-growth-mb", type=float, default=64.0, metavar="MB")
    ap.add_argument("--real", default=str(peer.DEFAULT_REAL), metavar="PATH")
    a = ap.parse_args()
    if a.accesses < 1 or a.div < 1:
        ap.error("--accesses and --div must be >= 1")
    if a.runs < 2:
        ap.error("--runs must be >= 2 (the growth is counted from the second run)")
    if a.max_growth_mb < 0:
        ap.error("--max-growth-mb must be >= 0")
    if a.row == "real" and not Path(a.real).is_file():
        ap.error(f"--real: {a.real} is not a file")
    if not Path("/proc/self/statm").exists():
        ap.error("needs /proc/self/statm (Linux) for the resident set")

    import epcsim

    with tempfile.TemporaryDirectory(prefix="epcsim-repeat-") as tmp:
        pages = peer.row_trace(a.row, a.accesses, a.real)
        path = Path(tmp) / f"{a.row}.npy"
        np.save(path, pages)
        sc = peer.scenario(path, max(1, peer.footprint_of(pages) // a.div))
        n = len(pages)
        del pages
        rss: list[int] = []
        walls: list[float] = []
        for k in range(a.runs):
            t0 = time.perf_counter()
            r = epcsim.run(sc, report=False)
            walls.append(time.perf_counter() - t0)
            got = r.summary["enclaves"][peer.ENCLAVE]["accesses"]
            if got != n:
                print(f"repeat.py: run {k + 1} did {got} of {n} accesses", file=sys.stderr)
                return 2
            del r
            rss.append(rss_bytes())
            print(f"run {k + 1:2d}: {walls[-1]:.3f} s  RSS {rss[-1] / MB:,.0f} MB", flush=True)
    line, ok = verdict(rss, walls, a.max_growth_mb)
    print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
