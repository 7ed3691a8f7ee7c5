"""The compiled engine's tables, declared once.

The compiled event loop (:mod:`epcsim.compiled.loop` and the modules it inlines) keeps
its state in a few flat NumPy arrays ("tables") and addresses them through integer
constants (``S_NOW``, ``CG_NR_EVICTED``, ``R_PAGES``, ...).  Each table is declared
here as an ordered list of :class:`Field` -- name, width (1, or N for a vector such as
the 12 ENCLS leaf counts), one line of meaning and, where the field mirrors an attribute of the
reference model, how it is packed and written back.  Everything else is generated from
these declarations at import:

- the offsets (``S_NOW = 0``, ...) and each table's size (``NS``, ``NCGF``, ...), as
  module globals (numba reads module globals when it compiles);
- the pack and write-back of the mirrored fields (:func:`pack`, :func:`write_back`),
  used by :mod:`epcsim.compiled.engine`;
- the sampled counters (:data:`SAMPLED`): the columns of ``timeseries.parquet`` the
  compiled sampler records, the table field each comes from (``SAMP_ROWS``,
  ``SAMP_ROOT_ROWS``, ``NSAMPF``; ``SAMP_FAULTS``: the column of ``CG_NR_FAULTS``).

The tables:

- ``S`` (int64): scalars, vectors at ``S_LC`` (ENCLS leaf counts), ``S_LCOST`` (their
  costs), ``S_SECT`` (first page of each EPC section), ``S_NODES`` (free lists: head,
  tail, nr, hwm, end per node, ``NODE_*``: the freed pages' links, the length, the
  pristine range).
- ``EN[f, eid]``: per enclave, by host enclave id (an :class:`~epcsim.kernel.encl.Encl`).
- ``TH[f, j]``: per enclave thread the compiled engine runs.
- ``CG[f, id]``: per sgx_cgroup (an :class:`~epcsim.kernel.epc_cgroup.SgxCgroup`), and
  rows used by position (the preorder walk, the live cgroups, ``sgx_cg_wq``).
- ``R[f, r]``: the reclaimer actors (r = 0 ksgxd, 1.. the ``sgx_cg_wq`` workers).
- ``VA[row, f]``: VA pages (an :class:`~epcsim.kernel.encl.SgxVaPage` per row).
- ``P32`` / ``P8``: the columns of the EPC pool's ``i32`` / ``u8`` arrays
  (:class:`~epcsim.kernel.epc.EpcPool`); ``E32`` / ``E8``: the columns of an enclave's
  ``i32`` and the rows of its ``u8`` (:class:`~epcsim.kernel.encl.Encl`).  These are the
  kernel model's own arrays: their order is the kernel model's, checked by a test.

Constants that are not table offsets (return codes ``RC_*``, internal error codes
``ERR_*``, reclaimer stages ``ST_*``, the ENCLS leaves ``L_*``, flag masks, errnos)
are declared here too, as plain constants.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..kernel import encls
from ..kernel.constants import (
    DESC_ACCESSED,
    DESC_BEING_RECLAIMED,
    DESC_BLOCKED,
    DESC_PRESENT,
    SGX_BACKING_BYTES_PER_PAGE,
    SGX_CG_LOW_LIMIT,
    SGX_CG_MIN_FREE_PAGE,
    SGX_EPC_PAGE_IS_FREE,
    SGX_EPC_PAGE_RECLAIMER_TRACKED,
    SGX_MAX_EPC_SECTIONS,
    SGX_NR_HIGH_PAGES,
    SGX_NR_LOW_PAGES,
    SGX_NR_TO_SCAN,
    SGX_PAGE_TYPE_REG,
    SGX_VA_SLOT_COUNT,
    VM_FAULT_NOPAGE,
    VM_FAULT_SIGBUS,
)
from ..kernel.epc import KIND_ENCL, KIND_FREE, KIND_SECS, KIND_VA
from ..kernel.epc_cgroup import RECLAIM_ASYNC, RECLAIM_DIRECT, RECLAIM_KSGXD

# R_KIND (0 ksgxd, 1 worker) indexes the NR_RECL counters directly
if (RECLAIM_KSGXD, RECLAIM_ASYNC) != (0, 1):
    raise AssertionError("R_KIND must equal RECLAIM_KSGXD / RECLAIM_ASYNC")
#: the reclaimer kinds (RECLAIM_*): the width of the NR_RECL counters
RECL_KINDS = RECLAIM_DIRECT + 1

Back = Literal["value", "delta"]


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a table.

    Attributes:
        name: the field's name without the table's prefix (``"NR_EVICTED"`` gives
            ``CG_NR_EVICTED``).
        width: 1, or N for a vector of N consecutive slots.
        doc: one line of meaning.
        mirror: dotted attribute paths, from the table's key object, of the
            reference-model value the field mirrors (``("lru.nr",)`` for an sgx_cgroup's
            LRU length).  Empty if the compiled engine derives the field (or owns it)
            by hand.
        back: how the field goes back to the reference model: ``"value"`` (set to the
            field), ``"delta"`` (packed as 0, the field added to every mirror, then
            reset to 0) or None (packed only: the core reads it, never changes it).
        flag: packed as 0/1, written back as a bool.
    """

    name: str
    width: int
    doc: str
    mirror: tuple[str, ...] = ()
    back: Back | None = None
    flag: bool = False


def _f(
    name: str,
    doc: str,
    *,
    width: int = 1,
    mirror: str | tuple[str, ...] = (),
    back: Back | None = None,
    flag: bool = False,
) -> Field:
    return Field(name, width, doc, (mirror,) if isinstance(mirror, str) else mirror, back, flag)


@dataclass(frozen=True, slots=True)
class Table:
    """A table of the compiled engine: its fields in order.

    Attributes:
        name: the table's name in the core (``"CG"``).
        prefix: the prefix of its field constants (``"CG_"``).
        size: the name of the constant giving its number of slots (``"NCGF"``), or
            None when the kernel model's array fixes it (``P32``, ``E8``, ...).
        key: what one column (or row) of the table describes, and the object the
            fields' mirrors start from.
        fields: the fields, in slot order.
    """

    name: str
    prefix: str
    size: str | None
    key: str
    fields: tuple[Field, ...]

    def offsets(self) -> dict[str, int]:
        """The constant of every field (prefix + name) and its first slot."""
        out: dict[str, int] = {}
        at = 0
        for f in self.fields:
            out[self.prefix + f.name] = at
            at += f.width
        return out

    @property
    def nslots(self) -> int:
        """Slots of the table: the sum of its fields' widths."""
        return sum(f.width for f in self.fields)


#: ENCLS leaves (``host.encls_count``)
NR_LEAVES = encls.NR_LEAVES
#: words of 64 slots in a VA page's slot map
VA_WORDS = SGX_VA_SLOT_COUNT // 64
#: a VA slot id is its VA page number << VA_SLOT_SHIFT | its slot (SGX_VA_SLOT_COUNT is a
#: power of two: the core splits a slot id, never negative, with a shift and a mask
#: instead of a division with Python's rounding of negative numbers)
VA_SLOT_SHIFT = SGX_VA_SLOT_COUNT.bit_length() - 1
assert 1 << VA_SLOT_SHIFT == SGX_VA_SLOT_COUNT
#: a node's free list at ``S_NODES + NODE_W * nid`` (epcsim.kernel.lru.EpcFreeList):
#: the head and tail of its freed pages, its length (both parts), and its pristine range
#: ``[hwm, end)`` of never-used pages, which come first
NODE_HEAD, NODE_TAIL, NODE_NR, NODE_HWM, NODE_END = range(5)
NODE_W = 5

S_TABLE = Table(
    "S",
    "S_",
    "NS",
    "the host (epcsim.kernel.host.Host) and the simulation",
    (
        _f("NOW", "Simulation.now (packed and written back by the engine)"),
        _f("SEQ", "the simulation's event sequence number (packed and written back by the engine)"),
        _f("LIMIT", "the run's time limit (ns)"),
        _f("ACCESS_NS", "cost of an enclave access (ns)"),
        _f("FAULT_NS", "cost of a fault's entry and exit (ns)"),
        _f("KSTEP_NS", "cost of a kernel step (ns)"),
        _f("BATCH_NS", "cost of a reclaim batch's fixed part (ns)"),
        _f("NR_FREE", "sgx_nr_free_pages", mirror="epc.nr_free_pages", back="value"),
        _f("NR_LRU", "pages on all LRUs", mirror="nr_lru_pages", back="value"),
        _f("WOKEN", "ksgxd woken (ksgxd_waitq)", mirror="ksgxd_woken", back="value", flag=True),
        _f("ACTIVE", "change of the simulation's active actors (reclaimers started minus ended)"),
        _f("SGX2", "the CPU has SGX2 (EAUG on fault)", mirror="sgx2", flag=True),
        _f("UNREF", "experiments.fault_unreferenced"),
        _f("LRU_PF", "the LRU's prefetch walk: the page whose next row is asked for next, or -1"),
        _f("ROOT", "sgx id of the root cgroup", mirror="sgx_cg_root.id"),
        _f("NNODES", "NUMA nodes (= EPC sections)"),
        _f("NLIVE", "live cgroups (CG_LIVE)"),
        _f("CUR_TCG", "the faulting thread's task: its cgroup (sgx id)"),
        _f("CUR_NID", ".. its NUMA node"),
        _f("MIDPOP", "thread j + 1 returned for a new chunk in the middle of its pop, or 0"),
        _f("WHO", "the thread a RC_NEED_CHUNK / RC_THREAD_DONE is about"),
        _f("NWQ", "items on sgx_cg_wq (CG_WQ)"),
        _f("KICK", "run the kernel threads' kick before the next pop (after a Python step)"),
        _f("STAMP", "reclaim batches so far (one ETRACK per enclave per batch)"),
        _f("NHP", "threads on the thread heap (TH_HEAP)"),
        _f("NRH", "scheduled reclaimers (on the reclaimer heap, R_HEAP)"),
        _f("LRU_PF_N", "hops left to the prefetch walk"),
        _f("STUCK", "epcsim.sim.stuck.STUCK_RETRIES (a value, not baked into the cache)"),
        _f("SM_T", "the sampler's next time"),
        _f("SM_SEQ", "the sampler's sequence number"),
        _f("SM_LAST", "time of the last recorded sample, -1 if none"),
        _f("SM_INTERVAL", "host.sample_interval (ns)"),
        _f("FOR_T", "the next foreign event (an actor the core does not run): its time, or big"),
        _f("FOR_P", ".. its priority (PRIO_OP 0 or PRIO_ACTOR 1)"),
        _f("FOR_S", ".. its sequence number"),
        _f("NSAMP", "samples recorded in SAMP since the last flush"),
        _f("NLAT", "fault latencies recorded in LAT since the last flush"),
        _f(
            "TAGLAT",
            "1: each latency's thread goes in LAT's row 1 (the threads belong to more than "
            "one instance); 0: one instance tags them all (no store)",
        ),
        _f("STEPCOST", "leaf costs of the current step"),
        _f("ERR", "internal error code (ERR_*: model invariant broken): the caller raises"),
        _f("POLICY", "host.policy: the reclaim design (POLICY_*; epcsim.policies)"),
        _f("MEMLIM", "some memcg has a memory.max below max (the backing charges are checked)"),
        _f("NMEMCG", "memcgs (CG columns of the MEM* rows)"),
        _f(
            "LC",
            "ENCLS leaf counts (host.encls_count)",
            width=NR_LEAVES,
            mirror="encls_count",
            back="value",
        ),
        _f("LCOST", "ENCLS leaf costs (ns)", width=NR_LEAVES),
        _f("SECT", "first page of each EPC section", width=SGX_MAX_EPC_SECTIONS),
        _f(
            "NODES",
            "free lists: head, tail, nr, hwm, end per node (NODE_*)",
            width=NODE_W * SGX_MAX_EPC_SECTIONS,
        ),
    ),
)

EN_TABLE = Table(
    "EN",
    "EN_",
    "NENF",
    "an enclave (epcsim.kernel.encl.Encl), by its host id",
    (
        _f("NPAGES", "pages of its page array", mirror="npages"),
        _f("SECS_EPC", "EPC page of the SECS, -1 if evicted", mirror="secs_epc", back="value"),
        _f("SECS_VA", "VA slot of the evicted SECS", mirror="secs_va", back="value"),
        _f(
            "SECS_MEMCG",
            "memcg the SECS's backing is charged to",
            mirror="secs_memcg",
            back="value",
        ),
        _f("SECS_CHILD", "resident child pages of the SECS", mirror="secs_child_cnt", back="value"),
        _f("PAGE_CNT", "pages added (page_cnt)", mirror="page_cnt", back="value"),
        _f("REFCOUNT", "the kref", mirror="refcount", back="value"),
        _f("NR_EAUG", "EAUGs", mirror="nr_eaug", back="value"),
        _f("NR_ELDU", "ELDUs of its pages", mirror="nr_eldu", back="value"),
        _f(
            "NR_EVICTED",
            "EWBs of its pages (nr_evicted) less those counted in EN_NR_RECL, which the "
            "core counts alone (the engine subtracts them when it packs, adds them when "
            "it writes back; the sampler adds them)",
            mirror="nr_evicted",
            back="value",
        ),
        _f("NR_FAULTS", "enclave faults", mirror="nr_faults", back="value"),
        _f(
            "BACKING",
            "change of encl.backing_bytes (and of its owner's)",
            mirror=("backing_bytes", "owner.backing_bytes"),
            back="delta",
        ),
        _f("BACKING0", "encl.backing_bytes when packed", mirror="backing_bytes"),
        _f("MEMCG", "the memcg backing is charged to (sgx_encl_backing_memcg(encl, NULL))"),
        _f("NVA", "len(encl.va_all)"),
        _f("VA_HEAD", "va_pages: first VA page number, -1 if none"),
        _f("VA_TAIL", "va_pages: last VA page number, -1 if none"),
        _f("LIVE_MMS", "mms mapping it", mirror="nr_live_mms"),
        _f("OFF", "first row of the enclave's pages in E32 / E8 / EMEM"),
        _f("VAOFF", "first row of its VA pages in VA"),
        _f("RELEASED", "released (sgx_encl_release)", mirror="released", flag=True),
        _f("TRACKED", "S_STAMP of the last batch that ETRACKed it"),
        _f("SIGPEND", "its task has a signal pending", mirror="owner.signal_pending", flag=True),
        _f(
            "EMIX",
            "1: EMEM holds each page's backing memcg (some page's backing is charged to a "
            "memcg other than EN_MEMCG); 0: EMEM is not kept, implied_backing_memcgs() "
            "gives it",
        ),
        _f("NR_SECS_ELDU", "ELDUs of the SECS", mirror="nr_secs_eldu", back="value"),
        _f("NR_SECS_EWB", "EWBs of the SECS", mirror="nr_secs_evicted", back="value"),
        _f(
            "NR_RECL",
            "EWBs of its pages by reclaimer kind (RECLAIM_*: ksgxd, async, sync, direct)",
            width=RECL_KINDS,
            mirror="nr_reclaimed_by",
            back="value",
        ),
        _f("ROW", "its row in a sample's enclave rows (SAMPE), -1: none"),
        _f("NR_ADDED", "pages added by EADD", mirror="nr_added", back="value"),
        _f("INIT", "initialised (SGX_ENCL_INITIALIZED): its SECS may be written back"),
        _f(
            "WATCH",
            "the pages added (EN_NR_ADDED + EN_NR_EAUG) at which an [[at]] when watcher "
            "of its process fires (the core returns after that step, RC_WATCH); big: none",
        ),
    ),
)

TH_TABLE = Table(
    "TH",
    "TH_",
    "NTHF",
    "an enclave thread the compiled engine runs (its ThreadStats at .st)",
    (
        _f("T", "time of its next step"),
        _f("SEQ", "sequence number of its next step"),
        _f("CPU", "its CPU"),
        _f("E", "enclave id"),
        _f("TCG", "task cgroup (sgx id)"),
        _f("TLIVE", ".. its position in CG_LIVE (its rows in a sample)"),
        _f("NID", "its task's NUMA node"),
        _f("POS", "next access in BUF"),
        _f("BUFLEN", "accesses in BUF"),
        _f(
            "STOP",
            "where a run of accesses in BUF stops: TH_BUFLEN, or the position of the "
            "access at which its EDMM operations are due (TH_EDMM) if that comes first "
            "(stop_pos(); set with TH_BUFLEN, TH_EDMM and TH_POS by the engine)",
        ),
        _f("REMAIN", "accesses left to draw"),
        _f("ACC", "accesses made", mirror="st.accesses", back="value"),
        _f("FAULTS", "faults resolved", mirror="st.faults", back="value"),
        _f("RETRIES", "VM_FAULT_NOPAGE retries", mirror="st.retries", back="value"),
        _f("STREAK", "retries of the current access", mirror="st.streak", back="value"),
        _f("FSTART", "start of the current fault, -1 if none"),
        _f("UNTIL", "its time limit, 1 << 62: none"),
        _f("PENDING", "the last step was a fault whose result TH_R is not booked yet"),
        _f("R", "the pending fault's result"),
        _f("SIGBUS", "its last fault gave VM_FAULT_SIGBUS"),
        _f(
            "EDMM",
            "the access count at which it runs its EDMM operations, -1: none or done "
            "(the reference runs them: the core hands the threads back, RC_EDMM)",
        ),
        _f("STARTED", "time of its first step, -1 before", mirror="st.started_ns", back="value"),
        _f("LIVE", "1 on the heap, 2 its end step is due (RC_THREAD_DONE), 0 ended"),
        _f("HEAP", "by position: the threads' binary heap (_heap_*): the thread"),
        _f("HT", ".. its TH_T"),
        _f("HS", ".. its TH_SEQ"),
        _f(
            "QUIET",
            "VM_FAULT_NOPAGE retries of this access since the last progress under the "
            "limit that refuses its charge (stuck_watch(); epcsim.sim.stuck)",
            mirror="st.quiet",
            back="value",
        ),
        _f(
            "BLOCK",
            ".. the cgroup whose limit refused then, -1: none",
            mirror="st.block",
            back="value",
        ),
        _f(
            "FREED",
            ".. its CG_NR_FREED + CG_NR_AGED then",
            mirror="st.freed",
            back="value",
        ),
        _f(
            "PFEND",
            "the position in BUF up to which its accesses' enclave page rows were asked "
            "for (a cache hint, no kernel state: 0 with each new chunk of BUF)",
        ),
    ),
)

CG_TABLE = Table(
    "CG",
    "CG_",
    "NCGF",
    "an sgx_cgroup (epcsim.kernel.epc_cgroup.SgxCgroup), by its sgx id",
    (
        _f("LRU_HEAD", "its LRU's first page", mirror="lru.head", back="value"),
        _f("LRU_TAIL", "its LRU's last page", mirror="lru.tail", back="value"),
        _f("LRU_NR", "pages on its LRU", mirror="lru.nr", back="value"),
        _f("NR_PAGES", "EPC pages charged to exactly it", mirror="nr_pages", back="value"),
        _f("NR_EVICTED", "pages evicted from its LRU", mirror="nr_evicted", back="value"),
        _f("NR_BATCHES", "reclaim batches on its LRU", mirror="nr_reclaim_batches", back="value"),
        _f("NR_ENOMEM", "charges that failed with -ENOMEM", mirror="nr_enomem", back="value"),
        _f(
            "NR_FAULTS",
            "enclave faults of its tasks (nr_faults) less the resolved faults TH_FAULTS of "
            "the threads the core runs in it, which the core counts alone (the engine "
            "subtracts them when it packs, adds them when it writes back; the sampler "
            "adds them, SAMP_FAULTS)",
            mirror="nr_faults",
            back="value",
        ),
        _f("USAGE", "misc.current (bytes)", mirror="cg.usage", back="value"),
        _f("PEAK", "misc.peak (bytes)", mirror="cg.peak", back="value"),
        _f("EVENTS", "misc.events max", mirror="cg.events", back="value"),
        _f("EVENTS_LOCAL", "misc.events.local max", mirror="cg.events_local", back="value"),
        _f("REFCNT", "the css reference count", mirror="cg.refcnt", back="value"),
        _f("LIMIT", "min(max, capacity) in bytes, capped to int64"),
        _f("MAX", "misc.max in bytes, capped to int64 (limit-only: a limit, not the capacity)"),
        _f("PARENT", "sgx id or -1"),
        _f("MAXPAGES", "sgx_cgroup_max_pages_to_root()"),
        _f("PREPOS", "position in the preorder walk"),
        _f("SUBEND", "end of the subtree's range in the preorder walk"),
        _f("CURSOR", "next_cg as a preorder position"),
        _f(
            "PENDING",
            "reclaim_work queued on sgx_cg_wq",
            mirror="work_pending",
            back="value",
            flag=True,
        ),
        _f(
            "RUNNING",
            "the reclaim work function is running",
            mirror="work_running",
            back="value",
            flag=True,
        ),
        _f("PRE", "by position: the preorder walk"),
        _f("LIVE", "by index: live cgroup ids in id order"),
        _f("WQ", "by position: sgx_cg_wq, oldest first"),
        _f("MEMD", "by memcg id: change of the memcg's own backing charges"),
        _f("MEMPAR", "by memcg id: its parent memcg, -1: the root"),
        _f("MEMLIM", "by memcg id: memory.max in bytes, big: max"),
        _f("MEMU0", "by memcg id: its (hierarchical) usage when packed"),
        _f("MEMT", "by memcg id: scratch (mem_cgroup_batch_fits)"),
        _f(
            "NR_FREED",
            "pages freed and uncharged in the subtree",
            mirror="nr_freed",
            back="value",
        ),
        _f(
            "NR_AGED",
            "pages of the subtree found young by sgx_reclaimer_age()",
            mirror="nr_aged",
            back="value",
        ),
        _f(
            "NR_RECL",
            "pages evicted from its LRU by reclaimer kind (RECLAIM_*: ksgxd, async, sync, direct)",
            width=RECL_KINDS,
            mirror="nr_reclaimed_by",
            back="value",
        ),
        _f(
            "NR_SCANNED", "pages isolated from its LRU (phase 1)", mirror="nr_scanned", back="value"
        ),
        _f(
            "NR_ROTATED",
            "pages put back to its LRU tail (phase 2)",
            mirror="nr_rotated",
            back="value",
        ),
    ),
)

R_TABLE = Table(
    "R",
    "R_",
    "NRF",
    "a reclaimer actor (0 ksgxd, 1.. sgx_cg_wq workers)",
    (
        _f("SCHED", "on the reclaimer heap"),
        _f("T", "time of its next step"),
        _f("SEQ", "sequence number of its next step"),
        _f("STAGE", "where it resumes (ST_*)"),
        _f("ROOT", "sgx_cgroup_reclaim_pages(): the root it reclaims for"),
        _f("NR", ".. the pages it is asked for"),
        _f("CNT", ".. the pages reclaimed so far"),
        _f("C", ".. the cgroup whose LRU the current batch scans"),
        _f("NP", "pages in the current batch"),
        _f("CB", "the current batch's cost so far"),
        _f(
            "KIND",
            "0 ksgxd, 1 worker, 2 an EADD build (= RECLAIM_KSGXD, RECLAIM_ASYNC, RECLAIM_SYNC)",
        ),
        _f("CG", "a worker's cgroup"),
        _f("MEMCG", "1 + the memcg its reclaim charges backing to (a build's task's), or 0"),
        _f("B_E", "a build: its enclave (host id)"),
        _f("B_FIRST", ".. the first page index of its ADD_PAGES range"),
        _f("B_LEN", ".. the pages of the range"),
        _f("B_C", ".. the pages added so far (the ioctl's count / 4096)"),
        _f("B_TYPE", ".. the page type"),
        _f("B_EXT", ".. EEXTENDs per page (16 measured, 0 not)"),
        _f("B_TCG", ".. its task's cgroup (sgx id)"),
        _f("B_NID", ".. its task's NUMA node"),
        _f("B_CPU", ".. its task's CPU"),
        _f("B_CG", ".. the cgroup the allocation in progress charges"),
        _f("B_VA", ".. the allocation in progress is the VA page's (sgx_encl_grow())"),
        _f("B_PAGE", ".. the enclave page allocated meanwhile, -1"),
        _f("B_GLOBAL", ".. its reclaim is the allocator's global one (else the charge loop's)"),
        _f("CUR", "v14: its reclaim episode's cursor (the 'next' cgroup), -1: the root"),
        _f("EPI", "ksgxd: a reclaim episode is open (first reclaim of a wake-up to sleep)"),
        _f("PAGES", "the batch", width=SGX_NR_TO_SCAN),
        _f("ES", ".. their enclaves (owner_encl)", width=SGX_NR_TO_SCAN),
        _f("GS", ".. their rows in E32 / E8 / EMEM", width=SGX_NR_TO_SCAN),
        _f("HEAP", "by position: the scheduled slots' heap (_heap_*): slot"),
        _f("HT", ".. its R_T"),
        _f("HS", ".. its R_SEQ"),
    ),
)

VA_TABLE = Table(
    "VA",
    "VA_",
    "NVAF",
    "a VA page (epcsim.kernel.encl.SgxVaPage); enclave e's page no at row EN_VAOFF + no",
    (
        _f("PREV", "previous VA page on va_pages, -1 if none"),
        _f("NEXT", "next VA page on va_pages, -1 if none"),
        _f("USED", "slots taken", mirror="used", back="value"),
        _f("EPC", "its EPC page, -1 if none", mirror="epc", back="value"),
        _f(
            "OPEN",
            "derived: bit w set while word w of its slot map has a free slot (where"
            " find_first_zero_bit() looks, without a branch per word)",
        ),
        _f("BITS", "its slot map, 64 slots a word", width=VA_WORDS),
    ),
)

P32_TABLE = Table(
    "P32",
    "P_",
    None,
    "an EPC page: a row of EpcPool.i32",
    (
        _f("PREV", "list link (EpcPool.prev)"),
        _f("NEXT", "list link (EpcPool.next)"),
        _f("OE", "owner enclave (EpcPool.owner_encl)"),
        _f("OI", "owner page index (EpcPool.owner_idx)"),
    ),
)

P8_TABLE = Table(
    "P8",
    "P_",
    None,
    "an EPC page: a row of EpcPool.u8",
    (
        _f("FLAGS", "SGX_EPC_PAGE_* flags (EpcPool.flags)"),
        _f("KIND", "KIND_* owner kind (EpcPool.kind)"),
    ),
)

E32_TABLE = Table(
    "E32",
    "E_",
    None,
    "an enclave page: a row of Encl.i32",
    (
        _f("EPC", "its EPC page, -1 if not resident (Encl.epc)"),
        _f("VA", "its VA slot while evicted (Encl.va)"),
    ),
)

E8_TABLE = Table(
    "E8",
    "E_",
    None,
    "an enclave page: a column of Encl.u8 (desc, type rows)",
    (
        _f("DESC", "SGX_ENCL_PAGE_* / DESC_* bits (Encl.desc)"),
        _f("TYPE", "SGX_PAGE_TYPE_* (Encl.type)"),
    ),
)

#: every table, in the order of the core's arguments
TABLES: tuple[Table, ...] = (
    S_TABLE,
    CG_TABLE,
    EN_TABLE,
    TH_TABLE,
    R_TABLE,
    VA_TABLE,
    P32_TABLE,
    P8_TABLE,
    E32_TABLE,
    E8_TABLE,
)


@dataclass(frozen=True, slots=True)
class Sampled:
    """A per-cgroup counter the samplers record: a column of ``timeseries.parquet``.

    Attributes:
        column: the time-series column (:data:`epcsim.result.TIMESERIES_SCHEMA`).
        field: the ``CG`` field it is sampled from.
        root_field: the ``CG`` field it is sampled from for the root cgroup (the root
            has no ``misc.events``: its failures are local ones).
    """

    column: str
    field: str
    root_field: str

    def mirror(self, root: bool = False) -> str:
        """The reference attribute (from the SgxCgroup) the counter reads."""
        name = self.root_field if root else self.field
        (f,) = (f for f in CG_TABLE.fields if CG_TABLE.prefix + f.name == name)
        return f.mirror[0]


def _s(column: str, field: str, root_field: str | None = None) -> Sampled:
    return Sampled(column, field, root_field or field)


#: the sampled counters, in column order
SAMPLED: tuple[Sampled, ...] = (
    _s("usage_bytes", "CG_USAGE"),
    _s("peak_bytes", "CG_PEAK"),
    _s("max_events", "CG_EVENTS", "CG_EVENTS_LOCAL"),
    _s("faults", "CG_NR_FAULTS"),
    _s("evictions", "CG_NR_EVICTED"),
    _s("reclaim_batches", "CG_NR_BATCHES"),
    _s("reclaimable_pages", "CG_LRU_NR"),
    _s("enomem", "CG_NR_ENOMEM"),
)

# --- plain constants -----------------------------------------------------------------
PAGE = 4096
BACKING = SGX_BACKING_BYTES_PER_PAGE
ENOMEM = 12
EBUSY = 16

#: reclaimer stages (R_STAGE): where an actor resumes
ST_START = 0
ST_PH2 = 1  # after "reclaim:isolated"
ST_PH3 = 2  # after "reclaim:aged"
ST_PH4 = 3  # after "reclaim:blocked"
ST_RESCHED = 4  # after "cond_resched"
ST_END = 5  # the kernel generator returned; the actor ends at its next pop
# an EADD build (R_KIND KIND_BUILD); its reclaim's phases are ST_PH2..ST_PH4
ST_B_TOP = 6  # the ADD_PAGES loop's head (after a page's "cond_resched")
ST_B_CHARGE = 7  # the charge loop's retry (after its "cond_resched")
ST_B_ALLOC = 8  # the allocation loop's retry (after its global reclaim's "cond_resched")
ST_B_RECLAIM = 9  # within a step: its reclaim starts (reclaim.ksgxd_step runs it)
KIND_BUILD = 2

L_EADD = encls.EADD
L_EEXTEND = encls.EEXTEND
L_EREMOVE = encls.EREMOVE
L_EAUG = encls.EAUG
L_ELDU = encls.ELDU
L_EBLOCK = encls.EBLOCK
L_ETRACK = encls.ETRACK
L_EWB = encls.EWB

#: the reclaim designs the compiled engine runs (S_POLICY; epcsim.policies by name)
POLICY_V16 = 0
POLICY_V14 = 1
POLICY_V13 = 2
POLICY_LIMIT_ONLY = 3
POLICY_IDS = {
    "v16": POLICY_V16,
    "v14": POLICY_V14,
    "v13": POLICY_V13,
    "limit-only": POLICY_LIMIT_ONLY,
}

#: return codes of run_core
RC_NEED_CHUNK = 1
RC_FLUSH = 2
RC_THREAD_DONE = 3
RC_LIMIT = 4
RC_ERROR = 5
#: the next event is a foreign actor's (S_FOR_*): the reference engine runs it
RC_FOREIGN = 6
#: thread S_WHO is due to run its EDMM operations (TH_EDMM): the reference runs them
RC_EDMM = 7
#: reclaimer S_WHO's next phase could charge backing over a memory.max (the memcg OOM
#: path, mem_cgroup_out_of_memory()): the reference runs that step
RC_MEMCG = 9
#: a fault of enclave S_WHO added the pages an ``[[at]] when`` watcher waits for
#: (EN_WATCH): the reference starts the operation (Actors.check_watchers())
RC_WATCH = 8
#: an EADD build's next step is the reference's (its ioctl ends, or may fail): R_WHO
RC_BUILD = 10

#: internal error codes (S_ERR)
ERR_NO_VA_SLOT = 1
ERR_NO_WORKER_SLOT = 3
ERR_BUILD_FAILED = 4  # an EADD build's allocation failed where the core runs it

TRACKED = SGX_EPC_PAGE_RECLAIMER_TRACKED
IS_FREE = SGX_EPC_PAGE_IS_FREE
NOT_RECLAIM_BITS = 0xFF & ~(DESC_BEING_RECLAIMED | DESC_BLOCKED | DESC_ACCESSED)
NOT_ACC_BLOCKED = 0xFF & ~(DESC_ACCESSED | DESC_BLOCKED)
NOT_ACC = 0xFF & ~DESC_ACCESSED
NOT_TRACKED = 0xFF & ~TRACKED

#: accesses after a fault whose enclave page rows are prefetched
PF_AHEAD = 4
#: rows of an LRU the prefetch walk reads ahead of its next isolation
LRU_PF_HOPS = 2 * SGX_NR_TO_SCAN


def _generate() -> dict[str, Any]:
    """The table constants (offsets and sizes) and the sampler's rows."""
    out: dict[str, Any] = {}
    for t in TABLES:
        for name, at in t.offsets().items():
            if name in out and out[name] != at:
                raise AssertionError(f"{name}: two offsets ({out[name]}, {at})")
            out[name] = at
        # its number of slots: NCGF, ...; for a kernel model's array, N + name + F
        # (NP32F, ...: the core's tables of rows of these fields, bits.const_cols)
        out[t.size if t.size is not None else f"N{t.name}F"] = t.nslots
    cg = CG_TABLE.offsets()
    out["NSAMPF"] = len(SAMPLED)
    out["SAMP_ROWS"] = tuple(cg[s.field] for s in SAMPLED)
    out["SAMP_ROOT_ROWS"] = tuple(cg[s.root_field] for s in SAMPLED)
    # the column the sampler adds the threads' resolved faults to (CG_NR_FAULTS' doc)
    out["SAMP_FAULTS"] = next(k for k, s in enumerate(SAMPLED) if s.field == "CG_NR_FAULTS")
    return out


#: every generated name and its value
GENERATED: dict[str, Any] = _generate()
globals().update(GENERATED)

__all__ = [
    "Field",
    "GENERATED",
    "SAMPLED",
    "Sampled",
    "TABLES",
    "Table",
    "implied_backing_memcgs",
    "pack",
    "pack_rows",
    "write_back",
    "write_back_rows",
    # plain constants
    "PAGE",
    "BACKING",
    "ENOMEM",
    "EBUSY",
    "ST_START",
    "ST_PH2",
    "ST_PH3",
    "ST_PH4",
    "ST_RESCHED",
    "ST_END",
    "ST_B_TOP",
    "ST_B_CHARGE",
    "ST_B_ALLOC",
    "ST_B_RECLAIM",
    "KIND_BUILD",
    "L_EADD",
    "L_EEXTEND",
    "L_EREMOVE",
    "L_EAUG",
    "L_ELDU",
    "L_EBLOCK",
    "L_ETRACK",
    "L_EWB",
    "POLICY_V16",
    "POLICY_V14",
    "POLICY_V13",
    "POLICY_LIMIT_ONLY",
    "POLICY_IDS",
    "RC_NEED_CHUNK",
    "RC_FLUSH",
    "RC_THREAD_DONE",
    "RC_LIMIT",
    "RC_ERROR",
    "RC_FOREIGN",
    "RC_EDMM",
    "RC_BUILD",
    "RC_MEMCG",
    "RC_WATCH",
    "ERR_NO_VA_SLOT",
    "ERR_NO_WORKER_SLOT",
    "ERR_BUILD_FAILED",
    "TRACKED",
    "IS_FREE",
    "NOT_RECLAIM_BITS",
    "NOT_ACC_BLOCKED",
    "NOT_ACC",
    "NOT_TRACKED",
    "PF_AHEAD",
    "LRU_PF_HOPS",
    "NR_LEAVES",
    "VA_WORDS",
    "VA_SLOT_SHIFT",
    "NODE_W",
    "NODE_HEAD",
    "NODE_TAIL",
    "NODE_NR",
    "NODE_HWM",
    "NODE_END",
    "RECL_KINDS",
    # kernel-model constants the compiled code uses, under their kernel names
    "DESC_ACCESSED",
    "DESC_BEING_RECLAIMED",
    "DESC_BLOCKED",
    "DESC_PRESENT",
    "KIND_ENCL",
    "KIND_FREE",
    "KIND_SECS",
    "KIND_VA",
    "SGX_BACKING_BYTES_PER_PAGE",
    "SGX_CG_LOW_LIMIT",
    "SGX_CG_MIN_FREE_PAGE",
    "SGX_EPC_PAGE_IS_FREE",
    "SGX_EPC_PAGE_RECLAIMER_TRACKED",
    "SGX_MAX_EPC_SECTIONS",
    "SGX_NR_HIGH_PAGES",
    "SGX_NR_LOW_PAGES",
    "SGX_NR_TO_SCAN",
    "SGX_PAGE_TYPE_REG",
    "SGX_VA_SLOT_COUNT",
    "VM_FAULT_NOPAGE",
    "VM_FAULT_SIGBUS",
]
#: the generated names: the table offsets and sizes, the sampler's rows
__all__ += sorted(GENERATED)


# --- pack and write back ---------------------------------------------------------------
def _getter(path: str) -> operator.attrgetter:
    return operator.attrgetter(path)


def _setter(path: str):
    owner, _, attr = path.rpartition(".")
    get_owner = operator.attrgetter(owner) if owner else (lambda obj: obj)

    def set_(obj: Any, value: Any) -> None:
        setattr(get_owner(obj), attr, value)

    return set_


class _Mirror:
    """A mirrored field, compiled for pack/write-back."""

    __slots__ = ("at", "width", "gets", "paths", "sets", "back", "flag")

    def __init__(self, at: int, f: Field) -> None:
        self.at, self.width, self.back, self.flag = at, f.width, f.back, f.flag
        self.paths = f.mirror
        self.gets = tuple(_getter(p) for p in f.mirror)
        self.sets = tuple(_setter(p) for p in f.mirror)


def _mirrors(t: Table) -> tuple[_Mirror, ...]:
    at = 0
    out = []
    for f in t.fields:
        if f.mirror:
            out.append(_Mirror(at, f))
        at += f.width
    return tuple(out)


_MIRRORS: dict[str, tuple[_Mirror, ...]] = {t.name: _mirrors(t) for t in TABLES}


class _TableIO:
    """:func:`pack` and :func:`write_back` of one table, batched: one ``attrgetter``
    call reads every scalar mirror of an object (a tuple, in C), one fancy-index
    assignment stores them; a take-over packs every cgroup, enclave and VA page, so
    a field-by-field loop was most of its cost."""

    __slots__ = ("scal_at", "scal_get", "delta_at", "vectors", "back_at", "back_get",
                 "back_set", "back_flag", "deltas", "back_vectors")  # fmt: skip

    def __init__(self, mirrors: tuple[_Mirror, ...]) -> None:
        scal = [m for m in mirrors if m.back != "delta" and m.width == 1]
        self.scal_at = np.array([m.at for m in scal], np.intp)
        self.scal_get = _tuple_getter([m.paths[0] for m in scal])
        self.delta_at = np.array([m.at for m in mirrors if m.back == "delta"], np.intp)
        self.vectors = tuple(m for m in mirrors if m.back != "delta" and m.width > 1)
        back = [m for m in scal if m.back is not None]
        self.back_at = np.array([m.at for m in back], np.intp)
        self.back_get = _tuple_getter([m.paths[0] for m in back])
        self.back_set = tuple(m.sets[0] for m in back)
        self.back_flag = tuple(m.flag for m in back)
        self.deltas = tuple(m for m in mirrors if m.back == "delta")
        self.back_vectors = tuple(m for m in self.vectors if m.back is not None)


def _tuple_getter(paths: list[str]):
    """``obj -> tuple`` of the values at *paths* (``attrgetter`` returns a bare value
    for one path)."""
    if not paths:
        return lambda obj: ()
    if len(paths) == 1:
        get = operator.attrgetter(paths[0])
        return lambda obj: (get(obj),)
    return operator.attrgetter(*paths)


_IO: dict[str, _TableIO] = {name: _TableIO(ms) for name, ms in _MIRRORS.items()}


def pack(table: str, vec: np.ndarray, obj: Any) -> None:
    """Copy the reference values mirrored by *table*'s fields from *obj* (the table's
    key object) into *vec*, the table's slots for that object (a column of ``CG``, a
    row of ``VA``, ``S`` itself).  A delta field is packed as 0, a flag as 0/1."""
    io = _IO[table]
    vec[io.scal_at] = io.scal_get(obj)
    vec[io.delta_at] = 0
    for m in io.vectors:
        v = m.gets[0](obj)
        vec[m.at : m.at + len(v)] = v


def pack_rows(table: str, block: np.ndarray, objs: Sequence[Any]) -> None:
    """:func:`pack` of many objects at once: row k of *block* from ``objs[k]``."""
    io = _IO[table]
    get = io.scal_get
    if len(objs):
        block[:, io.scal_at] = [get(o) for o in objs]
        block[:, io.delta_at] = 0
        for m in io.vectors:
            for r, o in enumerate(objs):
                v = m.gets[0](o)
                block[r, m.at : m.at + len(v)] = v


def write_back_rows(table: str, block: np.ndarray, objs: Sequence[Any]) -> None:
    """:func:`write_back` of many objects at once: ``objs[k]`` from row k of *block*;
    only the values that differ from the objects' are set."""
    io = _IO[table]
    if not len(objs):
        return
    if len(io.back_at):
        new = block[:, io.back_at]
        cur = np.array([io.back_get(o) for o in objs], np.int64).reshape(new.shape)
        for r, k in zip(*np.nonzero(new != cur), strict=True):
            v = int(new[r, k])
            io.back_set[k](objs[r], bool(v) if io.back_flag[k] else v)
    if io.deltas or io.back_vectors:
        for r, o in enumerate(objs):
            for m in io.deltas:
                d = int(block[r, m.at])
                if d:
                    for get, set_ in zip(m.gets, m.sets):
                        set_(o, get(o) + d)
                    block[r, m.at] = 0
            for m in io.back_vectors:
                cur_v = m.gets[0](o)
                cur_v[:] = block[r, m.at : m.at + len(cur_v)].tolist()


def implied_backing_memcgs(i32: np.ndarray, u8: np.ndarray, memcg: int) -> np.ndarray:
    """The backing memcg of each page of an enclave whose ``EN_EMIX`` is 0 (rows of
    ``E32`` / ``E8`` as *i32* / *u8*, its ``EN_MEMCG`` *memcg*): *memcg* where the
    page's backing is charged -- evicted (a VA slot) or kept by a reclaimer's age
    test and not written yet (``DESC_BEING_RECLAIMED``) -- else -1, as int16
    (``Encl.memcg``).  The core keeps ``EMEM`` only for enclaves whose ``EN_EMIX`` is
    1 (a store per eviction and per ELDU into an array that misses the cache);
    packing sets ``EN_EMIX`` 0 only where ``Encl.memcg`` equals this, and write-back
    rebuilds ``Encl.memcg`` from it."""
    va, desc = GENERATED["E_VA"], GENERATED["E_DESC"]
    charged = (i32[:, va] >= 0) | ((u8[desc] & DESC_BEING_RECLAIMED) != 0)
    return np.where(charged, np.int16(memcg), np.int16(-1))


def write_back(table: str, vec: np.ndarray, obj: Any) -> None:
    """Write *table*'s written-back fields from *vec* to *obj* (the inverse of
    :func:`pack` for the fields whose ``back`` is set): a value is set (a bool for a
    flag) where it differs from the object's, a delta is added to every mirror and
    reset to 0."""
    io = _IO[table]
    new = vec[io.back_at].tolist()
    cur = io.back_get(obj)
    for k, v in enumerate(new):
        if io.back_flag[k]:
            v = bool(v)
        if cur[k] != v:
            io.back_set[k](obj, v)
    for m in io.deltas:
        d = int(vec[m.at])
        if d:
            for get, set_ in zip(m.gets, m.sets):
                set_(obj, get(obj) + d)
            vec[m.at] = 0
    for m in io.back_vectors:
        cur = m.gets[0](obj)
        cur[:] = vec[m.at : m.at + len(cur)].tolist()
