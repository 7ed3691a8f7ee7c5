"""``--grid KEY=VALUES``: one axis of a sweep (``docs/SWEEP.md``).

``KEY`` is any key ``--set`` takes that names one value (``host.epc``,
``cgroup.1.max``, ``host.policy``, ``enclave.0.workload.alpha``, ``host.costs.EWB``).
``VALUES`` is a list ``a,b,c``, ``A..B:N`` (N points linearly spaced, both ends
included) or ``A..B:xN`` (N points geometrically spaced, both ends included).  What a
key takes decides its *kind*, which decides how values are read and the type of the
key's column in the dataset:

=========  ==========================================================  ===============
kind       keys                                                        column
=========  ==========================================================  ===============
``size``   ``host.epc``, ``cgroup.N.max``, ``cgroup.N.memory_max``,    int64 (bytes;
           ``enclave.N.size``, ``at.N.when.added``                     null = ``max``)
``time``   ``host.duration``, ``host.sample_interval``, ``at.N.time``,  int64 (ns)
           ``host.costs.NAME``
``int``    integer fields (``host.cpus``, ``enclave.N.count``, ...)    int64
``float``  float fields (``enclave.N.workload.alpha``, ...)            float64
``bool``   ``host.misc``, ``host.sgx2``, ...                           bool
``str``    everything else (``host.policy``, ``enclave.N.build``, ...)  string
=========  ==========================================================  ===============

Sizes are rounded to the nearest whole page (4096 bytes) and written as integers of
bytes; times as integers of ns.  A workload key (``enclave.N.workload.KEY``) takes the
kind of the value it replaces (an integer value with a fractional grid value is read as
a float), or, for a key the workload does not have, what every value reads as.
"""

from __future__ import annotations

import json
import math
import re
import types
import typing
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from pydantic import BaseModel

from ..compare import parse_seeds
from ..errors import EpcsimError
from ..kernel.constants import PAGE_SIZE
from ..scenario import Scenario
from ..scenario.schema import AtSpec, CgroupSpec, EnclaveSpec, HostSpec, WhenSpec
from ..units import parse_size, parse_time

__all__ = ["KINDS", "Axis", "axes_for", "key_kind", "parse_grid", "parse_seeds"]

#: the kinds of value a grid key takes (the module's docstring)
KINDS = ("size", "time", "int", "float", "bool", "str")

_SIZE_FIELDS = {
    (HostSpec, "epc"),
    (CgroupSpec, "max"),
    (CgroupSpec, "memory_max"),
    (EnclaveSpec, "size"),
    (WhenSpec, "added"),
}
#: size fields that also take "max" (no limit)
_MAX_FIELDS = {(CgroupSpec, "max"), (CgroupSpec, "memory_max")}
_TIME_FIELDS = {(HostSpec, "duration"), (HostSpec, "sample_interval"), (AtSpec, "time")}

_RANGE = re.compile(r"(?P<a>[^,]+?)\.\.(?P<b>[^,]+?):(?P<x>x?)(?P<n>\d+)")
_INT = re.compile(r"[+-]?\d+")
_HELP = "expected KEY=VALUES (a,b,c; A..B:N; A..B:xN)"


@dataclass(frozen=True)
class Axis:
    """One grid axis: the ``--set`` key and its values, as ``--set`` value strings
    (sizes rounded to whole pages and written as integers of bytes, times as integers
    of ns).  *kind* (one of :data:`KINDS`) types the key's column."""

    key: str
    values: tuple[str, ...]
    kind: str = "str"

    def override(self, value: str) -> str:
        """``KEY=VALUE`` for ``--set`` (strings quoted as TOML strings)."""
        return f"{self.key}={toml_value(self.kind, value)}"

    def typed(self, value: str) -> Any:
        """*value* as the key's column holds it."""
        return typed_value(self.kind, value)


def toml_value(kind: str, value: str) -> str:
    """A grid value as a TOML value for ``--set``."""
    if kind == "str" or (kind == "size" and value == "max"):
        return json.dumps(value, ensure_ascii=False)
    return value


def typed_value(kind: str, value: str) -> Any:
    """A grid value as its column holds it (``max`` of a size: None)."""
    if kind in ("size", "time", "int"):
        return None if value == "max" else int(value)
    if kind == "float":
        return float(value)
    if kind == "bool":
        return value == "true"
    return value


def _annotation_kind(ann: Any) -> tuple[str, Any]:
    """("bool" | "int" | "float" | "str" | "model" | "models" | "dict" | "list", the model
    class for model / models) of a field's annotation."""
    args: tuple[Any, ...] = (ann,)
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        args = typing.get_args(ann)
    kinds = []
    for a in args:
        if a is type(None):
            continue
        if typing.get_origin(a) is typing.Annotated:
            a = typing.get_args(a)[0]
        origin = typing.get_origin(a)
        if isinstance(a, type) and issubclass(a, BaseModel):
            return "model", a
        if origin is list:
            (elem,) = typing.get_args(a) or (Any,)
            if isinstance(elem, type) and issubclass(elem, BaseModel):
                return "models", elem
            return "list", None
        if origin is dict:
            return "dict", None
        if a is bool:
            kinds.append("bool")
        elif a is int:
            kinds.append("int")
        elif a is float:
            kinds.append("float")
        else:  # str, Literal[...], or anything else a --set string can give
            kinds.append("str")
    return (kinds[0] if len(set(kinds)) == 1 else "str"), None


def key_kind(key: str, scenario: Scenario) -> tuple[str | None, bool, bool]:
    """(kind, takes "max", loose) of grid key *key* in *scenario*.  *loose*: a key of
    a free-form table (``enclave.N.workload.KEY``) whose kind is the value it replaces
    (None if the workload has no such key: the values decide; an integer swept over
    fractions is a float).  EpcsimError naming the key if it is not one value ``--set``
    can set."""
    where = f"--grid {key}"
    parts = key.split(".")
    if any(not p for p in parts):
        raise EpcsimError(f"{where}: unknown key (not a dotted scenario key such as host.epc)")
    if parts == ["host", "seed"]:
        raise EpcsimError(f"{where}: give the seeds with --seeds, not --grid")
    model: type[BaseModel] = Scenario
    obj: Any = scenario
    i = 0
    while True:
        part = parts[i]
        fields = {n: f for n, f in model.model_fields.items() if not f.exclude}
        if part not in fields:
            raise EpcsimError(
                f"{where}: unknown key ({part!r} is not a field of {_table(parts, i)})"
            )
        value = getattr(obj, part, None) if obj is not None else None
        kind, cls = _annotation_kind(fields[part].annotation)
        last = i == len(parts) - 1
        if kind == "models":
            if last or not re.fullmatch(r"[0-9]+", parts[i + 1]):
                raise EpcsimError(
                    f"{where}: not one value ({part} is a list of tables: name an element "
                    f"and a field, e.g. {part}.0.{next(iter(cls.model_fields))})"
                )
            k = int(parts[i + 1])
            n = len(value or ())
            if k >= n:
                raise EpcsimError(
                    f"{where}: unknown key (the scenario has {n} {part} table"
                    f"{'' if n == 1 else 's'}, numbered from 0)"
                )
            model, obj, i = cls, value[k], i + 2
            if i == len(parts):
                raise EpcsimError(f"{where}: not one value ({'.'.join(parts)} is a table)")
            continue
        if kind == "model":
            if last:
                raise EpcsimError(f"{where}: not one value ({key} is a table)")
            model, obj, i = cls, value, i + 1
            continue
        if kind == "dict":
            if i + 2 != len(parts):
                raise EpcsimError(
                    f"{where}: not one value (name one key of {'.'.join(parts[: i + 1])}, "
                    f"e.g. {'.'.join(parts[: i + 1])}.NAME)"
                )
            if (model, part) == (HostSpec, "costs"):
                return "time", False, False
            cur = (value or {}).get(parts[i + 1])
            if isinstance(cur, bool):
                return "bool", False, True
            if isinstance(cur, int):
                return "int", False, True
            if isinstance(cur, float):
                return "float", False, True
            if isinstance(cur, str):
                return "str", False, True
            if cur is not None:
                raise EpcsimError(f"{where}: not one value (it holds {type(cur).__name__})")
            return None, False, True
        if kind == "list":
            raise EpcsimError(f"{where}: not one value ({key} is a list)")
        if not last:
            raise EpcsimError(f"{where}: unknown key ({'.'.join(parts[: i + 1])} is one value)")
        if (model, part) in _SIZE_FIELDS:
            return "size", (model, part) in _MAX_FIELDS, False
        if (model, part) in _TIME_FIELDS:
            return "time", False, False
        return kind, False, False


def _table(parts: list[str], i: int) -> str:
    return "the scenario" if i == 0 else ".".join(parts[:i])


def parse_grid(spec: str, scenario: Scenario) -> Axis:
    """``KEY=a,b,c``, ``KEY=A..B:N`` or ``KEY=A..B:xN`` -> an :class:`Axis` (the key
    checked against *scenario*).  EpcsimError with one line naming the key and value."""
    if not isinstance(spec, str):
        raise EpcsimError(f"--grid: {_HELP}, got {spec!r}")
    key, sep, text = spec.partition("=")
    key = key.strip()
    if not sep or not key:
        raise EpcsimError(f"--grid {spec!r}: {_HELP}")
    return _axis(key, text.strip(), scenario, f"--grid {key}={text.strip()}")


def _axis(key: str, text: str, scenario: Scenario, where: str) -> Axis:
    kind, max_ok, loose = key_kind(key, scenario)
    if not text:
        raise EpcsimError(f"{where}: no values (give a,b,c, A..B:N or A..B:xN)")
    m = _RANGE.fullmatch(text)
    if m is not None:
        if loose and kind in (None, "int"):  # an integer swept over fractions: a float
            ints = all(_INT.fullmatch(m[g].strip()) for g in ("a", "b"))
            kind = "int" if ints else "float"
        assert kind is not None
        values = _range(key, kind, m, where)
    else:
        items = [s.strip() for s in text.split(",")]
        if any(not s for s in items):
            raise EpcsimError(f"{where}: an empty value (values are separated by single commas)")
        if loose and kind in (None, "int"):
            inferred = _infer_kind(items)
            kind = inferred if kind is None or inferred == "float" else kind
        assert kind is not None
        values = [_one(kind, s, max_ok, where) for s in items]
    seen: set[str] = set()
    for v in values:
        if v in seen:
            again = " after rounding to whole pages" if kind == "size" else ""
            raise EpcsimError(f"{where}: the value {v} appears twice{again}")
        seen.add(v)
    return Axis(key, tuple(values), kind)


def _infer_kind(items: list[str]) -> str:
    if all(s in ("true", "false") for s in items):
        return "bool"
    if all(_INT.fullmatch(s) for s in items):
        return "int"
    if all(_is_float(s) for s in items):
        return "float"
    return "str"


def _is_float(s: str) -> bool:
    try:
        return math.isfinite(float(s))
    except ValueError:
        return False


def _one(kind: str, s: str, max_ok: bool, where: str) -> str:
    """One listed value, normalised as the kind writes it."""
    if kind == "size":
        if s == "max" and max_ok:
            return "max"
        return str(_round_page(Fraction(_size(s, where))))
    if kind == "time":
        return str(_time(s, where))
    if kind == "int":
        if not _INT.fullmatch(s):
            raise EpcsimError(f"{where}: {s!r} is not an integer")
        return str(int(s))
    if kind == "float":
        if not _is_float(s):
            raise EpcsimError(f"{where}: {s!r} is not a number")
        return repr(float(s))
    if kind == "bool":
        if s not in ("true", "false"):
            raise EpcsimError(f"{where}: {s!r} is not true or false")
        return s
    return s


def _size(s: str, where: str) -> int:
    try:
        return parse_size(s)
    except EpcsimError:
        raise EpcsimError(f"{where}: {s!r} is not a size (examples: 96MiB, 4KiB, 4096)") from None


def _time(s: str, where: str) -> int:
    try:
        return parse_time(s)
    except EpcsimError:
        raise EpcsimError(f"{where}: {s!r} is not a time (examples: 5us, 2s, 100ms)") from None


def _round_page(v: Fraction | float) -> int:
    """Bytes rounded to the nearest whole page (halves up)."""
    return math.floor(Fraction(v) / PAGE_SIZE + Fraction(1, 2)) * PAGE_SIZE


def _range(key: str, kind: str, m: re.Match[str], where: str) -> list[str]:
    """The N values of ``A..B:N`` (linear) or ``A..B:xN`` (geometric)."""
    a_s, b_s, n = m["a"].strip(), m["b"].strip(), int(m["n"])
    geometric = m["x"] == "x"
    if kind not in ("size", "time", "int", "float"):
        raise EpcsimError(f"{where}: a range needs a numeric key ({key} takes {kind} values)")
    if n < 2:
        raise EpcsimError(f"{where}: a range needs N >= 2 points, got {n}")
    ends: list[Fraction] = []
    for s in (a_s, b_s):
        if kind == "size":
            ends.append(Fraction(_size(s, where)))
        elif kind == "time":
            ends.append(Fraction(_time(s, where)))
        elif kind == "int":
            if not _INT.fullmatch(s):
                raise EpcsimError(f"{where}: {s!r} is not an integer")
            ends.append(Fraction(int(s)))
        else:
            if not _is_float(s):
                raise EpcsimError(f"{where}: {s!r} is not a number")
            ends.append(Fraction(float(s)))
    a, b = ends
    if geometric and a <= 0:
        raise EpcsimError(f"{where}: geometric spacing (:x{n}) needs A > 0, got {a_s}")
    if b <= a:
        raise EpcsimError(f"{where}: A..B needs A < B, got {a_s}..{b_s}")
    raw: list[Fraction | float] = []
    for i in range(n):
        if geometric:
            v: Fraction | float = (
                a
                if i == 0
                else b
                if i == n - 1
                else float(a) * (float(b) / float(a)) ** (i / (n - 1))
            )
        else:
            v = a + (b - a) * Fraction(i, n - 1)
        raw.append(v)
    if kind == "size":
        return [str(_round_page(v)) for v in raw]
    if kind in ("time", "int"):
        return [str(math.floor(Fraction(v) + Fraction(1, 2))) for v in raw]
    return [repr(float(v)) for v in raw]


def axes_for(scenario: Scenario, grid: Any = ()) -> list[Axis]:
    """The axes of a sweep: the scenario's ``[sweep] grid`` (in its order), each key
    *grid* names replacing the file's axis in place, the others after in their order.
    *grid*: ``KEY=VALUES`` strings.  EpcsimError naming a key given twice."""
    if isinstance(grid, str) or not isinstance(grid, list | tuple):
        raise EpcsimError(f"grid: expected a list of KEY=VALUES strings, got {grid!r}")
    cli: list[Axis] = []
    for spec in grid:
        ax = parse_grid(spec, scenario)
        if any(c.key == ax.key for c in cli):
            raise EpcsimError(f"--grid {ax.key}: the key is given twice")
        cli.append(ax)
    out: list[Axis] = []
    file_grid = scenario.sweep.grid if scenario.sweep is not None else {}
    for key, spec in file_grid.items():
        mine = next((c for c in cli if c.key == key), None)
        if mine is not None:
            out.append(mine)
            continue
        text = spec if isinstance(spec, str) else ",".join(_file_item(x) for x in spec)
        out.append(_axis(key, text.strip(), scenario, f"[sweep] grid {key} = {spec!r}"))
    out += [c for c in cli if c.key not in file_grid]
    return out


def _file_item(x: str | int | float | bool) -> str:
    if isinstance(x, bool):
        return "true" if x else "false"
    return str(x) if not isinstance(x, float) else repr(x)
