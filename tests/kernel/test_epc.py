"""The EPC pool: sections / NUMA nodes, capacity, host configuration, free lists and
the per-page memory footprint.

Series citations: struct sgx_epc_page and SGX_MAX_EPC_SECTIONS = 8 (sgx.h);
__sgx_alloc_epc_page() (main.c: the local node first, then the other EPC nodes);
sgx_free_epc_page() (tail of the node's free list); capacity = sum of all sections,
misc.capacity (sgx_cgroup_register(), v16 patch 5 "x86/sgx: Implement basic EPC misc cgroup
functionality").
"""

from __future__ import annotations

import pytest

from epcsim.errors import EpcsimError, HostConfigError
from epcsim.kernel import Host, check_invariants, drive, ioctl, task_exit
from epcsim.kernel import encls as L
from epcsim.kernel.constants import SGX_EPC_PAGE_IS_FREE
from epcsim.kernel.epc import EpcPool

P = 4096


def build(h, t, npages, size=1 << 20):
    e = ioctl.sgx_open(h, t)
    drive(ioctl.ioc_enclave_create(h, t, e, size))
    if npages:
        drive(ioctl.ioc_enclave_add_pages(h, t, e, 0, npages * P))
    return e


def sections_of(h, pages):
    return [h.epc.section_of(int(p)) for p in pages]


# --- capacity and configuration -------------------------------------------------------------


def test_two_sections_capacity_and_misc_capacity():
    """sgx_cgroup_register() (main.c, v16 patch 5) and misc_cg_capacity_show()
    (kernel/cgroup/misc.c): capacity = sum of the sections; misc.capacity shows it."""
    h = Host(sections=["1MiB", "1MiB"])
    assert h.epc.nr_pages == 512
    assert h.capacity == 2 << 20
    assert h.epc.capacity_bytes == 2 << 20
    assert h.fs.read("/misc.capacity") == "sgx_epc 2097152\n"
    assert h.epc.section_pages == [256, 256]
    assert len(h.epc.free_lists) == 2
    assert [fl.nr for fl in h.epc.free_lists] == [256, 256]
    assert h.epc.nr_free_pages == 512
    check_invariants(h, quiescent=True)


@pytest.mark.parametrize(
    "spec,pages",
    [("1MiB", 256), (1 << 20, 256), ("4KiB", 1), ("8 pages", 8), ("0x2000", 2), (4096, 1)],
)
def test_single_section_sizes(spec, pages):
    """Host(epc) accepts an int or a size string; capacity text in bytes."""
    h = Host(spec)
    assert h.epc.nr_pages == pages
    assert h.fs.read("/misc.capacity") == f"sgx_epc {pages * P}\n"


def test_unequal_sections():
    """struct sgx_epc_page / sgx_epc_sections (sgx.h): pages are numbered section after section;
    section_of() maps back."""
    h = Host(sections=["8KiB", "16KiB", 4096])
    assert h.epc.section_pages == [2, 4, 1]
    assert [h.epc.section_of(i) for i in range(7)] == [0, 0, 1, 1, 1, 1, 2]
    assert h.capacity == 7 * P


def test_eight_sections_allowed():
    """sgx.h: SGX_MAX_EPC_SECTIONS = 8."""
    h = Host(sections=["64KiB"] * 8)
    assert h.capacity == 8 * 64 * 1024
    assert len(h.epc.free_lists) == 8


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epc": "3000"},  # not a multiple of 4096
        {"epc": 3000},
        {"epc": 0},
        {"epc": "0"},
        {"epc": "abc"},
        {"epc": "12 parsecs"},
        {"epc": -4096},
        {"epc": True},
        {"sections": ["1MiB"] * 9},  # more than 8 sections
        {"sections": []},
        {"sections": ["1MiB", "5000"]},
        {"sections": ["1MiB", 0]},
        {},  # neither
        {"epc": "1MiB", "sections": ["1MiB"]},  # both
    ],
)
def test_host_config_errors(kwargs):
    """Bad host descriptions raise HostConfigError (an EpcsimError), naming the field."""
    with pytest.raises(HostConfigError) as ei:
        Host(**kwargs)
    assert isinstance(ei.value, EpcsimError)


def test_host_config_error_names_the_section():
    with pytest.raises(HostConfigError, match=r"sections\[1\]"):
        Host(sections=["1MiB", "3000"])


def test_epcpool_rejects_bad_section_count():
    """sgx_page_cache_init() (main.c; SGX_MAX_EPC_SECTIONS): 1..8 sections in the pool itself."""
    with pytest.raises(ValueError):
        EpcPool([])
    with pytest.raises(ValueError):
        EpcPool([1] * 9)


# --- NUMA allocation ------------------------------------------------------------------------


@pytest.mark.parametrize("nid", [0, 1])
def test_allocation_prefers_task_node(nid):
    """__sgx_alloc_epc_page() (main.c): the local node (Task.nid) first."""
    h = Host(sections=["1MiB", "1MiB"])
    t = h.spawn("/", nid=nid)
    e = build(h, t, 20)
    assert set(sections_of(h, e.epc[:20])) == {nid}
    assert h.epc.section_of(e.secs_epc) == nid
    assert h.epc.section_of(e.va_all[0].epc) == nid
    assert h.epc.free_lists[nid].nr == 256 - 22
    assert h.epc.free_lists[1 - nid].nr == 256
    check_invariants(h, quiescent=True)


def test_allocation_falls_back_to_other_node_when_local_full():
    """__sgx_alloc_epc_page() (main.c): local node empty -> another EPC node; no reclaim needed
    while any node has a free page."""
    h = Host(sections=["64KiB", "64KiB"])  # 16 + 16 pages
    t = h.spawn("/", nid=0)
    e = build(h, t, 20)
    secs = sections_of(h, e.epc[:20])
    assert secs[:14] == [0] * 14  # VA + SECS + 14 fill node 0
    assert secs[14:] == [1] * 6
    assert h.epc.free_lists[0].nr == 0 and h.epc.free_lists[1].nr == 10
    assert h.encls_count[L.EWB] == 0  # no EWB
    check_invariants(h, quiescent=True)


def test_freed_page_returns_to_its_own_node():
    """sgx_free_epc_page() (main.c): a freed page goes to the tail of its section's node free
    list."""
    h = Host(sections=["64KiB", "64KiB"])
    t0 = h.spawn("/", nid=0)
    t1 = h.spawn("/", nid=1)
    build(h, t0, 4)
    build(h, t1, 4)
    assert [fl.nr for fl in h.epc.free_lists] == [10, 10]
    task_exit(h, t1)
    assert [fl.nr for fl in h.epc.free_lists] == [10, 16]
    tail = h.epc.free_lists[1].to_list()[-6:]
    assert all(h.epc.section_of(p) == 1 for p in tail)
    task_exit(h, t0)
    assert [fl.nr for fl in h.epc.free_lists] == [16, 16]
    # every page free: the pages used have IS_FREE, the others were never allocated
    # (the pristine ranges: no state written)
    assert sorted(p for fl in h.epc.free_lists for p in fl.to_list()) == list(range(32))
    assert all(h.epc.flags[i] & SGX_EPC_PAGE_IS_FREE for i in h.epc.touched())
    check_invariants(h, quiescent=True)


def test_free_list_fifo_order():
    """__sgx_alloc_epc_page_from_node() and sgx_free_epc_page() (main.c): pages are taken from the
    head and returned to the tail."""
    h = Host("64KiB")
    t = h.spawn("/")
    e = build(h, t, 2)
    assert e.va_all[0].epc == 0 and e.secs_epc == 1 and e.epc[:2].tolist() == [2, 3]
    task_exit(h, t)
    # freed pages appended after the untouched 4..15
    assert h.epc.free_lists[0].to_list()[:12] == list(range(4, 16))
    t2 = h.spawn("/")
    e2 = build(h, t2, 0)
    assert e2.va_all[0].epc == 4 and e2.secs_epc == 5


def test_physical_shortage_reclaims_globally():
    """sgx_alloc_epc_page() -> sgx_reclaim_pages_global() (main.c, v16 patch 14): cgroup under its
    limit, no free page: a DO_RECLAIM allocation runs global reclaim (16 pages) and retries."""
    h = Host(sections=["64KiB", "64KiB"])  # 32 pages
    t = h.spawn("/", nid=0)
    e = build(h, t, 40, size=1 << 20)
    assert e.nr_added == 40
    assert e.nr_swapped > 0
    assert h.encls_count[L.EWB] > 0  # EWB
    check_invariants(h, quiescent=True)


def test_task_on_node_without_epc_still_allocates():
    """__sgx_alloc_epc_page() (main.c): a task on a node with no EPC section gets pages from the EPC
    nodes."""
    h = Host(sections=["64KiB", "64KiB"])
    t = h.spawn("/", nid=5)
    e = build(h, t, 20)
    assert e.nr_added == 20
    assert h.epc.nr_free_pages == 32 - 22
    check_invariants(h, quiescent=True)


def test_fallback_order_fills_next_node_first():
    """__sgx_alloc_epc_page() (main.c): local node, then next_node_in() order."""
    h = Host(sections=["64KiB"] * 3)  # 16 pages each
    t = h.spawn("/", nid=0)
    e = build(h, t, 18)  # VA + SECS + 14 fill node 0; 4 more fall back
    assert sections_of(h, e.epc[14:18]) == [1, 1, 1, 1]


def test_node_without_epc_starts_at_next_epc_node():
    """main.c __sgx_alloc_epc_page(): nid 5 on a 2-node EPC -> node 0 first."""
    h = Host(sections=["64KiB", "64KiB"])
    t = h.spawn("/", nid=5)
    e = build(h, t, 2)
    assert h.epc.section_of(e.va_all[0].epc) == 0
    assert h.epc.section_of(e.secs_epc) == 0
    assert sections_of(h, e.epc[:2]) == [0, 0]


# --- memory footprint -------------------------------------------------------------------------


def test_epc_pool_at_most_32_bytes_per_page():
    """DESIGN data layout: per-EPC-page state <= 32 bytes (20 today)."""
    h = Host("256MiB")
    assert h.epc.nr_pages == 65536
    assert h.epc.nbytes() / h.epc.nr_pages <= 32


def test_epc_pool_footprint_multi_section():
    h = Host(sections=["64MiB"] * 4)
    assert h.epc.nbytes() / h.epc.nr_pages <= 32


def test_host_above_the_int32_page_limit_is_a_host_config_error() -> None:
    """Host("1024TiB") died with a MemoryError: EPC page numbers are int32."""
    from epcsim.errors import HostConfigError
    from epcsim.kernel.host import MAX_EPC_PAGES, Host

    with pytest.raises(HostConfigError) as e:
        Host("1024TiB")
    assert str(e.value) == (
        f"host.epc: {(1024 << 40) // 4096} EPC pages; the model holds at most "
        f"{MAX_EPC_PAGES} (EPC page numbers are int32)"
    )
