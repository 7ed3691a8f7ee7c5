"""``epcsim.sweep.html``: the offline ``DIR/_meta/sweep.html``.

Issue 16: "DIR/_meta/sweep.html, offline (no network, no CDN: inline CSS, figures as
inline PNG data URIs or SVG): for each swept key, each tenant's slowdown, p99 fault
latency and miss ratio against it (a heat map for two keys) ... Tenants = cgroup rows
that hold enclaves."

The rows are a real sweep's: a two-tenant scenario (and an idle cgroup) run over two
limits of each tenant × two seeds, one row per cgroup and per enclave as the dataset
holds them.
"""

from __future__ import annotations

import base64
import itertools
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import epcsim
from epcsim.compare import tenant_metrics
from epcsim.report.fmt import sig3
from epcsim.sweep.html import render_sweep_html, tenants, value_label, write_sweep_html

SCENARIO = """\
name = "two-tenants"
[host]
epc = "4MiB"
duration = "1s"

[[cgroup]]
path = "/a"
max = "1MiB"

[[cgroup]]
path = "/b"
max = "2MiB"

[[cgroup]]
path = "/idle"
max = "1MiB"

[[enclave]]
name = "ea"
cgroup = "/a"
size = "2MiB"
workload = { pattern = "uniform", accesses = 1500 }

[[enclave]]
name = "eb"
cgroup = "/b"
size = "2MiB"
workload = { pattern = "zipf", alpha = 0.9, accesses = 1500 }
"""

A, B = "cgroup.0.max", "cgroup.1.max"
A_VALUES = ("1048576", "2097152")
B_VALUES = ("1048576", "3145728")
SEEDS = (1, 2)


def point_rows(scenario: str, values: dict[str, str], seed: int) -> list[dict[str, Any]]:
    """What the dataset holds for one point: a row per cgroup and per enclave."""
    res = epcsim.run(scenario, seed=seed, overrides=[f"{k}={v}" for k, v in values.items()])
    cgroups, enclaves = tenant_metrics(res.summary, [])
    rows = []
    for path, t in sorted(cgroups.items()):
        rows.append({"cgroup": path, "enclave": None, "outcome": res.summary["outcome"], **t})
    for name, t in sorted(enclaves.items()):
        rows.append({"enclave": name, **t})
    for r in rows:
        lat = r.pop("fault_latency_ns", None) or {}
        r["p99_fault_latency_ns"] = lat.get("p99")
        r.update(values, seed=seed)
    return rows


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    path = tmp_path_factory.mktemp("sc") / "two.toml"
    path.write_text(SCENARIO)
    out = []
    for a, b, seed in itertools.product(A_VALUES, B_VALUES, SEEDS):
        out += point_rows(str(path), {A: a, B: b}, seed)
    return out


def mean(vals: list[float]) -> float:
    return math.fsum(sorted(vals)) / len(vals)


def cells(page: str) -> list[list[str]]:
    """The table rows of *page* (every table), as cell texts."""
    return [
        re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row) for row in re.findall(r"<tr>(.*?)</tr>", page)
    ]


def pngs(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r"src='data:image/png;base64,([^']+)'", page)]


def assert_offline(page: str) -> None:
    assert not re.search(r"https?:|<script|<link|@import|url\(", page)
    assert all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs(page))


def test_tenants_are_the_cgroups_holding_enclaves(rows: list[dict[str, Any]]) -> None:
    assert {r["cgroup"] for r in rows} == {"/", "/a", "/b", "/idle"}
    assert tenants(rows) == ["/a", "/b"]


def test_value_labels_by_kind() -> None:
    """The grid's kind decides where there is one: 4096 ns is no size."""
    assert value_label("4096", "time") == "4096ns"
    assert [value_label(v, k) for v, k in (("1000000", "time"), ("5000", "size"))] == [
        "1ms",
        "5000B",
    ]
    assert [value_label(v, k) for v, k in (("4096", "int"), ("max", "size"))] == ["4096", "max"]


def test_value_labels() -> None:
    assert [value_label(v) for v in ("1048576", "4096", "4095", "4", "1s", "v16")] == [
        "1MiB",
        "4KiB",
        "4095",
        "4",
        "1s",
        "v16",
    ]


def test_one_key_each_tenant_against_it(rows: list[dict[str, Any]]) -> None:
    """One key: one figure (three panels), the table of its numbers: the mean over the
    seeds, the seeds' smallest and largest in brackets where they differ."""
    one = [r for r in rows if r[B] == B_VALUES[0]]
    page = render_sweep_html(one, [(A, A_VALUES)], title="two-tenants")
    assert_offline(page)
    assert len(pngs(page)) == 1
    table = cells(page)
    assert table[0] == ["tenant", A, "slowdown", "p99 fault latency", "miss ratio"]
    assert [r[:2] for r in table[1:]] == [
        ["/a", "1MiB"],
        ["/a", "2MiB"],
        ["/b", "1MiB"],
        ["/b", "2MiB"],
    ]
    for line in table[1:]:
        tenant, label = line[:2]
        value = next(v for v in A_VALUES if value_label(v) == label)
        mine = [r for r in one if r["cgroup"] == tenant and r["enclave"] is None and r[A] == value]
        assert len(mine) == len(SEEDS)
        ratios = [r["miss_ratio"] for r in mine]
        want = sig3(mean(ratios))
        if min(ratios) != max(ratios):
            want += f" [{sig3(min(ratios))} – {sig3(max(ratios))}]"
        assert line[4] == want
    assert "<li>points: 4, of which 0 failed (left out)</li>" in page
    assert "<li>seeds: 1, 2</li>" in page
    assert "<li>tenants: /a, /b</li>" in page


def test_two_keys_a_heat_map_per_metric(rows: list[dict[str, Any]]) -> None:
    page = render_sweep_html(rows, [(A, A_VALUES), (B, B_VALUES)], title="two-tenants")
    assert_offline(page)
    assert len(pngs(page)) == 3
    assert "Two keys are swept: a heat map per tenant and metric" in page
    heads = [t for t in cells(page) if t and t[0] == "tenant"]
    assert heads == [
        ["tenant", A, B, "slowdown"],
        ["tenant", A, B, "p99 fault latency"],
        ["tenant", A, B, "miss ratio"],
    ]
    slowdown = cells(page)[1:9]
    assert [r[:3] for r in slowdown] == [
        [t, value_label(a), value_label(b)]
        for t in ("/a", "/b")
        for b in B_VALUES
        for a in A_VALUES
    ]
    r0 = [r for r in rows if r["cgroup"] == "/a" and r["enclave"] is None and r[A] == A_VALUES[0]]
    r0 = [r["slowdown"] for r in r0 if r[B] == B_VALUES[0]]
    want = f"{sig3(mean(r0))}×"
    if min(r0) != max(r0):
        want += f" [{sig3(min(r0))}× – {sig3(max(r0))}×]"
    assert slowdown[0][3] == want


def test_three_keys_marginal_means_said_on_the_page(rows: list[dict[str, Any]]) -> None:
    """With a third key (here the seed's twin: a column that takes two values), each
    key's figure averages over the seeds and the other keys' values."""
    more = [dict(r, C="x" if r["seed"] == 1 else "y") for r in rows]
    page = render_sweep_html(more, [(A, A_VALUES), (B, B_VALUES), ("C", None)], title="t")
    assert_offline(page)
    assert len(pngs(page)) == 3
    assert "each of its values the mean over the seeds and over every combination" in page
    table_b = [t for t in cells(page) if len(t) == 5 and t[0] in ("/a", "/b")][4:8]
    assert [t[:2] for t in table_b] == [
        ["/a", "1MiB"],
        ["/a", "3MiB"],
        ["/b", "1MiB"],
        ["/b", "3MiB"],
    ]
    mine = [
        r["miss_ratio"]
        for r in more
        if r["cgroup"] == "/b" and r["enclave"] is None and r[B] == B_VALUES[1]
    ]
    assert len(mine) == len(A_VALUES) * len(SEEDS)
    assert table_b[3][4].startswith(sig3(mean(mine)))
    assert "<li>swept: cgroup.0.max (2 values), cgroup.1.max (2 values), C (2 values)</li>" in page


def test_the_same_rows_in_any_order_give_the_same_bytes(rows: list[dict[str, Any]]) -> None:
    axes = [(A, A_VALUES), (B, B_VALUES)]
    shuffled = list(rows)
    random.Random(3).shuffle(shuffled)
    assert render_sweep_html(shuffled, axes, title="t") == render_sweep_html(rows, axes, title="t")


def test_failed_points_are_counted_and_left_out(rows: list[dict[str, Any]]) -> None:
    one = [r for r in rows if r[B] == B_VALUES[0] and r[A] == A_VALUES[0]]
    broken = [dict(r, outcome="error", slowdown=1e9) if r["seed"] == SEEDS[1] else r for r in one]
    page = render_sweep_html(broken, [(A, None)], title="t")
    assert "<li>points: 2, of which 1 failed (left out)</li>" in page
    good = next(r for r in one if r["cgroup"] == "/a" and r["enclave"] is None and r["seed"] == 1)
    row_a = next(t for t in cells(page) if t[0] == "/a")
    assert row_a[2] == f"{sig3(good['slowdown'])}×"


def test_no_key_is_a_table(rows: list[dict[str, Any]]) -> None:
    one = [r for r in rows if r[B] == B_VALUES[0] and r[A] == A_VALUES[0]]
    page = render_sweep_html(one, [], title="t", facts=[("scenario hash", "ab12")])
    assert pngs(page) == []
    assert "<p>No key is swept: only the seed varies.</p>" in page
    assert "<li>scenario hash: ab12</li>" in page
    assert [t[0] for t in cells(page)] == ["tenant", "/a", "/b"]


def test_text_is_escaped() -> None:
    rows = [
        {"cgroup": "/<x>", "enclave": None, "seed": 1, "k": "<v>", "slowdown": 2.0},
        {"cgroup": "/<x>", "enclave": "e&", "seed": 1, "k": "<v>", "slowdown": 2.0},
    ]
    page = render_sweep_html(rows, [("k", None)], title="<t>")
    assert "<t>" not in page and "<x>" not in page and "<v>" not in page
    assert "<h1>&lt;t&gt;</h1>" in page
    assert ["/&lt;x&gt;", "&lt;v&gt;", "2.00×", "—", "—"] in cells(page)


def test_written_atomically(rows: list[dict[str, Any]], tmp_path: Path) -> None:
    target = tmp_path / "sweep.html"
    write_sweep_html(target, rows, [(A, A_VALUES), (B, B_VALUES)], title="two-tenants")
    assert target.read_text() == render_sweep_html(
        rows, [(A, A_VALUES), (B, B_VALUES)], title="two-tenants"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.html"]


@dataclass(frozen=True)
class Axis:
    """``epcsim.sweep.grid.Axis`` as the page reads it: the key and its ``--set`` strings."""

    key: str
    values: tuple[str, ...]


def test_the_dataset_as_stored_typed_columns_and_max(rows: list[dict[str, Any]]) -> None:
    """The dataset holds a size column as int64 (``max``: null) and comes as a pyarrow
    Table: the page is the one the ``--set`` strings give, ``max`` labelled so."""
    typed = [dict(r, **{A: int(r[A]), B: None if r[B] == B_VALUES[1] else int(r[B])}) for r in rows]
    table = pa.Table.from_pylist(typed)
    assert table.schema.field(A).type == pa.int64()
    page = render_sweep_html(table, [Axis(A, A_VALUES), Axis(B, (B_VALUES[0], "max"))])
    plain = render_sweep_html(rows, [(A, A_VALUES), (B, B_VALUES)])
    assert_offline(page)
    assert [t[:2] + t[3:] for t in cells(page)] == [t[:2] + t[3:] for t in cells(plain)]
    assert {t[2] for t in cells(page)[1:9]} == {"1MiB", "max"}
    assert "<h1>epcsim sweep</h1>" in page


def many_rows(n: int) -> list[dict[str, Any]]:
    """*n* tenants over two keys × two seeds; tenant k's slowdown is k + key values."""
    out: list[dict[str, Any]] = []
    for k, x, y, seed in itertools.product(range(n), (1, 2), (10, 20), (1, 2)):
        cg = f"/t{k:02d}"
        base = {"cgroup": cg, "seed": seed, "x": str(x), "y": str(y), "outcome": "pass"}
        metrics = {"slowdown": float(k + x + y), "miss_ratio": 0.1, "p99_fault_latency_ns": 9000}
        out.append(base | {"enclave": None} | metrics)
        out.append(base | {"enclave": f"e{k}"} | metrics)
    return out


@pytest.mark.parametrize("keys", [1, 2])
def test_many_tenants_draw_the_median_and_list_each(keys: int) -> None:
    """More tenants than MAX_DRAWN_TENANTS: the figures draw their median (said on the
    page), the tables still list every tenant."""
    from epcsim.sweep.html import MAX_DRAWN_TENANTS, _median

    n = MAX_DRAWN_TENANTS + 1
    axes = [("x", None), ("y", None)][:keys]
    page = render_sweep_html(many_rows(n), axes)
    assert_offline(page)
    assert len(pngs(page)) == (1 if keys == 1 else 3)
    assert f"With {n} tenants (more than {MAX_DRAWN_TENANTS}) the figures draw the" in page
    listed = {t[0] for t in cells(page) if t[0].startswith("/t")}
    assert listed == {f"/t{k:02d}" for k in range(n)}
    assert "With" not in render_sweep_html(many_rows(MAX_DRAWN_TENANTS), axes)
    assert (_median([1.0, 2.0, 9.0]), _median([1.0, 2.0, 4.0, 9.0])) == (2.0, 3.0)
