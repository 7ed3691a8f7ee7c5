"""Tests of the rfc-knobs extension (``epcsim.kernel.rfc_knobs``; in no kernel): the
``sgx_epc.*`` files' text and errnos (as memory.low / memory.high / memory.reclaim /
memory.events / memory.stat / memory.pressure of cgroup v2), effective protection
(effective_protection(), mm/page_counter.c), a protected cgroup skipped by reclaim and
its ``low`` event, the memory.high penalty (calculate_high_delay(), mm/memcontrol.c),
sgx_epc.reclaim's EAGAIN, the counters against the EWB count, PSI's text
(kernel/sched/psi.c), the scenario key and the built-in mixed-priority.
"""

from __future__ import annotations

import errno

import pytest

from epcsim.errors import ScenarioError
from epcsim.kernel import Host, check_invariants, drive, ioctl
from epcsim.kernel import encls as leaf
from epcsim.kernel.constants import PAGE_SIZE
from epcsim.kernel.epc_cgroup import RECLAIM_DIRECT, RECLAIM_KSGXD, sgx_cgroup_reclaim_pages
from epcsim.kernel.rfc_knobs import (
    MEMCG_MAX_HIGH_DELAY_JIFFIES,
    calc_load,
    calculate_high_delay,
    calculate_overage,
    effective_protection,
    psi_task_change,
    rfc_knobs_enable,
    sgx_cgroup_below_low,
    sgx_cgroup_elow,
    sgx_cgroup_handle_over_high,
)
from epcsim.scenario import load_scenario

P = PAGE_SIZE
RFC_FILES = [
    "sgx_epc.events",
    "sgx_epc.high",
    "sgx_epc.low",
    "sgx_epc.pressure",
    "sgx_epc.reclaim",
    "sgx_epc.stat",
]
ZERO_PSI = (
    "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
)


def new_host(*dirs: str, epc: str = "16MiB", rfc: bool = True) -> Host:
    h = Host(epc)
    if rfc:
        rfc_knobs_enable(h)
    h.fs.write("/cgroup.subtree_control", "+misc +memory")
    for d in dirs:
        h.fs.mkdir(d)
    return h


def new_enclave(h: Host, task, npages: int, *, accessed: bool = False):
    """An enclave with *npages* EADDed pages (usage: 1 VA + 1 SECS + npages), not
    initialised (its SECS is never written back)."""
    e = ioctl.sgx_open(h, task)
    drive(ioctl.ioc_enclave_create(h, task, e, 1 << 20))
    if npages:
        drive(ioctl.ioc_enclave_add_pages(h, task, e, 0, npages * P))
    if accessed:
        assert drive(ioctl.encl_access(h, task, e, list(range(npages)))).done == npages
    return e


def raises_errno(code: int, fn, *args, **kw) -> None:
    with pytest.raises(OSError) as ei:
        fn(*args, **kw)
    assert ei.value.errno == code, ei.value


def pages(h: Host, path: str) -> int:
    return h.cgroup(path).misc.usage // P


# --- the files ------------------------------------------------------------------------------


def test_files_exist_only_with_the_extension_and_not_at_the_root() -> None:
    h = new_host("/a", rfc=False)
    assert not [n for n in h.fs.listdir("/a") if n.startswith("sgx_epc.")]
    h = new_host("/a")
    assert [n for n in h.fs.listdir("/a") if n.startswith("sgx_epc.")] == RFC_FILES
    assert not [n for n in h.fs.listdir("/") if n.startswith("sgx_epc.")]
    raises_errno(errno.ENOENT, h.fs.read, "/sgx_epc.low")
    raises_errno(errno.ENOENT, h.fs.write, "/sgx_epc.low", "0")
    # only where misc is enabled
    h.fs.write("/a/cgroup.subtree_control", "+memory")
    h.fs.mkdir("/a/m")
    raises_errno(errno.ENOENT, h.fs.read, "/a/m/sgx_epc.low")


def test_low_and_high_text_and_errnos() -> None:
    """memory_low_write() / memory_high_write(): page_counter_memparse(strstrip(buf),
    "max"): memparse units, rounded down to pages; anything after the number is EINVAL;
    an empty write is 0 (memparse("") is 0 with nothing left)."""
    h = new_host("/a")
    fs = h.fs
    assert fs.read("/a/sgx_epc.low") == "0\n"
    assert fs.read("/a/sgx_epc.high") == "max\n"
    assert fs.write("/a/sgx_epc.low", "8K\n") == 3
    assert fs.read("/a/sgx_epc.low") == "8192\n"
    fs.write("/a/sgx_epc.low", "4097")
    assert fs.read("/a/sgx_epc.low") == "4096\n"
    fs.write("/a/sgx_epc.low", " max ")
    assert fs.read("/a/sgx_epc.low") == "max\n"
    fs.write("/a/sgx_epc.low", "")
    assert fs.read("/a/sgx_epc.low") == "0\n"
    fs.write("/a/sgx_epc.high", "0x2000")
    assert fs.read("/a/sgx_epc.high") == "8192\n"
    for bad in ("8MiB", "abc", "1 2", "-1", "max1"):
        raises_errno(errno.EINVAL, fs.write, "/a/sgx_epc.low", bad)
        raises_errno(errno.EINVAL, fs.write, "/a/sgx_epc.high", bad)
    assert fs.read("/a/sgx_epc.low") == "0\n"  # unchanged by the failures
    assert fs.read("/a/sgx_epc.high") == "8192\n"
    raises_errno(errno.E2BIG, fs.write, "/a/sgx_epc.low", "1" * (P + 1))
    raises_errno(errno.ENOTDIR, fs.read, "/a/sgx_epc.low/")


def test_read_only_and_write_only_files() -> None:
    """events, stat, pressure are read-only (EACCES to a write); reclaim is write-only
    (kernfs_fop_open(): EACCES to a read); their text before anything ran."""
    h = new_host("/a")
    fs = h.fs
    for name in ("sgx_epc.events", "sgx_epc.stat", "sgx_epc.pressure"):
        raises_errno(errno.EACCES, fs.write, f"/a/{name}", "0")
    raises_errno(errno.EACCES, fs.read, "/a/sgx_epc.reclaim")
    assert fs.read("/a/sgx_epc.events") == "low 0\nhigh 0\n"
    assert fs.read("/a/sgx_epc.stat") == (
        "reclaimed_ksgxd 0\nreclaimed_async 0\nreclaimed_sync 0\nreclaimed_direct 0\n"
        "scanned 0\nrotated 0\neldu 0\noom_kill 0\n"
    )
    assert fs.read("/a/sgx_epc.pressure") == ZERO_PSI
    raises_errno(errno.EINVAL, fs.write, "/a/sgx_epc.reclaim", "max")
    raises_errno(errno.EINVAL, fs.write, "/a/sgx_epc.reclaim", "4K x")


# --- sgx_epc.low ---------------------------------------------------------------------------


def test_effective_protection_values() -> None:
    """effective_protection(usage, parent_usage, setting, parent_effective,
    siblings_protected) without memory_recursiveprot."""
    # within the parent's protection: min(usage, setting)
    assert effective_protection(6, 12, 8, 20, 12) == 6
    assert effective_protection(9, 12, 8, 20, 12) == 8
    # the children claim 12 > the parent's 10: 6 * 10 / 12 = 5 (proportional)
    assert effective_protection(6, 12, 8, 10, 12) == 5
    # one child claiming 6 under a parent protected to 4: 6 * 4 / 6 = 4 (capped)
    assert effective_protection(6, 6, 8, 4, 6) == 4


def _tree(p_low: int, a_low: int, b_low: int) -> Host:
    """/p with /p/a and /p/b, each child with a 4-page enclave: usage a = b = 6 pages
    (VA + SECS + 4), p = 12.  Lows in pages."""
    h = new_host("/p")
    h.fs.write("/p/cgroup.subtree_control", "+misc")
    for c in ("a", "b"):
        h.fs.mkdir(f"/p/{c}")
        new_enclave(h, h.spawn(f"/p/{c}"), 4)
    h.fs.write("/p/sgx_epc.low", str(p_low * P))
    h.fs.write("/p/a/sgx_epc.low", str(a_low * P))
    h.fs.write("/p/b/sgx_epc.low", str(b_low * P))
    assert (pages(h, "/p"), pages(h, "/p/a"), pages(h, "/p/b")) == (12, 6, 6)
    return h


def test_elow_proportional_when_children_overcommit() -> None:
    """Reclaim rooted at /: /p (a child of the root) keeps its 10; its children claim
    min(6, 8) + min(6, 8) = 12 > 10, so each gets 6 * 10 / 12 = 5 < usage 6: not below
    low.  With /p at 12 each gets its 6: below low."""
    h = _tree(10, 8, 8)
    root, p = h.sgx_cg_root, h.sgx_cgroup_of("/p")
    a, b = h.sgx_cgroup_of("/p/a"), h.sgx_cgroup_of("/p/b")
    assert sgx_cgroup_elow(root, p) == 10
    assert (sgx_cgroup_elow(root, a), sgx_cgroup_elow(root, b)) == (5, 5)
    assert not sgx_cgroup_below_low(root, a)
    assert not sgx_cgroup_below_low(root, p)  # elow 10 < usage 12
    h.fs.write("/p/sgx_epc.low", str(12 * P))
    assert (sgx_cgroup_elow(root, a), sgx_cgroup_below_low(root, a)) == (6, True)


def test_elow_capped_by_the_ancestor() -> None:
    """/p protected to 4 pages, /p/a claims 8 (uses 6), /p/b claims 0: siblings
    protected = 6 > 4, so a's elow = 6 * 4 / 6 = 4 (capped by /p); b's 0.  Reclaim
    rooted at /p: /p itself is unprotected and its children keep their own setting."""
    h = _tree(4, 8, 0)
    root, p = h.sgx_cg_root, h.sgx_cgroup_of("/p")
    a, b = h.sgx_cgroup_of("/p/a"), h.sgx_cgroup_of("/p/b")
    assert sgx_cgroup_below_low(root, p) is False  # elow 4 < usage 12
    assert (sgx_cgroup_elow(root, a), sgx_cgroup_elow(root, b)) == (4, 0)
    assert sgx_cgroup_elow(p, p) == 0 and not sgx_cgroup_below_low(p, p)
    assert (sgx_cgroup_elow(p, a), sgx_cgroup_below_low(p, a)) == (8, True)


def _two_tenants(low_a: bool) -> Host:
    """/a and /b with a 4-page enclave each (usage 6 = VA + SECS + 4, pages old, LRUs
    a: 4 pages, b: 4 pages); /a protected to its usage when *low_a*."""
    h = new_host("/a", "/b")
    for c in ("a", "b"):
        new_enclave(h, h.spawn(f"/{c}"), 4)
    if low_a:
        h.fs.write("/a/sgx_epc.low", "24K")  # 6 pages: elow 6 >= usage 6
    return h


def test_reclaim_cursor_order_without_protection() -> None:
    """sgx_cgroup_reclaim_pages(root, nr_to_scan 16) from a fresh cursor: /, then /a
    (4 pages written back, cnt 4), /b (cnt 8), / again; then every LRU is empty."""
    h = _two_tenants(False)
    a, b = h.sgx_cgroup_of("/a"), h.sgx_cgroup_of("/b")
    gen = sgx_cgroup_reclaim_pages(h, h.sgx_cg_root, None, 16)
    assert next(gen) == "reclaim:isolated"
    assert (a.lru.nr, b.lru.nr) == (0, 4)  # /a first
    assert drive(gen) == 8
    assert h.fs.read("/a/sgx_epc.events") == "low 0\nhigh 0\n"


def test_protected_cgroup_skipped_then_reclaimed_with_a_low_event() -> None:
    """The same reclaim with /a below its low: the cursor gives /, /a (skipped: /b
    has unprotected pages), /b (4 written back), /, /a (nothing unprotected is
    reclaimable now: reclaimed, one ``low`` event)."""
    h = _two_tenants(True)
    a, b = h.sgx_cgroup_of("/a"), h.sgx_cgroup_of("/b")
    gen = sgx_cgroup_reclaim_pages(h, h.sgx_cg_root, None, 16)
    assert next(gen) == "reclaim:isolated"
    assert (a.lru.nr, b.lru.nr) == (4, 0)  # /b first: /a was skipped
    assert h.fs.read("/a/sgx_epc.events") == "low 0\nhigh 0\n"
    assert drive(gen) == 8
    assert (a.lru.nr, b.lru.nr) == (0, 0)
    assert h.fs.read("/a/sgx_epc.events") == "low 1\nhigh 0\n"
    assert h.fs.read("/b/sgx_epc.events") == "low 0\nhigh 0\n"
    assert (a.nr_reclaim_batches, b.nr_reclaim_batches) == (1, 1)
    check_invariants(h, quiescent=True)


# --- stat ----------------------------------------------------------------------------------


def test_stat_counts_by_kind_and_sums_to_the_ewb_count() -> None:
    """/a's 4 pages are reclaimed by a direct reclaim (sgx_cgroup_reclaim_pages() with
    by=RECLAIM_DIRECT); /b's 4, accessed, go through ksgxd's kind: the first batch
    rotates all 4 (young), the second writes them back.  Scanned 4 and 8; EWB = 8 =
    the reclaimed pages of every cgroup (no SECS is written back: not initialised)."""
    h = new_host("/a", "/b")
    new_enclave(h, h.spawn("/a"), 4)
    tb = h.spawn("/b")
    new_enclave(h, tb, 4, accessed=True)
    a, b = h.sgx_cgroup_of("/a"), h.sgx_cgroup_of("/b")
    assert drive(sgx_cgroup_reclaim_pages(h, a, None, 4, by=RECLAIM_DIRECT)) == 4
    assert drive(sgx_cgroup_reclaim_pages(h, b, None, 8, by=RECLAIM_KSGXD)) == 8
    assert h.fs.read("/a/sgx_epc.stat") == (
        "reclaimed_ksgxd 0\nreclaimed_async 0\nreclaimed_sync 0\nreclaimed_direct 4\n"
        "scanned 4\nrotated 0\neldu 0\noom_kill 0\n"
    )
    assert h.fs.read("/b/sgx_epc.stat") == (
        "reclaimed_ksgxd 4\nreclaimed_async 0\nreclaimed_sync 0\nreclaimed_direct 0\n"
        "scanned 8\nrotated 4\neldu 0\noom_kill 0\n"
    )
    total = sum(sum(c.nr_reclaimed_by) for c in h.sgx_cgroups if c is not None)
    assert total == h.encls_count[leaf.EWB] == 8
    # a fault loads one back: ELDU counted against /b (the page's cgroup)
    e = h.encls[tb.encl_fds[0]]
    assert drive(ioctl.encl_access(h, tb, e, [0])).done == 1
    assert b.nr_eldu == 1 and h.encls_count[leaf.ELDU] == 1


# --- sgx_epc.reclaim -------------------------------------------------------------------------


def test_reclaim_write_short_is_eagain() -> None:
    """memory_reclaim(): "16K" asks for 4 pages of /a, which has 3 young pages.  Attempt
    1: sgx_cgroup_reclaim_pages(/a, 4) rotates the 3 (young), the LRU is not empty and
    cnt 3 < 4, so it isolates them again: written back (reclaimed 3).  Attempt 2 asks
    for 1: every LRU is empty, 0 reclaimed; 16 retries more reclaim nothing: EAGAIN,
    the 3 pages gone (usage 5 -> 2)."""
    h = new_host("/a")
    new_enclave(h, h.spawn("/a"), 3, accessed=True)
    assert pages(h, "/a") == 5
    raises_errno(errno.EAGAIN, h.fs.write, "/a/sgx_epc.reclaim", "16K")
    assert pages(h, "/a") == 2
    a = h.sgx_cgroup_of("/a")
    assert (a.nr_scanned, a.nr_rotated, a.nr_reclaimed_by[RECLAIM_DIRECT]) == (6, 3, 3)
    # enough: 2 old pages, "8K" reclaims them in one attempt
    h.fs.mkdir("/b")
    new_enclave(h, h.spawn("/b"), 2)
    assert h.fs.write("/b/sgx_epc.reclaim", "8K") == 2
    assert pages(h, "/b") == 2
    assert h.fs.write("/b/sgx_epc.reclaim", "0") == 1  # nothing asked: done


# --- sgx_epc.high ------------------------------------------------------------------------------


def test_calculate_overage_and_high_delay_values() -> None:
    """calculate_overage() = ((usage - high) << 20) / high; calculate_high_delay() =
    (overage^2 * HZ >> 20 >> 14) * nr_pages / MEMCG_CHARGE_BATCH, HZ = 1000, batch 64."""
    assert calculate_overage(100, 100) == 0
    assert calculate_overage(150, 100) == 1 << 19  # 50 %
    assert calculate_overage(200, 100) == 1 << 20  # 100 %
    assert calculate_overage(5, 0) == 4 << 20  # high 0 counts as 1 page
    assert calculate_high_delay(1, 0) == 0
    # 100 %: 2^40 * 1000 >> 34 = 64000 jiffies for a 64-page charge, 1000 for one page
    assert calculate_high_delay(64, 1 << 20) == 64000
    assert calculate_high_delay(1, 1 << 20) == 1000
    # 50 %: 2^38 * 1000 >> 34 = 16000; one page: 16000 / 64 = 250
    assert calculate_high_delay(1, 1 << 19) == 250
    # 10 %: overage 104857; 104857^2 * 1000 >> 34 = 639; one page: 9 <= HZ/100: no sleep
    assert calculate_high_delay(1, calculate_overage(110, 100)) == 9
    assert MEMCG_MAX_HIGH_DELAY_JIFFIES == 2000


def test_handle_over_high_reclaims_back_below_high() -> None:
    """/a holds 8 old pages + VA + SECS = 10; a high of 6 pages is set through the
    struct (a write would reclaim at once: memory_high_write()); the fault's return
    reclaims the overage, 4 pages asked, in one sgx_reclaim_pages() batch, which
    isolates up to SGX_NR_TO_SCAN = 16 whatever is asked: all 8 go.  One high event,
    usage 2, no sleep."""
    h = new_host("/a")
    t = h.spawn("/a")
    new_enclave(h, t, 8)
    a = h.sgx_cgroup_of("/a")
    a.rfc.high = 6
    assert drive(sgx_cgroup_handle_over_high(h, t, 1)) == 0
    assert pages(h, "/a") == 2
    assert h.fs.read("/a/sgx_epc.events") == "low 0\nhigh 1\n"
    assert a.nr_reclaimed_by[RECLAIM_DIRECT] == 8


def test_handle_over_high_sleeps_when_reclaim_cannot_help() -> None:
    """High 0 with only VA + SECS charged (2 pages, nothing on an LRU): overage
    (2 - 1) << 20 / 1 = 2^20, penalty 1000 jiffies (one page) > HZ/100; reclaim gets
    nothing 1 + MAX_RECLAIM_RETRIES = 17 times (17 high events), then 1 s of sleep."""
    h = new_host("/a")
    t = h.spawn("/a")
    new_enclave(h, t, 0)
    assert pages(h, "/a") == 2
    h.sgx_cgroup_of("/a").rfc.high = 0
    assert drive(sgx_cgroup_handle_over_high(h, t, 1)) == 1_000_000_000
    assert h.fs.read("/a/sgx_epc.events") == "low 0\nhigh 17\n"
    # the write reclaims too (memory_high_write()): usage 10 over a high of 4 pages,
    # one batch takes the 8 old pages
    h.fs.mkdir("/b")
    new_enclave(h, h.spawn("/b"), 8)
    assert h.fs.write("/b/sgx_epc.high", "16K") == 3
    assert pages(h, "/b") == 2
    assert h.fs.read("/b/sgx_epc.events") == "low 0\nhigh 0\n"  # a write counts none


# --- sgx_epc.pressure --------------------------------------------------------------------------


def test_calc_load_step() -> None:
    """calc_load(0, EXP_10s, 60 % = 122880): (122880 * 371 + 2047) / 2048 = 22260."""
    assert calc_load(0, 1677, 60 * 2048) == 22260
    assert calc_load(22260, 1677, 0) == 22260 * 1677 // 2048


def test_pressure_text_after_a_hand_computed_stall() -> None:
    """Two threads of /a run from 0; thread 1 stalls from 0.5 s, thread 2 from 1.5 s;
    both leave at 1.7 s.  some = [0.5, 1.7) = 1.2 s, full = [1.5, 1.7) = 0.2 s; totals
    in us.  At 1.9 s no 2 s period has closed: the averages are 0.  At 2 s the period
    closes: some = 60 %, full = 10 % (times FIXED_1 = 2048):
    avg10 = (122880 * (2048 - 1677) + 2047) / 2048 = 22260 -> 10.86 (22260 >> 11 = 10,
    (22260 & 2047) * 100 >> 11 = 86); avg60 = (122880 * 67 + 2047) / 2048 = 4020 ->
    1.96; avg300 = (122880 * 14 + 2047) / 2048 = 840 -> 0.41.  full: 20480 gives
    3710 -> 1.81, 670 -> 0.32, 140 -> 0.06."""
    h = new_host("/a")
    now = {"t": 0}
    h.rfc.clock = lambda: now["t"]
    cg = h.cgroup("/a")
    s = 1_000_000_000
    psi_task_change(h, cg, 0, nonidle=2)
    psi_task_change(h, cg, s // 2, stalled=1)
    psi_task_change(h, cg, 3 * s // 2, stalled=1)
    psi_task_change(h, cg, 17 * s // 10, stalled=-2)
    now["t"] = 19 * s // 10
    assert h.fs.read("/a/sgx_epc.pressure") == (
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=1200000\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=200000\n"
    )
    now["t"] = 2 * s
    assert h.fs.read("/a/sgx_epc.pressure") == (
        "some avg10=10.86 avg60=1.96 avg300=0.41 total=1200000\n"
        "full avg10=1.81 avg60=0.32 avg300=0.06 total=200000\n"
    )
    # the root has no file; the parent of a nested cgroup sees its children's stalls
    assert h.rfc.psi.get(h.root) is None


# --- the scenario key ----------------------------------------------------------------------------

_SC = 'name = "x"\n[host]\nepc = "1MiB"\n'


def test_extensions_key_validated_and_dumped_only_when_set() -> None:
    plain = load_scenario(_SC)
    assert plain.host.extensions == []
    assert "extensions" not in plain.model_dump(mode="json")["host"]
    withx = load_scenario(_SC, overrides=['host.extensions=["rfc-knobs"]'])
    assert withx.model_dump(mode="json")["host"]["extensions"] == ["rfc-knobs"]
    assert withx.digest() != plain.digest()
    assert load_scenario(_SC, overrides=["host.extensions=[]"]).digest() == plain.digest()
    with pytest.raises(ScenarioError) as ei:
        load_scenario(_SC, overrides=['host.extensions=["nope"]'])
    assert "host.extensions" in str(ei.value)
    assert "unknown extension 'nope'; known: rfc-knobs" in str(ei.value)
    with pytest.raises(ScenarioError) as ei:
        load_scenario(_SC, overrides=['host.extensions=["rfc-knobs"]', "host.misc=false"])
    assert str(ei.value) == (
        "<string>: host.extensions: rfc-knobs needs the misc controller (host.misc = true)"
    )


def test_the_compiled_engine_refuses_extensions() -> None:
    from epcsim.compiled.eligibility import static_ineligibility

    enclave = (
        '[[enclave]]\nname = "e"\nsize = "64KiB"\n'
        'workload = { pattern = "sequential", accesses = 10 }\n'
    )
    sc = load_scenario(_SC + enclave)
    assert static_ineligibility(sc) is None
    sc = load_scenario(_SC + enclave, overrides=['host.extensions=["rfc-knobs"]'])
    assert static_ineligibility(sc) == (
        "the compiled engine runs no extension (host.extensions: epcsim.kernel.rfc_knobs)"
    )


def test_scenario_writes_to_the_files_are_checked() -> None:
    sc = (
        _SC
        + 'extensions = ["rfc-knobs"]\n[[cgroup]]\npath = "/a"\n'
        + '[[at]]\nwrite = { path = "/a/sgx_epc.low", value = "8MiB" }\n'
    )
    with pytest.raises(ScenarioError) as ei:
        load_scenario(sc)
    assert "at[0].write.value" in str(ei.value)
    assert load_scenario(sc.replace('"8MiB"', '"capacity/2"')).at[0].write.value == "capacity/2"


# --- the built-in ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_mixed_priority_protection_lowers_the_protected_tenants_faults() -> None:
    """builtin:mixed-priority with and without the sgx_epc.low write: protected, the
    latency tenant never faults and no reclaim batch runs on its LRU; unprotected, ksgxd
    rotates over its LRU too and it faults (524 faults; it ends with SIGBUS)."""
    from epcsim.sim.engine import Simulation

    runs = {}
    for label, ov in (("low", []), ("none", ['at.0.write.value="0"'])):
        sim = Simulation(load_scenario("builtin:mixed-priority", overrides=ov), engine="reference")
        res = sim.run()
        check_invariants(sim.host)
        runs[label] = res.summary
    low, none = runs["low"], runs["none"]
    assert low["passed"]
    assert low["enclaves"]["latency"]["faults"] == 0
    assert low["cgroups"]["/latency"]["reclaim_batches"] == 0
    assert none["enclaves"]["latency"]["faults"] == 524
    assert none["enclaves"]["latency"]["exit_status"] == 135
    assert none["cgroups"]["/latency"]["reclaim_batches"] > 0


# --- in a run -------------------------------------------------------------------------------

_RUN = """\
name = "rfc-run"
[host]
epc = "1MiB"
cpus = 2
duration = "1s"
[[cgroup]]
path = "/a"
max = "256KiB"
[[enclave]]
name = "e"
cgroup = "/a"
size = "512KiB"
build = "eaug"
threads = 2
workload = { pattern = "uniform", accesses = 3000 }
"""


def _run(overrides: list[str]):
    from epcsim.sim.engine import Simulation

    sim = Simulation(load_scenario(_RUN, overrides=overrides), engine="reference")
    res = sim.run()
    check_invariants(sim.host)
    return sim, res.summary


def test_the_extension_alone_changes_no_output_and_adds_its_key() -> None:
    """With rfc-knobs on and no knob written the run is the same (the extension only
    counts): every summary key but the scenario's hash is equal, plus ``rfc_knobs``;
    the stat counters sum to the EWB count; the threads stalled (PSI totals > 0, full
    <= some)."""
    _, plain = _run([])
    sim, ext = _run(['host.extensions=["rfc-knobs"]'])
    assert "rfc_knobs" not in plain
    rk = ext.pop("rfc_knobs")
    for k in ("scenario_hash",):
        plain.pop(k), ext.pop(k)
    assert ext == plain
    a = rk["/a"]
    assert (a["low_bytes"], a["high_bytes"], a["events"]) == (0, None, {"low": 0, "high": 0})
    st = a["stat"]
    reclaimed = sum(st[f"reclaimed_{k}"] for k in ("ksgxd", "async", "sync", "direct"))
    assert reclaimed == plain["cgroups"]["/a"]["evictions"] > 0
    assert reclaimed + plain["enclaves"]["e"]["secs_evicted"] == plain["encls"]["EWB"]
    assert st["eldu"] == plain["encls"]["ELDU"]
    assert 0 < a["pressure_total_us"]["full"] <= a["pressure_total_us"]["some"]
    text = sim.host.fs.read("/a/sgx_epc.pressure")
    assert text.startswith("some avg10=") and f"total={a['pressure_total_us']['some']}\n" in text


def test_high_in_a_run_throttles_and_reclaims() -> None:
    """sgx_epc.high at 128K (half the limit): faults return over high, reclaim and
    count high events; the run differs from the one without."""
    _, plain = _run(['host.extensions=["rfc-knobs"]'])
    at = ['at=[{time = "0s", write = {path = "/a/sgx_epc.high", value = "128K"}}]']
    _, high = _run(['host.extensions=["rfc-knobs"]', *at])
    ev = high["rfc_knobs"]["/a"]["events"]
    assert ev["high"] > 0 and ev["low"] == 0
    assert high["rfc_knobs"]["/a"]["stat"]["reclaimed_direct"] > 0
    assert plain["rfc_knobs"]["/a"]["stat"]["reclaimed_direct"] == 0
    assert high["cgroups"]["/a"]["peak_bytes"] <= plain["cgroups"]["/a"]["peak_bytes"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [n for n, _ in __import__("epcsim").list_builtins() if n != "mixed-priority"]
)
def test_every_builtin_is_unchanged_by_the_extension_alone(name: str) -> None:
    """Each built-in with rfc-knobs on (no knob written), on the reference engine: the
    invariants hold at the end and the summary is v16's but for the hash and the new
    ``rfc_knobs`` key."""
    from epcsim.sim.engine import Simulation

    out = []
    for ov in ([], ['host.extensions=["rfc-knobs"]']):
        sim = Simulation(load_scenario(f"builtin:{name}", overrides=ov), engine="reference")
        s = sim.run().summary
        check_invariants(sim.host)
        s.pop("scenario_hash")
        out.append(s)
    plain, ext = out
    assert set(ext.pop("rfc_knobs")) == {p for p in plain["cgroups"] if p != "/"}
    assert ext == plain
