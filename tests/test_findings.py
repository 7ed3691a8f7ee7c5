"""docs/FINDINGS.md cannot drift from the model: every row of its count tables is checked
against a run of the built-in its section names (reference engine, default seed).

A row's first column is either a ``summary["..."]["..."]`` path into the run's
``summary.json`` or a quantity this module measures (``MEASURES``), by wrapping a
kernel-model function during the run.  A row naming neither fails the test, so the
document can only quote numbers that are checked here.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from epcsim.kernel import epc_cgroup, reclaim
from epcsim.kernel import host as kernel_host
from epcsim.result import Result
from epcsim.sim.engine import simulate

DOC = Path(__file__).resolve().parent.parent / "docs" / "FINDINGS.md"
PAGE = 4096

#: built-ins too slow for the default suite
SLOW = {"fairness-128"}


# ------------------------------------------------------------------ runs with probes


@dataclass
class Probe:
    """What the wrapped kernel functions saw during one run."""

    #: (LRU pages, charged pages, worker running) of the requester at each -ENOMEM charge
    enomem: list[tuple[int, int, bool]] = field(default_factory=list)
    #: for each OOM kill, the number of phase-2 passes of sgx_reclaim_pages() before it
    kills: list[int] = field(default_factory=list)
    phase2: int = 0


@cache
def probed(
    name: str, seed: int | None = None, overrides: tuple[str, ...] = ()
) -> tuple[Result, Probe]:
    """Run builtin:NAME on the reference engine, recording what :class:`Probe` holds."""
    p = Probe()
    try_charge = epc_cgroup._sgx_cgroup_try_charge
    age_and_back = reclaim._sgx_reclaim_age_and_back
    oom_kill = kernel_host.oom_kill_task

    def _try_charge(host, task, sgx_cg):  # __sgx_cgroup_try_charge()
        ret = try_charge(host, task, sgx_cg)
        if ret == -12:  # -ENOMEM
            p.enomem.append((sgx_cg.lru.nr, sgx_cg.cg.usage // PAGE, sgx_cg.work_running))
        return ret

    def _age_and_back(*a, **k):  # phase 2 of sgx_reclaim_pages(): once per batch
        p.phase2 += 1
        return age_and_back(*a, **k)

    def _oom_kill(host, task):
        p.kills.append(p.phase2)
        return oom_kill(host, task)

    with (
        mock.patch.object(epc_cgroup, "_sgx_cgroup_try_charge", _try_charge),
        mock.patch.object(reclaim, "_sgx_reclaim_age_and_back", _age_and_back),
        mock.patch.object(kernel_host, "oom_kill_task", _oom_kill),
    ):
        r = simulate(f"builtin:{name}", seed=seed, overrides=list(overrides), engine="reference")
    return r, p


def _kills_in_one_batch(name: str) -> int:
    kills = probed(name)[1].kills
    return max(Counter(kills).values(), default=0)


def _seeds_with_repeated_kills(name: str) -> int:
    return sum(
        max(Counter(probed(name, seed)[1].kills).values(), default=0) > 1 for seed in range(8)
    )


def _tenants(s: dict, key: str) -> list:
    return [c[key] for p, c in s["cgroups"].items() if p.startswith("/t/")]


#: the measured quantities the document may quote: row label -> f(built-in) -> value
MEASURES: dict[str, Callable[[str], Any]] = {
    "pages on /a's LRU at the -ENOMEM": lambda n: probed(n)[1].enomem[0][0],
    "pages charged to /a at the -ENOMEM": lambda n: probed(n)[1].enomem[0][1],
    "async worker of /a running at the -ENOMEM": lambda n: probed(n)[1].enomem[0][2],
    "OOM kills in one sgx_reclaim_pages() batch": _kills_in_one_batch,
    "seeds 0-7 with more than one OOM kill in one batch": _seeds_with_repeated_kills,
    "root's share of the pages evicted": lambda n: (
        (cg := probed(n)[0].summary["cgroups"])["/"]["evictions"]
        / sum(c["evictions"] for c in cg.values())
    ),
    "pages evicted from the 128 tenants": lambda n: sum(
        _tenants(probed(n)[0].summary, "evictions")
    ),
    "stddev/mean of the pages evicted per tenant": lambda n: (
        statistics.pstdev(ev := _tenants(probed(n)[0].summary, "evictions")) / statistics.mean(ev)
    ),
    "median slowdown of the 128 tenants": lambda n: statistics.median(
        e["slowdown"] for e in probed(n)[0].summary["enclaves"].values()
    ),
}


# ------------------------------------------------------------------ the document

SUMMARY_PATH = re.compile(r'^summary((?:\["[^"]+"\])+)$')
ROW = re.compile(r"^\| `([^`]+)`(?: \([^|]*\))? \| (.+?) \|$")
BUILTIN = re.compile(r"`builtin:([a-z0-9-]+)`")


@dataclass(frozen=True)
class Row:
    section: str
    builtin: str
    key: str
    value: str


def doc_rows() -> list[Row]:
    """Every count row of docs/FINDINGS.md, with the built-in of its section (the first
    ``builtin:NAME`` after the section's heading or the bold paragraph label)."""
    rows: list[Row] = []
    section = builtin = ""
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section, builtin = line[3:], ""
        m = BUILTIN.search(line)
        if m and (line.startswith("**Built-in:**") or line.startswith("**`builtin:")):
            builtin = m.group(1)
        m = ROW.match(line)
        if m and m.group(1) != "count":
            assert builtin, f"{section}: a count row before the section names its built-in"
            rows.append(Row(section, builtin, m.group(1), m.group(2)))
    return rows


def actual(row: Row) -> Any:
    m = SUMMARY_PATH.match(row.key)
    if m:
        v: Any = probed(row.builtin)[0].summary
        for k in re.findall(r'\["([^"]+)"\]', m.group(1)):
            v = v[k]
        return v
    assert row.key in MEASURES, f"{row.key!r} is neither a summary path nor a measured quantity"
    return MEASURES[row.key](row.builtin)


def matches(doc: str, value: Any) -> bool:
    """The document's text for *value*: exact for strings, integers and booleans (digits
    may be grouped with commas), to the document's decimals for floats."""
    if isinstance(value, bool | str):
        return doc == str(value)
    if isinstance(value, int):
        return doc.replace(",", "") == str(value)
    decimals = len(doc.split(".")[1]) if "." in doc else 0
    return f"{value:.{decimals}f}" == doc


POLICY_HEADER = re.compile(r"^\| policy \| (.+) \|$")


@dataclass(frozen=True)
class PolicyCell:
    section: str
    builtin: str
    policy: str
    key: str
    value: str


def policy_cells() -> list[PolicyCell]:
    """Every cell of the per-policy tables (a header ``| policy | `summary[...]` | ...``,
    then one row per policy), with the built-in of its section."""
    cells: list[PolicyCell] = []
    section = builtin = ""
    keys: list[str] | None = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section, builtin, keys = line[3:], "", None
        m = BUILTIN.search(line)
        if m and (line.startswith("**Built-in:**") or line.startswith("**`builtin:")):
            builtin = m.group(1)
        m = POLICY_HEADER.match(line)
        if m:
            keys = [k.strip().strip("`") for k in m.group(1).split(" | ")]
            continue
        if keys is None or not line.startswith("| ") or line.startswith("|---"):
            if not line.startswith("|"):
                keys = None
            continue
        parts = [c.strip() for c in line.strip("|").split("|")]
        assert len(parts) == len(keys) + 1, line
        for k, v in zip(keys, parts[1:], strict=True):
            cells.append(PolicyCell(section, builtin, parts[0], k, v))
    return cells


def policy_value(cell: PolicyCell) -> Any:
    m = SUMMARY_PATH.match(cell.key)
    assert m, f"{cell.section}: {cell.key!r} is not a summary path"
    v: Any = probed(cell.builtin, None, (f"host.policy={cell.policy}",))[0].summary
    for k in re.findall(r'\["([^"]+)"\]', m.group(1)):
        v = v[k]
    return v


def params() -> list:
    return [
        pytest.param(
            r, id=f"{r.builtin}:{r.key}", marks=[pytest.mark.slow] if r.builtin in SLOW else []
        )
        for r in doc_rows()
    ]


# ------------------------------------------------------------------ tests


def test_the_document_has_a_table_for_each_finding() -> None:
    rows = doc_rows()
    sections = {r.section.split(".")[0] for r in rows if r.section.startswith("F")}
    assert sections == {"F1", "F2", "F3", "F4", "F5"}
    assert {r.builtin for r in rows} == {
        "empty-lru-race",
        "parent-livelock",
        "oom-batch-kills",
        "nested-fairness",
        "root-bias",
        "lower-limit",
        "fairness-128",
    }
    text = DOC.read_text(encoding="utf-8")
    findings = re.split(r"\n## ", text)[1:6]
    assert [f.split(".")[0] for f in findings] == ["F1", "F2", "F3", "F4", "F5"]
    for f in findings:
        assert "*Derived from the model, not observed on hardware.*" in f, f.splitlines()[0]
        assert "**Built-in:** `builtin:" in f and "**Policies:**" in f and "**Depends on:**" in f


@pytest.mark.parametrize("row", params())
def test_document_row_matches_the_run(row: Row) -> None:
    value = actual(row)
    assert matches(row.value, value), (
        f"{row.section}: {row.key} is {value!r}, the document says {row.value}"
    )


@pytest.mark.parametrize(
    "name",
    ["empty-lru-race", "parent-livelock", "oom-batch-kills", "root-bias", "lower-limit"],
)
def test_the_builtin_passes_its_expectations(name: str) -> None:
    r = probed(name)[0]
    assert r.passed, [x for x in r.summary["expectations"] if not x["passed"]]


def test_every_finding_has_a_policy_table_of_every_policy() -> None:
    from epcsim.policies import REGISTRY

    cells = policy_cells()
    for f in ("F1", "F2", "F3", "F4", "F5"):
        got = {c.policy for c in cells if c.section.startswith(f + ".")}
        assert got == set(REGISTRY), f


@pytest.mark.parametrize(
    "cell",
    [
        pytest.param(
            c,
            id=f"{c.builtin}:{c.policy}:{c.key}",
            # nested-fairness takes 1-2 s per policy on the reference engine
            marks=[pytest.mark.slow] if c.builtin == "nested-fairness" else [],
        )
        for c in policy_cells()
    ],
)
def test_policy_table_cell_matches_the_run(cell: PolicyCell) -> None:
    value = policy_value(cell)
    assert matches(cell.value, value), (
        f"{cell.section}: {cell.key} under {cell.policy} is {value!r}, the document says "
        f"{cell.value}"
    )


def test_matches_is_strict() -> None:
    assert matches("10,000", 10_000) and not matches("10,001", 10_000)
    assert matches("0.247", 0.24734) and not matches("0.248", 0.24734)
    assert matches("True", True) and not matches("1", True)
    assert not matches("stuck ", "stuck")


# ------------------------------------------------------------------ F1: the control


def test_empty_lru_race_needs_an_lru_of_at_most_16_pages() -> None:
    """With one more page of limit, the worker's batch leaves a page on /a's LRU: the
    retried fault sees -EBUSY, not -ENOMEM, and the enclave completes."""
    r, p = probed("empty-lru-race", None, ("cgroup.0.max=19pages",))
    e = r.summary["enclaves"]["e"]
    assert e["outcome"] == "success" and e["accesses"] == 2000
    assert r.summary["cgroups"]["/a"]["enomem"] == 0
    assert p.enomem == []


def test_empty_lru_race_every_enomem_saw_an_empty_lru_while_the_worker_ran() -> None:
    p = probed("empty-lru-race")[1]
    assert p.enomem == [(0, 18, True)]


# ------------------------------------------------------------------ F4: the batch


def test_oom_kills_share_one_batch_and_each_victim_was_alive() -> None:
    r, p = probed("oom-batch-kills")
    assert len(p.kills) == 3 and len(set(p.kills)) == 1
    en = r.summary["enclaves"]
    killed = sorted(n for n, e in en.items() if e["exit_status"] == 128 + 9)
    assert killed == ["e#1", "e#2", "e#3"]
