"""Running the model's generator operations without a clock.

The kernel model's operations are generators that yield where the kernel lets another
CPU in.  :func:`drive` runs one to completion; :class:`RoundRobin` interleaves several
(one step each in turn), running queued ``sgx_cg_wq`` work items and a woken ksgxd as
further actors, which is enough to replay the kernel selftests without a simulator.
The simulator (``epcsim.sim``) replaces this with virtual time.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from .epc_cgroup import sgx_cg_wq_take_runnable, sgx_cgroup_reclaim_work_func
from .reclaim import ksgxd_step

__all__ = ["drive", "RoundRobin"]


def drive(gen: Generator[Any, None, Any]) -> Any:
    """Run *gen* to completion, ignoring its yields; return its return value."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


class RoundRobin:
    """Interleave generator operations one yield point at a time.

    Each actor is a generator; at every turn the next actor runs to its next yield.
    Between user actors, ready kernel actors run one step too: the oldest queued
    ``sgx_cg_wq`` work item (several may be in flight, one per cgroup) and ksgxd when
    woken.  Finished actors report through *on_done*.
    """

    def __init__(self, host, *, kernel_threads: bool = True) -> None:
        self.host = host
        self.kernel_threads = kernel_threads
        self.actors: list[tuple[Any, Generator]] = []
        self.results: dict[Any, Any] = {}
        self.errors: dict[Any, BaseException] = {}
        self._workers: list[Generator] = []
        self._ksgxd: Generator | None = None
        self.steps = 0

    def add(self, key: Any, gen: Generator) -> None:
        self.actors.append((key, gen))

    def _step_kernel_threads(self) -> None:
        host = self.host
        for sgx_cg in sgx_cg_wq_take_runnable(host):
            self._workers.append(sgx_cgroup_reclaim_work_func(host, sgx_cg))
        alive = []
        for w in self._workers:
            try:
                next(w)
                alive.append(w)
            except StopIteration:
                pass
        self._workers = alive
        if self._ksgxd is None and host.ksgxd_woken:
            self._ksgxd = ksgxd_step(host)
        if self._ksgxd is not None:
            try:
                next(self._ksgxd)
            except StopIteration:
                self._ksgxd = None

    def run(
        self,
        *,
        max_steps: int = 10_000_000,
        on_done: Callable[[Any, Any, BaseException | None], None] | None = None,
    ) -> None:
        """Run until every actor finished (and kernel threads are idle), or
        *max_steps* turns; raises RuntimeError when the step budget is exhausted."""
        while self.actors or (self.kernel_threads and self._busy()):
            self.steps += 1
            if self.steps > max_steps:
                raise RuntimeError(f"RoundRobin: no completion after {max_steps} steps")
            nxt = []
            for key, gen in self.actors:
                try:
                    next(gen)
                    nxt.append((key, gen))
                except StopIteration as stop:
                    self.results[key] = stop.value
                    if on_done is not None:
                        on_done(key, stop.value, None)
                except OSError as e:
                    self.errors[key] = e
                    if on_done is not None:
                        on_done(key, None, e)
                if self.kernel_threads:
                    self._step_kernel_threads()
            self.actors = nxt
            if not self.actors and self.kernel_threads:
                self._step_kernel_threads()

    def _busy(self) -> bool:
        h = self.host
        return bool(self._workers or h.sgx_cg_wq or self._ksgxd is not None or h.ksgxd_woken)
