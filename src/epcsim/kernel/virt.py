"""KVM guest EPC (vEPC) pages (virt.c; charged since v16 patch 5, never reclaimed).

Models ``arch/x86/kernel/cpu/sgx/virt.c``: ``sgx_vepc_fault()`` / ``__sgx_vepc_fault()``
allocate an EPC page (NO_RECLAIM) the first time a guest page is touched, charged to the
faulting task's cgroup and never put on an LRU; ``sgx_vepc_release()`` frees every page
(EREMOVE).  vEPC pages are never reclaimed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .constants import EBUSY, VM_FAULT_RETRY, VM_FAULT_SIGBUS
from .encl import _run_atomic, sgx_encl_free_epc_page
from .epc import KIND_VEPC, sgx_alloc_epc_page

if TYPE_CHECKING:
    from .host import Host, Task

__all__ = ["SgxVepc", "sgx_vepc_fault", "sgx_vepc_release"]


class SgxVepc:
    """Models ``struct sgx_vepc``: the guest's EPC pages, indexed by guest page."""

    def __init__(self, vid: int, owner: Task, npages: int) -> None:
        self.id = vid
        self.owner_pid = owner.pid
        self.npages = npages
        self.epc = np.full(npages, -1, dtype=np.int32)
        self.released = False

    @property
    def nr_resident(self) -> int:
        return int(np.count_nonzero(self.epc >= 0))


def sgx_vepc_fault(host: Host, task: Task, vepc: SgxVepc, idx: int) -> int:
    """Models sgx_vepc_fault() / __sgx_vepc_fault().

    Returns: 0 (mapped, or already present), VM_FAULT_RETRY (-EBUSY: the cgroup is at
    its limit, async work queued, or no free page), VM_FAULT_SIGBUS (anything else,
    including -ENOMEM).
    """
    if vepc.released or not 0 <= idx < vepc.npages:
        return VM_FAULT_SIGBUS
    if vepc.epc[idx] >= 0:
        return 0
    page = _run_atomic(sgx_alloc_epc_page(host, task, KIND_VEPC, vepc.id, idx, 0))
    if page < 0:
        return VM_FAULT_RETRY if page == -EBUSY else VM_FAULT_SIGBUS
    vepc.epc[idx] = page
    return 0


def sgx_vepc_release(host: Host, vepc: SgxVepc) -> None:
    """Models sgx_vepc_release(): EREMOVE and free every page (all uncharged)."""
    for idx in np.flatnonzero(vepc.epc >= 0).tolist():
        sgx_encl_free_epc_page(host, int(vepc.epc[idx]))
        vepc.epc[idx] = -1
    vepc.released = True
