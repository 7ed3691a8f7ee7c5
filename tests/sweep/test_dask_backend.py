"""``epcsim.sweep.dask_backend.run_dask`` against a real Dask cluster on loopback.

Issue 16: "--scheduler tcp://HOST:PORT runs the same points on an existing Dask
distributed cluster ... Tests start a real scheduler and workers on loopback (processes,
not threads; wait for them with Client.wait_for_workers, not sleeps), run a sweep, and
make one worker exit after its k-th task: the sweep still completes with identical rows."

One cluster (a scheduler and two worker processes) serves the module; the test that
kills a worker adds a third one for the purpose.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _dask_cluster import LoopbackCluster, free_port, start_cluster
from _dask_fns import (
    EXIT_AFTER_ENV,
    Item,
    boom_on_3,
    exit_after,
    scaled,
    scheduler_keys,
    square,
)

import epcsim
from epcsim.errors import EpcsimError
from epcsim.sweep.dask_backend import PointsFailedError, _task, point_task_key, run_dask


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackCluster]:
    c = LoopbackCluster(tmp_path_factory.mktemp("dask"))
    try:
        c.start(workers=2)
        yield c
    finally:
        c.stop()


def items(n: int, delay_s: float = 0.0) -> list[Item]:
    return [Item(f"k{i}", i, delay_s) for i in range(n)]


def collect(fn: Any, work: list[Item], address: str, **kw: Any) -> list[tuple[Item, Any]]:
    got: list[tuple[Item, Any]] = []
    main = threading.get_ident()

    def on_result(item: Item, result: Any) -> None:
        assert threading.get_ident() == main  # delivered in the driver's own thread
        got.append((item, result))

    run_dask(fn, work, scheduler=address, on_result=on_result, **kw)
    return got


def test_results_are_the_local_ones(cluster: LoopbackCluster) -> None:
    work = items(6)
    got = collect(square, work, cluster.address)
    assert sorted(got, key=lambda r: r[0].n) == [(it, square(it)) for it in work]


def test_a_partial_is_another_task_than_its_function(cluster: LoopbackCluster) -> None:
    """The same items under ``scaled`` and ``partial(scaled, factor=3)``: two keys, two
    results (a fixed key per function would hand the second the first's result)."""
    work = items(3)
    plain = collect(scaled, work, cluster.address)
    tripled = collect(functools.partial(scaled, factor=3), work, cluster.address)
    assert sorted(r["square"] for _, r in plain) == [0, 1, 4]
    assert sorted(r["square"] for _, r in tripled) == [0, 3, 12]


def test_an_item_key_is_computed_once_and_delivered_to_each_item(
    cluster: LoopbackCluster,
) -> None:
    a, b = Item("same", 4), Item("same", 4)
    got = collect(square, [a, Item("other", 5), b], cluster.address)
    assert sorted((it.key, r["square"]) for it, r in got) == [
        ("other", 25),
        ("same", 16),
        ("same", 16),
    ]
    assert [it for it, _ in got if it.key == "same"] == [a, b]


def test_task_keys_are_content_addresses() -> None:
    assert point_task_key(square, Item("ab12", 1)) == "epcsim-square-ab12"
    keep = functools.partial(square, keep_run=True)
    assert point_task_key(keep, Item("ab12", 1)) == "epcsim-square(keep_run=True)-ab12"
    with pytest.raises(EpcsimError) as e:
        point_task_key(square, 3)
    assert str(e.value) == "run_dask: an item needs a non-empty str 'key', got 3"


def test_no_items_connects_to_nothing() -> None:
    calls: list[Any] = []
    run_dask(square, [], scheduler="tcp://127.0.0.1:1", on_result=lambda *a: calls.append(a))
    assert calls == []


def test_a_worker_that_exits_after_its_kth_task_loses_no_point(
    cluster: LoopbackCluster,
) -> None:
    """A third worker exits (``os._exit(1)``) when its third task starts; the scheduler
    gives that task to another worker and every point arrives with its local rows."""
    doomed = cluster.add_worker({EXIT_AFTER_ENV: "2"})
    cluster.client.wait_for_workers(3, timeout=60)
    work = items(12, delay_s=0.1)
    got = collect(exit_after, work, cluster.address)
    assert sorted(got, key=lambda r: r[0].n) == [(it, square(it)) for it in work]
    assert doomed.wait(timeout=30) == 1, cluster.log("worker-2")
    # the two others stay (asked of the scheduler itself: the client's scheduler_info()
    # is a cache refreshed every few seconds, read empty once on a loaded CI machine)
    cluster.client.wait_for_workers(2, timeout=60)
    n = cluster.client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.workers))
    assert n == 2


def test_a_raising_task_is_named_after_the_others_are_delivered(
    cluster: LoopbackCluster,
) -> None:
    got: list[str] = []
    with pytest.raises(EpcsimError) as e:
        run_dask(
            boom_on_3,
            items(5),
            scheduler=cluster.address,
            on_result=lambda item, r: got.append(item.key),
        )
    assert str(e.value) == (
        f"scheduler {cluster.address}: 1 of 5 points failed on the cluster, the others "
        "were delivered: point k3: RuntimeError: boom k3"
    )
    assert sorted(got) == ["k0", "k1", "k2", "k4"]


def test_keyboard_interrupt_cancels_the_queued_points(cluster: LoopbackCluster) -> None:
    """Ctrl-C in the driver: nothing more is delivered, the queued points are cancelled
    (the scheduler forgets them: no client wants them any more)."""
    got: list[str] = []

    def on_result(item: Item, result: Any) -> None:
        got.append(item.key)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_dask(square, items(10, delay_s=0.2), scheduler=cluster.address, on_result=on_result)
    assert len(got) == 1
    ours = [k for k in cluster.client.run_on_scheduler(scheduler_keys) if "-square-" in k]
    assert ours == []


def test_a_worker_with_another_epcsim_is_refused(cluster: LoopbackCluster) -> None:
    info = cluster.client.scheduler_info(n_workers=-1)["workers"]
    worker = sorted(info)[0]
    from _dask_fns import set_epcsim_version

    old = cluster.client.run(set_epcsim_version, "0.0.1", workers=[worker])[worker]
    try:
        with pytest.raises(EpcsimError) as e:
            run_dask(square, items(2), scheduler=cluster.address, on_result=lambda *a: None)
    finally:
        cluster.client.run(set_epcsim_version, old, workers=[worker])
    assert str(e.value) == (
        f"scheduler {cluster.address}: 1 of 2 workers do not run epcsim "
        f"{epcsim.__version__} (the driver's): {worker} runs epcsim 0.0.1. Install the "
        "same epcsim version in the workers' environment (docs/CLUSTER.md)"
    )


def test_a_task_checks_its_worker_version_too() -> None:
    """A worker that joined after the start was not asked; its tasks refuse to run."""
    with pytest.raises(RuntimeError) as e:
        _task(Item("a", 1), fn=square, driver_version="9.9.9")
    assert str(e.value) == (
        f"this worker runs epcsim {epcsim.__version__}, the driver epcsim 9.9.9: "
        "install the driver's version on every worker"
    )
    assert _task(Item("a", 2), fn=square, driver_version=epcsim.__version__)["square"] == 4


def test_a_closed_port_is_named(tmp_path: Path) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(EpcsimError) as e:
        run_dask(square, items(1), scheduler=address, on_result=lambda *a: None, connect_timeout=1)
    assert str(e.value) == (
        f"scheduler {address}: cannot connect within 1 s (Timed out trying to connect to "
        f"{address} after 1 s); is `dask scheduler` running there and reachable from this "
        "host?"
    )


@pytest.mark.parametrize(
    ("scheduler", "timeout", "message"),
    [
        (
            "nonsense",
            1,
            "scheduler nonsense: not a scheduler address (missing port number in address "
            "'nonsense'); expected tcp://HOST:PORT",
        ),
        (
            "foo://h:1",
            1,
            "scheduler foo://h:1: not a scheduler address (unknown address scheme 'foo' "
            "(known schemes: ['inproc', 'tcp', 'tls', 'ucx', 'ws', 'wss'])); expected "
            "tcp://HOST:PORT",
        ),
        ("", 1, "scheduler: expected an address tcp://HOST:PORT, got ''"),
        (None, 1, "scheduler: expected an address tcp://HOST:PORT, got None"),
        ("tcp://127.0.0.1:1", 0, "connect_timeout: expected seconds > 0, got 0"),
        ("tcp://127.0.0.1:1", True, "connect_timeout: expected seconds > 0, got True"),
    ],
)
def test_bad_arguments(scheduler: Any, timeout: Any, message: str) -> None:
    with pytest.raises(EpcsimError) as e:
        run_dask(
            square,
            items(1),
            scheduler=scheduler,
            on_result=lambda *a: None,
            connect_timeout=timeout,
        )
    assert str(e.value) == message


def test_how_a_failed_point_is_named() -> None:
    """The three ways a task fails: it raised, its workers kept dying, it was lost."""
    from distributed.scheduler import KilledWorker

    from epcsim.sweep.dask_backend import _failure

    it = Item("ab12", 1)
    assert _failure(it, ValueError("x"), "error") == "point ab12: ValueError: x"
    assert _failure(it, KilledWorker("epcsim-f-ab12", None, 3), "error") == (
        "point ab12: the workers running it died "
        "distributed.scheduler.allowed-failures + 1 times (KilledWorker)"
    )
    assert _failure(it, None, "cancelled") == "point ab12: cancelled on the scheduler"


def test_a_scheduler_that_dies_mid_sweep_is_one_error(tmp_path: Path) -> None:
    """The scheduler killed after two points arrived (a cluster of its own): no hang, the
    points delivered stay delivered, the others are named as not delivered."""
    c = start_cluster(tmp_path, workers=1)
    got: list[str] = []
    scheduler = c.procs[0]

    def on_result(item: Item, result: Any) -> None:
        got.append(item.key)
        if len(got) == 2:
            scheduler.kill()
            scheduler.wait()

    work = items(10, delay_s=0.3)
    try:
        with pytest.raises(PointsFailedError) as e:
            run_dask(square, work, scheduler=c.address, on_result=on_result)
    finally:
        c.stop()
    n = len(got)
    assert str(e.value) == (
        f"scheduler {c.address}: the connection to it was lost; {n} of 10 points were "
        "delivered, the others were not"
    )
    assert n >= 2
    assert sorted([*got, *e.value.keys]) == sorted(it.key for it in work)
