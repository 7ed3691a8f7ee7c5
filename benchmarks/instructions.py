"""Instructions per access of ``epcsim.run`` on scaled-down peer.py rows, counted by
valgrind's callgrind: an exact count where wall time on a shared machine moves by a
third between days (docs/BENCHMARKS.md), for judging a change to the compiled core.

    python benchmarks/instructions.py [--rows loop,uniform,zipf,real] [--accesses 200000]
        [--div 10] [--src SRC [--src SRC ...]] [--lines N [--time [--time-runs R]]]

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

``--lines N`` (one tree) says where the core's instructions go: the core is compiled
with line tables (``NUMBA_DEBUGINFO=1``) from a copy of the tree whose
``epcsim/compiled`` modules are each moved down by a multiple of LINE_STRIDE lines
(numba files an inlined function's lines under its caller's file: the offset names the
module), callgrind counts each instruction (``--dump-instr=yes``), and ``addr2line`` on
the core's object code maps each counted address inside ``run_core`` to its module and
line.  It prints the instructions per access of each function (the inlined ones
included: ``reclaim._sgx_reclaim_isolate``, ...) and of the N lines with the most;
"(no line)" is code the line table gives no line (spills and moves at block edges).
Counts, not time: a line's instructions may run in the shadow of another's cache miss
(docs/BENCHMARKS.md, "Session 24").  About 1 min per row (the compile is not cached).

``--time`` (with ``--lines``) says where the core's *time* goes beside its
instructions, for a machine without hardware counters: the row runs ``--time-runs``
times natively (the core compiled for this CPU, with line tables, from the same copy of
the tree) under ``perf record -e cpu-clock``; each sample's address inside ``run_core``
is mapped to its line as above.  Each function and line then has its share of the
core's instructions and of its samples; a share of time well above the share of
instructions marks code that waits (a dependent load, a mispredicted branch).  Samples
land on the instruction after the one that waited (skid), so a line's time may be its
neighbour's.  Needs ``perf`` allowed to sample this user's processes
(``kernel.perf_event_paranoid`` <= 2).
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
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
runs = int(os.environ.get("EPCSIM_IR_RUNS", "1"))
path = work / f"{{row}}.npy"
if not path.exists():
    np.save(path, pages)
sc = peer.scenario(path, peer.footprint_of(pages) // div)
epcsim.run(sc, report=False)
ctl = os.environ.get("EPCSIM_IR_CTL")
obj = os.environ.get("EPCSIM_IR_OBJ")
if obj:  # --lines: the core's object code (with its line table) and address
    from epcsim.compiled.loop import run_core
    (cres,) = run_core.overloads.values()
    name = cres.fndesc.llvm_func_name
    if not Path(obj).exists():  # the run that compiled it (the later ones load it)
        Path(obj).write_bytes(cres.library._get_compiled_object())
    addr = cres.library.get_pointer_to_function(name)
    Path(obj).with_suffix(f".{{row}}.addr").write_text(f"{{addr}} {{name}}")
if ctl:
    subprocess.run([ctl, "-i", "on", str(os.getpid())], check=True, capture_output=True)
for _ in range(runs):
    r = epcsim.run(sc, report=False)
if ctl:
    subprocess.run([ctl, "-i", "off", str(os.getpid())], check=True, capture_output=True)
e = r.summary["enclaves"][peer.ENCLAVE]
print("RESULT", e["accesses"], e["faults"], r.engine)
"""


def warm_child(
    src: Path, cache: Path, work: Path, row: str, n: int, div: int, extra: dict[str, str]
) -> tuple[str, dict[str, str]]:
    """The child's code for *row* and its environment (the tree *src*, the compile cache
    *cache*, *extra* over this process's environment less the child's own variables),
    after one run of it outside any tool: the compile, and the core's object code where
    ``EPCSIM_IR_OBJ`` says."""
    code = CHILD.format(
        bench=str(REPO / "benchmarks"),
        row=row,
        n=n,
        div=div,
        work=str(work),
        scale=SCALE,
    )
    env = dict(os.environ)
    for k in (
        "EPCSIM_IR_CTL",
        "EPCSIM_IR_OBJ",
        "EPCSIM_IR_RUNS",
        "NUMBA_CPU_NAME",
        "NUMBA_CPU_FEATURES",
    ):
        env.pop(k, None)
    env.update(PYTHONPATH=str(src), NUMBA_CACHE_DIR=str(cache), **extra)
    warm = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if warm.returncode:
        sys.exit(f"instructions.py: {row} with {src} failed:\n{warm.stderr}")
    return code, env


def run_row(
    src: Path, cache: Path, work: Path, row: str, n: int, div: int, lines: bool = False
) -> tuple[int, int]:
    """(instructions, accesses) of one ``epcsim.run`` of *row* with the tree *src*;
    with *lines*, the counts per instruction too (``work/callgrind.ROW.out``, the core's
    object code at ``work/core.o``: :func:`attribute`)."""
    extra = {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": ""}
    if lines:
        extra.update(NUMBA_DEBUGINFO="1", EPCSIM_IR_OBJ=str(work / "core.o"))
    code, env = warm_child(src, cache, work, row, n, div, extra)
    env["EPCSIM_IR_CTL"] = shutil.which("callgrind_control") or "callgrind_control"
    out = work / f"callgrind.{row}.out"
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        *(["--dump-instr=yes"] if lines else []),
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


#: --time: perf's sampling frequency (Hz) of the CPU clock
PERF_FREQ = 10_000


def run_perf(src: Path, cache: Path, work: Path, row: str, n: int, div: int, runs: int) -> Counter:
    """Samples per address of *runs* native runs of *row* with the tree *src* (the
    ``--lines`` copy) under ``perf record -e cpu-clock``; the core's object code at
    ``work/native.o`` and its address at ``work/native.ROW.addr``."""
    extra = {"NUMBA_DEBUGINFO": "1", "EPCSIM_IR_OBJ": str(work / "native.o")}
    code, env = warm_child(src, cache, work, row, n, div, extra)
    env["EPCSIM_IR_RUNS"] = str(runs)
    data = work / f"perf.{row}.data"
    cmd = ["perf", "record", "-q", "-e", "cpu-clock", "-F", str(PERF_FREQ), "-o", str(data)]
    r = subprocess.run(
        [*cmd, "--", sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    if r.returncode or not data.exists():
        sys.exit(f"instructions.py: perf record of {row} failed:\n{r.stderr[-3000:]}")
    ips = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "ip"], capture_output=True, text=True
    )
    if ips.returncode:
        sys.exit(f"instructions.py: perf script failed:\n{ips.stderr[-3000:]}")
    return perf_samples(ips.stdout)


def perf_samples(text: str) -> Counter:
    """Samples per address of ``perf script -F ip`` output (one hexadecimal address a
    line; other lines are left out)."""
    out: Counter = Counter()
    for line in text.splitlines():
        try:
            out[int(line.strip(), 16)] += 1
        except ValueError:
            continue
    return out


#: --lines: each compiled module's lines are moved down by its index times this many
#: lines (blank lines prepended in a copy of the tree), so that a line number of the
#: core's line table names its module too (numba records the lines of an inlined
#: function under its caller's file)
LINE_STRIDE = 10_000


def lines_tree(src: Path, dest: Path) -> list[str]:
    """A copy of the tree *src* at *dest* whose ``epcsim/compiled`` modules are moved
    down by LINE_STRIDE lines each (module k of the sorted list by k + 1 strides);
    returns the module names in that order."""
    shutil.copytree(src / "epcsim", dest / "epcsim", ignore=shutil.ignore_patterns("__pycache__"))
    names = sorted(p.stem for p in (dest / "epcsim" / "compiled").glob("*.py"))
    for k, name in enumerate(names):
        path = dest / "epcsim" / "compiled" / f"{name}.py"
        path.write_text("\n" * ((k + 1) * LINE_STRIDE) + path.read_text())
    return names


def self_costs(path: Path) -> dict[int, int]:
    """Instructions per address (self cost: a call's inclusive cost left out) of a
    callgrind output written with ``--dump-instr=yes`` (positions: instr line)."""
    cost: dict[int, int] = {}
    pos = 0
    after_call = False
    with path.open() as f:
        for line in f:
            if line.startswith("calls="):
                after_call = True
                continue
            t = line.split()
            if len(t) != 3 or not (t[0][0] in "+-*" or t[0].startswith("0x")):
                continue
            p = t[0]
            if p.startswith("0x"):
                pos = int(p, 16)
            elif p[0] == "+":
                pos += int(p[1:])
            elif p[0] == "-":
                pos -= int(p[1:])
            if after_call:
                after_call = False
                continue
            cost[pos] = cost.get(pos, 0) + int(t[2])
    return cost


def core_lines(
    work: Path, obj_name: str, row: str, names: list[str], cost: dict[int, int]
) -> Counter[tuple[str, int]]:
    """The costs per address *cost* (instructions, samples) that fall inside
    ``run_core``, summed per (module, line): the core's object code ``work/OBJ_NAME``
    (its address in ``work/STEM.ROW.addr``), each address mapped by ``addr2line``."""
    obj = work / obj_name
    addr_s, name = (work / f"{obj.stem}.{row}.addr").read_text().split()
    base = int(addr_s)
    nm = subprocess.run(["nm", "-S", "--defined-only", str(obj)], capture_output=True, text=True)
    size = next(int(f[1], 16) for f in map(str.split, nm.stdout.splitlines()) if f[-1] == name)
    inside = {a - base: c for a, c in cost.items() if base <= a < base + size}
    offs = sorted(inside)
    # the section of the core's code: numba's large code model puts it in .ltext
    heads = subprocess.run(["objdump", "-h", str(obj)], capture_output=True, text=True).stdout
    section = ".ltext" if " .ltext " in heads else ".text"
    a2l = subprocess.run(
        ["addr2line", "-e", str(obj), "-j", section, *map(hex, offs)],
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    by_line: Counter[tuple[str, int]] = Counter()
    for off, loc in zip(offs, a2l, strict=True):
        ln = loc.split()[0].rsplit(":", 1)[-1]
        k, rest = divmod(int(ln), LINE_STRIDE) if ln.isdigit() else (0, 0)
        by_line[(names[k - 1] if k else "?", rest)] += inside[off]
    return by_line


def attribute(
    work: Path,
    row: str,
    names: list[str],
    accesses: int,
    top: int,
    samples: Counter | None = None,
) -> None:
    """Print the core's instructions per access by function and by line (the *top*
    lines) of a ``--lines`` run of *row*: each counted address inside ``run_core``
    mapped to its line by ``addr2line`` on the core's object code.  With *samples*
    (``--time``: perf's samples per address of the native runs) each function and line
    has its share of the samples beside its share of the instructions, and the lines
    are those with the most samples."""
    by_line = core_lines(work, "core.o", row, names, self_costs(work / f"callgrind.{row}.out"))
    src = work / "lines" / "epcsim" / "compiled"
    texts = {
        n: (src / f"{n}.py").read_text().splitlines()[(k + 1) * LINE_STRIDE :]
        for k, n in enumerate(names)
    }
    defs = {
        n: [
            (d.lineno, d.end_lineno or d.lineno, d.name)
            for d in ast.walk(ast.parse("\n".join(t)))
            if isinstance(d, ast.FunctionDef)
        ]
        for n, t in texts.items()
    }

    def by_function(lines: Counter[tuple[str, int]]) -> Counter[str]:
        out: Counter[str] = Counter()
        for (mod, ln), c in lines.items():
            if mod == "?":
                out["(no line)"] += c
                continue
            fn = next((d for a, b, d in defs.get(mod, []) if a <= ln <= b), "?")
            out[f"{mod}.{fn}"] += c
        return out

    def text(mod: str, ln: int, width: int) -> str:
        return texts[mod][ln - 1].strip()[:width] if mod != "?" else "(no line: spills, moves)"

    by_func = by_function(by_line)
    total = sum(by_line.values())
    print(
        f"\n{row}: run_core {total:,} instructions, {total / accesses:.1f} per access, by function"
    )
    if samples is None:
        for fn, c in by_func.most_common():
            if c / accesses >= 0.05:
                print(f"  {c / accesses:8.1f} {c / total:6.1%}  {fn}")
        print(f"{row}: the {top} lines with the most")
        for (mod, ln), c in by_line.most_common(top):
            print(f"  {c / accesses:8.1f} {c / total:6.1%}  {mod}:{ln:<5} {text(mod, ln, 80)}")
        return
    by_time = core_lines(work, "native.o", row, names, samples)
    t_total = sum(by_time.values())
    if not t_total:
        sys.exit(f"instructions.py: no perf sample of {row} fell inside run_core")
    t_func = by_function(by_time)
    print(
        f"{row}: {t_total:,} samples inside run_core; per access, share of the instructions, "
        "share of the samples"
    )
    for fn in sorted(set(by_func) | set(t_func), key=lambda f: (-t_func[f], -by_func[f])):
        c, t = by_func[fn], t_func[fn]
        if c / accesses >= 0.05 or t / t_total >= 0.001:
            print(f"  {c / accesses:8.1f} {c / total:6.1%} {t / t_total:6.1%}  {fn}")
    print(f"{row}: the {top} lines with the most samples")
    for (mod, ln), t in by_time.most_common(top):
        c = by_line[(mod, ln)]
        print(
            f"  {c / accesses:8.1f} {c / total:6.1%} {t / t_total:6.1%}  "
            f"{mod}:{ln:<5} {text(mod, ln, 72)}"
        )


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
    ap.add_argument(
        "--lines",
        type=int,
        default=0,
        metavar="N",
        help="also attribute the core's instructions to its functions and its N top lines "
        "(one tree; needs binutils' addr2line, nm and objdump)",
    )
    ap.add_argument(
        "--time",
        action="store_true",
        help="with --lines: the share of perf's cpu-clock samples of native runs beside "
        "the share of instructions (needs perf)",
    )
    ap.add_argument(
        "--time-runs",
        type=int,
        default=100,
        metavar="R",
        help="--time: runs of the row under perf (default 100)",
    )
    a = ap.parse_args()
    rows = parse_rows(ap, a.rows)
    if a.accesses < 1000 or a.div < 2:
        ap.error("--accesses must be >= 1000 and --div >= 2")
    srcs = source_trees(ap, a.src)
    if a.lines < 0:
        ap.error("--lines must be >= 0")
    if a.lines and len(srcs) > 1:
        ap.error("--lines: give one --src tree")
    if a.time and not a.lines:
        ap.error("--time needs --lines N")
    if a.time_runs < 1:
        ap.error("--time-runs must be >= 1")
    if shutil.which("valgrind") is None:
        sys.exit("instructions.py: valgrind is not installed (apt install valgrind)")
    if a.time and shutil.which("perf") is None:
        sys.exit("instructions.py: --time needs perf (apt install linux-perf)")
    if a.lines and not all(shutil.which(t) for t in ("addr2line", "nm", "objdump")):
        sys.exit("instructions.py: --lines needs addr2line, nm and objdump (apt install binutils)")
    with tempfile.TemporaryDirectory(prefix="epcsim-ir-") as tmp:
        work = Path(tmp)
        names: list[str] = []
        if a.lines:
            names = lines_tree(srcs[0], work / "lines")
            srcs = [work / "lines"]
        caches = [work / f"numba-{k}" for k in range(len(srcs))]
        print(f"{'row':8} {'tree':40} {'accesses':>9} {'instructions':>14} {'per access':>10}")
        for row in rows:
            first = None
            for k, src in enumerate(srcs):
                ir, acc = run_row(src, caches[k], work, row, a.accesses, a.div, bool(a.lines))
                per = ir / acc
                rel = "" if first is None else f"  x{per / first:.3f}"
                first = per if first is None else first
                print(f"{row:8} {str(src)[-40:]:40} {acc:>9,} {ir:>14,} {per:>10.1f}{rel}")
                if a.lines:
                    samples = None
                    if a.time:
                        samples = run_perf(
                            src, work / "numba-native", work, row, a.accesses, a.div, a.time_runs
                        )
                    attribute(work, row, names, acc, a.lines, samples)


if __name__ == "__main__":
    main()
