"""Tests of the misc controller model for ``sgx_epc`` (kernel/cgroup/misc.c, with the resource
type of v16 patch 4 "cgroup/misc: Add SGX EPC resource type"; constants of sgx.h).

Covers ``misc_cg_try_charge()`` / ``misc_cg_uncharge()`` / ``misc_cg_event()`` on MiscCg
objects, ``kstrtou64()`` (lib/kstrtox.c as used by ``misc_cg_max_write()``), the text of
the misc interface files, ``misc.max`` writes, and the ``max`` event counters as seen
through real allocations (``sgx_cgroup_try_charge()``, v16 patch 9).
"""

from __future__ import annotations

import errno

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from epcsim.kernel import Host, check_invariants, drive, ioctl
from epcsim.kernel.constants import EBUSY, EINVAL, ERANGE, MAX_NUM, MISC_RES_NAMES, PAGE_SIZE
from epcsim.kernel.misc import (
    MiscCg,
    kstrtou64,
    misc_cg_charge_if_fits,
    misc_cg_refuser,
    misc_cg_try_charge,
    misc_cg_uncharge,
)

P = PAGE_SIZE
U64_MAX = (1 << 64) - 1
ENCL_SIZE = 1 << 20  # 256 pages: room for every ADD_PAGES below


# --- helpers ------------------------------------------------------------------------------


def make_host(epc: str = "1MiB", *dirs: str) -> Host:
    """A host with ``+misc +memory`` at the root and every cgroup in *dirs* created;
    a directory that has children in *dirs* gets ``+misc`` in its subtree_control."""
    h = Host(epc)
    h.fs.write("/cgroup.subtree_control", "+misc +memory")
    for d in dirs:
        h.fs.mkdir(d)
    for d in dirs:
        if any(o.startswith(d + "/") for o in dirs):
            h.fs.write(d + "/cgroup.subtree_control", "+misc")
    return h


def misc_of(h: Host, path: str) -> MiscCg:
    cg = h.cgroup(path).misc
    assert cg is not None
    return cg


def new_enclave(h: Host, task, npages: int = 0):
    """open + ECREATE (charges 1 VA page + the SECS), then ADD_PAGES of *npages*."""
    e = ioctl.sgx_open(h, task)
    drive(ioctl.ioc_enclave_create(h, task, e, ENCL_SIZE))
    if npages:
        drive(ioctl.ioc_enclave_add_pages(h, task, e, 0, npages * P))
    return e


def add_page_fails_enomem(h: Host, task, e, index: int) -> None:
    with pytest.raises(ioctl.SgxIoctlError) as ei:
        drive(ioctl.ioc_enclave_add_pages(h, task, e, index * P, P))
    assert ei.value.errno == errno.ENOMEM
    assert ei.value.count == 0


def state(*cgs: MiscCg) -> list[tuple[int, int, int, int]]:
    return [(c.usage, c.peak, c.events, c.events_local) for c in cgs]


# --- misc_cg_try_charge / misc_cg_uncharge (kernel/cgroup/misc.c) ---------------------------------


def test_try_charge_is_hierarchical():
    """misc_cg_try_charge() (kernel/cgroup/misc.c): a successful charge adds the amount to the
    cgroup and every ancestor up to and including the root, and raises each level's peak."""
    h = make_host("1MiB", "/a", "/a/b")
    root, a, b = h.misc.root, misc_of(h, "/a"), misc_of(h, "/a/b")
    assert misc_cg_try_charge(b, 3 * P) == 0
    assert state(root, a, b) == [(3 * P, 3 * P, 0, 0)] * 3
    assert misc_cg_try_charge(a, P) == 0
    assert state(root, a, b) == [(4 * P, 4 * P, 0, 0), (4 * P, 4 * P, 0, 0), (3 * P, 3 * P, 0, 0)]


def test_try_charge_uncharge_walks_to_root_and_keeps_peak():
    """misc_cg_uncharge() (kernel/cgroup/misc.c): uncharge subtracts from the cgroup and every
    ancestor; peak is a watermark and is not lowered."""
    h = make_host("1MiB", "/a", "/a/b")
    root, a, b = h.misc.root, misc_of(h, "/a"), misc_of(h, "/a/b")
    assert misc_cg_try_charge(b, 5 * P) == 0
    misc_cg_uncharge(b, 2 * P)
    assert [(c.usage, c.peak) for c in (root, a, b)] == [(3 * P, 5 * P)] * 3
    misc_cg_uncharge(b, 3 * P)
    assert [(c.usage, c.peak) for c in (root, a, b)] == [(0, 5 * P)] * 3


def test_uncharge_below_zero_is_a_model_bug_assertion():
    """misc_cg_uncharge() (kernel/cgroup/misc.c): the kernel WARNs when a usage goes negative; the
    model raises."""
    h = make_host("1MiB", "/a")
    with pytest.raises(AssertionError):
        misc_cg_uncharge(misc_of(h, "/a"), P)


def test_try_charge_failure_at_middle_level():
    """misc_cg_try_charge() and misc_cg_event() (kernel/cgroup/misc.c): failure at level i (here the
    parent's max): events_local(i)+1, events(i)+1 and events of i's non-root ancestors +1; the
    requester's counters untouched; usage unchanged everywhere; returns -EBUSY."""
    h = make_host("1MiB", "/g", "/g/p", "/g/p/c")
    root, g, p, c = (h.misc.root, misc_of(h, "/g"), misc_of(h, "/g/p"), misc_of(h, "/g/p/c"))
    h.fs.write("/g/p/misc.max", f"sgx_epc {4 * P}")
    assert misc_cg_try_charge(c, 3 * P) == 0
    assert misc_cg_try_charge(c, 2 * P) == -EBUSY
    assert [x.usage for x in (root, g, p, c)] == [3 * P] * 4
    assert [x.events_local for x in (root, g, p, c)] == [0, 0, 1, 0]
    # hierarchical events: p and its non-root ancestors; the root has no misc.events
    assert [x.events for x in (root, g, p, c)] == [0, 1, 1, 0]
    assert h.fs.read("/g/p/c/misc.events") == "sgx_epc.max 0\n"
    assert h.fs.read("/g/p/c/misc.events.local") == "sgx_epc.max 0\n"
    assert h.fs.read("/g/p/misc.events") == "sgx_epc.max 1\n"
    assert h.fs.read("/g/p/misc.events.local") == "sgx_epc.max 1\n"
    assert h.fs.read("/g/misc.events") == "sgx_epc.max 1\n"
    assert h.fs.read("/g/misc.events.local") == "sgx_epc.max 0\n"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 8), min_size=4, max_size=4),
    st.lists(st.one_of(st.none(), st.integers(0, 8)), min_size=4, max_size=4),
    st.integers(0, 3),
    st.integers(0, 3),
)
def test_refuser_and_charge_if_fits_agree_with_try_charge(usage, maxes, who, amount) -> None:
    """misc_cg_refuser() names the level at which misc_cg_try_charge() fails (the one
    whose events_local it counts), None where it succeeds; misc_cg_charge_if_fits()
    charges exactly when it would succeed, and changes nothing otherwise."""
    paths = ("/g", "/g/p", "/g/p/c", "/g/q")
    results = []
    for attempt in ("try", "fits"):
        h = make_host("32KiB", *paths)
        cgs = [misc_of(h, d) for d in paths]
        for cg, m in zip(cgs, maxes, strict=True):
            if m is not None:
                cg.max = m * P
        for cg, u in zip(cgs, usage, strict=True):  # own usage, charged up the tree
            i = cg
            while i is not None:
                i.usage += u * P // 4
                i = i.parent
        cg = cgs[who]
        refuser = misc_cg_refuser(cg, amount * P)
        before = [(x.usage, x.events_local) for x in (h.misc.root, *cgs)]
        if attempt == "try":
            ok = misc_cg_try_charge(cg, amount * P) == 0
            assert ok is (refuser is None)
            if refuser is not None:
                assert (
                    refuser.events_local
                    == dict(zip(map(id, (h.misc.root, *cgs)), before))[id(refuser)][1] + 1
                )
        else:
            ok = misc_cg_charge_if_fits(cg, amount * P)
            assert ok is (refuser is None)
            if not ok:
                assert [(x.usage, x.events_local) for x in (h.misc.root, *cgs)] == before
        results.append([x.usage for x in (h.misc.root, *cgs)])
    assert results[0] == results[1]


def test_try_charge_failure_at_requester_level():
    """misc_cg_event() (kernel/cgroup/misc.c): failure at the requester's own max: its events and
    events.local count, its ancestors' events count too, their events.local do not."""
    h = make_host("1MiB", "/a", "/a/b")
    root, a, b = h.misc.root, misc_of(h, "/a"), misc_of(h, "/a/b")
    h.fs.write("/a/b/misc.max", f"sgx_epc {P}")
    assert misc_cg_try_charge(b, P) == 0
    for n in range(1, 4):
        assert misc_cg_try_charge(b, P) == -EBUSY
        assert [(x.events, x.events_local) for x in (root, a, b)] == [(0, 0), (n, 0), (n, n)]
    assert [x.usage for x in (root, a, b)] == [P] * 3


def test_root_is_bounded_by_capacity():
    """misc_cg_try_charge() (kernel/cgroup/misc.c): the root's max is U64_MAX, but capacity is
    checked at every level, so the root fails at capacity; the event goes to the root's events_local
    only (the root has no misc.events)."""
    h = make_host("64KiB", "/a")  # capacity 16 pages
    root, a = h.misc.root, misc_of(h, "/a")
    assert root.max == MAX_NUM
    assert misc_cg_try_charge(root, 10 * P) == 0
    assert misc_cg_try_charge(a, 6 * P) == 0
    assert root.usage == h.capacity == 16 * P
    assert misc_cg_try_charge(a, P) == -EBUSY
    assert (root.events_local, root.events) == (1, 0)
    # a passed its own level (6+1 <= capacity): peak raised to 7 pages although undone
    assert (a.usage, a.peak, a.events, a.events_local) == (6 * P, 7 * P, 0, 0)
    assert (root.usage, root.peak) == (16 * P, 16 * P)


def test_capacity_checked_at_requester_level():
    """misc_cg_try_charge() (kernel/cgroup/misc.c): 'new usage > capacity' is tested at every level:
    an amount above the capacity fails at the requester itself, not at the root."""
    h = make_host("64KiB", "/a", "/a/b")
    root, a, b = h.misc.root, misc_of(h, "/a"), misc_of(h, "/a/b")
    assert misc_cg_try_charge(b, h.capacity + P) == -EBUSY
    assert [(x.usage, x.peak) for x in (root, a, b)] == [(0, 0)] * 3
    assert [x.events_local for x in (root, a, b)] == [0, 0, 1]
    assert [x.events for x in (root, a, b)] == [0, 1, 1]
    # exactly the capacity fits
    assert misc_cg_try_charge(b, h.capacity) == 0
    assert [x.usage for x in (root, a, b)] == [h.capacity] * 3


def test_peak_updated_below_failing_level():
    """misc_cg_try_charge() (kernel/cgroup/misc.c; misc_cg_update_watermark() as each level passes):
    when the charge fails at level i, the levels
    below i keep the raised peak although the charge is undone; level i and above do not."""
    h = make_host("1MiB", "/g", "/g/p", "/g/p/c")
    root, g, p, c = (h.misc.root, misc_of(h, "/g"), misc_of(h, "/g/p"), misc_of(h, "/g/p/c"))
    h.fs.write("/g/misc.max", "sgx_epc 8192")
    assert misc_cg_try_charge(c, P) == 0
    assert misc_cg_try_charge(c, 2 * P) == -EBUSY  # passes c and p, fails at g
    assert [x.usage for x in (root, g, p, c)] == [P] * 4
    assert [x.peak for x in (root, g, p, c)] == [P, P, 3 * P, 3 * P]
    assert h.fs.read("/g/p/c/misc.peak") == "sgx_epc 12288\n"
    assert h.fs.read("/g/p/c/misc.current") == "sgx_epc 4096\n"
    assert h.fs.read("/g/misc.peak") == "sgx_epc 4096\n"
    assert h.fs.read("/misc.peak") == "sgx_epc 4096\n"
    assert [x.events_local for x in (root, g, p, c)] == [0, 1, 0, 0]


def test_try_charge_amount_zero_succeeds_without_change():
    """misc_cg_try_charge() (kernel/cgroup/misc.c): amount 0 -> success, nothing changes (even at a
    max of 0)."""
    h = make_host("1MiB", "/a")
    a = misc_of(h, "/a")
    h.fs.write("/a/misc.max", "sgx_epc 0")
    assert misc_cg_try_charge(a, 0) == 0
    assert state(h.misc.root, a) == [(0, 0, 0, 0)] * 2


def test_try_charge_capacity_zero_is_einval():
    """misc_cg_try_charge() (kernel/cgroup/misc.c) before sgx_cgroup_register() (v16 patch 5):
    capacity 0 (resource not registered) -> -EINVAL before anything else, including for amount 0; no
    event, no usage."""
    h = make_host("1MiB", "/a")
    a = misc_of(h, "/a")
    h.misc.misc_cg_set_capacity(0)
    assert misc_cg_try_charge(a, P) == -EINVAL
    assert misc_cg_try_charge(a, 0) == -EINVAL
    assert state(h.misc.root, a) == [(0, 0, 0, 0)] * 2


def test_max_zero_blocks_every_charge():
    """misc_cg_max_write() / misc_cg_try_charge() (kernel/cgroup/misc.c): max 0 -> the first
    4096-byte charge fails."""
    h = make_host("1MiB", "/a")
    h.fs.write("/a/misc.max", "sgx_epc 0")
    assert misc_cg_try_charge(misc_of(h, "/a"), P) == -EBUSY
    assert h.fs.read("/a/misc.events") == "sgx_epc.max 1\n"


def test_max_stored_verbatim_effective_limit_floor_pages():
    """misc_cg_max_write() (kernel/cgroup/misc.c): max is stored verbatim (5000 reads back 5000)
    and, charges being in 4096-byte steps, the effective limit is floor(max/4096) pages."""
    h = make_host("1MiB", "/a", "/b")
    h.fs.write("/a/misc.max", "sgx_epc 5000")
    h.fs.write("/b/misc.max", "sgx_epc 12287")
    assert h.fs.read("/a/misc.max") == "sgx_epc 5000\n"
    assert h.fs.read("/b/misc.max") == "sgx_epc 12287\n"
    a, b = misc_of(h, "/a"), misc_of(h, "/b")
    assert misc_cg_try_charge(a, P) == 0
    assert misc_cg_try_charge(a, P) == -EBUSY
    assert [misc_cg_try_charge(b, P) for _ in range(3)] == [0, 0, -EBUSY]
    assert (a.usage, b.usage) == (P, 2 * P)


def test_lowering_max_below_usage_is_non_preemptive():
    """misc_cg_max_write() (kernel/cgroup/misc.c; the non-preemptive max of sgx.rst, v16 patch 15):
    a limit written below the usage evicts nothing; only the next charge fails."""
    h = make_host("1MiB", "/a")
    a = misc_of(h, "/a")
    assert misc_cg_try_charge(a, 3 * P) == 0
    h.fs.write("/a/misc.max", f"sgx_epc {P}")
    assert h.fs.read("/a/misc.current") == "sgx_epc 12288\n"
    assert h.fs.read("/a/misc.max") == "sgx_epc 4096\n"
    assert misc_cg_try_charge(a, P) == -EBUSY
    assert a.usage == 3 * P
    misc_cg_uncharge(a, 3 * P)
    assert misc_cg_try_charge(a, P) == 0


# --- kstrtou64 (lib/kstrtox.c, as misc_cg_max_write() uses it) ------------------------------------


@pytest.mark.parametrize(
    "s, expected",
    [
        ("0", 0),
        ("5", 5),
        ("5\n", 5),
        ("+5", 5),
        ("0x10", 16),
        ("0X1f", 31),
        ("0xFFFFFFFFFFFFFFFF", U64_MAX),
        ("010", 8),
        ("00", 0),
        ("4096", 4096),
        ("18446744073709551615", U64_MAX),
        ("01777777777777777777777", U64_MAX),
        ("000000000000000000000000000000000000005", 5),
    ],
)
def test_kstrtou64_valid(s, expected):
    """kstrtou64() (lib/kstrtox.c): u64 with auto base (0x = hex, leading 0 = octal), optional '+',
    one trailing newline."""
    assert kstrtou64(s, 0) == (0, expected)


@pytest.mark.parametrize(
    "s",
    [
        "",
        "\n",
        "+",
        "-1",
        "-0",
        "++5",
        "08",
        "09",
        "0x",  # no hex digit after 0x: octal "0", then trailing 'x'
        "0xg",
        "0x1g",
        "5\n\n",
        "5\r",
        " 5",
        "5 ",
        "abc",
        "ff",
        "1.5",
        "1_000",
        "1e3",
        "0b101",
        "5\n5",
        "\u0663",  # ARABIC-INDIC DIGIT THREE is not a digit for the kernel
    ],
)
def test_kstrtou64_einval(s):
    """kstrtou64() (lib/kstrtox.c): no digits, a sign other than one leading '+', or trailing
    garbage (anything but a single '\\n') -> -EINVAL."""
    assert kstrtou64(s, 0) == (-EINVAL, 0)


@pytest.mark.parametrize(
    "s",
    [
        "18446744073709551616",
        "18446744073709551616\n",
        "99999999999999999999999999",
        "0x10000000000000000",
        "02000000000000000000000",
        "18446744073709551616x",  # overflow is reported before trailing garbage
    ],
)
def test_kstrtou64_erange(s):
    """kstrtou64() (lib/kstrtox.c): a value above 2^64-1 -> -ERANGE."""
    assert kstrtou64(s, 0) == (-ERANGE, 0)


def test_kstrtou64_explicit_bases():
    """kstrtou64 with base 10 and 16 (base 16 skips a '0x' prefix even without a
    digit after it)."""
    assert kstrtou64("010", 10) == (0, 10)
    assert kstrtou64("10", 16) == (0, 16)
    assert kstrtou64("0x10", 16) == (0, 16)
    assert kstrtou64("0x", 16) == (-EINVAL, 0)
    assert kstrtou64("0x10", 10) == (-EINVAL, 0)


# --- interface file text (misc_cg_files of kernel/cgroup/misc.c) ----------------------------------


def test_initial_file_text():
    """misc_cg_files (kernel/cgroup/misc.c): default text of every misc file at the root and in a
    new child."""
    h = Host("16MiB")
    assert h.fs.read("/misc.capacity") == "sgx_epc 16777216\n"
    assert h.fs.read("/misc.current") == "sgx_epc 0\n"
    assert h.fs.read("/misc.peak") == "sgx_epc 0\n"
    h.fs.write("/cgroup.subtree_control", "+misc")
    h.fs.mkdir("/a")
    assert h.fs.read("/a/misc.max") == "sgx_epc max\n"
    assert h.fs.read("/a/misc.current") == "sgx_epc 0\n"
    assert h.fs.read("/a/misc.peak") == "sgx_epc 0\n"
    assert h.fs.read("/a/misc.events") == "sgx_epc.max 0\n"
    assert h.fs.read("/a/misc.events.local") == "sgx_epc.max 0\n"


def test_capacity_is_sum_of_sections():
    """sgx_cgroup_register() (main.c, v16 patch 5): capacity = total EPC bytes over all sections."""
    h = Host(sections=["1MiB", "2MiB"])
    assert h.fs.read("/misc.capacity") == f"sgx_epc {3 << 20}\n"


def test_lines_with_capacity_zero():
    """misc_cg_current_show() and friends (kernel/cgroup/misc.c): with capacity 0 the sgx_epc line
    is printed by current/peak/events only while the value is non-zero; misc.max and misc.capacity
    print nothing."""
    h = make_host("1MiB", "/a")
    a = misc_of(h, "/a")
    h.fs.write("/a/misc.max", "sgx_epc 4096")
    assert misc_cg_try_charge(a, P) == 0
    assert misc_cg_try_charge(a, P) == -EBUSY
    misc_cg_uncharge(a, P)
    h.misc.misc_cg_set_capacity(0)
    assert h.fs.read("/a/misc.max") == ""
    assert h.fs.read("/misc.capacity") == ""
    assert h.fs.read("/a/misc.current") == ""
    assert h.fs.read("/a/misc.peak") == "sgx_epc 4096\n"
    assert h.fs.read("/a/misc.events") == "sgx_epc.max 1\n"
    assert h.fs.read("/a/misc.events.local") == "sgx_epc.max 1\n"
    with pytest.raises(OSError) as ei:
        h.fs.write("/a/misc.max", "sgx_epc 8192")
    assert ei.value.errno == errno.EINVAL
    assert misc_of(h, "/a").max == P


# --- misc.max writes (misc_cg_max_write(), kernel/cgroup/misc.c) ----------------------------------


@pytest.mark.parametrize(
    "data, shown",
    [
        ("sgx_epc 4096", "sgx_epc 4096\n"),
        ("sgx_epc 4096\n", "sgx_epc 4096\n"),
        ("  sgx_epc 4096\n", "sgx_epc 4096\n"),
        ("\tsgx_epc 4096 \n\n", "sgx_epc 4096\n"),  # strstrip() takes every newline
        ("sgx_epc max", "sgx_epc max\n"),
        ("sgx_epc max\n", "sgx_epc max\n"),
        ("sgx_epc 0x1000", "sgx_epc 4096\n"),
        ("sgx_epc 010000", "sgx_epc 4096\n"),
        ("sgx_epc +8192", "sgx_epc 8192\n"),
        ("sgx_epc 0", "sgx_epc 0\n"),
        ("sgx_epc 5000", "sgx_epc 5000\n"),
        ("sgx_epc 16777216", "sgx_epc 16777216\n"),
        ("sgx_epc 1099511627776", "sgx_epc 1099511627776\n"),  # above capacity: fine
        ("sgx_epc 18446744073709551614", "sgx_epc 18446744073709551614\n"),
        ("sgx_epc 18446744073709551615", "sgx_epc max\n"),  # U64_MAX is MAX_NUM
    ],
)
def test_misc_max_write_valid(data, shown):
    """misc_cg_max_write() (kernel/cgroup/misc.c): '<name> <u64>' or '<name> max', surrounding
    whitespace stripped, auto base; stored verbatim; read back as '%s %llu\\n' or '%s max\\n'."""
    h = make_host("1MiB", "/a")
    assert h.fs.write("/a/misc.max", data) == len(data)
    assert h.fs.read("/a/misc.max") == shown


def test_misc_max_write_bytes_and_overwrite():
    """A bytes write works like a str write; a later write replaces the value and
    'max' restores the default."""
    h = make_host("1MiB", "/a")
    assert h.fs.write("/a/misc.max", b"sgx_epc 8192\n") == 13
    assert h.fs.read("/a/misc.max") == "sgx_epc 8192\n"
    h.fs.write("/a/misc.max", "sgx_epc 4096")
    assert misc_of(h, "/a").max == 4096
    h.fs.write("/a/misc.max", "sgx_epc max")
    assert misc_of(h, "/a").max == MAX_NUM
    assert h.fs.read("/a/misc.max") == "sgx_epc max\n"


@pytest.mark.parametrize(
    "data, err",
    [
        ("foo 1", errno.EINVAL),
        ("sev 1", errno.EINVAL),  # known name, capacity 0
        ("sev_es max", errno.EINVAL),
        ("tdx 1", errno.EINVAL),  # not a name of the modelled kernel (v6.11)
        # tdx came after the series' base: unknown, so EINVAL before the value's ERANGE
        ("tdx 99999999999999999999999", errno.EINVAL),
        ("tdx max", errno.EINVAL),
        ("sgx_epc", errno.EINVAL),
        ("sgx_epc ", errno.EINVAL),
        ("sgx_epc\n", errno.EINVAL),
        ("", errno.EINVAL),
        ("\n", errno.EINVAL),
        ("max", errno.EINVAL),
        ("4096", errno.EINVAL),
        ("sgx_epc -1", errno.EINVAL),
        ("sgx_epc abc", errno.EINVAL),
        ("sgx_epc 1.5", errno.EINVAL),
        ("sgx_epc  5", errno.EINVAL),  # double space: value ' 5'
        ("sgx_epc\t5", errno.EINVAL),  # only ' ' separates
        ("sgx_epc MAX", errno.EINVAL),
        ("sgx_epc 4K", errno.EINVAL),
        ("sgx_epc 0x", errno.EINVAL),
        ("sgx_epc 08", errno.EINVAL),
        ("sgx_epc 1 2", errno.EINVAL),
        ("SGX_EPC 5", errno.EINVAL),
        ("sgx_epc 4096\nsgx_epc 8192", errno.EINVAL),
        ("sgx_epc 18446744073709551616", errno.ERANGE),
        ("sgx_epc 0x10000000000000000", errno.ERANGE),
        # the value is parsed before the capacity test
        ("sev 18446744073709551616", errno.ERANGE),
        # but the name before the value
        ("foo 18446744073709551616", errno.EINVAL),
    ],
)
def test_misc_max_write_errors_keep_old_value(data, err):
    """misc_cg_max_write() (kernel/cgroup/misc.c): unknown name or zero capacity -> EINVAL;
    malformed value -> EINVAL; value above 2^64-1 -> ERANGE; the file still reads the old value."""
    h = make_host("1MiB", "/a")
    h.fs.write("/a/misc.max", "sgx_epc 8192")
    with pytest.raises(OSError) as ei:
        h.fs.write("/a/misc.max", data)
    assert ei.value.errno == err
    assert h.fs.read("/a/misc.max") == "sgx_epc 8192\n"
    assert misc_of(h, "/a").max == 8192


# --- hypothesis: misc.max write sequences -------------------------------------------------

_SPACE = " \t\n\v\f\r"
#: misc_res_name[] of v6.11 with the series (tdx is not one: it came in 2025)
_NAMES = ("sev", "sev_es", "sgx_epc")


def _oracle_kstrtou64(s: str) -> tuple[int, int]:
    """Independent transcription of lib/kstrtox.c kstrtoull(s, 0)."""
    if s[:1] == "+":
        s = s[1:]
    base, i = 10, 0
    if s[:1] == "0":
        if s[1:2].lower() == "x" and s[2:3] != "" and s[2] in "0123456789abcdefABCDEF":
            base, i = 16, 2
        else:
            base = 8
    digits = "0123456789abcdef"[:base]
    start, v = i, 0
    while i < len(s) and s[i].lower() in digits and s[i].isascii():
        v = v * base + digits.index(s[i].lower())
        i += 1
    if i == start:
        return -EINVAL, 0
    if v > U64_MAX:
        return -ERANGE, 0
    if s[i:] not in ("", "\n"):
        return -EINVAL, 0
    return 0, v


def _oracle_max_write(buf: str) -> tuple[int, int | None]:
    """misc_cg_max_write(): strstrip, strsep(' '), name lookup, 'max' or kstrtou64,
    capacity test.  Returns (errno or 0, new value)."""
    buf = buf.strip(_SPACE)
    if " " not in buf:
        return errno.EINVAL, None
    token, rest = buf.split(" ", 1)
    if token not in _NAMES:
        return errno.EINVAL, None
    if rest == "max":
        value = U64_MAX
    else:
        ret, value = _oracle_kstrtou64(rest)
        if ret:
            return -ret, None
    if token != "sgx_epc":
        return errno.EINVAL, None
    return 0, value


def _fmt_max(v: int) -> str:
    return "sgx_epc max\n" if v == U64_MAX else f"sgx_epc {v}\n"


_value = st.one_of(
    st.integers(min_value=0, max_value=U64_MAX + 1000).map(str),
    st.integers(min_value=0, max_value=U64_MAX + 1000).map(hex),
    st.integers(min_value=0, max_value=1 << 66).map(lambda n: "0" + format(n, "o")),
    st.sampled_from(["max", "MAX", "-1", "+5", "1.5", "0x", "08", "", " 5", "5\n", "4K"]),
    st.text(alphabet="0123456789abcdefxX+-\n .", max_size=12),
)
_write = st.one_of(
    st.builds(
        lambda pre, name, sep, val, post: f"{pre}{name}{sep}{val}{post}",
        st.sampled_from(["", " ", "  ", "\t", "\n"]),
        st.sampled_from([*_NAMES, "sgx_epc", "sgx_epc", "tdx", "foo", "SGX_EPC", ""]),
        st.sampled_from([" ", " ", " ", "  ", "\t", ""]),
        _value,
        st.sampled_from(["", "", "\n", " \n", "\n\n", "x"]),
    ),
    st.text(alphabet="sgx_epcmax0123456789 \n\t+-", max_size=24),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_write, min_size=1, max_size=8))
def test_misc_max_write_sequences_property(writes):
    """misc_cg_max_write() (kernel/cgroup/misc.c), a property: across random sequences of misc.max
    writes (valid and garbage), a failed write raises the errno misc_cg_max_write() gives and
    changes nothing; a successful one stores the parsed value; the file always reads back in the
    kernel format ('sgx_epc max\\n' or 'sgx_epc <decimal>\\n')."""
    h = make_host("1MiB", "/a")
    cur = U64_MAX
    for data in writes:
        err, value = _oracle_max_write(data)
        if err:
            with pytest.raises(OSError) as ei:
                h.fs.write("/a/misc.max", data)
            assert ei.value.errno == err, data
        else:
            assert h.fs.write("/a/misc.max", data) == len(data.encode())
            assert value is not None
            cur = value
        text = h.fs.read("/a/misc.max")
        assert text == _fmt_max(cur)
        assert misc_of(h, "/a").max == cur


# --- events through real allocations (sgx_cgroup_try_charge(), v16 patch 9; misc_cg_event()) ------


def test_brief_example_sync_reclaim_counts_one_event_per_failed_attempt():
    """sgx_cgroup_try_charge() (v16 patch 9) and misc_cg_event() (kernel/cgroup/misc.c): limit 16
    pages; ECREATE charges VA+SECS (2); ADD_PAGES of 64 pages: each time the 17th page is charged
    the attempt fails (1 event), the sync loop reclaims one batch (the 14 regular pages,
    unreferenced) and the retry succeeds. Failures at pages 15, 29, 43, 57 -> 4 events; end usage 2
    + 8 pages; peak 16 pages; 56 evicted pages' backing (4096 + 128 bytes each) charged to the
    task's memcg."""
    h = make_host("1MiB", "/a")
    h.fs.write("/a/misc.max", "sgx_epc 65536")
    t = h.spawn("/a")
    e = ioctl.sgx_open(h, t)
    drive(ioctl.ioc_enclave_create(h, t, e, ENCL_SIZE))
    assert drive(ioctl.ioc_enclave_add_pages(h, t, e, 0, 64 * P)) == 64 * P
    assert h.fs.read("/a/misc.current") == "sgx_epc 40960\n"
    assert h.fs.read("/a/misc.events") == "sgx_epc.max 4\n"
    assert h.fs.read("/a/misc.events.local") == "sgx_epc.max 4\n"
    assert h.fs.read("/a/misc.peak") == "sgx_epc 65536\n"
    assert h.fs.read("/misc.current") == "sgx_epc 40960\n"
    assert h.fs.read("/misc.peak") == "sgx_epc 65536\n"
    assert h.fs.read("/a/memory.current") == f"{56 * (4096 + 128)}\n"
    check_invariants(h, quiescent=True)


def test_events_count_each_failed_attempt_enomem():
    """misc_cg_event() (kernel/cgroup/misc.c) and sgx_cgroup_try_charge() (v16 patch 9): max = 2
    pages; ECREATE fills it with VA+SECS (unreclaimable); each 1-page ADD_PAGES fails once (nothing
    reclaimable in the subtree -> ENOMEM), so N failed ioctls = exactly N events; usage stays 2
    pages."""
    h = make_host("1MiB", "/a")
    h.fs.write("/a/misc.max", "sgx_epc 8192")
    t = h.spawn("/a")
    e = new_enclave(h, t)
    assert h.fs.read("/a/misc.current") == "sgx_epc 8192\n"
    assert h.fs.read("/a/misc.events") == "sgx_epc.max 0\n"
    for n in range(1, 4):
        add_page_fails_enomem(h, t, e, 0)
        assert h.fs.read("/a/misc.events") == f"sgx_epc.max {n}\n"
        assert h.fs.read("/a/misc.events.local") == f"sgx_epc.max {n}\n"
    assert h.fs.read("/a/misc.current") == "sgx_epc 8192\n"
    assert h.fs.read("/a/misc.peak") == "sgx_epc 8192\n"
    check_invariants(h, quiescent=True)


def test_event_attributed_to_failing_ancestor():
    """misc_cg_event() (kernel/cgroup/misc.c): the parent's limit binds: the requester's events and
    events.local stay 0; the parent's events.local and events count; the grandparent's events count
    (its events.local does not)."""
    h = make_host("1MiB", "/g", "/g/p", "/g/p/c")
    h.fs.write("/g/p/misc.max", "sgx_epc 8192")
    t = h.spawn("/g/p/c")
    e = new_enclave(h, t)
    add_page_fails_enomem(h, t, e, 0)
    assert h.fs.read("/g/p/c/misc.events") == "sgx_epc.max 0\n"
    assert h.fs.read("/g/p/c/misc.events.local") == "sgx_epc.max 0\n"
    assert h.fs.read("/g/p/misc.events") == "sgx_epc.max 1\n"
    assert h.fs.read("/g/p/misc.events.local") == "sgx_epc.max 1\n"
    assert h.fs.read("/g/misc.events") == "sgx_epc.max 1\n"
    assert h.fs.read("/g/misc.events.local") == "sgx_epc.max 0\n"
    assert (h.misc.root.events, h.misc.root.events_local) == (0, 0)
    for path in ("/", "/g", "/g/p", "/g/p/c"):
        assert h.fs.read(path.rstrip("/") + "/misc.current") == "sgx_epc 8192\n"
    check_invariants(h, quiescent=True)


def test_limit_below_usage_then_next_allocation_fails():
    """misc_cg_try_charge() (kernel/cgroup/misc.c), the non-preemptive max through the cgroupfs: 2
    unreclaimable pages charged, max lowered to 1 page -> nothing is evicted, the next ADD_PAGES
    fails with ENOMEM and counts one event; raising the limit again lets it through."""
    h = make_host("1MiB", "/a")
    t = h.spawn("/a")
    e = new_enclave(h, t)
    h.fs.write("/a/misc.max", "sgx_epc 4096")
    assert h.fs.read("/a/misc.current") == "sgx_epc 8192\n"
    add_page_fails_enomem(h, t, e, 0)
    assert h.fs.read("/a/misc.current") == "sgx_epc 8192\n"
    assert h.fs.read("/a/misc.events") == "sgx_epc.max 1\n"
    h.fs.write("/a/misc.max", "sgx_epc 12288")
    assert drive(ioctl.ioc_enclave_add_pages(h, t, e, 0, P)) == P
    assert h.fs.read("/a/misc.current") == "sgx_epc 12288\n"
    assert h.fs.read("/a/misc.events") == "sgx_epc.max 1\n"
    check_invariants(h, quiescent=True)


def test_ecreate_failure_unwinds_charge():
    """misc_cg_try_charge() (kernel/cgroup/misc.c) and the unwind of sgx_encl_create() (ioctl.c): a
    limit of 1 page lets the VA page through but not the SECS; ECREATE fails with ENOMEM and the VA
    charge is returned: usage 0, peak 1 page, 1 event."""
    h = make_host("1MiB", "/a")
    h.fs.write("/a/misc.max", "sgx_epc 4096")
    t = h.spawn("/a")
    e = ioctl.sgx_open(h, t)
    with pytest.raises(OSError) as ei:
        drive(ioctl.ioc_enclave_create(h, t, e, ENCL_SIZE))
    assert ei.value.errno == errno.ENOMEM
    assert h.fs.read("/a/misc.current") == "sgx_epc 0\n"
    assert h.fs.read("/a/misc.peak") == "sgx_epc 4096\n"
    assert h.fs.read("/a/misc.events") == "sgx_epc.max 1\n"
    # the enclave can be created once the limit allows it
    h.fs.write("/a/misc.max", "sgx_epc max")
    drive(ioctl.ioc_enclave_create(h, t, e, ENCL_SIZE))
    assert h.fs.read("/a/misc.current") == "sgx_epc 8192\n"
    check_invariants(h, quiescent=True)


def test_invariants_hold_after_failed_ecreate():
    """sgx_encl_create() (ioctl.c) and the uncharge of sgx_alloc_epc_page() (v16 patch 5): a failed
    ECREATE leaves an open, not-created enclave with no EPC page; that is a consistent state."""
    h = make_host("1MiB", "/a")
    h.fs.write("/a/misc.max", "sgx_epc 4096")
    t = h.spawn("/a")
    e = ioctl.sgx_open(h, t)
    with pytest.raises(OSError):
        drive(ioctl.ioc_enclave_create(h, t, e, ENCL_SIZE))
    check_invariants(h, quiescent=True)


def test_misc_res_names_are_v6_11s():
    """misc_res_name[] of the kernel the series applies to (v6.11): sev, sev_es and the
    series' sgx_epc (patch 04, "cgroup/misc: Add SGX EPC resource type"); no tdx."""
    assert MISC_RES_NAMES == ("sev", "sev_es", "sgx_epc")
