"""The compiled engine's event loop (numba): the enclave threads, ksgxd, the
``sgx_cg_wq`` workers and the sampler, over the kernel model's own arrays.

The modules of :mod:`epcsim.compiled` beside this one mirror :mod:`epcsim.kernel` file
by file: each function there is named after the kernel function it specialises onto
flat arrays (:mod:`epcsim.compiled.twins` lists them with their reference twins), so
that a run gives exactly what the reference engine (:mod:`epcsim.sim.engine` driving
:mod:`epcsim.kernel`) gives: the same state, the same counters, the same virtual times.
``tests/sim/test_engines_exact.py`` checks that on random scenarios.
:mod:`epcsim.compiled.engine` decides when the core may run, packs the state in and out,
runs the end of each thread (task exit) step by step, and hands the run back to the
reference engine when the last thread ends.

Layout (few arguments per call: numba passes every array field by value):

- ``S`` (int64): scalars (``S_*``; every offset is in :mod:`epcsim.compiled.layout`),
  the ENCLS leaf counts at ``S_LC``, their costs at ``S_LCOST``, the EPC sections' first
  pages at ``S_SECT`` and the free lists (head, tail, nr, pristine range per node:
  ``NODE_*``) at ``S_NODES``.
- ``CG``, ``EN``, ``TH`` and ``R`` are Fortran-order tables (one id's fields adjacent);
  they reach ``run_core`` raveled and are viewed as ``A[f, id]`` with the number of
  fields a constant (``bits.fortran_table``; the C-order tables through
  ``bits.const_cols``).
- ``CG[f, id]`` (int64): per sgx_cgroup fields (``CG_*``); row ``CG_PRE`` is the
  preorder walk of the tree (by position), row ``CG_LIVE`` the live cgroups in id order,
  row ``CG_WQ`` the ``sgx_cg_wq`` queue (``S_NWQ`` items, oldest first).
- ``EN[f, eid]`` (int64): per enclave fields (``EN_*``), by the enclave's host id.
- ``TH[f, j]`` (int64): per enclave thread fields (``TH_*``); rows ``TH_HEAP``..
  (by position) the threads' binary heap on ``(t, seq)`` (:mod:`epcsim.compiled.heap`);
  ``CPUF`` the time each CPU is free again (``Simulation.cpu_free``); ``BUF[j]`` thread
  *j*'s accesses.
- ``R[f, r]`` (int64): the reclaimer actors (r = 0 ksgxd, 1.. workers; ``R_*``), rows
  ``R_PAGES``.. the pages of the actor's current batch, rows ``R_HEAP``.. (by
  position) the scheduled actors' binary heap on ``(t, seq)``.
- ``VA[row, f]`` (int64): VA pages (``VA_*``; one VA page's fields together; enclave
  *e*'s VA page *no* at row ``EN[EN_VAOFF, e] + no``), columns ``VA_BITS``.. their
  512-slot maps.
- ``P32``/``P8``/``PCG``: the EPC pool's ``i32`` (one row per page: prev, next,
  owner_encl, owner_idx: ``P32[page, P_NEXT]``), ``u8`` (one row per page: flags, kind)
  and ``cg`` arrays; ``E32``/``E8``/``EMEM``: the enclaves' ``i32`` (columns epc, va:
  ``E32[off + idx, E_EPC]``), ``u8`` (rows desc, type) and ``memcg`` arrays, one after
  the other (enclave *e* from ``EN[EN_OFF, e]``) (:mod:`epcsim.kernel.epc`,
  :mod:`epcsim.kernel.encl`).
- ``HB``: one bit per enclave page row, set while the page can be hit (resident, not
  blocked): the access loop reads it instead of ``E32`` and ``E8`` (derived by
  :mod:`epcsim.compiled.engine` at each load, kept up to date here).

Hot paths are source-level single call sites inlined by numba (``inline="always"``);
rare paths (the SECS, a new VA page, a failed grow, an enclave release) are out-of-line
functions.
"""

from __future__ import annotations

from ..kernel.constants import DESC_ACCESSED, VM_FAULT_NOPAGE, VM_FAULT_SIGBUS
from ._jit import inline, njit_cached, outline
from .bits import _u, const_cols, fortran_table, in_range, prefetch
from .encl import sgx_vma_fault
from .epc import stuck_watch
from .heap import heap_pop_root, heap_push, heap_rekey_root, heap_sift_down, key_less
from .ioctl import sgx_ioc_enclave_add_pages
from .layout import (
    CG_LIVE,
    CG_PARENT,
    CG_RUNNING,
    CG_WQ,
    E_DESC,
    E_EPC,
    EN_NPAGES,
    EN_NR_ADDED,
    EN_NR_EAUG,
    EN_NR_EVICTED,
    EN_NR_FAULTS,
    EN_NR_RECL,
    EN_OFF,
    EN_ROW,
    EN_SECS_CHILD,
    EN_SIGPEND,
    EN_WATCH,
    ERR_NO_WORKER_SLOT,
    KIND_BUILD,
    NCGF,
    NE32F,
    NENF,
    NP8F,
    NP32F,
    NRF,
    NSAMPF,
    NTHF,
    NVAF,
    R_B_CPU,
    R_B_E,
    R_B_NID,
    R_CG,
    R_HEAP,
    R_HS,
    R_HT,
    R_KIND,
    R_SCHED,
    R_SEQ,
    R_STAGE,
    R_T,
    RC_BUILD,
    RC_EDMM,
    RC_ERROR,
    RC_FLUSH,
    RC_FOREIGN,
    RC_LIMIT,
    RC_MEMCG,
    RC_NEED_CHUNK,
    RC_THREAD_DONE,
    RC_WATCH,
    RECL_KINDS,
    S_ACCESS_NS,
    S_ACTIVE,
    S_CUR_NID,
    S_CUR_TCG,
    S_ERR,
    S_FAULT_NS,
    S_FOR_P,
    S_FOR_S,
    S_FOR_T,
    S_KICK,
    S_KSTEP_NS,
    S_LIMIT,
    S_MEMLIM,
    S_MIDPOP,
    S_NHP,
    S_NLAT,
    S_NLIVE,
    S_NOW,
    S_NRH,
    S_NSAMP,
    S_NWQ,
    S_SEQ,
    S_SM_INTERVAL,
    S_SM_LAST,
    S_SM_SEQ,
    S_SM_T,
    S_STEPCOST,
    S_STUCK,
    S_TAGLAT,
    S_UNREF,
    S_WHO,
    S_WOKEN,
    SAMP_FAULTS,
    SAMP_ROOT_ROWS,
    SAMP_ROWS,
    ST_B_RECLAIM,
    ST_B_TOP,
    ST_PH2,
    ST_PH4,
    ST_START,
    TH_ACC,
    TH_BLOCK,
    TH_BUFLEN,
    TH_CPU,
    TH_E,
    TH_EDMM,
    TH_FAULTS,
    TH_FREED,
    TH_FSTART,
    TH_HEAP,
    TH_HS,
    TH_HT,
    TH_LIVE,
    TH_NID,
    TH_PENDING,
    TH_PFEND,
    TH_POS,
    TH_QUIET,
    TH_R,
    TH_REMAIN,
    TH_RETRIES,
    TH_SEQ,
    TH_SIGBUS,
    TH_STARTED,
    TH_STOP,
    TH_STREAK,
    TH_T,
    TH_TCG,
    TH_TLIVE,
    TH_UNTIL,
)
from .lru import PF_AHEAD, lru_prefetch_step
from .memcg import mem_cgroup_batch_fits
from .reclaim import ksgxd_step

__all__ = ["kick_kernel_threads", "record_sample", "run_core", "th_step_end"]


@outline
def record_sample(S, CG, EN, TH, R, SAMP, SAMPE, SAMPT, now):
    """No kernel twin (sampler): Metrics.record_sample() (epcsim.sim.metrics) for
    the counters of every live cgroup, as declared once in
    epcsim.compiled.layout.SAMPLED (the root has no misc.events: its rows are
    SAMP_ROOT_ROWS), and for each enclave the core runs (row EN_ROW of SAMPE: its
    threads' accesses and faults, its pages evicted and resident; enclave_counters()
    of epcsim.sim.metrics)."""
    k = S[S_NSAMP]
    SAMPT[_u(k)] = now
    for j in range(S[S_NLIVE]):
        c = CG[CG_LIVE, _u(j)]
        if CG[CG_PARENT, _u(c)] >= 0:
            for f in range(NSAMPF):
                SAMP[_u(k), _u(j), _u(f)] = CG[_u(SAMP_ROWS[f]), _u(c)]
        else:
            for f in range(NSAMPF):
                SAMP[_u(k), _u(j), _u(f)] = CG[_u(SAMP_ROOT_ROWS[f]), _u(c)]
    for j in range(TH.shape[1]):  # CG_NR_FAULTS counts without its threads' faults
        SAMP[_u(k), _u(TH[TH_TLIVE, _u(j)]), SAMP_FAULTS] += TH[TH_FAULTS, _u(j)]
    for row in range(SAMPE.shape[1]):
        SAMPE[_u(k), _u(row), 0] = 0
        SAMPE[_u(k), _u(row), 1] = 0
    for j in range(TH.shape[1]):
        e = TH[TH_E, _u(j)]
        row = EN[EN_ROW, _u(e)]
        SAMPE[_u(k), _u(row), 0] += TH[TH_ACC, _u(j)]
        SAMPE[_u(k), _u(row), 1] += TH[TH_FAULTS, _u(j)]
        ev = EN[EN_NR_EVICTED, _u(e)]  # less the EWBs counted by reclaimer kind
        for by in range(RECL_KINDS):
            ev += EN[_u(EN_NR_RECL + by), _u(e)]
        SAMPE[_u(k), _u(row), 2] = ev
        SAMPE[_u(k), _u(row), 3] = EN[EN_SECS_CHILD, _u(e)]
    for r in range(R.shape[1]):
        if R[R_KIND, _u(r)] == KIND_BUILD:  # an enclave being built: no threads yet
            e = R[R_B_E, _u(r)]
            row = EN[EN_ROW, _u(e)]
            ev = EN[EN_NR_EVICTED, _u(e)]  # less the EWBs counted by reclaimer kind
            for by in range(RECL_KINDS):
                ev += EN[_u(EN_NR_RECL + by), _u(e)]
            SAMPE[_u(k), _u(row), 2] = ev
            SAMPE[_u(k), _u(row), 3] = EN[EN_SECS_CHILD, _u(e)]
    S[S_NSAMP] = k + 1
    S[S_SM_LAST] = now


@inline
def th_step_end(S, TH, CPUF, j, cpu, now, t1, seq):
    """No kernel twin (event loop): the end of enclave thread *j*'s last step stored
    (the core keeps it in locals while the thread steps on): the simulation's time
    *now*, the thread's next step at (*t1*, *seq*), its heap entry (the root) and its
    CPU's free time (``Simulation.cpu_free``)."""
    S[S_NOW] = now
    S[S_SEQ] = seq
    TH[TH_T, _u(j)] = t1
    TH[TH_SEQ, _u(j)] = seq
    TH[TH_HT, 0] = t1
    TH[TH_HS, 0] = seq
    CPUF[_u(cpu)] = t1


@outline
def kick_kernel_threads(S, CG, R, now):
    """Models sgx_cg_wq_take_runnable() (specialised from
    epcsim.kernel.epc_cgroup.sgx_cg_wq_take_runnable) within the simulator's
    Actors.kick_kernel_threads() (epcsim.sim.actors): start ksgxd if woken and not running, then a
    worker for each runnable sgx_cg_wq item (oldest first; an item whose work function
    still runs stays queued).  Returns False if no worker
    slot was free (cannot happen: one slot per cgroup)."""
    if S[S_WOKEN] and not R[R_SCHED, 0]:
        S[S_SEQ] += 1
        R[R_SCHED, 0] = 1
        R[R_T, 0] = now
        R[R_SEQ, 0] = S[S_SEQ]
        R[R_STAGE, 0] = ST_START
        S[S_ACTIVE] += 1
        heap_push(R, R_HEAP, S[S_NRH], 0, now, S[S_SEQ])
        S[S_NRH] += 1
    nq = S[S_NWQ]
    if nq:
        keep = 0
        nw = R.shape[1]
        for q in range(nq):
            c = CG[CG_WQ, _u(q)]
            if CG[CG_RUNNING, _u(c)]:
                CG[CG_WQ, _u(keep)] = c
                keep += 1
                continue
            slot = -1
            for r in range(1, nw):
                if not R[R_SCHED, _u(r)]:
                    slot = r
                    break
            if slot < 0:
                S[S_ERR] = ERR_NO_WORKER_SLOT
                return False
            S[S_SEQ] += 1
            R[R_SCHED, _u(slot)] = 1
            R[R_T, _u(slot)] = now
            R[R_SEQ, _u(slot)] = S[S_SEQ]
            R[R_STAGE, _u(slot)] = ST_START
            R[R_KIND, _u(slot)] = 1
            R[R_CG, _u(slot)] = c
            S[S_ACTIVE] += 1
            heap_push(R, R_HEAP, S[S_NRH], slot, now, S[S_SEQ])
            S[S_NRH] += 1
        S[S_NWQ] = keep
    return True


@njit_cached
def run_core(
    S, CG_flat, EN_flat, TH_flat, CPUF, R_flat, VA, P32, P8, PCG, E32, E8, EMEM, HB, BUF, LAT,
    SAMP, SAMPE, SAMPT,
):  # fmt: skip
    """No kernel twin (event loop): run the simulation loop (Simulation.run() with the
    enclave threads, ksgxd, the workers and the sampler) until a thread's next step
    ends it (RC_THREAD_DONE, thread in S_WHO), the next event is past the time limit
    (RC_LIMIT), a thread needs the next chunk of accesses (RC_NEED_CHUNK), a buffer is
    full (RC_FLUSH), a foreign event is next (RC_FOREIGN), a thread's EDMM operations
    are due (RC_EDMM), a reclaimer's next phase may charge backing over a memory.max
    (RC_MEMCG, before that step), a fault added the pages an ``[[at]] when`` watcher
    waits for (RC_WATCH, enclave in S_WHO, after that step) or a model invariant broke
    (RC_ERROR)."""
    # the tables with their numbers of fields as constants: an id's (or a row's) fields
    # are at id * a constant, and no register holds a table's size; CG, EN, TH and R
    # come flat (raveled in Fortran order), so that their types are the same whatever
    # their sizes (one compiled variant)
    CG = fortran_table(CG_flat, NCGF)
    EN = fortran_table(EN_flat, NENF)
    TH = fortran_table(TH_flat, NTHF)
    R = fortran_table(R_flat, NRF)
    VA = const_cols(VA, NVAF)
    P32 = const_cols(P32, NP32F)
    P8 = const_cols(P8, NP8F)
    E32 = const_cols(E32, NE32F)
    # scalars no step changes, read once (the compiler cannot tell that no store to
    # another int64 array changes them)
    access_ns = S[S_ACCESS_NS]
    fault_ns = S[S_FAULT_NS]
    kstep_ns = S[S_KSTEP_NS]
    taglat = S[S_TAGLAT]
    unref = S[S_UNREF]
    big = 1 << 62
    # the pop looks at the foreign event and the time limit only from this time on
    # (neither moves while the core runs)
    bound = S[S_FOR_T] if S[S_FOR_T] <= S[S_LIMIT] else S[S_LIMIT] + 1
    while True:
        if S[S_ERR]:
            return RC_ERROR
        if S[S_KICK]:
            S[S_KICK] = 0
            if not kick_kernel_threads(S, CG, R, S[S_NOW]):
                return RC_ERROR
        j = -1  # the thread stepping
        who = -1  # the reclaimer stepping; -2: the sampler
        watched = False  # a fault added the pages a watcher waits for (EN_WATCH)
        mid = S[S_MIDPOP]
        if mid:
            j = mid - 1
        else:
            # pop the least (t, prio, seq): threads and kernel threads have priority
            # 1, the sampler 2
            bt = big
            bs = big
            if S[S_NHP]:
                j = TH[TH_HEAP, 0]
                bt = TH[TH_HT, 0]
                bs = TH[TH_HS, 0]
            if S[S_NRH]:
                t = R[R_HT, 0]
                if key_less(t, R[R_HS, 0], bt, bs):
                    j, who, bt, bs = -1, R[R_HEAP, 0], t, R[R_HS, 0]
            if S[S_SM_T] < bt:
                j, who, bt = -1, -2, S[S_SM_T]
            if bt >= bound:
                # a foreign actor's event (priority 0 or 1) first: the reference runs it
                ft = S[S_FOR_T]
                if ft < bt or (
                    ft == bt and (who == -2 or S[S_FOR_P] == 0 or key_less(ft, S[S_FOR_S], bt, bs))
                ):
                    return RC_LIMIT if ft > S[S_LIMIT] else RC_FOREIGN
                if bt > S[S_LIMIT]:
                    return RC_LIMIT
            if who >= 0 and R[R_KIND, _u(who)] == KIND_BUILD:
                # an EADD build: on its task's CPU, waiting for it as a thread does
                cpu = R[R_B_CPU, _u(who)]
                if CPUF[_u(cpu)] > bt:
                    S[S_SEQ] += 1
                    R[R_T, _u(who)] = CPUF[_u(cpu)]
                    R[R_SEQ, _u(who)] = S[S_SEQ]
                    heap_rekey_root(R, R_HEAP, S[S_NRH], R[R_T, _u(who)], S[S_SEQ])
                    continue
            if j >= 0 and CPUF[_u(TH[TH_CPU, _u(j)])] > bt:
                # the CPU is busy with another task's step: wait for it
                S[S_SEQ] += 1
                TH[TH_T, _u(j)] = CPUF[_u(TH[TH_CPU, _u(j)])]
                TH[TH_SEQ, _u(j)] = S[S_SEQ]
                heap_rekey_root(TH, TH_HEAP, S[S_NHP], TH[TH_T, _u(j)], S[S_SEQ])
                continue
            if who >= 0 and S[S_MEMLIM]:
                # a phase that charges backing: if a charge may exceed a memory.max
                # (the memcg OOM path), the reference runs the step
                st = R[R_STAGE, _u(who)]
                charges = st == ST_PH2 or st == ST_PH4  # noqa: SIM109 (numba)
                if charges and not mem_cgroup_batch_fits(S, CG, EN, R, E8, who):
                    S[S_WHO] = who
                    return RC_MEMCG
            S[S_NOW] = bt
        now = S[S_NOW]
        S[S_STEPCOST] = 0
        if who == -2:
            # the sampler
            if S[S_SM_LAST] != now:
                if S[S_NSAMP] >= SAMP.shape[0]:
                    return RC_FLUSH
                record_sample(S, CG, EN, TH, R, SAMP, SAMPE, SAMPT, now)
            S[S_SEQ] += 1
            S[S_SM_SEQ] = S[S_SEQ]
            S[S_SM_T] = now + S[S_SM_INTERVAL]
        elif j < 0:
            # an EADD build's step (SGX_IOC_ENCLAVE_ADD_PAGES), on its task's CPU: its
            # reclaim (ST_B_RECLAIM, the batch phases) is ksgxd_step()'s, as a
            # reclaimer's
            build = R[R_KIND, _u(who)] == KIND_BUILD
            alive = True
            if build and R[R_STAGE, _u(who)] >= ST_B_TOP:
                S[S_CUR_NID] = R[R_B_NID, _u(who)]
                if sgx_ioc_enclave_add_pages(S, CG, EN, R, VA, P32, P8, PCG, E32, E8, HB, who):
                    # the step is the reference's (the ioctl's end, a failure path):
                    # handed back before it, at its (time, seq)
                    S[S_WHO] = who
                    return RC_BUILD
            stage = R[R_STAGE, _u(who)]
            if not build or stage < ST_B_TOP or stage == ST_B_RECLAIM:
                alive = ksgxd_step(S, CG, EN, R, VA, P32, P8, PCG, E32, E8, EMEM, HB, who)
            if alive:
                d = kstep_ns + S[S_STEPCOST]
                S[S_SEQ] += 1
                R[R_T, _u(who)] = now + (d if d > 0 else 1)
                R[R_SEQ, _u(who)] = S[S_SEQ]
                if build:
                    CPUF[_u(R[R_B_CPU, _u(who)])] = R[R_T, _u(who)]
                    # Actors.check_watchers() after the step: its pages added
                    eb = R[R_B_E, _u(who)]
                    watched = (
                        EN[EN_NR_EAUG, _u(eb)] + EN[EN_NR_ADDED, _u(eb)] >= EN[EN_WATCH, _u(eb)]
                    )
                    if watched:
                        S[S_WHO] = eb
                heap_rekey_root(R, R_HEAP, S[S_NRH], R[R_T, _u(who)], S[S_SEQ])  # the root
            else:
                R[R_SCHED, _u(who)] = 0
                S[S_ACTIVE] -= 1
                S[S_NRH] -= 1
                heap_pop_root(R, R_HEAP, S[S_NRH])
        else:
            # an enclave thread (the thread actor of epcsim.sim.actors); its steps
            # follow one another here as long as no other actor's event comes first
            e = TH[TH_E, _u(j)]
            # the next event of any other actor: the kernel threads and the other
            # enclave threads (the thread is the heap's root: the next is a child) win
            # a tie, the sampler does not; none of them moves while this thread steps
            nxt_k = S[S_FOR_T]  # a foreign event wins a tie too (priority <= 1)
            if S[S_NRH] and R[R_HT, 0] < nxt_k:
                nxt_k = R[R_HT, 0]
            nhp = S[S_NHP]
            if nhp > 1 and TH[TH_HT, 1] < nxt_k:
                nxt_k = TH[TH_HT, 1]
            if nhp > 2 and TH[TH_HT, 2] < nxt_k:
                nxt_k = TH[TH_HT, 2]
            nxt_s = S[S_SM_T]
            nxt_t = nxt_s if nxt_s < nxt_k else nxt_k
            limit = S[S_LIMIT]
            miss = False  # the next access is known to miss (a run of hits ended at it)
            # the end of each step (its time, its sequence number) is kept here and
            # stored when the thread stops stepping (th_step_end): no other actor reads it
            # while the thread steps
            cpu = TH[TH_CPU, _u(j)]
            seq = S[S_SEQ]
            moved = False  # a step's end not stored yet
            # the thread's end by a signal or by the stuck rule is looked at in the
            # first step here and after a fault that failed (nothing else changes
            # TH_SIGBUS, EN_SIGPEND or TH_QUIET while it steps)
            checked = False
            until = TH[TH_UNTIL, _u(j)]  # big: none
            # the thread's enclave's rows, and the task's cgroup and node its faults
            # charge and allocate on (sgx_get_current_cg(), numa_node_id())
            off = EN[EN_OFF, _u(e)]
            npages = EN[EN_NPAGES, _u(e)]
            S[S_CUR_TCG] = TH[TH_TCG, _u(j)]
            S[S_CUR_NID] = TH[TH_NID, _u(j)]
            while True:
                # book the last fault's result
                if not mid and TH[TH_PENDING, _u(j)]:
                    rr = TH[TH_R, _u(j)]
                    n = S[S_NLAT]
                    if rr == 0 and n >= LAT.shape[1]:
                        if moved:
                            th_step_end(S, TH, CPUF, j, cpu, now, now, seq)
                        return RC_FLUSH
                    TH[TH_PENDING, _u(j)] = 0
                    if rr == 0:
                        LAT[0, _u(n)] = now - TH[TH_FSTART, _u(j)]
                        if taglat:  # the thread: its instance tags the latency
                            LAT[1, _u(n)] = j
                        S[S_NLAT] = n + 1
                        TH[TH_FSTART, _u(j)] = -1
                        if unref:
                            TH[TH_POS, _u(j)] += 1
                            TH[TH_REMAIN, _u(j)] -= 1
                            TH[TH_ACC, _u(j)] += 1
                    elif rr == VM_FAULT_NOPAGE:
                        # the stuck rule (epcsim.sim.stuck): stuck_retry() of
                        # epcsim.kernel.epc (a twin of stuck_watch's row), in place
                        block, freed = stuck_watch(CG, TH[TH_TCG, _u(j)])
                        if (
                            TH[TH_STREAK, _u(j)] == 1
                            or block < 0
                            or block != TH[TH_BLOCK, _u(j)]
                            or freed != TH[TH_FREED, _u(j)]
                        ):
                            TH[TH_BLOCK, _u(j)] = block
                            TH[TH_FREED, _u(j)] = freed
                            TH[TH_QUIET, _u(j)] = 0
                        TH[TH_QUIET, _u(j)] += 1
                        checked = False
                    else:
                        TH[TH_SIGBUS, _u(j)] = 1
                        EN[EN_SIGPEND, _u(e)] = 1
                        checked = False
                ended = False
                if not checked:
                    mid = 0
                    S[S_MIDPOP] = 0
                    if TH[TH_STARTED, _u(j)] < 0:
                        TH[TH_STARTED, _u(j)] = now
                    ended = (
                        TH[TH_SIGBUS, _u(j)] != 0
                        or EN[EN_SIGPEND, _u(e)] != 0
                        or TH[TH_QUIET, _u(j)] >= S[S_STUCK]
                    )
                    checked = True
                # its end (no accesses left, checked below: that is at TH_STOP)
                if ended or (now >= until and TH[TH_STREAK, _u(j)] == 0):
                    if moved:
                        th_step_end(S, TH, CPUF, j, cpu, now, now, seq)
                    S[S_WHO] = j
                    TH[TH_LIVE, _u(j)] = 2
                    S[S_NHP] -= 1  # off the thread heap (it is the root)
                    heap_pop_root(TH, TH_HEAP, S[S_NHP])
                    return RC_THREAD_DONE
                # TH_STOP: the end of the buffer, or the access at which the
                # thread's EDMM operations are due, if that comes first
                pos = TH[TH_POS, _u(j)]
                stop = TH[TH_STOP, _u(j)]
                if pos >= stop:
                    if moved:
                        th_step_end(S, TH, CPUF, j, cpu, now, now, seq)
                    S[S_WHO] = j
                    if TH[TH_REMAIN, _u(j)] <= 0:  # (TH_REMAIN >= TH_BUFLEN - TH_POS)
                        TH[TH_LIVE, _u(j)] = 2
                        S[S_NHP] -= 1
                        heap_pop_root(TH, TH_HEAP, S[S_NHP])
                        return RC_THREAD_DONE
                    # its EDMM operations are due: the reference runs them (the
                    # thread's step is handed back as it is, at its (time, seq))
                    edmm = TH[TH_EDMM, _u(j)]
                    if edmm >= 0 and TH[TH_ACC, _u(j)] >= edmm:
                        return RC_EDMM
                    S[S_MIDPOP] = j + 1
                    return RC_NEED_CHUNK
                k = 0
                if miss:
                    # the last step's run of hits ended at this access, a miss, and
                    # nothing has run since: its fault follows without a second look
                    miss = False
                else:
                    # accesses up to the next event of any other actor (nxt_k, nxt_s)
                    # or the thread's end: max(1, (tend - now) // access_ns) of them,
                    # that is the first always and each next one while it ends by tend
                    # (tk: the time after access k, compared with tend raised to the
                    # first's end)
                    tend = until if until < nxt_t else nxt_t
                    t_one = now + access_ns
                    if tend < t_one:
                        tend = t_one
                    n = stop - pos  # a run of hits stops at the EDMM operations too
                    # sgx_encl_access(): hits set the accessed bit, up to the first miss
                    tk = t_one
                    while k < n and tk <= tend:
                        idx = BUF[_u(j), _u(pos + k)]
                        g = off + idx
                        # out of range, not resident, or blocked
                        if not in_range(idx, npages) or not (HB[_u(g >> 6)] >> (g & 63)) & 1:
                            miss = k > 0
                            break
                        E8[E_DESC, _u(g)] |= DESC_ACCESSED
                        k += 1
                        tk += access_ns
                if k:
                    TH[TH_POS, _u(j)] = pos + k
                    TH[TH_REMAIN, _u(j)] -= k
                    TH[TH_ACC, _u(j)] += k
                    TH[TH_STREAK, _u(j)] = 0  # the access was done (another thread's
                    TH[TH_QUIET, _u(j)] = 0  # fault brought the page in)
                    d = k * access_ns
                else:
                    # sgxsgx_vma_fault(); at an access's first fault the next accesses'
                    # rows are asked for
                    idx = BUF[_u(j), _u(pos)]
                    lru_prefetch_step(S, P32)
                    if TH[TH_FSTART, _u(j)] < 0:
                        TH[TH_FSTART, _u(j)] = now
                        # the rows not asked for by an earlier fault (TH_PFEND)
                        q1 = min(pos + 1 + PF_AHEAD, TH[TH_BUFLEN, _u(j)])
                        q0 = TH[TH_PFEND, _u(j)]
                        for q in range(q0 if q0 > pos else pos + 1, q1):
                            ix = BUF[_u(j), _u(q)]
                            if in_range(ix, npages):
                                prefetch(E32, off + ix, E_EPC)
                                prefetch(E8, E_DESC, off + ix)
                        if q1 > q0:
                            TH[TH_PFEND, _u(j)] = q1
                    EN[EN_NR_FAULTS, _u(e)] += 1
                    if not in_range(idx, npages):
                        rr = VM_FAULT_SIGBUS
                    else:
                        rr = sgx_vma_fault(S, CG, EN, VA, P32, P8, PCG, E32, E8, EMEM, HB, e, idx)
                    # counted here, where the fault happens (the result is booked at
                    # the thread's next step, which a run's end may not reach)
                    if rr == 0:  # (CG_NR_FAULTS follows: its doc)
                        TH[TH_FAULTS, _u(j)] += 1
                        TH[TH_STREAK, _u(j)] = 0
                        TH[TH_QUIET, _u(j)] = 0
                    elif rr == VM_FAULT_NOPAGE:
                        TH[TH_RETRIES, _u(j)] += 1
                        TH[TH_STREAK, _u(j)] += 1
                    TH[TH_PENDING, _u(j)] = 1
                    TH[TH_R, _u(j)] = rr
                    d = S[S_STEPCOST] + kstep_ns + fault_ns
                    # Actors.check_watchers() after the step: pages added, EADD and EAUG
                    watched = EN[EN_NR_EAUG, _u(e)] + EN[EN_NR_ADDED, _u(e)] >= EN[EN_WATCH, _u(e)]
                    if watched:
                        S[S_WHO] = e
                seq += 1
                t1 = now + (d if d > 0 else 1)
                moved = True
                # the thread's next step is the next event (its CPU is its own, the
                # heap stays valid: t1 is below the children's keys) unless a kernel
                # thread is to be kicked, another actor comes first or the time is up
                if (
                    t1 >= nxt_k
                    or t1 > nxt_s
                    or t1 > limit
                    or S[S_NWQ]
                    or (S[S_WOKEN] and not R[R_SCHED, 0])
                    or watched
                ):
                    th_step_end(S, TH, CPUF, j, cpu, now, t1, seq)
                    break
                now = t1
                S[S_STEPCOST] = 0
            heap_sift_down(TH, TH_HEAP, S[S_NHP], 0)
        # Actors.kick_kernel_threads()
        kick = (S[S_WOKEN] and not R[R_SCHED, 0]) or S[S_NWQ]
        if kick and not kick_kernel_threads(S, CG, R, now):
            return RC_ERROR
        if watched:  # Actors.check_watchers(), after the kick as in Simulation.run()
            return RC_WATCH
