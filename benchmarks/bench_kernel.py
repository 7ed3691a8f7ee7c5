"""Kernel-model allocation throughput and memory footprint (issue: the faithful model).

A host of 2 GiB EPC, one cgroup limited to 1 GiB, one enclave that adds 4 GiB of pages
(about 1M page allocations; once the limit is reached every 16th charge fails and the
synchronous charge loop reclaims a 16-page batch).  Prints pages allocated per second and
bytes of model state per EPC page and per enclave page.

    python benchmarks/bench_kernel.py [--gib-added 4] [--repeat 3] [--profile] [--scale-only]

Then memory proportional to use (issue 15): in a fresh process each, a 64 GiB and a
1 TiB host (``host.epc = "1TiB"``, 268M EPC pages) are created (best of
``--create-repeat``) and run a small workload (an 8 MiB enclave built, 4,000 accesses);
printed: each one's creation time and growth of the resident set, and the ratios the
issue sets as targets (creation <= 1.5x, RSS difference < 50 MB).

The run is repeated (a fresh host each time) and the best and median rates are printed:
on a shared 2-CPU machine single runs vary by +-30%.  No peer exists for this
measurement (the kernel series was never merged).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
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


def _rss() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process, bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
    return out["VmRSS"], out["VmHWM"]


def scale_child(epc: str, repeat: int) -> dict:
    """In a fresh process: create a host of *epc* (best of *repeat*), then build an
    8 MiB enclave and run 4,000 uniform accesses; times and resident-set growth."""
    import numpy as np

    rss0, _ = _rss()
    best = float("inf")
    host = None
    for _ in range(max(1, repeat)):
        del host
        t0 = time.perf_counter()
        host = Host(epc)
        best = min(best, time.perf_counter() - t0)
    rss_host, _ = _rss()
    task = host.spawn("/")
    encl = ioctl.sgx_open(host, task)
    size = 8 << 20
    drive(ioctl.ioc_enclave_create(host, task, encl, size))
    drive(ioctl.ioc_enclave_add_pages(host, task, encl, 0, size, measure=False))
    ioctl.ioc_enclave_init(host, task, encl)
    pages = np.random.default_rng(0).integers(0, size // 4096, 4000)
    res = drive(ioctl.encl_access(host, task, encl, pages))
    check_invariants(host, quiescent=True)
    rss_end, hwm = _rss()
    return {
        "pages": host.epc.nr_pages,
        "create_s": best,
        "rss_host": rss_host - rss0,
        "rss_end": rss_end - rss0,
        "hwm": hwm - rss0,
        "done": res.done,
        "used": sum(fl.hwm - int(s) for fl, s in zip(host.epc.free_lists, host.epc.section_start)),
    }


def scale(args: argparse.Namespace) -> None:
    """64 GiB against 1 TiB, each in a fresh process (issue 15's targets)."""
    out = {}
    for epc in ("64GiB", "1TiB"):
        r = subprocess.run(
            [
                sys.executable,
                __file__,
                "--scale-child",
                epc,
                "--create-repeat",
                str(args.create_repeat),
            ],
            capture_output=True,
            text=True,
            check=True,
            env=os.environ,
        )
        out[epc] = json.loads(r.stdout.strip().splitlines()[-1])
    print("memory proportional to use (a host, then an 8 MiB enclave built and 4,000 accesses):")
    mb = 1e6
    for epc, f in out.items():
        print(
            f"  {epc:>5} ({f['pages']:,} EPC pages): creation {f['create_s'] * 1e3:.3f} ms "
            f"(best of {args.create_repeat}), RSS +{f['rss_host'] / mb:.1f} MB after creation, "
            f"+{f['rss_end'] / mb:.1f} MB after the workload (peak +{f['hwm'] / mb:.1f} MB); "
            f"{f['used']:,} EPC pages used, {f['done']:,} accesses"
        )
    a, b = out["64GiB"], out["1TiB"]
    print(f"  creation 1 TiB / 64 GiB: {b['create_s'] / a['create_s']:.2f}x  (target <= 1.5x)")
    print(
        f"  RSS 1 TiB - 64 GiB after the workload: {(b['rss_end'] - a['rss_end']) / mb:+.1f} MB"
        f", peak {(b['hwm'] - a['hwm']) / mb:+.1f} MB  (target < 50 MB)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epc-gib", type=float, default=2.0)
    ap.add_argument("--limit-gib", type=float, default=1.0)
    ap.add_argument("--gib-added", type=float, default=4.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="run under pyinstrument")
    ap.add_argument("--create-repeat", type=int, default=20, help="host creations (best)")
    ap.add_argument("--scale-only", action="store_true", help="only 64 GiB against 1 TiB")
    ap.add_argument("--scale-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scale_child:
        print(json.dumps(scale_child(args.scale_child, args.create_repeat)))
        return
    if args.scale_only:
        scale(args)
        return
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
    scale(args)


if __name__ == "__main__":
    main()
