"""A machine with SGX: the EPC, the misc and memory controllers, tasks and enclaves.

Models the initialisation of ``sgx_init()`` (v16 patch 5; EPC sections, ksgxd, the root
``sgx_cgroup``, the misc ops and capacity), the task side of ``kernel/exit.c`` that the
SGX code sees (``exit_mm()`` tearing down the mm, ``exit_files()`` closing the enclave
and vEPC files), signals (``signal_pending()``), and the memcg OOM kill.

The :class:`Host` is the whole model state; the kernel functions in the sibling modules
take it as their first argument.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import EpcsimUsageError, HostConfigError
from ..units import parse_size
from . import encls as _encls
from .cgroup import Cgroup, cgroup_attach_task
from .constants import PAGE_SIZE, SGX_MAX_EPC_SECTIONS
from .epc import EpcPool
from .epc_cgroup import SgxCgroup, sgx_cgroup_misc_alloc, sgx_cgroup_misc_free
from .lru import SgxEpcLruList
from .memcg import MemCg
from .misc import MiscCg, MiscController

if TYPE_CHECKING:
    from .encl import Encl
    from .virt import SgxVepc

__all__ = ["Host", "Task", "task_exit", "oom_kill_task", "send_signal"]

#: exit status the model reports for a task killed by a signal: 128 + signo
SIGKILL = 9
SIGBUS = 7
SIGTERM = 15


#: EPC pages a host may have: EPC page numbers are int32 (the EPC pool's list links
#: and every page-table entry), so at most 2^31 - 1 pages.
MAX_EPC_PAGES = 2**31 - 1


class Task:
    """A process (one mm, one thread group) as the SGX code sees it.

    ``in_kernel`` counts kernel operations in progress (suspended at a yield point);
    a fatal signal that arrives meanwhile sets ``signal_pending`` and the process exits
    when the operation returns to user space (:func:`epcsim.kernel.ioctl` wrappers).
    """

    def __init__(self, pid: int, cgroup: Cgroup, nid: int = 0) -> None:
        self.pid = pid
        self.cgroup = cgroup
        #: NUMA node the task runs on (``numa_node_id()``)
        self.nid = nid
        self.signal_pending = False
        self.pending_signo = 0
        self.exited = False
        self.exit_status: int | None = None
        self.oom_killed = False
        self.in_kernel = 0
        #: backing bytes charged for the enclaves this task owns (OOM badness)
        self.backing_bytes = 0
        #: enclaves whose file this task holds open
        self.encl_fds: list[int] = []
        #: enclaves whose mm_list holds this task's mm
        self.mapped_encls: list[int] = []
        self.vepcs: list[int] = []

    def __repr__(self) -> str:
        state = "exited" if self.exited else "alive"
        return f"<Task {self.pid} {self.cgroup.path} {state}>"


class Host:
    """The modelled machine.

    Args:
        epc: total EPC bytes (int or a size string such as ``"96MiB"``) as one section;
            or omit it and give *sections*.
        sections: EPC bytes per section (each its own NUMA node), 1 to 8 sections.
        misc_enabled: False models ``cgroup_disable=misc``: every page is charged to and
            tracked on the root, the misc files do not exist.
        sgx2: the CPU supports SGX2 (EAUG on fault, EDMM ioctls).

    Raises:
        HostConfigError: for a size that is not a positive multiple of 4096, or a bad
            number of sections.
    """

    def __init__(
        self,
        epc: int | str | None = None,
        *,
        sections: Sequence[int | str] | None = None,
        misc_enabled: bool = True,
        sgx2: bool = True,
    ) -> None:
        if (epc is None) == (sections is None):
            raise HostConfigError("host: give either epc or sections")
        raw = [epc] if sections is None else list(sections)
        if not 1 <= len(raw) <= SGX_MAX_EPC_SECTIONS:
            raise HostConfigError(
                f"host.sections: 1 to {SGX_MAX_EPC_SECTIONS} EPC sections, got {len(raw)}"
            )
        pages = []
        for k, s in enumerate(raw):
            what = "host.epc" if sections is None else f"host.sections[{k}]"
            try:
                b = parse_size(s, what=what)  # type: ignore[arg-type]
            except Exception as e:
                raise HostConfigError(str(e)) from None
            if b <= 0 or b % PAGE_SIZE:
                raise HostConfigError(f"{what}: must be a positive multiple of 4096, got {s!r}")
            pages.append(b // PAGE_SIZE)
        if sum(pages) > MAX_EPC_PAGES:
            raise HostConfigError(
                f"host.epc: {sum(pages)} EPC pages; the model holds at most {MAX_EPC_PAGES} "
                "(EPC page numbers are int32)"
            )
        self.misc_enabled = misc_enabled
        self.sgx2 = sgx2
        #: an experiment, not the kernel's behaviour (``host.experiments.no_age``):
        #: sgx_reclaimer_age() says "old" without testing the accessed bit
        self.no_age = False
        #: the reclaim design's hooks (:mod:`epcsim.policies`); None is the series' v16,
        #: which hooks nothing
        self.policy: Any = None  # epcsim.policies.base.Policy | None
        #: the rfc-knobs extension's state (:mod:`epcsim.kernel.rfc_knobs`, in no
        #: kernel; ``rfc_knobs_enable()``); None without it
        self.rfc: Any = None  # epcsim.kernel.rfc_knobs.RfcKnobs | None
        #: the ksgxd wake-up under way (an :class:`~epcsim.kernel.hooks.Episode`; only
        #: with a policy)
        self.ksgxd_episode = None
        #: the reclaim episodes, when recorded (an :class:`~epcsim.kernel.hooks.EpisodeLog`;
        #: None: not recorded, the default)
        self.episode_log: Any = None
        #: the episode whose policy hook is running (set by hooks.run_in_episode)
        self.reclaim_episode: Any = None
        # sgx_page_cache_init(): the EPC
        self.epc = EpcPool(pages)
        #: pages on all LRUs (== not sgx_cgroup_lru_empty(root))
        self.nr_lru_pages = 0
        #: ksgxd runnable (woken, or still reclaiming)
        self.ksgxd_woken = False
        #: ``sgx_cg_wq``: queued work items, oldest first
        self.sgx_cg_wq: deque[SgxCgroup] = deque()
        #: ENCLS leaf counters, indexed by the constants of :mod:`epcsim.kernel.encls`
        self.encls_count = [0] * _encls.NR_LEAVES
        self.encls: list[Encl] = []
        self.vepcs: list[SgxVepc] = []
        self.tasks: dict[int, Task] = {}
        self._next_pid = 100
        # cgroups: the root directory, its misc css and memcg
        self.root = Cgroup("", None)
        self.misc = MiscController()
        self.misc.root.cgroup = self.root
        self.root.misc = self.misc.root
        self.sgx_cgroups: list[SgxCgroup | None] = []
        self._free_sgx_ids: list[int] = []
        self.memcgs: list[MemCg] = []
        self.memcg_root = self.memcg_alloc(None, self.root)
        self.root.memcg = self.memcg_root
        # sgx_cgroup_init(): the static root sgx_cgroup
        self.sgx_cg_root = self.new_sgx_cgroup(self.misc.root)
        # sgx_cgroup_register(): ops, then capacity = all EPC
        self.misc.misc_cg_set_ops(
            lambda cg: sgx_cgroup_misc_alloc(self, cg), lambda cg: sgx_cgroup_misc_free(self, cg)
        )
        self.misc.misc_cg_set_capacity(self.epc.capacity_bytes)
        from .cgroupfs import CgroupFs

        #: the cgroup v2 filesystem (user-space boundary)
        self.fs = CgroupFs(self)

    # --- tables -----------------------------------------------------------------------

    def new_sgx_cgroup(self, cg: MiscCg) -> SgxCgroup:
        if self._free_sgx_ids:
            sid = self._free_sgx_ids.pop()
        else:
            sid = len(self.sgx_cgroups)
            if sid > 32767:
                raise EpcsimUsageError("more than 32768 live EPC cgroups")
            self.sgx_cgroups.append(None)
        sgx_cg = SgxCgroup(sid, cg, SgxEpcLruList(self.epc.m_prev, self.epc.m_next))
        self.sgx_cgroups[sid] = sgx_cg
        cg.priv = sgx_cg
        if self.rfc is not None:
            from .rfc_knobs import RfcCgroup

            sgx_cg.rfc = RfcCgroup()
        return sgx_cg

    def free_sgx_cgroup(self, sgx_cg: SgxCgroup) -> None:
        self.sgx_cgroups[sgx_cg.id] = None
        self._free_sgx_ids.append(sgx_cg.id)

    def memcg_alloc(self, parent: MemCg | None, cgrp: Cgroup) -> MemCg:
        m = MemCg(len(self.memcgs), parent, cgrp)
        if m.id > 32767:
            raise EpcsimUsageError("more than 32768 memory cgroups")
        self.memcgs.append(m)
        return m

    # --- lookups ------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """``misc.capacity`` of sgx_epc: total EPC bytes."""
        return self.misc.capacity

    def cgroup(self, path: str) -> Cgroup:
        """The cgroup directory at *path* ("/" is the root); KeyError if absent."""
        c = self.root
        for part in [p for p in path.strip("/").split("/") if p]:
            c = c.children[part]
        return c

    def cgroup_of(self, task: Task) -> Cgroup:
        return task.cgroup

    def task_misc_cg(self, task: Task) -> MiscCg:
        """``get_current_misc_cg()``: the misc css the task charges."""
        if not self.misc_enabled:
            return self.misc.root
        return task.cgroup.effective_misc()

    def task_memcg(self, task: Task) -> MemCg:
        """``mem_cgroup_from_task()``: the memcg of the task's mm."""
        return task.cgroup.effective_memcg()

    def sgx_cgroup_of(self, path: str) -> SgxCgroup:
        """The ``sgx_cgroup`` a task in the cgroup at *path* charges."""
        cg = self.misc.root if not self.misc_enabled else self.cgroup(path).effective_misc()
        assert cg.priv is not None
        return cg.priv

    # --- tasks ----------------------------------------------------------------------------

    def spawn(self, cgroup: str | Cgroup = "/", *, nid: int = 0) -> Task:
        """Create a process in *cgroup* (fork + a write to ``cgroup.procs``).

        Raises:
            OSError: ENOENT if the cgroup does not exist, EBUSY if it has controllers
                enabled in its subtree_control (no internal processes).
        """
        import errno
        import os

        if isinstance(cgroup, str):
            try:
                cgrp = self.cgroup(cgroup)
            except KeyError:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), cgroup) from None
        else:
            cgrp = cgroup
        task = Task(self._next_pid, self.root, nid)
        self.root.tasks.add(task.pid)
        ret = cgroup_attach_task(self, cgrp, task)
        if ret:
            self.root.tasks.discard(task.pid)
            raise OSError(-ret, os.strerror(-ret), cgrp.path)
        self._next_pid += 1
        self.tasks[task.pid] = task
        return task

    def live_tasks(self) -> list[Task]:
        return [t for t in self.tasks.values() if not t.exited]

    def encl_released(self, encl: Encl) -> None:
        """Hook called at the end of sgx_encl_release() (model bookkeeping only)."""

    def close(self) -> None:
        """Release the model's memory now (no kernel twin: the simulator's teardown).

        The model's objects refer to one another: each cgroup to its parent and
        children, the cgroup files and each enclave to the host, each cgroup's LRU to
        the EPC pool's link arrays.  Left alone, a host nobody holds any more, with its
        EPC pool and enclave arrays, waits for Python's cycle collector, which runs
        seldom: a process running one simulation after another (a sweep's worker, a
        benchmark) kept every finished run's arrays until it did.  Here the LRUs let go
        of the pool's arrays and the host of everything it holds, so they are freed as
        soon as the caller drops its last reference.  The host is unusable afterwards.
        """
        for sgx_cg in self.__dict__.get("sgx_cgroups", ()):
            if sgx_cg is not None:
                lru = sgx_cg.lru
                lru._prev = lru._next = memoryview(b"")  # (views of the pool's arrays)
        self.__dict__.clear()


def send_signal(host: Host, task: Task, signo: int = SIGTERM) -> None:
    """Deliver a fatal signal: ``signal_pending()`` becomes true; the process exits now
    if it is in user space, or when its kernel operation returns."""
    if task.exited:
        return
    task.signal_pending = True
    task.pending_signo = task.pending_signo or signo
    if not task.in_kernel:
        task_exit(host, task, 128 + task.pending_signo)


def oom_kill_task(host: Host, task: Task) -> None:
    """The memcg OOM killer's kill: SIGKILL to *task* (see :func:`send_signal`)."""
    task.oom_killed = True
    task.pending_signo = SIGKILL
    send_signal(host, task, SIGKILL)


def task_exit(host: Host, task: Task, status: int = 0) -> None:
    """Models do_exit() as the SGX driver sees it: ``exit_mm()`` (every enclave mapping
    this mm drops it from mm_list and its reference: ``sgx_mmu_notifier_release()``),
    then ``exit_files()`` (each enclave file reference dropped, each vEPC released).
    An enclave is released when its last reference goes (maybe later, in a reclaimer).
    Charges stay with the cgroups they were made to until the pages are freed.
    """
    from .encl import sgx_encl_put, sgx_mmu_notifier_release
    from .virt import sgx_vepc_release

    if task.exited:
        return
    task.exited = True
    task.exit_status = status
    for eid in list(task.mapped_encls):
        sgx_mmu_notifier_release(host, host.encls[eid], task)
    task.mapped_encls.clear()
    for eid in list(task.encl_fds):
        sgx_encl_put(host, host.encls[eid])
    task.encl_fds.clear()
    for vid in list(task.vepcs):
        sgx_vepc_release(host, host.vepcs[vid])
    task.vepcs.clear()
    task.cgroup.tasks.discard(task.pid)
