"""``limit-only``: per-cgroup limits without per-cgroup reclaim.

The design the reviews asked to merge first: Kai Huang (v6 09/12 thread, December 2023:
per-cgroup LRUs and reclaim "may not be mandatory" for a first version) and Michal
Koutný (v5 12/18 thread, October 2023: "simple limiting first, reclaim later").  It was
never posted as a series version; the model builds it from v16 by removing what the
later patches add for reclaim.

What it changes relative to v16:

- ``sgx_cgroup_try_charge()``: a charge over a cgroup's ``misc.max`` (at any level)
  fails with -ENOMEM at once: no synchronous reclaim, no async work queued, for
  DO_RECLAIM and NO_RECLAIM alike.  An ioctl (ECREATE, ADD_PAGES) returns -ENOMEM.  A
  fault gets SIGBUS: ``sgx_vma_fault()`` and ``sgx_encl_eaug_page()`` turn -EBUSY into
  VM_FAULT_NOPAGE and every other error into VM_FAULT_SIGBUS (``encl.c``).  -EBUSY
  ("retry, reclaim is under way") would be wrong here: nothing would lower the cgroup's
  usage (no per-cgroup reclaim, no work; ksgxd runs only under physical shortage), so
  the faulting thread would retry for ever.
- A charge that fails only on the EPC's capacity (physical shortage, every limit
  respected) is the allocator's case of the kernel without cgroups
  (``sgx_alloc_epc_page()``, ``arch/x86/kernel/cpu/sgx/main.c``): DO_RECLAIM reclaims
  globally (``sgx_reclaim_pages_global()``, from the root) and retries; NO_RECLAIM
  wakes ksgxd and returns -EBUSY (the fault is retried); nothing reclaimable anywhere
  is -ENOMEM.
- ``sgx_cgroup_should_reclaim()`` is always false: no async work, no per-cgroup pass
  in ``sgx_reclaim_direct()``.

Kept from v16: the per-cgroup LRUs (their rotation from the root is v16's global
reclaim; one global list would need the model's batch write-back to uncharge page by
page), ksgxd and its watermarks, the global pass of ``sgx_reclaim_direct()``.
Hooks: ``try_charge``, ``nothing_reclaimable``, ``should_reclaim``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from ..kernel.constants import (
    EBUSY,
    ENOMEM,
    ERESTARTSYS,
    PAGE_SIZE,
    SGX_NO_RECLAIM,
    SGX_NR_LOW_PAGES,
)
from ..kernel.epc import sgx_can_reclaim_global, sgx_should_reclaim_global, wake_up_ksgxd
from ..kernel.epc_cgroup import _sgx_cgroup_try_charge
from ..kernel.reclaim import sgx_reclaim_pages_global
from .base import Episode, Policy

if TYPE_CHECKING:
    from ..kernel.epc_cgroup import SgxCgroup
    from ..kernel.host import Host, Task

__all__ = ["POLICY", "LimitOnly", "sgx_cgroup_over_max"]


def sgx_cgroup_over_max(sgx_cg: SgxCgroup) -> bool:
    """Whether charging one more page to *sgx_cg* exceeds ``misc.max`` at some level up
    to the root (as ``misc_cg_try_charge()`` compares each level's new usage with its
    max); False when only the capacity is in the way."""
    i = sgx_cg.cg
    while i is not None:
        if i.usage + PAGE_SIZE > i.max:
            return True
        i = i.parent
    return False


class LimitOnly(Policy):
    name = "limit-only"
    source = (
        "review of the series: Michal Koutny, v5 12/18 thread (2023-10), and Kai Huang, "
        "v6 09/12 thread (2023-12): simple limiting first, reclaim later"
    )
    changes = (
        "a charge over misc.max fails with ENOMEM (ioctls ENOMEM, faults SIGBUS); no "
        "sync, async or direct per-cgroup reclaim; physical shortage reclaims globally"
    )

    def nothing_reclaimable(self, host: Host, task: Task, sgx_cg: SgxCgroup) -> int:
        """A failed charge with nothing on the requester's subtree LRUs: -ENOMEM over a
        limit (v16's answer too); on the capacity alone, -EBUSY while anything is
        reclaimable anywhere (the loop below reclaims globally), else -ENOMEM."""
        if sgx_cgroup_over_max(sgx_cg) or not sgx_can_reclaim_global(host):
            return -ENOMEM
        return -EBUSY

    def try_charge(
        self,
        host: Host,
        task: Task,
        sgx_cg: SgxCgroup,
        reclaim: int,
        first: int | None,
        episode: Episode,
    ) -> Generator[str, None, int]:
        """sgx_cgroup_try_charge() without per-cgroup reclaim: -ENOMEM over a limit;
        on the capacity, the allocator's global reclaim of the kernel without cgroups
        (main.c, sgx_alloc_epc_page())."""
        ret = first
        while True:
            if ret is None:
                ret = _sgx_cgroup_try_charge(host, task, sgx_cg)
            if ret != -EBUSY:
                return ret
            ret = None
            if sgx_cgroup_over_max(sgx_cg):
                sgx_cg.nr_enomem += 1
                return -ENOMEM
            if not sgx_can_reclaim_global(host):
                sgx_cg.nr_enomem += 1
                return -ENOMEM
            if reclaim == SGX_NO_RECLAIM:
                if sgx_should_reclaim_global(host, SGX_NR_LOW_PAGES):
                    wake_up_ksgxd(host)
                return -EBUSY
            if task.signal_pending:
                return -ERESTARTSYS
            yield from sgx_reclaim_pages_global(host, task, episode=episode)
            yield "cond_resched"

    def should_reclaim(self, host: Host, sgx_cg: SgxCgroup) -> bool:
        """No per-cgroup reclaim: the async work and the per-cgroup pass of
        sgx_reclaim_direct() never reclaim."""
        return False


POLICY = LimitOnly
