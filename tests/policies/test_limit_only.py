"""The ``limit-only`` policy (epcsim.policies.limit_only): per-cgroup limits without
per-cgroup reclaim ("simple limiting first, reclaim later", v5 12/18 and v6 09/12 review
threads).  Counts are derived by hand in the comments; hosts are built as in
tests/kernel/test_epc_cgroup.py."""

from __future__ import annotations

import errno
import sys
from pathlib import Path

import pytest

import epcsim
from epcsim import policies
from epcsim.api import load_resolved
from epcsim.kernel import Host, check_invariants, drive, ioctl
from epcsim.kernel.constants import PAGE_SIZE, SGX_DO_RECLAIM
from epcsim.kernel.epc_cgroup import sgx_cgroup_should_reclaim, sgx_cgroup_try_charge
from epcsim.kernel.reclaim import ksgxd_step
from epcsim.sim.engine import Simulation

sys.path.insert(0, str(Path(__file__).parent.parent / "kernel"))
from test_epc_cgroup import mkcg, new_enclave, new_host, usage  # noqa: E402


def host(policy: str, epc: str = "512KiB") -> Host:
    h = new_host(epc)
    h.policy = policies.make(policy)
    if h.policy is not None:
        h.policy.attach(h)
    return h


def test_registered_after_v16() -> None:
    names = policies.names()
    assert names.index("limit-only") < names.index("oom-v2")
    cls = policies.policy_class("limit-only")
    assert not cls.external and "Koutny" in cls.source


@pytest.mark.parametrize("policy", ["limit-only", "v16"])
def test_ioctl_over_the_limit_is_enomem_without_reclaim(policy: str) -> None:
    """/A limited to 20 pages; an enclave of 18 EADDed pages charges 1 VA + 1 SECS + 18 =
    20.  Adding page 18: the charge fails at /A's limit.  limit-only: -ENOMEM at once
    (ADD_PAGES fails, 0 bytes added), no page written back, no work queued.  v16
    (contrast): the charge loop reclaims one 16-page batch from /A's LRU (usage 4), the
    two pages go in (usage 6: 4 + 2)."""
    h = host(policy)
    mkcg(h, "/A", 20)
    A = h.sgx_cgroup_of("/A")
    t = h.spawn("/A")
    e = new_enclave(h, t, 18, size=1 << 17)
    assert usage(A) == 20
    if policy == "v16":
        assert drive(ioctl.ioc_enclave_add_pages(h, t, e, 18 * PAGE_SIZE, 2 * PAGE_SIZE)) == 8192
        assert (usage(A), A.nr_evicted, A.nr_enomem) == (6, 16, 0)
        return
    with pytest.raises(ioctl.SgxIoctlError) as ei:
        drive(ioctl.ioc_enclave_add_pages(h, t, e, 18 * PAGE_SIZE, 2 * PAGE_SIZE))
    assert (ei.value.errno, ei.value.count) == (errno.ENOMEM, 0)
    assert (usage(A), A.nr_evicted, A.nr_enomem, len(h.sgx_cg_wq)) == (20, 0, 1, 0)
    # the async work would not reclaim either
    assert not sgx_cgroup_should_reclaim(h, A)
    check_invariants(h, quiescent=True)


def test_fault_over_the_limit_is_sigbus() -> None:
    """The same enclave, initialised; touching page 19 (never added) is an EAUG fault:
    its NO_RECLAIM charge fails at the limit with -ENOMEM, which sgx_encl_eaug_page()
    turns into VM_FAULT_SIGBUS (only -EBUSY would be NOPAGE, a retry): the process gets
    SIGBUS at once (exit 128 + 7), with no write-back, no retry and no work queued."""
    h = host("limit-only")
    mkcg(h, "/A", 20)
    A = h.sgx_cgroup_of("/A")
    t = h.spawn("/A")
    e = new_enclave(h, t, 18, size=1 << 17)
    ioctl.ioc_enclave_init(h, t, e)
    res = drive(ioctl.encl_access(h, t, e, [19]))
    assert (res.done, res.faults, res.retries, res.sigbus) == (0, 0, 0, True)
    assert (t.exited, t.exit_status) == (True, 135)
    assert (A.nr_evicted, A.nr_enomem, len(h.sgx_cg_wq)) == (0, 1, 0)
    check_invariants(h, quiescent=True)


@pytest.mark.parametrize("policy", ["limit-only", "v16"])
def test_ksgxd_still_reclaims_under_physical_pressure(policy: str) -> None:
    """128 pages of EPC; /A (max 40) holds an enclave of 30 pages (32 charged), /B (no
    limit) one of 80 (82): 114 used, 14 free < 64, ksgxd is woken.  Each ksgxd step
    reclaims 16 pages rotating from the root (v16's global reclaim, unchanged):
    step 1: root (empty LRU), then A: 16 of A; step 2: B: 16 of B; step 3: root, A: the
    last 14 of A (14 < 16, go on), B: 16 more -> 76 free >= 64, ksgxd sleeps.  Same
    under v16: limit-only changes only per-cgroup reclaim."""
    h = host(policy)
    mkcg(h, "/A", 40)
    mkcg(h, "/B")
    A, B = h.sgx_cgroup_of("/A"), h.sgx_cgroup_of("/B")
    new_enclave(h, h.spawn("/A"), 30, size=1 << 17)
    new_enclave(h, h.spawn("/B"), 80, size=1 << 19)
    assert (h.epc.nr_free_pages, h.ksgxd_woken) == (14, True)
    steps = []
    while True:
        a, b = A.nr_evicted, B.nr_evicted
        if not drive(ksgxd_step(h)):
            break
        steps.append((A.nr_evicted - a, B.nr_evicted - b))
    assert steps == [(16, 0), (0, 16), (14, 16)]
    assert h.epc.nr_free_pages == 76
    check_invariants(h, quiescent=True)


def test_capacity_shortage_reclaims_globally_not_from_the_requester() -> None:
    """No limits; 128 pages.  /A's enclave holds 100 pages (102 charged), /B's enclave
    has 20 (22): 124 used.  /B adds 8 more: 4 fit (128 = capacity); the 5th charge fails
    on the capacity only.  limit-only reclaims globally from the root (the allocator of
    the kernel without cgroups): root (empty), A: 16 pages of A.  v16 would reclaim from
    the requester's subtree, /B, instead (its sync charge loop)."""
    h = host("limit-only")
    mkcg(h, "/A")
    mkcg(h, "/B")
    A, B = h.sgx_cgroup_of("/A"), h.sgx_cgroup_of("/B")
    new_enclave(h, h.spawn("/A"), 100, size=1 << 19)
    tb = h.spawn("/B")
    eb = new_enclave(h, tb, 20, size=1 << 17)
    assert h.epc.nr_free_pages == 4
    assert drive(ioctl.ioc_enclave_add_pages(h, tb, eb, 20 * PAGE_SIZE, 8 * PAGE_SIZE)) == 8 * 4096
    assert (A.nr_evicted, B.nr_evicted, A.nr_enomem + B.nr_enomem) == (16, 0, 0)
    assert h.epc.nr_free_pages == 16 - 4
    check_invariants(h, quiescent=True)


def test_nothing_reclaimable_anywhere_is_enomem() -> None:
    """An enclave without pages charges only VA + SECS; with the EPC full of such pages
    nothing is on any LRU: a capacity failure is -ENOMEM (as in v16)."""
    h = host("limit-only", epc="16KiB")  # 4 pages
    mkcg(h, "/A")
    A = h.sgx_cgroup_of("/A")
    t = h.spawn("/A")
    new_enclave(h, t, 0, size=1 << 13)
    new_enclave(h, t, 0, size=1 << 13)
    assert usage(A) == 4
    ret = drive(sgx_cgroup_try_charge(h, t, A, SGX_DO_RECLAIM))
    assert ret == -errno.ENOMEM and A.nr_enomem == 1


@pytest.mark.slow
def test_every_builtin_runs_and_keeps_the_invariants() -> None:
    """Every built-in under limit-only on the reference engine: the model's invariants
    hold at the end, and the summaries differ from v16's (kselftest: the charges over a
    limit fail instead of reclaiming)."""
    differs = []
    for name, _ in epcsim.list_builtins():
        sc = load_resolved(f"builtin:{name}", ("host.policy=limit-only",))
        sim = Simulation(sc, engine="reference")
        res = sim.run()
        check_invariants(sim.host)
        assert res.summary["policy"] == "limit-only"
        base = epcsim.run(f"builtin:{name}", engine="reference").summary
        differs.append(
            {k: v for k, v in base.items() if k != "policy"}
            != {k: v for k, v in res.summary.items() if k != "policy"}
        )
    assert any(differs)
