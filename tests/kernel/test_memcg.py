"""Memory-cgroup accounting of SGX backing store (patch 11) and the memcg OOM killer.

Series citations: sgx_encl_alloc_backing() called from sgx_reclaim_pages() charges the
memcg of charge_mm, or of the enclave's first live mm (v16 patch 11 "x86/sgx: Charge mem_cgroup
for per-cgroup reclamation"); who passes which charge_mm (sgx_cgroup_try_charge(),
sgx_cgroup_reclaim_work_func(), ksgxd()); ELDU truncates the backing and release drops the
backing file (encl.c); Test F of run_epc_cg_selftests.sh (memcg OOM, v16 patch 16).
"""

from __future__ import annotations

import errno

import pytest

from epcsim.kernel import Host, RoundRobin, check_invariants, drive, ioctl, oom_kill_task, task_exit
from epcsim.kernel.constants import ENOMEM
from epcsim.kernel.epc_cgroup import sgx_cgroup_reclaim_pages, sgx_cgroup_reclaim_work_func
from epcsim.kernel.ioctl import SgxIoctlError
from epcsim.kernel.memcg import mem_cgroup_charge_backing
from epcsim.kernel.reclaim import ksgxd_step

P = 4096
BACKING = 4096 + 128  # an evicted page: contents + PCMD entry


def mkhost(epc="1MiB"):
    h = Host(epc)
    h.fs.write("/cgroup.subtree_control", "+misc +memory")
    return h


def split_memcg_host(limit_pages, epc="1MiB"):
    """/a: one misc cgroup (limit) with two memory-only children /a/x and /a/y."""
    h = mkhost(epc)
    h.fs.mkdir("/a")
    h.fs.write("/a/misc.max", f"sgx_epc {limit_pages * P}")
    h.fs.write("/a/cgroup.subtree_control", "+memory")
    h.fs.mkdir("/a/x")
    h.fs.mkdir("/a/y")
    return h


def mem(h, path):
    return int(h.fs.read(f"{path}/memory.current"))


def cur(h, path):
    text = h.fs.read(f"{path}/misc.current")
    return int(text.split()[1]) // P if text else 0


def oom_kills(h, path):
    for line in h.fs.read(f"{path}/memory.events").splitlines():
        k, v = line.split()
        if k == "oom_kill":
            return int(v)
    raise AssertionError("no oom_kill line")


def build(h, t, npages, *, init=False):
    e = ioctl.sgx_open(h, t)
    drive(ioctl.ioc_enclave_create(h, t, e, 1 << 20))
    if npages:
        drive(ioctl.ioc_enclave_add_pages(h, t, e, 0, npages * P))
    if init:
        ioctl.ioc_enclave_init(h, t, e)
    return e


# --- where the backing is charged ---------------------------------------------------------


def test_evicted_page_costs_4224_bytes_in_memcg():
    """sgx_encl_alloc_backing() (encl.c; v16 patch 11; the test_sgx backing of v16 patch 16): one
    evicted page = 4096 B contents + 128 B PCMD, charged to the memcg; memory.current reads it; the
    ancestors are charged too."""
    h = mkhost()
    h.fs.mkdir("/a")
    t = h.spawn("/a")
    build(h, t, 5)
    assert mem(h, "/a") == 0
    drive(sgx_cgroup_reclaim_pages(h, h.sgx_cgroup_of("/a"), t, 1))
    assert mem(h, "/a") == 5 * 4224
    assert h.memcg_root.usage == 5 * 4224
    assert t.backing_bytes == 5 * 4224
    check_invariants(h, quiescent=True)


def test_sync_reclaim_charges_current_memcg():
    """sgx_cgroup_try_charge() -> sgx_cgroup_reclaim_pages() (v16 patches 9, 11): the sync charge
    loop reclaims with charge_mm = current: the backing of *another* task's evicted pages goes to
    the allocating task's memcg."""
    h = split_memcg_host(32)
    t1 = h.spawn("/a/x")
    t2 = h.spawn("/a/y")
    e1 = build(h, t1, 20)  # /a: 22
    build(h, t2, 20)  # /a: 24 + 8 = 32; one 16-page batch of e1's pages; + 12
    assert e1.nr_swapped == 16
    assert mem(h, "/a/x") == 0
    assert mem(h, "/a/y") == 16 * BACKING
    assert mem(h, "/a") == 16 * BACKING
    # the model's OOM badness follows the enclave's owner, not the memcg charged
    assert t1.backing_bytes == 16 * BACKING and t2.backing_bytes == 0
    assert cur(h, "/a") == 28
    check_invariants(h, quiescent=True)


def test_async_reclaim_charges_first_live_mm_of_enclave():
    """sgx_cgroup_reclaim_work_func() (v16 patch 10) -> sgx_reclaim_pages() (v16 patch 11): the
    async work reclaims with mm = NULL: each page's backing goes to the memcg of its enclave's first
    live mm, not to the faulting task's."""
    h = split_memcg_host(30)
    t1 = h.spawn("/a/x")
    t2 = h.spawn("/a/y")
    e2 = build(h, t2, 1)
    drive(sgx_cgroup_reclaim_pages(h, h.sgx_cgroup_of("/a"), t2, 1))
    assert e2.nr_swapped == 1 and mem(h, "/a/y") == BACKING
    e1 = build(h, t1, 30)  # 4 + 26 = 30; the 27th: t1 evicts 16 of its own -> 18
    assert e1.nr_swapped == 16 and cur(h, "/a") == 18
    assert mem(h, "/a/x") == 16 * BACKING
    h.fs.write("/a/misc.max", f"sgx_epc {18 * P}")  # /a exactly full
    cg = h.sgx_cgroup_of("/a")
    g = ioctl.encl_access(h, t2, e2, [0])
    assert next(g) == "fault_retry"
    assert cg.work_pending
    drive(sgx_cgroup_reclaim_work_func(h, cg))
    # limit 18 <= 128: threshold = limit: the 14 resident pages of e1 go, paid by t1
    assert e1.nr_resident == 0
    assert mem(h, "/a/x") == 30 * BACKING
    assert mem(h, "/a/y") == BACKING
    r = drive(g)
    assert r.faults == 1 and r.retries == 1
    assert mem(h, "/a/y") == 0  # e2's page loaded back
    check_invariants(h, quiescent=True)


def test_async_reclaim_mm_list_order_decides():
    """sgx_encl_alloc_backing() (encl.c, v16 patch 11): with no charge mm the FIRST live mm on the
    enclave's mm_list pays; once it exits, the next one does."""
    from epcsim.kernel.encl import sgx_encl_mm_add

    h = split_memcg_host(1000)
    t1 = h.spawn("/a/x")
    t2 = h.spawn("/a/y")
    e = build(h, t1, 4)
    sgx_encl_mm_add(h, e, t2)
    cg = h.sgx_cgroup_of("/a")
    drive(sgx_cgroup_reclaim_pages(h, cg, None, 1))
    assert mem(h, "/a/x") == 4 * BACKING and mem(h, "/a/y") == 0
    drive(ioctl.encl_access(h, t1, e, [0, 1]))
    assert mem(h, "/a/x") == 2 * BACKING
    # t1's mm goes (the file stays open in t1 only until exit: keep e alive via t2)
    from epcsim.kernel.encl import sgx_mmu_notifier_release

    sgx_mmu_notifier_release(h, e, t1)
    t1.mapped_encls.remove(e.id)
    while cg.lru.nr:  # the reloaded pages are young: a second pass takes them
        drive(sgx_cgroup_reclaim_pages(h, cg, None, 1))
    assert mem(h, "/a/y") == 2 * BACKING
    assert mem(h, "/a/x") == 2 * BACKING
    check_invariants(h, quiescent=True)


def test_ksgxd_charges_first_live_mm():
    """ksgxd() -> sgx_reclaim_pages_global() (main.c, v16 patches 11, 14): ksgxd reclaims globally
    with mm = NULL (first live mm of each enclave) while free pages < 64."""
    h = Host("512KiB")  # 128 pages
    h.fs.write("/cgroup.subtree_control", "+memory")
    h.fs.mkdir("/x")
    h.fs.mkdir("/y")
    t1 = h.spawn("/x")
    t2 = h.spawn("/y")
    build(h, t1, 100)
    assert h.epc.nr_free_pages == 26 and h.ksgxd_woken
    # ksgxd runs in the background (another task's turn, charge_mm NULL)
    while drive(ksgxd_step(h)):
        pass
    assert h.epc.nr_free_pages >= 64
    assert mem(h, "/x") > 0 and mem(h, "/y") == 0
    assert t2.backing_bytes == 0
    check_invariants(h, quiescent=True)


def test_backing_returned_on_reload_and_release():
    """__sgx_encl_eldu() and sgx_encl_release() (encl.c): ELDU truncates the page's backing (memcg
    uncharged); release drops the backing file (everything uncharged)."""
    h = mkhost()
    h.fs.mkdir("/a")
    t = h.spawn("/a")
    e = build(h, t, 10, init=True)
    drive(sgx_cgroup_reclaim_pages(h, h.sgx_cgroup_of("/a"), t, 1))
    assert mem(h, "/a") == 11 * BACKING  # 10 pages + SECS
    drive(ioctl.encl_access(h, t, e, [0, 1, 2]))
    assert mem(h, "/a") == 7 * BACKING  # SECS and 3 pages back
    task_exit(h, t)
    assert mem(h, "/a") == 0 and h.memcg_root.usage == 0
    assert t.backing_bytes == 0
    check_invariants(h, quiescent=True)


def test_backing_of_moved_task_stays_with_charged_memcg():
    """The "Migration" section of sgx.rst (v16 patch 15; charges do not move): backing charged
    before a move is returned to the memcg it was charged to."""
    h = mkhost()
    h.fs.mkdir("/a")
    h.fs.mkdir("/b")
    t = h.spawn("/a")
    e = build(h, t, 4)
    drive(sgx_cgroup_reclaim_pages(h, h.sgx_cgroup_of("/a"), t, 1))
    h.fs.write("/b/cgroup.procs", str(t.pid))
    drive(ioctl.encl_access(h, t, e, [0]))
    assert mem(h, "/a") == 3 * BACKING and mem(h, "/b") == 0
    cg_b = h.sgx_cgroup_of("/b")
    while cg_b.lru.nr:  # young after the access: two passes
        drive(sgx_cgroup_reclaim_pages(h, cg_b, t, 1))
    assert mem(h, "/b") == BACKING
    task_exit(h, t)
    assert mem(h, "/a") == 0 and mem(h, "/b") == 0
    check_invariants(h, quiescent=True)


def test_memory_max_file_rounds_down_to_pages():
    """memory.max is a page counter: the written byte value is rounded down."""
    h = mkhost()
    h.fs.mkdir("/a")
    assert h.fs.read("/a/memory.max") == "max\n"
    h.fs.write("/a/memory.max", str(3 * 4224))
    assert h.fs.read("/a/memory.max") == f"{3 * P}\n"
    h.fs.write("/a/memory.max", "1M")
    assert h.fs.read("/a/memory.max") == f"{1 << 20}\n"
    with pytest.raises(OSError) as ei:
        h.fs.write("/a/memory.max", "12x")
    assert ei.value.errno == errno.EINVAL


# --- OOM --------------------------------------------------------------------------------------


def test_oom_kills_current_which_exits_on_return():
    """Test F of run_epc_cg_selftests.sh (v16 patch 16): memory.max = 3 x 4224 B (-> 3 pages = 12288
    B) lets two pages be evicted; the third backing charge OOM-kills the only task of the memcg (the
    one reclaiming: it dies when its ioctl returns, status 137) and the charge fails; the
    enclave is released; memory.events counts one oom_kill."""
    h = mkhost()
    h.fs.mkdir("/a")
    h.fs.write("/a/misc.max", f"sgx_epc {20 * P}")
    h.fs.write("/a/memory.max", str(3 * BACKING))
    t = h.spawn("/a")
    e = ioctl.sgx_open(h, t)
    drive(ioctl.ioc_enclave_create(h, t, e, 1 << 20))
    g = ioctl.ioc_enclave_add_pages(h, t, e, 0, 30 * P)
    while not t.oom_killed:
        next(g)
    # killed while in the kernel: the signal is pending, the task still runs
    assert not t.exited and t.signal_pending
    assert oom_kills(h, "/a") == 1
    done = drive(g)  # the ioctl stops at the pending signal with a partial count
    assert 0 < done < 30 * P
    assert t.exited and t.exit_status == 128 + 9
    assert e.released
    assert cur(h, "/a") == 0 and mem(h, "/a") == 0
    assert oom_kills(h, "/a") == 1
    check_invariants(h, quiescent=True)


def test_oom_failing_page_rotated_not_evicted():
    """sgx_reclaim_pages() (main.c; backing charged to a memcg since v16 patch 11): a page whose
    backing cannot be charged is rotated back to the tail of its LRU, not evicted.  The OOM victim
    is the task in the memcg over its limit (/a/x), not the enclave's owner (in /a/y)."""
    h = split_memcg_host(24)
    h.fs.write("/a/x/memory.max", "0")
    t2 = h.spawn("/a/y")
    t1 = h.spawn("/a/x")
    e2 = build(h, t2, 22)  # /a full: 24
    lru_before = h.sgx_cgroup_of("/a").lru.to_list()
    e1 = ioctl.sgx_open(h, t1)
    with pytest.raises(SgxIoctlError) as ei:
        drive(ioctl.ioc_enclave_create(h, t1, e1, 1 << 20))
    assert ei.value.errno == errno.EINTR  # charge loop: signal pending -> ERESTARTSYS
    assert t1.oom_killed and t1.exited and t1.exit_status == 137
    assert e1.released
    assert not t2.exited and not t2.oom_killed
    assert e2.nr_resident == 22 and e2.nr_swapped == 0
    # the isolated 16 went back to the tail, in order
    assert h.sgx_cgroup_of("/a").lru.to_list() == lru_before[16:] + lru_before[:16]
    assert oom_kills(h, "/a/x") == 1 and oom_kills(h, "/a") == 1
    assert oom_kills(h, "/a/y") == 0
    assert mem(h, "/a") == 0
    assert cur(h, "/a") == 24
    check_invariants(h, quiescent=True)


def test_oom_victim_is_task_with_most_backing():
    """memcg.py: the victim is the task of the over-limit memcg's subtree with the most
    backing bytes (not the lowest pid, not the allocating task); it is released at
    once (it is in user space) and the reclaim continues with the freed room."""
    h = mkhost()
    h.fs.mkdir("/m")
    h.fs.write("/m/cgroup.subtree_control", "+misc")
    h.fs.mkdir("/m/p")
    h.fs.mkdir("/m/q")
    h.fs.write("/m/p/misc.max", f"sgx_epc {24 * P}")
    h.fs.write("/m/q/misc.max", f"sgx_epc {24 * P}")
    ta = h.spawn("/m/p")  # lowest pid, no backing
    tb = h.spawn("/m/p")
    tc = h.spawn("/m/q")
    eb = build(h, tb, 30)
    assert tb.backing_bytes == 16 * BACKING
    h.fs.write("/m/memory.max", str(16 * P))  # below the current 16 x 4224
    ec = build(h, tc, 30)  # tc's sync reclaim (its own pages) must charge /m
    assert tb.oom_killed and tb.exited and tb.exit_status == 137
    assert eb.released
    assert not ta.oom_killed and not ta.exited
    assert not tc.oom_killed and not tc.exited
    assert ec.nr_added == 30
    assert oom_kills(h, "/m") == 1
    assert cur(h, "/m/p") == 0
    check_invariants(h, quiescent=True)


def test_oom_tie_lowest_pid():
    """memcg.py: equal badness -> the lowest pid; a charge above memory.max fails."""
    h = mkhost()
    h.fs.mkdir("/a")
    h.fs.write("/a/memory.max", "0")
    t1 = h.spawn("/a")
    t2 = h.spawn("/a")
    m = h.cgroup("/a").memcg
    assert mem_cgroup_charge_backing(h, m, BACKING) == -ENOMEM
    assert t1.oom_killed and t1.exited and t1.exit_status == 137
    assert not t2.oom_killed
    assert oom_kills(h, "/a") == 1
    # killed tasks are not chosen again
    assert mem_cgroup_charge_backing(h, m, BACKING) == -ENOMEM
    assert t2.oom_killed
    assert mem_cgroup_charge_backing(h, m, BACKING) == -ENOMEM
    assert oom_kills(h, "/a") == 2  # no eligible task left: no kill counted
    assert m.usage == 0


def test_oom_victim_only_from_over_limit_subtree():
    """memcg.py: the limit that fails is an ancestor's (/a): victims come from all of
    subtree(/a); a task outside it is never chosen."""
    h = mkhost()
    h.fs.mkdir("/a")
    h.fs.mkdir("/z")
    h.fs.write("/a/cgroup.subtree_control", "+memory")
    h.fs.mkdir("/a/x")
    h.fs.write("/a/memory.max", str(P))
    tz = h.spawn("/z")
    tx = h.spawn("/a/x")
    assert mem_cgroup_charge_backing(h, h.cgroup("/a/x").memcg, BACKING) == -ENOMEM
    assert tx.oom_killed and not tz.oom_killed
    assert oom_kills(h, "/a") == 1
    assert oom_kills(h, "/z") == 0
    assert mem_cgroup_charge_backing(h, h.cgroup("/a/x").memcg, P) == 0


def test_oom_kill_event_counted_in_victims_memcg():
    """memory.events oom_kill is counted for the victim's memcg (hierarchically)."""
    h = mkhost()
    h.fs.mkdir("/a")
    h.fs.write("/a/cgroup.subtree_control", "+memory")
    h.fs.mkdir("/a/x")
    h.fs.write("/a/memory.max", str(P))
    tx = h.spawn("/a/x")
    assert mem_cgroup_charge_backing(h, h.cgroup("/a/x").memcg, BACKING) == -ENOMEM
    assert tx.oom_killed
    assert oom_kills(h, "/a") == 1
    assert oom_kills(h, "/a/x") == 1


def test_oom_kill_task_helper_in_user_space_exits_now():
    """host.oom_kill_task: SIGKILL; a task in user space exits at once with 137."""
    h = mkhost()
    h.fs.mkdir("/a")
    t = h.spawn("/a")
    e = build(h, t, 3)
    oom_kill_task(h, t)
    assert t.oom_killed and t.exited and t.exit_status == 137
    assert e.released and cur(h, "/a") == 0


def test_selftest_f_shape_all_fail():
    """Test F of run_epc_cg_selftests.sh (v16 patch 16; scaled to a 1 MiB host): memory.max = C -
    2*C/128 in the cgroup; 4 concurrent enclaves, each adding 400 pages (> C) under a 64-page EPC
    limit, so each alone needs more backing than memory.max -> every process is
    OOM-killed (137), none succeeds, and nothing leaks."""
    c = 256 * P
    h = mkhost("1MiB")
    h.fs.mkdir("/large")
    h.fs.write("/large/misc.max", f"sgx_epc {64 * P}")
    h.fs.write("/large/memory.max", str(c - 2 * (c // 128)))
    tasks = [h.spawn("/large") for _ in range(4)]
    rr = RoundRobin(h)

    def work(t):
        e = ioctl.sgx_open(h, t)
        try:
            yield from ioctl.ioc_enclave_create(h, t, e, 2 << 20)
            yield from ioctl.ioc_enclave_add_pages(h, t, e, 0, 400 * P)
        except SgxIoctlError:
            if not t.exited:
                task_exit(h, t, 1)  # the harness assertion fails
            return 1
        if not t.exited:
            task_exit(h, t, 0)
        return 0

    for i, t in enumerate(tasks):
        rr.add(i, work(t))
    rr.run(max_steps=200_000)
    for t in tasks:
        assert t.exited and t.exit_status != 0
    assert all(t.oom_killed and t.exit_status == 137 for t in tasks)
    assert oom_kills(h, "/large") == 4
    assert cur(h, "/large") == 0 and mem(h, "/large") == 0
    check_invariants(h, quiescent=True)
