"""The hook points of the reclaim designs (:mod:`epcsim.policies`).

Not kernel code: the model of the series calls these hooks only when the host has a
policy other than the series' v16 (``host.policy`` is not None) and the policy sets the
hook; each hook is called from exactly one function of the model, named in
:data:`HOOKS`.  A hook that is a generator yields at the same kind of points as the
kernel function it replaces (``cond_resched``, the phases of ``sgx_reclaim_pages()``)
and returns that function's result.

Reclaim episodes.  With a policy, every caller of ``sgx_cgroup_reclaim_pages()`` passes
an :class:`Episode`: one run of the synchronous charge loop of
``sgx_cgroup_try_charge()`` (``"sync"``), one run of
``sgx_cgroup_reclaim_work_func()`` (``"async"``), one ksgxd wake-up from its first
reclaim to going back to sleep (``"ksgxd"``), one ``sgx_cgroup_reclaim_direct()`` or
global pass of ``sgx_reclaim_direct()`` (``"direct"``), one global reclaim of the
allocator on physical shortage (``"alloc"``).  The cursor of the series' v14 (held by
the caller for one episode) lives in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .epc_cgroup import SgxCgroup

__all__ = ["HOOKS", "Episode"]

#: hook name -> (the kernel-model function that calls it, what it decides)
HOOKS: dict[str, tuple[str, str]] = {
    "reclaim_pages": (
        "epcsim.kernel.epc_cgroup.sgx_cgroup_reclaim_pages",
        "which cgroup(s) of the subtree to scan next and how many pages from each; a "
        "generator (host, root, charge_task, nr_to_scan, episode) returning the pages "
        "isolated",
    ),
    "try_charge": (
        "epcsim.kernel.epc_cgroup.sgx_cgroup_try_charge",
        "the charge loop after a first failed attempt: a generator (host, task, sgx_cg, "
        "reclaim, first, episode) returning 0 or -errno",
    ),
    "nothing_reclaimable": (
        "epcsim.kernel.epc_cgroup._sgx_cgroup_try_charge",
        "what a failed charge does when the requester's subtree has nothing on an LRU: "
        "(host, task, sgx_cg) -> -errno (v16: -ENOMEM)",
    ),
    "lru_empty": (
        "epcsim.kernel.epc_cgroup.sgx_cgroup_lru_empty",
        "(host, root misc cg) -> True iff nothing of the subtree is reclaimable",
    ),
    "should_reclaim": (
        "epcsim.kernel.epc_cgroup.sgx_cgroup_should_reclaim",
        "(host, sgx_cg) -> whether the async work / direct reclaim reclaims (more)",
    ),
    "page_lru": (
        "epcsim.kernel.epc.sgx_epc_page_lru",
        "(host, page) -> the list a reclaimable page is put on and taken off",
    ),
    "age_test": (
        "epcsim.kernel.reclaim._sgx_reclaim_age_and_back",
        "(host, sgx_cg) -> whether sgx_reclaimer_age() tests the accessed bit for this "
        "batch (False: every isolated page is old)",
    ),
    "record_page": (
        "epcsim.kernel.epc.sgx_alloc_epc_page",
        "(host, page, kind) -> None, after the allocator gave *page* to its owner (owner "
        "and cgroup set): where a page that is never on an LRU (VA, SECS) is recorded "
        "(v16: nowhere)",
    ),
    "max_written": (
        "epcsim.kernel.cgroupfs.CgroupFs.write",
        "(host, misc_cg) -> None, after a successful misc.max write: what the write does "
        "besides storing the value (v16: nothing); runs to completion in the writer's "
        "context",
    ),
    "faulted": (
        "epcsim.kernel.encl.sgx_vma_fault",
        "(host, sgx_cg) -> None, after a fault of a task charging sgx_cg resolved (the "
        "page is mapped): what the design learns from a fault (v16: nothing)",
    ),
}


@dataclass(eq=False)
class Episode:
    """One reclaim episode (see the module docstring).  *kind*: sync, async, ksgxd,
    direct or alloc; *root*: the subtree it reclaims from; *state*: the policy's own
    (the v14 cursor); the counters are summed by ``sgx_cgroup_reclaim_pages()``."""

    kind: str
    root: SgxCgroup
    state: dict[str, Any] = field(default_factory=dict)
    #: sgx_cgroup_reclaim_pages() calls made in this episode
    calls: int = 0
    #: pages isolated (with a live enclave reference) by those calls
    isolated: int = 0
