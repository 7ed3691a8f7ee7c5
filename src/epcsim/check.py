"""``--engine check``: compare what the compiled and the reference engines produced.

The two engines must give byte-identical outputs (``docs/ENGINES.md``).  The functions
here find the *first* difference between two results, file by file, and name it:

- ``summary.json``: field by field, as a JSON path (``enclaves["a#0"].faults``);
- ``timeseries.parquet``: the schema, the row count, then row by row and column by
  column (``row 41 (time_ns 41000000, cgroup "/a"): evictions``);
- ``fault_latency.npy``: the dtype, the length, then index by index;
- ``fault_latency.parquet`` (the latencies' enclave and cgroup): as the time series.

Each returns ``None`` when equal, else an :class:`~epcsim.errors.EngineMismatchError`
(not raised: the caller decides).  :func:`compare_results` runs them in file order;
:func:`compare_files` compares the bytes of the files two run directories hold.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .errors import EngineMismatchError
from .result import Result

__all__ = [
    "RESULT_FILES",
    "compare_files",
    "compare_latency",
    "compare_results",
    "compare_summary",
    "compare_timeseries",
]

#: the files :meth:`Result.write` writes, in the order they are compared
RESULT_FILES = ("summary.json", "timeseries.parquet", "fault_latency.npy", "fault_latency.parquet")

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _show(value: Any) -> str:
    """A value as it reads in the message: JSON for JSON values, else ``repr``."""
    if isinstance(value, np.generic):
        value = value.item()
    try:
        return json.dumps(value, sort_keys=True, allow_nan=True, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _key(path: str, key: object, *, named: bool) -> str:
    """``path.key`` for a field, ``path["key"]`` for a name (*named*: a key of a map of
    records, such as ``enclaves`` and ``cgroups``) or a key that is not an identifier."""
    if not named and isinstance(key, str) and _IDENT.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def _same_scalar(a: Any, b: Any) -> bool:
    if type(a) is not type(b):  # 1 and 1.0, True and 1 serialise differently
        return False
    if isinstance(a, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def _first_json_difference(a: Any, b: Any, path: str) -> tuple[str, Any, Any] | None:
    if isinstance(a, dict) and isinstance(b, dict):
        named = bool(a) and all(isinstance(v, dict) for v in a.values()) and bool(path)
        for key in sorted(set(a) | set(b), key=str):
            where = _key(path, key, named=named)
            if key not in b:
                return where, a[key], "(absent)"
            if key not in a:
                return where, "(absent)", b[key]
            found = _first_json_difference(a[key], b[key], where)
            if found is not None:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            found = _first_json_difference(x, y, f"{path}[{i}]")
            if found is not None:
                return found
        if len(a) != len(b):
            return f"{path} length", len(a), len(b)
        return None
    if _same_scalar(a, b):
        return None
    return path or "(top level)", a, b


def compare_summary(compiled: dict, reference: dict) -> EngineMismatchError | None:
    """The first field where two ``summary.json`` dicts differ (keys in sorted order, as
    written), or None.  Values of different types (``1`` and ``1.0``) differ."""
    found = _first_json_difference(compiled, reference, "")
    if found is None:
        return None
    field, a, b = found
    shown = [x if isinstance(x, str) and x == "(absent)" else _show(x) for x in (a, b)]
    return EngineMismatchError("summary.json", field, shown[0], shown[1])


def _row_label(table: pa.Table, row: int) -> str:
    parts = [
        f"{name} {_show(table.column(name)[row].as_py())}"
        for name in ("time_ns", "cgroup", "enclave")
        if name in table.column_names and table.column(name)[row].is_valid
    ]
    return f"row {row} ({', '.join(parts)})" if parts else f"row {row}"


def compare_timeseries(
    compiled: pa.Table, reference: pa.Table, *, name: str = "timeseries.parquet"
) -> EngineMismatchError | None:
    """The first cell where two time-series tables differ (row by row, each row's
    columns in schema order), or a schema or row-count difference, or None.  *name*:
    the file the tables are (``fault_latency.parquet`` is compared the same way)."""
    if not compiled.schema.equals(reference.schema, check_metadata=True):
        a, b = compiled.schema, reference.schema
        if a.names != b.names:
            return EngineMismatchError(name, "columns", _show(a.names), _show(b.names))
        for fa, fb in zip(a, b, strict=True):
            if fa.type != fb.type:
                return EngineMismatchError(name, f"{fa.name} type", str(fa.type), str(fb.type))
        return EngineMismatchError(
            name, "schema metadata", _show(_meta(a.metadata)), _show(_meta(b.metadata))
        )
    rows = min(compiled.num_rows, reference.num_rows)
    first: tuple[int, str, Any, Any] | None = None
    columns = [
        (col, compiled.column(col).slice(0, rows), reference.column(col).slice(0, rows))
        for col in compiled.column_names
    ]
    differing = [
        (col, ca, cb)
        for col, ca, cb in columns
        if not ca.equals(cb)  # cheap test first; the row search only where it fails
    ]
    for col, ca, cb in differing:
        la, lb = ca.to_pylist(), cb.to_pylist()
        row = next(i for i, (x, y) in enumerate(zip(la, lb, strict=True)) if x != y)
        if first is None or row < first[0]:
            first = (row, col, la[row], lb[row])
    if first is not None:
        row, col, a, b = first
        note = ""
        if compiled.num_rows != reference.num_rows:
            note = f"rows: compiled {compiled.num_rows}, reference {reference.num_rows}"
        field = f"{_row_label(compiled, row)}: {col}"
        return EngineMismatchError(name, field, _show(a), _show(b), note=note)
    if compiled.num_rows != reference.num_rows:
        return EngineMismatchError(name, "rows", str(compiled.num_rows), str(reference.num_rows))
    return None


def _meta(metadata: dict[bytes, bytes] | None) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in sorted((metadata or {}).items())}


def compare_latency(compiled: np.ndarray, reference: np.ndarray) -> EngineMismatchError | None:
    """The first index where two fault-latency arrays differ, or a dtype or length
    difference, or None."""
    name = "fault_latency.npy"
    a, b = np.asarray(compiled), np.asarray(reference)
    if a.dtype != b.dtype:
        return EngineMismatchError(name, "dtype", str(a.dtype), str(b.dtype))
    if a.shape != b.shape and (a.ndim != 1 or b.ndim != 1):
        return EngineMismatchError(name, "shape", str(a.shape), str(b.shape))
    n = min(len(a), len(b))
    where = np.flatnonzero(a[:n] != b[:n])
    length = f"length: compiled {len(a)}, reference {len(b)}"
    if len(where):
        i = int(where[0])
        note = length if len(a) != len(b) else ""
        return EngineMismatchError(name, f"index {i}", _show(a[i]), _show(b[i]), note=note)
    if len(a) != len(b):
        return EngineMismatchError(name, "length", str(len(a)), str(len(b)))
    return None


def compare_results(compiled: Result, reference: Result) -> EngineMismatchError | None:
    """The first difference between two in-memory results, file by file in
    :data:`RESULT_FILES` order, or None when they are equal."""
    return (
        compare_summary(compiled.summary, reference.summary)
        or compare_timeseries(compiled.timeseries, reference.timeseries)
        or compare_latency(compiled.fault_latency_ns, reference.fault_latency_ns)
        or _compare_tagged(compiled, reference)
    )


def _compare_tagged(compiled: Result, reference: Result) -> EngineMismatchError | None:
    name = "fault_latency.parquet"
    a, b = compiled.fault_latency, reference.fault_latency
    if a is None or b is None:
        if a is b:
            return None
        return EngineMismatchError(
            name,
            "(file)",
            "(absent)" if a is None else "present",
            "(absent)" if b is None else "present",
        )
    return compare_timeseries(a, b, name=name)


def compare_files(
    compiled_dir: Path, reference_dir: Path, names: Iterable[str] = RESULT_FILES
) -> EngineMismatchError | None:
    """The first of *names* whose bytes differ between two directories (the offset of the
    first differing byte, or the sizes), or None.  Run after :func:`compare_results`, it
    catches what the in-memory comparison cannot see (serialisation)."""
    for name in names:
        a = (compiled_dir / name).read_bytes()
        b = (reference_dir / name).read_bytes()
        if a == b:
            continue
        n = min(len(a), len(b))
        where = np.flatnonzero(np.frombuffer(a[:n], np.uint8) != np.frombuffer(b[:n], np.uint8))
        if not len(where):
            return EngineMismatchError(name, "size in bytes", str(len(a)), str(len(b)))
        i = int(where[0])
        return EngineMismatchError(name, f"byte {i}", f"0x{a[i]:02x}", f"0x{b[i]:02x}")
    return None
