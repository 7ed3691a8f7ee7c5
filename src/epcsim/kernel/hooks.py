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

The episode log (not kernel code either).  When ``host.episode_log`` is an
:class:`EpisodeLog` (None by default; ``epcsim.run(..., episode_log=True)``), every
reclaim call site creates its episode even without a policy, the log records it at its
first ``sgx_cgroup_reclaim_pages()`` call (with the pages it needs, :func:`pages_needed`)
and stamps its end; ``sgx_reclaim_pages()`` counts the pages it scans and evicts per
cgroup into it.  Nothing else changes: the log only reads the model.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .constants import (
    PAGE_SIZE,
    SGX_CG_LOW_LIMIT,
    SGX_CG_MIN_FREE_PAGE,
    SGX_NR_HIGH_PAGES,
    SGX_NR_LOW_PAGES,
)

if TYPE_CHECKING:
    from .epc_cgroup import SgxCgroup
    from .host import Host

__all__ = [
    "HOOKS",
    "Episode",
    "EpisodeLog",
    "episode_end",
    "logging_episodes",
    "pages_needed",
    "run_in_episode",
]

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
    # --- with the episode log only (EpisodeLog) ---
    #: pages the episode needed at its first reclaim call, and the cgroup whose limit
    #: (or the root: the EPC's free pages) set that need (:func:`pages_needed`)
    needed: int = 0
    scope: SgxCgroup | None = None
    #: per cgroup whose LRU they came from: pages isolated (scanned) / evicted
    scanned: dict[SgxCgroup, int] = field(default_factory=dict)
    reclaimed: dict[SgxCgroup, int] = field(default_factory=dict)
    #: the log's clock at the first reclaim call and at the end (-1: not yet)
    started_ns: int = -1
    ended_ns: int = -1


def pages_needed(host: Host, episode: Episode) -> tuple[int, SgxCgroup]:
    """The pages *episode* must reclaim to get below its threshold or limit, now, and
    the cgroup whose limit that is (the root for the EPC's free pages).

    ``sync``: the pages over the limit plus the one being charged, at the level whose
    limit is the most exceeded: max over the requester and its ancestors of usage + 1 -
    floor(min(max, capacity) / 4096), as ``misc_cg_try_charge()`` tests both.
    ``async``, and ``direct`` over a non-root subtree: usage - the threshold of
    ``sgx_cgroup_should_reclaim()`` + 1 (it reclaims while usage >= threshold).
    ``ksgxd``: SGX_NR_HIGH_PAGES - free pages (``sgx_should_reclaim_global()`` holds
    while free < watermark); a global ``direct`` pass: the same with SGX_NR_LOW_PAGES;
    ``alloc``: 1 - free pages (one free page).
    """
    kind, root = episode.kind, episode.root
    free = host.epc.nr_free_pages
    top = host.sgx_cg_root
    if kind == "ksgxd":
        return SGX_NR_HIGH_PAGES - free, top
    if kind == "alloc":
        return 1 - free, top
    if kind == "direct" and root.cg.parent is None:
        return SGX_NR_LOW_PAGES - free, top
    if kind == "sync":
        # the level misc_cg_try_charge() fails at first, going up, is the most exceeded
        worst, at = None, root.cg
        i = root.cg
        capacity = i.ctrl.capacity
        while i is not None:
            over = i.usage // PAGE_SIZE + 1 - min(i.max, capacity) // PAGE_SIZE
            if worst is None or over > worst:
                worst, at = over, i
            i = i.parent
        assert worst is not None
        return worst, at.priv
    # async, direct: sgx_cgroup_should_reclaim()'s threshold (the smallest limit up to
    # the root; the nearest level holding it)
    limit, at = None, root.cg
    i = root.cg
    while i is not None:
        v = i.max // PAGE_SIZE
        if limit is None or v < limit:
            limit, at = v, i
        i = i.parent
    assert limit is not None
    if limit > SGX_CG_LOW_LIMIT:
        limit -= SGX_CG_MIN_FREE_PAGE
    return root.cg.usage // PAGE_SIZE - limit + 1, at.priv


class EpisodeLog:
    """The reclaim episodes of a run, in the order of their first reclaim call.

    *clock*: the virtual time (the simulator's; the kernel model has none), stamped at
    an episode's first reclaim call and at its end.  An episode still under way when
    the run ends keeps ``ended_ns`` -1.
    """

    def __init__(self, clock: Callable[[], int] | None = None) -> None:
        self.clock: Callable[[], int] = clock if clock is not None else (lambda: 0)
        self.episodes: list[Episode] = []

    def begin(self, host: Host, episode: Episode) -> None:
        """At *episode*'s first ``sgx_cgroup_reclaim_pages()`` call: record it."""
        episode.needed, episode.scope = pages_needed(host, episode)
        episode.started_ns = self.clock()
        self.episodes.append(episode)

    def end(self, episode: Episode) -> None:
        """*episode* ended (a no-op for one that never reclaimed or already ended)."""
        if episode.started_ns >= 0 and episode.ended_ns < 0:
            episode.ended_ns = self.clock()


def logging_episodes(host: Host) -> bool:
    """Whether the reclaim call sites create episodes: with a policy or a log."""
    return host.policy is not None or host.episode_log is not None


def episode_end(host: Host, episode: Episode | None) -> None:
    """*episode* ended: stamp it in the episode log, if there is one."""
    if episode is not None and host.episode_log is not None:
        host.episode_log.end(episode)


def run_in_episode(
    host: Host, gen: Generator[str, None, Any], episode: Episode
) -> Generator[str, None, Any]:
    """Run a policy's hook generator *gen* with ``host.reclaim_episode`` = *episode*
    during each of its steps (restored at each yield, so other reclaimers' steps in
    between see their own): the ``sgx_reclaim_pages()`` calls the hook makes count into
    the episode, and as its kind's reclaimer (``by``), without being passed it."""
    prev = host.reclaim_episode
    value: Any = None
    while True:
        host.reclaim_episode = episode
        try:
            point = gen.send(value)
        except StopIteration as stop:
            host.reclaim_episode = prev
            return stop.value
        host.reclaim_episode = prev
        value = yield point
