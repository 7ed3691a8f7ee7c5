"""Where a sweep's points run: a local process pool (:func:`run_local`); the Dask backend
(``epcsim.sweep.dask_backend.run_dask``) has the same contract.

Contract of an executor ``run_X(fn, items, *, ..., on_result)``: call ``fn(item)`` for
every item somewhere, and ``on_result(item, result)`` in the calling (driver) process
as each finishes, in the order they finish; the driver writes each result as soon as it
has it, so a crash loses only the points in flight.  On KeyboardInterrupt: submit
nothing more, cancel what is queued, stop what runs, deliver nothing more, re-raise.
An exception from ``fn`` (``run_point`` catches the point's own) is re-raised after
the same clean-up.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, TypeVar

__all__ = ["run_local"]

T = TypeVar("T")
R = TypeVar("R")


def _ignore_sigint() -> None:
    """Worker initializer: Ctrl-C in a terminal goes to the whole process group; the
    driver alone handles it (and stops the workers), so workers print no traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_local(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    jobs: int,
    on_result: Callable[[T, R], None],
) -> None:
    """Run ``fn`` over *items* in *jobs* processes (1: in this process, one after the
    other), calling ``on_result(item, result)`` here as each finishes.  At most
    ``2 * jobs`` items are submitted ahead, so an interrupt has little to cancel."""
    todo = list(items)
    if jobs <= 1 or len(todo) <= 1:
        for item in todo:
            on_result(item, fn(item))
        return
    ex = ProcessPoolExecutor(max_workers=min(jobs, len(todo)), initializer=_ignore_sigint)
    pending: dict[Future[Any], tuple[int, T]] = {}
    it = iter(enumerate(todo))
    try:
        for k, item in it:
            pending[ex.submit(fn, item)] = (k, item)
            if len(pending) >= 2 * jobs:
                break
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in sorted(done, key=lambda f: pending[f][0]):
                _, item = pending.pop(fut)
                on_result(item, fut.result())
                for k, nxt in it:  # one more in place of the one done
                    pending[ex.submit(fn, nxt)] = (k, nxt)
                    break
    except BaseException:
        for fut in pending:
            fut.cancel()
        _stop(ex)
        raise
    ex.shutdown(wait=True)


def _stop(ex: ProcessPoolExecutor) -> None:
    """Cancel the queue and end the worker processes now (a point in flight is lost;
    its result would not be delivered anyway)."""
    procs = list(getattr(ex, "_processes", {}).values())  # no public way before 3.14
    ex.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        with contextlib.suppress(Exception):
            p.terminate()
    for p in procs:
        with contextlib.suppress(Exception):
            p.join(timeout=5)
