"""The user-facing door: ``/dev/sgx_enclave`` and ``/dev/sgx_vepc`` as a process uses them.

Models ``arch/x86/kernel/cpu/sgx/ioctl.c`` (``sgx_ioc_enclave_create()``,
``sgx_ioc_enclave_add_pages()``, ``sgx_ioc_enclave_init()``,
``sgx_ioc_enclave_restrict_permissions()``, ``sgx_ioc_enclave_modify_types()``,
``sgx_ioc_enclave_remove_pages()``), ``sgx_open()`` + ``sgx_mmap()`` of ``driver.c``,
the vEPC open/fault of ``virt.c``, and the enclave code's memory accesses (which fault
into :func:`epcsim.kernel.encl.sgx_vma_fault`).

This is the user-space boundary: failures raise :class:`OSError` (as the syscall would
fail with ``errno``), ``-ERESTARTSYS`` becoming ``EINTR``.  The operations are
generators (they yield where the kernel lets another CPU in); run them with
:func:`epcsim.kernel.driver.drive` or from the simulator.  When an operation returns to
user space and a fatal signal is pending, the process exits (``task_exit``).
"""

from __future__ import annotations

import os
from collections.abc import Generator

import numpy as np

from ..errors import EpcsimUsageError
from .constants import (
    EINTR,
    EINVAL,
    ENODEV,
    ENOMEM,
    ERESTARTSYS,
    PAGE_SIZE,
    SGX_ENCL_CREATED,
    SGX_ENCL_INITIALIZED,
    SGX_ENCL_OOM,
    SGX_PAGE_TYPE_REG,
    SGX_PAGE_TYPE_TCS,
    SGX_PAGE_TYPE_TRIM,
    VM_FAULT_NOPAGE,
    VM_FAULT_RETRY,
)
from .encl import (
    Encl,
    sgx_encl_access,
    sgx_encl_add_page,
    sgx_encl_create,
    sgx_encl_init,
    sgx_encl_mm_add,
    sgx_encl_remove_page,
    sgx_enclave_modify_types_page,
    sgx_enclave_restrict_permissions_page,
    sgx_vma_fault,
)
from .epc import stuck_retry
from .host import SIGBUS, Host, Task, task_exit
from .reclaim import sgx_reclaim_direct
from .resume import SgxAddPagesRun
from .virt import SgxVepc, sgx_vepc_fault

__all__ = [
    "SgxIoctlError",
    "FaultResult",
    "sgx_open",
    "ioc_enclave_create",
    "ioc_enclave_add_pages",
    "ioc_enclave_init",
    "ioc_enclave_restrict_permissions",
    "ioc_enclave_modify_types",
    "ioc_enclave_remove_pages",
    "encl_access",
    "vepc_open",
    "vepc_access",
]


class SgxIoctlError(OSError):
    """An ioctl failed.  ``count`` is the bytes done before the failure (the ioctl's
    ``count`` field) for the page-range ioctls, else 0."""

    def __init__(self, err: int, what: str, count: int = 0) -> None:
        super().__init__(err, os.strerror(err), what)
        self.count = count


def _user_errno(ret: int) -> int:
    return EINTR if ret == -ERESTARTSYS else -ret


def _enter(task: Task) -> None:
    if task.exited:
        raise EpcsimUsageError(f"task {task.pid} has exited")
    task.in_kernel += 1


def _leave(host: Host, task: Task) -> None:
    """Return to user space: a pending fatal signal ends the process."""
    task.in_kernel -= 1
    if not task.in_kernel and task.signal_pending and not task.exited:
        task_exit(host, task, 128 + (task.pending_signo or 15))


def sgx_open(host: Host, task: Task) -> Encl:
    """``open("/dev/sgx_enclave")`` + ``mmap()``: models sgx_open() (a new enclave with
    its file reference) and sgx_mmap() (the task's mm joins mm_list)."""
    from .encl import Encl as _Encl

    if task.exited:
        raise EpcsimUsageError(f"task {task.pid} has exited")
    encl = _Encl(host, len(host.encls), task)
    host.encls.append(encl)
    task.encl_fds.append(encl.id)
    sgx_encl_mm_add(host, encl, task)
    return encl


def ioc_enclave_create(host: Host, task: Task, encl: Encl, size: int) -> Generator[str, None, int]:
    """``SGX_IOC_ENCLAVE_CREATE``: models sgx_ioc_enclave_create() + sgx_validate_secs().

    Raises OSError: EINVAL (already created; size not a power of two or below 2 pages),
    ENOMEM, EINTR (signal while reclaiming).
    """
    _enter(task)
    try:
        if encl.flags & SGX_ENCL_CREATED:
            raise SgxIoctlError(EINVAL, "SGX_IOC_ENCLAVE_CREATE")
        if size < 2 * PAGE_SIZE or size & (size - 1):
            raise SgxIoctlError(EINVAL, "SGX_IOC_ENCLAVE_CREATE")
        ret = yield from sgx_encl_create(host, task, encl, size)
        if ret:
            raise SgxIoctlError(_user_errno(ret), "SGX_IOC_ENCLAVE_CREATE")
        return 0
    finally:
        _leave(host, task)


def _check_range(encl: Encl, offset: int, length: int, what: str) -> None:
    """Models sgx_validate_offset_length()."""
    if offset % PAGE_SIZE or length <= 0 or length % PAGE_SIZE or offset < 0:
        raise SgxIoctlError(EINVAL, what)
    if offset + length - PAGE_SIZE >= encl.size:
        raise SgxIoctlError(EINVAL, what)


def ioc_enclave_add_pages(
    host: Host,
    task: Task,
    encl: Encl,
    offset: int,
    length: int,
    *,
    page_type: int = SGX_PAGE_TYPE_REG,
    measure: bool = True,
    run: SgxAddPagesRun | None = None,
) -> Generator[str, None, int]:
    """``SGX_IOC_ENCLAVE_ADD_PAGES``: models sgx_ioc_enclave_add_pages().

    One page per loop turn: stop if a signal is pending (EINTR only if no page was
    added), add the page (DO_RECLAIM allocations), yield.

    Returns: bytes added (``count``).
    Raises SgxIoctlError (with ``count``): EINVAL (not created / already initialised /
    bad range / bad type), ENOMEM, EEXIST, EINTR.

    *run* (engine hand-over, :mod:`epcsim.kernel.resume`): the loop's position, written
    before each yield at a page's end; an ioctl given a *run* it has entered goes on
    from it (the compiled engine hands a build back so), and a generator whose
    ``run.epoch`` moved on (the build was taken over) does not leave the kernel.
    """
    what = "SGX_IOC_ENCLAVE_ADD_PAGES"
    resumed = run is not None and run.entered
    if not resumed:
        _enter(task)
    epoch = 0
    if run is not None:
        if not resumed:
            run.offset, run.length, run.page_type, run.measure = offset, length, page_type, measure
        run.entered = True
        epoch = run.epoch
    try:
        inner = None  # the page being added, resumed
        if resumed:
            assert run is not None
            c, inner, run.page, run.between = run.c, run.page, None, False
        else:
            if not encl.flags & SGX_ENCL_CREATED or encl.flags & SGX_ENCL_INITIALIZED:
                raise SgxIoctlError(EINVAL, what)
            _check_range(encl, offset, length, what)
            if page_type not in (SGX_PAGE_TYPE_REG, SGX_PAGE_TYPE_TCS):
                raise SgxIoctlError(EINVAL, what)
            c = 0
        ret = 0
        first = offset // PAGE_SIZE
        while c < length:
            if inner is None and task.signal_pending:
                if not c:
                    ret = -ERESTARTSYS
                break
            ret = yield from sgx_encl_add_page(
                host, task, encl, first + c // PAGE_SIZE, page_type, measure, resume=inner
            )
            inner = None
            if ret:
                break
            c += PAGE_SIZE
            if run is not None:
                run.c, run.between = c, True
                yield "cond_resched"
                run.between = False
            else:
                yield "cond_resched"
        if ret:
            raise SgxIoctlError(_user_errno(ret), what, c)
        return c
    finally:
        if run is None or run.epoch == epoch:
            _leave(host, task)


def ioc_enclave_init(host: Host, task: Task, encl: Encl) -> int:
    """``SGX_IOC_ENCLAVE_INIT``: models sgx_ioc_enclave_init() (EINVAL unless created and
    not yet initialised)."""
    _enter(task)
    try:
        if not encl.flags & SGX_ENCL_CREATED or encl.flags & SGX_ENCL_INITIALIZED:
            raise SgxIoctlError(EINVAL, "SGX_IOC_ENCLAVE_INIT")
        if encl.flags & SGX_ENCL_OOM:  # killed by the dropped OOM design (v3 patch 15)
            raise SgxIoctlError(ENOMEM, "SGX_IOC_ENCLAVE_INIT")
        return sgx_encl_init(host, encl)
    finally:
        _leave(host, task)


def _edmm(host: Host, task: Task, encl: Encl, offset: int, length: int, what: str, body):
    """The shared loop of the EDMM ioctls: per page ``sgx_reclaim_direct()`` (without
    the enclave mutex), then the body under the mutex; stop at the first error."""
    _enter(task)
    try:
        if not host.sgx2:
            raise SgxIoctlError(ENODEV, what)
        if not encl.flags & SGX_ENCL_INITIALIZED:
            raise SgxIoctlError(EINVAL, what)
        _check_range(encl, offset, length, what)
        c = 0
        first = offset // PAGE_SIZE
        while c < length:
            yield from sgx_reclaim_direct(host, task)
            ret = body(first + c // PAGE_SIZE)
            if ret:
                raise SgxIoctlError(_user_errno(ret), what, c)
            c += PAGE_SIZE
            yield "cond_resched"
        return c
    finally:
        _leave(host, task)


def ioc_enclave_restrict_permissions(
    host: Host, task: Task, encl: Encl, offset: int, length: int
) -> Generator[str, None, int]:
    """``SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS`` (SGX2): per page sgx_reclaim_direct(),
    load (EAGAIN if busy), EMODPR.  Returns bytes done."""
    return (
        yield from _edmm(
            host,
            task,
            encl,
            offset,
            length,
            "SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS",
            lambda i: sgx_enclave_restrict_permissions_page(host, task, encl, i),
        )
    )


def ioc_enclave_modify_types(
    host: Host, task: Task, encl: Encl, offset: int, length: int, page_type: int
) -> Generator[str, None, int]:
    """``SGX_IOC_ENCLAVE_MODIFY_TYPES`` (SGX2): per page sgx_reclaim_direct(), load,
    EMODT (REG->TCS, REG->TRIM, TCS->TRIM; else EINVAL).  Returns bytes done."""
    if page_type not in (SGX_PAGE_TYPE_TCS, SGX_PAGE_TYPE_TRIM):
        raise SgxIoctlError(EINVAL, "SGX_IOC_ENCLAVE_MODIFY_TYPES")
    return (
        yield from _edmm(
            host,
            task,
            encl,
            offset,
            length,
            "SGX_IOC_ENCLAVE_MODIFY_TYPES",
            lambda i: sgx_enclave_modify_types_page(host, task, encl, i, page_type),
        )
    )


def ioc_enclave_remove_pages(
    host: Host, task: Task, encl: Encl, offset: int, length: int
) -> Generator[str, None, int]:
    """``SGX_IOC_ENCLAVE_REMOVE_PAGES`` (SGX2): per page sgx_reclaim_direct(), load,
    require TRIM (EPERM), unmark (EBUSY while a reclaimer holds it), EREMOVE.  Returns
    bytes done."""
    return (
        yield from _edmm(
            host,
            task,
            encl,
            offset,
            length,
            "SGX_IOC_ENCLAVE_REMOVE_PAGES",
            lambda i: sgx_encl_remove_page(host, task, encl, i),
        )
    )


class FaultResult:
    """Outcome of :func:`encl_access`: accesses done, faults resolved, fault retries
    (EBUSY -> VM_FAULT_NOPAGE), the retries of the access being done (0: no fault
    unresolved), whether the process got SIGBUS, whether it got stuck and, if so, the
    sgx id of the cgroup whose limit refused its charge (``block``)."""

    __slots__ = ("done", "faults", "retries", "streak", "sigbus", "stuck", "block")

    def __init__(self) -> None:
        self.done = 0
        self.faults = 0
        self.retries = 0
        self.streak = 0
        self.sigbus = False
        #: stopped by *stuck_retries* (the simulator's stuck rule)
        self.stuck = False
        #: .. the sgx id of the cgroup whose limit refused the charge then (-1: none)
        self.block = -1

    def __repr__(self) -> str:
        return (
            f"FaultResult(done={self.done}, faults={self.faults}, retries={self.retries}, "
            f"sigbus={self.sigbus})"
        )


def encl_access(
    host: Host,
    task: Task,
    encl: Encl,
    pages,
    *,
    max_retries: int | None = None,
    res: FaultResult | None = None,
    stuck_retries: int | None = None,
) -> Generator[str, None, FaultResult]:
    """The enclave's code touches enclave pages *pages* (page indices) in order.

    Runs of hits are one vectorised step; a miss enters sgx_vma_fault(); a resolved
    fault retries the access (which hits and sets the accessed bit); VM_FAULT_NOPAGE
    yields ("fault_retry") and re-faults, as the CPU re-executes the access; SIGBUS
    kills the process.  A pending fatal signal ends the process at the next fault.

    Args:
        max_retries: stop (returning) after this many retries of one page; None: never.
        res: the result to fill in as the accesses go (the caller can read it before
            the operation returns); a new one if None.
        stuck_retries: stop (``res.stuck``, the cgroup whose limit refused in
            ``res.block``) after this many retries of one page in a row while no page
            is freed or aged under the limit that refuses the charge
            (:func:`epcsim.kernel.epc.stuck_retry`; the simulator's stuck rule); None:
            never.
    """
    idxs = np.asarray(pages, dtype=np.int64)
    res = FaultResult() if res is None else res
    n = len(idxs)
    outside = (idxs < 0) | (idxs >= encl.npages)
    # accesses up to the first address outside the enclave; that one faults (SIGBUS)
    limit = int(np.argmax(outside)) if outside.any() else n
    _enter(task)
    try:
        i = 0
        streak = 0
        quiet = freed = 0
        block = -1
        while i < n:
            k = sgx_encl_access(encl, idxs[i:limit]) if i < limit else 0
            if k:
                streak = res.streak = 0
            i += k
            res.done = i
            if i >= n:
                break
            if task.signal_pending:
                break
            r = sgx_vma_fault(host, task, encl, int(idxs[i]))
            if r == 0:
                res.faults += 1
                streak = res.streak = 0
                continue
            if r == VM_FAULT_NOPAGE:
                res.retries += 1
                streak += 1
                res.streak = streak
                if max_retries is not None and streak > max_retries:
                    break
                if stuck_retries is not None:
                    block, freed, quiet = stuck_retry(
                        host.task_misc_cg(task), streak, block, freed, quiet
                    )
                    if quiet >= stuck_retries:
                        res.stuck = True
                        res.block = block
                        break
                yield "fault_retry"
                continue
            res.sigbus = True
            task.signal_pending = True
            task.pending_signo = task.pending_signo or SIGBUS
            break
        return res
    finally:
        _leave(host, task)


def vepc_open(host: Host, task: Task, npages: int) -> SgxVepc:
    """``open("/dev/sgx_vepc")`` + mmap of *npages* guest EPC pages (sgx_vepc_open())."""
    if task.exited:
        raise EpcsimUsageError(f"task {task.pid} has exited")
    v = SgxVepc(len(host.vepcs), task, npages)
    host.vepcs.append(v)
    task.vepcs.append(v.id)
    return v


def vepc_access(
    host: Host, task: Task, vepc: SgxVepc, pages, *, max_retries: int | None = None
) -> Generator[str, None, FaultResult]:
    """The guest touches vEPC pages *pages*: each absent page faults in
    (sgx_vepc_fault(); VM_FAULT_RETRY is retried, SIGBUS kills the VMM)."""
    res = FaultResult()
    _enter(task)
    try:
        streak = 0
        for idx in np.asarray(pages, dtype=np.int64).tolist():
            while True:
                if task.signal_pending:
                    return res
                present = vepc.epc[idx] >= 0 if 0 <= idx < vepc.npages else False
                r = sgx_vepc_fault(host, task, vepc, idx)
                if r == 0:
                    if not present:
                        res.faults += 1
                    streak = 0
                    break
                if r == VM_FAULT_RETRY:
                    res.retries += 1
                    streak += 1
                    if max_retries is not None and streak > max_retries:
                        return res
                    yield "fault_retry"
                    continue
                res.sigbus = True
                task.signal_pending = True
                task.pending_signo = task.pending_signo or SIGBUS
                return res
            res.done += 1
        return res
    finally:
        _leave(host, task)
