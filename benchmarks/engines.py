"""The reference engine against the default engine (``engine="auto"``) on the built-ins
and a staggered two-tenant scenario, with their outputs compared (issue 15).

    python benchmarks/engines.py [--rows kselftest,kselftest-1g,noisy-neighbour,
        overcommit,nested-fairness,staggered-eadd] [--repeat 3] [--quick]

Rows: ``builtin:kselftest`` at its default 96 MiB EPC and at 1 GiB (the override
``host.epc=1GiB``, as ``epcsim run --set host.epc=1GiB`` gives it), ``builtin:
noisy-neighbour``, ``builtin:overcommit``, ``builtin:nested-fairness`` and
``examples/staggered-eadd.toml`` (two tenants built with EADD at different sizes in
their own limited cgroups, the second starting 20 ms later, on a 32 MiB EPC they page
in).  --quick runs smaller sizes (kselftest at 16 / 32 MiB, fewer accesses, shorter
durations), for a smoke run.

What is timed: only the ``epcsim.run(scenario, overrides=..., engine=..., report=False)``
call, without ``out`` (simulation only, nothing written), best of --repeat runs per
engine, after one untimed warm-up run of a small scenario on the default engine (so the
compiled engine's compile, or its load from the cache, is not counted).  Both engines
run in this one process, alternating per repeat.  Per row it prints both best times, the
ratio reference / default (the default engine's speed-up) and which engine the default
run used (``Result.engine``) and why not the compiled one (``Result.engine_note``).

Exactness: for each row the first result of each engine is compared as
tests/sim/test_engines_exact.py does: the summary as canonical JSON (sorted keys), the
time series, the fault latencies and their enclave/cgroup tags; the repeats of one
engine must agree too.  Any difference is reported on stderr and the exit status is 1.

Target (issue 15): a speed-up of at least 10× on every row.  The last line is ``worst
speed-up N.N× (ROW)``: the smallest ratio and its row.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from peer import positive_int  # the same argument check (benchmarks/ is on sys.path)

REPO = Path(__file__).resolve().parents[1]
STAGGERED = REPO / "examples/staggered-eadd.toml"


@dataclass(frozen=True)
class Row:
    name: str
    scenario: str
    overrides: tuple[str, ...] = ()
    #: the smaller sizes of --quick (added after *overrides*)
    quick: tuple[str, ...] = ()


ROWS = {
    r.name: r
    for r in (
        Row("kselftest", "builtin:kselftest", (), ("host.epc=16MiB",)),
        Row("kselftest-1g", "builtin:kselftest", ("host.epc=1GiB",), ("host.epc=32MiB",)),
        Row(
            "noisy-neighbour",
            "builtin:noisy-neighbour",
            (),
            ("enclave.0.workload.accesses=200000", "enclave.1.workload.duration=20ms"),
        ),
        Row(
            "overcommit",
            "builtin:overcommit",
            (),
            tuple(f"enclave.{i}.workload.accesses=10000" for i in range(3)),
        ),
        Row(
            "nested-fairness",
            "builtin:nested-fairness",
            (),
            tuple(f"enclave.{i}.workload.duration=5ms" for i in range(3)),
        ),
        Row(
            "staggered-eadd",
            str(STAGGERED),
            (),
            ("enclave.0.workload.accesses=100000", "enclave.1.workload.accesses=25000"),
        ),
    )
}

#: the warm-up: one enclave thrashing under ksgxd, eligible for the compiled engine
WARMUP = """
name = "warmup"
[host]
epc = "1MiB"
cpus = 1
[[cgroup]]
path = "/t"
[[enclave]]
name = "e"
cgroup = "/t"
build = "eaug"
size = "4MiB"
workload = { pattern = "zipf", alpha = 0.9, accesses = 5000 }
"""


@dataclass
class Timed:
    best_s: float = math.inf
    first: object = None
    engine: str = ""
    note: str = ""
    mismatches: list[str] = field(default_factory=list)


def differences(a, b) -> list[str]:
    """What differs between two results, as tests/sim/test_engines_exact.py compares
    them (empty: identical)."""
    out = []
    ja = json.dumps(a.summary, sort_keys=True)
    jb = json.dumps(b.summary, sort_keys=True)
    if ja != jb:
        fa, fb = flat(a.summary), flat(b.summary)
        keys = sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))
        shown = ", ".join(f"{k}: {fa.get(k)!r} vs {fb.get(k)!r}" for k in keys[:5])
        out.append(f"summary differs in {len(keys)} fields ({shown})")
    if not a.timeseries.equals(b.timeseries):
        out.append(f"time series differ ({a.timeseries.num_rows} vs {b.timeseries.num_rows} rows)")
    if not np.array_equal(a.fault_latency_ns, b.fault_latency_ns):
        out.append(
            f"fault latencies differ ({len(a.fault_latency_ns)} vs {len(b.fault_latency_ns)})"
        )
    fa_t, fb_t = a.fault_latency, b.fault_latency
    if (fa_t is None) != (fb_t is None) or (fa_t is not None and not fa_t.equals(fb_t)):
        out.append("fault latencies' enclave/cgroup tags differ")
    return out


def flat(d, prefix: str = "") -> dict:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}."))
    return out


def time_row(row: Row, repeat: int, quick: bool) -> tuple[Timed, Timed]:
    """Best wall time of each engine over *repeat* runs, alternating reference and
    default; the first result of each kept for the comparison."""
    import epcsim

    overrides = row.overrides + (row.quick if quick else ())
    ref, dflt = Timed(), Timed()
    for _ in range(repeat):
        for t, kw in ((ref, {"engine": "reference"}), (dflt, {})):
            t0 = time.perf_counter()
            r = epcsim.run(row.scenario, overrides=list(overrides), report=False, **kw)
            t.best_s = min(t.best_s, time.perf_counter() - t0)
            if t.first is None:
                t.first, t.engine, t.note = r, r.engine, r.engine_note
            else:
                t.mismatches += [f"repeat differs: {d}" for d in differences(t.first, r)]
    return ref, dflt


def parse_rows(spec: str) -> list[str]:
    names = [x.strip() for x in spec.split(",") if x.strip()]
    bad = [x for x in names if x not in ROWS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown row {bad[0]!r} (choose from {', '.join(ROWS)})")
    if not names:
        raise argparse.ArgumentTypeError("no row given")
    return list(dict.fromkeys(names))


def table(header: list[str], rows: list[list[str]]) -> str:
    w = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    left = {0, len(header) - 2, len(header) - 1}  # row, engine, note

    def line(r: list[str]) -> str:
        cells = [c.ljust(w[i]) if i in left else c.rjust(w[i]) for i, c in enumerate(r)]
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=parse_rows, default=list(ROWS), metavar="LIST")
    ap.add_argument(
        "--repeat",
        type=positive_int,
        default=3,
        help="runs per engine and row; the best wall time counts (default 3)",
    )
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = ap.parse_args()

    import epcsim

    print(
        f"epcsim {epcsim.__version__}, rows {','.join(args.rows)}, best of {args.repeat}"
        + (", quick sizes" if args.quick else ""),
        flush=True,
    )
    t0 = time.perf_counter()
    w = epcsim.run(WARMUP, report=False)
    print(
        f"warm-up (5,000 accesses, EPC 256 pages): {time.perf_counter() - t0:.2f} s, "
        f"engine {w.engine}",
        flush=True,
    )

    rows: list[list[str]] = []
    failures: list[str] = []
    worst: tuple[float, str] | None = None
    for name in args.rows:
        ref, dflt = time_row(ROWS[name], args.repeat, args.quick)
        mism = ref.mismatches + dflt.mismatches + differences(ref.first, dflt.first)
        failures += [f"{name}: {m}" for m in mism]
        ratio = ref.best_s / dflt.best_s
        if worst is None or ratio < worst[0]:
            worst = (ratio, name)
        rows.append(
            [
                name,
                f"{ref.best_s:.2f}",
                f"{dflt.best_s:.2f}",
                f"{ratio:.2f}",
                "yes" if not mism else "NO",
                dflt.engine,
                dflt.note or "-",
            ]
        )
        print(
            f"  {name}: reference {ref.best_s:.2f} s, default {dflt.best_s:.2f} s "
            f"[{dflt.engine}], ratio {ratio:.2f}",
            flush=True,
        )

    print()
    header = ["row", "reference s", "default s", "ratio", "same", "default ran", "why not compiled"]
    print(table(header, rows))
    print("ratio = reference s / default s (best of each); same: identical outputs")
    for f in failures:
        print(f"engines.py: outputs differ: {f}", file=sys.stderr)
    assert worst is not None
    print(f"worst speed-up {worst[0]:.1f}× ({worst[1]})", flush=True)
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
