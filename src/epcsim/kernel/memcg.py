"""The memory controller, as far as SGX backing store needs it (v16 patch 11).

Models the parts of ``mm/memcontrol.c`` the EPC reclaimer touches: the shmem backing of
an evicted enclave page is charged to a memory cgroup (``sgx_encl_alloc_backing()`` with
the memcg chosen by ``sgx_encl_get_mem_cgroup()``), limited by ``memory.max``.  Swap is
off in this model, so a charge above ``memory.max`` runs the memcg OOM killer
(``mem_cgroup_out_of_memory()``): it kills the task of that memcg's subtree with the
most backing bytes charged for its enclaves (ties: the lowest pid) and the charge fails.

Only backing bytes are charged (``SGX_BACKING_BYTES_PER_PAGE`` = 4096 + 128 per evicted
page: its contents and its PCMD entry); the rest of a process's memory is not modelled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .constants import ENOMEM, PAGE_COUNTER_MAX, PAGE_SIZE

if TYPE_CHECKING:
    from .cgroup import Cgroup
    from .host import Host

__all__ = [
    "MemCg",
    "mem_cgroup_charge_backing",
    "mem_cgroup_fits",
    "mem_cgroup_uncharge_backing",
]


class MemCg:
    """Models ``struct mem_cgroup`` (page counter ``memory``: usage and max)."""

    __slots__ = (
        "id",
        "parent",
        "usage",
        "max_pages",
        "cgroup",
        "online",
        "events_max",
        "events_oom",
        "oom_kills",
    )

    def __init__(self, mid: int, parent: MemCg | None, cgroup: Cgroup | None) -> None:
        self.id = mid
        self.parent = parent
        #: bytes charged (backing store only)
        self.usage = 0
        #: ``memory.max`` in pages (page_counter), PAGE_COUNTER_MAX = "max"
        self.max_pages = PAGE_COUNTER_MAX
        self.cgroup = cgroup
        self.online = True
        #: ``memory.events`` (hierarchical): max (charges over memory.max), oom (OOM
        #: killer invocations here), oom_kill (tasks of this subtree killed)
        self.events_max = 0
        self.events_oom = 0
        self.oom_kills = 0

    def max_bytes(self) -> int | None:
        return None if self.max_pages >= PAGE_COUNTER_MAX else self.max_pages * PAGE_SIZE

    def is_descendant_of(self, other: MemCg) -> bool:
        m: MemCg | None = self
        while m is not None:
            if m is other:
                return True
            m = m.parent
        return False

    def __repr__(self) -> str:
        path = self.cgroup.path if self.cgroup is not None else "(offline)"
        return f"<MemCg {path} usage={self.usage}>"


def mem_cgroup_charge_backing(host: Host, memcg: MemCg, nbytes: int) -> int:
    """Charge *nbytes* of shmem backing to *memcg* and its ancestors.

    Models the memcg charge inside ``shmem_read_mapping_page_gfp()`` as the reclaimer
    allocates backing (``sgx_encl_alloc_backing()``), with swap off: if any level would
    exceed its ``memory.max``, ``mem_cgroup_out_of_memory()`` kills the task of that
    level's subtree with the most backing bytes charged (ties: lowest pid; see
    :func:`epcsim.kernel.host.oom_kill_task`) and the charge fails.

    Returns:
        0 on success; -ENOMEM if the charge failed (after the OOM kill, if any task
        was eligible).
    """
    m: MemCg | None = memcg
    while m is not None:
        limit = m.max_pages
        if limit < PAGE_COUNTER_MAX and m.usage + nbytes > limit * PAGE_SIZE:
            _memcg_event(m, "events_max")
            _mem_cgroup_out_of_memory(host, m)
            return -ENOMEM
        m = m.parent
    m = memcg
    while m is not None:
        m.usage += nbytes
        m = m.parent
    return 0


def mem_cgroup_fits(memcg: MemCg, nbytes: int) -> bool:
    """True if charging *nbytes* to *memcg* stays within ``memory.max`` at every level
    (so the charge cannot OOM).  No side effects."""
    m: MemCg | None = memcg
    while m is not None:
        limit = m.max_pages
        if limit < PAGE_COUNTER_MAX and m.usage + nbytes > limit * PAGE_SIZE:
            return False
        m = m.parent
    return True


def mem_cgroup_uncharge_backing(host: Host, memcg: MemCg, nbytes: int) -> None:
    """Return *nbytes* of backing charged to *memcg* (page loaded back or released)."""
    m: MemCg | None = memcg
    while m is not None:
        m.usage -= nbytes
        if m.usage < 0:
            raise AssertionError(f"memcg usage of {m!r} went negative")
        m = m.parent


def _mem_cgroup_out_of_memory(host: Host, over: MemCg) -> None:
    """Models mem_cgroup_out_of_memory() with the model's badness (backing bytes)."""
    from .host import oom_kill_task

    victim = None
    best = -1
    for pid in sorted(host.tasks):
        t = host.tasks[pid]
        if t.exited or t.oom_killed:
            continue
        if not host.task_memcg(t).is_descendant_of(over):
            continue
        score = t.backing_bytes
        if score > best:
            best = score
            victim = t
    _memcg_event(over, "events_oom")
    if victim is None:
        return
    # memcg_memory_event_mm(victim mm, MEMCG_OOM_KILL): the victim's memcg and up
    _memcg_event(host.task_memcg(victim), "oom_kills")
    oom_kill_task(host, victim)


def _memcg_event(memcg: MemCg, name: str) -> None:
    """memcg_memory_event(): count in *memcg* and every ancestor (hierarchical)."""
    m: MemCg | None = memcg
    while m is not None:
        setattr(m, name, getattr(m, name) + 1)
        m = m.parent
