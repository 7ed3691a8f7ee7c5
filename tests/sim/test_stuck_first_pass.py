"""The stuck rule and a reclaimer's first pass over a large LRU of young pages.

A Zipf enclave fills a 920 MiB EPC (235,520 pages) on one CPU; every faulted page was
accessed, so ksgxd's first pass only clears accessed bits (about 14,700 batches) before
anything can be freed.  The thread retries its fault meanwhile -- 11,993 times in all,
more than STUCK_RETRIES -- and used to be called ``stuck`` at 678,736 of its 800,000
accesses although the pass ends with pages freed.  Pages aged in the thread's cgroup's
subtree now count as progress (``SgxCgroup.nr_aged``, ``CG_NR_AGED``)."""

from __future__ import annotations

import pytest

import epcsim
from epcsim.sim.stuck import STUCK_RETRIES

SCENARIO = """\
name = "first-pass"
[host]
epc = "920MiB"
cpus = 1
duration = "100s"
sample_interval = "5ms"

[[cgroup]]
path = "/t"

[[enclave]]
name = "t"
cgroup = "/t"
build = "eaug"
size = "3900MiB"
workload = { pattern = "zipf", alpha = 0.9, accesses = 800000 }
"""


def _check(r: epcsim.Result) -> None:
    e = r.summary["enclaves"]["t"]
    assert (e["outcome"], e["accesses"], e["stuck_threads"]) == ("success", 800_000, 0)
    assert e["fault_retries"] == 11_993 > STUCK_RETRIES


def test_a_first_aging_pass_is_not_stuck_compiled() -> None:
    r = epcsim.run(SCENARIO, engine="compiled")
    assert r.engine == "compiled"
    _check(r)


@pytest.mark.slow
def test_a_first_aging_pass_is_not_stuck_both_engines() -> None:
    """``engine="check"``: the reference gives the same (about 2 minutes)."""
    _check(epcsim.run(SCENARIO, engine="check"))
