"""The compiled core's tables: the field offsets of its int64 tables (``S``, ``EN``,
``TH``, ``CG``, ``R``, ``VA``), the rows of the kernel model's arrays it reads, the
actor stages, return and error codes, and the flag masks it applies.  Read by the
compiled modules (numba freezes these values into the machine code) and by
:mod:`epcsim.compiled.engine`, which packs the tables.  The layout of each table is
described in :mod:`epcsim.compiled.loop`."""

from __future__ import annotations

from ..kernel import encls
from ..kernel.constants import (
    DESC_ACCESSED,
    DESC_BEING_RECLAIMED,
    DESC_BLOCKED,
    SGX_BACKING_BYTES_PER_PAGE,
    SGX_EPC_PAGE_IS_FREE,
    SGX_EPC_PAGE_RECLAIMER_TRACKED,
    SGX_NR_TO_SCAN,
)

PAGE = 4096
BACKING = SGX_BACKING_BYTES_PER_PAGE
ENOMEM = 12
EBUSY = 16

# --- S: scalar state ---------------------------------------------------------------------
S_NOW = 0
S_SEQ = 1
S_LIMIT = 2
S_ACCESS_NS = 3
S_FAULT_NS = 4
S_KSTEP_NS = 5
S_BATCH_NS = 6
S_NR_FREE = 7
S_NR_LRU = 8
S_WOKEN = 9
S_ACTIVE = 10  # change of Simulation._active (reclaimers started minus ended)
S_SGX2 = 11
S_UNREF = 12
S_LRU_PF = 13  # the LRU's prefetch walk: the page whose next row is asked for next, or -1
S_ROOT = 14  # sgx id of the root cgroup
S_NNODES = 17
S_NLIVE = 18
S_CUR_TCG = 20  # the faulting thread's task: its cgroup (sgx id)
S_CUR_NID = 21  # .. its NUMA node
S_MIDPOP = 22  # thread j + 1 returned for a new chunk in the middle of its pop, or 0
S_WHO = 23  # the thread a RC_NEED_CHUNK / RC_THREAD_DONE is about
S_NWQ = 24  # items on sgx_cg_wq (CG_WQ)
S_KICK = 25  # run _kick_kernel_threads() before the next pop (after a Python step)
S_STAMP = 26  # reclaim batches so far (one ETRACK per enclave per batch)
S_NHP = 27  # threads on the thread heap (TH_HEAP)
S_NRH = 29  # scheduled reclaimers (on the reclaimer heap, R_HEAP)
S_LRU_PF_N = 30  # hops left to the prefetch walk
S_STUCK = 31  # epcsim.sim.stuck.STUCK_RETRIES (a value, not baked into the cache)
# the sampler
S_SM_T = 40
S_SM_SEQ = 41
S_SM_LAST = 42  # time of the last recorded sample, -1 if none
S_SM_INTERVAL = 43
S_NSAMP = 44
S_NLAT = 45
S_STEPCOST = 69  # leaf costs of the current step
S_ERR = 70  # internal error code (model invariant broken): the caller raises
S_LC = 100  # ENCLS leaf counts (12)
S_LCOST = 120  # ENCLS leaf costs (12)
S_SECT = 140  # first page of each EPC section (<= 8)
S_NODES = 150  # free lists: head, tail, nr per node (<= 8 nodes)
NS = 180

# --- EN: per-enclave fields (by host enclave id) ----------------------------------------
EN_NPAGES = 0
EN_SECS_EPC = 1
EN_SECS_VA = 2
EN_SECS_MEMCG = 3
EN_SECS_CHILD = 4
EN_PAGE_CNT = 5
EN_REFCOUNT = 6
EN_NR_EAUG = 7
EN_NR_ELDU = 8
EN_NR_EVICTED = 9
EN_NR_FAULTS = 10
EN_BACKING = 11  # change of encl.backing_bytes (and of its owner's)
EN_BACKING0 = 12  # encl.backing_bytes when packed
EN_MEMCG = 13  # the memcg backing is charged to (sgx_encl_backing_memcg(encl, NULL))
EN_NVA = 14  # len(encl.va_all)
EN_VA_HEAD = 15  # va_pages: first and last VA page number, -1 if none
EN_VA_TAIL = 16
EN_LIVE_MMS = 17
EN_OFF = 18  # first row of the enclave's pages in E32 / E8 / EMEM
EN_VAOFF = 19  # first row of its VA pages in VA
EN_RELEASED = 20
EN_TRACKED = 21  # S_STAMP of the last batch that ETRACKed it
EN_SIGPEND = 22  # its task has a signal pending
EN_EMIX = 23  # some evicted page's backing is charged to a memcg other than EN_MEMCG
EN_NR_SECS_ELDU = 24
EN_NR_SECS_EWB = 25
NENF = 26

# --- TH: per-thread fields ----------------------------------------------------------------
TH_T = 0
TH_SEQ = 1
TH_CPU = 2
TH_E = 3  # enclave id
TH_TCG = 4  # task cgroup (sgx id)
TH_NID = 5
TH_POS = 6
TH_BUFLEN = 7
TH_REMAIN = 8
TH_ACC = 9
TH_FAULTS = 10
TH_RETRIES = 11
TH_STREAK = 12
TH_FSTART = 13
TH_UNTIL = 14  # -1: none
TH_PENDING = 15  # the last step was a fault whose result TH_R is not booked yet
TH_R = 16
TH_SIGBUS = 17
TH_STARTED = 18  # time of its first step, -1 before
TH_LIVE = 19  # 1 on the heap, 2 its end step is due (RC_THREAD_DONE), 0 ended
TH_HEAP = 20  # by position: the threads' binary heap (_heap_*): the thread
TH_HT = 21  # .. its TH_T
TH_HS = 22  # .. its TH_SEQ
TH_QUIET = 23  # VM_FAULT_NOPAGE retries of this access since its cgroup's CG_NR_FREED moved
TH_FREED = 24  # .. CG_NR_FREED of its cgroup then (epcsim.sim.stuck)
NTHF = 25

# --- CG: per-cgroup fields ---------------------------------------------------------------
CG_LRU_HEAD = 0
CG_LRU_TAIL = 1
CG_LRU_NR = 2
CG_NR_PAGES = 3
CG_NR_EVICTED = 4
CG_NR_BATCHES = 5
CG_NR_ENOMEM = 6
CG_NR_FAULTS = 7
CG_USAGE = 8
CG_PEAK = 9
CG_EVENTS = 10
CG_EVENTS_LOCAL = 11
CG_REFCNT = 12
CG_LIMIT = 13  # min(max, capacity) in bytes, capped to int64
CG_PARENT = 14  # sgx id or -1
CG_MAXPAGES = 15  # sgx_cgroup_max_pages_to_root()
CG_PREPOS = 16  # position in the preorder walk
CG_SUBEND = 17  # end of the subtree's range in the preorder walk
CG_CURSOR = 18  # next_cg as a preorder position
CG_PENDING = 19
CG_RUNNING = 20
CG_PRE = 21  # by position: the preorder walk
CG_LIVE = 22  # by index: live cgroup ids in id order
CG_WQ = 23  # by position: sgx_cg_wq, oldest first
CG_MEMD = 24  # by memcg id: change of the memcg's own backing charges
CG_NR_FREED = 25  # pages freed and uncharged in the subtree (SgxCgroup.nr_freed)
NCGF = 26

# --- R: reclaimer actors -----------------------------------------------------------------
R_SCHED = 0
R_T = 1
R_SEQ = 2
R_STAGE = 3
R_ROOT = 4
R_NR = 5
R_CNT = 6
R_C = 7
R_NP = 8
R_CB = 9
R_KIND = 10  # 0 ksgxd, 1 worker
R_CG = 11  # a worker's cgroup
R_PAGES = 12  # .. + SGX_NR_TO_SCAN: the batch
R_ES = R_PAGES + SGX_NR_TO_SCAN  # .. their enclaves (owner_encl)
R_GS = R_ES + SGX_NR_TO_SCAN  # .. their rows in E32 / E8 / EMEM
R_HEAP = R_GS + SGX_NR_TO_SCAN  # by position: the scheduled slots' heap (_heap_*): slot
R_HT = R_HEAP + 1  # .. its R_T
R_HS = R_HEAP + 2  # .. its R_SEQ
NRF = R_HEAP + 3

ST_START = 0
ST_PH2 = 1  # after "reclaim:isolated"
ST_PH3 = 2  # after "reclaim:aged"
ST_PH4 = 3  # after "reclaim:blocked"
ST_RESCHED = 4  # after "cond_resched"
ST_END = 5  # the kernel generator returned; the actor ends at its next pop

# --- VA pages ----------------------------------------------------------------------------
VA_PREV = 0
VA_NEXT = 1
VA_USED = 2
VA_EPC = 3
VA_BITS = 4  # .. + 8 words of 64 slots
NVAF = VA_BITS + 8

# --- array rows --------------------------------------------------------------------------
P_PREV = 0
P_NEXT = 1
P_OE = 2
P_OI = 3
P_FLAGS = 0
P_KIND = 1
E_EPC = 0
E_VA = 1
E_DESC = 0
E_TYPE = 1

L_EREMOVE = encls.EREMOVE
L_EAUG = encls.EAUG
L_ELDU = encls.ELDU
L_EBLOCK = encls.EBLOCK
L_ETRACK = encls.ETRACK
L_EWB = encls.EWB

# --- return codes ------------------------------------------------------------------------
RC_NEED_CHUNK = 1
RC_FLUSH = 2
RC_THREAD_DONE = 3
RC_LIMIT = 4
RC_ERROR = 5

ERR_NO_VA_SLOT = 1
ERR_NO_WORKER_SLOT = 3

TRACKED = SGX_EPC_PAGE_RECLAIMER_TRACKED
IS_FREE = SGX_EPC_PAGE_IS_FREE
NOT_RECLAIM_BITS = 0xFF & ~(DESC_BEING_RECLAIMED | DESC_BLOCKED | DESC_ACCESSED)
NOT_ACC_BLOCKED = 0xFF & ~(DESC_ACCESSED | DESC_BLOCKED)
NOT_ACC = 0xFF & ~DESC_ACCESSED
NOT_TRACKED = 0xFF & ~TRACKED
