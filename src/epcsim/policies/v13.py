"""``v13``: the series' v13 walk, restarted at the subtree root on every call.

"Add Cgroup support for SGX EPC memory", v13 (2024-04-30).  In v13
``sgx_cgroup_reclaim_pages(root, charge_mm)`` ("x86/sgx: Add basic EPC reclamation flow
for cgroup") walked subtree(root) in preorder with ``css_for_each_descendant_pre()``,
calling ``sgx_reclaim_pages()`` on each cgroup's LRU until SGX_NR_TO_SCAN pages were
isolated in that call or the walk ended; nothing was remembered between calls, so every
call started at the root again.  Kai Huang's review of v13 (2024-05-07): global reclaim
starting at the root took essentially everything from the root's LRU (a 16-page scan
was satisfied by the first non-empty LRU and the next call restarted at the root), so it
was not truly global.  v14 (2024-05-31) let the callers carry a cursor (policy ``v14``);
v16 (2024-08-20) made it persistent per root (``next_cg``).

What changes relative to v16 (the ``reclaim_pages`` hook only): no cursor at all, each
call walks from the root of its subtree, the root's own LRU first; no emptiness check
inside the call (v13 had none: the callers check ``sgx_cgroup_lru_empty()`` /
``sgx_cgroup_should_reclaim()``); ``nr_to_scan`` is the caller's, as in v16 (v13 always
scanned SGX_NR_TO_SCAN); ``root.next_cg`` is never read nor advanced.

v13's walk stopped at the first cgroup whose reference could not be taken; in the model
a cgroup leaves the tree as its last reference goes, so the walk never meets one.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from ..kernel import reclaim as _reclaim
from ..kernel.epc_cgroup import sgx_cgroup_next_desc_pre, sgx_put_cg
from .base import Policy

if TYPE_CHECKING:
    from ..kernel.epc_cgroup import SgxCgroup
    from ..kernel.hooks import Episode
    from ..kernel.host import Host, Task
    from ..kernel.resume import ReclaimerTrack, SgxCgroupReclaimPagesState

__all__ = ["POLICY", "V13", "sgx_cgroup_reclaim_pages"]


def sgx_cgroup_reclaim_pages(
    host: Host,
    root: SgxCgroup,
    charge_task: Task | None,
    nr_to_scan: int,
    *,
    resume: SgxCgroupReclaimPagesState | None = None,
    track: ReclaimerTrack | None = None,
) -> Generator[str, None, int]:
    """Models sgx_cgroup_reclaim_pages(root, charge_mm) (v13, 2024-04-30).

    A preorder walk of subtree(*root*) from *root*: ``sgx_reclaim_pages()`` on each
    cgroup's LRU (every cgroup but the root referenced while it is scanned) until
    *nr_to_scan* pages were isolated in this call or the walk passed the last cgroup.

    ``resume`` (engine hand-over only, :mod:`epcsim.kernel.resume`): the walk stopped
    inside ``sgx_reclaim_pages()`` on ``resume.c`` with ``resume.cnt`` pages counted
    before that batch; the walk goes on from there.  ``track`` (engine take-over only):
    the count and the cgroup before each batch, passed down to ``sgx_reclaim_pages()``.

    Returns: the number of pages isolated (with a live enclave reference).
    """
    pos, cnt, batch = root, 0, None
    if resume is not None:
        pos, cnt, batch = resume.c, resume.cnt, resume.batch
    while True:
        if track is not None:
            track.cnt, track.c = cnt, pos
        cnt += yield from _reclaim.sgx_reclaim_pages(
            host, pos, charge_task, resume=batch, track=track
        )
        batch = None
        if cnt >= nr_to_scan:
            if pos is not root:
                sgx_put_cg(host, pos)
            return cnt
        nxt = sgx_cgroup_next_desc_pre(root, pos)  # referenced unless it is the root
        if pos is not root:
            sgx_put_cg(host, pos)
        if nxt is root:  # the walk ended
            return cnt
        pos = nxt


class V13(Policy):
    name = "v13"
    tracks_reclaim = True
    source = "the series v13, 2024-04-30 (Kai Huang's review of 2024-05-07)"
    changes = (
        "no cursor: every sgx_cgroup_reclaim_pages() call walks its subtree in preorder "
        "from the root until nr_to_scan pages are isolated or the walk ends"
    )

    def reclaim_pages(
        self,
        host: Host,
        root: SgxCgroup,
        charge_task: Task | None,
        nr_to_scan: int,
        episode: Episode,
        *,
        resume: SgxCgroupReclaimPagesState | None = None,
        track: ReclaimerTrack | None = None,
    ) -> Generator[str, None, int]:
        """The ``reclaim_pages`` hook: :func:`sgx_cgroup_reclaim_pages` of v13."""
        return (
            yield from sgx_cgroup_reclaim_pages(
                host, root, charge_task, nr_to_scan, resume=resume, track=track
            )
        )


POLICY = V13
