"""``mglru-memcg``: MGLRU's memcg LRU for global reclaim, memcg-iter for limit reclaim.

Not a design of the series (an external baseline).  Source: "mm: multi-gen LRU: memcg
LRU" (Yu Zhao, 2022-12-21; mm/vmscan.c ``lru_gen_rotate_memcg()``, ``shrink_many()``;
include/linux/mmzone.h, ``MEMCG_NR_BINS`` = 8).  The kernel applies the memcg LRU to
global reclaim only; reclaim of a memcg over its limit still walks with
``mem_cgroup_iter()`` (the comment above ``MEMCG_NR_GENS`` in mmzone.h).

What it changes relative to v16:

- ``reclaim_pages`` rooted at the root (ksgxd, the allocator's reclaim, the global pass
  of direct reclaim): cgroups sit in an old and a young generation, each sharded into
  MEMCG_NR_BINS bins, a cgroup in one bin of one generation.  A cgroup the policy has
  not placed yet (created since the last global reclaim) goes to the tail of a random
  bin of the old generation, in id order.  Each step picks a random bin of the old
  generation, takes the next non-empty bin from there (wrapping), moves the cgroup at
  its head to the tail of a random bin of the young generation, and runs one
  ``sgx_reclaim_pages()`` batch on its LRU (if it has pages); steps repeat until
  *nr_to_scan* pages were isolated or nothing is reclaimable.  When every bin of the old
  generation is empty the generations swap (the young one becomes old).  The draws come
  from a NumPy Generator seeded with the run's seed: deterministic.
- ``faulted``: a resolved fault of a task moves its cgroup, if in the old generation, to
  the tail of a random bin of the young generation (its pages are in use).
- ``reclaim_pages`` rooted at any other cgroup (the charge loop, the async work, direct
  reclaim): ``memcg-iter``'s :meth:`~epcsim.policies.memcg_iter.MemcgIterPolicy.
  do_try_to_free_pages`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..kernel import reclaim as _reclaim
from ..kernel.epc_cgroup import sgx_cgroup_lru_empty, sgx_put_cg
from ..kernel.misc import css_tryget
from ._batch import by_path
from .memcg_iter import MemcgIterPolicy

if TYPE_CHECKING:
    from ..kernel.epc_cgroup import SgxCgroup
    from ..kernel.hooks import Episode
    from ..kernel.host import Host, Task

__all__ = ["MEMCG_NR_BINS", "MglruMemcgPolicy", "POLICY"]

#: bins per generation of the memcg LRU (include/linux/mmzone.h)
MEMCG_NR_BINS = 8


class MglruMemcgPolicy(MemcgIterPolicy):
    name = "mglru-memcg"
    source = (
        '"mm: multi-gen LRU: memcg LRU" (Yu Zhao, 2022-12-21): mm/vmscan.c '
        "lru_gen_rotate_memcg(), shrink_many(); MEMCG_NR_BINS in include/linux/mmzone.h"
    )
    changes = (
        "global reclaim (ksgxd) evicts from the head of a random bin of the old "
        "generation of cgroups, moving a cgroup to the young generation when reclaimed "
        "from or when it faults; generations swap when the old one empties; limit "
        "reclaim is memcg-iter's"
    )
    external = True

    def __init__(self, *, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.rng = np.random.default_rng(seed)
        #: the generation (0 or 1) that is old
        self.old = 0
        #: bins[gen][bin]: the cgroups of that bin, head first
        self.bins: list[list[deque[SgxCgroup]]] = [
            [deque() for _ in range(MEMCG_NR_BINS)] for _ in range(2)
        ]
        #: where each placed cgroup is: (generation, bin)
        self.where: dict[SgxCgroup, tuple[int, int]] = {}
        #: generation swaps so far
        self.nr_swaps = 0
        #: batches of global reclaim run on each cgroup's LRU
        self.nr_evict_visits: dict[SgxCgroup, int] = {}

    # --- the memcg LRU ----------------------------------------------------------------

    def _bin(self) -> int:
        return int(self.rng.integers(MEMCG_NR_BINS))

    def _place(self, sgx_cg: SgxCgroup, gen: int) -> None:
        """Append *sgx_cg* to the tail of a random bin of generation *gen*."""
        b = self._bin()
        self.bins[gen][b].append(sgx_cg)
        self.where[sgx_cg] = (gen, b)

    def _sync(self, host: Host) -> None:
        """Cgroups created since the last call join the old generation (in id order);
        freed ones leave."""
        for sgx_cg in [c for c in self.where if c.cg.freed or host.sgx_cgroups[c.id] is not c]:
            gen, b = self.where.pop(sgx_cg)
            self.bins[gen][b].remove(sgx_cg)
        for sgx_cg in host.sgx_cgroups:
            if sgx_cg is not None and sgx_cg not in self.where:
                self._place(sgx_cg, self.old)

    def lru_gen_rotate_memcg(self, sgx_cg: SgxCgroup) -> None:
        """Models lru_gen_rotate_memcg(MEMCG_LRU_YOUNG) (mm/vmscan.c): *sgx_cg* leaves
        its bin for the tail of a random bin of the young generation."""
        gen, b = self.where[sgx_cg]
        self.bins[gen][b].remove(sgx_cg)
        self._place(sgx_cg, 1 - self.old)

    def _next_victim(self) -> SgxCgroup:
        """shrink_many() (mm/vmscan.c): the head of the first non-empty bin of the old
        generation from a random one (wrapping); the generations swap first if the old
        one is empty."""
        old = self.bins[self.old]
        if not any(old):
            self.old = 1 - self.old
            self.nr_swaps += 1
            old = self.bins[self.old]
        first = self._bin()
        for k in range(MEMCG_NR_BINS):
            b = (first + k) % MEMCG_NR_BINS
            if old[b]:
                return old[b][0]
        raise AssertionError("no cgroup in either generation")

    # --- hooks ------------------------------------------------------------------------

    def reclaim_pages(
        self,
        host: Host,
        root: SgxCgroup,
        charge_task: Task | None,
        nr_to_scan: int,
        episode: Episode,
    ) -> Generator[str, None, int]:
        if root.cg.parent is not None:
            return (yield from self.do_try_to_free_pages(host, root, charge_task, nr_to_scan))
        return (yield from self.shrink_many(host, root, charge_task, nr_to_scan))

    def shrink_many(
        self, host: Host, root: SgxCgroup, charge_task: Task | None, nr_to_scan: int
    ) -> Generator[str, None, int]:
        """Models shrink_many() (mm/vmscan.c) of global reclaim over the memcg LRU: one
        ``sgx_reclaim_pages()`` batch on the head cgroup of a random old bin at a time,
        which moves to the young generation, until *nr_to_scan* pages were isolated or
        nothing is reclaimable."""
        cnt = 0
        while cnt < nr_to_scan and not sgx_cgroup_lru_empty(host, root.cg):
            self._sync(host)
            c = self._next_victim()
            self.lru_gen_rotate_memcg(c)
            if c.lru.nr and (c is root or css_tryget(c.cg)):
                self.nr_evict_visits[c] = self.nr_evict_visits.get(c, 0) + 1
                cnt += yield from _reclaim.sgx_reclaim_pages(host, c, charge_task)
                if c is not root:
                    sgx_put_cg(host, c)
        return cnt

    def faulted(self, host: Host, sgx_cg: SgxCgroup) -> None:
        """A fault in *sgx_cg*: to the young generation if it is placed in the old."""
        w = self.where.get(sgx_cg)
        if w is not None and w[0] == self.old:
            self.lru_gen_rotate_memcg(sgx_cg)

    def counters(self, host: Host) -> dict[str, Any]:
        return {
            **super().counters(host),
            "generation_swaps": self.nr_swaps,
            "global_batches": by_path(self.nr_evict_visits),
        }


POLICY = MglruMemcgPolicy
