"""The batched engine: the same simulation as :mod:`epcsim.sim.engine`, with the steady
state of an enclave thread run by a compiled event loop (:mod:`epcsim.sim._core`).

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
where the core stopped (the kernel functions take a model-only ``_resume`` argument
for this), so the run ends step by step as it would have.  Same scenario and seed,
byte-identical result; ``tests/sim/test_batched_exact.py`` compares both engines.

Eligible: exactly one enclave instance with one thread running a pattern or trace
workload (no kselftest program, no EDMM), no vEPC, no timed operations, no
``memory.max`` below ``max``; and at the thread's first step ksgxd and the workers are
idle, every cgroup is online and the enclave's mm is its task's only.  Otherwise the
step-by-step engine runs the scenario (``Result.engine`` says which ran and why).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import EpcsimError
from ..kernel.constants import PAGE_COUNTER_MAX, SGX_ENCL_INITIALIZED
from ..kernel.encl import SgxVaPage
from ..kernel.epc_cgroup import sgx_cgroup_max_pages_to_root, sgx_cgroup_reclaim_pages
from ..kernel.reclaim import ksgxd_step, sgx_reclaim_pages
from ..scenario.schema import Scenario

if TYPE_CHECKING:
    from ..kernel.encl import Encl
    from .engine import Instance, Simulation, ThreadStats

__all__ = ["ENGINES", "static_ineligibility", "take_over"]

ENGINES = ("auto", "batched", "reference")

_I64_CAP = 1 << 62
_MASK64 = (1 << 64) - 1
LAT_CAP = 1 << 16
SAMP_CAP = 4096


def static_ineligibility(sc: Scenario) -> str | None:
    """Why the batched engine cannot run *sc* (None if it can, subject to the checks at
    the thread's first step)."""
    insts = sum(e.count for e in sc.enclave)
    if insts != 1 or sc.vepc:
        return "the batched engine runs one enclave instance (and no vEPC)"
    e = sc.enclave[0]
    if e.program is not None:
        return "the batched engine does not run the kselftest program"
    if e.threads != 1:
        return "the batched engine runs one enclave thread"
    if e.edmm is not None:
        return "the batched engine does not run EDMM operations"
    if sc.at:
        return "the batched engine does not run timed operations ([[at]])"
    if any(c.memory_max not in (None, "max") for c in sc.cgroup):
        return "the batched engine does not model memory.max (OOM) limits"
    return None


def _dynamic_ineligibility(sim: Simulation, inst: Instance, encl: Encl) -> str | None:
    host = sim.host
    task = inst.task
    if sim._ksgxd_running or host.ksgxd_woken or host.sgx_cg_wq:
        return "ksgxd or a reclaim worker was busy when the enclave thread started"
    if len(sim._heap) != 1 or sim._heap[0][1] != 2:
        return "other actors were scheduled when the enclave thread started"
    if task is None or task.exited or task.signal_pending:
        return "the task is not running"
    if encl.mm_list != [task.pid] or encl.nr_live_mms != 1 or encl.released:
        return "the enclave is mapped by another mm"
    if not encl.flags & SGX_ENCL_INITIALIZED:
        return "the enclave is not initialised"
    for sgx_cg in host.sgx_cgroups:
        if sgx_cg is None:
            continue
        cg = sgx_cg.cg
        if not cg.online or cg.freed or sgx_cg.work_running or sgx_cg.work_pending:
            return "a cgroup is offline or has reclaim work"
    memcg = host.task_memcg(task)
    m = memcg
    while m is not None:
        if m.max_pages < PAGE_COUNTER_MAX:
            return "the batched engine does not model memory.max (OOM) limits"
        m = m.parent
    used = encl.memcg[encl.memcg >= 0]
    if (used.size and (used != memcg.id).any()) or encl.secs_memcg not in (-1, memcg.id):
        return "the enclave has backing in another memcg"
    if any(p.epc < 0 and p.no in encl.va_pages for p in encl.va_all):
        return "the enclave's VA pages are inconsistent"
    return None


class _Packed:
    """The state handed to the core, and what is needed to hand it back."""

    def __init__(self, sim: Simulation, inst: Instance, encl: Encl) -> None:
        from . import _core as C

        self.C = C
        host = sim.host
        pool = host.epc
        task = inst.task
        assert task is not None
        self.sim, self.host, self.inst, self.encl, self.task = sim, host, inst, encl, task
        cgs = host.sgx_cgroups
        ncg = len(cgs)
        CG = np.zeros((C.NCGF, ncg), np.int64)
        capacity = host.misc.root.ctrl.capacity
        for s in cgs:
            if s is None:
                continue
            cg = s.cg
            i = s.id
            CG[C.CG_LRU_HEAD, i] = s.lru.head
            CG[C.CG_LRU_TAIL, i] = s.lru.tail
            CG[C.CG_LRU_NR, i] = s.lru.nr
            CG[C.CG_NR_PAGES, i] = s.nr_pages
            CG[C.CG_NR_EVICTED, i] = s.nr_evicted
            CG[C.CG_NR_BATCHES, i] = s.nr_reclaim_batches
            CG[C.CG_NR_ENOMEM, i] = s.nr_enomem
            CG[C.CG_NR_FAULTS, i] = s.nr_faults
            CG[C.CG_USAGE, i] = cg.usage
            CG[C.CG_PEAK, i] = cg.peak
            CG[C.CG_EVENTS, i] = cg.events
            CG[C.CG_EVENTS_LOCAL, i] = cg.events_local
            CG[C.CG_REFCNT, i] = cg.refcnt
            CG[C.CG_LIMIT, i] = min(cg.max, capacity, _I64_CAP)
            CG[C.CG_PARENT, i] = cg.parent.priv.id if cg.parent is not None else -1
            CG[C.CG_MAXPAGES, i] = min(sgx_cgroup_max_pages_to_root(s), _I64_CAP)
        # preorder of the whole tree (css_next_descendant_pre order)
        pre: list[int] = []
        if len(pool.free_lists) > 8:
            raise AssertionError("more than 8 EPC sections")

        def walk(cg) -> None:
            sid = cg.priv.id
            CG[C.CG_PREPOS, sid] = len(pre)
            pre.append(sid)
            for ch in cg.children:
                walk(ch)
            CG[C.CG_SUBEND, sid] = len(pre)

        walk(host.misc.root)
        for s in cgs:
            if s is not None:
                CG[C.CG_CURSOR, s.id] = CG[C.CG_PREPOS, s.next_cg.id]
        self.CG = CG
        self.PRE = np.array(pre, np.int64)
        CG[C.CG_PRE, : len(pre)] = self.PRE
        self.live = [s for s in cgs if s is not None]
        CG[C.CG_LIVE, : len(self.live)] = [s.id for s in self.live]
        self.R = np.zeros((C.NRF, 1 + C.NWORKERS), np.int64)
        self.R[C.R_KIND, 1:] = 1
        # VA pages: room for every VA page the enclave can still grow
        nva0 = len(encl.va_all)
        cap = nva0 + (max(encl.npages - encl.page_cnt, 0) + 511) // 512 + 2
        VA = np.full((cap, C.NVAF), -1, np.int64)
        VA[:, C.VA_USED] = 0
        VA[:, C.VA_IN] = 0
        VA[:, C.VA_BITS :] = 0
        for vp in encl.va_all:
            VA[vp.no, C.VA_EPC] = vp.epc
            VA[vp.no, C.VA_USED] = vp.used
            bits = vp.bits
            for w in range(8):
                word = (bits >> (64 * w)) & _MASK64
                VA[vp.no, C.VA_BITS + w] = word - (1 << 64) if word >> 63 else word
        order = list(encl.va_pages)
        for k, no in enumerate(order):
            VA[no, C.VA_IN] = 1
            VA[no, C.VA_PREV] = order[k - 1] if k else -1
            VA[no, C.VA_NEXT] = order[k + 1] if k + 1 < len(order) else -1
        self.VA, self.nva0 = VA, nva0
        S = np.zeros(C.NS, np.int64)
        S[C.S_LC : C.S_LC + len(host.encls_count)] = host.encls_count
        S[C.S_LCOST : C.S_LCOST + len(sim.leaf_cost)] = sim.leaf_cost
        fl = pool.free_lists
        S[C.S_NNODES] = len(fl)
        S[C.S_SECT : C.S_SECT + len(fl)] = pool.section_start
        for k, f in enumerate(fl):
            S[C.S_NODES + 3 * k : C.S_NODES + 3 * k + 3] = (f.head, f.tail, f.nr)
        S[C.S_NLIVE] = len(self.live)
        costs = sim.costs
        S[C.S_NOW] = sim.now
        S[C.S_SEQ] = sim._seq
        S[C.S_LIMIT] = sim.limit_ns
        S[C.S_ACCESS_NS] = costs.access
        S[C.S_FAULT_NS] = costs.fault
        S[C.S_KSTEP_NS] = costs.kernel_step
        S[C.S_BATCH_NS] = costs.reclaim_batch
        S[C.S_NR_FREE] = pool.nr_free_pages
        S[C.S_NR_LRU] = host.nr_lru_pages
        S[C.S_WOKEN] = int(host.ksgxd_woken)
        S[C.S_ACTIVE] = 1
        S[C.S_SGX2] = int(host.sgx2)
        S[C.S_UNREF] = int(sim.sc.host.experiments.fault_unreferenced)
        S[C.S_LIVE_MMS] = encl.nr_live_mms
        S[C.S_ROOT] = host.sgx_cg_root.id
        S[C.S_TCG] = host.task_misc_cg(task).priv.id
        S[C.S_NID] = task.nid
        S[C.S_TH_T] = sim.now
        S[C.S_TH_MIDPOP] = 1
        S[C.S_TH_FSTART] = -1
        S[C.S_TH_UNTIL] = -1
        _, prio, seq, _, _ = sim._heap[0]
        S[C.S_SM_T] = sim._heap[0][0]
        S[C.S_SM_SEQ] = seq
        S[C.S_SM_LAST] = sim._cols["time_ns"][-1] if sim._cols["time_ns"] else -1
        S[C.S_SM_INTERVAL] = sim.sample_ns
        S[C.S_E_ID] = encl.id
        S[C.S_E_NPAGES] = encl.npages
        S[C.S_E_SECS_EPC] = encl.secs_epc
        S[C.S_E_SECS_VA] = encl.secs_va
        S[C.S_E_SECS_MEMCG] = encl.secs_memcg
        S[C.S_E_SECS_CHILD] = encl.secs_child_cnt
        S[C.S_E_PAGE_CNT] = encl.page_cnt
        S[C.S_E_REFCOUNT] = encl.refcount
        S[C.S_E_NR_EAUG] = encl.nr_eaug
        S[C.S_E_NR_ELDU] = encl.nr_eldu
        S[C.S_E_NR_EVICTED] = encl.nr_evicted
        S[C.S_E_NR_FAULTS] = encl.nr_faults
        S[C.S_E_MEMCG] = host.task_memcg(task).id
        S[C.S_NVA] = nva0
        S[C.S_VA_HEAD] = order[0] if order else -1
        S[C.S_VA_TAIL] = order[-1] if order else -1
        self.S = S
        self.LAT = np.zeros(LAT_CAP, np.int64)
        self.SAMP = np.zeros((SAMP_CAP, len(self.live), 8), np.int64)
        self.SAMPT = np.zeros(SAMP_CAP, np.int64)
        self.buf = np.zeros(0, np.int64)
        self.paths = [_cg_path(s) for s in self.live]
        self.limits = [
            None if s.cg.parent is None or s.cg.max >= 1 << 63 else s.cg.max for s in self.live
        ]

    def run(self) -> int:
        C, pool, encl = self.C, self.host.epc, self.encl
        return C.run_core(
            self.S, self.CG, self.R, self.VA, pool.i32, pool.u8, pool.cg, encl.i32,
            encl.u8, encl.memcg, self.buf, self.LAT, self.SAMP, self.SAMPT,
        )  # fmt: skip

    def flush(self) -> None:
        """Move recorded samples and fault latencies to the simulation."""
        C, S, sim = self.C, self.S, self.sim
        n = int(S[C.S_NLAT])
        if n:
            sim.fault_lat.append(self.LAT[:n].copy())
            S[C.S_NLAT] = 0
        k = int(S[C.S_NSAMP])
        if k:
            cols = sim._cols
            nl = len(self.live)
            cols["time_ns"].extend(np.repeat(self.SAMPT[:k], nl).tolist())
            cols["cgroup"].extend(self.paths * k)
            cols["limit_bytes"].extend(self.limits * k)
            block = self.SAMP[:k].reshape(k * nl, 8)
            for j, name in enumerate(
                (
                    "usage_bytes",
                    "peak_bytes",
                    "max_events",
                    "faults",
                    "evictions",
                    "reclaim_batches",
                    "reclaimable_pages",
                    "enomem",
                )
            ):
                cols[name].extend(block[:, j].tolist())
            S[C.S_NSAMP] = 0

    def write_back(self) -> None:
        """Write every scalar the core changed back to the kernel-model objects."""
        C, S, CG, host, encl = self.C, self.S, self.CG, self.host, self.encl
        pool = host.epc
        cgs = host.sgx_cgroups
        for s in self.live:
            i = s.id
            cg = s.cg
            s.lru.head = int(CG[C.CG_LRU_HEAD, i])
            s.lru.tail = int(CG[C.CG_LRU_TAIL, i])
            s.lru.nr = int(CG[C.CG_LRU_NR, i])
            s.nr_pages = int(CG[C.CG_NR_PAGES, i])
            s.nr_evicted = int(CG[C.CG_NR_EVICTED, i])
            s.nr_reclaim_batches = int(CG[C.CG_NR_BATCHES, i])
            s.nr_enomem = int(CG[C.CG_NR_ENOMEM, i])
            s.nr_faults = int(CG[C.CG_NR_FAULTS, i])
            s.work_pending = bool(CG[C.CG_PENDING, i])
            s.work_running = bool(CG[C.CG_RUNNING, i])
            s.next_cg = cgs[int(self.PRE[CG[C.CG_CURSOR, i]])]
            cg.usage = int(CG[C.CG_USAGE, i])
            cg.peak = int(CG[C.CG_PEAK, i])
            cg.events = int(CG[C.CG_EVENTS, i])
            cg.events_local = int(CG[C.CG_EVENTS_LOCAL, i])
            cg.refcnt = int(CG[C.CG_REFCNT, i])
        for k, f in enumerate(pool.free_lists):
            f.head, f.tail, f.nr = (int(S[C.S_NODES + 3 * k + j]) for j in range(3))
        pool.nr_free_pages = int(S[C.S_NR_FREE])
        host.nr_lru_pages = int(S[C.S_NR_LRU])
        host.ksgxd_woken = bool(S[C.S_WOKEN])
        counts = host.encls_count
        for i in range(len(counts)):
            counts[i] = int(S[C.S_LC + i])
        if S[C.S_IN_WQ]:
            host.sgx_cg_wq.append(cgs[int(S[C.S_TCG])])
        encl.secs_epc = int(S[C.S_E_SECS_EPC])
        encl.secs_va = int(S[C.S_E_SECS_VA])
        encl.secs_memcg = int(S[C.S_E_SECS_MEMCG])
        encl.secs_child_cnt = int(S[C.S_E_SECS_CHILD])
        encl.page_cnt = int(S[C.S_E_PAGE_CNT])
        encl.refcount = int(S[C.S_E_REFCOUNT])
        encl.nr_eaug = int(S[C.S_E_NR_EAUG])
        encl.nr_eldu = int(S[C.S_E_NR_ELDU])
        encl.nr_evicted = int(S[C.S_E_NR_EVICTED])
        encl.nr_faults = int(S[C.S_E_NR_FAULTS])
        delta = int(S[C.S_E_BACKING])
        encl.backing_bytes += delta
        encl.owner.backing_bytes += delta
        m = host.memcgs[int(S[C.S_E_MEMCG])]
        while m is not None:
            m.usage += delta
            m = m.parent
        VA = self.VA
        for no in range(self.nva0, int(S[C.S_NVA])):
            encl.va_all.append(SgxVaPage(no, int(VA[no, C.VA_EPC])))
        for vp in encl.va_all:
            words = VA[vp.no, C.VA_BITS :].tolist()
            vp.bits = sum((w & _MASK64) << (64 * k) for k, w in enumerate(words))
            vp.used = int(VA[vp.no, C.VA_USED])
        order = OrderedDict()
        no = int(S[C.S_VA_HEAD])
        while no >= 0:
            order[no] = encl.va_all[no]
            no = int(VA[no, C.VA_NEXT])
        encl.va_pages = order


def _cg_path(sgx_cg) -> str:
    from .engine import _cg_path as f

    return f(sgx_cg)


def take_over(
    sim: Simulation,
    inst: Instance,
    encl: Encl,
    pattern: Any,
    rng: np.random.Generator,
    remaining: int,
    until: int | None,
    st: ThreadStats,
    cpu: int,
    chunk: int,
) -> str | None:
    """Run the thread's steady state in the core, at the thread's first step.

    Returns a reason (and changes nothing) if the run is not eligible; otherwise runs
    until the thread's next step would end it or the time limit, puts every actor back
    on the heap as a generator resuming where the core stopped, and returns None.  The
    caller's generator then returns: its heap entry is replaced by the continuation.
    """
    why = _dynamic_ineligibility(sim, inst, encl)
    if why is not None:
        return why
    from . import _core as C

    p = _Packed(sim, inst, encl)
    S = p.S
    S[C.S_TH_REMAIN] = remaining
    if until is not None:
        S[C.S_TH_UNTIL] = until
    if sim._lat_buf:
        sim.fault_lat.append(np.asarray(sim._lat_buf, np.int64))
        sim._lat_buf = []
    sim._heap.clear()
    while True:
        rc = p.run()
        if rc == C.RC_NEED_CHUNK:
            want = min(chunk, int(S[C.S_TH_REMAIN]))
            p.buf = np.ascontiguousarray(pattern.take(rng, want), dtype=np.int64)
            S[C.S_BUFLEN] = len(p.buf)
            S[C.S_TH_POS] = 0
        elif rc == C.RC_FLUSH:
            p.flush()
        elif rc == C.RC_ERROR:
            raise AssertionError(f"batched engine: model invariant broken (code {S[C.S_ERR]})")
        else:
            break
        if sim.progress is not None:
            sim.progress(int(S[C.S_NOW]), sim.limit_ns)
    p.flush()
    p.write_back()
    _hand_back(sim, p, rc, inst, st, until, cpu)
    return None


def _hand_back(sim, p: _Packed, rc: int, inst, st, until, cpu: int) -> None:
    """Put the thread, ksgxd, the workers and the sampler back on the heap with the
    (time, priority, seq) the core gave them, each as a generator that resumes where the
    core stopped (mid-batch through the kernel functions' ``_resume`` argument)."""
    C, S, R, host = p.C, p.S, p.R, p.host
    st.accesses = int(S[C.S_TH_ACC]) + st.accesses
    st.faults += int(S[C.S_TH_FAULTS])
    st.retries += int(S[C.S_TH_RETRIES])
    st.streak = int(S[C.S_TH_STREAK])
    remaining = int(S[C.S_TH_REMAIN])
    sim.now = int(S[C.S_NOW])
    sim._seq = int(S[C.S_SEQ])
    sim._active += int(S[C.S_ACTIVE])
    sim._ksgxd_running = bool(R[C.R_SCHED, 0])
    t_thread = int(S[C.S_TH_T])
    sim.cpu_free[cpu] = t_thread
    if rc == C.RC_THREAD_DONE:
        sigbus = bool(S[C.S_TH_SIGBUS])
        gen = sim._thread_end_step(inst, st, remaining, until, sigbus)
    else:
        gen = _never(inst.name)
    entries = [(t_thread, 1, int(S[C.S_TH_SEQ]), gen, cpu)]
    for r in range(R.shape[1]):
        if not R[C.R_SCHED, r]:
            continue
        stage = int(R[C.R_STAGE, r])
        inner: Any = None
        if stage in (C.ST_PH2, C.ST_PH3, C.ST_PH4):
            c = host.sgx_cgroups[int(R[C.R_C, r])]
            root = host.sgx_cgroups[int(R[C.R_ROOT, r])]
            pages = [int(x) for x in R[C.R_PAGES : C.R_PAGES + int(R[C.R_NP, r]), r]]
            phase = {C.ST_PH2: 2, C.ST_PH3: 3, C.ST_PH4: 4}[stage]
            batch = sgx_reclaim_pages(host, c, None, _resume=(phase, pages, int(R[C.R_CB, r])))
            inner = sgx_cgroup_reclaim_pages(
                host,
                root,
                None,
                int(R[C.R_NR, r]),
                _resume=(int(R[C.R_CNT, r]), c, batch),
            )
        elif stage == C.ST_RESCHED:
            inner = "cond_resched"
        if r == 0:
            if stage == C.ST_START:
                actor = sim._ksgxd()
            elif stage == C.ST_END:
                actor = sim._ksgxd_end()
            else:
                actor = sim._ksgxd(resume=ksgxd_step(host, _resume=inner))
        else:
            sgx_cg = host.sgx_cgroups[int(R[C.R_CG, r])]
            if stage == C.ST_START:
                actor = sim._worker(sgx_cg)
            elif stage == C.ST_END:
                actor = sim._actor_end()
            else:
                actor = sim._worker(sgx_cg, resume=inner)
        entries.append((int(R[C.R_T, r]), 1, int(R[C.R_SEQ, r]), actor, -1))
    entries.append((int(S[C.S_SM_T]), 2, int(S[C.S_SM_SEQ]), sim._sampler(), -1))
    for e in entries:
        heapq.heappush(sim._heap, e)
    sim.engine_used = "batched"


def _never(name: str):
    """The thread's heap entry when the core stopped at the time limit: the run loop
    stops before it, so it never runs."""
    raise AssertionError(f"batched engine: thread of {name} resumed past the time limit")
    yield  # pragma: no cover


def check_engine(engine: str, sc: Scenario) -> str | None:
    """Validate *engine*; for ``"batched"`` the scenario must be eligible.  Returns the
    static reason the batched engine cannot run (None if it may)."""
    if engine not in ENGINES:
        raise EpcsimError(f"engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    why = static_ineligibility(sc)
    if engine == "batched" and why is not None:
        raise EpcsimError(f"engine batched: {why}; use --engine reference or auto")
    return why
