"""The compiled engine: the same simulation as :mod:`epcsim.sim.engine`, with the steady
state of an enclave thread run by a compiled event loop (:mod:`epcsim.compiled.loop`).

The step-by-step engine runs every actor as a Python generator over the kernel model
(:mod:`epcsim.kernel`, the readable reference).  In the scenarios users sweep most --
one enclave thread faulting through a trace or a pattern while ksgxd and the
``sgx_cg_wq`` worker reclaim -- nearly all the time goes into that loop: a few
microseconds of virtual time per event, tens of thousands of events per wall second.
Here, when the thread makes its first step and the scenario is *eligible* (below), the
whole event loop -- the thread's runs of hits and its faults, ksgxd's and the
workers' reclaim batches phase by phase, the sampler -- runs in the compiled core over
the kernel model's own NumPy arrays, with the same event order ``(time, priority,
seq)`` and the same cost model.  When the thread's next step would end it (or time
runs out), the core hands the run back: every scalar is written back to the kernel
objects and each actor is put back on the heap as a Python generator resuming exactly
where the core stopped (the kernel functions take an engine-only ``resume=`` state,
:mod:`epcsim.kernel.resume`), so the run ends step by step as it would have.  Same
scenario and seed, byte-identical result; ``tests/sim/test_engines_exact.py`` compares both engines.

An enclave's EADD build (and the kselftest program's ADD_PAGES loops) is taken over
the same way at a page's end (``BuildRun``): the core runs it as a row of its
reclaimer table (:mod:`epcsim.compiled.ioctl`) and hands it back where it stopped
(``_build_back``: the kernel functions' ``resume=`` states of an allocation).

What the core may run, and when, is ``docs/ENGINES.md``'s "What runs where"; otherwise
the step-by-step engine runs the scenario (``Result.engine`` says which ran and why).
ksgxd and the workers may be mid-reclaim: each is taken over at the yield point its
:class:`~epcsim.kernel.resume.ReclaimerTrack` says.
:mod:`epcsim.compiled.eligibility` declares this as an allow-list: a rule for every
scenario field, run option and take-over condition.
"""

from __future__ import annotations

import contextlib
import heapq
import inspect
import mmap
from collections import Counter, OrderedDict
from inspect import GEN_CREATED, GEN_SUSPENDED
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..errors import EpcsimError
from ..kernel.constants import (
    DESC_ACCESSED,
    DESC_BLOCKED,
    PAGE_SIZE,
    SGX_BACKING_BYTES_PER_PAGE,
    SGX_EEXTENDS_PER_PAGE,
    SGX_ENCL_INITIALIZED,
    SGX_NR_TO_SCAN,
)
from ..kernel.encl import SgxVaPage, sgx_encl_backing_memcg
from ..kernel.epc_cgroup import RECLAIM_KSGXD, sgx_cgroup_max_pages_to_root
from ..kernel.hooks import Episode
from ..kernel.resume import (
    TRACK_RECLAIM,
    TRACK_RESCHED,
    TRACK_START,
    ReclaimerState,
    ReclaimerTrack,
    SgxAllocEpcPageState,
    SgxCgroupReclaimPagesState,
    SgxEnclAddPageState,
    SgxReclaimPagesState,
)
from ..result import TIMESERIES_SCHEMA
from ..scenario.schema import Scenario
from ..sim.metrics import cg_path, enclave_counters
from ..sim.progress import sim_progress
from ..sim.stuck import STUCK_RETRIES
from . import layout as C
from .eligibility import (
    MAX_THREADS,
    dynamic_ineligibility,
    option_ineligibility,
    refusal,
    static_ineligibility,
)
from .layout import SAMPLED, pack, pack_rows, write_back, write_back_rows

if TYPE_CHECKING:
    from ..kernel.encl import Encl
    from ..sim.actors import BuildRun, ThreadRun
    from ..sim.core import Actor
    from ..sim.engine import Simulation

__all__ = ["ENGINE_ALIASES", "ENGINES", "MAX_THREADS", "static_ineligibility", "take_over"]

#: the simulator's engine names; ``batched`` is the old name of ``compiled``
ENGINES = ("auto", "compiled", "reference")
ENGINE_ALIASES = {"batched": "compiled"}

_I64_CAP = 1 << 62
#: a VA page's slot bits in bytes (the VA table's VA_BITS.. words)
_VA_BYTES = 8 * (C.NVAF - C.VA_BITS)
#: bit w of a VA page's VA_OPEN for its word w
_VA_WORD_BITS = np.int64(1) << np.arange(C.VA_WORDS, dtype=np.int64)
#: fault latencies the core records between hand-overs (a small buffer that stays in the
#: cache: the core's stores into fresh memory measured slower than a copy)
LAT_CAP = 1 << 16
#: at a hand-over they are copied to the end of one array sized to the threads'
#: accesses (at most LAT_MAX; when full, another twice as large), of which the
#: simulation keeps views: the parts of a run are one view, no concatenation at the end
LAT_MAX = 1 << 24
SAMP_CAP = 4096
#: accesses per thread buffer (the simulation draws at most this many at a time)
CHUNK_CAP = 65536


def _flat(table: np.ndarray) -> np.ndarray:
    """No kernel twin (packing): the Fortran-order table *table* (``CG``, ``EN``, ``TH``,
    ``R``) raveled as the core takes it (:func:`epcsim.compiled.bits.fortran_table`): a
    view, never a copy (the core writes through it)."""
    if not table.flags.f_contiguous:
        raise AssertionError("a per-id table of the compiled engine is not in Fortran order")
    return table.ravel(order="F")


def written_once(n: int) -> np.ndarray:
    """No kernel twin (packing): an int64 array of *n* entries (n > 0) in private
    anonymous memory kept off transparent huge pages, for the latencies a run writes
    once, in order (:func:`populate`).  numpy asks for huge pages for arrays of 4 MiB
    and more; a huge page's first touch can stall on memory compaction (with the
    kernel's default ``defrag`` of ``madvise``: measured at three times the cost of the
    small pages' faults, a tenth of a peer.py row's wall time), and an array written
    front to back gains nothing from a bigger TLB reach.  Private, not the shared
    mapping ``mmap.mmap(-1, n)`` gives by default: a shared anonymous page is a shmem
    page, whose first touch measured 1.4 times a private page's."""
    if hasattr(mmap, "MAP_PRIVATE") and hasattr(mmap, "MAP_ANONYMOUS"):
        m = mmap.mmap(-1, n * 8, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    else:
        m = mmap.mmap(-1, n * 8)
    if hasattr(m, "madvise") and hasattr(mmap, "MADV_NOHUGEPAGE"):
        m.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(m, np.int64)


#: madvise(MADV_POPULATE_WRITE) (Linux 5.14; the value of its uapi header, which
#: Python's mmap module may not name): fault a range in, writable, in one call
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)


def populate(a: np.ndarray, start: int, count: int) -> None:
    """No kernel twin (packing): the pages of entries ``start .. start + count`` of
    *a* (from :func:`written_once`) faulted in at once, before a copy writes them: one
    call instead of a page fault per 4 KiB (measured at 0.7 times the cost of the
    faults).  Nothing happens where the kernel has no MADV_POPULATE_WRITE (the copy
    faults the pages in as before)."""
    m = a.base
    if isinstance(m, memoryview):  # (np.frombuffer's base)
        m = m.obj
    if count <= 0 or not isinstance(m, mmap.mmap) or not hasattr(m, "madvise"):
        return
    lo = (start * 8) & ~(mmap.PAGESIZE - 1)
    hi = min(len(m), (start + count) * 8)
    # an older kernel (EINVAL): the copy faults them in
    with contextlib.suppress(OSError, ValueError):
        m.madvise(_MADV_POPULATE_WRITE, lo, hi - lo)


def set_stop(TH: np.ndarray, j: int) -> None:
    """No kernel twin (packing): TH_STOP of thread *j*, where its run of accesses in
    ``BUF`` stops: TH_BUFLEN, or the position of the access at which its EDMM
    operations are due (TH_EDMM, counted in accesses made, TH_ACC) if that comes first.
    The core advances TH_POS and TH_ACC together, so one comparison of TH_POS with it
    tells both (the core then tells which, RC_EDMM or RC_NEED_CHUNK)."""
    stop = int(TH[C.TH_BUFLEN, j])
    edmm = int(TH[C.TH_EDMM, j])
    if edmm >= 0:
        stop = min(stop, edmm - int(TH[C.TH_ACC, j]) + int(TH[C.TH_POS, j]))
    TH[C.TH_STOP, j] = stop


class _Thread:
    """An enclave thread the core runs: its place in the thread actor's loop
    (:class:`~epcsim.sim.actors.ThreadRun`) and its CPU."""

    __slots__ = ("run", "inst", "encl", "pattern", "rng", "remaining", "until", "st", "cpu")

    def __init__(self, run: ThreadRun, cpu: int) -> None:
        self.run = run
        self.inst, self.encl, self.pattern, self.rng = run.inst, run.encl, run.pattern, run.rng
        self.remaining, self.until, self.st, self.cpu = run.remaining, run.until, run.st, cpu


class _Packed:
    """The state handed to the core, and what is needed to hand it back."""

    def __init__(
        self,
        sim: Simulation,
        threads: list[_Thread],
        seqs: list[tuple[int, int]],
        sampler: tuple[int, int],
        builds: list[tuple[BuildRun, int, tuple[int, int]]],
        midpop: bool,
    ) -> None:
        host = sim.host
        self.sim, self.host, self.threads = sim, host, threads
        self.builds = builds
        if len(host.epc.free_lists) > 8:
            raise AssertionError("more than 8 EPC sections")
        encls: list[Encl] = []
        for e in [t.encl for t in threads] + [b.encl for b, _, _ in builds]:
            if all(e is not x for x in encls):
                encls.append(e)
        self.encls = encls
        cgs = host.sgx_cgroups
        ncg = len(cgs)
        # the per-id tables (CG, EN, TH, R: A[field, id]) in Fortran order: one id's
        # fields adjacent, so the compiled code addresses them from one base and a
        # constant (in C order it kept a pointer per field, mostly on the stack);
        # test_per_id_tables_are_in_fortran_order
        self.CG = np.zeros((C.NCGF, max(ncg, len(host.memcgs))), np.int64, order="F")
        self.live = [s for s in cgs if s is not None]
        # worker slots: one running per cgroup, and the slot of one that has finished
        # stays taken until its last step is popped (room for a few of those); then
        # one row per EADD build (R_KIND KIND_BUILD), always scheduled
        self.brow0 = 1 + 3 * ncg + 8
        self.R = np.zeros((C.NRF, self.brow0 + len(builds)), np.int64, order="F")
        self.R[C.R_KIND, 1:] = 1
        self.R[C.R_CUR] = -1
        R = self.R
        for k, (b, cpu, (t, seq)) in enumerate(builds):
            r = self.brow0 + k
            add = b.add
            if add is None or not add.between or add.page is not None:
                raise AssertionError("a build taken over away from a page's end")
            R[C.R_KIND, r] = C.KIND_BUILD
            R[C.R_SCHED, r] = 1
            R[C.R_T, r], R[C.R_SEQ, r] = t, seq
            R[C.R_STAGE, r] = C.ST_B_TOP
            R[C.R_B_E, r] = b.encl.id
            R[C.R_B_FIRST, r] = add.offset // PAGE_SIZE
            R[C.R_B_LEN, r] = add.length // PAGE_SIZE
            R[C.R_B_C, r] = add.c // PAGE_SIZE
            R[C.R_B_TYPE, r] = add.page_type
            R[C.R_B_EXT, r] = SGX_EEXTENDS_PER_PAGE if add.measure else 0
            R[C.R_B_CPU, r] = cpu
            R[C.R_B_PAGE, r] = -1
        order = sorted(range(len(builds)), key=lambda k: builds[k][2])
        R[C.R_HEAP, : len(builds)] = [self.brow0 + k for k in order]
        R[C.R_HT, : len(builds)] = [builds[k][2][0] for k in order]
        R[C.R_HS, : len(builds)] = [builds[k][2][1] for k in order]
        # enclave rows: one after the other (a single enclave's arrays are used as they are)
        self.off: list[int] = []
        self.vaoff: list[int] = []
        n = nva = 0
        for e in encls:
            self.off.append(n)
            self.vaoff.append(nva)
            n += e.npages
            nva += len(e.va_all) + (max(e.npages - e.page_cnt, 0) + 511) // 512 + 2
        self.nva0 = [len(e.va_all) for e in encls]
        if len(encls) == 1:
            e = encls[0]
            self.E32, self.E8, self.EMEM = e.i32, e.u8, e.memcg
        else:
            self.E32 = np.empty((n, 2), np.int32)
            self.E8 = np.empty((2, n), np.uint8)
            self.EMEM = np.empty(n, np.int16)
        self.VA = np.full((nva, C.NVAF), -1, np.int64)
        # which enclave page rows can be hit (resident, not blocked): one bit each,
        # derived from E32 / E8 at every load(), kept by the core
        self.HB = np.zeros((n + 63) // 64 + 1, np.int64)
        self.EN = np.zeros((C.NENF, len(host.encls)), np.int64, order="F")
        S = np.zeros(C.NS, np.int64)
        self.S = S
        costs = sim.costs
        S[C.S_NOW] = sim.core.now
        S[C.S_SEQ] = sim.core.seq
        S[C.S_LIMIT] = sim.limit_ns
        S[C.S_LRU_PF] = -1
        S[C.S_LCOST : C.S_LCOST + len(sim.leaf_cost)] = sim.leaf_cost
        S[C.S_ACCESS_NS] = costs.access
        S[C.S_FAULT_NS] = costs.fault
        S[C.S_KSTEP_NS] = costs.kernel_step
        S[C.S_BATCH_NS] = costs.reclaim_batch
        S[C.S_ACTIVE] = 1  # the generator that took over ends (EventCore.active - 1)
        S[C.S_UNREF] = int(sim.sc.host.experiments.fault_unreferenced)
        S[C.S_STUCK] = STUCK_RETRIES
        pol = host.policy
        S[C.S_POLICY] = C.POLICY_IDS["v16" if pol is None else pol.name]
        S[C.S_SM_T], S[C.S_SM_SEQ] = sampler
        last = sim.metrics.last_time()
        S[C.S_SM_LAST] = -1 if last is None else last
        S[C.S_SM_INTERVAL] = sim.sample_ns
        S[C.S_FOR_T] = _I64_CAP  # none (take_over sets the first foreign event)
        S[C.S_NLIVE] = len(self.live)
        self.CG[C.CG_LIVE, : len(self.live)] = [s.id for s in self.live]
        # the threads: the first is mid-pop (it is taking over), the others wait
        nt = len(threads)
        TH = np.zeros((C.NTHF, nt), np.int64, order="F")
        self.BUF_INIT: list[np.ndarray] = []
        for j, t in enumerate(threads):
            TH[C.TH_T, j], TH[C.TH_SEQ, j] = seqs[j]
            TH[C.TH_CPU, j] = t.cpu
            TH[C.TH_E, j] = t.encl.id
            TH[C.TH_REMAIN, j] = t.remaining
            pack("TH", TH[:, j], t)
            # where the thread is in its loop: the accesses drawn and not made, the
            # fault in progress, the last fault's result to book
            r = t.run
            rest = r.buf[r.pos :]
            if len(rest) > CHUNK_CAP:
                raise AssertionError("a thread's accesses drawn exceed the core's buffer")
            self.BUF_INIT.append(rest)
            TH[C.TH_FSTART, j] = r.fault_start
            TH[C.TH_PENDING, j] = int(r.pending)
            TH[C.TH_R, j] = r.r
            TH[C.TH_EDMM, j] = -1 if r.edmm_at is None else r.edmm_at
            TH[C.TH_UNTIL, j] = _I64_CAP if t.until is None else t.until
            TH[C.TH_LIVE, j] = 1
        S[C.S_MIDPOP] = int(midpop)
        S[C.S_NRH] = len(builds)
        # the thread heap: sorted by (t, seq) is a heap (the first thread leads)
        order = sorted(range(nt), key=lambda j: seqs[j])
        TH[C.TH_HEAP, :nt] = order
        TH[C.TH_HT, :nt] = TH[C.TH_T, order]
        TH[C.TH_HS, :nt] = TH[C.TH_SEQ, order]
        S[C.S_NHP] = nt
        self.TH = TH
        self.CPUF = np.array(sim.core.cpu_free, np.int64)
        # row 0 the latencies, row 1 the thread of each (its instance tags it)
        # (np.empty: the core writes an entry before anything reads it, and a take-over
        # is frequent enough in some runs that zeroing these was a fifth of its cost)
        self.LAT = np.empty((2, LAT_CAP), np.int64)
        self.thread_inst = np.array([t.inst.index for t in threads], np.int32)
        ti = self.thread_inst
        self.one_inst = bool(len(ti) <= 1 or (ti == ti[0]).all())
        S[C.S_TAGLAT] = int(not self.one_inst)  # else LAT's row 1 is not written
        want = sum(min(t.remaining, LAT_MAX) for t in threads)
        self.lat_out = written_once(min(max(LAT_CAP, want), LAT_MAX))
        # np.zeros: pages nobody writes are never touched, and one instance of index 0
        # tags no latency (flush): fresh memory is a third of flush()'s cost otherwise
        self.who_out = np.zeros(len(self.lat_out), np.int32)
        self.lat_used = 0  # lat_out[:lat_used] holds latencies handed over
        self.lat_view: np.ndarray | None = None  # the last view given to the simulation
        self.lat_view_from = 0
        self.SAMP = np.empty((SAMP_CAP, len(self.live), len(SAMPLED)), np.int64)
        self.SAMPT = np.zeros(SAMP_CAP, np.int64)
        # the enclave rows of each sample, one per enclave the core runs (EN_ROW)
        self.SAMPE = np.zeros((SAMP_CAP, max(len(encls), 1), 4), np.int64)
        # .. to which the threads of their instances that ended before the core took
        # over add their accesses and faults (they do not move while it runs)
        ours = {id(t.st) for t in threads}
        self.sampe_base = np.zeros((max(len(encls), 1), 4), np.int64)
        self.rowof = {id(e): r for r, e in enumerate(encls)}
        for inst in sim.instances.values():
            k2 = self.rowof.get(id(inst.encl), -1)
            if k2 >= 0:
                for st in inst.threads:
                    if id(st) not in ours:
                        self.sampe_base[k2, 0] += st.accesses
                        self.sampe_base[k2, 1] += st.faults
        self.BUF = np.zeros((nt, CHUNK_CAP), np.int64)
        for j, rest in enumerate(self.BUF_INIT):
            self.BUF[j, : len(rest)] = rest
            TH[C.TH_BUFLEN, j] = len(rest)
            set_stop(TH, j)
        self.paths = [cg_path(s) for s in self.live]
        self.limits = [
            None if s.cg.parent is None or s.cg.max >= 1 << 63 else s.cg.max for s in self.live
        ]
        self.load()

    def load(self) -> None:
        """Kernel objects -> arrays: everything the kernel model may have changed since
        the last write_back() (a thread's end, step by step)."""
        S, CG, EN, VA, host = self.S, self.CG, self.EN, self.VA, self.host
        pool = host.epc
        capacity = host.misc.root.ctrl.capacity
        for s in self.live:
            cg = s.cg
            i = s.id
            pack("CG", CG[:, i], s)
            CG[C.CG_LIMIT, i] = min(cg.max, capacity, _I64_CAP)
            CG[C.CG_MAX, i] = min(cg.max, _I64_CAP)
            CG[C.CG_PARENT, i] = cg.parent.priv.id if cg.parent is not None else -1
            CG[C.CG_MAXPAGES, i] = min(sgx_cgroup_max_pages_to_root(s), _I64_CAP)
        # preorder of the whole tree (css_next_descendant_pre order)
        pre: list[int] = []

        def walk(cg) -> None:
            sid = cg.priv.id
            CG[C.CG_PREPOS, sid] = len(pre)
            pre.append(sid)
            for ch in cg.children:
                walk(ch)
            CG[C.CG_SUBEND, sid] = len(pre)

        walk(host.misc.root)
        self.PRE = np.array(pre, np.int64)
        CG[C.CG_PRE, : len(pre)] = self.PRE
        for s in self.live:
            CG[C.CG_CURSOR, s.id] = CG[C.CG_PREPOS, s.next_cg.id]
        wq = [s.id for s in host.sgx_cg_wq]
        CG[C.CG_WQ, : len(wq)] = wq
        S[C.S_NWQ] = len(wq)
        CG[C.CG_MEMD] = 0
        # memory.max: the core checks the backing charges of a reclaim phase against
        # every limit (mem_cgroup_batch_fits) and returns before one that may not fit
        S[C.S_NMEMCG] = len(host.memcgs)
        S[C.S_MEMLIM] = 0
        for m in host.memcgs:
            CG[C.CG_MEMPAR, m.id] = m.parent.id if m.parent is not None else -1
            lim = m.max_bytes()
            CG[C.CG_MEMLIM, m.id] = _I64_CAP if lim is None else lim
            CG[C.CG_MEMU0, m.id] = m.usage
            if lim is not None:
                S[C.S_MEMLIM] = 1
        pack("S", S, host)
        fl = pool.free_lists
        S[C.S_NNODES] = len(fl)
        S[C.S_SECT : C.S_SECT + len(fl)] = pool.section_start
        for k, f in enumerate(fl):
            b = C.S_NODES + C.NODE_W * k
            S[b : b + C.NODE_W] = (f.head, f.tail, f.nr, f.hwm, f.end)
        for k, encl in enumerate(self.encls):
            e = encl.id
            off, vaoff = self.off[k], self.vaoff[k]
            if len(self.encls) > 1:
                n = encl.npages
                self.E32[off : off + n] = encl.i32
                self.E8[:, off : off + n] = encl.u8
                self.EMEM[off : off + n] = encl.memcg
            pack("EN", EN[:, e], encl)
            # the core counts an EWB in EN_NR_RECL alone (EN_NR_EVICTED's doc)
            EN[C.EN_NR_EVICTED, e] -= EN[C.EN_NR_RECL : C.EN_NR_RECL + C.RECL_KINDS, e].sum()
            memcg = sgx_encl_backing_memcg(host, encl, None).id
            EN[C.EN_MEMCG, e] = memcg
            # EMEM kept by the core only where the pages' backing memcgs are not the
            # ones EN_EMIX 0 implies (C.implied_backing_memcgs)
            implied = C.implied_backing_memcgs(encl.i32, encl.u8, memcg)
            EN[C.EN_EMIX, e] = int(not np.array_equal(encl.memcg, implied))
            EN[C.EN_NVA, e] = len(encl.va_all)
            EN[C.EN_OFF, e] = off
            EN[C.EN_VAOFF, e] = vaoff
            EN[C.EN_TRACKED, e] = 0
            EN[C.EN_ROW, e] = k
            EN[C.EN_INIT, e] = int(bool(encl.flags & SGX_ENCL_INITIALIZED))
            EN[C.EN_WATCH, e] = self._watch(encl)
            va = encl.va_all  # va_all[no].no == no: rows vaoff + 0, 1, ...
            if va:
                blk = VA[vaoff : vaoff + len(va)]
                pack_rows("VA", blk, va)
                # the 512 slot bits as 8 little-endian words (two's complement int64)
                bits = b"".join([vp.bits.to_bytes(_VA_BYTES, "little") for vp in va])
                blk[:, C.VA_BITS :] = np.frombuffer(bits, "<i8").reshape(len(va), -1)
                blk[:, C.VA_OPEN] = (blk[:, C.VA_BITS :] != -1) @ _VA_WORD_BITS
            order = list(encl.va_pages)
            if order:
                rows = vaoff + np.array(order, np.int64)
                VA[rows, C.VA_PREV] = [-1, *order[:-1]]
                VA[rows, C.VA_NEXT] = [*order[1:], -1]
            EN[C.EN_VA_HEAD, e] = order[0] if order else -1
            EN[C.EN_VA_TAIL, e] = order[-1] if order else -1
        E32, E8 = self.E32, self.E8
        hit = (E32[:, C.E_EPC] >= 0) & ((E8[C.E_DESC] & DESC_BLOCKED) == 0)
        packed = np.packbits(hit, bitorder="little")
        self.HB[:] = 0
        self.HB.view(np.uint8)[: len(packed)] = packed
        TH = self.TH
        pos = {s.id: k for k, s in enumerate(self.live)}
        for j, t in enumerate(self.threads):
            task = t.inst.task
            c = host.task_misc_cg(task).priv.id
            TH[C.TH_TCG, j] = c
            TH[C.TH_TLIVE, j] = pos[c]
            TH[C.TH_NID, j] = task.nid
            # the core counts a resolved fault in TH_FAULTS alone (CG_NR_FAULTS' doc)
            CG[C.CG_NR_FAULTS, c] -= TH[C.TH_FAULTS, j]
        for k, (b, _, _) in enumerate(self.builds):
            task = b.inst.task
            r = self.brow0 + k
            self.R[C.R_B_TCG, r] = host.task_misc_cg(task).priv.id
            self.R[C.R_B_NID, r] = task.nid
            # sgx_encl_backing_memcg(encl, current): the task's memcg
            self.R[C.R_MEMCG, r] = 1 + sgx_encl_backing_memcg(host, b.encl, task).id
        self.CPUF[:] = self.sim.core.cpu_free

    def _watch(self, encl: Encl) -> int:
        """The pages added (EN_NR_ADDED + EN_NR_EAUG: EADD and EAUG) at which the first
        ``[[at]] when`` watcher of *encl*'s process fires (``Actors.check_watchers()``),
        or ``_I64_CAP``."""
        at = _I64_CAP
        for inst, pages, *_ in self.sim.actors.watchers:
            mine = inst.encl
            if mine is None and inst.task is not None and inst.task.encl_fds:
                mine = self.host.encls[inst.task.encl_fds[0]]
            if mine is encl:
                at = min(at, pages)
        return at

    def resync(self) -> None:
        """After the reference ran a step in the middle of a core run (a thread's end, a
        watcher's check): the actors it started are foreign events (the first of the
        heap's, all not started), its sequence numbers the core's from here."""
        S, heap = self.S, self.sim.core.heap
        S[C.S_SEQ] = self.sim.core.seq
        if heap:
            S[C.S_FOR_T], S[C.S_FOR_P], S[C.S_FOR_S] = heap[0][:3]
        else:
            S[C.S_FOR_T] = _I64_CAP

    def run(self) -> int:
        from .loop import run_core  # numba: imported when the compiled engine runs

        return run_core(
            self.S, _flat(self.CG), _flat(self.EN), _flat(self.TH), self.CPUF, _flat(self.R),
            self.VA, self.host.epc.i32,
            self.host.epc.u8, self.host.epc.cg, self.E32, self.E8, self.EMEM, self.HB, self.BUF,
            self.LAT, self.SAMP, self.SAMPE, self.SAMPT,
        )  # fmt: skip

    def flush(self, *, samples: bool = True) -> None:
        """Move recorded fault latencies and (*samples*) samples to the simulation (the
        samples wait while the core runs on: each move has a fixed cost)."""
        S, sim = self.S, self.sim
        n = int(S[C.S_NLAT])
        if n:
            a = self.lat_used
            if a + n > len(self.lat_out):
                self.lat_out = written_once(max(min(2 * len(self.lat_out), LAT_MAX), n))
                self.who_out = np.zeros(len(self.lat_out), np.int32)
                self.lat_view = None
                a = 0
            populate(self.lat_out, a, n)
            self.lat_out[a : a + n] = self.LAT[0, :n]
            ti = self.thread_inst
            if self.one_inst:  # one instance: no gather (S_TAGLAT 0)
                if ti[0]:  # (index 0: who_out's zeros are its tags)
                    self.who_out[a : a + n] = ti[0]
            else:
                self.who_out[a : a + n] = ti[self.LAT[1, :n]]
            self.lat_used = a + n
            parts = sim.metrics.fault_lat
            who = sim.metrics.fault_lat_who
            if self.lat_view is not None and parts and parts[-1] is self.lat_view:
                parts[-1] = self.lat_out[self.lat_view_from : a + n]  # extend it
                who[-1] = self.who_out[self.lat_view_from : a + n]
            else:
                self.lat_view_from = a
                parts.append(self.lat_out[a : a + n])
                who.append(self.who_out[a : a + n])
            self.lat_view = parts[-1]
            S[C.S_NLAT] = 0
        k = int(S[C.S_NSAMP]) if samples else 0
        if k:
            nl = len(self.live)
            # the enclave rows (Metrics.record_sample): from the core (SAMPE) for the
            # enclaves it runs; the others' counters do not move while it runs
            names: list[str] = []
            ev = []
            for inst in sim.instances.values():
                if inst.encl is None:
                    continue
                names.append(inst.name)
                k2 = self.rowof.get(id(inst.encl), -1)
                if k2 >= 0:
                    ev.append(self.SAMPE[:k, k2, :] + self.sampe_base[k2])
                else:
                    ev.append(np.tile(np.array(enclave_counters(inst), np.int64), (k, 1)))
            ne = len(names)
            per = nl + ne
            # one block of rows per sample: its cgroup rows, then its enclave rows,
            # handed over as columns (Metrics.append_batch)
            enc = np.stack(ev, axis=1) if ne else np.zeros((k, 0, 4), np.int64)
            cg_rows = np.zeros((k, per), bool)
            cg_rows[:, :nl] = True

            def block(cg: np.ndarray | None, en: np.ndarray | None) -> pa.Array:
                """A column: the cgroup rows from *cg*, the enclave rows from *en*
                (None: nulls)."""
                out = np.zeros((k, per), np.int64)
                if cg is not None:
                    out[:, :nl] = cg
                if en is not None:
                    out[:, nl:] = en
                if cg is not None and en is not None:
                    return pa.array(out.ravel())
                return pa.array(out.ravel(), mask=(~cg_rows if en is None else cg_rows).ravel())

            def text(values: list[str | None]) -> pa.Array:
                return pa.array(values * k, pa.string())

            columns = {
                "time_ns": pa.array(np.repeat(self.SAMPT[:k], per)),
                "cgroup": text(self.paths + [None] * ne),
                "limit_bytes": pa.array((self.limits + [None] * ne) * k, pa.int64()),
                "enclave": text([None] * nl + names),
                "accesses": block(None, enc[:, :, 0]),
                "resident_pages": block(None, enc[:, :, 3]),
            }
            # enclave rows carry faults and evictions (enclave_counters() order)
            shared = {"faults": 1, "evictions": 2}
            for j, smp in enumerate(SAMPLED):
                f = shared.get(smp.column)
                columns[smp.column] = block(
                    self.SAMP[:k, :, j], None if f is None else enc[:, :, f]
                )
            arrays = [columns[f.name] for f in TIMESERIES_SCHEMA]
            sim.metrics.append_batch(pa.record_batch(arrays, schema=TIMESERIES_SCHEMA))
            S[C.S_NSAMP] = 0

    def write_back(self) -> None:
        """Write every scalar and array the core changed back to the kernel-model
        objects and the simulation (followed by load() if the core goes on)."""
        S, CG, EN, VA, host, sim = self.S, self.CG, self.EN, self.VA, self.host, self.sim
        pool = host.epc
        cgs = host.sgx_cgroups
        faults = np.zeros(CG.shape[1], np.int64)  # the threads' (CG_NR_FAULTS' doc)
        np.add.at(faults, self.TH[C.TH_TCG], self.TH[C.TH_FAULTS])
        CG[C.CG_NR_FAULTS] += faults
        # (CG has no delta field: the rows copied out by CG.T[ids] are only read)
        write_back_rows("CG", CG.T[[s.id for s in self.live]], self.live)
        for s in self.live:
            s.next_cg = cgs[int(self.PRE[CG[C.CG_CURSOR, s.id]])]
        host.sgx_cg_wq.clear()
        host.sgx_cg_wq.extend(cgs[int(c)] for c in CG[C.CG_WQ, : int(S[C.S_NWQ])])
        for mid in np.flatnonzero(CG[C.CG_MEMD]).tolist():
            delta = int(CG[C.CG_MEMD, mid])
            m = host.memcgs[mid]
            while m is not None:
                m.usage += delta
                m = m.parent
        CG[C.CG_MEMD] = 0
        CG[C.CG_NR_FAULTS] -= faults
        for k, f in enumerate(pool.free_lists):
            b = C.S_NODES + C.NODE_W * k
            f.head, f.tail, f.nr, f.hwm = (int(v) for v in S[b : b + C.NODE_HWM + 1])
        write_back("S", S, host)
        for k, encl in enumerate(self.encls):
            e = encl.id
            off, vaoff = self.off[k], self.vaoff[k]
            several = len(self.encls) > 1  # (one enclave: the core ran on its arrays)
            if several:
                n = encl.npages
                encl.i32[:] = self.E32[off : off + n]
                encl.u8[:] = self.E8[:, off : off + n]
            if not EN[C.EN_EMIX, e]:  # EMEM not kept: the memcgs EN_EMIX 0 implies
                encl.memcg[:] = C.implied_backing_memcgs(encl.i32, encl.u8, EN[C.EN_MEMCG, e])
            elif several:
                encl.memcg[:] = self.EMEM[off : off + encl.npages]
            recl = int(EN[C.EN_NR_RECL : C.EN_NR_RECL + C.RECL_KINDS, e].sum())
            EN[C.EN_NR_EVICTED, e] += recl
            write_back("EN", EN[:, e], encl)
            EN[C.EN_NR_EVICTED, e] -= recl
            for no in range(len(encl.va_all), int(EN[C.EN_NVA, e])):
                encl.va_all.append(SgxVaPage(no, int(VA[vaoff + no, C.VA_EPC])))
            va = encl.va_all
            if va:
                blk = VA[vaoff : vaoff + len(va)]
                raw = blk[:, C.VA_BITS :].astype("<i8").tobytes()
                w = _VA_BYTES
                for k2, vp in enumerate(va):
                    vp.bits = int.from_bytes(raw[k2 * w : (k2 + 1) * w], "little")
                write_back_rows("VA", blk, va)
            order = OrderedDict()
            no = int(EN[C.EN_VA_HEAD, e])
            while no >= 0:
                order[no] = encl.va_all[no]
                no = int(VA[vaoff + no, C.VA_NEXT])
            encl.va_pages = order
            if EN[C.EN_RELEASED, e] and not encl.released:
                encl.released = True
                host.encl_released(encl)
        TH = self.TH
        for j, t in enumerate(self.threads):
            write_back("TH", TH[:, j], t)
        sim.core.now = int(S[C.S_NOW])
        sim.core.seq = int(S[C.S_SEQ])
        sim.core.cpu_free[:] = self.CPUF.tolist()
        sim.core.active += int(S[C.S_ACTIVE])
        S[C.S_ACTIVE] = 0
        sim.actors.ksgxd_running = bool(self.R[C.R_SCHED, 0])


def take_over(sim: Simulation, run: ThreadRun | BuildRun, cpu: int, chunk: int) -> str | None:
    """Run the enclave threads in the core, at a step of one of them (*run*'s, on *cpu*).

    The other threads must be on the heap (fresh, or suspended at a step: their places
    are ``sim.actors.thread_runs``), with only the sampler, ksgxd and the workers besides
    (anywhere in their loops: their places are ``sim.actors.reclaimers``), and actors
    not started yet (the core stops before the first).  Returns a reason
    (and changes nothing) if the run is not eligible; otherwise runs until the last
    thread's next step would end it or the time limit (each earlier thread's end -- its
    task's exit -- runs step by step in between), puts every actor back on the heap as a
    generator resuming where the core stopped, and returns None.  The caller's generator
    then returns: its heap entry is replaced by the continuation.
    """
    from ..sim.actors import BuildRun

    host = sim.host
    runs = sim.actors.thread_runs
    tracks = sim.actors.reclaimers
    build_runs = sim.actors.build_runs
    threads: list[_Thread] = []
    seqs: list[tuple[int, int]] = []
    builds: list[tuple[BuildRun, int, tuple[int, int]]] = []
    # the actor offering is mid-step (popped at now: it leads at (now, 0))
    if isinstance(run, BuildRun):
        builds.append((run, cpu, (sim.core.now, 0)))
    else:
        threads.append(_Thread(run, cpu))
        seqs.append((sim.core.now, 0))
    sampler = None
    foreign = []  # actors not yet started (a later enclave's process): the core stops
    busy: list[_Reclaimer] = []  # ksgxd and the workers on the heap, busy or not
    for entry in sorted(sim.core.heap, key=lambda x: (x[0], x[1], x[2])):
        t, prio, seq, gen, c = entry
        other = runs.get(gen)
        if prio == 2 and sampler is None:
            sampler = (t, seq)
            continue
        track = tracks.get(gen) if other is None else None
        if track is not None:
            rec = _Reclaimer.read(sim, entry, track)
            if rec is None:
                return refusal("dynamic.reclaimer_busy")
            if _phase_may_oom(sim, rec):
                # the core would hand it back at once (RC_MEMCG): the reference runs it
                return refusal("dynamic.memcg_phase")
            busy.append(rec)
            continue
        b = build_runs.get(gen)
        if b is not None and inspect.getgeneratorstate(gen) == GEN_SUSPENDED:
            # an EADD build: taken over at a page's end only
            if b.add is None or not b.add.between or b.hold:
                return refusal("dynamic.other_actors")
            builds.append((b, c, (t, seq)))
            continue
        if other is None:
            if inspect.getgeneratorstate(gen) != GEN_CREATED:
                return refusal("dynamic.other_actors")
            foreign.append(entry)
            continue
        if other.started and inspect.getgeneratorstate(gen) != GEN_SUSPENDED:
            return refusal("dynamic.other_actors")
        threads.append(_Thread(other, c))
        seqs.append((t, seq))
    if sampler is None:
        return refusal("dynamic.no_sampler")
    ours = {t.encl.id for t in threads} | {b.encl.id for b, _, _ in builds if b.encl is not None}
    if not _reclaimers_consistent(sim, busy, ours):
        return refusal("dynamic.reclaimer_busy")
    why = dynamic_ineligibility(sim, threads, [b for b, _, _ in builds])
    if why is not None:
        return why
    if chunk > CHUNK_CAP:
        raise AssertionError("chunk larger than the core's buffers")
    if busy:
        # the reclaimers' generators are dropped (the core runs them from their R rows
        # and hands them back as new ones): closed now, their ``finally`` blocks clear
        # ksgxd_running and work_running, which the reclaimers still are
        running = [(s, s.work_running) for s in host.sgx_cgroups if s is not None]
        ksgxd_running = sim.actors.ksgxd_running
        for rec in busy:
            rec.gen.close()
        for s, v in running:
            s.work_running = v
        sim.actors.ksgxd_running = ksgxd_running
    p = _Packed(sim, threads, seqs, sampler, builds, not isinstance(run, BuildRun))
    _pack_reclaimers(p, busy)
    S, TH = p.S, p.TH
    seq0 = int(S[C.S_SEQ])
    if foreign:  # the first of them (sorted): the core returns before it (RC_FOREIGN)
        S[C.S_FOR_T], S[C.S_FOR_P], S[C.S_FOR_S] = foreign[0][:3]
    sim.metrics.flush_latencies()
    for t in threads:
        t.run.epoch += 1  # their generators are dropped: not the threads' ends
    for b, _, _ in builds:
        b.add.epoch += 1  # .. not the ioctls' ends (they stay in the kernel)
    heap = sim.core.heap
    heap[:] = foreign  # sorted: a heap
    runs.clear()
    for gen in [g for g, b in build_runs.items() if any(b is x for x, _, _ in builds)]:
        del build_runs[gen]
    while True:
        rc = p.run()
        if rc == C.RC_NEED_CHUNK:
            j = int(S[C.S_WHO])
            t = threads[j]
            want = min(chunk, int(TH[C.TH_REMAIN, j]))
            TH[C.TH_BUFLEN, j] = len(t.pattern.take_into(t.rng, want, p.BUF[j]))
            TH[C.TH_POS, j] = 0
            TH[C.TH_PFEND, j] = 0
            set_stop(TH, j)
        elif rc == C.RC_FLUSH:  # a full buffer: the latencies, or the samples too
            p.flush(samples=int(S[C.S_NSAMP]) >= SAMP_CAP)
        elif rc == C.RC_BUILD:
            # the build's next step is the reference's: it is handed back before it
            p.builds[int(S[C.S_WHO]) - p.brow0][0].hold = True
            break
        elif rc == C.RC_ERROR:
            raise AssertionError(f"compiled engine: model invariant broken (code {S[C.S_ERR]})")
        elif rc == C.RC_THREAD_DONE and (TH[C.TH_LIVE] == 1).any():
            # a thread ends (its task may exit): step by step, then the core goes on
            j = int(S[C.S_WHO])
            t = threads[j]
            p.flush()
            p.write_back()
            end = sim.actors.thread_end_step(
                t.inst, t.st, int(TH[C.TH_REMAIN, j]), t.until, bool(TH[C.TH_SIGBUS, j])
            )
            for _ in end:
                raise AssertionError("a thread's end step yielded")
            sim.core.active -= 1
            TH[C.TH_LIVE, j] = 0
            # its process's exit may end its group: the enclaves and operations started
            # after it (start = "after:GROUP", [[at]] after) are foreign events; the
            # watchers of ended processes are dropped (Simulation.run(): after the kick)
            if any(inspect.getgeneratorstate(x[3]) != GEN_CREATED for x in sim.core.heap):
                raise AssertionError("a thread's end started a running actor")
            if sim.actors.watchers:
                n = len(sim.core.heap)
                sim.actors.check_watchers()
                if len(sim.core.heap) != n:  # its pages were added in an earlier step
                    raise AssertionError("a thread's end fired a watcher")
            p.resync()
            p.load()
            S[C.S_KICK] = 1
        elif rc == C.RC_WATCH:
            # a fault added the pages a watcher waits for: the reference starts the
            # operation (a foreign event), the core goes on
            p.flush()
            p.write_back()
            sim.actors.check_watchers()
            p.resync()
            p.load()
        else:
            break
        if sim.progress is not None:
            for j, t in enumerate(threads):  # the accesses done so far (write_back's value)
                t.st.accesses = int(TH[C.TH_ACC, j])
            sim.progress(sim_progress(sim, int(S[C.S_NOW])))
    p.flush()
    sim.events["compiled"] += int(S[C.S_SEQ]) - seq0
    p.write_back()
    _hand_back(sim, p, rc)
    if rc == C.RC_MEMCG:
        sim.actors.take_over_later()
    return None


class _Reclaimer:
    """ksgxd or a ``sgx_cg_wq`` worker on the heap at take-over: its heap entry and
    where it is (read from its :class:`~epcsim.kernel.resume.ReclaimerTrack`), as the
    core's R row takes it (the inverse of :func:`_hand_back`)."""

    __slots__ = (
        "t",
        "seq",
        "gen",
        "kind",
        "sgx_cg",
        "stage",
        "cnt",
        "c",
        "pages",
        "cb",
        "episode",
    )

    @classmethod
    def read(cls, sim: Simulation, entry: tuple, track: ReclaimerTrack) -> _Reclaimer | None:
        """The reclaimer of heap *entry*, or None if the core cannot take it over at the
        point it is at."""
        gen = entry[3]
        created = inspect.getgeneratorstate(gen) == GEN_CREATED
        self = cls()
        self.t, self.seq, self.gen = int(entry[0]), int(entry[2]), gen
        self.kind, self.sgx_cg = track.kind, track.sgx_cg
        self.cnt, self.c, self.pages, self.cb = 0, None, [], 0
        ksgxd = track.kind == RECLAIM_KSGXD
        if ksgxd != (track.sgx_cg is None):
            return None
        at = track.at  # (a generator not run yet: where it starts, ReclaimerTrack.resuming)
        if at == TRACK_START and not created:
            return None  # (a running generator's track is never at its start)
        if at in (TRACK_RECLAIM, TRACK_RESCHED):
            pol = sim.host.policy
            if pol is not None and pol.reclaim_pages is not None and not pol.tracks_reclaim:
                return None  # a policy's reclaim hook that does not say where it is
        if at == TRACK_START:
            self.stage = C.ST_START
        elif at == TRACK_RECLAIM:
            if track.phase not in (2, 3, 4) or track.c is None or not track.pages:
                return None
            self.stage = {2: C.ST_PH2, 3: C.ST_PH3, 4: C.ST_PH4}[track.phase]
            self.cnt, self.c, self.pages, self.cb = (
                track.cnt,
                track.c,
                list(track.pages),
                track.batch_cnt,
            )
        elif at == TRACK_RESCHED:
            self.stage = C.ST_RESCHED
        else:  # returned: ksgxd's loop goes on or ends, a worker ends
            self.stage = C.ST_START if ksgxd and track.busy else C.ST_END
        self.episode = track.episode
        return self


def _phase_may_oom(sim: Simulation, rec: _Reclaimer) -> bool:
    """*rec*'s next step is a reclaim phase that charges backing and one of its charges
    may exceed a ``memory.max``: what the core's ``memcg.mem_cgroup_batch_fits`` says
    before that step (RC_MEMCG) -- phase 2 charges each page that sgx_reclaimer_age()
    will find old, phase 4 a SECS for each enclave that may write its SECS after its
    last child."""
    host = sim.host
    if rec.stage not in (C.ST_PH2, C.ST_PH4):
        return False
    if all(m.max_bytes() is None for m in host.memcgs):
        return False
    charged: list[Encl] = []  # one backing charge each, to the enclave's memcg
    if rec.stage == C.ST_PH2:
        for page in rec.pages:
            encl = host.encls[int(host.epc.m_owner_encl[page])]
            idx = int(host.epc.m_owner_idx[page])
            if not (encl.nr_live_mms and encl.m_desc[idx] & DESC_ACCESSED):  # old
                charged.append(encl)
    else:
        counts = Counter(int(host.epc.m_owner_encl[page]) for page in rec.pages)
        for eid, c in counts.items():
            encl = host.encls[eid]
            initialised = encl.flags & SGX_ENCL_INITIALIZED
            if encl.secs_child_cnt <= c and encl.secs_epc >= 0 and initialised:
                charged.append(encl)
    add: dict[int, int] = {}
    for encl in charged:
        m = sgx_encl_backing_memcg(host, encl, None)
        while m is not None:
            add[m.id] = add.get(m.id, 0) + SGX_BACKING_BYTES_PER_PAGE
            m = m.parent
    for mid, n in add.items():
        m = host.memcgs[mid]
        lim = m.max_bytes()
        if lim is not None and m.usage + n > lim:
            return True
    return False


def _reclaimers_consistent(sim: Simulation, busy: list[_Reclaimer], ours: set[int]) -> bool:
    """The reclaimers on the heap are what the host's flags say (ksgxd_running, each
    cgroup's work_running), the ``sgx_cg_wq`` items wait for their running work only,
    and every page of a batch is a page of an enclave the core runs (ids *ours*: its
    threads' and its builds')."""
    host = sim.host
    ksgxd = [r for r in busy if r.kind == RECLAIM_KSGXD]
    if len(ksgxd) > 1 or bool(ksgxd) != sim.actors.ksgxd_running:
        return False
    if host.ksgxd_woken and not ksgxd:
        return False
    running = {id(r.sgx_cg) for r in busy if r.sgx_cg is not None and r.stage in _RUNNING_STAGES}
    if len(running) != sum(1 for r in busy if r.sgx_cg is not None and r.stage in _RUNNING_STAGES):
        return False
    for s in host.sgx_cgroups:
        if s is not None and s.work_running != (id(s) in running):
            return False
    if any(not s.work_running for s in host.sgx_cg_wq):
        return False
    m_oe = host.epc.m_owner_encl
    for r in busy:
        if r.c is not None and host.sgx_cgroups[r.c.id] is not r.c:
            return False
        if any(int(m_oe[pg]) not in ours for pg in r.pages):
            return False
        ep = host.ksgxd_episode if r.kind == RECLAIM_KSGXD else r.episode
        cur = None if ep is None else ep.state.get("next_cg")
        if cur is not None and host.sgx_cgroups[cur.id] is not cur:
            return False
    return True


#: the stages at which a worker's work function is running (work_running)
_RUNNING_STAGES = (C.ST_PH2, C.ST_PH3, C.ST_PH4, C.ST_RESCHED)


def _pack_reclaimers(p: _Packed, busy: list[_Reclaimer]) -> None:
    """Each reclaimer on the heap at take-over into its R row, at the stage it stopped
    at (the batch, the counts, v14's cursor), and on the core's reclaimer heap: the
    inverse of :func:`_hand_back`."""
    R, S, EN, host = p.R, p.S, p.EN, p.host
    pool = host.epc
    m_oe, m_oi = pool.m_owner_encl, pool.m_owner_idx
    slot = 1
    order = []
    for rec in busy:
        if rec.kind == RECLAIM_KSGXD:
            r = 0
            root = host.sgx_cg_root.id
            R[C.R_EPI, 0] = int(host.ksgxd_episode is not None)
            ep = host.ksgxd_episode
        else:
            r = slot
            slot += 1
            root = rec.sgx_cg.id
            R[C.R_CG, r] = root
            ep = rec.episode
        R[C.R_KIND, r] = rec.kind
        R[C.R_SCHED, r] = 1
        R[C.R_T, r], R[C.R_SEQ, r] = rec.t, rec.seq
        R[C.R_STAGE, r] = rec.stage
        R[C.R_ROOT, r] = root
        R[C.R_NR, r] = SGX_NR_TO_SCAN
        cur = None if ep is None else ep.state.get("next_cg")
        R[C.R_CUR, r] = -1 if cur is None else cur.id
        if rec.c is not None:
            R[C.R_CNT, r] = rec.cnt
            R[C.R_C, r] = rec.c.id
            n = len(rec.pages)
            R[C.R_NP, r] = n
            R[C.R_CB, r] = rec.cb
            for k, pg in enumerate(rec.pages):
                e = int(m_oe[pg])
                R[C.R_PAGES + k, r] = pg
                R[C.R_ES + k, r] = e
                R[C.R_GS + k, r] = EN[C.EN_OFF, e] + int(m_oi[pg])
        order.append((rec.t, rec.seq, r))
    # with the builds _Packed put on the heap
    for k in range(int(S[C.S_NRH])):
        order.append((int(R[C.R_HT, k]), int(R[C.R_HS, k]), int(R[C.R_HEAP, k])))
    order.sort()  # sorted by (t, seq): a heap
    for k, (t, seq, r) in enumerate(order):
        R[C.R_HEAP, k], R[C.R_HT, k], R[C.R_HS, k] = r, t, seq
    S[C.S_NRH] = len(order)


def _hand_back(sim, p: _Packed, rc: int) -> None:
    """Put the live threads, ksgxd, the workers and the sampler back on the heap with
    the (time, priority, seq) the core gave them, each as a generator that resumes
    where the core stopped (mid-batch through the kernel functions' ``resume=``
    states of :mod:`epcsim.kernel.resume`)."""
    S, R, TH, host = p.S, p.R, p.TH, p.host
    entries = []
    for j, t in enumerate(p.threads):
        if not TH[C.TH_LIVE, j]:
            continue
        if TH[C.TH_LIVE, j] == 2:  # RC_THREAD_DONE: its end step
            gen = sim.actors.thread_end_step(
                t.inst, t.st, int(TH[C.TH_REMAIN, j]), t.until, bool(TH[C.TH_SIGBUS, j])
            )
        else:  # the thread goes on where the core stopped (its ThreadRun)
            r = t.run
            pos, buflen = int(TH[C.TH_POS, j]), int(TH[C.TH_BUFLEN, j])
            r.buf = p.BUF[j, pos:buflen].copy()
            r.pos = 0
            r.remaining = int(TH[C.TH_REMAIN, j])
            r.fault_start = int(TH[C.TH_FSTART, j])
            r.pending = bool(TH[C.TH_PENDING, j])
            r.r = int(TH[C.TH_R, j])
            r.started = bool(TH[C.TH_STARTED, j] >= 0)
            gen = sim.actors.thread(r)
        entries.append((int(TH[C.TH_T, j]), 1, int(TH[C.TH_SEQ, j]), gen, t.cpu))
    pol = host.policy
    if pol is not None and R[C.R_EPI, 0]:
        # ksgxd is in a wake-up's reclaim episode: with its policy state (v14's cursor)
        host.ksgxd_episode = Episode("ksgxd", host.sgx_cg_root, state=_episode_state(p, 0))
    elif pol is not None:
        # ksgxd went to sleep in the core (ksgxd_step() ended its episode); taken over
        # mid-episode, the host still holds the one it had then
        host.ksgxd_episode = None
    for k, (b, cpu, _) in enumerate(p.builds):
        r = p.brow0 + k
        entries.append((int(R[C.R_T, r]), 1, int(R[C.R_SEQ, r]), _build_back(p, b, r), cpu))
    for r in range(p.brow0):
        if not R[C.R_SCHED, r]:
            continue
        stage = int(R[C.R_STAGE, r])
        inner: ReclaimerState | None = None
        episode = None
        if r and pol is not None and stage not in (C.ST_START, C.ST_END):
            # a running work function's reclaim episode (v14's cursor)
            episode = Episode(
                "async", host.sgx_cgroups[int(R[C.R_CG, r])], state=_episode_state(p, r)
            )
        if stage in (C.ST_PH2, C.ST_PH3, C.ST_PH4):
            # the reclaim is rooted at the root (ksgxd) or at the worker's cgroup, 16
            # pages (R_ROOT, R_NR): what ksgxd_step / the work function pass themselves
            c = host.sgx_cgroups[int(R[C.R_C, r])]
            pages = [int(x) for x in R[C.R_PAGES : C.R_PAGES + int(R[C.R_NP, r]), r]]
            phase = {C.ST_PH2: 2, C.ST_PH3: 3, C.ST_PH4: 4}[stage]
            batch = SgxReclaimPagesState(phase, pages, int(R[C.R_CB, r]))
            inner = ReclaimerState(
                SgxCgroupReclaimPagesState(int(R[C.R_CNT, r]), c, batch), episode=episode
            )
        elif stage == C.ST_RESCHED:
            inner = ReclaimerState(reclaim=None, episode=episode)
        if r == 0:
            if stage == C.ST_START:
                actor = sim.actors.ksgxd()
            elif stage == C.ST_END:
                actor = sim.actors.ksgxd_end()
            else:
                actor = sim.actors.ksgxd(resume=inner)
        else:
            sgx_cg = host.sgx_cgroups[int(R[C.R_CG, r])]
            if stage == C.ST_START:
                actor = sim.actors.worker(sgx_cg)
            elif stage == C.ST_END:
                actor = sim.actors.worker_end(sgx_cg)
            else:
                actor = sim.actors.worker(sgx_cg, resume=inner)
        entries.append((int(R[C.R_T, r]), 1, int(R[C.R_SEQ, r]), actor, -1))
    entries.append((int(S[C.S_SM_T]), 2, int(S[C.S_SM_SEQ]), sim.metrics.sampler(), -1))
    for e in entries:
        heapq.heappush(sim.core.heap, e)
    sim.engine_used = "compiled"


def _build_back(p: _Packed, b: BuildRun, r: int) -> Actor:
    """Build *b*'s place in its ioctl (``b.add``) as the core left it in row *r*, and
    its process as a generator going on from it (``Actors.build``)."""
    R, host = p.R, p.host
    stage = int(R[C.R_STAGE, r])
    add = b.add
    assert add is not None
    add.c = int(R[C.R_B_C, r]) * PAGE_SIZE
    add.between = stage == C.ST_B_TOP
    add.page = None
    if stage != C.ST_B_TOP:
        reclaim = None
        if stage in (C.ST_PH2, C.ST_PH3, C.ST_PH4):
            pages = [int(x) for x in R[C.R_PAGES : C.R_PAGES + int(R[C.R_NP, r]), r]]
            phase = {C.ST_PH2: 2, C.ST_PH3: 3, C.ST_PH4: 4}[stage]
            reclaim = SgxCgroupReclaimPagesState(
                int(R[C.R_CNT, r]),
                host.sgx_cgroups[int(R[C.R_C, r])],
                SgxReclaimPagesState(phase, pages, int(R[C.R_CB, r])),
            )
        charged = stage == C.ST_B_ALLOC or (stage != C.ST_B_CHARGE and bool(R[C.R_B_GLOBAL, r]))
        alloc = SgxAllocEpcPageState(host.sgx_cgroups[int(R[C.R_B_CG, r])], charged, reclaim)
        add.page = SgxEnclAddPageState(int(R[C.R_B_PAGE, r]) if R[C.R_B_VA, r] else -1, alloc)
    return p.sim.actors.build(b)


def _episode_state(p: _Packed, r: int) -> dict[str, Any]:
    """Reclaimer *r*'s reclaim episode state as the policy keeps it (Episode.state):
    v14's cursor (``next_cg``, None: the root); nothing for the other designs."""
    if p.S[C.S_POLICY] != C.POLICY_V14:
        return {}
    cur = int(p.R[C.R_CUR, r])
    return {"next_cg": p.host.sgx_cgroups[cur] if cur >= 0 else None}


def check_engine(engine: str, sc: Scenario, options: dict[str, Any] | None = None) -> str | None:
    """Validate *engine* (an alias already resolved); for ``"compiled"`` the scenario
    (and the run's *options*) must be eligible (:mod:`epcsim.compiled.eligibility`).
    Returns the static reason the compiled engine cannot run (None if it may)."""
    if engine not in ENGINES:
        raise EpcsimError(f"engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    why = option_ineligibility(options or {}) or static_ineligibility(sc)
    if engine == "compiled" and why is not None:
        raise EpcsimError(f"engine compiled: {why}; use --engine reference or auto")
    return why
