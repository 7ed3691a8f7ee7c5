"""``check_invariants()``: the model's consistency rules, for tests and debug runs.

The kernel has WARN_ONs for some of these; the model checks them all at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .constants import (
    PAGE_SIZE,
    SGX_ENCL_OOM,
    SGX_EPC_PAGE_IS_FREE,
    SGX_EPC_PAGE_RECLAIMER_TRACKED,
    SGX_VA_SLOT_COUNT,
)
from .encl import DESC_BEING_RECLAIMED, DESC_PRESENT
from .epc import KIND_ENCL, KIND_FREE, KIND_SECS, KIND_VA, KIND_VEPC
from .misc import MiscCg

if TYPE_CHECKING:
    from .host import Host

__all__ = ["check_invariants", "InvariantError"]


class InvariantError(AssertionError):
    """A model invariant does not hold (a bug in the model)."""


def _fail(msg: str) -> None:
    raise InvariantError(msg)


def check_invariants(host: Host, *, quiescent: bool = False) -> None:
    """Check every invariant of the model; raise :class:`InvariantError` on the first
    violation.

    - misc usage of every css = 4096 x pages charged to it + its children's usage; every
      usage <= capacity; a css's refcount = online + live children + charged pages (+
      in-flight references, only when not *quiescent*);
    - every EPC page is in exactly one place: a free list (IS_FREE), one LRU (TRACKED and
      linked), isolated by a reclaimer (TRACKED, self-linked; only when not
      *quiescent*), or resident but untracked (SECS, VA, vEPC, a page outside the LRU);
    - free + used = capacity; the free count matches the free lists;
    - each enclave page's EPC page points back at it; VA slots in use = evicted pages
      (SECS included); ``secs_child_cnt`` = resident children;
    - memcg usage = backing of evicted pages charged to it, summed up the tree;
    - no ``next_cg`` cursor points at a freed cgroup or outside its subtree.

    Args:
        quiescent: no operation is suspended mid-way (no isolated pages, no
            in-flight references) — the state between completed operations.
    """
    pool = host.epc
    n = pool.nr_pages
    # Every page is checked: a page of a free list's pristine range (never allocated)
    # is free by definition and its row is never read; the others ("touched", in index
    # order) are checked from their rows.
    for k, fl in enumerate(pool.free_lists):
        start = int(pool.section_start[k])
        if not (start <= fl.hwm <= fl.end and fl.end == start + pool.section_pages[k]):
            _fail(f"free list {k}: pristine range [{fl.hwm}, {fl.end}) outside its section")
    touched = pool.touched()
    flags = pool.flags
    kind = pool.kind
    flags_t = flags[touched]
    free_t = (flags_t & SGX_EPC_PAGE_IS_FREE) != 0
    # the pages on some list (a free list's freed part, an LRU), once per list they
    # are on: memory and time in proportion to the pages used, not to the EPC
    seen: list[int] = []
    # free lists
    nfree = npristine = 0
    for k, fl in enumerate(pool.free_lists):
        start = int(pool.section_start[k])
        lst = fl.freed_list()
        if len(lst) + fl.nr_pristine != fl.nr:
            _fail(f"free list length {fl.nr} != walked {len(lst)} + pristine {fl.nr_pristine}")
        for i in lst:
            if not start <= i < fl.hwm:
                _fail(f"page {i} on free list {k}: not a used page of its section")
            if not flags[i] & SGX_EPC_PAGE_IS_FREE:
                _fail(f"page {i} on a free list without IS_FREE")
        seen += lst
        nfree += fl.nr
        npristine += fl.nr_pristine
    if nfree != pool.nr_free_pages:
        _fail(f"nr_free_pages {pool.nr_free_pages} != pages on free lists {nfree}")
    if int(free_t.sum()) != nfree - npristine:
        _fail("IS_FREE flags disagree with the free lists")
    if np.any(kind[touched][free_t] != KIND_FREE):
        _fail("a free page has an owner")
    # LRUs
    lru_total = 0
    lru_pages: list[int] = []
    for sgx_cg in host.sgx_cgroups:
        if sgx_cg is None:
            continue
        lst = sgx_cg.lru.to_list()
        if len(lst) != sgx_cg.lru.nr:
            _fail(f"{sgx_cg!r}: LRU length {sgx_cg.lru.nr} != walked {len(lst)}")
        if lst and np.any(pool.is_pristine(lst)):
            _fail(f"{sgx_cg!r}: a never-allocated page on its LRU")
        for i in lst:
            if pool.cg[i] != sgx_cg.id:
                _fail(f"page {i} on the LRU of {sgx_cg!r} but charged to {pool.cg[i]}")
            if not flags[i] & SGX_EPC_PAGE_RECLAIMER_TRACKED:
                _fail(f"page {i} on an LRU without RECLAIMER_TRACKED")
            if kind[i] != KIND_ENCL:
                _fail(f"page {i} of kind {kind[i]} on an LRU")
        seen += lst
        lru_pages += lst
        lru_total += len(lst)
    # a policy's own lists (epcsim.policies: global-lru's one list) hold pages of any
    # cgroup
    for lru in host.policy.own_lrus() if host.policy is not None else ():
        lst = lru.to_list()
        if len(lst) != lru.nr:
            _fail(f"policy list length {lru.nr} != walked {len(lst)}")
        if lst and np.any(pool.is_pristine(lst)):
            _fail("a never-allocated page on a policy's list")
        for i in lst:
            if not flags[i] & SGX_EPC_PAGE_RECLAIMER_TRACKED:
                _fail(f"page {i} on an LRU without RECLAIMER_TRACKED")
            if kind[i] != KIND_ENCL:
                _fail(f"page {i} of kind {kind[i]} on an LRU")
        seen += lst
        lru_pages += lst
        lru_total += len(lst)
    if lru_total != host.nr_lru_pages:
        _fail(f"nr_lru_pages {host.nr_lru_pages} != pages on LRUs {lru_total}")
    pages_seen, times = np.unique(np.array(seen, dtype=np.int64), return_counts=True)
    if np.any(times > 1):
        _fail(f"pages on two lists: {pages_seen[times > 1][:10].tolist()}")
    on_lru = np.isin(touched, np.array(lru_pages, dtype=np.int64))
    used = ~free_t  # of the touched pages
    if int(used.sum()) + nfree != n:
        _fail("free + used != capacity")
    isolated = used & ~on_lru & ((flags_t & SGX_EPC_PAGE_RECLAIMER_TRACKED) != 0)
    if np.any(isolated) and quiescent:
        _fail(f"isolated pages while quiescent: {touched[isolated][:10].tolist()}")
    if np.any(isolated & (pool.prev[touched] != touched)):
        _fail("an isolated page is not self-linked")
    cg_t = pool.cg[touched]
    if np.any(used & (cg_t < 0)):
        _fail("a used page is not charged to any cgroup")
    # per-cgroup charge accounting
    charged = np.bincount(cg_t[used].astype(np.int64), minlength=len(host.sgx_cgroups))

    def walk(cg: MiscCg) -> int:
        if cg.freed:
            _fail(f"freed css {cg!r} still in the tree")
        own = 0
        if cg.priv is not None:
            sid = cg.priv.id
            own = int(charged[sid]) if sid < len(charged) else 0
            if own != cg.priv.nr_pages:
                _fail(f"{cg!r}: nr_pages {cg.priv.nr_pages} != charged pages {own}")
        total = own * PAGE_SIZE + sum(walk(ch) for ch in cg.children)
        if cg.usage != total:
            _fail(f"{cg!r}: usage {cg.usage} != own {own} pages + children")
        if cg.usage > host.misc.capacity:
            _fail(f"{cg!r}: usage above capacity")
        if cg.peak < cg.usage:
            _fail(f"{cg!r}: peak {cg.peak} below usage {cg.usage}")
        expect = (1 if cg.online else 0) + len(cg.children) + own
        if cg.parent is None:
            expect = cg.refcnt if cg.refcnt >= expect else expect
        if quiescent and cg.refcnt != expect:
            _fail(f"{cg!r}: refcnt {cg.refcnt} != expected {expect}")
        if cg.refcnt < expect:
            _fail(f"{cg!r}: refcnt {cg.refcnt} below {expect}")
        if not cg.online and cg.parent is not None and cg.refcnt <= 0:
            _fail(f"{cg!r}: offline css with no references not freed")
        return total

    walk(host.misc.root)
    # cursors
    live = {id(s) for s in host.sgx_cgroups if s is not None}
    for s in host.sgx_cgroups:
        if s is None:
            continue
        if id(s.next_cg) not in live:
            _fail(f"{s!r}: next_cg points at a freed cgroup")
        c: MiscCg | None = s.next_cg.cg
        while c is not None and c is not s.cg:
            c = c.parent
        if c is None:
            _fail(f"{s!r}: next_cg {s.next_cg!r} outside its subtree")
    # enclaves
    owner_e = pool.owner_encl
    owner_i = pool.owner_idx
    memcg_bytes = np.zeros(len(host.memcgs), dtype=np.int64)
    for encl in host.encls:
        res = np.flatnonzero(encl.epc >= 0)
        if encl.released:
            if len(res) or encl.secs_epc >= 0 or encl.va_pages:
                _fail(f"{encl!r}: released but still holds EPC pages")
            continue
        if encl.flags & SGX_ENCL_OOM:
            # killed by the dropped OOM design: its EPC is freed but for the pages a
            # reclaimer held (and their VA pages and SECS) until the final release;
            # only the backing it holds is checked
            backed = encl.memcg >= 0
            ids = encl.memcg[backed]
            memcg_bytes += np.bincount(ids.astype(np.int64), minlength=len(host.memcgs)) * 4224
            if encl.secs_va >= 0:
                memcg_bytes[encl.secs_memcg] += 4224
            continue
        pages = encl.epc[res]
        if np.any(kind[pages] != KIND_ENCL) or np.any(owner_e[pages] != encl.id):
            _fail(f"{encl!r}: EPC page owners disagree")
        if np.any(owner_i[pages] != res):
            _fail(f"{encl!r}: EPC page owner index disagrees")
        if np.any((encl.desc[res] & DESC_PRESENT) == 0):
            _fail(f"{encl!r}: a resident page not in page_array")
        evicted = np.flatnonzero(encl.va >= 0)
        if np.any(encl.epc[evicted] >= 0):
            _fail(f"{encl!r}: a page both resident and evicted")
        if np.any((encl.desc[evicted] & DESC_BEING_RECLAIMED) != 0):
            _fail(f"{encl!r}: an evicted page still BEING_RECLAIMED")
        nslots = sum(vp.used for vp in encl.va_all if vp.epc >= 0)
        nev = len(evicted) + (1 if encl.secs_va >= 0 else 0)
        if nslots != nev:
            _fail(f"{encl!r}: VA slots in use {nslots} != evicted pages {nev}")
        if encl.secs_child_cnt != len(res):
            _fail(f"{encl!r}: secs_child_cnt {encl.secs_child_cnt} != resident {len(res)}")
        if (encl.secs_epc >= 0) == (encl.secs_va >= 0) and encl.size:
            _fail(f"{encl!r}: SECS neither (or both) resident and evicted")
        if encl.secs_epc >= 0 and kind[encl.secs_epc] != KIND_SECS:
            _fail(f"{encl!r}: SECS page of the wrong kind")
        for vp in encl.va_all:
            if vp.epc >= 0 and kind[vp.epc] != KIND_VA:
                _fail(f"{encl!r}: VA page of the wrong kind")
        if len(encl.va_pages) != sum(1 for vp in encl.va_all if vp.epc >= 0):
            _fail(f"{encl!r}: va_pages list disagrees")
        if encl.page_cnt > len(encl.va_pages) * SGX_VA_SLOT_COUNT:
            _fail(f"{encl!r}: page_cnt {encl.page_cnt} beyond VA capacity")
        if np.any(encl.memcg[evicted] < 0):
            _fail(f"{encl!r}: an evicted page without a backing memcg")
        # backing exists for evicted pages and for pages being reclaimed (phase 2 on)
        backed = encl.memcg >= 0
        if np.any(backed & (encl.va < 0) & ((encl.desc & DESC_BEING_RECLAIMED) == 0)):
            _fail(f"{encl!r}: a resident page not being reclaimed holds backing")
        ids = encl.memcg[backed]
        memcg_bytes += np.bincount(ids.astype(np.int64), minlength=len(host.memcgs)) * 4224
        if encl.secs_va >= 0:
            memcg_bytes[encl.secs_memcg] += 4224
        if encl.refcount < 1 + encl.nr_live_mms - 1 and not encl.released:
            _fail(f"{encl!r}: refcount {encl.refcount} too low")
    for v in host.vepcs:
        pages = v.epc[v.epc >= 0]
        if np.any(kind[pages] != KIND_VEPC):
            _fail("vEPC page of the wrong kind")
    # memcg: hierarchical sums of the backing recorded per page
    expect = memcg_bytes.copy()
    for m in reversed(host.memcgs):
        if m.parent is not None:
            expect[m.parent.id] += expect[m.id]
    for m in host.memcgs:
        if m.usage != int(expect[m.id]):
            _fail(f"{m!r}: usage {m.usage} != backing charged {int(expect[m.id])}")
