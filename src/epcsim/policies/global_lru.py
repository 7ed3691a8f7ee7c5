"""``global-lru``: one global FIFO/second-chance list, no per-cgroup LRUs.

Not a design of the series (an external baseline).  Source: the mainline SGX reclaimer
the series replaces, ``arch/x86/kernel/cpu/sgx/main.c`` (v6.x, before the series): one
``sgx_global_lru`` that ``sgx_mark_page_reclaimable()`` appends to and
``sgx_reclaim_pages()`` takes 16 pages from the head of, young pages rotated to the tail.
The series' rationale (cover letter of v6, 2023-10-30, and every later version: "with one
global LRU a cgroup's pages are scattered", scanning many entries for a few pages of one
cgroup) argues against adding per-cgroup limits on top of that list; this policy is that
design, so the scan cost the rationale predicts is measured.

What it changes relative to v16:

- ``page_lru``: every reclaimable page goes on one list (:class:`GlobalLru`), whatever
  its cgroup; the cgroups' own LRUs stay empty.
- ``reclaim_pages``: a reclaim rooted at a cgroup (the charge loop, the async work,
  direct reclaim) scans the global list from its head for pages charged to that cgroup's
  subtree; pages of other cgroups are rotated to the tail *unaged* (their accessed bit is
  not tested).  One pass isolates at most SGX_NR_TO_SCAN pages and rotates at most
  :data:`GLOBAL_LRU_SKIP_CAP` others, and looks at each entry at most once; the isolated
  pages go through the series' phases 2-4.  A reclaim rooted at the root (ksgxd, the
  allocator, the global direct pass) is the mainline reclaimer: every page is in scope.
  Passes repeat until *nr_to_scan* pages were isolated or the subtree has nothing on the
  list, as v16's loop does.
- ``lru_empty``: a subtree is empty iff none of its pages is on the global list (the
  list keeps a count per cgroup).

Every entry a pass looks at is counted: in :attr:`GlobalLruPolicy.nr_scanned` (the
simulator charges the cost model's ``lru_scan`` per entry, epcsim.costs) and per cgroup
of the page (``pages_scanned``, ``pages_rotated``; ``summary.json["policy_counters"]``),
and in the page's cgroup's ``nr_scanned`` (the per-tenant ``pages_scanned`` of
``summary.json["cgroups"]``, which the series' designs count per LRU batch).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

from ..kernel.constants import SGX_NR_TO_SCAN
from ..kernel.lru import SgxEpcLruList
from ._batch import ListOwner, by_path, reclaim_taken
from .base import Policy

if TYPE_CHECKING:
    from ..kernel.epc_cgroup import SgxCgroup
    from ..kernel.hooks import Episode
    from ..kernel.host import Host, Task
    from ..kernel.misc import MiscCg

__all__ = ["GLOBAL_LRU_SKIP_CAP", "GlobalLru", "GlobalLruPolicy", "POLICY"]

#: pages of other cgroups one pass rotates at most before it gives up: SGX_NR_TO_SCAN << 10
#: (16384), after ``SWAP_CLUSTER_MAX_SKIPPED`` = ``SWAP_CLUSTER_MAX << 10`` of
#: ``isolate_lru_folios()`` (mm/vmscan.c, include/linux/swap.h; "mm/vmscan: fix hard
#: LOCKUP in function isolate_lru_folios", 2024), the kernel's bound on the folios one
#: isolation skips because they are not eligible: without a bound a scan under the LRU
#: lock for the few pages of one cgroup walks the whole list (a hard lockup there).
GLOBAL_LRU_SKIP_CAP = SGX_NR_TO_SCAN << 10


class GlobalLru(SgxEpcLruList):
    """The one list of reclaimable pages (``sgx_global_lru``), which also counts its
    pages per cgroup (by ``sgx_cg`` id: a page on the list holds a reference to its
    cgroup, so the id is not reused meanwhile) for ``lru_empty``."""

    __slots__ = ("_cg", "per_cg")

    def __init__(self, host: Host) -> None:
        pool = host.epc
        super().__init__(pool.m_prev, pool.m_next)
        self._cg = pool.m_cg
        #: pages on the list per sgx_cgroup id
        self.per_cg: dict[int, int] = {}

    def _count(self, page: int, d: int) -> None:
        cid = self._cg[page]
        self.per_cg[cid] = self.per_cg.get(cid, 0) + d

    def add_tail(self, i: int) -> None:
        super().add_tail(i)
        self._count(i, 1)

    def add_head(self, i: int) -> None:
        super().add_head(i)
        self._count(i, 1)

    def pop_head(self) -> int:
        i = super().pop_head()
        if i >= 0:
            self._count(i, -1)
        return i

    def isolate_head(self, n: int) -> list[int]:
        out = super().isolate_head(n)
        for i in out:
            self._count(i, -1)
        return out

    def del_init(self, i: int) -> None:
        super().del_init(i)
        self._count(i, -1)


def _subtree_ids(root: MiscCg) -> set[int]:
    """The sgx_cgroup ids of subtree(*root*) (freed ones skipped, as the series'
    emptiness walk skips them)."""
    out: set[int] = set()
    stack = [root]
    while stack:
        c = stack.pop()
        if c.freed:
            continue
        if c.priv is not None:
            out.add(c.priv.id)
        stack.extend(c.children)
    return out


class GlobalLruPolicy(Policy):
    name = "global-lru"
    source = (
        "mainline arch/x86/kernel/cpu/sgx/main.c before the series (one global LRU), "
        "with the per-cgroup limits of v16"
    )
    changes = (
        "one global FIFO/second-chance list; limit reclaim scans it from the head for "
        "the subtree's pages, rotating the others unaged; every page scanned counted "
        "and charged lru_scan"
    )
    external = True
    scans = True

    #: the rotation bound of one pass (tests may lower it on an instance)
    skip_cap: int = GLOBAL_LRU_SKIP_CAP

    def __init__(self, *, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.lru: GlobalLru | None = None
        #: entries looked at, per cgroup of the page (the SgxCgroup object)
        self.pages_scanned: dict[SgxCgroup, int] = {}
        #: entries rotated to the tail unaged (out of the pass's subtree), per cgroup
        self.pages_rotated: dict[SgxCgroup, int] = {}

    def attach(self, host: Host) -> None:
        self.lru = GlobalLru(host)

    def own_lrus(self) -> Sequence[SgxEpcLruList]:
        return () if self.lru is None else (self.lru,)

    def reclaimable_pages(self, host: Host, sgx_cg: SgxCgroup) -> int:
        """*sgx_cg*'s pages on the global list (its own LRU stays empty)."""
        own = 0 if self.lru is None else self.lru.per_cg.get(sgx_cg.id, 0)
        return sgx_cg.lru.nr + own

    # --- hooks ------------------------------------------------------------------------

    def page_lru(self, host: Host, page: int) -> SgxEpcLruList:
        """sgx_epc_page_lru() before the series: the global list."""
        assert self.lru is not None
        return self.lru

    def lru_empty(self, host: Host, root: MiscCg) -> bool:
        """sgx_cgroup_lru_empty(): no page of subtree(*root*) on the global list."""
        if root.parent is None:
            return host.nr_lru_pages == 0
        assert self.lru is not None
        per_cg = self.lru.per_cg
        return not any(per_cg.get(i, 0) for i in _subtree_ids(root))

    def reclaim_pages(
        self,
        host: Host,
        root: SgxCgroup,
        charge_task: Task | None,
        nr_to_scan: int,
        episode: Episode,
    ) -> Generator[str, None, int]:
        """sgx_cgroup_reclaim_pages() over the global list: passes of
        :meth:`sgx_reclaim_pages_scan` until *nr_to_scan* pages were isolated or the
        subtree has nothing on the list."""
        cnt = 0
        while cnt < nr_to_scan and not self.lru_empty(host, root.cg):
            cnt += yield from self.sgx_reclaim_pages_scan(host, root, charge_task)
        return cnt

    # --- the scan ---------------------------------------------------------------------

    def sgx_reclaim_pages_scan(
        self, host: Host, root: SgxCgroup, charge_task: Task | None
    ) -> Generator[str, None, int]:
        """Models sgx_reclaim_pages() (main.c before the series) restricted to the pages
        charged to subtree(*root*): take entries from the head of the global list; one
        of the subtree is isolated, any other goes back to the tail unaged; stop at
        SGX_NR_TO_SCAN isolated, :attr:`skip_cap` rotated, or every entry seen once.
        Then the series' phases 2-4.  Returns the pages isolated (live enclave)."""
        lst = self.lru
        assert lst is not None
        scope = None if root.cg.parent is None else _subtree_ids(root.cg)
        m_cg = host.epc.m_cg
        cgroups = host.sgx_cgroups
        scanned_by = self.pages_scanned
        rotated_by = self.pages_rotated
        taken: list[int] = []
        limit = lst.nr
        scanned = skipped = 0
        while scanned < limit and len(taken) < SGX_NR_TO_SCAN and skipped < self.skip_cap:
            page = lst.pop_head()
            scanned += 1
            sgx_cg = cgroups[m_cg[page]]
            scanned_by[sgx_cg] = scanned_by.get(sgx_cg, 0) + 1
            sgx_cg.nr_scanned += 1  # the per-tenant pages_scanned of its cgroup
            if scope is None or sgx_cg.id in scope:
                taken.append(page)
            else:
                lst.add_tail(page)
                skipped += 1
                rotated_by[sgx_cg] = rotated_by.get(sgx_cg, 0) + 1
        self.nr_scanned += scanned
        host.nr_lru_pages -= len(taken)
        for sgx_cg in {cgroups[m_cg[p]] for p in taken}:
            sgx_cg.nr_reclaim_batches += 1
        return (yield from reclaim_taken(host, ListOwner(lst), taken, charge_task))

    def counters(self, host: Host) -> dict[str, Any]:
        return {
            "lru_scanned": self.nr_scanned,
            "pages_scanned": by_path(self.pages_scanned),
            "pages_rotated": by_path(self.pages_rotated),
        }


POLICY = GlobalLruPolicy
