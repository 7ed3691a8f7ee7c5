"""The compiled engine's cold compile: CPU and wall time of a compiled run of a
pattern-only scenario with an empty compile cache.

    python benchmarks/compile.py [--runs 3] [--src SRC [--src SRC ...]]

Each run is a fresh Python subprocess with ``PYTHONPATH`` at a source tree (``--src``,
default this checkout's ``src``) and ``NUMBA_CACHE_DIR`` at a new empty directory; it
times ``epcsim.run(SCENARIO, engine="compiled")`` (the import of the compiled core, the
cache's source stamp, the compile and a 2,000-access run: the compile is nearly all of
it) with ``time.process_time()`` and ``time.perf_counter()``.  With several ``--src``
the runs are interleaved (run 1 of each tree, then run 2 of each, ...) so that a change
in the machine's load falls on all of them; the last lines give each tree's medians
against the first tree's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: one 2 MiB enclave, uniform accesses, in a 1 MiB cgroup of a 4 MiB EPC: the compiled
#: engine runs it from the first access; reclaim, faults and the sampler all compile
SCENARIO = """\
name = "compile"
[host]
epc = "4MiB"
duration = "1s"

[[cgroup]]
path = "/a"
max = "1MiB"

[[enclave]]
name = "e"
cgroup = "/a"
size = "2MiB"
workload = { pattern = "uniform", accesses = 2000 }
"""

CHILD = """\
import json, sys, time
import epcsim
scenario, out = sys.argv[1], sys.argv[2]
cpu, wall = time.process_time(), time.perf_counter()
result = epcsim.run(scenario, engine="compiled", out=out)
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
print(json.dumps({"cpu": cpu, "wall": wall, "engine": result.run["engine"],
                  "file": epcsim.__file__}))
"""


def one_run(src: Path, scenario: Path) -> dict:
    """A cold compile with the package at *src*, in a subprocess."""
    with tempfile.TemporaryDirectory(prefix="epcsim-compile-") as tmp:
        env = dict(os.environ, PYTHONPATH=str(src), NUMBA_CACHE_DIR=str(Path(tmp) / "cache"))
        env.pop("NUMBA_DISABLE_JIT", None)
        argv = [sys.executable, "-c", CHILD, str(scenario), str(Path(tmp) / "out")]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.exit(f"run with --src {src} failed:\n{proc.stderr}")
        res = json.loads(proc.stdout.splitlines()[-1])
    if not Path(res["file"]).resolve().is_relative_to(src.resolve()):
        sys.exit(f"--src {src}: the subprocess imported {res['file']}")
    if res["engine"] != "compiled":
        sys.exit(f"--src {src}: the compiled engine did not run")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per source tree (default 3)")
    ap.add_argument(
        "--src",
        type=Path,
        action="append",
        help="a source tree holding the epcsim package (repeatable; default ./src)",
    )
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs: expected at least 1")
    srcs: list[Path] = args.src or [REPO / "src"]
    for src in srcs:
        if not (src / "epcsim" / "__init__.py").is_file():
            ap.error(f"--src {src}: no epcsim package there")
    times: dict[int, list[dict]] = {i: [] for i in range(len(srcs))}
    with tempfile.TemporaryDirectory(prefix="epcsim-compile-") as tmp:
        scenario = Path(tmp) / "compile.toml"
        scenario.write_text(SCENARIO)
        for r in range(args.runs):
            for i, src in enumerate(srcs):
                res = one_run(src, scenario)
                times[i].append(res)
                print(f"run {r + 1} {src}: cpu {res['cpu']:.1f} s, wall {res['wall']:.1f} s")
                sys.stdout.flush()
    base_cpu = base_wall = 0.0
    for i, src in enumerate(srcs):
        cpu = statistics.median(t["cpu"] for t in times[i])
        wall = statistics.median(t["wall"] for t in times[i])
        line = f"median of {args.runs} {src}: cpu {cpu:.1f} s, wall {wall:.1f} s"
        if i == 0:
            base_cpu, base_wall = cpu, wall
        else:
            line += f" (x{cpu / base_cpu:.3f} cpu, x{wall / base_wall:.3f} wall of the first)"
        print(line)


if __name__ == "__main__":
    main()
