"""The lazy free lists (issue 15, "memory proportional to use, not capacity").

A node's free list is a pristine range of never-used pages, in index order, followed by
the pages freed since (:class:`epcsim.kernel.lru.EpcFreeList`): the allocation order is
that of the list the kernel builds at boot, every page eagerly, and the pool's arrays
are written only for pages allocated at least once.
"""

from __future__ import annotations

import collections
import os

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from epcsim.kernel import Host, check_invariants, drive, ioctl
from epcsim.kernel.constants import SGX_EPC_PAGE_IS_FREE
from epcsim.kernel.epc import (
    KIND_FREE,
    KIND_VEPC,
    _sgx_alloc_epc_page,
    _sgx_free_epc_page_to_node,
    _sgx_free_epc_pages_to_node,
    sgx_alloc_epc_page_nowait,
    sgx_free_epc_page,
)
from epcsim.kernel.invariants import InvariantError

PAGE = 4096


class EagerFreeLists:
    """The free lists as the model built them before issue 15: every page of a section
    linked at boot in index order; allocation takes the head of the local node's list,
    else of the following nodes (wrapping); a free appends at the tail of its node's."""

    def __init__(self, section_pages: list[int]) -> None:
        self.lists = []
        start = 0
        self.starts = []
        for cnt in section_pages:
            self.starts.append(start)
            self.lists.append(collections.deque(range(start, start + cnt)))
            start += cnt

    def alloc(self, nid: int) -> int:
        nodes = len(self.lists)
        nid0 = nid if 0 <= nid < nodes else 0
        k = nid0
        while True:
            if self.lists[k]:
                return self.lists[k].popleft()
            k = (k + 1) % nodes
            if k == nid0:
                return -12  # -ENOMEM

    def free(self, page: int) -> None:
        nid = max(k for k, s in enumerate(self.starts) if s <= page)
        self.lists[nid].append(page)


def _eager_rows(pool, page: int) -> tuple:
    """A page's row after its allocation, as the eager pool left it."""
    return (page, page, -1, -1, -1, 0, KIND_FREE)


def _row(pool, page: int) -> tuple:
    return (
        int(pool.prev[page]),
        int(pool.next[page]),
        int(pool.owner_encl[page]),
        int(pool.owner_idx[page]),
        int(pool.cg[page]),
        int(pool.flags[page]),
        int(pool.kind[page]),
    )


ops = st.lists(
    st.tuples(
        st.sampled_from(["alloc", "free", "free_bulk"]), st.integers(0, 9), st.integers(0, 7)
    ),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(sections=st.lists(st.integers(1, 12), min_size=1, max_size=3), ops=ops)
def test_allocation_order_is_the_eager_lists(sections: list[int], ops) -> None:
    """Any sequence of allocations and frees (one at a time and in runs, from any node)
    takes the pages in the order of the eagerly built lists; each page's row after its
    allocation is what the eager pool held; the lists' contents and lengths agree."""
    h = Host(sections=[n * PAGE for n in sections])
    pool = h.epc
    eager = EagerFreeLists(sections)
    used: list[int] = []
    for op, a, b in ops:
        if op == "alloc":
            nid = a % 5  # nodes beyond the last wrap to node 0
            got = _sgx_alloc_epc_page(pool, nid)
            want = eager.alloc(nid)
            assert got == want
            if got >= 0:
                assert _row(pool, got) == _eager_rows(pool, got)
                used.append(got)
        elif used:
            k = min(1 + b, len(used)) if op == "free_bulk" else 1
            start = a % len(used)
            run = (used[start:] + used[:start])[:k]
            for p in run:
                used.remove(p)
                eager.free(p)
            if op == "free_bulk":
                _sgx_free_epc_pages_to_node(pool, run)
            else:
                _sgx_free_epc_page_to_node(pool, run[0])
        for fl, el in zip(pool.free_lists, eager.lists, strict=True):
            assert fl.to_list() == list(el)
            assert fl.nr == len(el)
        assert pool.nr_free_pages == sum(len(el) for el in eager.lists)
    # a free page is free whether it was ever used or not
    for fl in pool.free_lists:
        for p in fl.freed_list():
            assert pool.flags[p] == SGX_EPC_PAGE_IS_FREE and pool.cg[p] == -1


@settings(max_examples=60, deadline=None)
@given(
    sections=st.lists(st.integers(1, 10), min_size=1, max_size=3),
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 7)), max_size=60),
)
def test_invariants_hold_through_allocations_and_frees(sections: list[int], ops) -> None:
    """The invariant checker validates every page (the pristine ones by definition)
    through charged allocations and frees."""
    h = Host(sections=[n * PAGE for n in sections])
    task = h.spawn("/", nid=0)
    used: list[int] = []
    for alloc, a in ops:
        if alloc:
            task.nid = a % len(sections)
            p = sgx_alloc_epc_page_nowait(h, task, KIND_VEPC, -1, -1)
            if p >= 0:
                used.append(p)
        elif used:
            sgx_free_epc_page(h, used.pop(a % len(used)))
        check_invariants(h)
    assert h.epc.nr_free_pages == h.epc.nr_pages - len(used)


def test_checker_sees_a_broken_pristine_range() -> None:
    """A pristine range that disagrees with the list's length, or a page of it on an
    LRU, is an invariant violation."""
    h = Host("64KiB")
    check_invariants(h, quiescent=True)
    fl = h.epc.free_lists[0]
    fl.hwm += 1
    try:
        check_invariants(h)
    except InvariantError as e:
        assert "free list length" in str(e)
    else:
        raise AssertionError("not detected")
    fl.hwm = fl.end + 1
    try:
        check_invariants(h)
    except InvariantError as e:
        assert "outside its section" in str(e)
    else:
        raise AssertionError("not detected")
    fl.hwm = 0
    h.sgx_cg_root.lru.add_tail(3)
    h.nr_lru_pages += 1
    try:
        check_invariants(h)
    except InvariantError as e:
        assert "never-allocated" in str(e)
    else:
        raise AssertionError("not detected")


def test_an_enclave_build_touches_only_its_pages() -> None:
    """Building an enclave writes the rows of the pages it allocates (SECS, VA page,
    its pages) and no other."""
    h = Host("1MiB")
    task = h.spawn("/")
    encl = ioctl.sgx_open(h, task)
    drive(ioctl.ioc_enclave_create(h, task, encl, 16 * PAGE))
    drive(ioctl.ioc_enclave_add_pages(h, task, encl, 0, 8 * PAGE, measure=False))
    allocs = 8 + len(encl.va_all) + 1
    assert h.epc.free_lists[0].hwm == allocs
    assert h.epc.touched().tolist() == list(range(allocs))
    assert h.epc.nr_free_pages == h.epc.nr_pages - allocs
    check_invariants(h, quiescent=True)


def _rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_1tib_host_touches_nothing_at_creation() -> None:
    """A 1 TiB host (268M EPC pages, a real two-socket configuration) is created
    without writing its pool's arrays: the pristine range is the whole pool, every
    page is free, and the process grows by far less than the 5 GiB the arrays span."""
    before = _rss_bytes()
    h = Host(sections=["512GiB", "512GiB"])
    grown = _rss_bytes() - before
    pool = h.epc
    n = 1 << 28
    assert pool.nr_pages == n and pool.nr_free_pages == n
    assert [fl.nr_pristine for fl in pool.free_lists] == [n // 2, n // 2]
    assert [fl.nr for fl in pool.free_lists] == [n // 2, n // 2]
    assert [(fl.head, fl.tail) for fl in pool.free_lists] == [(-1, -1), (-1, -1)]
    assert len(pool.touched()) == 0
    assert pool.nbytes() == 20 * n  # the per-page cost is unchanged: 20 bytes
    assert grown < 64 << 20, f"creating a 1 TiB host grew the process by {grown} bytes"
    # an allocation on the second node writes that node's first row only
    task = h.spawn("/", nid=1)
    p = sgx_alloc_epc_page_nowait(h, task, KIND_VEPC, -1, -1)
    assert p == n // 2 and pool.touched().tolist() == [p]
    assert pool.nr_free_pages == n - 1
    check_invariants(h)
    assert _rss_bytes() - before < 64 << 20
    assert np.asarray(pool.is_pristine([0, p, p + 1])).tolist() == [True, False, True]
