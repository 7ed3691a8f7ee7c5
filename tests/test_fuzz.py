"""Fuzz tests: bad input never crashes epcsim, never changes an input file.

Random bytes and random mutations of valid scenarios, traces of every format, ``--set``
strings, arguments of :func:`epcsim.run` and run directories go to ``validate``, ``run``
(tiny scenarios, a 2 ms virtual-time limit), ``trace info``, ``trace convert`` and
``report``, in-process through typer's ``CliRunner``, plus a fixed sample in
subprocesses (``python -m epcsim``).  Every command must end with exit status 0, 1 or 2
(2 with one line ``epcsim: error: ...`` on stderr), never a traceback; no input file
changes and nothing appears beside the inputs but the declared outputs.  The cgroupfs
API (``host.fs``) gets random operations: ``OSError`` only, and the kernel model's
invariants after each.

Profiles: the default tests run a few hundred examples (derandomized, about a minute on
the 2-core development machine); the ``slow`` variants run more than 10,000 examples
in all with fresh random inputs (``pytest -m slow tests/test_fuzz.py``).
"""

from __future__ import annotations

import _weakrefset
import contextlib
import copy
import datetime
import gc
import gzip
import hashlib
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import epcsim
from epcsim.cli import app
from epcsim.errors import EpcsimError
from epcsim.scenario import load_scenario
from epcsim.scenario.schema import eval_size
from epcsim.sim import Result
from epcsim.workload.traces import write_trace

runner = CliRunner()

#: wall seconds a fuzzed ``run`` may take before it is interrupted (exit 130)
RUN_WALL_LIMIT_S = 10.0
#: a mutated scenario is run only when it is this small (else only validated)
RUN_MAX_BYTES = 16 << 20
RUN_MAX_THREADS = 64
#: the files ``epcsim run`` writes in a run directory
RUN_FILES = (
    "run.json",
    "summary.json",
    "timeseries.parquet",
    "fault_latency.npy",
    "report.html",
    "INCOMPLETE",
    "usage.png",
    "rates.png",
    "slowdown.png",
    "fault_latency.png",
)
#: what ``epcsim report`` may (re)write in a run directory
REPORT_OUTPUTS = ("report.html", "usage.png", "rates.png", "slowdown.png", "fault_latency.png")


# --- the oracle ---------------------------------------------------------------------------


def _snapshot(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file (and 'dir' for every directory) under root."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = "link"
                continue
            with open(p, "rb") as fh:
                out[rel] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _under(rel: str, outputs: tuple[str, ...]) -> bool:
    return any(rel == o or rel.startswith(o.rstrip("/") + "/") for o in outputs)


def _run_lock(rel: str) -> bool:
    """Whether *rel* is the lock file a run leaves beside its directory (``.DIR.lock``,
    docs/OUTPUTS.md: it stays)."""
    name = os.path.basename(rel)
    return name.startswith(".") and name.endswith(".lock") and len(name) > len("..lock")


def _check_files(before: dict[str, str], after: dict[str, str], outputs: tuple[str, ...]) -> None:
    changed = sorted(p for p, h in before.items() if not _under(p, outputs) and after.get(p) != h)
    assert not changed, f"input files changed or removed: {changed}"
    stray = sorted(
        p for p in after if p not in before and not _under(p, outputs) and not _run_lock(p)
    )
    assert not stray, f"files appeared beside the inputs: {stray}"


#: modules whose functions run as weak reference callbacks and finalizers
_CALLBACK_FILES = frozenset({weakref.__file__, _weakrefset.__file__})


def _swallows_exceptions(frame: Any) -> bool:
    """Whether *frame* runs inside a garbage-collector callback, a weak reference
    callback or a finalizer, where Python reports an exception as unraisable instead of
    propagating it (a frame of the weakref modules outside a callback only delays the
    alarm)."""
    callbacks = {getattr(cb, "__code__", None) for cb in gc.callbacks}
    while frame is not None:
        code = frame.f_code
        if code in callbacks or code.co_name == "__del__" or code.co_filename in _CALLBACK_FILES:
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def _wall_limit(seconds: float) -> Iterator[list[bool]]:
    """Interrupt the body (KeyboardInterrupt, as Ctrl-C would) after *seconds*; an alarm
    that lands in a gc callback (hypothesis has one) or a finalizer, where the interrupt
    would be lost as an unraisable exception, is tried again 10 ms later."""
    fired = [False]

    def handler(signum, frame):
        if _swallows_exceptions(frame):
            signal.setitimer(signal.ITIMER_REAL, 0.01)
            return
        fired[0] = True
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class _Referent:
    """An object to hold a weak reference to."""


@pytest.mark.parametrize("where", ["gc callback", "weakref callback"])
def test_wall_limit_alarm_in_a_callback_is_not_lost(where: str) -> None:
    """The fuzz tests' wall limit: an alarm landing in a gc callback (where hypothesis
    keeps one) or a weak reference callback interrupts the body once the callback has
    returned, instead of being reported as unraisable while the body runs on."""

    def slow_callback(*args: Any) -> None:
        if where != "gc callback" or args[0] == "start":
            time.sleep(0.1)  # the alarm comes in here

    if where == "gc callback":
        gc.callbacks.append(slow_callback)
    try:
        with pytest.raises(KeyboardInterrupt), _wall_limit(0.02) as fired:
            if where == "gc callback":
                gc.collect()
            else:
                obj = _Referent()
                # run by a weak reference callback, from weakref's module
                weakref.finalize(obj, slow_callback)
                del obj
            time.sleep(5)  # interrupted by the alarm tried again
        assert fired[0]
    finally:
        if where == "gc callback":
            gc.callbacks.remove(slow_callback)


def _describe(args: list[str], r: Any) -> str:
    return (
        f"epcsim {shlex.join(args)}\nexit status {r.exit_code}\n"
        f"--- stdout\n{r.stdout}--- stderr\n{r.stderr}"
    )


def assert_clean_exit(args: list[str], r: Any, *, interrupted: bool = False) -> None:
    """Exit 0, 1 or 2 (130 only when we interrupted it), no traceback, and exit 2 with
    exactly one ``epcsim: error:`` line (or click's usage message for a malformed
    command line)."""
    what = _describe(args, r)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        tb = "".join(traceback.format_exception(r.exception))
        raise AssertionError(f"uncaught exception from {what}\n{tb}")
    assert "Traceback" not in r.stdout + r.stderr, what
    allowed = {0, 1, 2} | ({130} if interrupted else set())
    assert r.exit_code in allowed, what
    if r.exit_code == 2:
        lines = r.stderr.splitlines()
        errors = [line for line in lines if line.startswith("epcsim: error: ")]
        if errors:
            assert len(errors) == 1 and lines[-1] == errors[0], what
            notes = ("note: ", "warning: ", "epcsim: warning: ")
            assert all(x.startswith(notes) for x in lines[:-1]), what
        else:  # click refused the command line itself (an option's type or range)
            assert "Usage: " in r.stderr, what


def invoke(
    args: list[str],
    *,
    work: Path,
    outputs: tuple[str, ...] = (),
    wall_limit: float | None = None,
) -> Any:
    """Run ``epcsim ARGS`` in *work* and check it with :func:`assert_clean_exit` and
    :func:`_check_files` (*outputs*: paths relative to *work* that may change)."""
    before = _snapshot(work)
    fired = [False]
    with contextlib.chdir(work):
        if wall_limit is None:
            r = runner.invoke(app, args)
        else:
            with _wall_limit(wall_limit) as fired:
                r = runner.invoke(app, args)
    assert_clean_exit(args, r, interrupted=fired[0])
    _check_files(before, _snapshot(work), outputs)
    return r


def _settings(n: int, *, slow: bool) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=not slow,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def _fuzz(strategy: st.SearchStrategy, check: Callable[[Any], None], n: int, slow: bool) -> None:
    @_settings(n, slow=slow)
    @given(strategy)
    def inner(x: Any) -> None:
        check(x)

    inner()


def _profiles(default: int, long: int):
    """Parametrize a fuzz test with its default and its long (``slow``) profile."""
    return pytest.mark.parametrize(
        ("n", "slow"),
        [
            pytest.param(default, False, id="default"),
            pytest.param(long, True, id="long", marks=pytest.mark.slow),
        ],
    )


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="epcsim-fuzz-") as d:
        work = Path(d)
        (work / "in").mkdir()
        (work / "out").mkdir()
        yield work


# --- scenarios ----------------------------------------------------------------------------

#: a valid tiny scenario using every table (runs in well under a second)
BASE = {
    "name": "fuzz",
    "description": "a tiny scenario for the fuzz tests",
    "host": {
        "epc": "1MiB",
        "cpus": 2,
        "seed": 1,
        "duration": "2ms",
        "sample_interval": "500us",
        "costs": {"ewb": "6us"},
    },
    "cgroup": [
        {"path": "/a", "max": "256KiB", "memory_max": "64MiB"},
        {"path": "/b", "max": "capacity/2"},
    ],
    "enclave": [
        {
            "name": "e",
            "cgroup": "/a",
            "size": "512KiB",
            "threads": 2,
            "workload": {"pattern": "zipf", "alpha": 0.9, "accesses": 400},
        },
        {
            "name": "g",
            "cgroup": "/b",
            "size": "128KiB",
            "build": "eaug",
            "count": 2,
            "start": "manual",
            "workload": {"pattern": "uniform", "duration": "1ms"},
            "edmm": {"remove_pages": 2, "at_access": 10},
        },
    ],
    "vepc": [{"name": "v", "cgroup": "/b", "pages": 4}],
    "at": [
        {"time": "100us", "start": "g"},
        {"time": "200us", "write": {"path": "/a/misc.max", "value": "sgx_epc 131072"}},
        {"time": "300us", "mkdir": "/c"},
        {"time": "400us", "rmdir": "/c"},
        {"after": "e", "kill": "g"},
    ],
    "expect": [
        {"name": "e ends", "enclaves": ["e"], "outcome": "success", "quantifier": "any"},
        {"file": "/b/misc.max", "equals": "sgx_epc 524288"},
    ],
}

#: a scenario whose enclave runs a trace (``in/trace.txt``)
TRACE_BASE = {
    "name": "fuzz-trace",
    "host": {"epc": "256KiB", "duration": "2ms"},
    "enclave": [{"name": "t", "workload": {"trace": "trace.txt", "format": "text"}}],
}

WEIRD_STRINGS = [
    "",
    " ",
    "0",
    "-1",
    "1",
    "max",
    "MAX",
    "capacity",
    "capacity/0",
    "capacity/",
    "capacity*capacity*capacity",
    "-capacity",
    "2**64",
    "1e400",
    "nan",
    "inf",
    "0x",
    "0x1000",
    "0x-1",
    "4096",
    "4KiB",
    "4095B",
    "1.5KiB",
    "0.1B",
    "-4KiB",
    "1TiB",
    "16EiB",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999pages",
    "2ms",
    "0s",
    "0ns",
    "-1s",
    "1e9s",
    "1.5ms",
    "9999999999min",
    "sgx_epc 1",
    "sgx_epc -1",
    "sgx_epc max",
    "sgx_epc capacity/2",
    "tdx 1",
    "sgx_epc",
    "/",
    "//",
    "/a/",
    "/a//b",
    "/a/../b",
    "/a/misc.max",
    "/a/misc.current",
    "/a/cgroup.procs",
    "/nonexistent/misc.max",
    "a",
    "e",
    "g",
    "g#0",
    "g#1",
    "g#9",
    "v",
    "after:e",
    "after:",
    "after:nope",
    "manual",
    "\x00",
    "\t",
    "é",
    "\u202e",
    "\U0001f600",
    "a" * 300,
    "success",
    "failure",
    "any",
    "uniform",
    "zipf",
    "loop",
    "hotcold",
    "phases",
    "sequential",
    "kselftest",
    "eaug",
    "eadd",
    "+misc +memory",
    "-misc",
    "trace.txt",
    "missing.txt",
    "../in/trace.txt",
    "/dev/null",
]

#: values a valid scenario could hold, so that many mutated scenarios still run
PLAUSIBLE = [
    "4KiB",
    "64KiB",
    "256KiB",
    "1MiB",
    "2MiB",
    "capacity/4",
    "capacity",
    "0s",
    "1us",
    "100us",
    "1ms",
    "max",
    "sgx_epc 4096",
    "sgx_epc 0",
    "sgx_epc max",
    "/a",
    "/b",
    "/c",
    "/",
    "e",
    "g",
    "g#0",
    "v",
    "after:e",
    "manual",
    "uniform",
    "sequential",
    "hotcold",
    "eadd",
    "eaug",
    "success",
    "failure",
    "none",
    0,
    1,
    2,
    3,
    8,
    100,
    4096,
    0.5,
    True,
    False,
    {"pattern": "loop", "length": 4, "accesses": 50},
    {"pattern": "sequential", "duration": "1ms"},
    {"pattern": "hotcold", "hot_fraction": 0.5, "hot_probability": 0.9, "accesses": 100},
    {"pattern": "phases", "phases": [{"pattern": "uniform", "accesses": 10}]},
    {"remove_pages": 1, "restrict_pages": 1},
]

_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=24)
_scalars = st.one_of(
    st.sampled_from(WEIRD_STRINGS),
    _text,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2, 4095, 4096, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64]),
    st.floats(),
    st.booleans(),
    st.just(datetime.datetime(1979, 5, 27, 7, 32, tzinfo=datetime.UTC)),
    st.just(datetime.date(2026, 1, 1)),
)
weird_values = st.recursive(
    st.one_of(st.sampled_from(PLAUSIBLE), _scalars),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(["pattern", "path", "x", "", "é"]) | _text, inner, max_size=3
        ),
    ),
    max_leaves=6,
)


def _paths(data: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every path (tuple of keys / indices) into nested dicts and lists."""
    if isinstance(data, dict):
        for k, v in data.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


def _parent(data: Any, path: tuple) -> Any:
    for p in path[:-1]:
        data = data[p]
    return data


@st.composite
def mutated_data(
    draw: st.DrawFn,
    base: dict = BASE,
    values: st.SearchStrategy = weird_values,
    edits: int = 4,
) -> dict:
    """*base* with 1 to *edits* random edits: a value replaced by one of *values*, a key
    deleted, an unknown key added, a list element duplicated."""
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, edits))):
        paths = list(_paths(data))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(data, path)
        op = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add", "dup"]))
        if op == "replace":  # a copy: sampled values are shared (PLAUSIBLE's tables)
            parent[path[-1]] = copy.deepcopy(draw(values))
        elif op == "delete":
            del parent[path[-1]]
        elif op == "add":
            target = parent[path[-1]]
            if isinstance(target, dict):
                key = draw(st.sampled_from(["bogus", "max", "name", "time"]) | _text)
                target[key] = copy.deepcopy(draw(weird_values))
            elif isinstance(target, list):
                target.append(copy.deepcopy(draw(weird_values)))
            else:
                parent[path[-1]] = [target, copy.deepcopy(draw(weird_values))]
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[path[-1]]))
    return data


def _toml_key(k: Any) -> str:
    return _toml_str(str(k))


def _toml_str(s: str) -> str:
    out = json.dumps(s, ensure_ascii=False)
    return out.replace("\x7f", "\\u007f")


def to_toml(value: Any) -> str:
    """A TOML value (inline tables and arrays) for any JSON-like Python value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, list):
        return "[" + ", ".join(to_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {to_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def toml_document(data: dict) -> str:
    """*data* as a TOML document (top-level ``key = value`` lines)."""
    return "".join(f"{_toml_key(k)} = {to_toml(v)}\n" for k, v in data.items())


@st.composite
def mutated_bytes(draw: st.DrawFn, raw: bytes) -> bytes:
    """*raw* truncated, with bytes flipped, inserted or deleted, or garbage appended."""
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "append", "dup"]))
        n = len(data)
        at = draw(st.integers(0, n))
        if op == "truncate":
            del data[at:]
        elif op == "flip" and n:
            i = min(at, n - 1)
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "append":
            data += draw(st.binary(min_size=1, max_size=64))
        elif op == "dup" and n:
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
    return bytes(data)


@st.composite
def scenario_files(
    draw: st.DrawFn,
    base: dict = BASE,
    kinds: tuple[str, ...] = ("data", "data", "data+bytes", "bytes", "noise"),
) -> bytes:
    """The bytes of a scenario file: a mutated valid one, a byte-mutated one, or noise."""
    kind = draw(st.sampled_from(kinds))
    if kind == "noise":
        return draw(st.binary(max_size=200))
    if kind == "bytes":
        return draw(mutated_bytes(toml_document(base).encode()))
    if kind == "plausible":  # one or two values a valid scenario could hold: most still run
        return toml_document(draw(mutated_data(base, st.sampled_from(PLAUSIBLE), 2))).encode()
    text = toml_document(draw(mutated_data(base))).encode()
    if kind == "data+bytes":
        text = draw(mutated_bytes(text))
    return text


def _sample_trace(work: Path) -> None:
    (work / "in" / "trace.txt").write_text("".join(f"{i % 37}\n" for i in range(200)))


def _cheap(scenario: Path | str, overrides: list[str]) -> bool:
    """Whether the scenario loads and is small enough to run in a fuzz example (a huge EPC
    or enclave would allocate gigabytes before the virtual-time limit stops it)."""
    try:
        sc = load_scenario(str(scenario), overrides=overrides)
        cap = sc.capacity
        if cap > RUN_MAX_BYTES:
            return False
        threads = 0
        for e in sc.enclave:
            if e.size is not None and eval_size(e.size, cap, what="size") > RUN_MAX_BYTES:
                return False
            threads += e.threads * e.count
        return threads <= RUN_MAX_THREADS and sum(v.pages for v in sc.vepc) <= 4096
    except Exception:  # the command will report it (or crash, which the oracle catches)
        return True


# --- validate and run: mutated scenarios ------------------------------------------------


def _check_validate(raw: bytes) -> None:
    with _workdir() as work:
        _sample_trace(work)
        (work / "in" / "s.toml").write_bytes(raw)
        invoke(["validate", "in/s.toml"], work=work)


@_profiles(default=100, long=3000)
def test_fuzz_validate_scenarios(n: int, slow: bool) -> None:
    strategy = st.one_of(scenario_files(BASE), scenario_files(TRACE_BASE))
    _fuzz(strategy, _check_validate, n, slow)


OUT_KINDS = ["fresh", "fresh", "fresh", "run dir", "foreign dir", "file", "empty"]


def _check_run(args: tuple[bytes, str, bool, bool]) -> None:
    raw, out_kind, with_report, force = args
    with _workdir() as work:
        _sample_trace(work)
        (work / "in" / "s.toml").write_bytes(raw)
        short = ["host.duration=2ms"]
        if not _cheap(work / "in" / "s.toml", short):
            invoke(["validate", "in/s.toml"], work=work)
            return
        out, outputs = _out_arg(work, out_kind)
        args_ = ["run", "in/s.toml", "--out", out, "--engine", "reference", "--set", short[0]]
        if force:
            args_.append("--force")
        with _report_figures(with_report):
            invoke(args_, work=work, outputs=outputs, wall_limit=RUN_WALL_LIMIT_S)


def _out_arg(work: Path, kind: str) -> tuple[str, tuple[str, ...]]:
    """An ``--out`` argument of the given kind and the paths the run may write."""
    if kind == "fresh":
        return "out/run", ("out/run",)
    if kind == "run dir":
        shutil.copytree(_valid_run_dir(), work / "out" / "old")
        return "out/old", ("out/old",)
    if kind == "foreign dir":
        (work / "out" / "mine").mkdir()
        (work / "out" / "mine" / "notes.txt").write_text("keep me\n")
        return "out/mine", tuple(f"out/mine/{f}" for f in RUN_FILES)
    if kind == "file":
        (work / "out" / "f").write_text("a file\n")
        return "out/f", ()
    return "", RUN_FILES


@contextlib.contextmanager
def _report_figures(on: bool) -> Iterator[None]:
    """With *on* false, the run's report.html is not drawn (``epcsim.run(report=...)``
    stays as the CLI calls it; only the figure-drawing function is replaced)."""
    if on:
        yield
        return
    import epcsim.report

    real = epcsim.report.write_report

    def fake(run_dir: Any) -> Path:
        return Path(run_dir) / "report.html"

    epcsim.report.write_report = fake
    try:
        yield
    finally:
        epcsim.report.write_report = real


@_profiles(default=12, long=400)
def test_fuzz_run_scenarios(n: int, slow: bool) -> None:
    # mostly well-formed TOML, so that most examples run (validate gets the broken bytes)
    kinds = ("plausible", "plausible", "plausible", "data", "data+bytes")
    strategy = st.tuples(
        st.one_of(scenario_files(BASE, kinds), scenario_files(TRACE_BASE, kinds)),
        st.sampled_from(OUT_KINDS),
        st.just(False) if not slow else st.booleans(),
        st.booleans(),
    )
    _fuzz(strategy, _check_run, n, slow)


# --- --set strings ------------------------------------------------------------------------

SET_KEYS = [
    "host.epc",
    "host.sections",
    "host.duration",
    "host.seed",
    "host.cpus",
    "host.misc",
    "host.costs.ewb",
    "host.costs.access",
    "host.costs.bogus",
    "host.experiments.fault_unreferenced",
    "host.experiments.no_age",
    "host.extensions",
    "host",
    "name",
    "cgroup.0.max",
    "cgroup.1.path",
    "cgroup.5.max",
    "cgroup.-1.max",
    "cgroup.0",
    "cgroup",
    "enclave.0.count",
    "enclave.0.threads",
    "enclave.0.size",
    "enclave.-1.size",
    "enclave.x.size",
    "enclave.1.start",
    "enclave.0.workload.pattern",
    "enclave.0.workload.accesses",
    "enclave.0.workload.trace",
    "enclave.0.edmm.remove_pages",
    "enclave.0.name.x",
    "vepc.0.pages",
    "at.0.time",
    "at.1.write.value",
    "at.1.write.path",
    "expect.0.outcome",
    "expect.1.equals",
    "",
    " ",
    ".",
    "..",
    "host.",
    ".host",
    "host..epc",
    "a.b.c",
    "é.ü",
]
SET_VALUES = [
    *WEIRD_STRINGS,
    "[1, 2]",
    '["4MiB", "8MiB"]',
    '["rfc-knobs"]',
    "[]",
    "{}",
    '{ pattern = "uniform", accesses = 10 }',
    "{ pattern = 1 }",
    "1e999",
    "-inf",
    "nan",
    "true",
    "1979-05-27T07:32:00Z",
    '"unterminated',
    "'x'",
    '"""x"""',
    "= =",
]


@st.composite
def set_strings(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["kv", "kv", "kv", "text"]))
    if kind == "text":
        return draw(_text)
    key = draw(st.sampled_from(SET_KEYS) | _text)
    value = draw(st.sampled_from(SET_VALUES) | _text | weird_values.map(to_toml))
    return f"{key}={value}"


def _check_set(args: tuple[str, list[str]]) -> None:
    command, sets = args
    with _workdir() as work:
        _sample_trace(work)
        (work / "in" / "s.toml").write_text(toml_document(BASE))
        extra = [x for s in sets for x in ("--set", s)]
        if command == "validate" or not _cheap(
            work / "in" / "s.toml", [*sets, "host.duration=2ms"]
        ):
            invoke(["validate", "in/s.toml", *extra], work=work)
            return
        args_ = ["run", "in/s.toml", "--out", "out/run", "--engine", "reference", *extra]
        with _report_figures(False):
            invoke(
                [*args_, "--set", "host.duration=2ms"],
                work=work,
                outputs=("out/run",),
                wall_limit=RUN_WALL_LIMIT_S,
            )


@_profiles(default=60, long=2000)
def test_fuzz_set_strings(n: int, slow: bool) -> None:
    strategy = st.tuples(
        st.sampled_from(["validate", "validate", "validate", "run"]),
        st.lists(set_strings(), min_size=1, max_size=3),
    )
    _fuzz(strategy, _check_set, n, slow)


# --- traces -------------------------------------------------------------------------------

TRACE_FORMATS = ["text", "native", "npy", "oracleGeneral", "csv", "lackey"]
TRACE_NAMES = {
    "text": ["t.txt", "t", "t.csv"],
    "native": ["t.epct", "t.bin", "t"],
    "npy": ["t.npy", "t.txt"],
    "oracleGeneral": ["t.oracleGeneral.bin", "t.bin", "t.oracleGeneral", "t.npy"],
    "csv": ["t.csv", "t.csv.gz", "t.txt"],
    "lackey": ["t.lackey", "t.txt", "t"],
}


def _csv_bytes(pages: np.ndarray, header: bool) -> bytes:
    head = "time,obj_id,obj_size\n" if header else ""
    return (head + "".join(f"{i},{p},{4096 * (i % 3)}\n" for i, p in enumerate(pages))).encode()


def _lackey_bytes(pages: np.ndarray) -> bytes:
    kinds = ["I ", " L", " S", " M"]
    lines = ["==123== Lackey, an example Valgrind tool\n"]
    lines += [
        f"{kinds[i % 4]} {int(p) << 12 | (i * 8 % 4096):08x},{1 + i % 8}\n"
        for i, p in enumerate(pages)
    ]
    return "".join(lines).encode()


@st.composite
def trace_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """(file name, bytes) of a valid small trace of some format, maybe mutated."""
    fmt = draw(st.sampled_from(TRACE_FORMATS))
    pages = np.array(
        draw(
            st.lists(
                st.integers(0, 40) | st.sampled_from([0, 2**31, 2**32, 2**52, 2**63 - 1]),
                max_size=300,
            )
        ),
        dtype=np.int64,
    )
    name = draw(st.sampled_from(TRACE_NAMES[fmt]))
    if fmt == "csv":
        raw = _csv_bytes(pages, draw(st.booleans()))
    elif fmt == "lackey":
        raw = _lackey_bytes(pages & ((1 << 40) - 1))
    else:
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "t"
            write_trace(pages, p, format=fmt)
            raw = p.read_bytes()
    if fmt in ("text", "csv", "lackey") and draw(st.booleans()):
        raw = gzip.compress(raw, mtime=0)
        name = draw(st.sampled_from([name, name + ".gz"]))
    if draw(st.sampled_from(["mutate", "mutate", "keep", "noise"])) == "mutate":
        raw = draw(mutated_bytes(raw))
    elif draw(st.integers(0, 9)) == 0:
        raw = draw(st.binary(max_size=100))
    if draw(st.integers(0, 19)) == 19:
        name = draw(st.sampled_from(["t.zst", "t.epct.zst", "t.txt.zst", ".hidden"]))
    return name, raw


TRACE_OPTIONS = [
    "mapping=address",
    "mapping=object",
    "mapping=bogus",
    "block_size=0",
    "block_size=-1",
    "block_size=4096",
    "block_size=x",
    "obj_id_col=2",
    "obj_id_col=0",
    "obj_id_col=99",
    "obj_id_col=lbn",
    "obj_size_col=3",
    "has_header=true",
    "has_header=maybe",
    "delimiter=;",
    "delimiter=",
    "delimiter=ab",
    "obj_id_is_num=false",
    "chunk=1",
    "chunk=0",
    "chunk=-5",
    "skip_bad=true",
    "collapse=true",
    "unit=address",
    "unit=page",
    "bogus=1",
    "=",
    "noequals",
    "é=ü",
]
FORMAT_ARGS = [*TRACE_FORMATS, "oracle", "txt", "epct", "bogus", "", "NPY"]


@st.composite
def trace_read_args(draw: st.DrawFn) -> list[str]:
    args: list[str] = []
    if draw(st.integers(0, 3)) == 3:
        args += ["--format", draw(st.sampled_from(FORMAT_ARGS))]
    for opt in draw(st.lists(st.sampled_from(TRACE_OPTIONS), max_size=2)):
        args += ["-O", opt]
    if draw(st.booleans()):
        args.append("--skip-bad")
    return args


def _check_trace_info(args: tuple[tuple[str, bytes], list[str], str | None, bool]) -> None:
    (name, raw), read_args, window, plot = args
    with _workdir() as work:
        (work / "in" / name).write_bytes(raw)
        extra = ["--window", window] if window is not None else []
        if plot:
            extra += ["--plot", "out/wss.png"]
        invoke(["trace", "info", f"in/{name}", *read_args, *extra], work=work, outputs=("out",))


@_profiles(default=80, long=2500)
def test_fuzz_trace_info(n: int, slow: bool) -> None:
    strategy = st.tuples(
        trace_files(),
        trace_read_args(),
        st.none() | st.sampled_from(["1", "7", "0", "-3", "x", "99999999999999999999"]),
        st.integers(0, 29).map(lambda i: i == 29),  # a figure is slow to draw: 1 in 30
    )
    _fuzz(strategy, _check_trace_info, n, slow)


OUT_NAMES = [
    "out/c.epct",
    "out/c.npy",
    "out/c.txt",
    "out/c.bin",
    "out/c.oracleGeneral.bin",
    "out/c.csv",
    "out/c.lackey",
    "out/c",
    "out/c.zst",
    "out/c.txt.gz",
    "out/nodir/c.epct",
    "out",
    "out/",
    "",
]
TO_ARGS = ["native", "npy", "text", "oracleGeneral", "csv", "lackey", "oracle", "bogus", ""]


def _check_trace_convert(args: tuple[tuple[str, bytes], list[str], str, list[str]]) -> None:
    (name, raw), read_args, out, more = args
    with _workdir() as work:
        (work / "in" / name).write_bytes(raw)
        if out == "<input>":
            out = f"in/{name}"
        invoke(
            ["trace", "convert", f"in/{name}", out, *read_args, *more], work=work, outputs=("out",)
        )


@_profiles(default=60, long=2000)
def test_fuzz_trace_convert(n: int, slow: bool) -> None:
    more = st.lists(
        st.sampled_from(["--dense"]) | st.sampled_from(TO_ARGS).map(lambda t: f"--to={t}"),
        max_size=2,
    )
    strategy = st.tuples(
        trace_files(), trace_read_args(), st.sampled_from([*OUT_NAMES, "<input>"]), more
    )
    _fuzz(strategy, _check_trace_convert, n, slow)


# --- run directories: report ------------------------------------------------------------

_RUN_DIR: list[Path] = []


def _valid_run_dir() -> Path:
    """A run directory of the base scenario, written once per test session."""
    if not _RUN_DIR:
        d = Path(tempfile.mkdtemp(prefix="epcsim-fuzz-run-"))
        epcsim.run(toml_document(BASE), out=d / "run", engine="reference")
        _RUN_DIR.append(d / "run")
    return _RUN_DIR[0]


@pytest.fixture(scope="module", autouse=True)
def _cleanup_run_dir() -> Iterator[None]:
    yield
    for d in _RUN_DIR:
        shutil.rmtree(d.parent, ignore_errors=True)
    _RUN_DIR.clear()


@st.composite
def run_dir_edits(draw: st.DrawFn) -> list[tuple[str, str, Any]]:
    """Edits of a valid run directory: (file, operation, argument)."""
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        f = draw(
            st.sampled_from(
                ["summary.json", "summary.json", "summary.json", "timeseries.parquet"]
                + ["timeseries.parquet", "fault_latency.npy", "report.html", "INCOMPLETE"]
                + ["usage.png", "run.json", "run.json"]
            )
        )
        op = draw(
            st.sampled_from(["structure", "structure", "bytes", "delete", "noise", "dir", "empty"])
        )
        arg: Any = None
        if op in ("structure", "bytes"):
            arg = draw(st.randoms(use_true_random=False))
        elif op == "noise":
            arg = draw(st.binary(max_size=200))
        edits.append((f, op, arg))
    return edits


def _json_mutate(value: Any, rnd: Any) -> Any:
    """Replace, delete or retype one random node of a JSON value."""
    paths = list(_paths(value))
    if not paths:
        return rnd.choice([None, [], {}, "x", -1])
    if rnd.randrange(2):  # half the time a top-level key: a whole table of the summary
        paths = [p for p in paths if len(p) == 1]
    path = rnd.choice(paths)
    parent = _parent(value, path)
    choice = rnd.randrange(6)
    if choice == 0:
        del parent[path[-1]]
    else:
        parent[path[-1]] = rnd.choice(
            [None, -1, 0, 2**70, 1.5, float("nan"), "", "x", "\u202e", [], {}, [1], {"a": 1}, True]
        )
    return value


def _parquet_mutate(path: Path, rnd: Any) -> None:
    """Drop, rename, retype or empty the columns of a valid Parquet table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException):
        return
    if table.num_columns == 0:
        return
    i = rnd.randrange(table.num_columns)
    k = rnd.randrange(5)
    if k == 0:
        table = table.remove_column(i)
    elif k == 1:
        table = table.rename_columns([*table.column_names[:i], "x", *table.column_names[i + 1 :]])
    elif k == 2:
        table = table.set_column(i, table.column_names[i], table.column(i).cast(pa.string()))
    elif k == 3:
        table = table.slice(0, 0)
    else:
        table = table.set_column(
            i, table.column_names[i], pa.array([None] * table.num_rows, type=pa.float64())
        )
    pq.write_table(table, path)


def _apply_edits(run: Path, edits: list[tuple[str, str, Any]]) -> None:
    for f, op, arg in edits:
        p = run / f
        if op == "delete":
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
        elif op == "dir":
            if p.is_file():
                p.unlink()
            p.mkdir(exist_ok=True)
        elif p.is_dir():
            continue
        elif op == "empty":
            p.write_bytes(b"")
        elif op == "noise":
            p.write_bytes(arg)
        elif op == "structure" and f in ("summary.json", "run.json") and p.is_file():
            try:
                value = json.loads(p.read_text())
            except ValueError:
                continue
            p.write_text(json.dumps(_json_mutate(value, arg)))
        elif op == "structure" and f == "timeseries.parquet" and p.is_file():
            _parquet_mutate(p, arg)
        elif op == "structure" and f == "fault_latency.npy":
            bad = [
                np.zeros((2, 3), dtype=np.int64),
                np.array([1.5, -2.0]),
                np.array([], dtype=np.int64),
                np.array(["a", "b"]),
                np.array([-1, 2**62], dtype=np.int64),
                np.int64(5),
                np.array([1, 2], dtype=np.int8),
            ]
            np.save(p, bad[arg.randrange(len(bad))])
        elif p.is_file():  # bytes (or structure of another file): flip, cut, or append
            raw = bytearray(p.read_bytes())
            k = arg.randrange(3)
            if k == 0 and raw:
                raw[arg.randrange(len(raw))] = arg.randrange(256)
            elif k == 1:
                del raw[arg.randrange(len(raw) + 1) :]
            else:
                raw += bytes(arg.randrange(256) for _ in range(arg.randrange(1, 32)))
            p.write_bytes(bytes(raw))


def _check_report(args: tuple[list[tuple[str, str, Any]], str]) -> None:
    edits, target = args
    with _workdir() as work:
        run = work / "in" / "run"
        shutil.copytree(_valid_run_dir(), run)
        _apply_edits(run, edits)
        invoke(["report", target], work=work, outputs=tuple(f"in/run/{f}" for f in REPORT_OUTPUTS))


@_profiles(default=5, long=300)
def test_fuzz_report_run_dirs(n: int, slow: bool) -> None:
    targets = ["in/run"] * 6 + ["in/run/", "in", "in/run/summary.json", "in/missing", "", "."]
    _fuzz(st.tuples(run_dir_edits(), st.sampled_from(targets)), _check_report, n, slow)


# --- the Python API: epcsim.run() ---------------------------------------------------------


@st.composite
def api_arguments(draw: st.DrawFn) -> dict[str, Any]:
    scenario = draw(
        st.one_of(
            st.just(BASE),
            st.just(toml_document(BASE)),
            mutated_data(BASE),
            mutated_data(BASE).map(toml_document),
            st.sampled_from([None, 0, 1.5, b"name = 'x'", [], "", "builtin:", "builtin:nope"]),
            st.sampled_from(["<file>", "<dir>", "<missing>"]),
            weird_values,
        )
    )
    kwargs: dict[str, Any] = {"scenario": scenario}
    if draw(st.booleans()):
        kwargs["seed"] = draw(
            st.sampled_from([None, 0, 3, -1, 2**64, 2**70, "3", 1.5, True, [], float("nan")])
        )
    if draw(st.booleans()):
        kwargs["overrides"] = draw(
            st.sampled_from(["host.seed=2", None, 3, [None], [3], ["=x"], ("host.seed=2",)])
            | st.lists(set_strings(), max_size=2)
        )
    kwargs["out"] = draw(st.sampled_from([None, None, "<fresh>", "<file>", "<foreign>", "", 3]))
    kwargs["engine"] = draw(st.sampled_from(["reference"] * 6 + ["bogus", "", None, 3]))
    return kwargs


def _check_api(kwargs: dict[str, Any]) -> None:
    with _workdir() as work:
        _sample_trace(work)
        scenario_file = work / "in" / "s.toml"
        scenario_file.write_text(toml_document(BASE))
        outputs: tuple[str, ...] = ()
        sc = kwargs["scenario"]
        if isinstance(sc, str) and sc.startswith("<"):
            kwargs["scenario"] = {
                "<file>": str(scenario_file),
                "<dir>": str(work / "in"),
                "<missing>": str(work / "in" / "missing.toml"),
            }[sc]
        out = kwargs["out"]
        if out == "<fresh>":
            kwargs["out"] = work / "out" / "run"
            outputs = ("out/run",)
        elif out == "<file>":
            kwargs["out"] = scenario_file
        elif out == "<foreign>":
            kwargs["out"] = work / "in"
            outputs = tuple(f"in/{f}" for f in RUN_FILES)
        elif out == "":
            outputs = RUN_FILES
        overrides = kwargs.get("overrides", ())
        if isinstance(overrides, list) and all(isinstance(x, str) for x in overrides):
            overrides = kwargs["overrides"] = [*overrides, "host.duration=2ms"]
        source = kwargs["scenario"]
        if isinstance(source, dict | str) and isinstance(overrides, list | tuple):
            with contextlib.chdir(work):
                if isinstance(source, dict):
                    cheap = _cheap_dict(source, overrides)
                else:
                    cheap = _cheap(source, list(overrides))
            if not cheap:
                return
        before = _snapshot(work)
        with contextlib.chdir(work), _wall_limit(RUN_WALL_LIMIT_S) as fired:
            try:
                result = epcsim.run(**kwargs, report=False)
            except EpcsimError:
                pass
            except KeyboardInterrupt:
                if not fired[0]:
                    raise
            except Exception as e:
                tb = "".join(traceback.format_exception(e))
                raise AssertionError(f"epcsim.run(**{kwargs!r}) raised\n{tb}") from None
            else:
                assert isinstance(result, Result)
        _check_files(before, _snapshot(work), outputs)


def _cheap_dict(data: dict, overrides: Any) -> bool:
    try:
        sc = load_scenario(data, overrides=overrides)
    except Exception:
        return True
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "s.toml"
        try:
            p.write_text(toml_document(sc.model_dump(mode="json", exclude_none=True)))
        except (TypeError, UnicodeEncodeError):
            return True
        return _cheap(p, [])


@_profiles(default=40, long=800)
def test_fuzz_api_run(n: int, slow: bool) -> None:
    _fuzz(api_arguments(), _check_api, n, slow)


# --- a fixed sample in subprocesses -------------------------------------------------------

SUBPROCESS_SAMPLE = [
    # (files to create in in/, arguments, expected exit status)
    ({"s.toml": b"\xff\xfe not utf-8 \x00"}, ["validate", "in/s.toml"], 2),
    ({"s.toml": b"[host]\nepc = 5\n"}, ["run", "in/s.toml", "--out", "out/r"], 2),
    ({}, ["validate", "builtin:kselftest", "--set", "enclave.-1.size=1"], 2),
    ({"t.npy": b"\x93NUMPY\x01\x00"}, ["trace", "info", "in/t.npy"], 2),
    ({"t.txt": b"1\n2\nx\n"}, ["trace", "convert", "in/t.txt", "out/c.epct"], 2),
    ({"t.txt": b"1\n2\n3\n"}, ["trace", "convert", "in/t.txt", "out/nodir/c.epct"], 2),
    ({"summary.json": b"{"}, ["report", "in"], 2),
]


def test_fuzz_subprocess_sample() -> None:
    """The same oracle through ``python -m epcsim`` (a real process: stderr, exit status,
    the interpreter's own traceback printing)."""
    src = str(Path(epcsim.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src, "COLUMNS": "100"}
    failures = []
    for files, args, expected in SUBPROCESS_SAMPLE:
        with _workdir() as work:
            for name, raw in files.items():
                (work / "in" / name).write_bytes(raw)
            before = _snapshot(work)
            p = subprocess.run(
                [sys.executable, "-m", "epcsim", *args],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            what = f"epcsim {shlex.join(args)}: exit {p.returncode}\n{p.stdout}{p.stderr}"
            lines = p.stderr.splitlines()
            ok = (
                p.returncode == expected
                and "Traceback" not in p.stdout + p.stderr
                and len(lines) == 1
                and lines[0].startswith("epcsim: error: ")
            )
            try:
                _check_files(before, _snapshot(work), ())
            except AssertionError as e:
                ok, what = False, f"{what}\n{e}"
            if not ok:
                failures.append(what)
    assert not failures, "\n\n".join(failures)


# --- crashes the fuzz found, one test each ------------------------------------------------


def _corrupt_gzip() -> bytes:
    """A gzip file whose deflate stream is corrupt (zlib.error, not an OSError)."""
    raw = bytearray(gzip.compress(b"".join(b"%d\n" % i for i in range(300)), mtime=0))
    raw[10] ^= 0xFF
    return bytes(raw)


@pytest.mark.parametrize(
    ("name", "extra", "message"),
    [
        ("t.gz", [], "cannot tell the trace format"),
        ("t.txt.gz", [], "cannot read: Error -3 while decompressing data"),
        ("t.gz", ["--format", "csv"], "cannot read: Error -3 while decompressing data"),
        ("t.gz", ["--format", "lackey"], "cannot read: Error -3 while decompressing data"),
    ],
)
@pytest.mark.parametrize("command", ["info", "convert"])
def test_corrupt_gzip_trace_is_exit_2(
    tmp_path: Path, name: str, extra: list[str], message: str, command: str
) -> None:
    """`epcsim trace convert t.gz out.epct` on a gzip file with a corrupt deflate stream
    raised zlib.error out of the format detection and the text readers (a traceback)."""
    (tmp_path / "in" / name).parent.mkdir()
    (tmp_path / "in" / name).write_bytes(_corrupt_gzip())
    (tmp_path / "out").mkdir()
    args = ["trace", command, f"in/{name}", *extra]
    if command == "convert":
        args.insert(3, "out/c.epct")
    r = invoke(args, work=tmp_path)
    assert r.exit_code == 2
    assert r.stderr.startswith(f"epcsim: error: in/{name}: {message}"), r.stderr
    assert r.stderr.count("\n") == 1
    assert not (tmp_path / "out" / "c.epct").exists()


@pytest.mark.parametrize("sep", ["\r", "\u2028", "\x85", "\x0c"])
def test_error_naming_a_key_with_a_line_break_is_one_line(tmp_path: Path, sep: str) -> None:
    """`epcsim validate s.toml` where an unknown key holds a line separator other than
    \\n printed the error on two lines."""
    escaped = f"\\u{ord(sep):04x}"  # TOML takes control characters escaped only
    (tmp_path / "s.toml").write_text(f'[host]\nepc = "1MiB"\n"bad{escaped}key" = 1\n')
    r = invoke(["validate", "s.toml"], work=tmp_path)
    assert r.exit_code == 2
    assert r.stderr == "epcsim: error: s.toml: host.bad key: unknown key (got 1)\n"


def _npy_with_header(header: str) -> bytes:
    text = header.encode("latin1")
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + bytes(8 * 6)


@pytest.mark.parametrize("command", ["info", "convert"])
def test_npy_trace_with_unbalanced_header_is_exit_2(tmp_path: Path, command: str) -> None:
    """`epcsim trace convert t.npy out.bin` on a .npy whose header dict is followed by
    an unbalanced brace raised tokenize.TokenError out of numpy's header parser."""
    header = "{'descr': '<i8', 'fortran_order': False, 'shape': (6,)}   {   \n"
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "in" / "t.npy").write_bytes(_npy_with_header(header))
    args = ["trace", command, "in/t.npy"] + (["out/c.bin"] if command == "convert" else [])
    r = invoke(args, work=tmp_path)
    assert r.exit_code == 2
    assert r.stderr == (
        "epcsim: error: in/t.npy: not a NumPy .npy file (the header is not a dictionary literal)\n"
    ), r.stderr
    assert not (tmp_path / "out" / "c.bin").exists()


# --- the cgroupfs API: host.fs ------------------------------------------------------------

FS_PATHS = [
    "/",
    "/a",
    "/a/b",
    "/b",
    "/a/../b",
    "/a/./b",
    "//a",
    "/a/",
    "",
    ".",
    "..",
    "/..",
    "a",
    "/misc.max",
    "/misc.current",
    "/misc.capacity",
    "/a/misc.max",
    "/a/misc.max/",
    "/a/misc.events",
    "/a/misc.events.local",
    "/a/memory.max",
    "/a/memory.current",
    "/cgroup.subtree_control",
    "/a/cgroup.subtree_control",
    "/a/cgroup.procs",
    "/a/cgroup.controllers",
    "/a/b/misc.max",
    "/nonexistent/misc.max",
    "/a\x00b",
    "/" + "x" * 5000,
    "/é",
]
FS_DATA = [
    "sgx_epc 4096",
    "sgx_epc max",
    "sgx_epc -1",
    "sgx_epc 18446744073709551616",
    "tdx 1",
    "+misc +memory",
    "+misc",
    "-misc",
    "+cpu",
    "0",
    "1",
    "max",
    "1G",
    "",
    "\x00",
    "sgx_epc 1\x00junk",
    "x" * 5000,
    b"sgx_epc 1",
    b"\xff\xfe",
    12345,
    None,
    1.5,
]


def _check_fs(ops: list[tuple[str, Any, Any]]) -> None:
    """Each operation succeeds or raises OSError (TypeError only for a path or data of the
    wrong type, ValueError only for a NUL in the path, as Python's ``os`` functions do);
    the kernel model's invariants hold after every one."""
    from epcsim.kernel import Host, check_invariants

    host = Host("1MiB")
    for op, path, data in ops:
        call = f"host.fs.{op}({path!r}" + (f", {data!r})" if op == "write" else ")")
        try:
            if op == "write":
                host.fs.write(path, data)
            else:
                getattr(host.fs, op)(path)
        except OSError:
            pass
        except TypeError as e:
            assert not isinstance(path, str) or not isinstance(data, str | bytes), (call, e)
        except ValueError as e:
            assert isinstance(path, str) and "\0" in path, (call, e)
        except Exception as e:
            tb = "".join(traceback.format_exception(e))
            raise AssertionError(f"{call} raised\n{tb}") from None
        check_invariants(host)


@_profiles(default=60, long=1000)
def test_fuzz_cgroupfs_api(n: int, slow: bool) -> None:
    paths = st.sampled_from(FS_PATHS) | _text | st.sampled_from([None, 3, b"/a"])
    data = st.sampled_from(FS_DATA) | _text | st.binary(max_size=16)
    op = st.sampled_from(["read", "write", "write", "mkdir", "rmdir"])
    _fuzz(st.lists(st.tuples(op, paths, data), max_size=12), _check_fs, n, slow)


# --- sweep and advise arguments -----------------------------------------------------------

#: two tenants of a 1 MiB EPC, a few hundred accesses each: a point runs in milliseconds
SWEEP_SCENARIO = """\
name = "fuzz-two"
[host]
epc = "1MiB"
duration = "20ms"
cpus = 2

[[cgroup]]
path = "/a"
max = "512KiB"

[[cgroup]]
path = "/b"
max = "512KiB"

[[enclave]]
name = "a"
cgroup = "/a"
size = "512KiB"
workload = { pattern = "uniform", accesses = 300 }

[[enclave]]
name = "b"
cgroup = "/b"
size = "512KiB"
workload = { pattern = "zipf", alpha = 0.9, accesses = 300 }
"""
GRID_KEYS = [
    "cgroup.0.max",
    "cgroup.1.max",
    "host.epc",
    "host.policy",
    "host.seed",
    "host.duration",
    "enclave.0.size",
    "enclave.0.workload.accesses",
    "cgroup.9.max",
    "nope",
    "",
]
GRID_VALUES = [
    "256KiB,512KiB",
    "256KiB..512KiB:2",
    "256KiB..1MiB:x2",
    "v16,v14",
    "v16,nope",
    "max,256KiB",
    "1ms,2ms",
    "100,200",
    "512KiB..256KiB:2",
    "256KiB..512KiB:0",
    "0..1MiB:x2",
    "1MiB,1MiB",
    "4KiB..8KiB:3",
    "-1MiB",
    ",",
    "",
    "a..b:2",
]
SEEDS = ["1", "1..2", "2,5", "2..1", "1,1", "x", "", "-1"]
JOBS = ["1", "2", "0", "-1", "two", ""]
SCHEDULERS = ["", "tcp://", "http://127.0.0.1:1", "nonsense", "tcp://host:port"]
SLOS = [
    "slowdown<=2",
    "slowdown<1000",
    "p99_fault_latency<=50us",
    "miss_ratio>=0",
    "accesses_per_s>1",
    "nope<=1",
    "slowdown",
    "slowdown<=x",
    "p99_fault_latency<=5parsecs",
    "",
]
TENANTS = ["/a", "/b", "/", "/nope", "a", ""]
BUDGETS = ["capacity", "1MiB", "512KiB", "capacity/2", "0", "x", "-1MiB"]
RESOLUTIONS = ["256KiB", "512KiB", "4KiB", "0", "4097", "2MiB", "x", ""]


def _maybe(draw: st.DrawFn, flag: str, values: list[str]) -> list[str]:
    if not draw(st.booleans()):
        return []
    return [flag, draw(st.sampled_from(values) | _text)]


@st.composite
def sweep_args(draw: st.DrawFn) -> list[str]:
    args: list[str] = []
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from(GRID_KEYS) | _text)
        value = draw(st.sampled_from(GRID_VALUES) | _text)
        args += ["--grid", draw(st.sampled_from([f"{key}={value}", key, value]))]
    args += _maybe(draw, "--seeds", SEEDS)
    args += _maybe(draw, "--jobs", JOBS)
    args += _maybe(draw, "--scheduler", SCHEDULERS)
    args += _maybe(draw, "--set", ["host.duration=10ms", "host.policy=v14", "nope=1"])
    return args


@st.composite
def advise_args(draw: st.DrawFn) -> list[str]:
    args: list[str] = []
    for _ in range(draw(st.integers(0, 2))):
        args += ["--slo", draw(st.sampled_from(SLOS) | _text)]
    for _ in range(draw(st.integers(0, 2))):
        args += ["--tenant", draw(st.sampled_from(TENANTS) | _text)]
    args += _maybe(draw, "--budget", BUDGETS)
    args += _maybe(draw, "--resolution", RESOLUTIONS)
    args += _maybe(draw, "--seeds", SEEDS[:5])
    args += _maybe(draw, "--jobs", JOBS)
    args += _maybe(draw, "--scheduler", SCHEDULERS)
    return args


def _check_points_command(args: tuple[str, list[str]]) -> None:
    """``epcsim sweep | advise`` with random arguments over a tiny scenario: a clean exit
    (one error line for bad input), nothing written but the output directory (and its
    lock); a run that outlives the wall limit is interrupted (exit 130)."""
    command, extra = args
    with _workdir() as work:
        (work / "in" / "s.toml").write_text(SWEEP_SCENARIO)
        invoke(
            [command, "in/s.toml", *extra, "--out", "out/d"],
            work=work,
            outputs=("out/d",),
            wall_limit=RUN_WALL_LIMIT_S,
        )


@_profiles(default=40, long=1500)
def test_fuzz_sweep_args(n: int, slow: bool) -> None:
    _fuzz(st.tuples(st.just("sweep"), sweep_args()), _check_points_command, n, slow)


@_profiles(default=30, long=1000)
def test_fuzz_advise_args(n: int, slow: bool) -> None:
    _fuzz(st.tuples(st.just("advise"), advise_args()), _check_points_command, n, slow)
