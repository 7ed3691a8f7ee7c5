"""``--grid KEY=VALUES`` (epcsim.sweep.grid): the values each form gives, the kinds the
keys take, the ``[sweep]`` table of a scenario, and the exact one-line refusals
(``epcsim sweep`` exits 2 with them, nothing written)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _scenarios import two_tenants
from typer.testing import CliRunner

from epcsim.cli import app
from epcsim.errors import EpcsimError
from epcsim.scenario import load_scenario
from epcsim.sweep import check_scheduler
from epcsim.sweep.grid import Axis, axes_for, parse_grid

TWO = two_tenants(duration="1s", a='pattern = "zipf", alpha = 1')

SC = load_scenario(TWO)


@pytest.mark.parametrize(
    ("spec", "axis"),
    [
        (
            "cgroup.1.max=4MiB..16MiB:4",
            Axis("cgroup.1.max", ("4194304", "8388608", "12582912", "16777216"), "size"),
        ),
        # geometric: 1, 4, 16, 64 MiB exactly
        (
            "host.epc=1MiB..64MiB:x4",
            Axis("host.epc", ("1048576", "4194304", "16777216", "67108864"), "size"),
        ),
        # sizes round to the nearest whole page: 10000 B -> 8192, 3 pages + 2048 -> 4 pages
        ("enclave.0.size=10000,14336", Axis("enclave.0.size", ("8192", "16384"), "size")),
        ("cgroup.0.max=4MiB,max", Axis("cgroup.0.max", ("4194304", "max"), "size")),
        ("host.policy=v16,v14", Axis("host.policy", ("v16", "v14"), "str")),
        ("host.misc=true,false", Axis("host.misc", ("true", "false"), "bool")),
        ("host.cpus=1..4:4", Axis("host.cpus", ("1", "2", "3", "4"), "int")),
        (
            "host.duration=1s..2s:3",
            Axis("host.duration", ("1000000000", "1500000000", "2000000000"), "time"),
        ),
        ("host.costs.EWB=1us,2us", Axis("host.costs.EWB", ("1000", "2000"), "time")),
        # a workload value written 1 (an integer) swept over fractions: a float column
        (
            "enclave.0.workload.alpha=0.5..1.5:3",
            Axis("enclave.0.workload.alpha", ("0.5", "1.0", "1.5"), "float"),
        ),
        (
            "enclave.1.workload.accesses=100..1000:4",
            Axis("enclave.1.workload.accesses", ("100", "400", "700", "1000"), "int"),
        ),
        # a key the workload does not have: what the values read as
        ("enclave.1.workload.skew=1,2", Axis("enclave.1.workload.skew", ("1", "2"), "int")),
    ],
)
def test_values(spec: str, axis: Axis) -> None:
    assert parse_grid(spec, SC) == axis


def test_typed_and_override() -> None:
    size = parse_grid("cgroup.0.max=4MiB,max", SC)
    assert [size.typed(v) for v in size.values] == [4194304, None]
    assert [size.override(v) for v in size.values] == ["cgroup.0.max=4194304", 'cgroup.0.max="max"']
    pol = parse_grid("host.policy=v16,v14", SC)
    assert pol.override("v14") == 'host.policy="v14"'
    alpha = parse_grid("enclave.0.workload.alpha=0.5,1", SC)
    assert [alpha.typed(v) for v in alpha.values] == [0.5, 1.0]


BAD = [
    ("host.foo=1", "--grid host.foo: unknown key ('foo' is not a field of host)"),
    (
        "cgroup.2.max=1MiB",
        "--grid cgroup.2.max: unknown key (the scenario has 2 cgroup tables, numbered from 0)",
    ),
    (
        "cgroup=1",
        "--grid cgroup: not one value (cgroup is a list of tables: name an element and a "
        "field, e.g. cgroup.0.path)",
    ),
    ("host.sections=1MiB", "--grid host.sections: not one value (host.sections is a list)"),
    ("host.seed=1,2", "--grid host.seed: give the seeds with --seeds, not --grid"),
    ("host.epc=", "--grid host.epc=: no values (give a,b,c, A..B:N or A..B:xN)"),
    (
        "host.epc=1MiB,,2MiB",
        "--grid host.epc=1MiB,,2MiB: an empty value (values are separated by single commas)",
    ),
    ("host.epc=4MiB..16MiB:0", "--grid host.epc=4MiB..16MiB:0: a range needs N >= 2 points, got 0"),
    ("host.epc=16MiB..4MiB:3", "--grid host.epc=16MiB..4MiB:3: A..B needs A < B, got 16MiB..4MiB"),
    (
        "host.epc=0..4MiB:x3",
        "--grid host.epc=0..4MiB:x3: geometric spacing (:x3) needs A > 0, got 0",
    ),
    (
        "host.epc=4MiB,lots",
        "--grid host.epc=4MiB,lots: 'lots' is not a size (examples: 96MiB, 4KiB, 4096)",
    ),
    (
        "host.epc=4KiB..8KiB:4",
        "--grid host.epc=4KiB..8KiB:4: the value 4096 appears twice after rounding to whole pages",
    ),
    (
        "host.policy=a..b:3",
        "--grid host.policy=a..b:3: a range needs a numeric key (host.policy takes str values)",
    ),
    ("host.policy=v16,v16", "--grid host.policy=v16,v16: the value v16 appears twice"),
    ("host.cpus=1,2.5", "--grid host.cpus=1,2.5: '2.5' is not an integer"),
    ("host.misc=yes", "--grid host.misc=yes: 'yes' is not true or false"),
    ("host.epc", "--grid 'host.epc': expected KEY=VALUES (a,b,c; A..B:N; A..B:xN)"),
]


@pytest.mark.parametrize(("spec", "message"), BAD)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(EpcsimError) as e:
        parse_grid(spec, SC)
    assert str(e.value) == message


def test_duplicated_key() -> None:
    with pytest.raises(EpcsimError) as e:
        axes_for(SC, ["host.policy=v16", "host.policy=v14"])
    assert str(e.value) == "--grid host.policy: the key is given twice"


def test_sweep_table_and_cli_override() -> None:
    """``[sweep]``: the file's axes in its order; a CLI --grid for one of its keys
    replaces its values in place; new keys follow.  Not part of the scenario (hash)."""
    text = TWO + (
        '\n[sweep]\ngrid = { "cgroup.1.max" = "1MiB..2MiB:2", "host.policy" = ["v16", "v14"] }'
        '\nseeds = "1..2"\n'
    )
    sc = load_scenario(text)
    assert sc.digest() == SC.digest()
    assert "sweep" not in sc.model_dump(mode="json")
    assert axes_for(sc) == [
        Axis("cgroup.1.max", ("1048576", "2097152"), "size"),
        Axis("host.policy", ("v16", "v14"), "str"),
    ]
    assert axes_for(sc, ["host.policy=v13", "host.cpus=1,2"]) == [
        Axis("cgroup.1.max", ("1048576", "2097152"), "size"),
        Axis("host.policy", ("v13",), "str"),
        Axis("host.cpus", ("1", "2"), "int"),
    ]
    bad = load_scenario(TWO + '\n[sweep]\ngrid = { "host.epc" = "1MiB..2MiB:1" }\n')
    with pytest.raises(EpcsimError) as e:
        axes_for(bad)
    assert str(e.value) == (
        "[sweep] grid host.epc = '1MiB..2MiB:1': a range needs N >= 2 points, got 1"
    )


def test_sweep_table_is_validated_by_the_loader() -> None:
    with pytest.raises(EpcsimError) as e:
        load_scenario(TWO + "\n[sweep]\ngrids = {}\n")
    assert str(e.value) == "<string>: sweep.grids: unknown key"
    with pytest.raises(EpcsimError) as e:
        load_scenario(TWO + "\n[sweep]\nseeds = 1.5\n")
    assert str(e.value) == (
        '<string>: sweep.seeds: expected "FROM..TO", "N,N,..." or a list of seeds, got 1.5'
    )


def test_run_ignores_the_sweep_table(tmp_path: Path) -> None:
    """`epcsim validate` accepts the table; the hash is the scenario's without it."""
    f = tmp_path / "s.toml"
    f.write_text(TWO + '\n[sweep]\ngrid = { "host.policy" = "v16,v14" }\n')
    r = CliRunner().invoke(app, ["validate", str(f)])
    assert (r.exit_code, r.output) == (0, f"ok: two ({SC.digest()[:12]})\n")


@pytest.mark.parametrize(
    "address",
    ["tcp://10.0.0.5:8786", "tcp://scheduler:8786", "tls://h.example:1", "tcp://[::1]:8786",
     "ws://h:65535", "inproc://10.0.0.5/1234/1"],
)  # fmt: skip
def test_scheduler_addresses(address: str) -> None:
    assert check_scheduler(address) == address


@pytest.mark.parametrize(
    "address",
    ["10.0.0.5:8786", "tcp://h", "tcp://h:0", "tcp://h:65536", "udp://h:1", "tcp://:8786",
     "inproc://", "tcp://h:1/x"],
)  # fmt: skip
def test_bad_scheduler_addresses(address: str) -> None:
    with pytest.raises(EpcsimError) as e:
        check_scheduler(address)
    assert str(e.value) == (
        f"--scheduler {address!r}: expected tcp://HOST:PORT (or tls://, ws://, wss://, inproc://)"
    )
