"""What a run reports to its ``progress`` callback: the work done against the work to do.

The work to do is the accesses of every enclave thread (its share of the workload's
``accesses``, or its trace's length for a trace played once; a vEPC's pages) plus one
unit per kselftest process.  An instance that has ended counts as done whatever it did
(a killed enclave's remaining accesses are no longer to do), so a run that completes
ends at ``done == total``.  Where the work is not known in advance (a workload bounded
by ``duration``, or a trace played once whose instance has not started yet) ``total`` is
None and the virtual time against ``host.duration`` is all there is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Instance, Simulation

__all__ = ["SimProgress", "compiled_core_cached", "sim_progress"]


class SimProgress(NamedTuple):
    """The value passed to a run's ``progress`` callback."""

    #: virtual time now and the virtual-time limit (``host.duration``), in ns
    now_ns: int
    limit_ns: int
    #: work done so far and the work to do (None: not known in advance)
    done: int
    total: int | None
    #: what the work counts: "accesses", "selftest processes" or both
    unit: str


def _instance_work(inst: Instance) -> tuple[int, int | None, int, int]:
    """(done, total or None, accesses part, processes part) of one instance."""
    from ..scenario.schema import VepcSpec

    spec = inst.spec
    ended = inst.ended_ns >= 0
    if isinstance(spec, VepcSpec):  # its pages, touched in one kernel operation
        total = int(spec.pages)
        return (total if ended or inst.threads else 0), total, total, 0
    if spec.program == "kselftest":
        return (1 if ended else 0), 1, 0, 1
    if inst.threads:
        if any(t.target <= 0 for t in inst.threads):
            return sum(t.accesses for t in inst.threads), None, 0, 0
        total = sum(t.target for t in inst.threads)
        done = total if ended else sum(min(t.accesses, t.target) for t in inst.threads)
        return done, total, total, 0
    wl = spec.workload or {}
    if "duration" in wl or "accesses" not in wl:
        # duration-bound, or a trace played once whose length is read at its start
        return 0, None, 0, 0
    total = int(wl["accesses"])
    return (total if ended else 0), total, total, 0


def sim_progress(sim: Simulation, now_ns: int) -> SimProgress:
    """The progress of *sim* at virtual time *now_ns* (instances started by hand
    count once they have started)."""
    done = 0
    total: int | None = 0
    acc = procs = 0
    for inst in sim.instances.values():
        if inst.started_ns < 0 and inst.ended_ns < 0 and str(inst.spec.start) == "manual":
            continue
        d, t, a, p = _instance_work(inst)
        done += d
        acc += a
        procs += p
        total = None if total is None or t is None else total + t
    unit = (
        " + ".join(u for u, n in (("accesses", acc), ("selftest processes", procs)) if n)
        or "accesses"
    )
    return SimProgress(now_ns, sim.limit_ns, done, total or None, unit)


def compiled_core_cached() -> bool:
    """Whether the compile cache holds the compiled engine's core for the current
    source and versions (False: the first compiled run compiles it, 30-40 s).  True
    when nothing is compiled (``NUMBA_DISABLE_JIT=1``) or this cannot be told (the bar
    then just says "simulating")."""
    try:
        from ..compiled._jit import is_cached
        from ..compiled.loop import run_core

        return is_cached(run_core)
    except Exception:  # pragma: no cover - numba internals moved: do not claim a compile
        return True
