"""sgx_encl_release()'s bulk page loop leaves exactly the state of the page-by-page loop,
also when the LRUs hold other enclaves' pages (EpcList.del_init_many)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from epcsim.kernel import Host, check_invariants, drive, ioctl, task_exit
from epcsim.kernel import encl as encl_mod
from epcsim.kernel.constants import PAGE_SIZE
from epcsim.kernel.lru import EpcList
from epcsim.kernel.reclaim import sgx_reclaim_pages


def _state(h: Host) -> dict:
    pool = h.epc
    out = {
        "i32": pool.i32.copy(),
        "u8": pool.u8.copy(),
        "cg": pool.cg.copy(),
        "free": [(f.head, f.tail, f.nr) for f in pool.free_lists],
        "nr_free": pool.nr_free_pages,
        "nr_lru": h.nr_lru_pages,
        "encls": list(h.encls_count),
        "cgroups": [
            (s.lru.head, s.lru.tail, s.lru.nr, s.nr_pages, s.cg.usage, s.cg.refcnt)
            for s in h.sgx_cgroups
            if s is not None
        ],
        "memcg": [m.usage for m in h.memcgs],
        "lrus": [s.lru.to_list() for s in h.sgx_cgroups if s is not None],
        "progress": [
            (s.cg.priv.nr_freed, s.cg.priv.nr_aged) for s in h.sgx_cgroups if s is not None
        ],
        "encl_arrays": [
            (e.epc.tobytes(), e.va.tobytes(), e.desc.tobytes(), e.secs_child_cnt, e.secs_epc)
            for e in h.encls
            if e is not None
        ],
    }
    return out


def _assert_same(loop: dict, bulk: dict) -> None:
    assert loop.keys() == bulk.keys()
    for k in loop:
        if isinstance(loop[k], np.ndarray):
            assert loop[k].tobytes() == bulk[k].tobytes(), k
        else:
            assert loop[k] == bulk[k], k


def _run(bulk: bool, monkeypatch, *, npages: int, epc: str, other: bool, evict: int = 3) -> dict:
    if not bulk:
        monkeypatch.setattr(encl_mod, "_sgx_encl_release_pages_bulk", lambda *a: False)
    h = Host(epc)
    h.fs.write("/cgroup.subtree_control", "+misc +memory")
    h.fs.mkdir("/a")
    t = h.spawn("/a")
    e = ioctl.sgx_open(h, t)
    drive(ioctl.ioc_enclave_create(h, t, e, 1 << 22))
    drive(ioctl.ioc_enclave_add_pages(h, t, e, 0, npages * PAGE_SIZE))
    ioctl.ioc_enclave_init(h, t, e)
    for _ in range(evict):  # some pages evicted, some rotated
        drive(sgx_reclaim_pages(h, h.sgx_cgroup_of("/a"), None))
    drive(ioctl.encl_access(h, t, e, np.arange(npages)[::-3]))
    if other:  # a second enclave in the same cgroup: its pages stay on the LRU
        t2 = h.spawn("/a")
        e2 = ioctl.sgx_open(h, t2)
        drive(ioctl.ioc_enclave_create(h, t2, e2, 1 << 20))
        drive(ioctl.ioc_enclave_add_pages(h, t2, e2, 0, 8 * PAGE_SIZE))
    task_exit(h, t)
    check_invariants(h)
    return _state(h)


@pytest.mark.parametrize(
    "npages, epc, other",
    [(300, "4MiB", False), (100, "1MiB", True), (900, "8MiB", False)],
)
def test_bulk_release_equals_page_loop(monkeypatch, npages, epc, other) -> None:
    with monkeypatch.context() as m:
        loop = _run(False, m, npages=npages, epc=epc, other=other)
    bulk = _run(True, monkeypatch, npages=npages, epc=epc, other=other)
    _assert_same(loop, bulk)


@pytest.mark.parametrize("other", [False, True])
def test_bulk_release_is_used(monkeypatch, other) -> None:
    """The bulk path runs (returns True), also with another enclave's pages on the LRU."""
    done = []
    real = encl_mod._sgx_encl_release_pages_bulk
    monkeypatch.setattr(
        encl_mod, "_sgx_encl_release_pages_bulk", lambda *a: done.append(real(*a)) or done[-1]
    )
    _run(True, monkeypatch, npages=300, epc="4MiB", other=other)
    assert done == [True]


# --- EpcList.del_init_many: the state of single del_init() calls ------------------------


@settings(max_examples=300, deadline=None)
@given(data=st.data(), size=st.integers(1, 120))
def test_del_init_many_equals_del_init(data, size) -> None:
    """Removing any subset of a list's entries (in runs or scattered, at the head, the
    tail or all of it) leaves the links, head, tail and length that del_init() page by
    page leaves; pages on no list or on another list are untouched."""
    n = size + 10
    on = data.draw(st.permutations(range(n)).map(lambda p: p[:size]))
    other = [i for i in range(n) if i not in on][:5]  # a second list over the same arrays
    remove = data.draw(st.lists(st.sampled_from(on), unique=True))
    order = data.draw(st.permutations(remove))  # the order of the single calls

    def build() -> tuple[np.ndarray, EpcList, EpcList]:
        links = np.arange(2 * n, dtype=np.int32).reshape(n, 2) % n  # self-linked
        prev, next_ = links.T
        lists = []
        for members in (on, other):
            lst = EpcList(memoryview(prev), memoryview(next_))
            for i in members:
                lst.add_tail(i)
            lists.append(lst)
        return links, lists[0], lists[1]

    links_a, a, a2 = build()
    for i in order:
        a.del_init(i)
    links_b, b, b2 = build()
    b.del_init_many(np.array(remove, dtype=np.int32))
    assert links_a.tobytes() == links_b.tobytes()
    assert (a.head, a.tail, a.nr) == (b.head, b.tail, b.nr)
    assert (a2.head, a2.tail, a2.nr) == (b2.head, b2.tail, b2.nr)
    assert b.to_list() == [i for i in on if i not in remove]


@pytest.mark.parametrize("size", [16, 40])
def test_del_init_many_of_the_whole_list(size: int) -> None:
    """Every entry removed (in any order): the list is empty and each page self-linked,
    as page by page; a second list over the same arrays is untouched."""
    n = size + 3
    links = np.arange(2 * n, dtype=np.int32).reshape(n, 2) % n
    prev, next_ = links.T
    a = EpcList(memoryview(prev), memoryview(next_))
    other = EpcList(memoryview(prev), memoryview(next_))
    for i in range(size):
        a.add_tail((7 * i) % size)
    for i in range(size, n):
        other.add_tail(i)
    keep = links.copy()
    a.del_init_many(np.array([(3 * i + 1) % size for i in range(size)], dtype=np.int32))
    assert (a.head, a.tail, a.nr, a.to_list()) == (-1, -1, 0, [])
    assert links[:size].tolist() == [[i, i] for i in range(size)]
    assert links[size:].tolist() == keep[size:].tolist()
    assert other.to_list() == list(range(size, n))


# --- releases with shared cgroups, random LRU orders and evictions -----------------------

_encl_st = st.tuples(st.integers(0, 2), st.integers(1, 160) | st.integers(500, 1100))
_op_st = st.one_of(
    st.tuples(st.just("reclaim"), st.integers(0, 2), st.integers(1, 40)),
    st.tuples(st.just("access"), st.integers(0, 5), st.integers(0, 2**16)),
    st.tuples(st.just("exit"), st.integers(0, 5), st.integers(0, 0)),
    st.tuples(st.just("move"), st.integers(0, 5), st.integers(0, 2)),
    st.tuples(st.just("evict_move_fault"), st.integers(0, 5), st.integers(0, 59)),
)


def _cgroups_state(sgx_cgs: list) -> list:
    """Every sgx_cgroup created (also the freed ones): charges, css references, the
    cursor, the children order of its css."""
    return [
        (
            s.cg.usage,
            s.cg.refcnt,
            s.cg.freed,
            s.nr_pages,
            s.nr_freed,
            s.next_cg.id,
            s.lru.to_list(),
            [c.priv.id for c in s.cg.children],
        )
        for s in sgx_cgs
    ]


def _scenario(bulk: bool, cgroups: int, encls: list, ops: list, rmdir: bool) -> dict:
    """Build the host from the drawn parameters (deterministic: built twice, once per
    path, since a Host does not deep-copy), run *ops*, then (*rmdir*: every task moved
    out and the cgroups removed, their css held by the pages charged there) exit every
    task; the state after the ops and after each exit."""
    with pytest.MonkeyPatch.context() as m:
        if bulk:  # bulk wherever possible
            m.setattr(encl_mod, "_BULK_MIN_PAGES", 0)
            m.setattr(encl_mod, "_BULK_MIN_VA_PAGES", 0)
        else:
            m.setattr(encl_mod, "_sgx_encl_release_pages_bulk", lambda *a: False)
            m.setattr(encl_mod, "_sgx_encl_free_va_pages_bulk", lambda *a: None)
        h = Host("32MiB")
        h.fs.write("/cgroup.subtree_control", "+misc +memory")
        h.fs.mkdir("/home")
        for c in range(cgroups):
            h.fs.mkdir(f"/c{c}")
        sgx_cgs = [s for s in h.sgx_cgroups if s is not None]
        tasks = []
        for cg, npages in encls:
            t = h.spawn(f"/c{cg % cgroups}")
            e = ioctl.sgx_open(h, t)
            drive(ioctl.ioc_enclave_create(h, t, e, 1 << 23))
            drive(ioctl.ioc_enclave_add_pages(h, t, e, 0, npages * PAGE_SIZE))
            ioctl.ioc_enclave_init(h, t, e)
            tasks.append((t, e, npages))
        for op, a, b in ops:
            if op == "reclaim":  # b passes: pages aged, rotated, evicted
                for _ in range(b):
                    drive(sgx_reclaim_pages(h, h.sgx_cgroup_of(f"/c{a % cgroups}"), None))
                continue
            t, e, npages = tasks[a % len(tasks)]
            if t.exited:
                continue
            if op == "exit":
                task_exit(h, t)
            elif op == "move":  # later faults charge the new cgroup
                h.fs.write(f"/c{b % cgroups}/cgroup.procs", f"{t.pid}\n")
            elif op == "evict_move_fault":  # the enclave's pages in two cgroups
                for _ in range(1 + b // 3):  # up to 20 passes of 16 pages
                    drive(sgx_reclaim_pages(h, t.cgroup.effective_misc().priv, None))
                h.fs.write(f"/c{b % cgroups}/cgroup.procs", f"{t.pid}\n")
                drive(ioctl.encl_access(h, t, e, np.arange(npages), max_retries=20))
            else:
                rng = np.random.default_rng(b)
                idx = rng.choice(npages, size=rng.integers(1, npages + 1), replace=False)
                drive(ioctl.encl_access(h, t, e, idx, max_retries=20))
            check_invariants(h)
        if rmdir:
            for t, _, _ in tasks:
                if not t.exited:
                    h.fs.write("/home/cgroup.procs", f"{t.pid}\n")
            for c in range(cgroups):
                h.fs.rmdir(f"/c{c}")
        states = [_state(h)]
        for t, _, _ in tasks:
            task_exit(h, t)
            check_invariants(h)
            states.append(_state(h) | {"sgx_cgroups": _cgroups_state(sgx_cgs)})
    return {f"{k}@{i}": v for i, st_ in enumerate(states) for k, v in st_.items()}


@settings(max_examples=100, deadline=None)
@given(
    cgroups=st.integers(1, 3),
    encls=st.lists(_encl_st, min_size=2, max_size=5),
    ops=st.lists(_op_st, max_size=16),
    rmdir=st.booleans(),
)
def test_bulk_release_equals_page_loop_shared_lrus(cgroups, encls, ops, rmdir) -> None:
    """Several enclaves in shared cgroups, LRU orders shuffled by reclaim passes (pages
    rotated and evicted) and accesses in random order, tasks moved between cgroups (an
    enclave's pages charged to several), the cgroups maybe removed first (the releases
    free their css), released in turn: after each release every array, counter, charge
    and css reference equals the page-by-page loops'."""
    loop = _scenario(False, cgroups, encls, ops, rmdir)
    bulk = _scenario(True, cgroups, encls, ops, rmdir)
    _assert_same(loop, bulk)
