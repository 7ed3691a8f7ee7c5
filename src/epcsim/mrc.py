"""Miss-ratio curves of a trace under the v16 reclaimer (``epcsim mrc``).

The trace runs as the only enclave (built by EAUG on demand, so a first touch is a
miss), its task in a child cgroup whose ``misc.max`` is ``max``, on a host whose EPC is
the size under test; the full model runs (misc charge, per-cgroup LRU, 16-page batches
with the age test, ksgxd and its 32/64 watermarks).  The v16 reclaimer is not a stack
algorithm, so every size is its own simulation; sizes run in parallel on the local
CPUs.  The miss ratio is resolved faults / accesses (sampled: / the accesses expected
from the share of pages kept, SHARDS' adjustment).

Spatial sampling (``sample=R``, as SHARDS / miniature simulation do): keep the pages whose
hash falls under R (a fixed 64-bit mix of the page's dense id, its rank in first-seen
order, so the same pages are kept whatever the size) and simulate an EPC of the size
scaled by the share of pages kept (about R).  The kernel's fixed constants do not scale
with the sample: the ksgxd watermarks (32/64 free pages), the 16-page batch, the
per-cgroup headroom (32 pages above SGX_CG_LOW_LIMIT = 128) and the VA/SECS pages (about
1 per 512 enclave pages) keep their absolute sizes, so they take a larger share of a
small sampled EPC.  Below ``SAMPLED_MIN_PAGES`` sampled EPC pages the point is flagged
(and the CLI warns): ``docs/MRC.md`` has the measured error.

A point is trusted (:func:`trust`) iff its steady reclaimable pages are at least
max(512, 50% of its EPC's pages), and, sampled, its sampled EPC has at least
``SAMPLED_MIN_PAGES`` pages; ``MrcPoint.reason`` says why not.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EpcsimError
from .kernel.constants import PAGE_SIZE, SGX_VA_SLOT_COUNT
from .result import cgroup_rows

__all__ = [
    "MrcPoint",
    "SAMPLED_MIN_PAGES",
    "TRUSTED_MIN_RECLAIMABLE",
    "TRUSTED_MIN_SHARE",
    "format_ratios",
    "mrc",
    "parse_sizes",
    "sample_pages",
    "trust",
    "write_mrc",
]

#: below this many sampled EPC pages a sampled point is not to be trusted
SAMPLED_MIN_PAGES = 1000
#: a point is trusted only if its steady reclaimable pages are at least this many ...
TRUSTED_MIN_RECLAIMABLE = 512
#: ... and at least this share of the (simulated) EPC's pages
TRUSTED_MIN_SHARE = 0.5


@dataclass
class MrcPoint:
    """One size of the curve.  ``epc_pages`` is the full-scale size; with sampling the
    simulated EPC is ``sim_epc_pages``."""

    epc_pages: int
    sim_epc_pages: int
    accesses: int
    misses: int
    miss_ratio: float
    mean_reclaimable_pages: float
    #: mean reclaimable pages once reclaim has started (the cache's working capacity);
    #: the maximum when nothing was ever evicted
    steady_reclaimable_pages: float
    sample: float
    trusted: bool
    #: why the point is not trusted (empty when it is; :func:`trust`)
    reason: str
    wall_s: float


def _round_half_up(x: Fraction) -> int:
    """The nearest integer, halves up (509.5 -> 510, 508.5 -> 509): Python's round()
    rounds halves to even, which would make 25% of 2034 pages 508."""
    return math.floor(x + Fraction(1, 2))


def parse_sizes(spec: str, footprint: int) -> list[int]:
    """Sizes in EPC pages from ``--sizes``: a comma list of sizes (units: B, KiB, MiB,
    GiB, ``pages``, or ``N%`` of the trace's footprint), or a range ``A:B:N`` (N sizes
    from A to B, evenly spaced, each end a size as above).

    The footprint is the trace's distinct pages.  A percentage is rounded to the nearest
    page, halves up, in exact arithmetic (25% of 2034 pages is 509, not 508); a range
    rounds its ends so, then the evenly spaced points between them.

    Raises:
        EpcsimError: naming the bad item.
    """
    from .units import parse_size

    def one(item: str) -> int:
        item = item.strip()
        if item.endswith("%"):
            try:
                pct = Fraction(Decimal(item[:-1].strip()))
            except (InvalidOperation, ValueError, OverflowError):
                raise EpcsimError(f"--sizes: not a percentage: {item!r}") from None
            pages = footprint * pct / 100
        else:
            b = parse_size(item, what="--sizes")
            if b % PAGE_SIZE:
                hint = (
                    f" (a bare number is bytes; for {item} pages write {item}pages)"
                    if item.isdigit()
                    else ""
                )
                raise EpcsimError(f"--sizes: {item!r} is not a multiple of 4096 bytes{hint}")
            pages = Fraction(b // PAGE_SIZE)
        if _round_half_up(pages) < 1:
            raise EpcsimError(f"--sizes: {item!r} is less than one page")
        return _round_half_up(pages)

    if ":" in spec:
        parts = spec.split(":")
        if len(parts) != 3:
            raise EpcsimError(f"--sizes: a range is A:B:N, got {spec!r}")
        a, b = one(parts[0]), one(parts[1])
        try:
            n = int(parts[2])
        except ValueError:
            raise EpcsimError(f"--sizes: N must be an integer in {spec!r}") from None
        if n < 1 or b < a:
            raise EpcsimError(f"--sizes: need N >= 1 and A <= B in {spec!r}")
        if n == 1:
            return [a]
        return sorted({_round_half_up(a + Fraction((b - a) * k, n - 1)) for k in range(n)})
    out = sorted({one(x) for x in spec.split(",") if x.strip()})
    if not out:
        raise EpcsimError(f"--sizes: no size given in {spec!r}")
    return out


def trust(steady_reclaimable_pages: float, sim_epc_pages: int, sample: float) -> tuple[bool, str]:
    """Whether a point is to be trusted, and why not.

    A point is trusted iff the cache it measured is large enough for the kernel's fixed
    constants (the 32/64-page ksgxd watermarks, the 16-page batch, the SECS and VA
    pages) not to dominate: its steady reclaimable pages are at least
    max(``TRUSTED_MIN_RECLAIMABLE`` = 512, ``TRUSTED_MIN_SHARE`` = 50% of the simulated
    EPC's pages); and, sampled, its simulated EPC has at least ``SAMPLED_MIN_PAGES``.
    The reason is empty for a trusted point, else each failed test, ``; ``-separated.
    """
    why = []
    need = max(TRUSTED_MIN_RECLAIMABLE, TRUSTED_MIN_SHARE * sim_epc_pages)
    if steady_reclaimable_pages < need:
        which = (
            f"{TRUSTED_MIN_RECLAIMABLE}"
            if need == TRUSTED_MIN_RECLAIMABLE
            else f"{TRUSTED_MIN_SHARE:.0%} of the {sim_epc_pages} EPC pages"
        )
        why.append(f"steady reclaimable pages {steady_reclaimable_pages:.1f} < {which}")
    if sample != 1.0 and sim_epc_pages < SAMPLED_MIN_PAGES:
        why.append(f"sampled EPC {sim_epc_pages} pages < {SAMPLED_MIN_PAGES}")
    return not why, "; ".join(why)


def format_ratios(values: Sequence[float]) -> list[str]:
    """The miss ratios as fixed-point strings with enough digits to tell the points
    apart: at least 4 decimals and 4 significant digits of the smallest non-zero ratio
    (0.4301; 0.0004100), more where two different ratios would otherwise print the same.
    """
    nonzero = [abs(v) for v in values if v]
    d = 4
    if nonzero:
        d = max(d, 3 - math.floor(math.log10(min(nonzero))))
    distinct = len(set(values))
    while d < 17 and len({f"{v:.{d}f}" for v in values}) < distinct:
        d += 1
    return [f"{v:.{d}f}" for v in values]


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a fixed, well-mixed 64-bit hash of page ids."""
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def sample_pages(pages: np.ndarray, rate: float) -> np.ndarray:
    """The accesses whose page hashes under *rate* (spatial sampling)."""
    if not 0 < rate <= 1:
        raise EpcsimError(f"--sample: a rate in (0, 1], got {rate}")
    if rate == 1:
        return pages
    threshold = np.uint64(min(int(rate * 2.0**64), 2**64 - 1))
    return pages[_mix64(pages) < threshold]


def mrc_scenario(
    trace: str, epc_pages: int, accesses: int, costs: dict, experiments: dict
) -> dict[str, Any]:
    """The scenario of one size: the trace as one enclave (EAUG on demand, one thread) in
    ``/mrc`` (``misc.max`` max) on an EPC of *epc_pages*."""
    return {
        "name": "mrc",
        "host": {
            "epc": epc_pages * PAGE_SIZE,
            "cpus": 1,
            "duration": "100000s",
            "sample_interval": "100us",
            "costs": costs,
            "experiments": experiments,
        },
        "cgroup": [{"path": "/mrc", "max": "max"}],
        "enclave": [
            {
                "name": "trace",
                "cgroup": "/mrc",
                "build": "eaug",
                "workload": {"trace": trace, "format": "npy", "accesses": accesses},
            }
        ],
    }


def _run_one(args: tuple) -> tuple[int, int, float, float, float]:
    """One size: (accesses, misses, mean and steady-state reclaimable pages, seconds)."""
    from .scenario import load_scenario
    from .sim import simulate

    trace, epc_pages, accesses, costs, experiments = args
    t0 = time.perf_counter()
    sc = mrc_scenario(trace, epc_pages, accesses, costs, experiments)
    # the duration is only a cap (a truncated run is refused below): the memory estimate,
    # which bounds the samples by duration / sample_interval, does not apply
    r = simulate(load_scenario(sc, check_memory=False))
    e = r.summary["enclaves"]["trace"]
    if e["outcome"] != "success" or e["accesses"] != accesses:
        # an EPC too small for the enclave (SIGBUS: nothing reclaimable) must not give
        # a miss ratio of a partial run
        raise EpcsimError(
            f"--sizes: a simulated EPC of {epc_pages} pages is too small for this trace "
            f"(the enclave's outcome is {e['outcome']} after {e['accesses']} of "
            f"{accesses} accesses); use larger sizes or a larger --sample rate"
        )
    ts = cgroup_rows(r.timeseries)
    rows = np.asarray(ts["cgroup"].to_pylist()) == "/mrc"
    recl = np.asarray(ts["reclaimable_pages"])[rows]
    mean_recl = float(recl.mean()) if len(recl) else 0.0
    ev = np.asarray(ts["evictions"])[rows]
    # once reclaim has started the capacity binds: the occupancy from then on is the
    # cache size a size-equivalent CLOCK has (before, it is still filling up)
    steady = recl[(ev > 0) & (recl > 0)]
    steady_recl = float(steady.mean()) if len(steady) else float(recl.max(initial=0))
    return e["accesses"], e["faults"], mean_recl, steady_recl, time.perf_counter() - t0


def mrc(
    trace: str | Path,
    *,
    sizes: Sequence[int] | str | None = None,
    format: str | None = None,
    options: dict[str, Any] | None = None,
    sample: float | None = None,
    workers: int | None = None,
    costs: dict[str, int] | None = None,
    experiments: dict[str, bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[MrcPoint]:
    """The miss-ratio curve of *trace* under the v16 reclaimer.

    Args:
        trace: a trace file (any format of :mod:`epcsim.workload.traces`).
        sizes: EPC sizes in pages, or a ``--sizes`` string (:func:`parse_sizes`);
            default: 10 sizes from 10% to 100% of the footprint.
        sample: spatial sampling rate in (0, 1]; None or 1 = exact.
        workers: processes (default: the machine's CPUs).
        costs: cost-model overrides (they change timing, hence ksgxd's interleaving).
        experiments: ``host.experiments`` switches (e.g. ``{"fault_unreferenced": True}``).

    Raises:
        EpcsimError / TraceError: bad sizes, rate, or trace.
    """
    from .workload.traces import DenseMapper, open_trace

    reader = open_trace(trace, format=format, **(options or {}))
    mapper = DenseMapper()
    chunks = [mapper.map(c) for c in reader.pages()]
    pages = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
    if not len(pages):
        raise EpcsimError(f"{trace}: the trace has no accesses")
    footprint = int(pages.max()) + 1
    if sizes is None:
        sizes = "10%:100%:10"
    if isinstance(sizes, str):
        sizes = parse_sizes(sizes, footprint)
    rate = 1.0 if sample is None else float(sample)
    sampled = sample_pages(pages, rate)
    if not len(sampled):
        raise EpcsimError(f"--sample {rate}: no page of the trace is kept; use a larger rate")
    # renumber the kept pages densely (an enclave of the sampled footprint)
    kept, dense = np.unique(sampled, return_inverse=True)
    # scale sizes by the share of pages actually kept, not the nominal rate: the
    # sampled footprint varies around rate x footprint (SHARDS' size adjustment)
    scale = len(kept) / footprint
    sim_sizes = [max(1, int(round(s * scale))) for s in sizes]
    # the SECS and the VA pages are not reclaimable; an EPC of fewer pages than they
    # and two data pages take cannot run the trace (at 3 pages the fault path retries
    # forever, until the 100000 s virtual-time limit)
    floor = 1 + len(kept) // SGX_VA_SLOT_COUNT + 1 + 2
    for s, ss in zip(sizes, sim_sizes):
        if ss < floor:
            what = f"{s} pages" if ss == s else f"{s} pages (simulated: {ss})"
            raise EpcsimError(
                f"--sizes: an EPC of {what} is below the {floor} pages the enclave needs "
                "(SECS, VA pages and two data pages); use larger sizes"
                + ("" if rate == 1.0 else " or a larger --sample rate")
            )
    with tempfile.TemporaryDirectory(prefix="epcsim-mrc-") as tmp:
        path = os.path.join(tmp, "trace.npy")
        np.save(path, dense.astype(np.int64))
        jobs = [
            (path, s, len(dense), dict(costs or {}), dict(experiments or {})) for s in sim_sizes
        ]
        n_workers = max(1, min(len(jobs), workers or os.cpu_count() or 1))
        out: list[tuple[int, int, float, float, float]] = []
        if n_workers == 1:
            for k, j in enumerate(jobs):
                out.append(_run_one(j))
                if progress is not None:
                    progress(k + 1, len(jobs))
        else:
            with ProcessPoolExecutor(max_workers=n_workers) as ex:
                for k, res in enumerate(ex.map(_run_one, jobs)):
                    out.append(res)
                    if progress is not None:
                        progress(k + 1, len(jobs))
    # With sampling, the kept pages' share of the *accesses* varies around their share
    # of the pages (hot pages are kept or not as a block); the misses are divided by the
    # accesses expected from the page share (scale x N), as SHARDS' adjustment does,
    # so the sample's access surplus or deficit does not bias the ratio.
    expected = scale * len(pages) if rate < 1 else None
    points = []
    for s, ss, (acc, miss, recl, steady, wall) in zip(sizes, sim_sizes, out):
        denom = expected if expected else acc
        trusted, reason = trust(steady, ss, rate)
        points.append(
            MrcPoint(
                epc_pages=int(s),
                sim_epc_pages=ss,
                accesses=acc,
                misses=miss,
                miss_ratio=miss / denom if denom else 0.0,
                mean_reclaimable_pages=recl,
                steady_reclaimable_pages=steady,
                sample=rate,
                trusted=trusted,
                reason=reason,
                wall_s=wall,
            )
        )
    return points


def write_mrc(points: list[MrcPoint], out: str | Path, *, title: str = "") -> tuple[Path, Path]:
    """Write ``mrc.csv`` and ``mrc.png`` into *out*; returns their paths.

    Each file is written atomically (``epcsim._atomic``): an interrupted or failed write
    leaves no partial file and any previous one untouched.  ``miss_ratio`` is written
    with every digit (``repr`` of the float: it reads back as the same number).
    """
    import csv

    from ._atomic import atomic_open, atomic_path

    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    csv_path = d / "mrc.csv"
    fields = [f for f in MrcPoint.__dataclass_fields__ if f != "wall_s"]
    with atomic_open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for p in points:
            row = asdict(p)
            row.pop("wall_s")
            row["miss_ratio"] = repr(float(p.miss_ratio))
            row["mean_reclaimable_pages"] = f"{p.mean_reclaimable_pages:.1f}"
            row["steady_reclaimable_pages"] = f"{p.steady_reclaimable_pages:.1f}"
            w.writerow(row)
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), dpi=100)
    ax = fig.add_subplot()
    x = [p.epc_pages * PAGE_SIZE / 2**20 for p in points]
    y = [p.miss_ratio for p in points]
    ax.plot(x, y, marker="o", label="v16 reclaimer (epcsim)")
    bad = [(xx, yy) for xx, yy, p in zip(x, y, points) if not p.trusted]
    if bad:
        ax.scatter(*zip(*bad), color="red", zorder=3, label="not trusted (mrc.csv: reason)")
    ax.set_xlabel("EPC size (MiB)")
    ax.set_ylabel("miss ratio")
    # resolved faults can outnumber accesses at tiny EPCs (a page reclaimed before its
    # retried access): do not cut those points off; a curve of small ratios (a trace
    # that fits, 0.0004) gets an axis that shows it rather than a flat line at 0
    top = max(y, default=0.0)
    ax.set_ylim(0, max(1.02, 1.02 * top) if top >= 0.1 else (1.1 * top or 1.0))
    ax.grid(alpha=0.3)
    ax.set_title(title or "miss-ratio curve")
    ax.legend()
    png = d / "mrc.png"
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    return csv_path, png
