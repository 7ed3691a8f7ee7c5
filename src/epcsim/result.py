"""What a simulation produces: the summary, the time series, fault latencies."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ._atomic import atomic_path, atomic_write_text
from .errors import EpcsimError

__all__ = ["Result", "TIMESERIES_SCHEMA", "TIMESERIES_SCHEMA_VERSION"]

#: version of the time-series schema (docs/OUTPUTS.md)
TIMESERIES_SCHEMA_VERSION = 1
TIMESERIES_SCHEMA = pa.schema(
    [
        pa.field("time_ns", pa.int64()),
        pa.field("cgroup", pa.string()),
        pa.field("usage_bytes", pa.int64()),
        pa.field("limit_bytes", pa.int64()),
        pa.field("peak_bytes", pa.int64()),
        pa.field("max_events", pa.int64()),
        pa.field("faults", pa.int64()),
        pa.field("evictions", pa.int64()),
        pa.field("reclaim_batches", pa.int64()),
        pa.field("reclaimable_pages", pa.int64()),
        pa.field("enomem", pa.int64()),
    ],
    metadata={"epcsim.timeseries.version": str(TIMESERIES_SCHEMA_VERSION)},
)


@dataclass
class Result:
    """The outcome of one run.

    Attributes:
        summary: JSON-ready dict (``docs/OUTPUTS.md``): version, scenario hash, seed,
            per-cgroup and per-enclave totals, timed-operation outcomes, expectations.
        timeseries: Arrow table with :data:`TIMESERIES_SCHEMA` (cumulative counters
            sampled every ``host.sample_interval`` of virtual time).
        fault_latency_ns: latency of every resolved enclave fault, retries included.
        passed: every expectation held (True when there are none).
    """

    summary: dict
    timeseries: pa.Table
    fault_latency_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: the engine that ran the steady state: "compiled" or "reference".  Not part of
    #: summary.json and the data files, which are the same
    #: with either engine; recorded in ``run.json``.
    engine: str = "reference"
    #: why the compiled engine did not run (empty if it did or was not asked)
    engine_note: str = ""
    #: the facts about the run rather than the model (``run.json``: engine requested and
    #: run, why, wall time, versions); empty for :func:`~epcsim.sim.simulate`
    run: dict[str, Any] = field(default_factory=dict)
    #: the reclaim episodes when recorded (``epcsim.run(..., episode_log=True)``; the
    #: reference engine only): one dict per episode (kind, root, scope, needed, calls,
    #: isolated, scanned and reclaimed per cgroup path, started_ns, ended_ns), in the
    #: order of their first reclaim call; None when not recorded.  Not written to files
    episodes: list[dict[str, Any]] | None = None

    @property
    def passed(self) -> bool:
        return bool(self.summary.get("passed", True))

    def write(self, out: str | Path) -> Path:
        """Write ``summary.json``, ``timeseries.parquet`` and ``fault_latency.npy``, each
        atomically (complete or not at all).  ``run.json`` is written by
        :func:`epcsim.run`, which builds the whole directory aside."""
        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            d / "summary.json", json.dumps(self.summary, indent=2, sort_keys=True) + "\n"
        )
        with atomic_path(d / "timeseries.parquet") as tmp:
            pq.write_table(self.timeseries, tmp, compression="zstd")
        with atomic_path(d / "fault_latency.npy") as tmp:
            np.save(tmp, self.fault_latency_ns)
        return d

    @classmethod
    def read(cls, out: str | Path) -> Result:
        """Read a run directory written by :meth:`write` (and ``run.json`` if present).

        Raises:
            epcsim.errors.EpcsimError: a file is missing or unreadable, or not what it
                should be (a JSON object, a Parquet table, a 1-D integer ``.npy`` array);
                the message starts with the file's path.
        """
        d = Path(out)
        summary = _read_json_object(d / "summary.json")
        path = d / "timeseries.parquet"
        try:
            ts = pq.read_table(path)
        except (OSError, pa.ArrowException) as e:
            raise EpcsimError(f"{path}: cannot read the time series: {e}") from None
        path = d / "fault_latency.npy"
        lat = np.zeros(0, np.int64)
        if path.exists():
            try:
                lat = np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError) as e:
                raise EpcsimError(f"{path}: cannot read the fault latencies: {e}") from None
            if lat.ndim != 1 or lat.dtype.kind not in "iu":
                raise EpcsimError(
                    f"{path}: expected a 1-D integer array, got {lat.ndim}-D {lat.dtype}"
                )
        run = _read_json_object(d / "run.json") if (d / "run.json").exists() else {}
        res = cls(summary, ts, lat, run=run)
        if run:
            res.engine = str(run.get("engine", res.engine))
            res.engine_note = str(run.get("engine_reason", ""))
        return res


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EpcsimError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise EpcsimError(f"{path}: cannot read it as JSON: {e}") from None
    if not isinstance(data, dict):
        raise EpcsimError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
