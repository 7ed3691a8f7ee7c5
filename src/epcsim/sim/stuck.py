"""When the simulator calls an enclave thread stuck (both engines apply the same rule).

The series has had no OOM killer for the EPC since v6 ("x86/sgx: Add Cgroup support
for SGX EPC memory"): a fault whose charge or allocation fails with EBUSY returns
VM_FAULT_NOPAGE from ``sgx_vma_fault()`` and the CPU retries the access for as long
as it takes.  When nothing in the way can be reclaimed (an ancestor's limit binds
while none of the reclaimers that would free its pages runs), the thread retries for
ever: a livelock, not a slow run.  epcsim ends such a thread and reports it ``stuck``:

- a thread that gets VM_FAULT_NOPAGE for one access :data:`STUCK_RETRIES` times in a
  row with no progress under the limit that refuses its charge ends at that retry.
  That limit is the first of the thread's cgroup and its ancestors at which one more
  page does not fit (where misc_cg_try_charge() stops); progress is an EPC page freed
  or aged anywhere in that cgroup's subtree (the hierarchical ``nr_freed`` and
  ``nr_aged`` counts, :class:`epcsim.kernel.epc_cgroup.SgxCgroup`, move), another
  cgroup's limit refusing, or a page fitting (:func:`epcsim.kernel.epc.stuck_watch`).
  The subtree of the refusing limit, not the thread's own cgroup: under an ancestor's
  limit, pages freed in a sibling's cgroup let the charge through as well as the
  thread's own.  Aged counts: a reclaimer that clears accessed bits in the subtree is
  on its way to freeing those pages (its next pass may evict them).  Without it, a
  thread waiting while ksgxd makes its first pass over a large LRU of young pages
  (about 235,000 pages at a 1 GiB EPC, more than 10,000 retries of work) was called
  stuck although the pass ends with pages freed;
- a thread whose fault is still unresolved when the run's time limit comes is stuck
  too.  When its workload's ``duration`` ends in the middle of a fault, a thread
  first finishes that access (it cannot leave a fault half-way): it goes on retrying
  it, and ends when the fault is resolved, or stuck by either rule above.

A stuck thread's process does not exit (its thread is still in the fault loop): it
keeps its EPC pages, gets no exit status and its outcome is ``stuck``.
"""

from __future__ import annotations

__all__ = ["STUCK_RETRIES"]

#: an epcsim constant, not a kernel one: consecutive VM_FAULT_NOPAGE retries of one
#: access with no progress under the limit that refuses its charge after which the
#: thread is stuck (about 30 ms of virtual time at the default cost of a retried fault)
STUCK_RETRIES = 10_000
