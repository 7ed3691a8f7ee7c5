"""``v14``: the series' v14 cursor, held by the caller for one reclaim episode.

"Add Cgroup support for SGX EPC memory", v14 (2024-05-31).  In v14
``sgx_cgroup_reclaim_pages(root, start, charge_mm)`` ("x86/sgx: Add basic EPC
reclamation flow for cgroup") walked subtree(root) in preorder from *start* (the root
when NULL) and returned the "next" cgroup to continue from, referenced, or NULL when the
walk reached the end of the subtree or a dead cgroup; each caller kept that cursor in a
local variable for its own loop and dropped it when the loop ended: the charge loop of
``sgx_cgroup_try_charge()``, one run of ``sgx_cgroup_reclaim_work_func()``, one ksgxd
wake-up (``while (sgx_should_reclaim_global(SGX_NR_HIGH_PAGES))``, v14 12/14 "x86/sgx:
Turn on per-cgroup EPC reclamation"), one ``sgx_reclaim_direct()`` pass.  v16
(2024-08-20) replaced it by the persistent per-root ``next_cg`` cursor shared by every
caller ("per-root persistent cursor + synchronized iterator for fairness across the
subtree").

What changes relative to v16 (the ``reclaim_pages`` hook only): the cursor lives in the
reclaim episode (``episode.state["next_cg"]``), not in ``root.next_cg``, so every episode
starts at its subtree root; within a call the walk runs from the cursor to the end of the
subtree (it does not wrap to the root: the next call does, starting again at the root);
there is no emptiness check inside the call (v14 had none: the callers check
``sgx_cgroup_lru_empty()`` / ``sgx_cgroup_should_reclaim()``).  ``nr_to_scan`` is the
caller's, as in v16 (v14 always scanned SGX_NR_TO_SCAN); ``root.next_cg`` is never
read nor advanced.

Modelling simplification: v14's caller held a reference on the returned cgroup until its
loop ended; the model keeps the cursor without one (as v16's ``next_cg``) and a cursor
whose cgroup was freed in between restarts the walk at the root, which is what v14 did
when the next cgroup was dead.  Held, the emptied cgroup would have been scanned once
more (an empty LRU: no page) and freed at the end of the episode.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from ..kernel import reclaim as _reclaim
from ..kernel.epc_cgroup import sgx_cgroup_next_desc_pre, sgx_put_cg
from ..kernel.hooks import Episode
from ..kernel.misc import css_tryget
from .base import Policy

if TYPE_CHECKING:
    from ..kernel.epc_cgroup import SgxCgroup
    from ..kernel.host import Host, Task
    from ..kernel.resume import ReclaimerTrack, SgxCgroupReclaimPagesState

__all__ = ["POLICY", "V14", "sgx_cgroup_reclaim_pages"]


def sgx_cgroup_reclaim_pages(
    host: Host,
    root: SgxCgroup,
    charge_task: Task | None,
    nr_to_scan: int,
    episode: Episode,
    *,
    resume: SgxCgroupReclaimPagesState | None = None,
    track: ReclaimerTrack | None = None,
) -> Generator[str, None, int]:
    """Models sgx_cgroup_reclaim_pages(root, start, charge_mm) (v14, 2024-05-31).

    Starts at the episode's cursor (the root for the first call of an episode, or after
    a call that reached the end of the subtree) and runs ``sgx_reclaim_pages()`` on one
    cgroup's LRU after another in preorder until *nr_to_scan* pages were isolated or
    the walk passed the last cgroup of subtree(*root*).  Leaves the cgroup after the last
    one scanned in ``episode.state["next_cg"]`` (None past the end: the next call starts
    at the root).  Every cgroup but the root is referenced while it is scanned.

    ``resume`` (engine hand-over only, :mod:`epcsim.kernel.resume`): the call stopped
    inside ``sgx_reclaim_pages()`` on ``resume.c`` with ``resume.cnt`` pages counted
    before that batch; the call goes on from there.  ``track`` (engine take-over only):
    the count and the cgroup before each batch, passed down to ``sgx_reclaim_pages()``.

    Returns: the number of pages isolated (with a live enclave reference).
    """
    if resume is None:
        pos = episode.state.get("next_cg") or root
        if pos is not root and not css_tryget(pos.cg):
            pos = root  # freed since the last call: v14 restarted at the root
        cnt = 0
        batch = None
    else:
        pos, cnt, batch = resume.c, resume.cnt, resume.batch
    while batch is not None or cnt < nr_to_scan:
        if track is not None:
            track.cnt, track.c = cnt, pos
        cnt += yield from _reclaim.sgx_reclaim_pages(
            host, pos, charge_task, resume=batch, track=track
        )
        batch = None
        nxt = sgx_cgroup_next_desc_pre(root, pos)  # referenced unless it is the root
        if pos is not root:
            sgx_put_cg(host, pos)
        if nxt is root:  # past the end of the subtree: v14 returned NULL
            episode.state["next_cg"] = None
            return cnt
        pos = nxt
    # the "next" cgroup v14 returned; the model's cursor holds no reference
    sgx_put_cg(host, pos)
    episode.state["next_cg"] = pos
    return cnt


class V14(Policy):
    name = "v14"
    tracks_reclaim = True
    source = "the series v14, 2024-05-31 (sgx_cgroup_reclaim_pages() returns the next cgroup)"
    changes = (
        "no persistent next_cg: each reclaim episode (a charge loop, a work run, a ksgxd "
        "wake-up, a direct reclaim) walks from its subtree root and carries the 'next' "
        "cgroup each call returns until it ends"
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
        """The ``reclaim_pages`` hook: :func:`sgx_cgroup_reclaim_pages` of v14."""
        return (
            yield from sgx_cgroup_reclaim_pages(
                host, root, charge_task, nr_to_scan, episode, resume=resume, track=track
            )
        )


POLICY = V14
