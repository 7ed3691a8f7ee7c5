"""``report.html``: one self-contained page per run directory.

No external CSS, JavaScript, fonts or network fetches; figures are PNG files next to the
page, referenced by relative file name.  Nothing in the page depends on the wall clock,
so the same run directory always gives the same bytes.  Every piece of text from the
run (scenario names, cgroup paths, op strings, details) goes through
:func:`html.escape`.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

import numpy as np

from ..costs import COST_SOURCES, CostModel
from ..kernel.constants import PAGE_SIZE
from ..result import Result, engine_text, latency_percentiles
from .figures import FigureInfo, natural_key
from .fmt import fmt_bytes, fmt_ns, fmt_ratio, sig3

__all__ = ["render_html", "fmt_mib", "fmt_ns"]

NOTE = "All times are estimates from epcsim's cost model (docs/COSTS.md); the cost table is below."

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       margin: 2em auto; max-width: 72em; padding: 0 1em; color: #1a1a1a; line-height: 1.4; }
h1 { margin-bottom: 0.2em; }
h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
p.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.5em 0.8em; }
p.verdict { font-size: 1.2em; font-weight: bold; }
div.table { max-width: 100%; overflow-x: auto; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.95em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left;
         vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.mono { overflow-wrap: anywhere; }
td.mono, code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
.pass { color: #0a6b0a; font-weight: bold; }
.fail { color: #b00020; font-weight: bold; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
p.nofig { color: #666; font-style: italic; margin: 0.2em 0; }
figcaption { font-size: 0.9em; color: #444; }
p.empty { color: #666; font-style: italic; }
""".strip()


def _e(x: object) -> str:
    return html.escape(str(x))


def fmt_mib(n: int | float | None) -> str:
    """A size for the tables: ``max`` for ``None``, KiB below 1 MiB, else MiB
    (:func:`epcsim.report.fmt.fmt_bytes`)."""
    return fmt_bytes(n)


def _int(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


def _yes(b: object) -> str:
    return "yes" if b else "no"


class _Cell:
    """A table cell: text (escaped on output) and CSS class."""

    __slots__ = ("text", "cls")

    def __init__(self, text: object, cls: str = "") -> None:
        self.text = str(text)
        self.cls = cls


def _num(text: object) -> _Cell:
    return _Cell(text, "num")


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, cls: str = "") -> str:
    out = ['<div class="table">', f'<table class="{_e(cls)}">' if cls else "<table>", "<thead><tr>"]
    out += [f"<th>{_e(h)}</th>" for h in headers]
    out.append("</tr></thead>\n<tbody>")
    for row in rows:
        cells = []
        for c in row:
            if isinstance(c, _Cell):
                attr = f' class="{_e(c.cls)}"' if c.cls else ""
                text = _e(c.text)
                if c.cls == "mono":
                    # cgroup paths and op strings may break after a slash
                    text = text.replace("/", "/<wbr>")
                cells.append(f"<td{attr}>{text}</td>")
            else:
                cells.append(f"<td>{_e(c)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _facts(table: list[tuple[str, object]]) -> str:
    rows = "\n".join(f'<tr><th scope="row">{_e(k)}</th><td>{_e(v)}</td></tr>' for k, v in table)
    return f'<div class="table"><table class="facts">\n{rows}\n</table></div>'


def _sample_interval_ns(result: Result) -> int | None:
    """The sampling interval: from the summary if it records it, else the most common
    step between the time series' sample times (the last sample may be off the grid)."""
    s = result.summary.get("sample_interval_ns")
    if s is not None:
        return int(s)
    ts = result.timeseries
    if ts.num_rows == 0:
        return None
    t = np.unique(ts.column("time_ns").to_numpy(zero_copy_only=False))
    d = np.diff(t)
    if d.size == 0:
        return None
    vals, counts = np.unique(d, return_counts=True)
    return int(vals[int(np.argmax(counts))])


def _section(title: str, anchor: str, body: str) -> str:
    return f'<section id="{_e(anchor)}">\n<h2>{_e(title)}</h2>\n{body}\n</section>'


def _empty(text: str) -> str:
    return f'<p class="empty">{_e(text)}</p>'


def _run_facts(result: Result) -> str:
    s = result.summary
    cap = s.get("capacity_bytes")
    si = _sample_interval_ns(result)
    si_label = "sample interval" + (
        "" if s.get("sample_interval_ns") is not None else " (from the time series)"
    )
    truncated = s.get("truncated")
    rows: list[tuple[str, object]] = [
        ("scenario", s.get("scenario", "")),
        ("epcsim version", s.get("epcsim_version", "")),
        ("scenario hash", s.get("scenario_hash", "")),
        ("seed", s.get("seed", "")),
        (
            "EPC capacity",
            "—" if cap is None else f"{fmt_mib(cap)} ({cap // PAGE_SIZE:,} pages)",
        ),
        ("misc (EPC cgroup) enabled", _yes(s.get("misc_enabled"))),
        ("simulated time", fmt_ns(s.get("sim_time_ns"))),
        ("virtual-time limit", fmt_ns(s.get("time_limit_ns"))),
        (
            "truncated",
            "yes: the virtual-time limit was reached with work still running"
            if truncated
            else "no",
        ),
        (si_label, fmt_ns(si)),
        ("time-series schema version", s.get("timeseries_schema_version", "")),
        ("expectations", "passed" if result.passed else "FAILED"),
    ]
    if result.run.get("engine"):  # run.json: the engine that ran (no wall time: deterministic)
        rows.append(("engine", engine_text(result.run)))
    return _facts(rows)


def _expectations(result: Result) -> str:
    xs = result.summary.get("expectations") or []
    if not xs:
        return _empty("The scenario states no expectations.")
    rows = [
        (
            _Cell("PASS", "pass") if x.get("passed") else _Cell("FAIL", "fail"),
            x.get("name", ""),
            x.get("detail", ""),
        )
        for x in xs
    ]
    return _table(("result", "name", "detail"), rows)


def _cgroups(result: Result) -> str:
    cgs = result.summary.get("cgroups") or {}
    if not cgs:
        return _empty("No cgroups.")
    rows = [
        (
            _Cell(name, "mono"),
            _num(fmt_mib(c.get("peak_bytes"))),
            _num(fmt_mib(c.get("limit_bytes"))),
            _num(fmt_mib(c.get("usage_bytes"))),
            _num(_int(c.get("max_events"))),
            _num(_int(c.get("faults"))),
            _num(_int(c.get("evictions"))),
            _num(_int(c.get("reclaim_batches"))),
            _num(_int(c.get("enomem"))),
        )
        for name, c in cgs.items()
    ]
    return (
        _table(
            (
                "cgroup",
                "peak",
                "limit (misc.max)",
                "usage at end",
                "max events",
                "faults",
                "evictions",
                "reclaim batches",
                "ENOMEM",
            ),
            rows,
        )
        + "\n<p>Limit and usage are the cgroup's <code>misc.max</code> and "
        "<code>misc.current</code> for <code>sgx_epc</code> at the end of the run; "
        "max events is the <code>sgx_epc.max</code> count in <code>misc.events</code> "
        "(hierarchical).</p>"
    )


def _enclaves(result: Result) -> str:
    encs = result.summary.get("enclaves") or {}
    if not encs:
        return _empty("No enclaves.")
    rows = []
    for name in sorted(encs, key=natural_key):
        e = encs[name]
        outcome = str(e.get("outcome", ""))
        cls = "pass" if outcome == "success" else "fail" if outcome in ("failure", "stuck") else ""
        sd = e.get("slowdown")
        rows.append(
            (
                _Cell(name, "mono"),
                _Cell(e.get("cgroup", ""), "mono"),
                _Cell(outcome, cls),
                _num("—" if e.get("exit_status") is None else e["exit_status"]),
                _num(_int(e.get("accesses"))),
                _num(_int(e.get("faults"))),
                _num(_int(e.get("fault_retries"))),
                _num(_int(e.get("stuck_threads"))),
                _num("—" if sd is None or sd <= 0 else fmt_ratio(sd)),
                e.get("error", "") or "",
            )
        )
    return _table(
        (
            "enclave",
            "cgroup",
            "outcome",
            "exit status",
            "accesses",
            "faults",
            "fault retries",
            "stuck threads",
            "slowdown",
            "error",
        ),
        rows,
    )


def _ops(result: Result) -> str:
    ops = result.summary.get("ops") or []
    if not ops:
        return _empty("No timed operations ran.")
    rows = [
        (
            _num(fmt_ns(o.get("time_ns"))),
            _Cell(o.get("op", ""), "mono"),
            _Cell(o.get("result", ""), "" if o.get("result") == "ok" else "fail"),
        )
        for o in ops
    ]
    return _table(("time", "op", "result"), rows)


def _latency(result: Result) -> str:
    fl = dict(result.summary.get("fault_latency") or {})
    lat = result.fault_latency_ns
    if not fl and len(lat):
        q = latency_percentiles(lat)
        fl = {"count": len(lat), "p50_ns": q[0], "p90_ns": q[1], "p99_ns": q[2], "max_ns": q[3]}
    if not fl:
        # the sentence comes from the same totals as the enclave and cgroup tables
        enclaves = (result.summary.get("enclaves") or {}).values()
        faults = sum(int(e.get("faults") or 0) for e in enclaves)
        if faults:
            return _empty(
                f"{faults:,} faults resolved, none of them timed: only enclave threads' "
                "faults have latency samples (not a kselftest process's or a vEPC's)."
            )
        return _empty("No faults: every access hit a resident page.")
    rows = [
        (_num(_int(fl.get("count"))),)
        + tuple(_num(fmt_ns(fl.get(k))) for k in ("p50_ns", "p90_ns", "p99_ns", "max_ns"))
    ]
    return _table(("faults", "p50", "p90", "p99", "max"), rows)


def _tenants(result: Result) -> str:
    """Per cgroup and per enclave: fault latency p50/p99, miss ratio, accesses per
    second, slowdown and pages reclaimed by whom (summary.json's per-tenant keys)."""
    s = result.summary
    cgs = {k: v for k, v in (s.get("cgroups") or {}).items() if "miss_ratio" in v}
    encs = {k: v for k, v in (s.get("enclaves") or {}).items() if "miss_ratio" in v}
    if not cgs and not encs:
        return _empty(
            "No per-tenant metrics in this run's summary.json (written by an older epcsim)."
        )

    def row(name: str, t: dict) -> tuple:
        lat = t.get("fault_latency_ns") or {}
        miss, aps, sd = t.get("miss_ratio"), t.get("accesses_per_s"), t.get("slowdown")
        pr = t.get("pages_reclaimed") or {}
        return (
            _Cell(name, "mono"),
            _num(_int(lat.get("count", 0))),
            _num(fmt_ns(lat.get("p50")) if lat else "—"),
            _num(fmt_ns(lat.get("p99")) if lat else "—"),
            _num("—" if miss is None else f"{sig3(100 * miss)} %"),
            _num("—" if aps is None else sig3(aps)),
            _num("—" if sd is None or sd <= 0 else fmt_ratio(sd)),
            _num(_int(pr.get("total"))),
            _num(" / ".join(_int(pr.get(k)) for k in ("ksgxd", "async", "sync", "direct"))),
        )

    heads = (
        "timed faults",
        "p50",
        "p99",
        "miss ratio",
        "accesses/s",
        "slowdown",
        "pages reclaimed",
        "ksgxd / async / sync / direct",
    )
    out = []
    if cgs:
        out.append(_table(("cgroup", *heads), [row(k, v) for k, v in cgs.items()]))
    if encs:
        names = sorted(encs, key=natural_key)
        out.append(_table(("enclave", *heads), [row(k, encs[k]) for k in names]))
    out.append(
        "<p>A cgroup's row covers the enclaves whose tasks charge it (its own, not its "
        "subtree's); its pages reclaimed are those taken from its LRU, an enclave's those "
        "of its enclave, split by who reclaimed them (ksgxd, the async worker, the "
        "charge loop, direct reclaim before EDMM ioctls).  Miss ratio = faults / "
        "accesses.</p>"
    )
    return "\n".join(out)


def _figures(figures: Sequence[FigureInfo]) -> str:
    parts = []
    for f in figures:
        if f.note:
            # nothing to draw: a line of text instead of an empty image
            parts.append(
                f'<p class="nofig" data-file="{_e(f.filename)}"><b>{_e(f.title)}:</b> '
                f"no figure, {_e(f.note)}.</p>"
            )
            continue
        parts.append(
            "<figure>\n"
            f'<img src="{_e(f.filename)}" alt="{_e(f.title)}">\n'
            f"<figcaption><b>{_e(f.title)}.</b> {_e(f.caption)}</figcaption>\n"
            "</figure>"
        )
    return "\n".join(parts)


def _encls(result: Result) -> str:
    counts = result.summary.get("encls") or {}
    if not counts:
        return _empty("No ENCLS counts recorded.")
    return _table(("leaf", "count"), [(_Cell(k, "mono"), _num(_int(v))) for k, v in counts.items()])


def _costs(result: Result) -> str:
    costs = result.summary.get("costs_ns") or {}
    if not costs:
        return _empty("No cost table recorded.")
    defaults = CostModel().model_dump()
    rows = []
    for name, v in costs.items():
        src = COST_SOURCES.get(name, "")
        d = defaults.get(name)
        if d is not None and d != v:
            src = f"set by the scenario ([host.costs]; default {fmt_ns(d)})"
        rows.append((_Cell(name, "mono"), _num(fmt_ns(v)), _num(_int(v)), src))
    return (
        _table(("operation", "cost", "ns", "source"), rows)
        + "\n<p>Defaults and their sources: docs/COSTS.md. Override per scenario in "
        "<code>[host.costs]</code>.</p>"
    )


def render_html(result: Result, figures: Sequence[FigureInfo]) -> str:
    """The report page for *result*, referencing *figures* by file name."""
    s = result.summary
    name = s.get("scenario", "scenario")
    xs = s.get("expectations") or []
    npass = sum(1 for x in xs if x.get("passed"))
    if xs:
        verdict = (
            f'<p class="verdict {"pass" if result.passed else "fail"}">'
            f"{'PASS' if result.passed else 'FAIL'}: {npass} of {len(xs)} expectations hold"
            f"{' (run truncated at the time limit)' if s.get('truncated') else ''}</p>"
        )
    else:
        verdict = '<p class="verdict">No expectations stated.</p>'
    sections = [
        _section("Run", "run", _run_facts(result)),
        _section("Expectations", "expectations", _expectations(result)),
        _section("Cgroups", "cgroups", _cgroups(result)),
        _section("Enclaves", "enclaves", _enclaves(result)),
        _section("Timed operations", "ops", _ops(result)),
        _section("Fault latency", "fault-latency", _latency(result)),
        _section("Per-tenant metrics", "tenants", _tenants(result)),
        _section("Figures", "figures", _figures(figures)),
        _section("ENCLS leaves executed", "encls", _encls(result)),
        _section("Cost table", "costs", _costs(result)),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>epcsim report: {_e(name)}</title>\n"
        f"<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
        f"<h1>epcsim report: {_e(name)}</h1>\n"
        f'<p class="note">{_e(NOTE)}</p>\n'
        f"{verdict}\n" + "\n".join(sections) + "\n</body>\n</html>\n"
    )
