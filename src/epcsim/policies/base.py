"""The policy interface: a reclaim design is a :class:`Policy` setting some of the hooks
declared in :data:`epcsim.kernel.hooks.HOOKS` (where the model calls each, what it
decides); ``v16`` sets none, so the series' code path is the model's default path,
unchanged.  Hook methods take the host first, as the kernel functions do.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from ..kernel.hooks import HOOKS, Episode

if TYPE_CHECKING:
    from ..kernel.epc_cgroup import SgxCgroup
    from ..kernel.host import Host, Task
    from ..kernel.lru import SgxEpcLruList
    from ..kernel.misc import MiscCg

__all__ = ["HOOKS", "Episode", "Policy"]


class Policy:
    """A reclaim design.  Subclasses set :attr:`name`, :attr:`source` (series version
    and posting date, or kernel file/commit), :attr:`changes` (what it changes relative
    to v16) and the hooks they need (methods named as the keys of :data:`HOOKS`); every
    hook left None is v16's behaviour.  One instance per host; it may keep state."""

    name: ClassVar[str] = ""
    source: ClassVar[str] = ""
    changes: ClassVar[str] = ""
    #: not a design of the series (an external baseline): the docs say so
    external: ClassVar[bool] = False
    #: the ``reclaim_pages`` hook takes ``track=`` (a ReclaimerTrack of
    #: :mod:`epcsim.kernel.resume`, engine take-over only) and updates it before each
    #: yield: the compiled engine may take a busy ksgxd or worker over
    tracks_reclaim: ClassVar[bool] = False

    reclaim_pages: Callable[..., Generator[str, None, int]] | None = None
    try_charge: Callable[..., Generator[str, None, int]] | None = None
    nothing_reclaimable: Callable[[Host, Task, SgxCgroup], int] | None = None
    lru_empty: Callable[[Host, MiscCg], bool] | None = None
    should_reclaim: Callable[[Host, SgxCgroup], bool] | None = None
    page_lru: Callable[[Host, int], SgxEpcLruList] | None = None
    age_test: Callable[[Host, SgxCgroup], bool] | None = None
    record_page: Callable[[Host, int, int], None] | None = None
    max_written: Callable[[Host, MiscCg], None] | None = None
    faulted: Callable[[Host, SgxCgroup], None] | None = None

    #: the policy's reclaim scans list entries that cost ``lru_scan`` each (the cost is
    #: listed in ``summary.json["costs_ns"]`` only then)
    scans: ClassVar[bool] = False
    #: list entries the policy's own scans examined (pages looked at besides the
    #: series' 16-page batches); the simulator charges ``lru_scan`` for each
    #: (epcsim.costs).  The series' designs never count one.
    nr_scanned: int = 0

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = seed

    def own_lrus(self) -> Sequence[SgxEpcLruList]:
        """The lists of reclaimable pages the policy keeps instead of the cgroups' LRUs
        (a page of any cgroup may be on one); :func:`epcsim.kernel.invariants.
        check_invariants` counts their pages as on an LRU.  None by default."""
        return ()

    def reclaimable_pages(self, host: Host, sgx_cg: SgxCgroup) -> int:
        """Pages of *sgx_cg* on a list of reclaimable pages (the time series'
        ``reclaimable_pages``): its LRU's, as in v16; a policy keeping pages on lists of
        its own (:meth:`own_lrus`) counts those of *sgx_cg* there too."""
        return sgx_cg.lru.nr

    def counters(self, host: Host) -> dict[str, Any]:
        """The policy's own statistics, written to ``summary.json["policy_counters"]``
        when not empty (v16 has none: the key is absent)."""
        return {}

    def attach(self, host: Host) -> None:
        """Called once when the host is built, before any cgroup or enclave exists
        besides the root (a policy that keeps per-host lists makes them here)."""
