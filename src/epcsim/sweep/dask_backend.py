"""Sweep points on an existing Dask distributed cluster (``--scheduler tcp://HOST:PORT``).

:func:`run_dask` is the cluster twin of ``executors.run_local``: the same function over
the same items, each result handed to ``on_result(item, result)`` in the driver (this
process) as it arrives, so the driver — never a worker — writes a point's rows, and an
interrupted sweep loses only the points in flight (``docs/CLUSTER.md``).

What it does, in order:

1. Connects to *scheduler* (``distributed.Client``); an address that does not answer
   within ``connect_timeout`` seconds is an :class:`~epcsim.errors.EpcsimError` naming it.
2. Asks every worker its ``epcsim.__version__`` (``Client.run``) and refuses a worker
   that cannot import epcsim or has another version than the driver's: a point's rows
   are the model's, and the model is the package.  Workers that join later are checked
   by each task itself (:func:`_task`).
3. Submits one task per distinct point key, under a fixed key
   ``epcsim-<fn name>-<item.key>``.  A fixed key is a content address — the point's key
   is a hash of its resolved scenario and seed — so ``pure=False`` (a random key per
   call) would be wrong: two drivers asking the same point of the same cluster share
   one computation, whose rows are the same whoever asked (``wall_s`` and ``hostname``
   apart).  With an explicit key Dask ignores ``pure``.
4. Collects with ``distributed.as_completed``, releasing each future once delivered.
   A result lost with its worker before the driver fetched it is computed again by the
   scheduler and waited for.

A task that raises is an infrastructure failure (``run_point`` turns a point's own
errors into rows with ``outcome="error"``): a worker that died under it is retried by
the scheduler up to ``distributed.scheduler.allowed-failures`` times (default 3) before
it is given up with ``KilledWorker``.  The other points are still collected and
delivered; then :class:`PointsFailedError` (an :class:`EpcsimError`) names the failed
points (a resumed sweep runs them again); so does a connection to the scheduler lost
mid-sweep, naming the points not delivered.  ``KeyboardInterrupt``: the queued futures
are cancelled, nothing more is delivered, the client is closed and the interrupt
re-raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from ..errors import EpcsimError

__all__ = ["CONNECT_TIMEOUT_S", "PointsFailedError", "point_task_key", "run_dask"]

T = TypeVar("T")
R = TypeVar("R")

#: seconds to wait for the scheduler to answer before giving up
CONNECT_TIMEOUT_S = 5.0


class PointsFailedError(EpcsimError):
    """Points the cluster could not compute (their task raised, or their workers kept
    dying); the others were delivered.  ``keys``: the failed points' keys.  Not bad
    input: ``epcsim sweep`` exits 1 for it, as for a local worker process that died."""

    def __init__(self, message: str, keys: list[str]) -> None:
        super().__init__(message)
        self.keys = keys

    def __reduce__(self) -> tuple[Any, ...]:  # picklable despite the second argument
        return (PointsFailedError, (str(self), self.keys))


def _version() -> str:
    import epcsim

    return epcsim.__version__


def _worker_version() -> str:
    """Run on each worker (``Client.run``): the epcsim version it imports."""
    return _version()


def _task(item: Any, *, fn: Callable[[Any], Any], driver_version: str) -> Any:
    """What a worker runs for one point: *fn(item)*, once the worker's epcsim is the
    driver's (a worker that joined after the start was not asked by ``Client.run``)."""
    mine = _version()
    if mine != driver_version:
        raise RuntimeError(
            f"this worker runs epcsim {mine}, the driver epcsim {driver_version}: "
            "install the driver's version on every worker"
        )
    return fn(item)


def _fn_name(fn: Callable[..., Any]) -> str:
    """``run_point``; a ``functools.partial`` with its arguments:
    ``run_point(keep_run=True)`` (another result than ``run_point``'s, another key)."""
    if isinstance(fn, functools.partial):
        args = [repr(a) for a in fn.args] + [f"{k}={v!r}" for k, v in sorted(fn.keywords.items())]
        return f"{_fn_name(fn.func)}({', '.join(args)})"
    return str(getattr(fn, "__name__", type(fn).__name__))


def point_task_key(fn: Callable[..., Any], item: Any) -> str:
    """The Dask key of *fn(item)*: ``epcsim-<fn name>-<item.key>`` (a point's ``key`` is
    the hash of its resolved scenario and seed, so the task key is a content address)."""
    key = getattr(item, "key", None)
    if not isinstance(key, str) or not key:
        raise EpcsimError(f"run_dask: an item needs a non-empty str 'key', got {item!r}")
    return f"epcsim-{_fn_name(fn)}-{key}"


async def _probe(address: str, timeout: float) -> None:
    from distributed.comm import connect

    comm = await connect(address, timeout=timeout)
    await comm.close()


def _connect(scheduler: str, timeout: float) -> Any:
    """A ``distributed.Client`` on *scheduler*, or one clear EpcsimError.

    The address is probed first with a bare connection: a ``Client`` whose constructor
    times out leaves a half-built object whose finaliser waits twice the timeout again
    and reports an exception nobody can catch.
    """
    from distributed import Client

    what = f"scheduler {scheduler}"
    try:
        asyncio.run(_probe(scheduler, timeout))
    except ValueError as e:  # malformed address, unknown scheme
        raise EpcsimError(
            f"{what}: not a scheduler address ({e}); expected tcp://HOST:PORT"
        ) from None
    except (OSError, TimeoutError) as e:
        raise EpcsimError(
            f"{what}: cannot connect within {timeout:g} s ({e}); is `dask scheduler` "
            "running there and reachable from this host?"
        ) from None
    try:
        return Client(scheduler, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as e:  # pragma: no cover - the probe just connected
        raise EpcsimError(f"{what}: cannot connect within {timeout:g} s ({e})") from None


def _check_workers(client: Any, scheduler: str, version: str) -> None:
    """Every worker imports epcsim at the driver's version, or EpcsimError."""
    found = client.run(_worker_version, on_error="return")
    bad = []
    for worker, v in sorted(found.items()):
        if isinstance(v, BaseException):
            bad.append(f"{worker} cannot import epcsim ({type(v).__name__}: {v})")
        elif v != version:
            bad.append(f"{worker} runs epcsim {v}")
    if bad:
        raise EpcsimError(
            f"scheduler {scheduler}: {len(bad)} of {len(found)} workers do not run epcsim "
            f"{version} (the driver's): {'; '.join(bad)}. Install the same epcsim version "
            "in the workers' environment (docs/CLUSTER.md)"
        )


def _key(item: Any) -> str:
    return str(getattr(item, "key", item))


def _failure(item: Any, exc: BaseException | None, status: str) -> str:
    key = _key(item)
    if exc is None or status == "cancelled":
        return f"point {key}: cancelled on the scheduler"
    if type(exc).__name__ == "KilledWorker":
        return (
            f"point {key}: the workers running it died "
            "distributed.scheduler.allowed-failures + 1 times (KilledWorker)"
        )
    return f"point {key}: {type(exc).__name__}: {exc}"


def run_dask(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    scheduler: str,
    on_result: Callable[[T, R], None],
    connect_timeout: float = CONNECT_TIMEOUT_S,
) -> None:
    """Run ``fn(item)`` for each item on the Dask cluster at *scheduler*; call
    ``on_result(item, result)`` here, in the driver, as each result arrives.

    *fn* and the items must be picklable by reference (a top-level function such as
    ``epcsim.sweep.points.run_point``, dataclass items) and importable on the workers;
    each item has a ``key`` (str), its identity: items with the same key are computed
    once and each is handed the result.  Order of delivery: completion order.

    Raises:
        EpcsimError: *scheduler* is not an address or does not answer within
            *connect_timeout* seconds; a worker lacks epcsim or runs another version.
        PointsFailedError: after all other points were delivered, the points whose task
            raised or whose workers kept dying (named).
        KeyboardInterrupt: queued points cancelled, nothing more delivered.
    """
    if not isinstance(scheduler, str) or not scheduler.strip():
        raise EpcsimError(f"scheduler: expected an address tcp://HOST:PORT, got {scheduler!r}")
    if isinstance(connect_timeout, bool) or not (
        isinstance(connect_timeout, int | float) and connect_timeout > 0
    ):
        raise EpcsimError(f"connect_timeout: expected seconds > 0, got {connect_timeout!r}")
    work = list(items)
    by_key: dict[str, list[T]] = {}
    for item in work:
        by_key.setdefault(point_task_key(fn, item), []).append(item)
    if not by_key:
        return
    scheduler = scheduler.strip()
    version = _version()
    with _quiet_client_logs():
        client = _connect(scheduler, float(connect_timeout))
        try:
            _collect(client, fn, by_key, scheduler, version, on_result)
        finally:
            client.close()


#: the driver-side loggers of distributed whose tracebacks (a lost scheduler connection)
#: would reach the terminal; run_dask says what happened in one line instead
_CLIENT_LOGGERS = ("distributed.client", "distributed.batched", "distributed.comm")


@contextlib.contextmanager
def _quiet_client_logs() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _CLIENT_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _collect(
    client: Any,
    fn: Callable[[T], R],
    by_key: dict[str, list[T]],
    scheduler: str,
    version: str,
    on_result: Callable[[T, R], None],
) -> None:
    """Check the workers, submit, deliver as completed; raise for the failed points."""
    from distributed import as_completed

    futures: list[Any] = []
    try:
        _check_workers(client, scheduler, version)
        keys = list(by_key)
        futures = client.map(
            _task,
            [by_key[k][0] for k in keys],
            key=keys,
            fn=fn,
            driver_version=version,
        )
        failed: list[tuple[str, str]] = []  # (point key, why)
        done = as_completed(futures, loop=client.loop)
        for future in done:
            first = by_key[future.key][0]
            if future.status not in ("finished", "error", "cancelled"):
                # "lost": it finished on a worker that died before the result was
                # fetched; the scheduler computes it again: wait for that
                done.add(future)
                continue
            try:
                result = future.result()
            except (Exception, asyncio.CancelledError) as exc:  # erred, cancelled
                status = future.status
                failed.append((_key(first), _failure(first, exc, status)))
                future.release()
                continue
            future.release()
            for item in by_key[future.key]:
                on_result(item, result)
        if failed:
            if client.status != "running":
                why = (
                    f"the connection to it was lost; {len(keys) - len(failed)} of "
                    f"{len(keys)} points were delivered, the others were not"
                )
            else:
                more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
                why = (
                    f"{len(failed)} of {len(keys)} points failed on the cluster, the others "
                    f"were delivered: {failed[0][1]}{more}"
                )
            raise PointsFailedError(f"scheduler {scheduler}: {why}", [k for k, _ in failed])
    except BaseException:
        pending = [f for f in futures if not f.done()]
        if pending and client.status == "running":
            with contextlib.suppress(Exception):
                client.cancel(pending)
        raise
