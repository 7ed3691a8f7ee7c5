"""epcsim.kernel — the faithful model of the SGX EPC memory manager with the v16/v17
EPC cgroup series ("Add Cgroup support for SGX EPC memory" v16, patches 1-14).  No clock,
no I/O: the simulator drives it.

Entry points: :class:`Host` (the machine), ``host.fs`` (the cgroupfs boundary),
``host.spawn()`` (a process), the ioctls of :mod:`epcsim.kernel.ioctl`, the kernel
threads' bodies (``ksgxd_step``, ``sgx_cgroup_reclaim_work_func``), :func:`drive` /
:class:`RoundRobin` to run the generator operations without a clock, and
:func:`check_invariants`.
"""

from .constants import ERESTARTSYS
from .driver import RoundRobin, drive
from .host import Host, Task, oom_kill_task, send_signal, task_exit
from .invariants import InvariantError, check_invariants

__all__ = [
    "ERESTARTSYS",
    "Host",
    "InvariantError",
    "RoundRobin",
    "Task",
    "check_invariants",
    "drive",
    "oom_kill_task",
    "send_signal",
    "task_exit",
]
