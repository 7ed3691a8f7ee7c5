"""Kernel-model allocation throughput and memory footprint (issue: the faithful model).

A host of 2 GiB EPC, one cgroup limited to 1 GiB, one enclave that adds 4 GiB of pages
(about 1M page allocations; once the limit is reached every 16th charge fails and the
synchronous charge loop reclaims a 16-page batch).  Prints pages allocated per second and
bytes of model state per EPC page and per enclave page.

    python benchmarks/bench_kernel.py [--gib-added 4] [--repeat 3] [--profile]

The run is repeated (a fresh host each time) and the best and median rates are printed:
on a shared 2-CPU machine single runs vary by +-30%.  No peer exists for this
measurement (the kernel series was never merged).
"""

from __future__ import annotations

import argparse
import time

from epcsim.kernel import Host, check_invariants, drive, ioctl

GIB = 1 << 30


def one_run(args: argparse.Namespace) -> tuple[float, float, dict]:
    """One run on a fresh host: (host creation s, add wall s, facts)."""
    t0 = time.perf_counter()
    host = Host(int(args.epc_gib * GIB))
    t_host = time.perf_counter() - t0
    fs = host.fs
    fs.write("/cgroup.subtree_control", "+misc +memory")
    fs.mkdir("/bench")
    fs.write("/bench/misc.max", f"sgx_epc {int(args.limit_gib * GIB)}")
    task = host.spawn("/bench")
    added = int(args.gib_added * GIB)
    size = 1
    while size < added:
        size <<= 1
    encl = ioctl.sgx_open(host, task)
    drive(ioctl.ioc_enclave_create(host, task, encl, size))

    def run() -> None:
        drive(ioctl.ioc_enclave_add_pages(host, task, encl, 0, added, measure=False))

    t1 = time.perf_counter()
    if args.profile:
        from pyinstrument import Profiler

        with Profiler() as p:
            run()
        p.print()
    else:
        run()
    dt = time.perf_counter() - t1
    sgx_cg = host.sgx_cgroup_of("/bench")
    check_invariants(host, quiescent=True)
    facts = {
        "pages": host.epc.nr_pages,
        "allocs": encl.nr_added + len(encl.va_all) + 1,  # pages + VA pages + SECS
        "evicted": sgx_cg.nr_evicted,
        "events": sgx_cg.cg.events,
        "batches": sgx_cg.nr_reclaim_batches,
        "epc_bytes": host.epc.nbytes() / host.epc.nr_pages,
        "encl_bytes": encl.nbytes() / encl.npages,
    }
    return t_host, dt, facts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epc-gib", type=float, default=2.0)
    ap.add_argument("--limit-gib", type=float, default=1.0)
    ap.add_argument("--gib-added", type=float, default=4.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="run under pyinstrument")
    args = ap.parse_args()
    runs = [one_run(args) for _ in range(max(1, args.repeat))]
    t_host, _, f = runs[0]
    rates = sorted(f["allocs"] / dt for _, dt, f in runs)
    print(f"host creation ({f['pages']} EPC pages): {t_host:.3f} s")
    t0 = time.perf_counter()
    big = Host(64 * GIB)
    big.fs.write("/cgroup.subtree_control", "+misc")
    for i in range(64):
        big.fs.mkdir(f"/c{i}")
    t_big = time.perf_counter() - t0
    print(
        f"host with 64 GiB of EPC ({big.epc.nr_pages:,} pages) and 64 cgroups: "
        f"{t_big:.2f} s  (target < 5 s)"
    )
    del big
    print(
        f"page allocations: {f['allocs']}  evicted: {f['evicted']}  "
        f"max events: {f['events']}  reclaim batches: {f['batches']}"
    )
    print("walls: " + ", ".join(f"{dt:.2f} s" for _, dt, _ in runs))
    print(
        f"allocations per second: best {rates[-1]:,.0f}, median {rates[len(rates) // 2]:,.0f}"
        "  (floor 150,000)"
    )
    print(f"model state per EPC page: {f['epc_bytes']:.1f} bytes  (target <= 32)")
    print(f"model state per enclave page: {f['encl_bytes']:.1f} bytes  (target <= 16)")


if __name__ == "__main__":
    main()
