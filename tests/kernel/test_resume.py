"""The engine hand-over states (``epcsim.kernel.resume``): a reclaimer stopped at any of its
yield points and resumed through ``resume=`` runs the rest exactly as if it had never
stopped -- the same yield points, the same return value, the same kernel state.

ksgxd's loop body (``ksgxd()``, v16 patch 14: ``sgx_reclaim_pages_global()`` over
``sgx_cgroup_reclaim_pages()``, v16 patch 9) and ``sgx_cgroup_reclaim_work_func()``
(v16 patch 10), each stopped after every yield point of a run; the state is read from
the stopped generators' frames, as the compiled engine reads it from its tables.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import pytest

from epcsim.kernel import Host, check_invariants, drive, ioctl
from epcsim.kernel.constants import PAGE_SIZE
from epcsim.kernel.epc_cgroup import sgx_cgroup_reclaim_work_func
from epcsim.kernel.reclaim import ksgxd_step
from epcsim.kernel.resume import ReclaimerState, SgxCgroupReclaimPagesState, SgxReclaimPagesState

#: the phase sgx_reclaim_pages() runs next after each of its yield points, and the local
#: holding its pages there
NEXT_PHASE = {
    "reclaim:isolated": (2, "chunk"),
    "reclaim:aged": (3, "kept"),
    "reclaim:blocked": (4, "kept"),
}


def _enclave(h: Host, cg: str, npages: int) -> None:
    t = h.spawn(cg)
    e = ioctl.sgx_open(h, t)
    drive(ioctl.ioc_enclave_create(h, t, e, 1 << 20))
    drive(ioctl.ioc_enclave_add_pages(h, t, e, 0, npages * PAGE_SIZE))


def global_host() -> tuple[Host, Callable[..., Generator]]:
    """Four cgroups holding pages, the EPC low: ksgxd's batch is split over three of
    them (10 + 3 + 3 pages), the next one over the fourth."""
    h = Host("1MiB")
    h.fs.write("/cgroup.subtree_control", "+misc +memory")
    for cg in ("/A", "/B", "/C"):
        h.fs.mkdir(cg)
    _enclave(h, "/", 10)
    _enclave(h, "/A", 3)
    _enclave(h, "/B", 3)
    _enclave(h, "/C", 200)
    return h, lambda resume=None: ksgxd_step(h, resume=resume)


def worker_host() -> tuple[Host, Callable[..., Generator]]:
    """A cgroup at its limit: its work function reclaims several batches."""
    h = Host("1MiB")
    h.fs.write("/cgroup.subtree_control", "+misc +memory")
    h.fs.mkdir("/A")
    h.fs.write("/A/misc.max", f"sgx_epc {200 * PAGE_SIZE}")
    _enclave(h, "/A", 197)
    a = h.sgx_cgroup_of("/A")
    a.work_pending = True
    return h, lambda resume=None: sgx_cgroup_reclaim_work_func(h, a, resume=resume)


def _state(h: Host) -> tuple:
    pool = h.epc
    return (
        pool.i32.tobytes(),
        pool.u8.tobytes(),
        pool.cg.tobytes(),
        [(f.head, f.tail, f.nr) for f in pool.free_lists],
        pool.nr_free_pages,
        h.nr_lru_pages,
        h.ksgxd_woken,
        list(h.encls_count),
        [
            (s.lru.head, s.lru.tail, s.lru.nr, s.nr_evicted, s.nr_reclaim_batches, s.next_cg.id)
            + (s.work_pending, s.work_running, s.cg.usage, s.cg.refcnt)
            for s in h.sgx_cgroups
            if s is not None
        ],
        [m.usage for m in h.memcgs],
        [(e.i32.tobytes(), e.u8.tobytes(), e.nr_evicted, e.refcount) for e in h.encls if e],
    )


def _run(gen: Generator) -> tuple[list[str], object]:
    points = []
    while True:
        try:
            points.append(next(gen))
        except StopIteration as stop:
            return points, stop.value


def _frames(gen: Generator) -> list:
    """The frames of *gen* and of the generators it is delegating to, outermost first."""
    out = []
    while gen is not None:
        out.append(gen.gi_frame)
        gen = gen.gi_yieldfrom
    return out


def reclaimer_state(gen: Generator, point: str) -> ReclaimerState:
    """Where a stopped ksgxd_step / work function is, from its generators' frames."""
    frames = _frames(gen)
    if point == "cond_resched":
        return ReclaimerState(reclaim=None)
    (outer,) = [f for f in frames if f.f_code.co_name == "sgx_cgroup_reclaim_pages"]
    inner = frames[-1]
    assert inner.f_code.co_name == "sgx_reclaim_pages"
    phase, pages = NEXT_PHASE[point]
    batch = SgxReclaimPagesState(phase, list(inner.f_locals[pages]), inner.f_locals["cnt"])
    reclaim = SgxCgroupReclaimPagesState(outer.f_locals["cnt"], outer.f_locals["c"], batch)
    return ReclaimerState(reclaim)


@pytest.mark.parametrize("make", [global_host, worker_host], ids=["ksgxd", "worker"])
def test_resumed_reclaimer_runs_the_rest_exactly(make) -> None:
    h, start = make()
    want_points, want_ret = _run(start())
    want = _state(h)
    assert len(want_points) >= 7 and "reclaim:blocked" in want_points
    for k in range(len(want_points)):
        h, start = make()
        gen = start()
        for _ in range(k + 1):
            point = next(gen)
        state = reclaimer_state(gen, point)
        points, ret = _run(start(resume=state))
        assert want_points[: k + 1] + points == want_points, k
        assert ret == want_ret
        assert _state(h) == want, k
        check_invariants(h)
        del gen  # the stopped generator is dropped, as the compiled engine's is
