"""Tests of the per-cgroup EPC accounting and reclaim (``epcsim.kernel.epc_cgroup``).

Each test names the kernel function and the v16 patch it checks.  Counts are exact: every
scenario is deterministic (no RoundRobin, generators are stepped or driven by hand).
"""

from __future__ import annotations

import errno

import pytest

from epcsim.kernel import Host, check_invariants, drive, ioctl, send_signal, task_exit
from epcsim.kernel.constants import (
    EBUSY,
    ENOMEM,
    ERESTARTSYS,
    PAGE_SIZE,
    SGX_DO_RECLAIM,
    SGX_NO_RECLAIM,
    U64_MAX,
)
from epcsim.kernel.epc_cgroup import (
    queue_work,
    sgx_cgroup_lru_empty,
    sgx_cgroup_max_pages_to_root,
    sgx_cgroup_next_get,
    sgx_cgroup_reclaim_pages,
    sgx_cgroup_reclaim_work_func,
    sgx_cgroup_should_reclaim,
    sgx_cgroup_try_charge,
    sgx_cgroup_uncharge,
    sgx_put_cg,
)

# --- helpers ------------------------------------------------------------------------------


def new_host(epc: str = "16MiB") -> Host:
    """A host with misc and memory enabled for the root's children."""
    h = Host(epc)
    h.fs.write("/cgroup.subtree_control", "+misc +memory")
    return h


def mkcg(h: Host, path: str, max_pages: int | None = None) -> None:
    """mkdir *path* (and missing parents), enabling misc in the parent's
    subtree_control first if needed."""
    parent = path.rsplit("/", 1)[0] or "/"
    if parent != "/" and not h.fs.exists(parent):
        mkcg(h, parent)
    if parent != "/" and "misc" not in h.cgroup(parent).subtree_control:
        h.fs.write(parent.rstrip("/") + "/cgroup.subtree_control", "+misc")
    h.fs.mkdir(path)
    if max_pages is not None:
        set_max(h, path, max_pages)


def set_max(h: Host, path: str, max_pages: int) -> None:
    h.fs.write(path + "/misc.max", f"sgx_epc {max_pages * PAGE_SIZE}")


def tree(h: Host):
    """R{A{A1,A2},B}: returns the sgx_cgroups (R, A, A1, A2, B)."""
    for p in ("/A", "/A/A1", "/A/A2", "/B"):
        mkcg(h, p)
    return tuple(h.sgx_cgroup_of(p) for p in ("/", "/A", "/A/A1", "/A/A2", "/B"))


def new_enclave(h: Host, task, npages: int, *, size: int = 1 << 20, access: bool = False):
    """Open/create an enclave and EADD *npages* pages (indices 0..npages-1).

    Usage charged: 1 VA + 1 SECS + the pages still resident.  With *access* every page
    is touched once afterwards (accessed bit set)."""
    e = ioctl.sgx_open(h, task)
    drive(ioctl.ioc_enclave_create(h, task, e, size))
    if npages:
        drive(ioctl.ioc_enclave_add_pages(h, task, e, 0, npages * PAGE_SIZE))
    if access:
        res = drive(ioctl.encl_access(h, task, e, list(range(npages))))
        assert res.done == npages and res.faults == 0
    return e


def usage(cg) -> int:
    """misc.current of an sgx_cgroup, in pages."""
    return cg.cg.usage // PAGE_SIZE


def visit(h: Host, root, n: int) -> list:
    """n successive sgx_cgroup_next_get(root), each reference dropped again."""
    out = []
    for _ in range(n):
        c = sgx_cgroup_next_get(h, root)
        out.append(c)
        if c is not root:
            sgx_put_cg(h, c)
    return out


def run_counting(gen) -> tuple[object, list[str]]:
    """Drive *gen* to completion; return (value, list of yielded points)."""
    points = []
    while True:
        try:
            points.append(next(gen))
        except StopIteration as stop:
            return stop.value, points


# --- the next_cg cursor: sgx_cgroup_next_get() (v16 patch 9) --------------------------------------


def test_cursor_preorder_visits_root_first_each_cycle():
    """sgx_cgroup_next_get() (epc_cgroup.c, v16 patch 9 "x86/sgx: Add basic EPC reclamation flow for
    cgroup"): for R{A{A1,A2},B}, next_get(R) visits R, A, A1, A2, B, R, A, ..."""
    h = new_host()
    R, A, A1, A2, B = tree(h)
    assert R.next_cg is R
    assert visit(h, R, 11) == [R, A, A1, A2, B, R, A, A1, A2, B, R]
    check_invariants(h, quiescent=True)


def test_cursor_independent_per_reclaim_root():
    """sgx_cgroup_next_get() (v16 patch 9): a reclaim rooted at A has its own cursor (A, A1, A2, A,
    ...); advancing it does not move R's cursor and vice versa."""
    h = new_host()
    R, A, A1, A2, B = tree(h)
    assert visit(h, R, 2) == [R, A]
    assert visit(h, A, 4) == [A, A1, A2, A]
    assert R.next_cg is A1
    assert visit(h, R, 2) == [A1, A2]
    assert A.next_cg is A1
    assert visit(h, A, 3) == [A1, A2, A]
    assert visit(h, R, 3) == [B, R, A]
    # a leaf's cursor only ever visits itself
    assert visit(h, A1, 3) == [A1, A1, A1]
    check_invariants(h, quiescent=True)


def test_next_get_takes_reference_on_non_root_only():
    """sgx_cgroup_next_get() (v16 patch 9): next_get returns a referenced cgroup unless it is the
    reclaim root; the cursor itself holds no reference (the temporary one on the successor is
    dropped)."""
    h = new_host()
    R, A, A1, A2, B = tree(h)
    base = {c: c.cg.refcnt for c in (R, A, A1, A2, B)}
    assert base[A] == 3  # online + two child css
    assert base[A1] == 1

    assert sgx_cgroup_next_get(h, R) is R
    assert {c: c.cg.refcnt for c in base} == base  # root: no reference, A (cursor): none

    c = sgx_cgroup_next_get(h, R)
    assert c is A and R.next_cg is A1
    assert A.cg.refcnt == base[A] + 1
    assert A1.cg.refcnt == base[A1]
    with pytest.raises(AssertionError):  # the in-flight reference is not quiescent
        check_invariants(h, quiescent=True)
    check_invariants(h)
    sgx_put_cg(h, c)
    assert A.cg.refcnt == base[A]

    # a reclaim rooted at A: A itself is returned without a reference
    assert sgx_cgroup_next_get(h, A) is A
    assert A.cg.refcnt == base[A]
    c = sgx_cgroup_next_get(h, A)
    assert c is A1 and A1.cg.refcnt == base[A1] + 1
    sgx_put_cg(h, c)
    check_invariants(h, quiescent=True)


@pytest.mark.parametrize(
    ("victim", "r_visits", "a_visits", "r_after", "a_after"),
    [
        # R -> A1 and A -> A1: both move to A2
        ("A1", 2, 1, "A2", "A2"),
        # R -> A2 and A -> A2 (last of A's subtree): R moves to B, A wraps to A
        ("A2", 3, 2, "B", "A"),
        # R -> B (last of the whole tree): wraps to R
        ("B", 4, 0, "R", "A"),
    ],
)
def test_free_callback_moves_every_ancestor_cursor(victim, r_visits, a_visits, r_after, a_after):
    """sgx_cgroup_misc_free() (epc_cgroup.c, v16 patch 9): rmdir of an empty cgroup frees its css at
    once; every ancestor whose cursor pointed at it moves to its successor as if it were still in
    place; no cursor points at a freed cgroup."""
    h = new_host()
    R, A, A1, A2, B = tree(h)
    names = {"R": R, "A": A, "A1": A1, "A2": A2, "B": B}
    dying = names[victim]
    visit(h, R, r_visits)
    visit(h, A, a_visits)
    assert R.next_cg is dying
    if victim != "B":
        assert A.next_cg is dying
    path = {"A1": "/A/A1", "A2": "/A/A2", "B": "/B"}[victim]
    h.fs.rmdir(path)
    assert dying.cg.freed
    assert h.sgx_cgroups[dying.id] is None
    assert R.next_cg is names[r_after]
    assert A.next_cg is names[a_after]
    check_invariants(h, quiescent=True)
    # the rotation continues over the remaining tree
    rest = [c for c in (R, A, A1, A2, B) if c is not dying]
    start = rest.index(names[r_after])
    assert visit(h, R, 5) == (rest * 3)[start : start + 5]


def test_offline_cgroup_with_pages_stays_visited_until_its_pages_are_freed():
    """sgx_cgroup_misc_free() (v16 patch 9; each EPC page pins its css, v16 patch 5): rmdir of a
    cgroup that still has charged pages leaves it offline but alive: cursors still visit it, its LRU
    still counts for emptiness and is reclaimed; when its last page is freed the css is freed and
    every cursor that pointed at it moves on."""
    h = new_host()
    R, A, A1, A2, B = tree(h)
    t = h.spawn("/A/A1")
    e = new_enclave(h, t, 20)
    assert usage(A1) == 22
    # move the task away (charges do not migrate), then remove the directory
    h.fs.write("/B/cgroup.procs", str(t.pid))
    h.fs.rmdir("/A/A1")
    assert not A1.cg.online and not A1.cg.freed
    assert A1.cg.refcnt == 22  # one reference per charged page
    assert A.cg.children == [A1.cg, A2.cg]
    check_invariants(h, quiescent=True)
    assert visit(h, R, 5) == [R, A, A1, A2, B]
    assert not sgx_cgroup_lru_empty(h, A.cg)

    # a reclaim rooted at A still finds the offline cgroup's pages
    got = drive(sgx_cgroup_reclaim_pages(h, A, None, 1))
    assert got == 16
    assert A1.nr_evicted == 16 and usage(A1) == 6
    assert A.next_cg is A2  # visited A (empty), then A1
    check_invariants(h, quiescent=True)

    # point R's and A's cursors at the offline cgroup, then free its pages
    assert visit(h, R, 2) == [R, A]
    assert visit(h, A, 2) == [A2, A]
    assert R.next_cg is A1 and A.next_cg is A1
    task_exit(h, t)
    assert e.released
    assert A1.cg.freed and h.sgx_cgroups[A1.id] is None
    assert A.cg.children == [A2.cg]
    assert R.next_cg is A2 and A.next_cg is A2
    assert usage(A) == 0 and usage(R) == 0
    check_invariants(h, quiescent=True)
    assert visit(h, R, 5) == [A2, B, R, A, A2]


# --- rotating cgroup reclaim: sgx_cgroup_reclaim_pages() (v16 patch 9) ----------------------------


def test_reclaim_rotates_one_batch_per_cgroup():
    """sgx_cgroup_reclaim_pages() (epc_cgroup.c, v16 patch 9): successive calls rooted at R continue
    where the last stopped; each batch comes from one cgroup (≤16 pages), the cursor advancing one
    cgroup per batch; an empty LRU (R's own) is passed over inside the same call."""
    h = new_host()
    R = h.sgx_cg_root
    mkcg(h, "/A")
    mkcg(h, "/B")
    A, B = h.sgx_cgroup_of("/A"), h.sgx_cgroup_of("/B")
    new_enclave(h, h.spawn("/A"), 40)
    new_enclave(h, h.spawn("/B"), 40)
    history = []
    for _ in range(5):
        got = drive(sgx_cgroup_reclaim_pages(h, R, None, 1))
        history.append((got, A.nr_evicted, B.nr_evicted))
    assert history == [(16, 16, 0), (16, 16, 16), (16, 32, 16), (16, 32, 32), (8, 40, 32)]
    # R's own (empty) LRU had a batch at the start of each cycle: calls 1, 3 and 5
    assert R.nr_reclaim_batches == 3
    assert usage(A) == 2 and usage(B) == 10
    check_invariants(h, quiescent=True)


def test_reclaim_counts_young_pages_rotated_back():
    """sgx_cgroup_reclaim_pages() (v16 patch 9) with sgx_reclaim_pages() (main.c): the return value
    counts isolated pages, including young ones that are rotated back with their accessed bit
    cleared, so a call can evict nothing."""
    h = new_host()
    mkcg(h, "/A")
    A = h.sgx_cgroup_of("/A")
    e = new_enclave(h, h.spawn("/A"), 20, access=True)
    pages = [int(p) for p in e.epc[:20]]
    assert drive(sgx_cgroup_reclaim_pages(h, A, None, 1)) == 16
    assert A.nr_evicted == 0 and usage(A) == 22
    # young pages went to the tail, in order, behind the four never scanned
    assert A.lru.to_list() == pages[16:] + pages[:16]
    assert drive(sgx_cgroup_reclaim_pages(h, A, None, 1)) == 16
    # 4 young rotated, then 12 old (bit cleared by the first round) evicted
    assert A.nr_evicted == 12
    assert A.lru.to_list() == pages[12:16] + pages[16:20]
    check_invariants(h, quiescent=True)


def test_reclaim_stops_at_nr_to_scan():
    """sgx_cgroup_reclaim_pages() (v16 patch 9): batches continue while fewer than nr_to_scan pages
    were isolated."""
    h = new_host()
    mkcg(h, "/A")
    A = h.sgx_cgroup_of("/A")
    new_enclave(h, h.spawn("/A"), 50)
    assert drive(sgx_cgroup_reclaim_pages(h, A, None, 20)) == 32
    assert A.nr_reclaim_batches == 2 and A.nr_evicted == 32
    assert drive(sgx_cgroup_reclaim_pages(h, A, None, 16)) == 16
    assert A.nr_reclaim_batches == 3 and A.nr_evicted == 48
    check_invariants(h, quiescent=True)


def test_reclaim_stops_when_subtree_empty():
    """sgx_cgroup_reclaim_pages() (v16 patch 9): the loop stops as soon as every LRU of the subtree
    is empty."""
    h = new_host()
    R, A, A1, A2, B = tree(h)
    new_enclave(h, h.spawn("/A/A1"), 5)
    new_enclave(h, h.spawn("/B"), 7)
    assert drive(sgx_cgroup_reclaim_pages(h, R, None, 100)) == 12
    assert (A1.nr_evicted, B.nr_evicted) == (5, 7)
    assert h.nr_lru_pages == 0
    # batches: R, A, A1 (5), A2, B (7); then nothing left
    assert [c.nr_reclaim_batches for c in (R, A, A1, A2, B)] == [1, 1, 1, 1, 1]
    assert R.next_cg is R
    # an empty subtree: no batch at all
    assert drive(sgx_cgroup_reclaim_pages(h, R, None, 16)) == 0
    assert R.nr_reclaim_batches == 1
    check_invariants(h, quiescent=True)


def test_reclaim_skips_empty_lrus_within_one_call():
    """sgx_cgroup_try_charge() -> sgx_cgroup_reclaim_pages() (v16 patch 9): with nr_to_scan=1,
    cgroups whose LRU yields 0 pages are passed over in the same call until one non-empty batch was
    taken."""
    h = new_host()
    R, A, A1, A2, B = tree(h)
    new_enclave(h, h.spawn("/A/A2"), 20)
    new_enclave(h, h.spawn("/B"), 20)
    assert drive(sgx_cgroup_reclaim_pages(h, A, None, 1)) == 16
    assert [c.nr_reclaim_batches for c in (A, A1, A2)] == [1, 1, 1]
    assert A2.nr_evicted == 16 and B.nr_evicted == 0
    assert A.next_cg is A


# --- charge loop: sgx_cgroup_try_charge() (v16 patches 9, 10) -------------------------------------


def test_charge_do_reclaim_one_batch_then_retry():
    """sgx_cgroup_try_charge() (epc_cgroup.c, v16 patch 9): a DO_RECLAIM charge over the limit
    reclaims one non-empty LRU batch of subtree(cg) (nr_to_scan 1) and retries; one max event per
    failed attempt."""
    h = new_host()
    R, A, A1, A2, B = tree(h)
    t = h.spawn("/A/A1")
    new_enclave(h, t, 20)
    new_enclave(h, h.spawn("/A/A2"), 20)
    set_max(h, "/A", usage(A))  # 44 pages: full
    ret, points = run_counting(sgx_cgroup_try_charge(h, t, A, SGX_DO_RECLAIM))
    assert ret == 0
    assert points.count("cond_resched") == 1
    assert A.cg.events_local == 1 and A.cg.events == 1
    assert (A1.nr_evicted, A2.nr_evicted) == (16, 0)
    assert usage(A) == 44 - 16 + 1
    assert A1.cg.events_local == 0 and A1.cg.events == 0
    sgx_cgroup_uncharge(h, A)
    check_invariants(h, quiescent=True)


def test_charge_each_failed_attempt_counts_an_event():
    """sgx_cgroup_try_charge() (v16 patch 9) and misc_cg_try_charge() (kernel/cgroup/misc.c): when
    the first batch only rotates young pages, the attempt fails again (second event) and a second
    batch evicts."""
    h = new_host()
    mkcg(h, "/a")
    a = h.sgx_cgroup_of("/a")
    t = h.spawn("/a")
    new_enclave(h, t, 20, access=True)
    set_max(h, "/a", 22)
    ret, points = run_counting(sgx_cgroup_try_charge(h, t, a, SGX_DO_RECLAIM))
    assert ret == 0
    assert points.count("cond_resched") == 2
    assert a.cg.events_local == 2 and a.cg.events == 2
    assert a.nr_evicted == 12  # 16 young rotated, then 4 young + 12 old evicted
    assert h.fs.read("/a/misc.events") == "sgx_epc.max 2\n"
    sgx_cgroup_uncharge(h, a)
    check_invariants(h, quiescent=True)


def test_add_pages_over_limit_example():
    """sgx_cgroup_try_charge() (v16 patch 9): the documented example: 64 pages into a 16-page
    cgroup; 4 max events, 56 pages evicted, 10 resident (VA + SECS + 8)."""
    h = new_host("1MiB")
    mkcg(h, "/a")
    set_max(h, "/a", 16)
    t = h.spawn("/a")
    e = new_enclave(h, t, 64)
    a = h.sgx_cgroup_of("/a")
    assert usage(a) == 10 and a.cg.events == 4 and a.nr_evicted == 56
    assert e.nr_resident == 8
    assert not h.sgx_cg_wq  # DO_RECLAIM never queues the async work
    check_invariants(h, quiescent=True)


def test_charge_enomem_when_requester_subtree_empty_even_if_ancestor_full_of_siblings():
    """sgx_cgroup_try_charge() (v16 patch 9; scope = the requester's subtree): the ENOMEM test and
    the reclaim look only at subtree(requester): an ancestor full because of a sibling's reclaimable
    pages still gives ENOMEM."""
    h = new_host()
    mkcg(h, "/P/S")
    mkcg(h, "/P/R")
    P, S, Rq = (h.sgx_cgroup_of(p) for p in ("/P", "/P/S", "/P/R"))
    new_enclave(h, h.spawn("/P/S"), 20)
    tr = h.spawn("/P/R")
    er = new_enclave(h, tr, 0)  # VA + SECS only: nothing on R's LRU
    set_max(h, "/P", usage(P))  # 24 pages
    with pytest.raises(ioctl.SgxIoctlError) as ei:
        drive(ioctl.ioc_enclave_add_pages(h, tr, er, 0, PAGE_SIZE))
    assert ei.value.errno == errno.ENOMEM and ei.value.count == 0
    assert P.cg.events_local == 1 and P.cg.events == 1
    assert Rq.cg.events_local == 0 and Rq.cg.events == 0
    assert S.nr_evicted == 0 and S.lru.nr == 20
    assert Rq.nr_enomem == 1
    # the same through the charge function directly
    assert drive(sgx_cgroup_try_charge(h, tr, Rq, SGX_DO_RECLAIM)) == -ENOMEM
    assert drive(sgx_cgroup_try_charge(h, tr, Rq, SGX_NO_RECLAIM)) == -ENOMEM
    assert P.cg.events_local == 3
    assert not h.sgx_cg_wq
    check_invariants(h, quiescent=True)


def test_charge_reclaims_only_requester_subtree_when_ancestor_binds():
    """sgx_cgroup_try_charge() (v16 patch 9; scope = the requester's subtree): the parent's limit
    fails, but the charge loop reclaims from the requester's own subtree (its few pages), never from
    the sibling holding the bulk."""
    h = new_host()
    mkcg(h, "/P/S")
    mkcg(h, "/P/R")
    P, S, Rq = (h.sgx_cgroup_of(p) for p in ("/P", "/P/S", "/P/R"))
    new_enclave(h, h.spawn("/P/S"), 30)
    tr = h.spawn("/P/R")
    er = new_enclave(h, tr, 3)
    set_max(h, "/P", usage(P))  # 37 pages
    drive(ioctl.ioc_enclave_add_pages(h, tr, er, 3 * PAGE_SIZE, PAGE_SIZE))
    assert (S.nr_evicted, Rq.nr_evicted) == (0, 3)
    assert P.cg.events_local == 1 and usage(Rq) == 3 and usage(P) == 35
    check_invariants(h, quiescent=True)


def test_charge_no_reclaim_queues_work_once_and_returns_ebusy():
    """sgx_cgroup_try_charge() (NO_RECLAIM, v16 patch 10 "x86/sgx: Implement async reclamation for
    cgroup"): a failing NO_RECLAIM charge queues the cgroup's work (no-op if already pending),
    returns -EBUSY at once and reclaims nothing itself."""
    h = new_host()
    mkcg(h, "/a", 18)
    a = h.sgx_cgroup_of("/a")
    t = h.spawn("/a")
    new_enclave(h, t, 16)
    assert usage(a) == 18
    for k in (1, 2, 3):
        ret, points = run_counting(sgx_cgroup_try_charge(h, t, a, SGX_NO_RECLAIM))
        assert ret == -EBUSY and points == []
        assert list(h.sgx_cg_wq) == [a] and a.work_pending
        assert a.cg.events_local == k
    assert a.nr_evicted == 0 and a.lru.nr == 16 and usage(a) == 18
    check_invariants(h, quiescent=True)


def test_fault_no_reclaim_charge_failure_retries_and_queues_work():
    """sgx_encl_eaug_page() -> sgx_alloc_epc_page() -> sgx_cgroup_try_charge() (v16 patch 10): an
    EAUG fault at the limit gets -EBUSY → VM_FAULT_NOPAGE (the access is retried) and queues the
    async work."""
    h = new_host()
    mkcg(h, "/a", 18)
    a = h.sgx_cgroup_of("/a")
    t = h.spawn("/a")
    e = new_enclave(h, t, 16)
    ioctl.ioc_enclave_init(h, t, e)
    res = drive(ioctl.encl_access(h, t, e, [100], max_retries=2))
    assert res.done == 0 and res.retries == 3 and not res.sigbus
    assert list(h.sgx_cg_wq) == [a]
    assert a.cg.events_local == 3
    check_invariants(h, quiescent=True)


def test_charge_erestartsys_when_signal_pending_and_reclaim_needed():
    """sgx_cgroup_try_charge() (v16 patch 9): over the limit with something reclaimable and a signal
    pending →
    -ERESTARTSYS without reclaiming; ENOMEM takes precedence when nothing is
    reclaimable; under the limit the signal does not matter."""
    h = new_host()
    mkcg(h, "/a", 18)
    mkcg(h, "/b", 2)
    a, b = h.sgx_cgroup_of("/a"), h.sgx_cgroup_of("/b")
    t = h.spawn("/a")
    new_enclave(h, t, 16)
    tb = h.spawn("/b")
    new_enclave(h, tb, 0)
    t.signal_pending = True
    tb.signal_pending = True
    for mode in (SGX_DO_RECLAIM, SGX_NO_RECLAIM):
        ret, points = run_counting(sgx_cgroup_try_charge(h, t, a, mode))
        assert ret == -ERESTARTSYS and points == []
    assert a.cg.events_local == 2 and a.nr_evicted == 0 and not h.sgx_cg_wq
    assert drive(sgx_cgroup_try_charge(h, tb, b, SGX_DO_RECLAIM)) == -ENOMEM
    # under the limit: charged
    set_max(h, "/a", 19)
    assert drive(sgx_cgroup_try_charge(h, t, a, SGX_DO_RECLAIM)) == 0
    sgx_cgroup_uncharge(h, a)
    t.signal_pending = tb.signal_pending = False
    check_invariants(h, quiescent=True)


def test_add_pages_interrupted_by_signal_while_reclaim_needed():
    """sgx_cgroup_try_charge() (v16 patch 9) under sgx_ioc_enclave_add_pages() (ioctl.c): a signal
    arriving while the charge loop reclaims makes the next failed attempt return -ERESTARTSYS:
    ADD_PAGES fails with EINTR (no page done) and the process exits on return to user space."""
    h = new_host()
    mkcg(h, "/a", 18)
    a = h.sgx_cgroup_of("/a")
    t = h.spawn("/a")
    e = new_enclave(h, t, 16, access=True)  # the first batch only rotates young pages
    gen = ioctl.ioc_enclave_add_pages(h, t, e, 16 * PAGE_SIZE, PAGE_SIZE)
    assert next(gen) == "reclaim:isolated"
    send_signal(h, t)
    assert t.signal_pending and not t.exited  # in the kernel: deferred
    with pytest.raises(ioctl.SgxIoctlError) as ei:
        drive(gen)
    assert ei.value.errno == errno.EINTR and ei.value.count == 0
    assert a.cg.events_local == 2 and a.nr_evicted == 0
    assert t.exited and e.released and usage(a) == 0
    check_invariants(h, quiescent=True)


def test_no_async_queueing_after_successful_charge():
    """sgx_cgroup_try_charge() (v16 patch 10; the queue_work() after its loop is unreachable): a
    successful charge never queues the async work, even when the usage is above the async threshold
    afterwards (the check is dead code)."""
    h = new_host()
    mkcg(h, "/a", 200)
    a = h.sgx_cgroup_of("/a")
    t = h.spawn("/a")
    new_enclave(h, t, 188)
    assert usage(a) == 190 and sgx_cgroup_should_reclaim(h, a)
    assert drive(sgx_cgroup_try_charge(h, t, a, SGX_DO_RECLAIM)) == 0
    assert drive(sgx_cgroup_try_charge(h, t, a, SGX_NO_RECLAIM)) == 0
    assert not h.sgx_cg_wq and not a.work_pending
    sgx_cgroup_uncharge(h, a)
    sgx_cgroup_uncharge(h, a)
    # after a DO_RECLAIM loop that had to reclaim: still nothing queued
    set_max(h, "/a", 190)
    assert drive(sgx_cgroup_try_charge(h, t, a, SGX_DO_RECLAIM)) == 0
    assert a.nr_evicted == 16 and usage(a) == 175
    assert sgx_cgroup_should_reclaim(h, a)  # 175 >= 190 - 32
    assert not h.sgx_cg_wq and not a.work_pending
    sgx_cgroup_uncharge(h, a)
    check_invariants(h, quiescent=True)


# --- threshold: sgx_cgroup_should_reclaim() (v16 patch 10) ----------------------------------------


@pytest.mark.parametrize(
    ("max_bytes", "expected"),
    [
        (100 * PAGE_SIZE, True),  # limit 100 <= 128: threshold = limit, usage 100
        (101 * PAGE_SIZE, False),
        (128 * PAGE_SIZE, False),
        (129 * PAGE_SIZE, True),  # limit > 128: threshold 97
        (132 * PAGE_SIZE, True),  # threshold 100
        (132 * PAGE_SIZE + 4095, True),  # floor(max / 4096)
        (133 * PAGE_SIZE, False),  # threshold 101
        (U64_MAX, False),
    ],
)
def test_should_reclaim_threshold(max_bytes, expected):
    """sgx_cgroup_should_reclaim() (epc_cgroup.c, v16 patch 10): limit <= 128 pages → threshold =
    limit; > 128 → limit - 32 (usage 100)."""
    h = new_host()
    mkcg(h, "/a")
    a = h.sgx_cgroup_of("/a")
    new_enclave(h, h.spawn("/a"), 98)
    assert usage(a) == 100
    h.fs.write("/a/misc.max", f"sgx_epc {max_bytes}")
    assert sgx_cgroup_should_reclaim(h, a) is expected


def test_should_reclaim_uses_own_usage_against_min_ancestor_limit():
    """sgx_cgroup_should_reclaim() (v16 patch 10; compares the cgroup's own usage): the limit is the
    minimum up to the root, but the usage compared is the cgroup's own: a child of a binding parent
    triggers only at parent limit - 32."""
    h = new_host()
    mkcg(h, "/P/C1")
    mkcg(h, "/P/C2")
    P, C1, C2 = (h.sgx_cgroup_of(p) for p in ("/P", "/P/C1", "/P/C2"))
    t1 = h.spawn("/P/C1")
    e1 = new_enclave(h, t1, 165)
    new_enclave(h, h.spawn("/P/C2"), 28)
    set_max(h, "/P", 200)
    set_max(h, "/P/C1", 1000)  # looser than the parent's
    assert (usage(C1), usage(C2), usage(P)) == (167, 30, 197)
    assert sgx_cgroup_max_pages_to_root(C1) == 200
    assert sgx_cgroup_should_reclaim(h, P)  # 197 >= 168
    assert not sgx_cgroup_should_reclaim(h, C1)  # 167 < 168
    assert not sgx_cgroup_should_reclaim(h, C2)
    drive(ioctl.ioc_enclave_add_pages(h, t1, e1, 165 * PAGE_SIZE, PAGE_SIZE))
    assert usage(C1) == 168
    assert sgx_cgroup_should_reclaim(h, C1)


def test_should_reclaim_false_for_root_and_empty_lru():
    """sgx_cgroup_should_reclaim() (v16 patch 10): never true for the root (max U64_MAX); false when
    the subtree's LRUs are empty even at the limit."""
    h = new_host("1MiB")
    R = h.sgx_cg_root
    new_enclave(h, h.spawn("/"), 200)
    assert usage(R) == 202 and h.epc.nr_free_pages == 54
    assert sgx_cgroup_max_pages_to_root(R) == U64_MAX // PAGE_SIZE
    assert not sgx_cgroup_should_reclaim(h, R)

    mkcg(h, "/a", 2)
    a = h.sgx_cgroup_of("/a")
    new_enclave(h, h.spawn("/a"), 0)
    assert usage(a) == 2 and a.lru.nr == 0
    assert not sgx_cgroup_should_reclaim(h, a)


# --- async work: sgx_cgroup_reclaim_work_func() (v16 patch 10) ------------------------------------


def test_work_reclaims_in_16_page_passes_until_below_threshold():
    """sgx_cgroup_reclaim_work_func() (epc_cgroup.c, v16 patch 10): the work reclaims 16 pages per
    pass while usage >= limit - 32."""
    h = new_host()
    mkcg(h, "/a", 200)
    a = h.sgx_cgroup_of("/a")
    new_enclave(h, h.spawn("/a"), 198)
    assert usage(a) == 200
    assert queue_work(h, a)
    assert h.sgx_cg_wq.popleft() is a
    _, points = run_counting(sgx_cgroup_reclaim_work_func(h, a))
    assert points.count("cond_resched") == 3  # 200 -> 184 -> 168 -> 152
    assert a.nr_reclaim_batches == 3 and a.nr_evicted == 48
    assert usage(a) == 152
    assert not a.work_pending and not a.work_running
    check_invariants(h, quiescent=True)


def test_work_small_limit_reclaims_below_limit():
    """sgx_cgroup_reclaim_work_func() (v16 patch 10): with a limit <= 128 pages the work stops once
    usage < limit."""
    h = new_host()
    mkcg(h, "/a", 40)
    a = h.sgx_cgroup_of("/a")
    new_enclave(h, h.spawn("/a"), 38)
    assert usage(a) == 40
    drive(sgx_cgroup_reclaim_work_func(h, a))
    assert a.nr_reclaim_batches == 1 and usage(a) == 24


def test_work_exits_at_once_when_ancestor_limit_binds():
    """sgx_cgroup_reclaim_work_func() (v16 patch 10) stops on the cgroup's own usage: the failing
    limit is the parent's and the child's own usage is below parent limit - 32: the work exits
    immediately; the child's NO_RECLAIM faults keep getting -EBUSY."""
    h = new_host()
    mkcg(h, "/P/C1")
    mkcg(h, "/P/C2")
    P, C1, C2 = (h.sgx_cgroup_of(p) for p in ("/P", "/P/C1", "/P/C2"))
    t1 = h.spawn("/P/C1")
    new_enclave(h, t1, 148)
    new_enclave(h, h.spawn("/P/C2"), 48)
    set_max(h, "/P", 200)
    assert (usage(C1), usage(P)) == (150, 200)
    assert drive(sgx_cgroup_try_charge(h, t1, C1, SGX_NO_RECLAIM)) == -EBUSY
    assert list(h.sgx_cg_wq) == [C1]
    h.sgx_cg_wq.popleft()
    _, points = run_counting(sgx_cgroup_reclaim_work_func(h, C1))
    assert points == []
    assert C1.nr_reclaim_batches == 0 and C2.nr_reclaim_batches == 0
    assert not C1.work_pending and not C1.work_running
    assert drive(sgx_cgroup_try_charge(h, t1, C1, SGX_NO_RECLAIM)) == -EBUSY
    assert P.cg.events_local == 2


def test_queue_work_while_running_requeues():
    """sgx_cgroup_reclaim_work_func() (v16 patch 10): the work's pending bit is cleared when it
    starts, so queueing it while it runs queues it again (once)."""
    h = new_host()
    mkcg(h, "/a", 200)
    a = h.sgx_cgroup_of("/a")
    new_enclave(h, h.spawn("/a"), 198)
    assert queue_work(h, a) and not queue_work(h, a)
    assert list(h.sgx_cg_wq) == [a]
    h.sgx_cg_wq.popleft()
    gen = sgx_cgroup_reclaim_work_func(h, a)
    assert next(gen) == "reclaim:isolated"
    assert not a.work_pending and a.work_running
    assert queue_work(h, a)
    assert not queue_work(h, a)
    assert list(h.sgx_cg_wq) == [a] and a.work_pending
    drive(gen)
    assert not a.work_running and a.work_pending
    assert usage(a) == 152


def test_running_work_stops_when_its_cgroup_is_freed_under_it():
    """sgx_cgroup_reclaim_work_func() (v16 patch 10) and sgx_cgroup_misc_free() (v16 patch 9): the
    cgroup (rmdir'ed, its task gone) is freed inside the worker's own write-back, when the enclave's
    last page goes; the worker then stops without touching the freed cgroup, and the parent's cursor
    moved on."""
    h = new_host()
    mkcg(h, "/P/a", 40)
    mkcg(h, "/P/b")
    P, a, b = (h.sgx_cgroup_of(p) for p in ("/P", "/P/a", "/P/b"))
    t = h.spawn("/P/a")
    e = new_enclave(h, t, 38)
    assert queue_work(h, a)
    h.sgx_cg_wq.popleft()
    worker = sgx_cgroup_reclaim_work_func(h, a)
    assert next(worker) == "reclaim:isolated"
    h.fs.write("/P/b/cgroup.procs", str(t.pid))
    h.fs.rmdir("/P/a")
    assert visit(h, P, 2) == [P, a] and P.next_cg is b
    visit(h, P, 2)
    assert P.next_cg is a
    task_exit(h, t)
    assert not e.released and not a.cg.freed
    _, points = run_counting(worker)
    assert e.released and a.cg.freed and h.sgx_cgroups[a.id] is None
    assert "cond_resched" in points
    assert not a.work_running and not h.sgx_cg_wq
    assert P.next_cg is b
    assert usage(P) == 0
    check_invariants(h, quiescent=True)


def test_pending_work_cancelled_when_cgroup_freed():
    """sgx_cgroup_misc_free() (v16 patch 9: cancel_work_sync()): a pending work item is
    cancelled."""
    h = new_host()
    mkcg(h, "/a")
    a = h.sgx_cgroup_of("/a")
    assert queue_work(h, a)
    h.fs.rmdir("/a")
    assert a.cg.freed and not h.sgx_cg_wq and not a.work_pending
    check_invariants(h, quiescent=True)
