"""The kernel selftests of the EPC cgroup series (v16 patch 16), as processes of the model.

``test_sgx -t unclobbered_vdso_oversubscribed`` (tools/testing/selftests/sgx) is
:func:`test_sgx_process`; ``run_epc_cg_selftests.sh`` (v16 patch 16) is
:func:`run_epc_cg_selftests`, which
interleaves concurrent processes round-robin (one ADD_PAGES page per turn) since the
kernel model has no clock.  The simulator runs the same program in virtual time.
"""

from __future__ import annotations

import errno
import signal
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

from ..kernel import Host, RoundRobin, check_invariants, send_signal, task_exit
from ..kernel.constants import PAGE_SIZE, SGX_PAGE_TYPE_REG, SGX_PAGE_TYPE_TCS
from ..kernel.encl import Encl
from ..kernel.host import Task
from ..kernel.ioctl import (
    FaultResult,
    encl_access,
    ioc_enclave_add_pages,
    ioc_enclave_create,
    ioc_enclave_init,
    sgx_open,
)
from ..kernel.resume import SgxAddPagesRun

__all__ = [
    "TEST_ENCL_LAYOUT",
    "test_sgx_pages",
    "test_sgx_process",
    "run_epc_cg_selftests",
    "SelftestReport",
    "TestSgxPlace",
    "TestSgxStats",
]

#: Layout of ``test_encl.elf`` (tools/testing/selftests/sgx) as the model builds it, in
#: pages and in load order: (name, pages, page type, measured).  The TCS segment holds 2
#: TCS pages; text is the enclave's code; data holds the 8 KiB ``encl_buffer`` plus one
#: page of other data; the heap (C bytes, unmeasured) follows.  Total = C/4096 + 7 pages.
TEST_ENCL_LAYOUT: tuple[tuple[str, int, int, bool], ...] = (
    ("tcs", 2, SGX_PAGE_TYPE_TCS, True),
    ("text", 2, SGX_PAGE_TYPE_REG, True),
    ("data", 3, SGX_PAGE_TYPE_REG, True),
)
#: Pages each EENTER touches: TCS #0, the first text page, the first buffer page.
EENTER_TOUCHES = (0, 2, 4)


@dataclass
class TestSgxStats:
    """What one :func:`test_sgx_process` did, readable while it runs: its enclave
    (*on_open* is called with it once opened), the accesses, faults and fault retries of
    its EENTERs, whether it got stuck, and ``error``: empty, or which ioctl or access
    failed and how."""

    on_open: Callable[[Encl], None] | None = None
    #: the simulator's stuck rule (epcsim.sim.stuck): quiet retries of one access after
    #: which the process is stuck; None: it retries for ever
    stuck_retries: int | None = None
    stuck: bool = False
    error: str = ""
    #: one FaultResult per EENTER so far (the last one filling in)
    eenters: list[FaultResult] = field(default_factory=list)

    @property
    def accesses(self) -> int:
        return sum(r.done for r in self.eenters)

    @property
    def faults(self) -> int:
        return sum(r.faults for r in self.eenters)

    @property
    def retries(self) -> int:
        return sum(r.retries for r in self.eenters)


def _signame(signo: int) -> str:
    try:
        return signal.Signals(signo).name
    except ValueError:
        return f"signal {signo}"


def test_sgx_pages(heap_bytes: int) -> tuple[int, int]:
    """(pages added, enclave size in bytes) for a heap of *heap_bytes*."""
    pages = sum(p for _, p, _, _ in TEST_ENCL_LAYOUT) + heap_bytes // PAGE_SIZE
    size = 1
    while size < pages * PAGE_SIZE:
        size <<= 1
    return pages, max(size, 2 * PAGE_SIZE)


@dataclass
class TestSgxPlace:
    """Where a :func:`test_sgx_process` is in its ADD_PAGES ioctls, outside its
    generator (engine hand-over: the compiled engine takes an ioctl's loop over at a
    page's end and hands it back mid-ioctl; the process then goes on from here).

    Attributes:
        encl: its enclave (None before ``sgx_open()``).
        segment, off: the layout segment being added and its offset (bytes).
        added: the "cond_resched" points seen so far (the progress count).
        add: the segment's ``SGX_IOC_ENCLAVE_ADD_PAGES`` loop (None before the first).
    """

    encl: Encl | None = None
    segment: int = 0
    off: int = 0
    added: int = 0
    add: SgxAddPagesRun | None = None


def test_sgx_process(
    host: Host,
    task: Task,
    heap_bytes: int,
    *,
    progress: Callable[[Task, int], None] | None = None,
    stats: TestSgxStats | None = None,
    place: TestSgxPlace | None = None,
) -> Generator[str, None, int | None]:
    """``test_sgx -t unclobbered_vdso_oversubscribed`` as one process.

    open + mmap, ECREATE, one ADD_PAGES per segment (heap unmeasured), EINIT, two
    EENTERs touching TCS/text/buffer pages (faults retried on EBUSY), exit.  Returns
    the exit status: 0 on success, 1 when an ioctl fails (the harness assertion),
    128+signo when killed (SIGBUS 135, SIGTERM 143, SIGKILL 137); None when an access
    got stuck (``stats.stuck_retries``): the process stays in its fault, never exits.

    Args:
        progress: called with (task, pages added so far) after each added page.
        stats: filled in as the process runs (counters, the enclave, the error).
        place: where it is in its ADD_PAGES ioctls, kept up to date (engine hand-over:
            a *place* stopped inside an ioctl resumes there, :class:`TestSgxPlace`).
    """
    stats = TestSgxStats() if stats is None else stats
    status = 0
    resumed = place is not None and place.add is not None and place.add.entered
    place = TestSgxPlace() if place is None else place
    #: what the process is doing (for the error of a process killed meanwhile)
    doing = "SGX_IOC_ENCLAVE_ADD_PAGES" if resumed else "open"
    try:
        if resumed:
            encl = place.encl
            assert encl is not None
        else:
            encl = sgx_open(host, task)
            place.encl = encl
            if stats.on_open is not None:
                stats.on_open(encl)
            _, size = test_sgx_pages(heap_bytes)
            doing = "SGX_IOC_ENCLAVE_CREATE"
            yield from ioc_enclave_create(host, task, encl, size)
        layout = (*TEST_ENCL_LAYOUT, ("heap", heap_bytes // PAGE_SIZE, SGX_PAGE_TYPE_REG, False))
        for k in range(place.segment, len(layout)):
            _name, npages, ptype, measured = layout[k]
            if not resumed:
                if task.exited:
                    break
                place.segment, place.add = k, SgxAddPagesRun()
            resumed = False
            length = npages * PAGE_SIZE
            doing = "SGX_IOC_ENCLAVE_ADD_PAGES"
            gen = ioc_enclave_add_pages(
                host, task, encl, place.off, length, page_type=ptype, measure=measured,
                run=place.add,
            )  # fmt: skip
            # step the ioctl ourselves to report progress per page
            while True:
                try:
                    point = next(gen)
                except StopIteration:
                    break
                if point == "cond_resched":
                    place.added += 1
                    if progress is not None:
                        progress(task, place.added)
                yield point
            place.off += length
        if not task.exited:
            doing = "SGX_IOC_ENCLAVE_INIT"
            ioc_enclave_init(host, task, encl)
        for k in range(2):
            if task.exited:
                break
            doing = f"EENTER {k + 1}"
            res = FaultResult()
            stats.eenters.append(res)
            yield from encl_access(
                host, task, encl, EENTER_TOUCHES, res=res, stuck_retries=stats.stuck_retries
            )
            if res.stuck:
                page = EENTER_TOUCHES[res.done]
                stats.stuck = True
                why = ""
                if res.block >= 0:
                    where = host.sgx_cgroups[res.block].cg.path()
                    why = f" with no page freed under the limit of {where}"
                stats.error = (
                    f"EENTER {k + 1}: access to enclave page {page}: stuck after "
                    f"{res.streak:,} retries{why}"
                )
                return None
            if res.sigbus:
                page = EENTER_TOUCHES[res.done]
                stats.error = f"EENTER {k + 1}: access to enclave page {page}: SIGBUS"
                break
    except OSError as e:
        status = 1
        stats.error = f"{e.filename}: {errno.errorcode.get(e.errno, e.errno)} ({e.strerror})"
    if task.exited:
        st = task.exit_status if task.exit_status is not None else 1
        if st >= 128 and " SIGBUS" not in stats.error:
            # killed: the signal, not the EINTR it made the ioctl return
            why = " (memcg OOM)" if task.oom_killed else ""
            stats.error = f"killed by {_signame(st - 128)}{why} during {doing}"
        return st
    if task.signal_pending:
        task_exit(host, task, 128 + task.pending_signo)
        if not stats.error:
            stats.error = f"killed by {_signame(task.pending_signo)} during {doing}"
        return task.exit_status or 1
    task_exit(host, task, status)
    return status


@dataclass
class SelftestReport:
    """Verdicts of run_epc_cg_selftests.sh: test name -> (PASS/FAIL, detail)."""

    capacity: int
    results: dict[str, tuple[bool, str]] = field(default_factory=dict)
    statuses: dict[str, list[int]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(ok for ok, _ in self.results.values())

    def lines(self) -> list[str]:
        out = [
            f"{'PASS' if ok else 'FAIL'}: {name}: {detail}"
            for name, (ok, detail) in self.results.items()
        ]
        out.append("PASS: ALL cgroup limit tests" if self.passed else "FAIL: cgroup limit tests")
        return out


def _run_group(
    host: Host,
    cgroup: str,
    nproc: int,
    heap: int,
    *,
    kill_index: int | None = None,
    check: bool = False,
) -> tuple[list[int], int | None]:
    """Run *nproc* concurrent test_sgx processes in *cgroup*; returns exit statuses and
    the pid index killed (Test E: when it has added half of its pages)."""
    rr = RoundRobin(host)
    tasks = [host.spawn(cgroup) for _ in range(nproc)]
    npages, _ = test_sgx_pages(heap)
    killed: list[int] = []

    def progress(task: Task, added: int) -> None:
        if (
            kill_index is not None
            and not killed
            and task is tasks[kill_index]
            and added >= npages // 2
        ):
            killed.append(kill_index)
            send_signal(host, task)

    for k, t in enumerate(tasks):
        rr.add(k, test_sgx_process(host, t, heap, progress=progress))
    rr.run()
    if check:
        check_invariants(host)
    return [rr.results[k] for k in range(nproc)], (killed[0] if killed else None)


def run_epc_cg_selftests(
    capacity: int | str,
    *,
    kill_index: int = 3,
    check: bool = False,
) -> SelftestReport:
    """Replay ``run_epc_cg_selftests.sh`` (v16 patch 16) on a fresh host.

    Args:
        capacity: EPC bytes (C).
        kill_index: which of Test E's 8 processes is killed (the script picks it at
            random; the model kills it when it has added half of its pages).
        check: run check_invariants() after every test.
    """
    host = Host(capacity)
    fs = host.fs
    C = host.capacity
    rep = SelftestReport(C)
    base = "/sgx_kselftest"
    for d in (
        base,
        f"{base}/sgx_test_small_parent",
        f"{base}/sgx_test_large",
        f"{base}/sgx_test_small_parent/sgx_test_small",
        f"{base}/sgx_test_larger",
    ):
        fs.mkdir(d)
    fs.write("/cgroup.subtree_control", "+misc +memory")
    fs.write(f"{base}/cgroup.subtree_control", "+misc +memory")
    fs.write(f"{base}/sgx_test_small_parent/cgroup.subtree_control", "+misc")
    small, large, larger = C // 512, 4 * C // 512, C
    fs.write(f"{base}/sgx_test_small_parent/misc.max", f"sgx_epc {small}")
    fs.write(f"{base}/sgx_test_large/misc.max", f"sgx_epc {large}")
    fs.write(f"{base}/sgx_test_larger/misc.max", f"sgx_epc {larger}")

    def record(name: str, ok: bool, detail: str, st: list[int]) -> None:
        rep.results[name] = (ok, detail)
        rep.statuses[name] = st

    st, _ = _run_group(host, f"{base}/sgx_test_small_parent/sgx_test_small", 1, C, check=check)
    record("A small", st[0] != 0, "1 process must fail", st)
    st, _ = _run_group(host, f"{base}/sgx_test_large", 4, C, check=check)
    record("B large positive", any(s == 0 for s in st), "4 processes, at least one passes", st)
    st, _ = _run_group(host, f"{base}/sgx_test_large", 5, C, check=check)
    record("C large negative", any(s != 0 for s in st), "5 processes, at least one fails", st)
    st, _ = _run_group(host, f"{base}/sgx_test_larger", 8, C, check=check)
    record("D larger", all(s == 0 for s in st), "8 processes, none fails", st)
    st, k = _run_group(host, f"{base}/sgx_test_larger", 8, C, kill_index=kill_index, check=check)
    others = [s for i, s in enumerate(st) if i != k]
    record(
        "E random kill",
        k is not None and all(s == 0 for s in others),
        f"8 processes, #{kill_index} killed, every other passes",
        st,
    )
    fs.write(f"{base}/sgx_test_large/memory.max", str(C - 2 * (C // 128)))
    st, _ = _run_group(host, f"{base}/sgx_test_large", 4, C, check=check)
    record("F memcg", all(s != 0 for s in st), "4 processes, none passes (memcg OOM)", st)
    fs.write(f"{base}/sgx_test_large/memory.max", "max")
    cur = fs.read(f"{base}/misc.current")
    record("leak check", cur == "sgx_epc 0\n", f"misc.current reads {cur.strip()!r}", [])
    for d in (
        f"{base}/sgx_test_small_parent/sgx_test_small",
        f"{base}/sgx_test_small_parent",
        f"{base}/sgx_test_large",
        f"{base}/sgx_test_larger",
        base,
    ):
        fs.rmdir(d)
    if check:
        check_invariants(host, quiescent=True)
    return rep
