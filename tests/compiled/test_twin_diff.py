"""Differential tests of the small twins: each compiled function (a numba dispatcher,
called from Python) against its reference twin in epcsim.kernel on small random
states, so that a divergence points at one function (epcsim.compiled.twins)."""

from __future__ import annotations

from collections import OrderedDict
from types import SimpleNamespace

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from epcsim.compiled import encl as cencl
from epcsim.compiled import epc as cepc
from epcsim.compiled import epc_cgroup as ccg
from epcsim.compiled import lru as clru
from epcsim.compiled import misc as cmisc
from epcsim.compiled import reclaim as creclaim
from epcsim.compiled.layout import (
    CG_CURSOR,
    CG_EVENTS,
    CG_EVENTS_LOCAL,
    CG_LIMIT,
    CG_LRU_HEAD,
    CG_LRU_NR,
    CG_LRU_TAIL,
    CG_MAXPAGES,
    CG_MEMD,
    CG_NR_AGED,
    CG_NR_FREED,
    CG_PARENT,
    CG_PEAK,
    CG_PRE,
    CG_PREPOS,
    CG_REFCNT,
    CG_SUBEND,
    CG_USAGE,
    DESC_ACCESSED,
    E_DESC,
    EN_BACKING,
    EN_EMIX,
    EN_MEMCG,
    EN_OFF,
    EN_REFCOUNT,
    EN_VA_HEAD,
    EN_VA_TAIL,
    EN_VAOFF,
    ENOMEM,
    NCGF,
    NENF,
    NODE_W,
    NRF,
    NS,
    NVAF,
    P_NEXT,
    P_PREV,
    PAGE,
    R_C,
    R_ES,
    R_GS,
    R_MEMCG,
    R_NP,
    R_PAGES,
    S_CUR_NID,
    S_ERR,
    S_NNODES,
    S_NODES,
    S_NR_FREE,
    S_NR_LRU,
    S_SECT,
    VA_BITS,
    VA_NEXT,
    VA_OPEN,
    VA_USED,
    implied_backing_memcgs,
    pack,
)
from epcsim.kernel import Host, drive, ioctl
from epcsim.kernel import encl as kencl
from epcsim.kernel import epc as kepc
from epcsim.kernel import epc_cgroup as kcg
from epcsim.kernel import misc as kmisc
from epcsim.kernel import reclaim as kreclaim
from epcsim.kernel.constants import SGX_VA_SLOT_COUNT
from epcsim.kernel.lru import EpcList

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)  # fmt: skip


# --- VA slots: sgx_alloc_va_slot / sgx_free_va_slot -----------------------------------


def _va_state(EN, VA) -> tuple[list[int], list[int], list[int]]:
    """va_pages order, each VA page's bits (as one int) and used count."""
    order = []
    no = int(EN[EN_VA_HEAD, 0])
    while no >= 0:
        order.append(no)
        no = int(VA[no, VA_NEXT])
    bits = [
        sum((int(VA[r, VA_BITS + w]) & (2**64 - 1)) << (64 * w) for w in range(8))
        for r in range(VA.shape[0])
    ]
    return order, bits, [int(u) for u in VA[:, VA_USED]]


@SETTINGS
@given(
    nva=st.integers(1, 3),
    fill=st.integers(0, 3 * SGX_VA_SLOT_COUNT),
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 10**6)), max_size=300),
)
def test_va_slots_match_the_reference(nva: int, fill: int, ops: list[tuple[bool, int]]) -> None:
    """*fill* allocations, then allocations and frees of random held slots."""
    ref = SimpleNamespace(id=0, va_pages=OrderedDict(), va_all=[])
    EN = np.zeros((NENF, 1), np.int64)
    VA = np.full((nva, NVAF), -1, np.int64)
    S = np.zeros(NS, np.int64)
    EN[EN_VAOFF, 0] = 0
    EN[EN_VA_HEAD, 0] = EN[EN_VA_TAIL, 0] = -1
    for no in range(nva):  # sgx_encl_grow(): each new VA page at the head
        vp = kencl.SgxVaPage(no, 100 + no)
        ref.va_all.append(vp)
        ref.va_pages[no] = vp
        ref.va_pages.move_to_end(no, last=False)
        VA[no, VA_USED] = 0
        VA[no, VA_OPEN] = 0xFF  # every word has a free slot (sgx_encl_grow_va_page)
        VA[no, VA_BITS : VA_BITS + 8] = 0
        cencl.va_pages_add_head(EN, VA, 0, no)
    held: list[int] = []
    for alloc, pick in [(True, 0)] * fill + ops:
        if alloc and len(held) < nva * SGX_VA_SLOT_COUNT:
            want = kencl.sgx_alloc_va_slot(ref)
            got = cencl.sgx_alloc_va_slot(S, EN, VA, 0)
            assert got == want and S[S_ERR] == 0
            held.append(want)
        elif held:
            slot = held.pop(pick % len(held))
            kencl.sgx_free_va_slot(ref, slot)
            cencl.sgx_free_va_slot(EN, VA, 0, np.int32(slot))  # E32 holds slot ids
        order, bits, used = _va_state(EN, VA)
        assert order == list(ref.va_pages)
        assert bits == [vp.bits for vp in ref.va_all]
        assert used == [vp.used for vp in ref.va_all]
        # VA_OPEN (derived): bit w set exactly while word w has a free slot
        open_words = [sum(1 << w for w in range(8) if VA[r, VA_BITS + w] != -1) for r in range(nva)]
        assert [int(x) for x in VA[:, VA_OPEN]] == open_words


# --- LRU: list_add_tail / list_del_init -------------------------------------------------


@SETTINGS
@given(st.lists(st.integers(0, 15), max_size=200))
def test_lru_add_and_del_match_the_reference(ops: list[int]) -> None:
    n = 16
    prev = np.full(n, -7, np.int32)
    nxt = np.full(n, -7, np.int32)
    ref = EpcList(memoryview(prev), memoryview(nxt))
    P32 = np.full((n, 4), -7, np.int32)
    CG = np.zeros((NCGF, 1), np.int64)
    CG[CG_LRU_HEAD, 0] = CG[CG_LRU_TAIL, 0] = -1
    on: set[int] = set()
    for i in ops:
        if i in on:
            ref.del_init(i)
            clru.list_del_init(CG, P32, 0, i)
            on.discard(i)
        else:
            ref.add_tail(i)
            clru.list_add_tail(CG, P32, 0, i)
            on.add(i)
        assert (CG[CG_LRU_HEAD, 0], CG[CG_LRU_TAIL, 0], CG[CG_LRU_NR, 0]) == (
            ref.head,
            ref.tail,
            ref.nr,
        )
        assert P32[:, P_PREV].tolist() == prev.tolist()
        assert P32[:, P_NEXT].tolist() == nxt.tolist()


# --- the allocator: __sgx_alloc_epc_page / the free to a node (lazy free lists) ---------


@SETTINGS
@given(
    sections=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 50)), max_size=80),
)
def test_alloc_and_free_match_the_reference(sections: list[int], ops) -> None:
    """Allocations from any node and frees of held pages: the same pages, the same
    free lists (pristine range and freed pages) and byte-identical pool arrays, the
    pages never allocated left unwritten in both."""
    h = Host(sections=[n * PAGE for n in sections])
    pool = h.epc
    P32, P8, PCG = pool.i32.copy(), pool.u8.copy(), pool.cg.copy()
    S = np.zeros(NS, np.int64)
    S[S_NNODES] = len(sections)
    S[S_SECT : S_SECT + len(sections)] = pool.section_start
    for k, f in enumerate(pool.free_lists):
        S[S_NODES + NODE_W * k : S_NODES + NODE_W * (k + 1)] = (f.head, f.tail, f.nr, f.hwm, f.end)
    S[S_NR_FREE] = pool.nr_free_pages
    held: list[int] = []
    for alloc, a in ops:
        if alloc:
            nid = a % 5
            S[S_CUR_NID] = nid
            want = kepc._sgx_alloc_epc_page(pool, nid)
            got = cepc._sgx_alloc_epc_page(S, P32, P8, PCG)
            assert got == want
            if want >= 0:
                held.append(want)
        elif held:
            page = held.pop(a % len(held))
            kepc._sgx_free_epc_page_to_node(pool, page)
            cepc._sgx_free_epc_page_to_node(S, P32, P8, PCG, page)
        for k, f in enumerate(pool.free_lists):
            b = S_NODES + NODE_W * k
            assert S[b : b + NODE_W].tolist() == [f.head, f.tail, f.nr, f.hwm, f.end]
        assert S[S_NR_FREE] == pool.nr_free_pages
        assert P32.tobytes() == pool.i32.tobytes()
        assert P8.tobytes() == pool.u8.tobytes() and PCG.tobytes() == pool.cg.tobytes()


# --- cgroup trees: charge / uncharge, should_reclaim -------------------------------------

CAPACITY = 64 * PAGE


@st.composite
def trees(draw):  # noqa: ANN001, ANN201
    """A misc cgroup tree (parents before children) with limits in pages."""
    n = draw(st.integers(1, 6))
    parents = [-1] + [draw(st.integers(0, i - 1)) for i in range(1, n)]
    maxes = [draw(st.one_of(st.none(), st.integers(0, 80))) for _ in range(n)]
    maxes[0] = None  # the root has no max file
    return parents, maxes


def _build(parents: list[int], maxes: list[int | None]):  # noqa: ANN202
    """The reference tree (MiscCg) and the compiled CG table of it (as the compiled
    engine packs it: limits, parents, preorder ranges)."""
    ctrl = kmisc.MiscController()
    ctrl.misc_cg_set_capacity(CAPACITY)
    cgs = [ctrl.root]
    for i in range(1, len(parents)):
        cgs.append(ctrl.css_alloc(cgs[parents[i]], None))
    for cg, m in zip(cgs, maxes, strict=True):
        if m is not None:
            cg.max = m * PAGE
    n = len(cgs)
    CG = np.zeros((NCGF, n), np.int64)
    pre: list[int] = []

    def walk(i: int) -> None:
        CG[CG_PREPOS, i] = len(pre)
        pre.append(i)
        for j in range(n):
            if parents[j] == i:
                walk(j)
        CG[CG_SUBEND, i] = len(pre)

    walk(0)
    CG[CG_PRE, :n] = pre
    for i, cg in enumerate(cgs):
        CG[CG_PARENT, i] = parents[i]
        CG[CG_LIMIT, i] = min(cg.max, CAPACITY)
        CG[CG_REFCNT, i] = cg.refcnt
    return cgs, CG


def _same_counters(cgs, CG) -> None:  # noqa: ANN001
    for i, cg in enumerate(cgs):
        got = [int(CG[f, i]) for f in (CG_USAGE, CG_PEAK, CG_EVENTS, CG_EVENTS_LOCAL)]
        assert got == [cg.usage, cg.peak, cg.events, cg.events_local], i


@SETTINGS
@given(trees(), st.lists(st.tuples(st.booleans(), st.integers(0, 5)), max_size=120))
def test_charge_and_uncharge_match_the_reference(tree, ops) -> None:  # noqa: ANN001
    """sgx_cgroup_try_charge() (with every LRU empty: a failed charge is -ENOMEM) and
    misc_cg_uncharge() against misc_cg_try_charge() / misc_cg_uncharge()."""
    parents, maxes = tree
    cgs, CG = _build(parents, maxes)
    S = np.zeros(NS, np.int64)
    S[S_NR_LRU] = 0
    charged: list[int] = []
    for charge, pick in ops:
        c = pick % len(cgs)
        if charge:
            want = kmisc.misc_cg_try_charge(cgs[c], PAGE)
            CG[CG_REFCNT, c] += 1  # the caller's reference (sgx_get_current_cg())
            got = ccg.sgx_cgroup_try_charge(S, CG, c)
            assert (got == 0) == (want == 0)
            if got == 0:
                charged.append(c)
            else:
                assert got == -ENOMEM
                CG[CG_REFCNT, c] += 1  # dropped by the failed charge: keep it level
        elif charged:
            c = charged.pop(pick % len(charged))
            kmisc.misc_cg_uncharge(cgs[c], PAGE)
            cmisc.misc_cg_uncharge(CG, c, PAGE)
        _same_counters(cgs, CG)


@SETTINGS
@given(
    trees(),
    st.lists(st.integers(0, 70), min_size=6, max_size=6),
    st.lists(st.integers(0, 3), min_size=6, max_size=6),
)
def test_should_reclaim_matches_the_reference(tree, usage, lru_nr) -> None:  # noqa: ANN001
    parents, maxes = tree
    cgs, CG = _build(parents, maxes)
    n = len(cgs)
    S = np.zeros(NS, np.int64)
    S[S_NR_LRU] = sum(lru_nr[:n])
    host = SimpleNamespace(nr_lru_pages=int(S[S_NR_LRU]), policy=None)  # v16: no policy
    sgx_cgs = []
    for i, cg in enumerate(cgs):
        cg.usage = usage[i] * PAGE
        CG[CG_USAGE, i] = cg.usage
        CG[CG_LRU_NR, i] = lru_nr[i]
        cg.priv = SimpleNamespace(lru=SimpleNamespace(nr=lru_nr[i]))
        s = SimpleNamespace(cg=cg)
        sgx_cgs.append(s)
        CG[CG_MAXPAGES, i] = min(kcg.sgx_cgroup_max_pages_to_root(s), 2**63 - 1)
    for i in range(n):
        want = kcg.sgx_cgroup_should_reclaim(host, sgx_cgs[i])
        assert bool(ccg.sgx_cgroup_should_reclaim(S, CG, i)) == want, i
        assert bool(ccg.sgx_cgroup_lru_empty(S, CG, i)) == kcg.sgx_cgroup_lru_empty(host, cgs[i]), i


# --- the stuck rule's watch: stuck_watch -----------------------------------------------


@SETTINGS
@given(
    trees(),
    st.lists(st.integers(0, 90), min_size=6, max_size=6),
    st.lists(st.integers(0, 1000), min_size=6, max_size=6),
)
def test_stuck_watch_matches_the_reference(tree, usage, counts) -> None:  # noqa: ANN001
    """stuck_watch() against the reference on random trees, usages (some at or over their
    limits) and freed / aged counts: the cgroup whose limit refuses one more page and
    its count, from every cgroup."""
    parents, maxes = tree
    cgs, CG = _build(parents, maxes)
    for i, cg in enumerate(cgs):
        cg.usage = usage[i] * PAGE
        cg.priv = SimpleNamespace(id=i, nr_freed=counts[i], nr_aged=3 * counts[i])
        CG[CG_USAGE, i] = cg.usage
        CG[CG_NR_FREED, i] = counts[i]
        CG[CG_NR_AGED, i] = 3 * counts[i]
    for i in range(len(cgs)):
        want = kepc.stuck_watch(cgs[i])
        assert tuple(int(x) for x in cepc.stuck_watch(CG, i)) == want, i
        if want[0] >= 0:  # the first level on the way up where a page does not fit
            b = cgs[want[0]]
            assert b.usage + PAGE > min(b.max, CAPACITY)


# --- the cursor step: sgx_cgroup_next_get -----------------------------------------------


@SETTINGS
@given(
    trees(),
    st.lists(st.integers(0, 5), min_size=6, max_size=6),
    st.lists(st.integers(0, 5), max_size=60),
)
def test_next_get_matches_the_reference(tree, cursors, roots) -> None:  # noqa: ANN001
    """sgx_cgroup_next_get() against the reference (the v17 preorder walk of
    sgx_cgroup_next_desc_pre()) on every cgroup online (the twin's assumption): random
    starting cursors in each subtree, then steps from random roots; the cgroup returned,
    every cursor and every css reference count must agree after each step."""
    parents, maxes = tree
    cgs, CG = _build(parents, maxes)
    n = len(cgs)
    sgx = [kcg.SgxCgroup(i, cg, None) for i, cg in enumerate(cgs)]  # type: ignore[arg-type]
    for s in sgx:
        s.cg.priv = s
    for i, s in enumerate(sgx):  # a cursor anywhere in subtree(i)
        lo, hi = int(CG[CG_PREPOS, i]), int(CG[CG_SUBEND, i])
        p = lo + cursors[i] % (hi - lo)
        CG[CG_CURSOR, i] = p
        s.next_cg = sgx[int(CG[CG_PRE, p])]
    for pick in roots:
        root = pick % n
        want = kcg.sgx_cgroup_next_get(None, sgx[root])  # type: ignore[arg-type]
        got = ccg.sgx_cgroup_next_get(CG, root)
        assert got == want.id
        assert [int(CG[CG_PRE, CG[CG_CURSOR, i]]) for i in range(n)] == [s.next_cg.id for s in sgx]
        assert CG[CG_REFCNT, :n].tolist() == [cg.refcnt for cg in cgs]


# --- the age test: sgx_reclaimer_age ------------------------------------------------------


@st.composite
def lru_batches(draw):  # noqa: ANN001, ANN201
    """Enclaves of tasks in two memcgs under one misc cgroup, pages EADDed in
    interleaved runs (so the LRU mixes enclaves), each page's accessed bit and each
    enclave's mapping (live mm or none)."""
    nencl = draw(st.integers(1, 3))
    memcg = [draw(st.integers(0, 1)) for _ in range(nencl)]
    adds = draw(st.lists(st.tuples(st.integers(0, nencl - 1), st.integers(1, 6)), max_size=8))
    npages = sum(k for _, k in adds)
    accessed = draw(st.lists(st.booleans(), min_size=npages, max_size=npages))
    live = [draw(st.booleans()) for _ in range(nencl)]
    return memcg, adds, accessed, live


#: the reclaimer's charge mm: None (ksgxd, a worker) or the task of enclave k (an EADD
#: build's synchronous reclaim: the backing goes to that task's memcg, R_MEMCG)
chargers = st.one_of(st.none(), st.integers(0, 2))


def _age_host(memcg, adds, accessed, live):  # noqa: ANN001, ANN202
    """The reference Host: /a (misc) with /a/x and /a/y (memory only), one task and
    enclave per entry of *memcg*, the pages of *adds*; returns (host, /a, enclaves)."""
    h = Host("16MiB")
    h.fs.write("/cgroup.subtree_control", "+misc +memory")
    h.fs.mkdir("/a")
    h.fs.write("/a/cgroup.subtree_control", "+memory")
    h.fs.mkdir("/a/x")
    h.fs.mkdir("/a/y")
    es = []
    for m in memcg:
        t = h.spawn(("/a/x", "/a/y")[m])
        e = ioctl.sgx_open(h, t)
        drive(ioctl.ioc_enclave_create(h, t, e, 1 << 20))
        es.append((t, e, [0]))
    for k, n in adds:
        t, e, nxt = es[k]
        drive(ioctl.ioc_enclave_add_pages(h, t, e, nxt[0] * PAGE, n * PAGE))
        nxt[0] += n
    encls = [e for _, e, _ in es]
    a = h.sgx_cgroup_of("/a")
    for page, acc in zip(a.lru.to_list(), accessed, strict=True):
        e = encls[h.epc.owner_encl[page]]
        if acc:
            e.desc[h.epc.owner_idx[page]] |= DESC_ACCESSED
    for e, lv in zip(encls, live, strict=True):
        if not lv:  # no live mm (only the age test reads it here)
            e.nr_live_mms = 0
    return h, a, encls


@SETTINGS
@given(lru_batches(), st.booleans(), chargers)
def test_reclaimer_age_matches_the_reference(batch, keep, charger) -> None:  # noqa: ANN001
    """sgx_reclaimer_age() against phase 2 of the reference's sgx_reclaim_pages()
    (_sgx_reclaim_age_and_back(), charge mm None -- ksgxd and the workers -- or a
    build's task's) on a batch the reference isolated (phase 1,
    _sgx_reclaim_isolate()), the compiled function called alone on tables packed from
    that Host by the compiled engine's own declaration (layout.pack), no memory.max
    (the twin's assumption): the pages kept (in order), the LRU (links, head, tail,
    counts), descriptor flags, backing memcgs, enclave references, backing bytes and
    memcg charges must agree.  The backing memcgs: EMEM where it is kept (EN_EMIX 1:
    packed so, *keep*, or from the first page charged to another memcg than the
    enclave's, emem_keep()), else the ones EN_EMIX 0 implies
    (layout.implied_backing_memcgs(), as write-back rebuilds them)."""
    h, a, encls = _age_host(*batch)
    if charger is not None:
        charger %= len(encls)
    task = None if charger is None else h.tasks[encls[charger].mm_list[0]]
    chunk = kreclaim._sgx_reclaim_isolate(h, a)
    # the compiled tables, packed from the Host after phase 1
    S = np.zeros(NS, np.int64)
    pack("S", S, h)
    CG = np.zeros((NCGF, max(len(h.sgx_cgroups), len(h.memcgs))), np.int64)
    for s in h.sgx_cgroups:
        if s is not None:
            pack("CG", CG[:, s.id], s)
            # the tree, as the engine lays it out (young pages are counted up it)
            CG[CG_PARENT, s.id] = s.cg.parent.priv.id if s.cg.parent is not None else -1
    EN = np.zeros((NENF, len(encls)), np.int64)
    off = np.cumsum([0] + [e.npages for e in encls]).tolist()
    for e in encls:
        pack("EN", EN[:, e.id], e)
        EN[EN_MEMCG, e.id] = kencl.sgx_encl_backing_memcg(h, e, None).id
        EN[EN_OFF, e.id] = off[e.id]
        # the engine's packing rule: EMEM may go unkept where EN_EMIX 0 implies it
        implied = implied_backing_memcgs(e.i32, e.u8, EN[EN_MEMCG, e.id])
        assert np.array_equal(e.memcg, implied), e.id
        EN[EN_EMIX, e.id] = int(keep)
    E32 = np.concatenate([e.i32 for e in encls])
    E8 = np.concatenate([e.u8 for e in encls], axis=1)
    EMEM = np.concatenate([e.memcg for e in encls])
    P32, P8, PCG = h.epc.i32.copy(), h.epc.u8.copy(), h.epc.cg.copy()
    VA = np.full((1, NVAF), -1, np.int64)
    HB = np.zeros(E32.shape[0] // 64 + 2, np.int64)
    R = np.zeros((NRF, 1), np.int64)
    R[R_C, 0], R[R_NP, 0] = a.id, len(chunk)
    if task is not None:  # as the engine packs a build (R_MEMCG: its memcg id + 1)
        R[R_MEMCG, 0] = 1 + kencl.sgx_encl_backing_memcg(h, encls[charger], task).id
    for k, page in enumerate(chunk):
        e, idx = int(h.epc.owner_encl[page]), int(h.epc.owner_idx[page])
        R[R_PAGES + k, 0], R[R_ES + k, 0], R[R_GS + k, 0] = page, e, off[e] + idx
    backing0 = [(e.backing_bytes, e.owner.backing_bytes) for e in encls]
    usage0 = [m.usage for m in h.memcgs]

    want = kreclaim._sgx_reclaim_age_and_back(h, a, chunk, task)
    got = creclaim.sgx_reclaimer_age(S, CG, EN, R, VA, P32, P8, PCG, E32, E8, EMEM, HB, 0)

    assert got == len(want) == R[R_NP, 0]
    assert R[R_PAGES : R_PAGES + got, 0].tolist() == want
    assert R[R_ES : R_ES + got, 0].tolist() == [h.epc.owner_encl[p] for p in want]
    assert (CG[CG_LRU_HEAD, a.id], CG[CG_LRU_TAIL, a.id], CG[CG_LRU_NR, a.id]) == (
        a.lru.head,
        a.lru.tail,
        a.lru.nr,
    )
    assert P32[:, P_PREV].tolist() == h.epc.prev.tolist()
    assert P32[:, P_NEXT].tolist() == h.epc.next.tolist()
    assert S[S_NR_LRU] == h.nr_lru_pages
    for s in h.sgx_cgroups:  # young pages counted up the tree (the stuck rule)
        if s is not None:
            assert CG[CG_NR_AGED, s.id] == s.nr_aged, s.id
    for e in encls:
        rows = slice(off[e.id], off[e.id + 1])
        assert E8[E_DESC, rows].tolist() == e.desc.tolist(), e.id
        # kept from a page charged to another memcg on (and only then)
        other = any(
            h.epc.owner_encl[p] == e.id and R[R_MEMCG, 0] - 1 not in (-1, EN[EN_MEMCG, e.id])
            for p in want
        )
        assert EN[EN_EMIX, e.id] == int(keep or other), e.id
        event(f"EMEM kept from this batch on: {other and not keep}")
        if EN[EN_EMIX, e.id]:
            assert EMEM[rows].tolist() == e.memcg.tolist(), e.id
        else:
            memcgs = implied_backing_memcgs(E32[rows], E8[:, rows], EN[EN_MEMCG, e.id])
            assert memcgs.tolist() == e.memcg.tolist(), e.id
        assert EN[EN_REFCOUNT, e.id] == e.refcount, e.id
        d = int(EN[EN_BACKING, e.id])
        assert (backing0[e.id][0] + d, backing0[e.id][1] + d) == (
            e.backing_bytes,
            e.owner.backing_bytes,
        )
    for m, u0 in zip(h.memcgs, usage0, strict=True):  # CG_MEMD: own charges, hierarchical
        below = [c for c in h.memcgs if _is_under(c, m)]
        assert u0 + sum(int(CG[CG_MEMD, c.id]) for c in below) == m.usage, m.id


def _is_under(c, m) -> bool:  # noqa: ANN001
    while c is not None:
        if c is m:
            return True
        c = c.parent
    return False
