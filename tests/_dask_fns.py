"""Functions and items the Dask backend's tests send to real worker processes.

The workers import this module by name (their ``PYTHONPATH`` holds ``src`` and
``tests``, as a real cluster's environment holds the installed epcsim), so everything a
task needs is top level here: pickled by reference, like ``run_point`` in a sweep.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

#: set in one worker's environment only: that worker exits (status 1) when asked for a
#: task after it has run this many
EXIT_AFTER_ENV = "EPCSIM_TEST_EXIT_AFTER"

_done = 0


@dataclass(frozen=True)
class Item:
    """A stand-in for a sweep point: an identity ``key`` and some input."""

    key: str
    n: int
    delay_s: float = 0.0


def square(item: Item) -> dict[str, Any]:
    """A deterministic "point": the same rows wherever it runs."""
    if item.delay_s:
        time.sleep(item.delay_s)
    return {"key": item.key, "n": item.n, "square": item.n * item.n}


def exit_after(item: Item) -> dict[str, Any]:
    """:func:`square`, except in the worker whose environment sets :data:`EXIT_AFTER_ENV`
    to k: that worker process exits (``os._exit(1)``, no clean-up, like a killed node)
    when its (k+1)-th task starts, so the task it holds is lost with it."""
    global _done
    limit = os.environ.get(EXIT_AFTER_ENV)
    if limit is not None and _done >= int(limit):
        os._exit(1)
    result = square(item)
    _done += 1
    return result


def boom_on_3(item: Item) -> dict[str, Any]:
    """:func:`square`, but the item with ``n == 3`` raises (an infrastructure failure)."""
    if item.n == 3:
        raise RuntimeError(f"boom {item.key}")
    return square(item)


def set_epcsim_version(version: str) -> str:
    """Run on a worker (``Client.run``): pretend it has another epcsim; returns the old."""
    import epcsim

    old = epcsim.__version__
    epcsim.__version__ = version
    return old


def scheduler_keys(dask_scheduler: Any) -> list[str]:
    """Run on the scheduler (``Client.run_on_scheduler``): the task keys it holds."""
    return sorted(str(k) for k in dask_scheduler.tasks)


def scaled(item: Item, factor: int = 1) -> dict[str, Any]:
    """:func:`square` times *factor* (sent as ``functools.partial(scaled, factor=k)``, as a
    sweep sends ``partial(run_point, keep_run=True)``)."""
    return {**square(item), "square": item.n * item.n * factor}


class ExitAfter(WorkerPlugin):
    """A worker plugin (``Client.register_plugin``): the worker whose environment sets
    :data:`EXIT_AFTER_ENV` to k exits (``os._exit(1)``) as its k-th epcsim task finishes,
    before the scheduler hears of it: the task is lost with the process and computed
    again elsewhere.  Workers without the variable are not touched."""

    name = "epcsim-test-exit-after"

    def setup(self, worker: Any) -> None:
        limit = os.environ.get(EXIT_AFTER_ENV)
        self.limit = None if limit is None else int(limit)
        self.done = 0

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if self.limit is None or finish != "memory" or not str(key).startswith("epcsim-"):
            return
        self.done += 1
        if self.done >= self.limit:
            os._exit(1)


def fail_seed_2(point: Any) -> Any:
    """``run_point``, except that the points of seed 2 raise on the worker (a broken
    worker environment: ``run_point`` itself turns a point's errors into rows)."""
    from epcsim.sweep.points import run_point

    if point.seed == 2:
        raise RuntimeError(f"no EPC for point {point.key}")
    return run_point(point)
