"""The exact and sampled miss-ratio curves of a trace under the v16 reclaimer, against
libCacheSim's CLOCK (issue 5 evidence).

    pip install libcachesim
    python benchmarks/mrc_vs_clock.py [TRACE] [--sizes 10%:100%:10] [--sample 0.1]

Columns: CLOCK-ref is CLOCK inserting objects referenced (init_freq=1); unref is epcsim
with the experiment switch host.experiments.fault_unreferenced (the retried access after
a fault does not set the accessed bit), compared with the default CLOCK.

For each EPC size: epcsim's miss ratio (one enclave, EAUG on demand, misc.max = max, the
full model), the mean number of resident reclaimable pages epcsim had (time average of
the LRU length), libCacheSim's CLOCK on the same accesses (every object 4096 bytes,
written in oracleGeneral format and read through its trace reader by process_trace)
with that many pages of cache and its hash table sized to the footprint, and the gap in
percentage points; then the sampled curve and its gap to the exact one.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from epcsim.mrc import mrc
from epcsim.workload.traces import DenseMapper, open_trace

DEFAULT_TRACE = (
    Path(__file__).resolve().parents[1].parent
    / "shared/data/traces/cloudPhysicsIO.oracleGeneral.bin"
)
REC = np.dtype([("t", "<u4"), ("id", "<u8"), ("sz", "<u4"), ("nx", "<i8")])


def clock_miss_ratio(
    pages: np.ndarray, cache_pages: int, path: str, *, init_freq: int = 0
) -> tuple[float, float]:
    """(miss ratio, seconds) of libCacheSim's CLOCK on *pages* with *cache_pages* pages;
    ``init_freq=1`` inserts objects referenced (as a faulted-in EPC page starts)."""
    import libcachesim as lcs

    footprint = int(pages.max()) + 1
    cache = lcs.Clock(
        cache_size=cache_pages * 4096,
        hashpower=max(10, math.ceil(math.log2(footprint)) + 1),
        init_freq=init_freq,
    )
    reader = lcs.TraceReader(path, lcs.TraceType.ORACLE_GENERAL_TRACE)
    t0 = time.perf_counter()
    mr, _ = cache.process_trace(reader)
    return float(mr), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace", nargs="?", default=str(DEFAULT_TRACE))
    ap.add_argument("--sizes", default="10%:100%:10")
    ap.add_argument("--sample", type=float, default=0.1)
    args = ap.parse_args()

    reader = open_trace(args.trace)
    mapper = DenseMapper()
    pages = np.concatenate([mapper.map(c) for c in reader.pages()])
    print(f"trace {args.trace}: {len(pages)} accesses, footprint {mapper.footprint} pages")
    with tempfile.TemporaryDirectory() as tmp:
        lcs_path = str(Path(tmp) / "trace.oracleGeneral.bin")
        rec = np.zeros(len(pages), dtype=REC)
        rec["t"] = np.arange(len(pages), dtype=np.uint32)
        rec["id"] = pages.astype(np.uint64) + 1
        rec["sz"] = 4096
        rec["nx"] = -1
        rec.tofile(lcs_path)

        t0 = time.perf_counter()
        exact = mrc(args.trace, sizes=args.sizes)
        t_exact = time.perf_counter() - t0
        unref = mrc(args.trace, sizes=args.sizes, experiments={"fault_unreferenced": True})
        t0 = time.perf_counter()
        sampled = mrc(args.trace, sizes=[p.epc_pages for p in exact], sample=args.sample)
        t_sampled = time.perf_counter() - t0
        print(
            f"{'EPC pages':>9} {'epcsim':>8} {'steady':>7} {'CLOCK':>8} {'gap pp':>7}"
            f" {'CLOCK-ref':>9} {'gap pp':>7} {'unref':>8} {'gap pp':>7}"
            f" {'sampled':>8} {'s-gap pp':>8} {'s-EPC':>6}"
        )
        worst = worst_ref = worst_unref = worst_s = 0.0
        for p, u, q in zip(exact, unref, sampled):
            cache = max(1, round(p.steady_reclaimable_pages))
            mr, _ = clock_miss_ratio(pages, cache, lcs_path)
            mr_ref, _ = clock_miss_ratio(pages, cache, lcs_path, init_freq=1)
            mr_u, _ = clock_miss_ratio(pages, max(1, round(u.steady_reclaimable_pages)), lcs_path)
            gap = 100 * (p.miss_ratio - mr)
            gap_ref = 100 * (p.miss_ratio - mr_ref)
            gap_u = 100 * (u.miss_ratio - mr_u)
            sgap = 100 * (q.miss_ratio - p.miss_ratio)
            worst = max(worst, abs(gap))
            worst_ref = max(worst_ref, abs(gap_ref))
            worst_unref = max(worst_unref, abs(gap_u))
            if q.trusted:
                worst_s = max(worst_s, abs(sgap))
            flag = "" if q.trusted else " (untrusted)"
            print(
                f"{p.epc_pages:>9} {p.miss_ratio:>8.4f} {p.steady_reclaimable_pages:>7.0f}"
                f" {mr:>8.4f} {gap:>+7.2f} {mr_ref:>9.4f} {gap_ref:>+7.2f}"
                f" {u.miss_ratio:>8.4f} {gap_u:>+7.2f}"
                f" {q.miss_ratio:>8.4f} {sgap:>+8.2f} {q.sim_epc_pages:>6}{flag}"
            )
    print(f"wall: exact curve {t_exact:.1f} s, sampled (rate {args.sample}) {t_sampled:.1f} s")
    print(f"worst |gap| to CLOCK: {worst:.2f} pp (kernel: a faulted-in page starts referenced)")
    print(f"worst |gap| to CLOCK inserting referenced (init_freq=1): {worst_ref:.2f} pp")
    print(f"worst |gap| with fault_unreferenced on, to default CLOCK: {worst_unref:.2f} pp")
    print(f"worst |sampled - exact| where the sampled EPC is trusted: {worst_s:.2f} pp")


if __name__ == "__main__":
    main()
