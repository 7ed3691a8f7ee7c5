"""The report of a run directory: PNG figures and a self-contained ``report.html``.

``write_report(run_dir)`` reads what :meth:`epcsim.sim.Result.write` wrote
(``summary.json``, ``timeseries.parquet``, ``fault_latency.npy``, and ``run.json`` for
the engine that ran), checks all of it (:func:`check_run_dir`) before writing anything,
draws ``usage.png``, ``rates.png``, ``fault_latency.png`` and ``slowdown.png`` and
writes ``report.html`` next to them, each file atomically.  The output depends only on
the run directory (no wall clock, no matplotlib version or user style), so it is
byte-identical when rebuilt.  See ``docs/OUTPUTS.md``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._atomic import atomic_write_text
from ..errors import EpcsimError
from ..result import Result, cgroup_rows
from ..rundir import RunDirError
from .figures import write_figures
from .html import render_html

__all__ = ["RunDirError", "check_run_dir", "write_report"]


class _Loose(BaseModel):
    """Keys the report reads must have the documented types; others are ignored."""

    model_config = ConfigDict(extra="allow", strict=True)


class _Latency(_Loose):
    count: int = 0
    p50: int | None = None
    p99: int | None = None


class _Reclaimed(_Loose):
    total: int | None = None
    ksgxd: int | None = None
    async_: int | None = Field(default=None, alias="async")
    sync: int | None = None
    direct: int | None = None


class _Tenant(_Loose):
    """The per-tenant keys of a cgroup or an enclave (the report's tenants table)."""

    miss_ratio: float | int | None = None
    accesses_per_s: float | int | None = None
    slowdown: float | int | None = None
    fault_latency_ns: _Latency | None = None
    pages_reclaimed: _Reclaimed | None = None


class _Cgroup(_Tenant):
    usage_bytes: int
    peak_bytes: int
    limit_bytes: int | None
    max_events: int | None = None
    faults: int | None = None
    evictions: int | None = None
    reclaim_batches: int | None = None
    enomem: int | None = None


class _Enclave(_Tenant):
    cgroup: str
    outcome: str
    exit_status: int | None = None
    accesses: int | None = None
    faults: int | None = None
    fault_retries: int | None = None
    stuck_threads: int | None = None
    error: str | None = None


class _Op(_Loose):
    time_ns: int
    op: str
    result: str


class _Expectation(_Loose):
    name: str
    passed: bool
    detail: str = ""


class _Summary(_Loose):
    """The part of ``summary.json`` (docs/OUTPUTS.md) the report needs."""

    scenario: str
    scenario_hash: str
    seed: int
    capacity_bytes: int
    sim_time_ns: int
    cgroups: dict[str, _Cgroup]
    enclaves: dict[str, _Enclave]
    expectations: list[_Expectation]
    passed: bool
    epcsim_version: str | None = None
    timeseries_schema_version: int | None = None
    misc_enabled: bool | None = None
    time_limit_ns: int | None = None
    sample_interval_ns: int | None = None
    truncated: bool | None = None
    ops: list[_Op] = []
    encls: dict[str, int] = {}
    costs_ns: dict[str, int] = {}
    fault_latency: dict[str, int] = {}


#: time-series columns the figures read: name -> test of the Arrow type
_TS_COLUMNS = {
    "time_ns": pa.types.is_integer,
    "cgroup": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    "usage_bytes": pa.types.is_integer,
    "limit_bytes": pa.types.is_integer,
    "faults": pa.types.is_integer,
    "evictions": pa.types.is_integer,
}
#: the per-enclave columns of a time series of schema version 2 (result.py): its rows
#: with a null cgroup are the enclave rows, which the figures leave out
_TS_ENCLAVE_COLUMNS = {
    "enclave": _TS_COLUMNS["cgroup"],
    "accesses": pa.types.is_integer,
    "resident_pages": pa.types.is_integer,
}


def _where(loc: tuple) -> str:
    return ".".join(str(x) for x in loc) or "(top level)"


def check_run_dir(run_dir: str | os.PathLike[str]) -> Result:
    """Read and check run directory *run_dir* for the report; return its :class:`Result`.

    Raises:
        RunDirError: the directory is missing, or a file in it is missing, unreadable,
            or lacks what the report needs (``summary.json`` keys and their types, the
            time series' columns, a 1-D integer ``fault_latency.npy``); the message
            starts with the file's path.
    """
    d = Path(run_dir)
    if not d.exists():
        raise RunDirError(f"{d}: no such directory")
    if not d.is_dir():
        raise RunDirError(f"{d}: not a directory")
    for needed in ("summary.json", "timeseries.parquet"):
        if not (d / needed).is_file():
            raise RunDirError(
                f"{d}: not a run directory (no {needed}; write one with `epcsim run`)"
            )
    try:
        result = Result.read(d)
    except RunDirError:
        raise
    except EpcsimError as e:
        raise RunDirError(str(e)) from None
    try:
        _Summary.model_validate(result.summary)
    except ValidationError as e:
        err = e.errors()[0]
        got = err.get("input")
        got_text = "" if err.get("type") == "missing" else f" (got {got!r:.60})"
        raise RunDirError(
            f"{d / 'summary.json'}: {_where(err['loc'])}: {err['msg']}{got_text}"
        ) from None
    ts_path = d / "timeseries.parquet"
    schema = result.timeseries.schema
    version = (schema.metadata or {}).get(b"epcsim.timeseries.version", b"1")
    columns = dict(_TS_COLUMNS)
    if version != b"1" or "enclave" in schema.names:
        columns.update(_TS_ENCLAVE_COLUMNS)
    for name, ok in columns.items():
        if name not in schema.names:
            raise RunDirError(f"{ts_path}: no column {name!r}")
        if not ok(schema.field(name).type):
            raise RunDirError(f"{ts_path}: column {name!r} has type {schema.field(name).type}")
    nulls = cgroup_rows(result.timeseries).column("cgroup").null_count
    if nulls:
        # (with an enclave column, the rows of a null cgroup are its enclave rows)
        raise RunDirError(f"{ts_path}: column 'cgroup' is null in {nulls} rows")
    for key in ("engine", "engine_reason"):
        if key in result.run and not isinstance(result.run[key], str):
            raise RunDirError(f"{d / 'run.json'}: {key}: expected a string")
    return result


def write_report(run_dir: str | os.PathLike[str]) -> Path:
    """Check *run_dir* (:func:`check_run_dir`: nothing is written if it fails), then write
    the figures and ``report.html`` into it, each file atomically; return the HTML path."""
    d = Path(run_dir)
    result = check_run_dir(d)
    # figures.py writes each PNG atomically (and removes the PNG of a figure that has
    # nothing to draw); the HTML last, so it never names a figure not yet written
    figures = write_figures(result, d)
    html = render_html(result, figures)
    out = d / "report.html"
    atomic_write_text(out, html)
    return out
