"""What a simulation produces: the summary, the time series, fault latencies."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._atomic import atomic_path, atomic_write_text
from .errors import EpcsimError

__all__ = [
    "FAULT_LATENCY_SCHEMA",
    "Result",
    "cgroup_rows",
    "enclave_rows",
    "engine_text",
    "latency_percentiles",
    "TIMESERIES_SCHEMA",
    "TIMESERIES_SCHEMA_VERSION",
]

#: the fault latency percentiles of summary.json (p50, p90, p99, max), as
#: ``numpy.percentile`` takes them
LATENCY_QUANTILES = np.true_divide([50, 90, 99, 100], 100)
#: below this many latencies :func:`latency_percentiles` calls ``numpy.percentile``
_SELECT_MIN = 1 << 16
#: latencies per pass of the bracket counts (each chunk's passes run in the L2 cache)
_CHUNK = 1 << 17


def latency_percentiles(lat: np.ndarray, *, select_min: int = _SELECT_MIN) -> list[int]:
    """``numpy.percentile(lat, [50, 90, 99, 100]).round().astype(np.int64).tolist()`` of
    the non-empty int64 array *lat*, the same integers.

    ``numpy.percentile`` copies and partitions the whole array: for a run of 10M faults
    (80 MB of latencies) that was a quarter of the run's wall time, most of it the
    first touch of the copy's pages.  Here the order statistics that numpy's "linear"
    rule reads (ranks ``floor((n - 1) q)`` and the next) are selected chunk by chunk:
    a sorted sample brackets each rank; one pass counts the values below each bracket,
    at its two ends, and collects those inside it; the rank is then found in the
    bracket.  The interpolation is numpy's (``_lerp`` of
    ``numpy/lib/_function_base_impl.py``), step by step.  A rank outside its bracket
    (a sample far from the data's distribution) falls back to ``numpy.percentile``.
    """
    n = len(lat)
    if n < max(select_min, 1):
        return np.percentile(lat, [50, 90, 99, 100]).round().astype(np.int64).tolist()
    vi = (n - 1) * LATENCY_QUANTILES
    prev = np.floor(vi)
    nxt = prev + 1
    above = vi >= n - 1
    prev[above] = -1
    nxt[above] = -1
    prev = prev.astype(np.intp)
    nxt = nxt.astype(np.intp)
    values = _order_statistics(lat, sorted({int(r) % n for r in (*prev, *nxt)}))
    if values is None:
        return np.percentile(lat, [50, 90, 99, 100]).round().astype(np.int64).tolist()
    a = np.array([values[int(r) % n] for r in prev], np.int64)
    b = np.array([values[int(r) % n] for r in nxt], np.int64)
    t = np.asanyarray(vi - prev, dtype=vi.dtype)
    # numpy's _lerp(a, b, t)
    diff_b_a = b - a
    lerp = np.add(a, diff_b_a * t)
    np.subtract(b, diff_b_a * (1 - t), out=lerp, where=t >= 0.5, casting="unsafe",
                dtype=type(lerp.dtype))  # fmt: skip
    return lerp.round().astype(np.int64).tolist()


def _order_statistics(lat: np.ndarray, ranks: list[int]) -> dict[int, int] | None:
    """The value of each rank (0-based, ascending) of *lat*, without a copy of the
    array; None if a rank is not inside its bracket (see latency_percentiles)."""
    n = len(lat)
    out: dict[int, int] = {}
    want = [r for r in ranks if r != n - 1]
    if not want:
        if n - 1 in ranks:
            out[n - 1] = int(lat.max())
        return out
    sample = np.sort(lat[:: max(1, n // 65536)])
    m = len(sample)
    pad = max(2, m // 200)
    # one bracket per group of ranks close together (a percentile's two neighbours)
    brackets: list[tuple[int, int, list[int]]] = []
    for r in want:
        p = r * m // n
        lo, hi = int(sample[max(0, p - pad)]), int(sample[min(m - 1, p + pad)])
        if brackets and brackets[-1][0] == lo and brackets[-1][1] == hi:
            brackets[-1][2].append(r)
        else:
            brackets.append((lo, hi, [r]))
    below = [0] * len(brackets)
    at_lo = [0] * len(brackets)
    at_hi = [0] * len(brackets)
    inside: list[list[np.ndarray]] = [[] for _ in brackets]
    top = None  # the maximum, chunk by chunk while each is in the cache
    with_max = n - 1 in ranks
    for i in range(0, n, _CHUNK):
        c = lat[i : i + _CHUNK]
        if with_max:
            m = int(c.max())
            top = m if top is None or m > top else top
        for k, (lo, hi, _) in enumerate(brackets):
            below[k] += int(np.count_nonzero(c < lo))
            at_lo[k] += int(np.count_nonzero(c == lo))
            if hi > lo:
                at_hi[k] += int(np.count_nonzero(c == hi))
                inner = c[(c > lo) & (c < hi)]
                if len(inner):
                    inside[k].append(inner)
    if top is not None:
        out[n - 1] = top
    for k, (lo, hi, rs) in enumerate(brackets):
        mid = np.sort(np.concatenate(inside[k])) if inside[k] else np.zeros(0, np.int64)
        for r in rs:
            j = r - below[k]
            if j < 0:
                return None
            if j < at_lo[k]:
                out[r] = lo
                continue
            j -= at_lo[k]
            if j < len(mid):
                out[r] = int(mid[j])
                continue
            j -= len(mid)
            if hi > lo and j < at_hi[k]:
                out[r] = hi
                continue
            return None
    return out


#: version of the time-series schema (docs/OUTPUTS.md); 2: per-enclave rows (column
#: ``enclave``, with ``accesses`` and ``resident_pages``)
TIMESERIES_SCHEMA_VERSION = 2
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
        # schema version 2: per-enclave rows (cgroup null, enclave set)
        pa.field("enclave", pa.string()),
        pa.field("accesses", pa.int64()),
        pa.field("resident_pages", pa.int64()),
    ],
    metadata={"epcsim.timeseries.version": str(TIMESERIES_SCHEMA_VERSION)},
)

#: ``fault_latency.parquet``: every timed fault's latency with its enclave and cgroup,
#: row for row the entries of ``fault_latency.npy`` (docs/OUTPUTS.md)
FAULT_LATENCY_SCHEMA = pa.schema(
    [
        pa.field("latency_ns", pa.int64()),
        # dictionary-encoded: a few names repeated over every fault
        pa.field("enclave", pa.dictionary(pa.int32(), pa.string())),
        pa.field("cgroup", pa.dictionary(pa.int32(), pa.string())),
    ],
    metadata={"epcsim.fault_latency.version": "1"},
)


def cgroup_rows(ts: pa.Table) -> pa.Table:
    """The cgroup rows of a time series (the per-enclave rows of schema version 2, whose
    ``cgroup`` is null, left out)."""
    if "enclave" not in ts.column_names:
        return ts
    return ts.filter(pc.is_valid(ts["cgroup"]))


def enclave_rows(ts: pa.Table) -> pa.Table:
    """The per-enclave rows of a time series (none before schema version 2)."""
    if "enclave" not in ts.column_names:
        return ts.slice(0, 0)
    return ts.filter(pc.is_valid(ts["enclave"]))


@dataclass
class Result:
    """The outcome of one run.

    Attributes:
        summary: JSON-ready dict (``docs/OUTPUTS.md``): version, scenario hash, seed,
            per-cgroup and per-enclave totals, timed-operation outcomes, expectations.
        timeseries: Arrow table with :data:`TIMESERIES_SCHEMA` (cumulative counters
            sampled every ``host.sample_interval`` of virtual time).
        fault_latency_ns: latency of every resolved enclave fault, retries included.
        fault_latency: the same latencies with their enclave and cgroup
            (:data:`FAULT_LATENCY_SCHEMA`); None for a run directory written without
            ``fault_latency.parquet``.
        passed: every expectation held (True when there are none).
    """

    summary: dict
    timeseries: pa.Table
    fault_latency_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    fault_latency: pa.Table | None = None
    #: the engine that ran the enclave threads: "compiled", "reference", or "mixed"
    #: (some of their steps each).  Not part of summary.json and the data files, which
    #: are the same with either engine; recorded in ``run.json``.
    engine: str = "reference"
    #: the events (actor steps) each engine ran: ``{"compiled": n, "reference": m}``
    #: (``run.json``'s ``events``)
    engine_events: dict[str, int] = field(default_factory=dict)
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
        """Write ``summary.json``, ``timeseries.parquet``, ``fault_latency.npy`` and
        ``fault_latency.parquet`` (when the result has it), each atomically (complete or
        not at all).  ``run.json`` is written by
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
        if self.fault_latency is not None:
            with atomic_path(d / "fault_latency.parquet") as tmp:
                pq.write_table(self.fault_latency, tmp, compression="zstd")
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
        tags = None
        path = d / "fault_latency.parquet"
        if path.exists():
            try:
                tags = pq.read_table(path)
            except (OSError, pa.ArrowException) as e:
                raise EpcsimError(f"{path}: cannot read the tagged fault latencies: {e}") from None
        run = _read_json_object(d / "run.json") if (d / "run.json").exists() else {}
        res = cls(summary, ts, lat, tags, run=run)
        if run:
            res.engine = str(run.get("engine", res.engine))
            res.engine_note = str(run.get("engine_reason", ""))
            ev = run.get("events")
            if isinstance(ev, dict):
                res.engine_events = {str(k): v for k, v in ev.items() if isinstance(v, int)}
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


def engine_text(run: dict[str, Any]) -> str:
    """``compiled (auto: ...)``, or for a mixed run ``mixed (auto: ...; 96.1 % of 353,201
    events compiled)``: which engine ran, from ``run.json``'s facts (deterministic: no
    wall time)."""
    text = f"{run.get('engine')} ({run.get('engine_reason')})"
    ev = run.get("events")
    if run.get("engine") == "mixed" and isinstance(ev, dict):
        n = sum(v for v in ev.values() if isinstance(v, int))
        c = ev.get("compiled", 0)
        if n and isinstance(c, int):
            text = text[:-1] + f"; {100 * c / n:.1f} % of {n:,} events compiled)"
    return text
