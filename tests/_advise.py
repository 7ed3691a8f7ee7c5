"""The synthetic evaluator of the advise tests (issue 16): two tenants /a and /b whose
slowdown is a function of the limits, no simulation run."""

from __future__ import annotations

from collections.abc import Callable

P = 4096
#: two tenants /a and /b (scenario limits 32 and 8 pages) in a 64-page EPC
TWO = """\
name = "two"
[host]
epc = "256KiB"
seed = 1
[[cgroup]]
path = "/a"
max = "32pages"
[[cgroup]]
path = "/b"
max = "8pages"
[[enclave]]
name = "ea"
cgroup = "/a"
size = "16pages"
workload = { pattern = "uniform", accesses = 100 }
[[enclave]]
name = "eb"
cgroup = "/b"
size = "16pages"
workload = { pattern = "uniform", accesses = 100 }
"""
SCENARIO_LIMIT = {"/a": 32 * P, "/b": 8 * P}
Curve = Callable[[str, dict[str, int], int], float | None]


class Synthetic:
    """An evaluator from a function (tenant, limits in pages, seed) -> slowdown; the
    limits of the tenants left out are the scenario's.  Records every batch."""

    def __init__(self, f: Curve, seeds: tuple[int, ...] = (1,), outcome: str = "success"):
        self.f = f
        self.seeds = seeds
        self.outcome = outcome
        self.batches: list[list[dict[str, int]]] = []

    def __call__(self, assignments: list[dict[str, int]]) -> list[list[dict]]:
        self.batches.append(assignments)
        out = []
        for a in assignments:
            pages = {t: (a.get(t, SCENARIO_LIMIT[t])) // P for t in SCENARIO_LIMIT}
            rows = []
            for s in self.seeds:
                for t in ("/a", "/b"):
                    v = self.f(t, pages, s)
                    rows.append({"seed": s, "cgroup": t, "enclave": None, "slowdown": v})
                    rows.append(
                        {
                            "seed": s,
                            "cgroup": t,
                            "enclave": "e" + t[1],
                            "slowdown": v,
                            "outcome": self.outcome,
                        }
                    )
            out.append(rows)
        return out


def independent(t: str, p: dict[str, int], seed: int) -> float:
    return 100 / p["/a"] if t == "/a" else 10 / p["/b"]
