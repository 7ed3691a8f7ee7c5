"""What a scenario may ask of the model and of the machine, checked when it is loaded.

Two kinds of bound (``docs/SCENARIOS.md``, "Limits and memory"):

* **Model limits**, the same on every machine: sizes the model's arrays cannot index
  (EPC and enclave page indices are ``int32``, cgroup ids ``int16``) and a cap on the
  number of enclave threads.  A scenario above one is refused with a
  :class:`~epcsim.errors.ScenarioError` naming the field, the value and the limit.
* **The memory estimate**: an upper bound on the memory a run takes, from a documented
  formula (:func:`estimate_memory`).  Above the memory available on this machine
  (:func:`available_memory`) the scenario is refused; above
  :data:`WARN_FRACTION` (half) of it, loading warns with :class:`MemoryEstimateWarning`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import EpcsimError
from ..kernel.constants import PAGE_SIZE, SGX_NR_HIGH_PAGES, SGX_VA_SLOT_COUNT
from ..kernel.host import MAX_EPC_PAGES as _HOST_MAX_EPC_PAGES
from ..units import parse_size, parse_time

if TYPE_CHECKING:
    from .schema import Scenario

__all__ = [
    "MAX_EPC_PAGES",
    "MAX_ENCL_PAGES",
    "MAX_VEPC_PAGES",
    "MAX_CGROUPS",
    "MAX_THREADS",
    "MEMORY_ENV",
    "WARN_FRACTION",
    "MemoryEstimate",
    "MemoryEstimateWarning",
    "available_memory",
    "epc_pages_used",
    "estimate_memory",
]

#: EPC pages a host may have: EPC page numbers are int32 (``EpcPool`` list links and
#: owners, the enclaves' ``epc`` column, the compiled engine's copies), -1 meaning none.
MAX_EPC_PAGES = _HOST_MAX_EPC_PAGES
#: ELRANGE pages of one enclave (the size rounded up to a power of two): enclave page
#: numbers are int32 (``EpcPool.owner_idx``, VA slot ids), so at most 2^30 pages (4 TiB).
MAX_ENCL_PAGES = 2**30
#: guest pages of one vEPC (its page table is an int32 array of EPC page numbers).
MAX_VEPC_PAGES = 2**31 - 1
#: cgroups a scenario may create (``[[cgroup]]`` plus ``[[at]] mkdir``): cgroup ids are
#: int16 (``EpcPool.cg``, the enclaves' ``memcg`` column), the root is id 0.
MAX_CGROUPS = 2**15 - 1
#: enclave threads in all (the sum of ``count * threads``): each is an actor with its
#: own random stream and access buffer, run one step at a time.
MAX_THREADS = 65_536

#: environment variable overriding the available memory (a size: "8GiB", bytes)
MEMORY_ENV = "EPCSIM_MEMORY_AVAILABLE"
#: an estimate above this share of the available memory warns
WARN_FRACTION = 0.5

# --- the formula (bytes), measured on the model (docs/SCENARIOS.md) ----------------------

#: per EPC page the run may allocate: 20 bytes of state (epc.py); a page never
#: allocated costs nothing (the pool's arrays are zero-filled, the free lists' pristine
#: ranges are never written: epcsim.kernel.lru.EpcFreeList)
PER_EPC_PAGE = 20
#: per ELRANGE page of every enclave process: 12 bytes of state (encl.py), the compiled
#: engine's packed copy (12) and its hit bits and VA rows (2), and 10 more for the
#: temporaries of its release (the bulk free of its resident pages: measured, once the
#: EPC term counted only the pages used and no longer covered them)
PER_ENCL_PAGE = 36
#: per ELRANGE page of a Zipf workload (shared by its processes): the CDF (float64), the
#: rank -> page permutation (int64) and a temporary of building it
PER_ZIPF_PAGE = 24
#: per vEPC guest page: its int32 EPC page number
PER_VEPC_PAGE = 4
#: per time-series row (one cgroup at one sample): the columns as Python lists, the Arrow
#: table built from them and the Parquet writer's buffers (measured: ~250 bytes)
PER_SAMPLE_ROW = 320
#: per enclave thread: the actor, its stats, its random stream
PER_THREAD = 16 << 10
#: per access a thread buffers (at most 65,536 int64 page numbers per thread)
PER_BUFFERED_ACCESS = 8
THREAD_BUFFER_ACCESSES = 65_536
#: per fault: its latency (int64) in the engine's buffer, the compiled engine's hand-over
#: array (grown by doubling) and the final concatenation
PER_FAULT = 24
#: the interpreter, NumPy, pyarrow and the numba engine once loaded are not counted


class MemoryEstimateWarning(UserWarning):
    """A scenario's run is estimated to take much of this machine's memory."""


@dataclass(frozen=True)
class MemoryEstimate:
    """An upper bound on a run's memory, by part: ``parts[name] = (bytes, table, field,
    what)`` where *table.field* is the scenario field that drives that part."""

    parts: dict[str, tuple[int, str, str, str]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(b for b, *_ in self.parts.values())

    def largest(self) -> tuple[str, tuple[int, str, str, str]]:
        return max(self.parts.items(), key=lambda kv: kv[1][0])

    def describe(self) -> str:
        """The parts above 1% of the total, largest first: ``"8GiB for 2^28 EPC pages"``."""
        items = sorted(self.parts.values(), key=lambda p: -p[0])
        shown = [f"{_gib(b)} for {what}" for b, _, _, what in items if b * 100 >= self.total]
        return ", ".join(shown)


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


def available_memory() -> tuple[int | None, str]:
    """(bytes, where from): ``$EPCSIM_MEMORY_AVAILABLE`` (a size), else ``MemAvailable``
    of ``/proc/meminfo``, else ``os.sysconf`` available physical pages; None if unknown.

    Raises:
        EpcsimError: ``$EPCSIM_MEMORY_AVAILABLE`` is not a size.
    """
    env = os.environ.get(MEMORY_ENV)
    if env is not None and env.strip():
        return parse_size(env.strip(), what=MEMORY_ENV), MEMORY_ENV
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "sysconf"
    except (OSError, ValueError, AttributeError):
        return None, "unknown"


def elrange_pages(nbytes: int, program: str | None = None) -> int:
    """Pages of the ELRANGE of an enclave with *nbytes* of data (the heap for
    ``program = "kselftest"``, plus test_sgx's own pages): the next power of two, at
    least 2 pages."""
    if program == "kselftest":
        from ..programs.kselftest import test_sgx_pages

        return test_sgx_pages(nbytes)[1] // PAGE_SIZE
    size = 2 * PAGE_SIZE
    while size < nbytes:
        size <<= 1
    return size // PAGE_SIZE


def estimate_memory(
    sc: Scenario,
    enclave_bytes: list[int] | None = None,
    trace_accesses: dict[int, list[int]] | None = None,
) -> MemoryEstimate:
    """The memory estimate of a validated scenario *sc*.  *enclave_bytes*: each
    ``[[enclave]]``'s data bytes (0 when a trace gives the size), computed from *sc* if
    not given.  *trace_accesses*: for a trace workload (by enclave index), the accesses
    of each of its trace paths, as validation counted them: a thread without
    ``accesses`` or ``duration`` runs its trace once, so its faults are bounded by them.

    Formula (every term an upper bound; ``docs/SCENARIOS.md``)::

        PER_EPC_PAGE    x EPC pages the run may allocate (epc_pages_used())
      + PER_ENCL_PAGE   x sum over enclaves of count x ELRANGE pages
      + PER_ZIPF_PAGE   x sum over Zipf enclaves of ELRANGE pages
      + PER_VEPC_PAGE   x vEPC pages
      + PER_SAMPLE_ROW  x (duration / sample_interval + 2) x (1 + cgroups created)
      + per thread: PER_THREAD + PER_BUFFERED_ACCESS x min(65536, its accesses)
                    + PER_FAULT x its faults, at most min(its accesses (a trace
                      run once: the trace's),
                      min(duration, workload duration) / costs.fault)
                    (none for the kselftest program, which records no latencies)
    """
    from ..costs import CostModel

    h = sc.host
    if enclave_bytes is None:
        from .schema import eval_size

        enclave_bytes = [
            eval_size(e.size, sc.capacity, what="size") if e.size is not None else 0
            for e in sc.enclave
        ]
    parts: dict[str, tuple[int, str, str, str]] = {}
    epc_pages = sc.capacity // PAGE_SIZE
    epc_field = "epc" if h.epc is not None else "sections"
    used = epc_pages_used(sc, enclave_bytes)
    what = f"{epc_pages} EPC pages" if used == epc_pages else f"{used} of {epc_pages} EPC pages"
    parts["epc"] = (PER_EPC_PAGE * used, "host", epc_field, what)
    duration = parse_time(h.duration)
    interval = parse_time(h.sample_interval)
    ncg = 1 + len(sc.cgroup) + sum(1 for a in sc.at if a.mkdir)
    samples = duration // interval + 2
    parts["samples"] = (
        PER_SAMPLE_ROW * samples * ncg,
        "host",
        "sample_interval",
        f"{samples} samples x {ncg} cgroups",
    )
    costs = CostModel(**{k: parse_time(v, what=k) for k, v in h.costs.items()})
    # a resolved fault is one step of at least costs.fault (and of at least 1 ns)
    per_fault_ns = max(1, costs.fault)
    encl_pages = zipf_pages = threads = buffered = faults = 0
    top_pages = top_threads = (0, 0)  # (amount, index): the enclave to name
    for i, (e, data) in enumerate(zip(sc.enclave, enclave_bytes, strict=True)):
        pages = elrange_pages(data, e.program)
        encl_pages += e.count * pages
        top_pages = max(top_pages, (e.count * pages, -i))
        top_threads = max(top_threads, (e.count * e.threads, -i))
        wl = e.workload or {}
        if wl.get("pattern") == "zipf" or any(
            isinstance(p, dict) and p.get("pattern") == "zipf" for p in wl.get("phases", [])
        ):
            zipf_pages += pages
        run_ns = duration
        if "duration" in wl:
            run_ns = min(run_ns, parse_time(wl["duration"]))
        time_bound = run_ns // per_fault_ns + 1
        total = wl.get("accesses")
        once = None  # a trace run once per thread: each thread's accesses
        if "trace" in wl and total is None and "duration" not in wl and trace_accesses:
            once = trace_accesses.get(i)
        threads += e.count * e.threads
        if e.program is not None:
            continue  # test_sgx records no fault latencies and buffers no accesses
        for k in range(e.threads):
            share = math.inf
            if isinstance(total, int):
                share = total // e.threads + (1 if k < total % e.threads else 0)
            elif once:
                share = once[k] if len(once) == e.threads else once[0]
            buffered += e.count * int(min(THREAD_BUFFER_ACCESSES, share))
            faults += e.count * int(min(share, time_bound))
    parts["enclave pages"] = (
        PER_ENCL_PAGE * encl_pages + PER_ZIPF_PAGE * zipf_pages,
        f"enclave[{-top_pages[1]}]",
        "size",
        f"{encl_pages} enclave pages",
    )
    vepc_pages = sum(v.pages for v in sc.vepc)
    parts["vepc"] = (PER_VEPC_PAGE * vepc_pages, "vepc", "pages", f"{vepc_pages} vEPC pages")
    parts["threads"] = (
        PER_THREAD * threads + PER_BUFFERED_ACCESS * buffered,
        f"enclave[{-top_threads[1]}]",
        "threads",
        f"{threads} threads",
    )
    parts["faults"] = (PER_FAULT * faults, "host", "duration", f"up to {faults} faults")
    return MemoryEstimate(parts)


def epc_pages_used(sc: Scenario, enclave_bytes: list[int]) -> int:
    """An upper bound on the EPC pages a run of *sc* allocates at least once (the pages
    whose state the pool holds; ``docs/SCENARIOS.md``, "Limits and memory").

    The free lists hand out never-used pages before reused ones (the kernel's order), so
    every allocation may use a new page until the EPC has been used once: in general the
    bound is the whole EPC.  It is lower when nothing can make a page be allocated twice
    before the EPC is nearly full: no cgroup limit (``max``, ``memory_max``), no
    ``[[at]]`` operation, no kselftest program, no EDMM, no extension and the series'
    own reclaim (``policy = "v16"``).  Then, until a page is reclaimed, each enclave
    process allocates at most its ELRANGE pages, a VA page per 512 of them (plus one) and
    its SECS (an enclave sized by its trace is not bounded here: the estimate does not
    read traces), and each vEPC its guest pages; and no page is reclaimed (nor a fault
    retried) before fewer than ``SGX_NR_HIGH_PAGES`` pages are free.  So when those
    allocations leave more than that free, they are the bound.
    """
    epc_pages = sc.capacity // PAGE_SIZE
    unbounded = (
        any(c.max not in (None, "max") or c.memory_max not in (None, "max") for c in sc.cgroup)
        or sc.at
        or any(e.program is not None or e.edmm is not None for e in sc.enclave)
        or sc.host.extensions
        or sc.host.policy != "v16"
    )
    if unbounded:
        return epc_pages
    allocs = sum(v.pages for v in sc.vepc)
    for e, data in zip(sc.enclave, enclave_bytes, strict=True):
        if e.size is None:
            return epc_pages  # its trace gives the size: not read here
        pages = elrange_pages(data, e.program)
        allocs += e.count * (pages + pages // SGX_VA_SLOT_COUNT + 2)
    return allocs if allocs + SGX_NR_HIGH_PAGES < epc_pages else epc_pages


def check_memory(
    sc: Scenario,
    enclave_bytes: list[int],
    fail,
    label: str,
    trace_accesses: dict[int, list[int]] | None = None,
) -> MemoryEstimate:
    """Refuse (``fail(msg, table, field)``) a scenario whose estimate exceeds the
    available memory; warn (:class:`MemoryEstimateWarning`) above
    :data:`WARN_FRACTION` of it."""
    import warnings

    est = estimate_memory(sc, enclave_bytes, trace_accesses)
    try:
        avail, src = available_memory()
    except EpcsimError as e:
        fail(str(e).split(": ", 1)[-1], "", MEMORY_ENV)
        raise AssertionError from None
    total = est.total
    _, (_, table, fld, _) = est.largest()
    if avail is not None and total > avail:
        how = f"set by {MEMORY_ENV}" if src == MEMORY_ENV else f"{src}; {MEMORY_ENV} overrides it"
        fail(
            f"the run would need up to {_gib(total)} of memory ({est.describe()}), more "
            f"than the {_gib(avail)} available ({how})",
            table,
            fld,
        )
    if avail is not None and total > WARN_FRACTION * avail:
        of = f" of the {_gib(avail)} available" if avail is not None else ""
        warnings.warn(
            f"{label}: the run may need up to {_gib(total)} of memory{of} ({est.describe()})",
            MemoryEstimateWarning,
            stacklevel=4,
        )
    return est
