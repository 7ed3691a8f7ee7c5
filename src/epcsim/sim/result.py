"""What a simulation produces: the summary, the time series, fault latencies."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

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
    #: the engine that ran the steady state: "batched" or "reference" (not part of the
    #: written outputs, which are the same with either)
    engine: str = "reference"
    #: why the batched engine did not run (empty if it did or was not asked)
    engine_note: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.summary.get("passed", True))

    def write(self, out: str | Path) -> Path:
        """Write ``summary.json``, ``timeseries.parquet`` and ``fault_latency.npy``."""
        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        (d / "summary.json").write_text(json.dumps(self.summary, indent=2, sort_keys=True) + "\n")
        pq.write_table(self.timeseries, d / "timeseries.parquet", compression="zstd")
        np.save(d / "fault_latency.npy", self.fault_latency_ns)
        return d

    @classmethod
    def read(cls, out: str | Path) -> Result:
        """Read a run directory written by :meth:`write`."""
        d = Path(out)
        summary = json.loads((d / "summary.json").read_text())
        ts = pq.read_table(d / "timeseries.parquet")
        lat_path = d / "fault_latency.npy"
        lat = np.load(lat_path) if lat_path.exists() else np.zeros(0, np.int64)
        return cls(summary, ts, lat)
