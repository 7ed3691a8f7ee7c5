"""The scenario schema and loader (SIM_CONTRACT `epcsim.scenario`): the four kinds of
source, ``--set`` overrides, capacity expressions, every error path (a ScenarioError
naming the file, the table and the field), ``Scenario.digest()`` and ``list_builtins()``."""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from epcsim.errors import EpcsimError, ScenarioError
from epcsim.scenario import Scenario, list_builtins, load_scenario
from epcsim.scenario.schema import eval_size, resolve_write_value

MiB = 1 << 20
BUILTINS = ("kselftest", "noisy-neighbour", "overcommit", "nested-fairness")

TOML = """\
name = "t"
description = "a test scenario"

[host]
epc = "16MiB"
seed = 1

[[cgroup]]
path = "/a"
max = "capacity/2"

[[enclave]]
name = "e"
cgroup = "/a"
size = "1MiB"
workload = { pattern = "uniform", accesses = 10 }
"""


def base() -> dict[str, Any]:
    """The dict form of TOML (a fresh copy each call)."""
    return tomllib.loads(TOML)


def raises(source: Any, overrides: tuple[str, ...] = ()) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        load_scenario(source, overrides=list(overrides))
    return info.value


def check_error(e: ScenarioError, file: str, table: str, field: str, *fragments: str) -> None:
    """The error carries file/table/field and its message names them."""
    assert isinstance(e, EpcsimError)
    assert (e.file, e.table, e.field) == (file, table, field), str(e)
    msg = str(e)
    assert msg.startswith(f"{file}: "), msg
    where = ".".join(x for x in (table, field) if x)
    assert where in msg, msg
    for f in fragments:
        assert f in msg, msg


# ------------------------------------------------------------------ sources


def test_load_from_toml_string() -> None:
    sc = load_scenario(TOML)
    assert isinstance(sc, Scenario)
    assert sc.name == "t" and sc.description == "a test scenario"
    assert sc.source == "<string>"
    assert sc.capacity == 16 * MiB
    assert sc.host.seed == 1
    assert [c.path for c in sc.cgroup] == ["/a"]
    assert sc.enclave[0].name == "e" and sc.enclave[0].workload["accesses"] == 10


def test_load_from_absolute_path_str_and_path(tmp_path: Path) -> None:
    p = tmp_path / "s.toml"
    p.write_text(TOML)
    a = load_scenario(str(p))
    b = load_scenario(p)
    assert a.source == str(p) and b.source == str(p)
    assert a == b
    assert a.digest() == load_scenario(TOML).digest()


def test_load_from_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "s.toml").write_text(TOML)
    monkeypatch.chdir(tmp_path)
    assert load_scenario("sub/s.toml").source == "sub/s.toml"
    assert load_scenario(Path("sub/s.toml")).capacity == 16 * MiB
    monkeypatch.chdir(tmp_path / "sub")
    assert load_scenario("s.toml").name == "t"
    assert load_scenario("./s.toml").name == "t"


def test_load_builtin() -> None:
    sc = load_scenario("builtin:kselftest")
    assert sc.name == "kselftest"
    assert sc.source == "builtin:kselftest"
    assert sc.capacity == 96 * MiB
    assert [e.name for e in sc.enclave] == ["A", "B", "C", "D", "E", "F"]
    assert len(sc.expect) == 7


def test_load_from_dict() -> None:
    d = base()
    sc = load_scenario(d)
    assert sc.source == "<dict>"
    assert sc.digest() == load_scenario(TOML).digest()
    assert d == base()  # the input is not modified


def test_source_is_not_part_of_the_dump() -> None:
    sc = load_scenario(TOML)
    assert "source" not in sc.model_dump()


def test_missing_file_directory_and_unknown_builtin(tmp_path: Path) -> None:
    e = raises(str(tmp_path / "nope.toml"))
    check_error(e, str(tmp_path / "nope.toml"), "", "", "no such file")
    e = raises(tmp_path)
    check_error(e, str(tmp_path), "", "", "is a directory")
    e = raises("builtin:nope")
    check_error(e, "builtin:nope", "", "", "no built-in scenario 'nope'", *BUILTINS)


def test_toml_syntax_error_names_file_and_position(tmp_path: Path) -> None:
    bad = TOML.replace("[host]", "[host")
    e = raises(bad)
    assert e.file == "<string>"
    assert "not valid TOML" in str(e) and "line 4" in str(e)
    p = tmp_path / "bad.toml"
    p.write_text(bad)
    e = raises(p)
    assert e.file == str(p) and str(e).startswith(f"{p}: not valid TOML")


# ------------------------------------------------------------------ overrides


def test_overrides_set_values_of_the_right_type() -> None:
    sc = load_scenario(TOML, overrides=["host.epc=1GiB", "host.seed=3", "enclave.0.count=2"])
    assert sc.capacity == 1 << 30
    assert sc.host.seed == 3
    assert sc.enclave[0].count == 2
    sc = load_scenario(
        TOML,
        overrides=[
            "host.sgx2=false",  # a TOML value
            "host.duration=5s",  # a bare string
            'host.sample_interval="1ms"',  # a quoted TOML string
            "enclave.0.workload.accesses=1_000",
            "cgroup.0.max=capacity/4",
        ],
    )
    assert sc.host.sgx2 is False
    assert sc.host.duration == "5s"
    assert sc.host.sample_interval == "1ms"
    assert sc.enclave[0].workload["accesses"] == 1000
    assert sc.cgroup[0].max == "capacity/4"


def test_overrides_epc_and_sections_replace_each_other() -> None:
    sc = load_scenario(TOML, overrides=['host.sections=["4MiB", "8MiB"]'])
    assert sc.host.epc is None and sc.host.sections == ["4MiB", "8MiB"]
    assert sc.capacity == 12 * MiB
    sc = load_scenario(sc.model_dump(mode="json"), overrides=["host.epc=2MiB"])
    assert sc.host.sections is None and sc.capacity == 2 * MiB


def test_overrides_on_a_builtin_and_a_path(tmp_path: Path) -> None:
    sc = load_scenario("builtin:kselftest", overrides=["host.epc=16MiB", "enclave.3.count=2"])
    assert sc.capacity == 16 * MiB and sc.enclave[3].count == 2
    p = tmp_path / "s.toml"
    p.write_text(TOML)
    assert load_scenario(p, overrides=["host.seed=9"]).host.seed == 9


@pytest.mark.parametrize(
    "item, field, fragment",
    [
        ("host.epc", "", "--set expects KEY=VALUE, got 'host.epc'"),
        ("=3", "", "--set expects KEY=VALUE"),
        ("enclave.7.count=2", "enclave.7", "no element '7'"),
        ("enclave.x.count=2", "enclave.x", "no element 'x'"),
        ("enclave.0=3", "", "cannot set a whole list element"),
        ("host.epc.x=1", "", "epc is not a table"),
    ],
)
def test_override_bad_syntax(item: str, field: str, fragment: str) -> None:
    e = raises(TOML, (item,))
    assert e.file == "<string>" and e.field == field
    assert fragment in str(e)


def test_override_validated_like_the_file() -> None:
    check_error(raises(TOML, ("host.bogus=1",)), "<string>", "host", "bogus", "unknown key")
    check_error(
        raises(TOML, ("host.seed=abc",)), "<string>", "host", "seed", "valid integer", "'abc'"
    )
    check_error(raises(TOML, ("host.epc=64XB",)), "<string>", "host", "epc", "unknown unit")


def test_overrides_do_not_modify_a_dict_source() -> None:
    d = base()
    load_scenario(d, overrides=["host.epc=1GiB"])
    assert d["host"]["epc"] == "16MiB"


# ------------------------------------------------------------------ error paths

Mut = Callable[[dict], Any]


def _set(path: str, value: Any) -> Mut:
    """A mutation setting dotted *path* (list indices allowed) to *value*."""

    def f(d: dict) -> None:
        *parts, last = path.split(".")
        cur: Any = d
        for p in parts:
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        if isinstance(cur, list):
            cur[int(last)] = value
        else:
            cur[last] = value

    return f


def _pop(path: str) -> Mut:
    def f(d: dict) -> None:
        *parts, last = path.split(".")
        cur: Any = d
        for p in parts:
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        del cur[last]

    return f


def _add(table: str, item: dict) -> Mut:
    return lambda d: d.setdefault(table, []).append(item)


def _at(**kw: Any) -> Mut:
    return _add("at", kw)


def _write(path: str, value: str) -> Mut:
    return _at(write={"path": path, "value": value})


def _both(*muts: Mut) -> Mut:
    def f(d: dict) -> None:
        for m in muts:
            m(d)

    return f


WL = {"pattern": "uniform", "accesses": 10}

ERRORS: list[tuple[str, Mut, str, str, str]] = [
    # (id, mutation, table, field, message fragment)
    ("unknown-key-top", _set("bogus", 1), "", "bogus", "unknown key"),
    ("unknown-key-host", _set("host.bogus", 1), "host", "bogus", "unknown key"),
    ("unknown-key-enclave", _set("enclave.0.bogus", 1), "enclave[0]", "bogus", "unknown key"),
    ("unknown-key-cgroup", _set("cgroup.0.min", 1), "cgroup[0]", "min", "unknown key"),
    ("missing-host", _pop("host"), "", "host", "required key is missing"),
    ("missing-size", _pop("enclave.0.size"), "enclave[0]", "size", "required key is missing"),
    ("wrong-type-cpus", _set("host.cpus", "many"), "host", "cpus", "valid integer"),
    ("wrong-type-threads", _set("enclave.0.threads", [1]), "enclave[0]", "threads", "integer"),
    ("wrong-type-misc", _set("host.misc", "perhaps"), "host", "misc", "valid boolean"),
    ("wrong-type-build", _set("enclave.0.build", "ewb"), "enclave[0]", "build", "'eadd'"),
    ("out-of-range-cpus", _set("host.cpus", 0), "host", "cpus", "greater than or equal to 1"),
    ("bad-unit-epc", _set("host.epc", "64XB"), "host", "epc", "unknown unit 'XB'"),
    ("bad-unit-size", _set("enclave.0.size", "64XB"), "enclave[0]", "size", "unknown unit"),
    ("bad-unit-max", _set("cgroup.0.max", "64XB"), "cgroup[0]", "max", "unknown unit"),
    ("bad-unit-memmax", _set("cgroup.0.memory_max", "1XB"), "cgroup[0]", "memory_max", "unit"),
    ("not-a-size", _set("enclave.0.size", "lots"), "enclave[0]", "size", "not a size"),
    ("negative-epc", _set("host.epc", -4096), "host", "epc", "must not be negative"),
    ("negative-size", _set("enclave.0.size", -4096), "enclave[0]", "size", "must not be negative"),
    ("negative-size-str", _set("enclave.0.size", "-4096"), "enclave[0]", "size", "'-4096'"),
    ("negative-max", _set("cgroup.0.max", -4096), "cgroup[0]", "max", "must not be negative"),
    ("size-not-4k", _set("enclave.0.size", 5000), "enclave[0]", "size", "multiple of 4096"),
    ("size-not-4k-unit", _set("enclave.0.size", "6KiB"), "enclave[0]", "size", "multiple of 4096"),
    ("size-zero", _set("enclave.0.size", 0), "enclave[0]", "size", "positive multiple of 4096"),
    ("max-above-u64", _set("cgroup.0.max", 2**64), "cgroup[0]", "max", "above 2^64-1"),
    (
        "epc-and-sections",
        _set("host.sections", ["8MiB"]),
        "host",
        "epc",
        "exactly one of epc or sections",
    ),
    ("neither-epc-nor-sections", _pop("host.epc"), "host", "epc", "exactly one of epc"),
    ("unknown-cost", _set("host.costs", {"warp": "1us"}), "host.costs", "warp", "unknown cost"),
    ("bad-cost-time", _set("host.costs", {"ewb": "fast"}), "host.costs", "ewb", "not a time"),
    ("bad-duration", _set("host.duration", "forever"), "host", "duration", "not a time"),
    ("cgroup-relative", _set("cgroup.0.path", "a"), "cgroup[0]", "path", "absolute cgroup path"),
    ("cgroup-root", _set("cgroup.0.path", "/"), "cgroup[0]", "path", "absolute cgroup path"),
    ("cgroup-bad-name", _set("cgroup.0.path", "/a b"), "cgroup[0]", "path", "absolute"),
    (
        "parent-not-declared",
        _add("cgroup", {"path": "/x/y"}),
        "cgroup[1]",
        "path",
        "parent /x is not declared before /x/y",
    ),
    ("cgroup-twice", _add("cgroup", {"path": "/a/"}), "cgroup[1]", "path", "declared twice"),
    (
        "enclave-cgroup-undeclared",
        _set("enclave.0.cgroup", "/zz"),
        "enclave[0]",
        "cgroup",
        "cgroup /zz does not exist",
    ),
    (
        "enclave-cgroup-with-children",
        _add("cgroup", {"path": "/a/b"}),
        "enclave[0]",
        "cgroup",
        "has child cgroups",
    ),
    (
        "duplicate-enclave",
        _add("enclave", {"name": "e", "size": "1MiB", "workload": WL}),
        "enclave[1]",
        "name",
        "duplicate name 'e'",
    ),
    (
        "duplicate-vepc",
        _add("vepc", {"name": "e", "pages": 1}),
        "vepc[0]",
        "name",
        "duplicate name 'e'",
    ),
    ("bad-name", _set("enclave.0.name", "e#1"), "enclave[0]", "name", "names use letters"),
    (
        "pattern-alpha",
        _set("enclave.0.workload", {"pattern": "zipf", "alpha": -1, "accesses": 1}),
        "enclave[0].workload",
        "alpha",
        "must be > 0, got -1",
    ),
    (
        "pattern-unknown",
        _set("enclave.0.workload", {"pattern": "nope", "accesses": 1}),
        "enclave[0].workload",
        "pattern",
        "unknown pattern 'nope'",
    ),
    (
        "pattern-hot-fraction",
        _set(
            "enclave.0.workload",
            {"pattern": "hotcold", "hot_fraction": 2, "hot_probability": 0.5, "accesses": 1},
        ),
        "enclave[0].workload",
        "hot_fraction",
        "2",
    ),
    (
        "accesses-and-duration",
        _set("enclave.0.workload.duration", "1s"),
        "enclave[0].workload",
        "accesses",
        "exactly one of accesses or duration",
    ),
    (
        "neither-accesses-nor-duration",
        _pop("enclave.0.workload.accesses"),
        "enclave[0].workload",
        "accesses",
        "exactly one of accesses or duration",
    ),
    (
        "accesses-negative",
        _set("enclave.0.workload.accesses", -1),
        "enclave[0].workload",
        "accesses",
        "count >= 0",
    ),
    (
        "workload-duration-bad",
        _set("enclave.0.workload", {"pattern": "uniform", "duration": "xx"}),
        "enclave[0].workload",
        "duration",
        "not a time",
    ),
    (
        "workload-and-program",
        _set("enclave.0.program", "kselftest"),
        "enclave[0]",
        "workload",
        "exactly one of workload or program",
    ),
    (
        "eaug-without-sgx2",
        _both(_set("host.sgx2", False), _set("enclave.0.build", "eaug")),
        "enclave[0]",
        "build",
        "EAUG needs host.sgx2",
    ),
    ("bad-start", _set("enclave.0.start", "soon"), "enclave[0]", "start", "'manual'"),
    (
        "start-after-unknown",
        _set("enclave.0.start", "after:zz"),
        "enclave[0]",
        "start",
        "unknown group 'zz'",
    ),
    (
        "at-two-actions",
        _at(time="1s", mkdir="/q", rmdir="/q"),
        "at[0]",
        "write",
        "exactly one action per [[at]], got ['mkdir', 'rmdir']",
    ),
    ("at-no-action", _at(time="1s"), "at[0]", "write", "exactly one action per [[at]], got none"),
    ("at-bad-time", _at(time="later", kill="e"), "at[0]", "time", "not a time"),
    ("at-after-unknown", _at(after="zz", kill="e"), "at[0]", "after", "unknown group 'zz'"),
    ("at-start-unknown", _at(start="zz"), "at[0]", "start", "no enclave or vepc named 'zz'"),
    ("at-kill-unknown", _at(kill="zz"), "at[0]", "kill", "no enclave or vepc named 'zz'"),
    (
        "at-when-unknown",
        _at(when={"enclave": "zz", "added": "1MiB"}, kill="e"),
        "at[0]",
        "when.enclave",
        "no enclave instance named 'zz'",
    ),
    (
        "at-when-and-after",
        _at(after="e", when={"enclave": "e", "added": "1MiB"}, kill="e"),
        "at[0]",
        "when",
        "at most one of after and when",
    ),
    (
        "at-migrate-unknown-cgroup",
        _at(migrate={"enclave": "e", "cgroup": "/nope"}),
        "at[0]",
        "migrate",
        "cgroup /nope does not exist",
    ),
    (
        "write-unknown-file",
        _write("/a/misc.bogus", "1"),
        "at[0]",
        "write.path",
        "misc.bogus is not a writable interface file",
    ),
    (
        "write-read-only-file",
        _write("/a/misc.current", "sgx_epc 0"),
        "at[0]",
        "write.path",
        "misc.current is not a writable interface file",
    ),
    (
        "write-read-only-capacity",
        _write("/misc.capacity", "sgx_epc 0"),
        "at[0]",
        "write.path",
        "not a writable interface file",
    ),
    (
        "write-unknown-cgroup",
        _write("/zz/misc.max", "sgx_epc 1"),
        "at[0]",
        "write.path",
        "cgroup /zz does not exist",
    ),
    (
        "write-subtree-control",
        _write("/a/cgroup.subtree_control", "+cpu"),
        "at[0]",
        "write.value",
        "refuses '+cpu'",
    ),
    (
        "expect-missing-outcome",
        _add("expect", {"enclaves": ["e"]}),
        "expect[0]",
        "outcome",
        "required with enclaves",
    ),
    (
        "expect-missing-equals",
        _add("expect", {"file": "/a/misc.current"}),
        "expect[0]",
        "equals",
        "required with file",
    ),
    (
        "expect-neither",
        _add("expect", {"name": "x"}),
        "expect[0]",
        "enclaves",
        "exactly one of enclaves or file",
    ),
    (
        "expect-unknown-enclave",
        _add("expect", {"enclaves": ["zz"], "outcome": "success"}),
        "expect[0]",
        "enclaves",
        "no enclave or group named 'zz'",
    ),
    (
        "expect-bad-outcome",
        _add("expect", {"enclaves": ["e"], "outcome": "meh"}),
        "expect[0]",
        "outcome",
        "'success' or 'failure'",
    ),
    (
        "expect-bad-quantifier",
        _add("expect", {"enclaves": ["e"], "outcome": "success", "quantifier": "most"}),
        "expect[0]",
        "quantifier",
        "'all'",
    ),
]


@pytest.mark.parametrize(
    "mut, table, field, fragment", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_error_names_file_table_field(mut: Mut, table: str, field: str, fragment: str) -> None:
    d = base()
    mut(d)
    check_error(raises(d), "<dict>", table, field, fragment)


def test_error_from_a_file_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "s.toml"
    p.write_text(TOML.replace('size = "1MiB"', 'size = "64XB"'))
    check_error(raises(p), str(p), "enclave[0]", "size", "unknown unit 'XB' in '64XB'")
    check_error(
        raises(TOML.replace('size = "1MiB"', 'size = "64XB"')),
        "<string>",
        "enclave[0]",
        "size",
        "64XB",
    )
    check_error(
        raises("builtin:kselftest", ("enclave.2.cgroup=/nope",)),
        "builtin:kselftest",
        "enclave[2]",
        "cgroup",
        "/nope",
    )


@pytest.mark.parametrize(
    "value",
    [
        "sgx_epc -1",
        "sgx_epc abc",
        "foo 1",
        "sgx_epc 18446744073709551616",
        "sgx_epc",
        "sgx_epc  1",
        "sgx_epc 1 2",
        "sgx_epc 1KiB",
        "1048576",
    ],
)
def test_misc_max_values_the_kernel_refuses(value: str) -> None:
    d = base()
    _write("/a/misc.max", value)(d)
    check_error(raises(d), "<dict>", "at[0]", "write.value", "the kernel refuses", repr(value))


@pytest.mark.parametrize(
    "value",
    [
        "sgx_epc 0",
        "sgx_epc 1048576",
        "sgx_epc 18446744073709551615",
        "sgx_epc 0x100000",
        "sgx_epc 010",
        "sgx_epc max",
        "sgx_epc 4096\n",
        "sgx_epc capacity/2",
    ],
)
def test_misc_max_values_the_kernel_accepts(value: str) -> None:
    d = base()
    _write("/a/misc.max", value)(d)
    assert load_scenario(d).at[0].write.value == value


@pytest.mark.parametrize("value", ["garbage", "-1", "1X", "max2"])
def test_memory_max_garbage(value: str) -> None:
    d = base()
    _write("/a/memory.max", value)(d)
    check_error(raises(d), "<dict>", "at[0]", "write.value", "refuses", "memory.max")


@pytest.mark.parametrize("value", ["max", "1G", "1048576", "64k", "capacity/2"])
def test_memory_max_accepted(value: str) -> None:
    d = base()
    _write("/a/memory.max", value)(d)
    load_scenario(d)


def test_when_must_name_an_instance_not_a_group() -> None:
    d = base()
    d["enclave"][0]["count"] = 2
    _at(when={"enclave": "e", "added": "1MiB"}, kill="e#1")(d)
    check_error(raises(d), "<dict>", "at[0]", "when.enclave", "'e'")
    d["at"][0]["when"]["enclave"] = "e#1"
    assert load_scenario(d).at[0].when.enclave == "e#1"


# ------------------------------------------------------------------ known bugs


@pytest.mark.parametrize(
    "host, field",
    [
        ({"epc": 5000}, "epc"),
        ({"epc": 0}, "epc"),
        ({"sections": ["1MiB", 5000]}, "sections[1]"),
        ({"sections": ["1MiB"] * 9}, "sections"),
        ({"epc": "16MiB", "sample_interval": 0}, "sample_interval"),
    ],
    ids=["epc-not-4k", "epc-zero", "section-not-4k", "nine-sections", "sample-interval-0"],
)
def test_host_size_errors_name_the_field(host: dict, field: str) -> None:
    d = base()
    d["host"] = host
    e = raises(d)
    assert (e.table, e.field) == ("host", field), str(e)
    assert str(e).count("host") == 1, str(e)


def test_boolean_is_not_a_size() -> None:
    d = base()
    d["cgroup"][0]["max"] = True
    check_error(raises(d), "<dict>", "cgroup[0]", "max", "True")


def test_one_line_toml_string() -> None:
    one_line = 'host = { epc = "16MiB" }'
    assert load_scenario(one_line).capacity == 16 * MiB


# ------------------------------------------------------------------ capacity expressions

C = 96 * MiB


@pytest.mark.parametrize(
    "expr, want",
    [
        ("capacity", C),
        ("capacity/512", C // 512),
        ("4*capacity/512", 4 * C // 512),
        ("capacity - 2*(capacity/128)", C - 2 * (C // 128)),
        ("capacity // 3", C // 3),
        ("capacity / 3", C // 3),  # "/" is integer division, as in the shell script
        ("capacity + 4096", C + 4096),
        ("capacity - 16*4096", C - 16 * 4096),
        ("capacity - '1MiB'", C - MiB),
        ("(capacity)", C),
        (" capacity/2 ", C // 2),
        ("capacity - capacity", 0),
    ],
)
def test_capacity_expressions(expr: str, want: int) -> None:
    assert eval_size(expr, C, what="max") == want


@pytest.mark.parametrize(
    "expr, fragment",
    [
        ("capacity/", "not an expression of capacity"),
        ("capacity +* 2", "not an expression of capacity"),
        ("capacity/0", "division by zero"),
        ("capacity // (capacity - capacity)", "division by zero"),
        ("capacity ** 2", "unsupported expression"),
        ("capacity * 1.5", "unsupported expression"),
        ("-capacity", "unsupported expression"),
        ("max(capacity, 1)", "unsupported expression"),
        ("capacity.real", "unsupported expression"),
        ("capacity - 2*capacity", "is negative"),
        ("capacity - '1XB'", "unknown unit"),
    ],
)
def test_bad_capacity_expressions(expr: str, fragment: str) -> None:
    with pytest.raises(EpcsimError, match="^max: ") as info:
        eval_size(expr, C, what="max")
    assert fragment in str(info.value)
    d = base()
    d["cgroup"][0]["max"] = expr
    check_error(raises(d), "<dict>", "cgroup[0]", "max", fragment)


def test_capacity_expressions_in_a_scenario_resolve_against_host_epc() -> None:
    sc = load_scenario(
        "builtin:kselftest", overrides=["host.epc=16MiB", "cgroup.3.memory_max=capacity/2"]
    )
    assert sc.capacity == 16 * MiB
    maxes = {c.path.rsplit("/", 1)[-1]: c.max for c in sc.cgroup}
    assert eval_size(maxes["sgx_test_small_parent"], sc.capacity, what="max") == 32768
    assert eval_size(maxes["sgx_test_large"], sc.capacity, what="max") == 131072
    # sections add up to the capacity
    sc = load_scenario(
        TOML, overrides=['host.sections=["4MiB", "2MiB"]', "enclave.0.size=capacity"]
    )
    assert sc.capacity == 6 * MiB
    assert eval_size(sc.enclave[0].size, sc.capacity, what="size") == 6 * MiB


def test_capacity_expression_errors_in_other_places() -> None:
    d = base()
    d["enclave"][0]["size"] = "capacity/0"
    check_error(raises(d), "<dict>", "enclave[0]", "size", "division by zero")
    d = base()
    _at(when={"enclave": "e", "added": "capacity/"}, kill="e")(d)
    check_error(raises(d), "<dict>", "at[0]", "when.added", "not an expression")
    d = base()
    _write("/a/misc.max", "sgx_epc capacity/0")(d)
    check_error(raises(d), "<dict>", "at[0]", "write.value", "division by zero")
    d = base()
    _write("/a/memory.max", "capacity/")(d)
    check_error(raises(d), "<dict>", "at[0]", "write.value", "not an expression")


def test_resolve_write_value() -> None:
    assert resolve_write_value("/a/misc.max", "sgx_epc capacity/2", C) == f"sgx_epc {C // 2}"
    assert resolve_write_value("/a/memory.max", "capacity - 2*(capacity/128)", C) == str(
        C - 2 * (C // 128)
    )
    assert resolve_write_value("/a/misc.max", "sgx_epc 4096", C) == "sgx_epc 4096"
    assert resolve_write_value("/a/memory.max", "max", C) == "max"


# ------------------------------------------------------------------ digest


def test_digest_is_stable_and_ignores_the_source(tmp_path: Path) -> None:
    a = load_scenario(TOML)
    p = tmp_path / "s.toml"
    p.write_text(TOML)
    b = load_scenario(p)
    c = load_scenario(base())
    assert a.digest() == a.digest() == b.digest() == c.digest()
    assert len(a.digest()) == 64 and int(a.digest(), 16) >= 0
    # the canonical JSON of the dump, without the source
    dump = a.model_dump(mode="json")
    assert a.digest() == hashlib.sha256(json.dumps(dump, sort_keys=True).encode()).hexdigest()
    # a round trip through the JSON dump gives the same scenario
    assert load_scenario(dump).digest() == a.digest()


@pytest.mark.parametrize(
    "override",
    [
        "host.seed=2",
        "host.epc=32MiB",
        "host.costs.ewb=5us",
        "enclave.0.size=2MiB",
        "enclave.0.workload.accesses=11",
        "cgroup.0.max=capacity/4",
        "name=other",
        "description=other",
    ],
)
def test_digest_changes_when_a_field_changes(override: str) -> None:
    assert load_scenario(TOML, overrides=[override]).digest() != load_scenario(TOML).digest()


def test_digest_of_builtins_is_stable_and_distinct() -> None:
    digests = {n: load_scenario(f"builtin:{n}").digest() for n in BUILTINS}
    assert len(set(digests.values())) == len(BUILTINS)
    assert digests == {n: load_scenario(f"builtin:{n}").digest() for n in BUILTINS}


# ------------------------------------------------------------------ built-in list


def test_list_builtins_has_the_four_with_one_line_descriptions() -> None:
    got = dict(list_builtins())
    assert set(BUILTINS) <= set(got)
    assert [n for n, _ in list_builtins()] == sorted(got)
    root = resources.files("epcsim.scenario.builtins")
    for name in BUILTINS:
        line = got[name]
        assert line and "\n" not in line and not line.startswith("#")
        assert len(line) <= 100
        first = root.joinpath(f"{name}.toml").read_text().splitlines()[0]
        assert first == f"# {line}"


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_files_name_and_describe_themselves(name: str) -> None:
    data = tomllib.loads(
        resources.files("epcsim.scenario.builtins").joinpath(f"{name}.toml").read_text()
    )
    assert data["name"] == name
    assert len(data["description"].strip()) > 80
    assert data["expect"], "every built-in states its expectations"


def test_scenario_is_frozen() -> None:
    sc = load_scenario(TOML)
    with pytest.raises(Exception, match="frozen"):
        sc.name = "x"  # type: ignore[misc]
    assert copy.deepcopy(sc) == sc


def test_a_table_where_a_size_goes_names_the_field(tmp_path: Path) -> None:
    """`epc = {}` blamed `host.epc.int` (pydantic's union tag), not `host.epc`."""
    f = tmp_path / "e.toml"
    f.write_text("[host]\nepc = {}\n")
    with pytest.raises(ScenarioError) as e:
        load_scenario(str(f))
    assert str(e.value) == (
        f"{f}: host.epc: expected an integer or a string with a unit (e.g. '64MiB', '5us')"
    )
