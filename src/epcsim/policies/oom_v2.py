"""``oom-v2``: the dropped design with an EPC OOM killer (the series v2 to v5).

v2 (Kristen Carlson Accardi, 2022-12-02) to v5 (Haitao Huang, 2023-10), dropped in v6
(2023-10-30) after the v5 12/18 thread (Dave Hansen: lowering limits on running
enclaves, "nobody cares"; Haitao: drop the ``max_write`` callback and OOM killing).
Each misc cgroup had a reclaimable and an unreclaimable list; VA and SECS pages were
recorded on the unreclaimable one (``sgx_record_epc_page()``), so the OOM killer could
find the enclaves that own them.

What it changes relative to v16 (the v2 code of ``epc_cgroup.c`` unless said):

- ``sgx_epc_cgroup_try_charge()`` (v2 patch 12): while the charge fails, DO_RECLAIM
  reclaims min(max(over, SGX_EPC_RECLAIM_MIN_PAGES = 16), SGX_NR_TO_SCAN_MAX = 32)
  pages per round from the requester's subtree, where ``over`` = usage + 1 - misc.max
  of the requester (16 if the requester's own limit is not the one exceeded); a round
  that reclaims nothing is a failure: after more than
  SGX_EPC_RECLAIM_IGNORE_AGE_THRESHOLD = 5 of them the accessed bit is ignored; after
  more than SGX_EPC_RECLAIM_OOM_THRESHOLD = 5 failed rounds that find every LRU of the
  subtree empty the charge is -ENOMEM (v16: -ENOMEM at once).  A limit below one page
  is -ENOMEM at once.  NO_RECLAIM: -ENOMEM if the subtree has nothing reclaimable (the
  order of v3, 2023-07-12), else the work is queued and the result is -EBUSY.
- ``sgx_epc_cgroup_reclaim_work_func()``: reclaims (rounds as above, ``over`` = usage
  - threshold) while the cgroup's usage is above its limit - 1, less 8 more when that
  is above 32 pages (the smallest limit up to the root, as v3); it stops when a round
  fails with every LRU of the subtree empty.  v16: limit - 32 unless the limit is at
  most 128 pages.
- ``sgx_epc_cgroup_max_write()`` (the ``max_write`` callback of v2 patch 12): a write
  of ``misc.max`` below the cgroup's usage reclaims until usage <= max; after more than
  5 failed rounds with every LRU of the subtree empty, each failed round calls
  ``sgx_epc_cgroup_oom()``: walk the subtree in preorder, take from each cgroup's
  unreclaimable list (in the order pages were recorded) the first page whose enclave is
  alive, and kill that enclave (``sgx_epc_oom()``, ``sgx_oom_encl()`` of v2 patch 14):
  mark it SGX_ENCL_OOM, zap its mappings in every mm (v3: ``sgx_encl_mm_drain()``),
  free its EPC (v2: ``__sgx_encl_release()``).  Its tasks get SIGBUS at their next
  access (``sgx_vma_fault()``); its ioctls get -ENOMEM; its outcome is ``killed``.
  When no victim is left the write returns (v3's work function stops likewise).
- ksgxd, direct and the allocator's global reclaim, the rotating ``next_cg`` walk and
  ``nr_to_scan`` of those callers stay v16's.

Modelling simplifications.  The reclaim of a ``misc.max`` write runs to completion in
the writer's context at the instant of the write (``max_written`` is not a
generator): it takes no virtual time and no other actor runs meanwhile; if it finds
nothing reclaimed in more than 5 rounds in a row with the accessed bit ignored and
pages still on the LRUs, it gives up (the kernel would loop until a signal).  The
rounds walk the subtree with v16's ``next_cg`` cursor in batches of SGX_NR_TO_SCAN = 16
(``sgx_reclaim_pages()`` of v16), so a 32-page round is two batches.  The pages a
reclaimer holds when an enclave is killed stay until their write-back (and the VA
pages and SECS with them), as v3 describes.

Hooks: ``try_charge``, ``nothing_reclaimable``, ``reclaim_pages``, ``age_test``,
``should_reclaim``, ``max_written``, ``record_page``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from ..kernel.constants import (
    DESC_BLOCKED,
    EBUSY,
    ENOMEM,
    ERESTARTSYS,
    PAGE_SIZE,
    SGX_ENCL_CREATED,
    SGX_ENCL_OOM,
    SGX_NO_RECLAIM,
)
from ..kernel.driver import drive
from ..kernel.encl import sgx_encl_mm_drain, sgx_encl_put, sgx_encl_release_resources
from ..kernel.epc import KIND_SECS, KIND_VA
from ..kernel.epc_cgroup import (
    _preorder_successor,
    _sgx_cgroup_try_charge,
    queue_work,
    sgx_cgroup_lru_empty,
    sgx_cgroup_max_pages_to_root,
    sgx_cgroup_next_get,
    sgx_cgroup_reclaim_pages,
    sgx_put_cg,
)
from ..kernel.reclaim import sgx_reclaim_pages
from .base import Episode, Policy

if TYPE_CHECKING:
    from ..kernel.encl import Encl
    from ..kernel.epc_cgroup import SgxCgroup
    from ..kernel.host import Host, Task
    from ..kernel.misc import MiscCg

__all__ = [
    "POLICY",
    "OomV2",
    "SGX_EPC_RECLAIM_MIN_PAGES",
    "SGX_NR_TO_SCAN_MAX",
    "SGX_EPC_RECLAIM_IGNORE_AGE_THRESHOLD",
    "SGX_EPC_RECLAIM_OOM_THRESHOLD",
    "sgx_epc_cgroup_reclaim_pages",
    "sgx_epc_cgroup_oom",
    "sgx_oom_encl",
]

#: the smallest round of reclaim (epc_cgroup.c, v2-v5)
SGX_EPC_RECLAIM_MIN_PAGES = 16
#: the largest round (sgx.h, v2-v6; v2's epc_cgroup.c used 64, v3 on 32)
SGX_NR_TO_SCAN_MAX = 32
#: failed rounds after which the accessed bit is ignored (more than this many)
SGX_EPC_RECLAIM_IGNORE_AGE_THRESHOLD = 5
#: failed rounds with empty LRUs after which a charge is -ENOMEM / a max write kills
SGX_EPC_RECLAIM_OOM_THRESHOLD = 5


def sgx_epc_cgroup_reclaim_pages(nr_pages: int) -> int:
    """Models the bounds of sgx_epc_cgroup_reclaim_pages() (v2-v5): a round reclaims
    min(max(nr_pages, 16), 32) pages."""
    return min(max(nr_pages, SGX_EPC_RECLAIM_MIN_PAGES), SGX_NR_TO_SCAN_MAX)


def _rc(episode: Episode) -> dict[str, Any]:
    """``struct sgx_epc_reclaim_control`` of an episode: nr_fails, ignore_age, and the
    pages the last round reclaimed (written back)."""
    st = episode.state
    if "nr_fails" not in st:
        st.update(nr_fails=0, ignore_age=False, reclaimed=0)
    return st


def sgx_epc_cgroup_reclaim_failed(host: Host, sgx_cg: SgxCgroup, rc: dict[str, Any]) -> bool:
    """Models sgx_epc_cgroup_reclaim_failed() (v2 patch 12) after a round that reclaimed
    nothing: True (-ENOMEM) if every LRU of the subtree is empty; else one more failure,
    and the accessed bit is ignored after more than 5."""
    if sgx_cgroup_lru_empty(host, sgx_cg.cg):
        return True
    rc["nr_fails"] += 1
    if rc["nr_fails"] > SGX_EPC_RECLAIM_IGNORE_AGE_THRESHOLD:
        rc["ignore_age"] = True
    return False


def sgx_epc_cgroup_work_max(sgx_cg: SgxCgroup) -> int:
    """The usage (pages) sgx_epc_cgroup_reclaim_work_func() (v2 patch 12; the limit up
    to the root as v3) reclaims down to: the limit - 1, less SGX_EPC_RECLAIM_MIN_PAGES / 2
    = 8 more when that is above SGX_NR_TO_SCAN_MAX = 32."""
    m = sgx_cgroup_max_pages_to_root(sgx_cg)
    if m:
        m -= 1
    if m > SGX_NR_TO_SCAN_MAX:
        m -= SGX_EPC_RECLAIM_MIN_PAGES // 2
    return m


def _encl_alive(encl: Encl) -> bool:
    return encl.refcount > 0 and not encl.released and not encl.flags & SGX_ENCL_OOM


def sgx_oom_encl(host: Host, encl: Encl) -> None:
    """Models sgx_oom_encl() (v2 patch 14) on a victim the caller holds a reference on:
    mark it SGX_ENCL_OOM; if created, zap it in every mm and drop every mm's reference
    (sgx_encl_mm_drain(), v3) and free its EPC (__sgx_encl_release(), v2); put the
    victim's reference.  Pages a reclaimer holds are left to it; they are zapped too
    (DESC_BLOCKED: an access faults, and the fault is SIGBUS)."""
    encl.flags |= SGX_ENCL_OOM
    if encl.flags & SGX_ENCL_CREATED:
        sgx_encl_mm_drain(host, encl)
        sgx_encl_release_resources(host, encl)
        held = encl.epc >= 0
        if held.any():
            encl.desc[held] |= DESC_BLOCKED
    sgx_encl_put(host, encl)


class OomV2(Policy):
    name = "oom-v2"
    source = (
        "the series v2 (2022-12-02) to v5 (2023-10), dropped in v6 (2023-10-30): "
        "unreclaimable lists, max_write callback, EPC OOM killer"
    )
    changes = (
        "charge rounds of min(max(over,16),32) pages, age ignored after >5 failed rounds, "
        "ENOMEM after >5 empty rounds; misc.max below usage reclaims, then OOM-kills an "
        "enclave; async work down to limit-1 (-8 more above 32 pages)"
    )

    def __init__(self, *, seed: int = 0) -> None:
        super().__init__(seed=seed)
        #: per sgx_cgroup id: the unreclaimable list, (page, record number) in order
        self.unreclaimable: dict[int, deque[tuple[int, int]]] = {}
        #: the record number of each page's latest record (older entries are stale)
        self._recno: dict[int, int] = {}
        self._n = 0
        #: the ignore_age of the reclaim round being stepped (read by age_test)
        self._ignore_age = False
        #: cgroups whose async work stops at its next check (a round failed, LRUs empty)
        self._stop: set[int] = set()
        #: enclaves killed, in order (model statistics)
        self.killed: list[int] = []

    # --- the unreclaimable lists ----------------------------------------------------------

    def record_page(self, host: Host, page: int, kind: int) -> None:
        """Models sgx_record_epc_page() with SGX_EPC_PAGE_UNRECLAIMABLE (v2 patch 7):
        a VA or SECS page goes to the tail of its cgroup's unreclaimable list."""
        if kind != KIND_VA and kind != KIND_SECS:
            return
        cgid = int(host.epc.m_cg[page])
        self._n += 1
        self._recno[page] = self._n
        self.unreclaimable.setdefault(cgid, deque()).append((page, self._n))

    def sgx_oom_get_victim(self, host: Host, sgx_cg: SgxCgroup) -> Encl | None:
        """Models sgx_oom_get_victim() (v2 patch 14): take pages off the head of the
        cgroup's unreclaimable list until one's enclave is alive; that enclave,
        referenced (kref_get_unless_zero()), or None.  Entries of pages freed since
        (sgx_drop_epc_page() in the kernel) are skipped."""
        lst = self.unreclaimable.get(sgx_cg.id)
        pool = host.epc
        while lst:
            page, n = lst.popleft()
            if self._recno.get(page) != n or pool.m_cg[page] != sgx_cg.id:
                continue
            if pool.m_kind[page] not in (KIND_VA, KIND_SECS):
                continue
            encl = host.encls[pool.m_owner_encl[page]]
            if _encl_alive(encl):
                encl.refcount += 1
                return encl
        return None

    # --- reclaim ----------------------------------------------------------------------------

    def age_test(self, host: Host, sgx_cg: SgxCgroup) -> bool:
        return not self._ignore_age

    def reclaim_pages(
        self,
        host: Host,
        root: SgxCgroup,
        charge_task: Task | None,
        nr_to_scan: int,
        episode: Episode,
    ) -> Generator[str, None, int]:
        """One round: v16's rotating walk of subtree(*root*) until *nr_to_scan* pages
        are isolated, testing the accessed bit unless the episode ignores it; records in
        the episode the pages written back.  The async work's round reclaims
        min(max(usage - threshold, 16), 32) pages and stops the work when it fails with
        every LRU empty (sgx_epc_cgroup_reclaim_work_func(), v2 patch 12)."""
        rc = _rc(episode)
        if episode.kind == "async":
            over = root.cg.usage // PAGE_SIZE - sgx_epc_cgroup_work_max(root)
            nr_to_scan = sgx_epc_cgroup_reclaim_pages(over)
        ignore = rc["ignore_age"]
        cnt = reclaimed = 0
        while cnt < nr_to_scan and not sgx_cgroup_lru_empty(host, root.cg):
            c = sgx_cgroup_next_get(host, root)
            before = c.nr_evicted
            gen = sgx_reclaim_pages(host, c, charge_task)
            # step the batch by hand: age_test reads this round's ignore_age
            while True:
                self._ignore_age = ignore
                try:
                    point = next(gen)
                except StopIteration as stop:
                    cnt += stop.value
                    break
                finally:
                    self._ignore_age = False
                yield point
            reclaimed += c.nr_evicted - before
            if c is not root:
                sgx_put_cg(host, c)
        rc["reclaimed"] = reclaimed
        failed = episode.kind == "async" and not reclaimed
        if failed and sgx_epc_cgroup_reclaim_failed(host, root, rc):
            self._stop.add(root.id)
        return cnt

    def should_reclaim(self, host: Host, sgx_cg: SgxCgroup) -> bool:
        """The loop condition of sgx_epc_cgroup_reclaim_work_func() (v2 patch 12): usage
        above the limit - 1 (- 8 more above 32 pages), something reclaimable, and the
        last round did not fail on empty LRUs."""
        if sgx_cg.id in self._stop:
            self._stop.discard(sgx_cg.id)
            return False
        if sgx_cgroup_lru_empty(host, sgx_cg.cg):
            return False
        return sgx_cg.cg.usage // PAGE_SIZE > sgx_epc_cgroup_work_max(sgx_cg)

    # --- charge -------------------------------------------------------------------------------

    def nothing_reclaimable(self, host: Host, task: Task, sgx_cg: SgxCgroup) -> int:
        """v2 does not fail a charge at once on empty LRUs: the loop decides."""
        return -EBUSY

    def try_charge(
        self,
        host: Host,
        task: Task,
        sgx_cg: SgxCgroup,
        reclaim: int,
        first: int | None,
        episode: Episode,
    ) -> Generator[str, None, int]:
        """Models __sgx_epc_cgroup_try_charge() (v2 patch 12) for one page."""
        rc = _rc(episode)
        nr_empty = 0
        ret = first
        while True:
            if ret is None:
                ret = _sgx_cgroup_try_charge(host, task, sgx_cg)
            if ret != -EBUSY:
                return ret
            ret = None
            max_pages = sgx_cg.cg.max // PAGE_SIZE
            if max_pages < 1:
                sgx_cg.nr_enomem += 1
                return -ENOMEM
            if task.signal_pending:
                return -ERESTARTSYS
            if reclaim == SGX_NO_RECLAIM:
                if sgx_cgroup_lru_empty(host, sgx_cg.cg):
                    sgx_cg.nr_enomem += 1
                    return -ENOMEM
                queue_work(host, sgx_cg)
                return -EBUSY
            cur = sgx_cg.cg.usage // PAGE_SIZE
            over = cur + 1 - max_pages if cur + 1 > max_pages else SGX_EPC_RECLAIM_MIN_PAGES
            nr = sgx_epc_cgroup_reclaim_pages(over)
            yield from sgx_cgroup_reclaim_pages(host, sgx_cg, task, nr, episode=episode)
            if not rc["reclaimed"] and sgx_epc_cgroup_reclaim_failed(host, sgx_cg, rc):
                nr_empty += 1
                if nr_empty > SGX_EPC_RECLAIM_OOM_THRESHOLD:
                    sgx_cg.nr_enomem += 1
                    return -ENOMEM
            yield "cond_resched"

    # --- misc.max writes ------------------------------------------------------------------------

    def max_written(self, host: Host, misc_cg: MiscCg) -> None:
        """Models sgx_epc_cgroup_max_write() (v2 patch 12), run to completion in the
        writer's context (see the module docstring)."""
        sgx_cg = misc_cg.priv
        if sgx_cg is None:
            return
        episode = Episode("sync", sgx_cg)
        rc = _rc(episode)
        max_pages = misc_cg.max // PAGE_SIZE
        nr_empty = stalled = 0
        while True:
            cur = misc_cg.usage // PAGE_SIZE
            if cur <= max_pages:
                return
            nr = sgx_epc_cgroup_reclaim_pages(cur - max_pages)
            drive(sgx_cgroup_reclaim_pages(host, sgx_cg, None, nr, episode=episode))
            if rc["reclaimed"]:
                stalled = 0
                continue
            if sgx_epc_cgroup_reclaim_failed(host, sgx_cg, rc):
                nr_empty += 1
                if nr_empty > SGX_EPC_RECLAIM_OOM_THRESHOLD and not sgx_epc_cgroup_oom(
                    self, host, sgx_cg
                ):
                    return
            elif rc["ignore_age"]:
                stalled += 1
                if stalled > SGX_EPC_RECLAIM_IGNORE_AGE_THRESHOLD:
                    return


def sgx_epc_cgroup_oom(policy: OomV2, host: Host, root: SgxCgroup) -> bool:
    """Models sgx_epc_cgroup_oom() (v2 patch 14; css_for_each_descendant_pre() as v3):
    in preorder over subtree(*root*), skipping dying cgroups, the first cgroup whose
    unreclaimable list yields a victim (sgx_epc_oom()) has that enclave killed.
    Returns whether one was."""
    c: MiscCg | None = root.cg
    while c is not None:
        if not c.freed and c.priv is not None:
            encl = policy.sgx_oom_get_victim(host, c.priv)
            if encl is not None:
                policy.killed.append(encl.id)
                sgx_oom_encl(host, encl)
                return True
        c = _preorder_successor(root.cg, c)
    return False


POLICY = OomV2
