"""The scenario schema and loader.

A scenario is TOML (see ``docs/SIM_CONTRACT.md`` and ``docs/SCENARIOS.md``) validated
with pydantic.  Every error is a :class:`~epcsim.errors.ScenarioError` naming the file,
the table and the field.  Sizes may be expressions of ``capacity`` (the host's EPC
bytes), e.g. ``"capacity/512"``, as the kernel selftest script computes its limits.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import json
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_serializer,
)

from ..errors import EpcsimError, ScenarioError
from ..kernel.cgroupfs import memparse
from ..kernel.constants import MAX_NUM, PAGE_SIZE
from ..kernel.misc import kstrtou64
from ..units import format_size, parse_size, parse_time
from . import limits

__all__ = [
    "Scenario",
    "load_scenario",
    "list_builtins",
    "eval_size",
    "resolve_write_value",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
#: longest capacity expression (the parser recurses once per operator)
_EXPR_MAX = 200


def eval_size(value: int | str, capacity: int, *, what: str) -> int:
    """A size, or an integer expression of ``capacity`` (+ - * / // and parentheses;
    "/" is integer division as in the selftest script's shell arithmetic)."""
    if isinstance(value, str) and "capacity" in value:
        if len(value) > _EXPR_MAX:
            raise EpcsimError(
                f"{what}: an expression of capacity has at most {_EXPR_MAX} characters, "
                f"got {len(value)}"
            )
        try:
            tree = ast.parse(value.strip(), mode="eval")
        except (SyntaxError, RecursionError, MemoryError):
            raise EpcsimError(f"{what}: not an expression of capacity: {value!r}") from None

        def ev(n: ast.AST) -> int:
            if isinstance(n, ast.Expression):
                return ev(n.body)
            if isinstance(n, ast.Name) and n.id == "capacity":
                return capacity
            if isinstance(n, ast.Constant) and isinstance(n.value, int):
                return n.value
            if isinstance(n, ast.Constant) and isinstance(n.value, str):
                return parse_size(n.value, what=what)
            if isinstance(n, ast.BinOp):
                a, b = ev(n.left), ev(n.right)
                if isinstance(n.op, ast.Add):
                    return a + b
                if isinstance(n.op, ast.Sub):
                    return a - b
                if isinstance(n.op, ast.Mult):
                    return a * b
                if isinstance(n.op, ast.Div | ast.FloorDiv):
                    if b == 0:
                        raise EpcsimError(f"{what}: division by zero in {value!r}")
                    return a // b
            raise EpcsimError(f"{what}: unsupported expression {value!r}")

        out = ev(tree)
        if out < 0:
            raise EpcsimError(f"{what}: {value!r} is negative ({out})")
        return out
    return parse_size(value, what=what)


SizeLike = StrictInt | StrictStr
TimeLike = StrictInt | StrictStr


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExperimentSpec(_Model):
    """Switches that remove one kernel mechanism to measure its effect (all off by
    default; a run with any of them on is not the kernel's behaviour)."""

    #: the access retried after a resolved fault does not set the accessed bit, so a
    #: faulted-in page starts unreferenced (as a textbook CLOCK inserts it)
    fault_unreferenced: bool = False
    #: sgx_reclaimer_age() always says "old": the accessed bit is neither tested nor
    #: cleared, so reclaim evicts the isolated pages in LRU order whatever their use
    no_age: bool = False

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Every switch but the first is dumped only when on: a scenario that does not
        use a switch keeps its ``scenario_hash`` and ``summary.json`` when one is added."""
        out = handler(self)
        return {k: v for k, v in out.items() if k == "fault_unreferenced" or v}


class HostSpec(_Model):
    epc: SizeLike | None = None
    sections: list[SizeLike] | None = None
    cpus: int = Field(4, ge=1, le=4096)
    seed: int = Field(0, ge=0)
    misc: bool = True
    sgx2: bool = True
    duration: TimeLike = "60s"
    sample_interval: TimeLike = "10ms"
    costs: dict[str, TimeLike] = Field(default_factory=dict)
    experiments: ExperimentSpec = Field(default_factory=lambda: ExperimentSpec())
    #: the reclaim design (epcsim.policies): the series' v16 unless named
    policy: str = "v16"
    #: opt-in extensions in no kernel (epcsim.kernel.rfc_knobs: "rfc-knobs")
    extensions: list[str] = Field(default_factory=list)

    @field_validator("extensions")
    @classmethod
    def _extensions(cls, v: list[str]) -> list[str]:
        from ..kernel.rfc_knobs import EXTENSIONS

        for x in v:
            if x not in EXTENSIONS:
                raise ValueError(f"unknown extension {x!r}; known: {', '.join(EXTENSIONS)}")
        if len(set(v)) != len(v):
            raise ValueError(f"an extension is named twice: {v!r}")
        return v

    @field_validator("policy")
    @classmethod
    def _policy(cls, v: str) -> str:
        from ..policies import REGISTRY

        if v not in REGISTRY:
            raise ValueError(f"unknown policy {v!r}; known: {', '.join(REGISTRY)}")
        return v

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``policy`` is dumped only when not the default, ``extensions`` only when not
        empty: a scenario that names neither keeps its ``scenario_hash``."""
        out = handler(self)
        if out.get("policy") == "v16":
            del out["policy"]
        if not out.get("extensions"):
            out.pop("extensions", None)
        return out


class CgroupSpec(_Model):
    path: str
    max: SizeLike | None = None
    memory_max: SizeLike | None = None

    @field_validator("path")
    @classmethod
    def _abs(cls, v: str) -> str:
        parts = [p for p in v.split("/") if p]
        if not v.startswith("/") or not parts or any(not _NAME_RE.match(p) for p in parts):
            raise ValueError(f"must be an absolute cgroup path like /a/b, got {v!r}")
        if any(p in (".", "..") for p in parts):
            raise ValueError(f"'.' and '..' are not cgroup names, got {v!r}")
        return "/" + "/".join(parts)


class EdmmSpec(_Model):
    #: EDMM permission restriction (EMODPR) of the first N pages
    restrict_pages: int | None = Field(None, ge=1)
    #: EDMM removal (modify types to TRIM, then remove) of the first N pages
    remove_pages: int | None = Field(None, ge=1)
    at_access: int = Field(0, ge=0)


class EnclaveSpec(_Model):
    name: str
    cgroup: str = "/"
    #: data bytes; optional with a trace workload (default: the trace's footprint)
    size: SizeLike | None = None
    build: Literal["eadd", "eaug"] = "eadd"
    threads: int = Field(1, ge=1, le=1024)
    count: int = Field(1, ge=1, le=4096)
    start: str | int = "0s"
    workload: dict[str, Any] | None = None
    program: Literal["kselftest"] | None = None
    edmm: EdmmSpec | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v) or "#" in v:
            raise ValueError(f"names use letters, digits, '_', '.', '-'; got {v!r}")
        return v


class VepcSpec(_Model):
    name: str
    cgroup: str = "/"
    pages: int = Field(ge=1)
    start: str | int = "0s"


class WriteSpec(_Model):
    path: str
    value: str


class MigrateSpec(_Model):
    enclave: str
    cgroup: str


class WhenSpec(_Model):
    enclave: str
    added: SizeLike


class AtSpec(_Model):
    time: TimeLike = 0
    after: str | None = None
    when: WhenSpec | None = None
    write: WriteSpec | None = None
    mkdir: str | None = None
    rmdir: str | None = None
    kill: str | None = None
    start: str | None = None
    migrate: MigrateSpec | None = None


class ExpectSpec(_Model):
    name: str | None = None
    enclaves: list[str] | None = None
    outcome: Literal["success", "failure"] | None = None
    quantifier: Literal["all", "any", "none"] = "all"
    ignore_killed: bool = False
    file: str | None = None
    equals: str | None = None


class SweepSpec(_Model):
    """``[sweep]``: the file form of ``epcsim sweep``'s ``--grid`` and ``--seeds``
    (``docs/SWEEP.md``).  Read by ``epcsim sweep`` only; ``epcsim run`` ignores it, and
    it is not part of the scenario (not dumped, not in ``scenario_hash``).  The grid's
    keys and values are checked by ``epcsim sweep`` (``epcsim.sweep.grid``), which knows
    what each key takes."""

    #: KEY -> VALUES as ``--grid KEY=VALUES`` takes them ("4MiB..16MiB:4", "v16,v14"),
    #: or a list of values (["v16", "v14"])
    grid: dict[str, StrictStr | list[StrictStr | StrictInt | float | bool]] = Field(
        default_factory=dict
    )
    #: as ``--seeds`` takes them ("1..5", "1,3") or a list of seeds
    seeds: StrictStr | list[StrictInt] | None = None

    @field_validator("grid", mode="before")
    @classmethod
    def _grid(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            raise ValueError(f'expected a table of KEY = "VALUES" (or a list), got {v!r}')
        for k, x in v.items():
            items = x if isinstance(x, list) else [x]
            empty = isinstance(x, list) and not x
            if empty or any(not isinstance(i, str | int | float) for i in items):
                raise ValueError(f'{k}: expected "VALUES" or a list of values, got {x!r}')
        return v

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, v: Any) -> Any:
        if isinstance(v, str) or (
            isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in v)
        ):
            return v
        raise ValueError(f'expected "FROM..TO", "N,N,..." or a list of seeds, got {v!r}')


class Scenario(_Model):
    """A validated scenario.  Sizes are resolved to bytes and times to ns by the
    simulator through :meth:`resolved`."""

    name: str = "scenario"
    description: str = ""
    host: HostSpec
    cgroup: list[CgroupSpec] = Field(default_factory=list)
    enclave: list[EnclaveSpec] = Field(default_factory=list)
    vepc: list[VepcSpec] = Field(default_factory=list)
    at: list[AtSpec] = Field(default_factory=list)
    expect: list[ExpectSpec] = Field(default_factory=list)
    #: ``[sweep]`` (epcsim sweep's grid and seeds): not part of the scenario, never
    #: dumped, so not in the hash
    sweep: SweepSpec | None = Field(None, exclude=True)
    #: where it came from (for error messages); not part of the hash
    source: str = Field("<string>", exclude=True)

    def digest(self) -> str:
        """sha256 of the canonical JSON of the scenario (the ``scenario_hash``)."""
        data = self.model_dump(mode="json", exclude={"source"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    @property
    def capacity(self) -> int:
        h = self.host
        if h.sections is not None:
            return sum(parse_size(s) for s in h.sections)
        assert h.epc is not None
        return parse_size(h.epc)


# --- loading ----------------------------------------------------------------------------


def list_builtins() -> list[tuple[str, str]]:
    """(name, one-line description) of every built-in scenario."""
    out = []
    for f in sorted(resources.files("epcsim.scenario.builtins").iterdir(), key=lambda p: p.name):
        if f.name.endswith(".toml"):
            first = f.read_text().splitlines()[0].lstrip("# ").strip()
            out.append((f.name[: -len(".toml")], first))
    return out


def _looks_like_toml(s: str) -> bool:
    """A TOML document rather than a path: several lines, or one line with ``=`` that
    is not an existing file."""
    if s.startswith("builtin:"):
        return False
    return "\n" in s or ("=" in s and not Path(s).exists())


def _read_source(source: str | Path) -> tuple[str, str, Path | None]:
    """(text, label, base directory) of a path, ``builtin:NAME`` or a TOML string."""
    if isinstance(source, Path) or (isinstance(source, str) and not _looks_like_toml(source)):
        s = str(source)
        if s.startswith("builtin:"):
            name = s[len("builtin:") :]
            names = [n for n, _ in list_builtins()]
            if name not in names:
                raise ScenarioError(
                    f"no built-in scenario {name!r} (available: {', '.join(names)})", file=s
                )
            data = resources.files("epcsim.scenario.builtins").joinpath(f"{name}.toml").read_bytes()
            return _decode(data, s), s, None
        p = Path(s)
        if not p.exists():
            raise ScenarioError("no such file", file=s)
        if p.is_dir():
            raise ScenarioError("is a directory, not a scenario file", file=s)
        try:
            data = p.read_bytes()
        except OSError as e:
            raise ScenarioError(f"cannot read: {e.strerror}", file=s) from None
        return _decode(data, s), s, p.parent
    return str(source), "<string>", None


def _decode(data: bytes, label: str) -> str:
    """The text of a scenario file: TOML is UTF-8 (a BOM is not allowed either)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ScenarioError(
            f"not UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start} (line {line}); "
            "TOML files are UTF-8",
            file=label,
        ) from None


def _parse_value(v: str) -> Any:
    try:
        return tomllib.loads(f"v = {v}")["v"]
    except tomllib.TOMLDecodeError:
        return v


def _apply_override(data: dict, item: str, label: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ScenarioError(f"--set expects KEY=VALUE, got {item!r}", file=label)
    parts = key.strip().split(".")
    cur: Any = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(cur, list):
            try:
                # list elements are numbered from 0: no sign (-1 is not the last one)
                if not re.fullmatch(r"[0-9]+", part):
                    raise ValueError(part)
                cur = cur[int(part)]
            except (ValueError, IndexError):
                raise ScenarioError(
                    f"--set {key}: no element {part!r}", file=label, field=".".join(parts[: i + 1])
                ) from None
            continue
        cur = cur.setdefault(part, {})
        if not isinstance(cur, dict | list):
            raise ScenarioError(f"--set {key}: {part} is not a table", file=label)
    last = parts[-1]
    if isinstance(cur, list):
        raise ScenarioError(f"--set {key}: cannot set a whole list element", file=label)
    cur[last] = _parse_value(value.strip())
    # epc and sections are alternatives
    if parts == ["host", "epc"]:
        cur.pop("sections", None)
    if parts == ["host", "sections"]:
        cur.pop("epc", None)


def _resolve_trace_paths(data: dict, base: Path | None) -> None:
    """Relative ``workload.trace`` paths resolve against the scenario file's folder."""
    if base is None:
        return
    for e in data.get("enclave", []) if isinstance(data.get("enclave"), list) else []:
        wl = e.get("workload") if isinstance(e, dict) else None
        if not isinstance(wl, dict) or "trace" not in wl:
            continue
        tr = wl["trace"]
        if isinstance(tr, str):
            wl["trace"] = str(base / tr)
        elif isinstance(tr, list):
            wl["trace"] = [str(base / x) if isinstance(x, str) else x for x in tr]


def trace_workload(wl: dict) -> tuple[list[str], str | None, dict[str, Any]]:
    """(trace paths, format, reader options) of a ``workload = { trace = ... }``."""
    tr = wl["trace"]
    paths = [tr] if isinstance(tr, str) else list(tr)
    fmt = wl.get("format")
    opts = {k: v for k, v in wl.items() if k not in ("trace", "format", "accesses", "duration")}
    return paths, fmt, opts


def _loc(err: dict, data: dict) -> tuple[str, str]:
    """(table, field) from a pydantic error location, e.g. ("enclave[1]", "size").

    The location is walked through the data: list indices attach to their table,
    tags pydantic adds below a scalar (union members such as "int") are dropped.
    """
    loc = list(err.get("loc", ()))
    parts: list[str] = []
    cur: Any = data
    for k, x in enumerate(loc):
        if isinstance(x, int) and isinstance(cur, list) and parts:
            parts[-1] += f"[{x}]"
            cur = cur[x] if x < len(cur) else None
        elif isinstance(x, str) and isinstance(cur, dict):
            if x not in cur and err.get("type") != "missing":
                break  # a tag pydantic adds ("int" of a union) below a table value
            parts.append(x)
            cur = cur.get(x)
            if x not in (cur if isinstance(cur, dict) else {}) and k == len(loc) - 1:
                break
        else:
            break
    if not parts:
        return "", ""
    return ".".join(parts[:-1]), parts[-1]


def load_scenario(
    source: str | Path | dict,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    check_memory: bool = True,
) -> Scenario:
    """Load and validate a scenario: a path, ``builtin:NAME``, a TOML string or a dict.

    *overrides* are ``KEY=VALUE`` with dotted keys (``host.epc=1GiB``,
    ``enclave.0.count=2``); values are TOML values or bare strings.

    The model's limits are always checked.  With *check_memory* (the default) the run's
    memory estimate (:mod:`epcsim.scenario.limits`) is checked too: refused above the
    available memory, a :class:`~epcsim.scenario.limits.MemoryEstimateWarning` above half
    of it.  ``check_memory=False`` is for callers whose ``duration`` is only a safety cap
    on a run they know ends sooner (the estimate bounds the samples by ``duration``).

    Raises:
        ScenarioError: naming the file, the table and the field.
    """
    if isinstance(source, dict):
        data, label, base = copy.deepcopy(source), "<dict>", None
    else:
        text, label, base = _read_source(source)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ScenarioError(f"not valid TOML: {e}", file=label) from None
    for item in overrides:
        _apply_override(data, item, label)
    _resolve_trace_paths(data, base)
    try:
        sc = Scenario.model_validate({**data, "source": label})
    except ValidationError as e:
        err = e.errors()[0]
        table, field = _loc(err, data)
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        loc = err.get("loc", ())
        if err.get("type") == "extra_forbidden":
            msg = "unknown key"
        elif loc and loc[-1] in ("int", "str") and err.get("type") in ("int_type", "string_type"):
            msg = "expected an integer or a string with a unit (e.g. '64MiB', '5us')"
        elif err.get("type") == "missing":
            msg = "required key is missing"
        inp = err.get("input")
        if err.get("type") not in ("missing", "value_error") and not isinstance(inp, dict):
            msg += f" (got {inp!r})"  # our own validators name the value already
        raise ScenarioError(msg, file=label, table=table, field=field) from None
    _check(sc, label, check_memory)
    return sc


# --- cross-field validation --------------------------------------------------------------


def _misc_max_ok(value: str) -> bool:
    buf = value.strip(" \t\n\v\f\r")
    token, sep, rest = buf.partition(" ")
    if not sep or token != "sgx_epc":
        return False
    return rest == "max" or kstrtou64(rest, 0)[0] == 0


def _check(sc: Scenario, label: str, check_memory: bool = True) -> None:
    def fail(msg: str, table: str, field: str = "") -> None:
        raise ScenarioError(msg, file=label, table=table, field=field)

    h = sc.host
    # paths are compared as written: '.' and '..' would name another cgroup at run time
    paths = [(f"enclave[{i}]", "cgroup", e.cgroup) for i, e in enumerate(sc.enclave)]
    paths += [(f"vepc[{i}]", "cgroup", v.cgroup) for i, v in enumerate(sc.vepc)]
    for i, a in enumerate(sc.at):
        paths += [(f"at[{i}]", k, getattr(a, k)) for k in ("mkdir", "rmdir")]
        if a.write is not None:
            paths.append((f"at[{i}]", "write.path", a.write.path))
        if a.migrate is not None:
            paths.append((f"at[{i}]", "migrate", a.migrate.cgroup))
    paths += [(f"expect[{i}]", "file", x.file) for i, x in enumerate(sc.expect)]
    for table, field, path in paths:
        if path is not None and any(p in (".", "..") for p in path.split("/")):
            fail(f"'.' and '..' are not allowed in paths, got {path!r}", table, field)
        if path is not None and "\0" in path:
            fail(f"a NUL byte is not allowed in paths, got {path!r}", table, field)
    if (h.epc is None) == (h.sections is None):
        fail("give exactly one of epc or sections", "host", "epc")
    if "rfc-knobs" in h.extensions and not h.misc:
        fail("rfc-knobs needs the misc controller (host.misc = true)", "host", "extensions")
    try:
        if h.epc is not None:
            cap = parse_size(h.epc, what="epc")
            if cap <= 0 or cap % PAGE_SIZE:
                fail(f"must be a positive multiple of 4096, got {h.epc!r}", "host", "epc")
        else:
            assert h.sections is not None
            if not 1 <= len(h.sections) <= 8:
                fail(f"1 to 8 sections, got {len(h.sections)}", "host", "sections")
            for k, s in enumerate(h.sections):
                b = parse_size(s, what=f"sections[{k}]")
                if b <= 0 or b % PAGE_SIZE:
                    fail(
                        f"must be a positive multiple of 4096, got {s!r}", "host", f"sections[{k}]"
                    )
        for f in ("duration", "sample_interval"):
            if parse_time(getattr(h, f), what=f) <= 0:
                fail(f"must be > 0, got {getattr(h, f)!r}", "host", f)
        pages = (
            parse_size(h.epc) // PAGE_SIZE
            if h.epc is not None
            else sum(parse_size(x) for x in h.sections or []) // PAGE_SIZE
        )
        if pages > limits.MAX_EPC_PAGES:
            fail(
                f"{h.epc if h.epc is not None else h.sections!r} is {pages} EPC pages; the "
                f"model holds at most {limits.MAX_EPC_PAGES} (EPC page numbers are int32: "
                f"{format_size((limits.MAX_EPC_PAGES + 1) * PAGE_SIZE)} - 4KiB)",
                "host",
                "epc" if h.epc is not None else "sections",
            )
    except ScenarioError:
        raise
    except EpcsimError as e:
        raise ScenarioError(
            str(e).split(": ", 1)[-1], file=label, table="host", field=str(e).split(":", 1)[0]
        ) from None
    from ..costs import CostModel

    known = set(CostModel.model_fields)
    parsed: dict[str, int] = {}
    for k, v in h.costs.items():
        if k not in known:
            fail(f"unknown cost {k!r} (known: {', '.join(sorted(known))})", "host.costs", k)
        try:
            parsed[k] = parse_time(v, what=k)
        except EpcsimError as e:
            fail(str(e).split(": ", 1)[-1], "host.costs", k)
    try:
        CostModel(**parsed)  # the model's own rules (e.g. access > 0)
    except ValidationError as e:
        err = e.errors()[0]
        fail(err["msg"].removeprefix("Value error, "), "host.costs", str(err["loc"][0]))
    capacity = sc.capacity

    def size(v: SizeLike, table: str, field: str) -> int:
        try:
            return eval_size(v, capacity, what=field)
        except EpcsimError as e:
            fail(str(e).split(": ", 1)[-1], table, field)
            raise AssertionError from None

    ncg = len(sc.cgroup) + sum(1 for a in sc.at if a.mkdir is not None)
    if ncg > limits.MAX_CGROUPS:
        fail(
            f"{ncg} cgroups ([[cgroup]] and [[at]] mkdir); the model holds at most "
            f"{limits.MAX_CGROUPS} (cgroup ids are int16)",
            "cgroup",
        )
    nthreads = sum(e.count * e.threads for e in sc.enclave)
    if nthreads > limits.MAX_THREADS:
        i = max(range(len(sc.enclave)), key=lambda k: sc.enclave[k].count * sc.enclave[k].threads)
        fail(
            f"{nthreads} enclave threads in all (count x threads summed over [[enclave]]); "
            f"at most {limits.MAX_THREADS}",
            f"enclave[{i}]",
            "threads",
        )
    enclave_bytes: list[int] = []
    trace_accesses: dict[int, list[int]] = {}  # enclave index -> accesses per trace path
    declared: dict[str, CgroupSpec] = {}
    for i, c in enumerate(sc.cgroup):
        t = f"cgroup[{i}]"
        if c.path in declared:
            fail(f"cgroup {c.path} declared twice", t, "path")
        parent = c.path.rsplit("/", 1)[0] or "/"
        if parent != "/" and parent not in declared:
            fail(f"parent {parent} is not declared before {c.path}", t, "path")
        if c.max is not None and c.max != "max":
            v = size(c.max, t, "max")
            if v > MAX_NUM:
                fail(f"above 2^64-1: {c.max!r}", t, "max")
        if c.memory_max is not None and c.memory_max != "max":
            size(c.memory_max, t, "memory_max")
        declared[c.path] = c
    made = set(declared) | {"/"}
    for a in sc.at:
        if a.mkdir:
            made.add("/" + "/".join(p for p in a.mkdir.split("/") if p))
    has_children = {p.rsplit("/", 1)[0] or "/" for p in declared}
    names: set[str] = set()
    groups: dict[str, int] = {}
    for i, e in enumerate(sc.enclave):
        t = f"enclave[{i}]"
        if e.name in names:
            fail(f"duplicate name {e.name!r}", t, "name")
        names.add(e.name)
        groups[e.name] = e.count
        cg = "/" + "/".join(p for p in e.cgroup.split("/") if p)
        if cg not in made:
            fail(f"cgroup {e.cgroup} does not exist (declare it in [[cgroup]])", t, "cgroup")
        if cg != "/" and cg in has_children:
            fail(f"cgroup {cg} has child cgroups; tasks must live in leaves", t, "cgroup")
        is_trace = e.workload is not None and "trace" in e.workload
        if e.size is None and not is_trace:
            fail("required key is missing", t, "size")
        b = size(e.size, t, "size") if e.size is not None else PAGE_SIZE
        if b <= 0 or b % PAGE_SIZE:
            fail(f"must be a positive multiple of 4096, got {e.size!r}", t, "size")
        elrange = limits.elrange_pages(b, e.program)
        if elrange > limits.MAX_ENCL_PAGES:
            of = "the heap and test_sgx's pages" if e.program else "the size"
            fail(
                f"{e.size!r} needs an ELRANGE of {elrange} pages (the next power of two of "
                f"{of}); an enclave holds at most {limits.MAX_ENCL_PAGES} "
                f"({format_size(limits.MAX_ENCL_PAGES * PAGE_SIZE)}: enclave page indices "
                "are int32)",
                t,
                "size",
            )
        enclave_bytes.append(b if e.size is not None else 0)
        if (e.workload is None) == (e.program is None):
            fail("give exactly one of workload or program", t, "workload")
        if is_trace:
            trace_accesses[len(enclave_bytes) - 1] = _check_trace(e, t, fail)
        elif e.workload is not None:
            from ..workload.patterns import check_pattern

            wl = e.workload
            if ("accesses" in wl) == ("duration" in wl):
                fail("give exactly one of accesses or duration", f"{t}.workload", "accesses")
            try:
                if "accesses" in wl:
                    if not isinstance(wl["accesses"], int) or wl["accesses"] < 0:
                        raise EpcsimError(f"accesses: must be a count >= 0, got {wl['accesses']!r}")
                else:
                    parse_time(wl["duration"], what="duration")
                check_pattern(wl, b // PAGE_SIZE)
            except EpcsimError as err:
                msg = str(err)
                field, _, rest = msg.partition(": ")
                fail(rest or msg, f"{t}.workload", field.removeprefix("workload."))
        if e.program == "kselftest" and e.build != "eadd":
            fail("the kselftest program builds with EADD", t, "build")
        if e.build == "eaug" and not h.sgx2:
            fail("EAUG needs host.sgx2 = true", t, "build")
        if e.edmm is not None and not h.sgx2:
            fail("EDMM needs host.sgx2 = true", t, "edmm")
        if e.edmm is not None:
            if e.edmm.restrict_pages is None and e.edmm.remove_pages is None:
                fail("give restrict_pages and/or remove_pages", f"{t}.edmm", "remove_pages")
            for f in ("restrict_pages", "remove_pages"):
                n = getattr(e.edmm, f)
                if n is not None and n * PAGE_SIZE > b:
                    fail(f"{n} pages is more than the enclave's {b // PAGE_SIZE}", f"{t}.edmm", f)
        _check_start(e.start, t, fail)
    for i, v in enumerate(sc.vepc):
        t = f"vepc[{i}]"
        if v.name in names:
            fail(f"duplicate name {v.name!r}", t, "name")
        names.add(v.name)
        groups[v.name] = 1
        cg = "/" + "/".join(p for p in v.cgroup.split("/") if p)
        if cg not in made:
            fail(f"cgroup {v.cgroup} does not exist", t, "cgroup")
        if v.pages > limits.MAX_VEPC_PAGES:
            fail(
                f"{v.pages} pages; a vEPC holds at most {limits.MAX_VEPC_PAGES} (int32 page "
                "numbers)",
                t,
                "pages",
            )
        _check_start(v.start, t, fail)
    instances = set(groups)
    for g, n in groups.items():
        if n > 1:
            instances |= {f"{g}#{k}" for k in range(n)}
    for i, e in enumerate(sc.enclave):
        s = str(e.start)
        if s.startswith("after:") and s[6:] not in groups:
            fail(f"unknown group {s[6:]!r}", f"enclave[{i}]", "start")
    for i, a in enumerate(sc.at):
        t = f"at[{i}]"
        acts = [
            k
            for k in ("write", "mkdir", "rmdir", "kill", "start", "migrate")
            if getattr(a, k) is not None
        ]
        if len(acts) != 1:
            fail(f"exactly one action per [[at]], got {acts or 'none'}", t, "write")
        try:
            parse_time(a.time, what="time")
        except EpcsimError as e:
            fail(str(e).split(": ", 1)[-1], t, "time")
        if a.after is not None and a.after not in groups:
            fail(f"unknown group {a.after!r}", t, "after")
        if a.when is not None:
            if a.after is not None:
                fail("give at most one of after and when", t, "when")
            if (
                a.when.enclave not in instances
                or a.when.enclave in groups
                and groups[a.when.enclave] > 1
            ):
                fail(f"no enclave instance named {a.when.enclave!r}", t, "when.enclave")
            size(a.when.added, t, "when.added")
        for k in ("kill", "start"):
            v = getattr(a, k)
            if v is not None and v not in instances:
                fail(f"no enclave or vepc named {v!r}", t, k)
        if a.migrate is not None:
            if a.migrate.enclave not in instances:
                fail(f"no enclave named {a.migrate.enclave!r}", t, "migrate")
            mcg = "/" + "/".join(p for p in a.migrate.cgroup.split("/") if p)
            if mcg not in made:
                fail(f"cgroup {a.migrate.cgroup} does not exist", t, "migrate")
        if a.write is not None:
            _check_write(a.write, t, made, fail, capacity, h.extensions)
    for i, x in enumerate(sc.expect):
        t = f"expect[{i}]"
        if (x.enclaves is None) == (x.file is None):
            fail("give exactly one of enclaves or file", t, "enclaves")
        if x.enclaves is not None:
            if x.outcome is None:
                fail("required with enclaves", t, "outcome")
            for n in x.enclaves:
                if n not in instances:
                    fail(f"no enclave or group named {n!r}", t, "enclaves")
        if x.file is not None and x.equals is None:
            fail("required with file", t, "equals")
    if check_memory:
        limits.check_memory(sc, enclave_bytes, fail, label, trace_accesses)


def _check_trace(e: EnclaveSpec, t: str, fail) -> list[int]:
    """A trace workload: paths exist (one per thread if a list), the format and its
    options are valid, every trace reads through and has accesses (as the run will read
    it), accesses/duration well formed (both optional: one pass).  Returns each path's
    accesses (for the memory estimate)."""
    from ..workload.traces import TraceError, check_trace, open_trace

    wl = e.workload
    assert wl is not None
    tr = wl["trace"]
    if not (isinstance(tr, str) or (isinstance(tr, list) and all(isinstance(x, str) for x in tr))):
        fail(f"a path or a list of paths, got {tr!r}", f"{t}.workload", "trace")
    paths, fmt, opts = trace_workload(wl)
    if len(paths) not in (1, e.threads):
        fail(
            f"one trace, or one per thread ({e.threads}); got {len(paths)}",
            f"{t}.workload",
            "trace",
        )
    if "accesses" in wl and "duration" in wl:
        fail("give at most one of accesses or duration", f"{t}.workload", "accesses")
    if "accesses" in wl and (not isinstance(wl["accesses"], int) or wl["accesses"] < 0):
        fail(f"must be a count >= 0, got {wl['accesses']!r}", f"{t}.workload", "accesses")
    if "duration" in wl:
        try:
            parse_time(wl["duration"], what="duration")
        except EpcsimError as err:
            fail(str(err).split(": ", 1)[-1], f"{t}.workload", "duration")
    counts = []
    for p in paths:
        try:  # read it through, as the run will: malformed or empty fails here
            counts.append(check_trace(open_trace(p, format=fmt, **opts)))
        except TraceError as err:
            fail(str(err), f"{t}.workload", "trace")
    return counts


def _check_start(start: str | int, t: str, fail) -> None:
    s = str(start)
    if s == "manual" or s.startswith("after:"):
        return
    try:
        parse_time(start, what="start")
    except EpcsimError:
        fail(f"a time, 'manual' or 'after:GROUP', got {start!r}", t, "start")


def resolve_write_value(path: str, value: str, capacity: int) -> str:
    """The text a timed ``write`` puts in the file: expressions of ``capacity`` are
    evaluated (``misc.max``: ``"sgx_epc capacity/2"``; ``memory.max``: ``"capacity/2"``).
    """
    if "capacity" not in value:
        return value
    if path.rstrip("/").endswith("misc.max"):
        name, _, expr = value.strip().partition(" ")
        return f"{name} {eval_size(expr, capacity, what='value')}"
    return str(eval_size(value, capacity, what="value"))


#: the rfc-knobs extension's writable files (epcsim.kernel.rfc_knobs)
_RFC_WRITABLE = ("sgx_epc.low", "sgx_epc.high", "sgx_epc.reclaim")


def _check_write(
    w: WriteSpec, t: str, made: set[str], fail, capacity: int, extensions: list[str]
) -> None:
    parts = [p for p in w.path.split("/") if p]
    if not parts:
        fail("not an interface file path", t, "write.path")
    cg = "/" + "/".join(parts[:-1])
    fname = parts[-1]
    if cg not in made:
        fail(f"cgroup {cg} does not exist", t, "write.path")
    if cg == "/" and fname in ("misc.max", "memory.max", *_RFC_WRITABLE):
        fail(f"the root cgroup has no {fname} (only non-root cgroups have one)", t, "write.path")
    try:
        value = resolve_write_value(w.path, w.value, capacity)
    except EpcsimError as e:
        fail(str(e).split(": ", 1)[-1], t, "write.value")
    if len(value.encode()) > PAGE_SIZE:
        fail(
            f"{len(value.encode())} bytes; one write to a cgroup file takes at most a page "
            f"({PAGE_SIZE} bytes, else E2BIG)",
            t,
            "write.value",
        )
    value = value.split("\0", 1)[0]  # the kernel reads the buffer as a C string
    if fname == "misc.max":
        if not _misc_max_ok(value):
            fail(
                f"the kernel refuses {w.value!r} for misc.max (use 'sgx_epc N' or 'sgx_epc max')",
                t,
                "write.value",
            )
    elif fname == "memory.max":
        v = value.strip()
        if v != "max" and memparse(v)[1]:
            fail(f"the kernel refuses {w.value!r} for memory.max", t, "write.value")
    elif fname in _RFC_WRITABLE and "rfc-knobs" in extensions:
        v = value.strip()
        if (v != "max" or fname == "sgx_epc.reclaim") and memparse(v)[1]:
            fail(
                f"the kernel refuses {w.value!r} for {fname} (memparse units: 8M, not 8MiB)",
                t,
                "write.value",
            )
    elif fname == "cgroup.subtree_control":
        for tok in value.strip().split(" "):
            if tok and (tok[0] not in "+-" or tok[1:] not in ("misc", "memory")):
                fail(f"the kernel refuses {tok!r} in cgroup.subtree_control", t, "write.value")
    else:
        fail(
            f"{fname} is not a writable interface file (misc.max, memory.max, "
            "cgroup.subtree_control; use migrate for cgroup.procs)",
            t,
            "write.path",
        )
