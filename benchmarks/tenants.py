"""Multi-tenant throughput (issue 4): 16 cgroups in a two-level tree, 64 enclaves with
Zipf workloads, sum of limits 1.5x the EPC, through the full simulator.

    python benchmarks/tenants.py [--accesses 50000000] [--epc 256MiB]

Prints accesses per second of wall time and simulated seconds per wall second.  No peer
exists for this measurement.
"""

from __future__ import annotations

import argparse
import time

from epcsim.scenario import load_scenario
from epcsim.sim import simulate
from epcsim.units import parse_size


def scenario(epc: int, accesses: int) -> dict:
    groups, per_group, encl_per_cg = 4, 4, 4  # 4 parents x 4 children = 16 cgroups
    n_cg = groups * per_group
    limit = int(epc * 1.5 / n_cg) // 4096 * 4096
    cgroups, enclaves = [], []
    for g in range(groups):
        cgroups.append({"path": f"/t{g}"})
        for c in range(per_group):
            path = f"/t{g}/c{c}"
            cgroups.append({"path": path, "max": limit})
            for e in range(encl_per_cg):
                enclaves.append(
                    {
                        "name": f"e{g}{c}{e}",
                        "cgroup": path,
                        "size": limit // encl_per_cg * 2,  # each enclave twice its share
                        "build": "eaug",
                        "workload": {
                            "pattern": "zipf",
                            "alpha": 0.9,
                            "accesses": accesses // (n_cg * encl_per_cg),
                        },
                    }
                )
    return {
        "name": "tenants",
        "host": {"epc": epc, "cpus": 64, "duration": "10000s", "sample_interval": "10ms"},
        "cgroup": cgroups,
        "enclave": enclaves,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accesses", type=int, default=50_000_000)
    ap.add_argument("--epc", default="256MiB")
    args = ap.parse_args()
    sc = load_scenario(scenario(parse_size(args.epc), args.accesses))
    t0 = time.perf_counter()
    r = simulate(sc)
    wall = time.perf_counter() - t0
    s = r.summary
    acc = sum(e["accesses"] for e in s["enclaves"].values())
    faults = sum(e["faults"] for e in s["enclaves"].values())
    sim_s = s["sim_time_ns"] / 1e9
    print(f"enclaves: {len(s['enclaves'])}, cgroups: {len(s['cgroups'])}, EPC {args.epc}")
    print(f"accesses: {acc:,}  faults: {faults:,}  evictions: {s['encls']['EWB']:,}")
    print(f"wall: {wall:.1f} s  virtual: {sim_s:.3f} s (cost-model estimate)")
    print(f"accesses per second (wall): {acc / wall:,.0f}")
    print(f"simulated seconds per wall second: {sim_s / wall:.4f}")


if __name__ == "__main__":
    main()
