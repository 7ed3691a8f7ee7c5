"""A real Dask cluster on loopback for the tests: one ``dask scheduler`` process and
``dask worker`` processes (``--nthreads 1``, no nanny, so a worker that exits stays
gone and its exit status is the test's to read).

Every process gets ``PYTHONPATH`` = this worktree's ``src`` and ``tests``: the
workers import epcsim and :mod:`_dask_fns` as a real cluster's workers import the
installed epcsim.  Readiness is awaited through Dask itself (``Client(timeout=...)``
retries until the scheduler listens, ``Client.wait_for_workers``), never by sleeping.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"

#: seconds a process may take to come up on a loaded 2-core machine
START_TIMEOUT_S = 60


def free_port() -> int:
    """A TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LoopbackCluster:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self.client: Any = None

    def _env(self, extra: dict[str, str] | None) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(TESTS)])
        env.setdefault("NUMBA_CACHE_DIR", "/tmp/numba-dask")
        env.update(extra or {})
        return env

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None):
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            env=self._env(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.logs,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def start(self, workers: int) -> None:
        from distributed import Client

        self._spawn(
            "scheduler",
            [
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-dashboard",
            ],
        )
        for _ in range(workers):
            self.add_worker()
        self.client = Client(self.address, timeout=START_TIMEOUT_S, set_as_default=False)
        self.client.wait_for_workers(workers, timeout=START_TIMEOUT_S)

    def add_worker(self, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start one more worker process (not awaited: ``client.wait_for_workers``)."""
        n = len(self.workers)
        proc = self._spawn(
            f"worker-{n}",
            [
                "distributed.cli.dask_worker",
                self.address,
                "--nworkers",
                "1",
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--name",
                f"w{n}",
                "--local-directory",
                str(self.logs / f"w{n}"),
            ],
            env,
        )
        self.workers.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        """Workers first (a worker whose scheduler went away first waits for it), then
        the scheduler; each SIGTERM'ed and awaited."""
        if self.client is not None:
            self.client.close()
        for group in (self.workers, [p for p in self.procs if p not in self.workers]):
            for proc in group:
                if proc.poll() is None:
                    proc.terminate()
            for proc in group:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def start_cluster(logs: Path, workers: int = 2) -> LoopbackCluster:
    c = LoopbackCluster(logs)
    try:
        c.start(workers)
    except BaseException:
        c.stop()
        raise
    return c
