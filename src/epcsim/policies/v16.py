"""``v16``: the series as posted, the model's default.

"Add Cgroup support for SGX EPC memory", v16 (2024-08-20) with the iterator fix of v17
(2024-08-30): per-cgroup LRUs, the persistent preorder cursor ``next_cg`` of each
cgroup (``sgx_cgroup_next_get()``), synchronous reclaim in the charge loop, asynchronous
reclaim on ``sgx_cg_wq``, preemptive reclaim before EDMM ioctls and ksgxd rotating over
all cgroups.  It sets no hook: the kernel model's functions are this design.
"""

from __future__ import annotations

from .base import Policy

__all__ = ["POLICY"]


class V16(Policy):
    name = "v16"
    source = "the series v16, 2024-08-20, with the v17 iterator fix (2024-08-30)"
    changes = "nothing: the model's default"


POLICY = V16
