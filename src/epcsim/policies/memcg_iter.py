"""``memcg-iter``: memcg's limit reclaim, every cgroup of the subtree each round.

Not a design of the series (an external baseline).  Source: the kernel's reclaim of a
memory cgroup over its limit, ``mm/vmscan.c`` (v6.1): ``do_try_to_free_pages()`` lowers
``sc->priority`` from ``DEF_PRIORITY`` (12, include/linux/mmzone.h) towards 0 while the
pages reclaimed fall short of ``nr_to_reclaim``; each round, ``shrink_node_memcgs()``
visits every memcg of the target's subtree in preorder with ``mem_cgroup_iter()`` and
``shrink_lruvec()`` scans ``lru_size >> priority`` pages of each (``get_scan_count()``),
in chunks of ``SWAP_CLUSTER_MAX``, stopping inside one lruvec once it alone reclaimed
``nr_to_reclaim``.

What it changes relative to v16 (``reclaim_pages`` only): a ``sgx_cgroup_reclaim_pages()``
call no longer takes one 16-page batch per cgroup in the rotating order of the persistent
cursor ``next_cg``; it runs :meth:`MemcgIterPolicy.shrink_node_memcgs` rounds from the
subtree root, priority 12 down to 0, one step per round that fell short, each cgroup
scanning ``lru.nr >> priority`` pages in chunks of SGX_NR_TO_SCAN (the series' batch)
through the series' phases 2-4, until the pages isolated reach *nr_to_scan* (pages
"reclaimed" are counted as v16 counts them: isolated with a live enclave).  A call whose
priority-0 round falls short returns what it has; v16's callers loop as before.  The
cursor ``next_cg`` is never used.  Everything else (thresholds, ksgxd, the emptiness walk)
is v16's.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from ..kernel.constants import SGX_NR_TO_SCAN
from ..kernel.epc_cgroup import sgx_cgroup_lru_empty, sgx_cgroup_next_desc_pre, sgx_put_cg
from ._batch import by_path, reclaim_taken
from .base import Policy

if TYPE_CHECKING:
    from ..kernel.epc_cgroup import SgxCgroup
    from ..kernel.hooks import Episode
    from ..kernel.host import Host, Task

__all__ = ["DEF_PRIORITY", "MemcgIterPolicy", "POLICY"]

#: the first (lightest) scan priority of a reclaim: scan lru_size >> 12 (mmzone.h)
DEF_PRIORITY = 12


class MemcgIterPolicy(Policy):
    name = "memcg-iter"
    source = (
        "mm/vmscan.c (v6.1) do_try_to_free_pages(), shrink_node_memcgs() with "
        "mem_cgroup_iter(), shrink_lruvec(); DEF_PRIORITY in include/linux/mmzone.h"
    )
    changes = (
        "each reclaim call walks every cgroup of the subtree in preorder per round, "
        "scanning lru_size >> priority pages of each, priority 12 down to 0, until the "
        "pages isolated reach the request; no persistent cursor"
    )
    external = True

    def __init__(self, *, seed: int = 0) -> None:
        super().__init__(seed=seed)
        #: pages taken off each cgroup's LRU by this policy's scans (the SgxCgroup)
        self.pages_scanned: dict[SgxCgroup, int] = {}
        #: (priority, cgroup path, pages taken) per chunk, when a test sets a list
        self.trace: list[tuple[int, str, int]] | None = None

    def reclaim_pages(
        self,
        host: Host,
        root: SgxCgroup,
        charge_task: Task | None,
        nr_to_scan: int,
        episode: Episode,
    ) -> Generator[str, None, int]:
        """sgx_cgroup_reclaim_pages() as memcg reclaims: :meth:`do_try_to_free_pages`."""
        return (yield from self.do_try_to_free_pages(host, root, charge_task, nr_to_scan))

    def do_try_to_free_pages(
        self, host: Host, root: SgxCgroup, charge_task: Task | None, nr_to_reclaim: int
    ) -> Generator[str, None, int]:
        """Models do_try_to_free_pages() (mm/vmscan.c): rounds of
        :meth:`shrink_node_memcgs` at priority DEF_PRIORITY, then one lower per round
        that fell short, down to 0.  Returns the pages isolated."""
        cnt = 0
        priority = DEF_PRIORITY
        while priority >= 0 and not sgx_cgroup_lru_empty(host, root.cg):
            cnt += yield from self.shrink_node_memcgs(
                host, root, charge_task, nr_to_reclaim, priority
            )
            if cnt >= nr_to_reclaim:
                break
            priority -= 1
        return cnt

    def shrink_node_memcgs(
        self,
        host: Host,
        root: SgxCgroup,
        charge_task: Task | None,
        nr_to_reclaim: int,
        priority: int,
    ) -> Generator[str, None, int]:
        """Models shrink_node_memcgs() (mm/vmscan.c) of a limit reclaim: every cgroup of
        subtree(*root*) in preorder (``mem_cgroup_iter()``: a cgroup whose reference
        cannot be taken is skipped), each shrunk by :meth:`shrink_lruvec`."""
        cnt = 0
        c = root
        while True:
            cnt += yield from self.shrink_lruvec(host, c, charge_task, nr_to_reclaim, priority)
            nxt = sgx_cgroup_next_desc_pre(root, c)
            if c is not root:
                sgx_put_cg(host, c)
            if nxt is root:
                return cnt
            c = nxt

    def shrink_lruvec(
        self,
        host: Host,
        c: SgxCgroup,
        charge_task: Task | None,
        nr_to_reclaim: int,
        priority: int,
    ) -> Generator[str, None, int]:
        """Models shrink_lruvec() (mm/vmscan.c) on *c*'s LRU: scan ``lru.nr >> priority``
        pages (``get_scan_count()``) from the head in chunks of at most SGX_NR_TO_SCAN,
        each a ``sgx_reclaim_pages()`` batch, stopping once this cgroup's chunks
        isolated *nr_to_reclaim*.  Returns the pages isolated."""
        lru = c.lru
        left = lru.nr >> priority
        cnt = 0
        while left > 0 and lru.nr and cnt < nr_to_reclaim:
            taken = lru.isolate_head(min(left, SGX_NR_TO_SCAN))
            host.nr_lru_pages -= len(taken)
            left -= len(taken)
            c.nr_reclaim_batches += 1
            c.nr_scanned += len(taken)  # phase 1's count (the per-tenant pages_scanned)
            self.pages_scanned[c] = self.pages_scanned.get(c, 0) + len(taken)
            if self.trace is not None:
                self.trace.append((priority, c.cg.path(), len(taken)))
            cnt += yield from reclaim_taken(host, c, taken, charge_task)
        return cnt

    def counters(self, host: Host) -> dict[str, Any]:
        return {"pages_scanned": by_path(self.pages_scanned)}


POLICY = MemcgIterPolicy
