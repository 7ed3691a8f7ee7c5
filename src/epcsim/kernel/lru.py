"""Array-backed intrusive lists of EPC pages: LRUs and free lists.

Models ``struct sgx_epc_lru_list`` (sgx.h, patch 06) and the ``list_head`` that links a
``struct sgx_epc_page`` into exactly one of a node free list or an LRU.  The links live in
the :class:`~epcsim.kernel.epc.EpcPool` arrays ``prev``/``next`` (int32 per EPC page), so
a list is only a head, a tail and a length.  A page on no list is self-linked
(``prev[i] == next[i] == i``), which is what ``list_empty(&page->list)`` tests in the
kernel after ``list_del_init()``; ``-1`` ends a list.

The spinlock of the kernel structure is not modelled: every operation here is atomic
with respect to the simulator's yield points.
"""

from __future__ import annotations

import numpy as np

__all__ = ["EpcFreeList", "EpcList", "SgxEpcLruList"]


class EpcList:
    """A FIFO list of EPC page indices linked through the pool's ``prev``/``next``.

    ``head`` is the oldest entry (next to scan / next to allocate), ``tail`` the newest.
    """

    __slots__ = ("head", "tail", "nr", "_prev", "_next")

    def __init__(self, prev: memoryview, next_: memoryview) -> None:
        self.head = -1
        self.tail = -1
        self.nr = 0
        self._prev = prev
        self._next = next_

    def add_tail(self, i: int) -> None:
        """``list_add_tail(&page->list, list)``."""
        prev = self._prev
        t = self.tail
        prev[i] = t
        self._next[i] = -1
        if t < 0:
            self.head = i
        else:
            self._next[t] = i
        self.tail = i
        self.nr += 1

    def add_head(self, i: int) -> None:
        """``list_add(&page->list, list)``."""
        nxt = self._next
        h = self.head
        nxt[i] = h
        self._prev[i] = -1
        if h < 0:
            self.tail = i
        else:
            self._prev[h] = i
        self.head = i
        self.nr += 1

    def pop_head(self) -> int:
        """Unlink and return the head (``list_first_entry`` + ``list_del_init``), or -1."""
        i = self.head
        if i < 0:
            return -1
        nxt = self._next
        n = nxt[i]
        self.head = n
        if n < 0:
            self.tail = -1
        else:
            self._prev[n] = -1
        self._prev[i] = i
        nxt[i] = i
        self.nr -= 1
        return i

    def isolate_head(self, n: int) -> list[int]:
        """Unlink up to *n* entries from the head, in order, each self-linked: *n*
        successive :meth:`pop_head` calls done as one splice."""
        out = []
        nxt = self._next
        i = self.head
        while i >= 0 and len(out) < n:
            out.append(i)
            i = nxt[i]
        if not out:
            return out
        prev = self._prev
        self.head = i
        if i < 0:
            self.tail = -1
        else:
            prev[i] = -1
        for p in out:
            prev[p] = p
            nxt[p] = p
        self.nr -= len(out)
        return out

    def del_init(self, i: int) -> None:
        """``list_del_init(&page->list)`` for a page known to be on this list."""
        prev = self._prev
        nxt = self._next
        p = prev[i]
        n = nxt[i]
        if p < 0:
            self.head = n
        else:
            nxt[p] = n
        if n < 0:
            self.tail = p
        else:
            prev[n] = p
        prev[i] = i
        nxt[i] = i
        self.nr -= 1

    def del_init_many(self, pages: np.ndarray) -> None:
        """:meth:`del_init` for every page of *pages* (distinct, all on this list), in
        array operations: the state any order of single ``list_del_init()`` calls leaves.

        The survivors keep their order; each maximal run of removed pages is bridged by
        linking the survivor before it to the survivor after it (or moving ``head`` /
        ``tail``), and every removed page ends self-linked.  The run ends are found by
        pointer jumping over the removed pages only, so the cost is O(|pages| log run),
        independent of the list's length.
        """
        n = len(pages)
        if n < 16:
            for i in pages.tolist():
                self.del_init(i)
            return
        prev = np.asarray(self._prev)  # views of the pool's link arrays
        next_ = np.asarray(self._next)
        r = pages.astype(np.int64)
        if n == self.nr:  # every entry (an enclave's release, alone on its LRU): empty
            prev[r] = r
            next_[r] = r
            self.head = self.tail = -1
            self.nr = 0
            return
        p = prev[r].astype(np.int64)
        nx = next_[r].astype(np.int64)
        # where[i]: 1 + the position in r of page i, 0 for a surviving page and for -1
        # (the last entry); zero-filled on demand, so only the rows read cost anything
        where = np.zeros(len(prev) + 1, dtype=np.int32)
        where[r] = np.arange(1, n + 1, dtype=np.int32)
        starts = np.flatnonzero(where[p] == 0)  # the first page of each run
        # jump[k]: the position of the last page of the run from k on (pointer doubling)
        jump = where[nx] - 1
        np.copyto(jump, np.arange(n, dtype=np.int32), where=jump < 0)
        while True:
            nxt = jump[jump]
            if np.array_equal(nxt, jump):
                break
            jump = nxt
        before = p[starts]  # a surviving page or -1
        after = nx[jump[starts]]  # a surviving page or -1
        lb = before >= 0
        la = after >= 0
        next_[before[lb]] = after[lb]
        prev[after[la]] = before[la]
        if not lb.all():  # the run at the head: at most one
            self.head = int(after[~lb][0])
        if not la.all():  # the run at the tail: at most one
            self.tail = int(before[~la][0])
        prev[r] = r
        next_[r] = r
        self.nr -= n

    def __len__(self) -> int:
        return self.nr

    def to_list(self) -> list[int]:
        """The entries from head to tail (for tests and invariant checks)."""
        out = []
        i = self.head
        nxt = self._next
        while i >= 0:
            out.append(i)
            i = nxt[i]
        return out


class SgxEpcLruList(EpcList):
    """Models ``struct sgx_epc_lru_list``: the ``reclaimable`` list of one cgroup.

    Pages enter at the tail when marked reclaimable and are isolated from the head by
    ``sgx_reclaim_pages()``.
    """

    __slots__ = ()


class EpcFreeList(EpcList):
    """A node's free list (``sgx_numa_node.free_page_list``), kept lazily.

    At boot the kernel links every page of a section into its node's free list in index
    order, and freed pages go to the tail; so the list is always the section's
    never-used pages ``[hwm, end)`` in index order (the *pristine* range) followed by the
    pages freed since.  The model keeps the first part implicit: ``hwm`` and ``end``
    bound it and none of its pages' state is ever written or read (the pool's arrays are
    zero-filled by ``calloc``, so an untouched page costs no memory); ``head`` / ``tail``
    link only the freed pages; ``nr`` counts both.  The allocator
    (:func:`epcsim.kernel.epc._sgx_alloc_epc_page_from_node`) takes ``hwm`` while the
    pristine range is non-empty, else the head: the order of the list built eagerly.
    """

    __slots__ = ("hwm", "end")

    def __init__(self, prev: memoryview, next_: memoryview, start: int, end: int) -> None:
        super().__init__(prev, next_)
        self.hwm = start
        self.end = end
        self.nr = end - start

    @property
    def nr_pristine(self) -> int:
        """Pages of the implicit never-used range ``[hwm, end)``."""
        return self.end - self.hwm

    def to_list(self) -> list[int]:
        """The entries from head to tail: the pristine range, then the freed pages."""
        return list(range(self.hwm, self.end)) + self.freed_list()

    def freed_list(self) -> list[int]:
        """The explicitly linked part (pages freed since boot), head to tail."""
        return EpcList.to_list(self)

    def add_head(self, i: int) -> None:
        """Not for a free list (the kernel only adds at its tail; the head would come
        after the pristine range here)."""
        raise NotImplementedError("a free list takes pages at its tail")

    def isolate_head(self, n: int) -> list[int]:
        """Not for a free list (its head may be the implicit pristine range)."""
        raise NotImplementedError("a free list is taken from by the allocator only")
