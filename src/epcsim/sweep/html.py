"""``DIR/_meta/sweep.html``: one offline page for a sweep.

Offline: inline CSS, every figure an inline PNG (``data:image/png;base64``) drawn by
matplotlib's Agg renderer, no script, font or network fetch.  Nothing depends on the
wall clock or the host (``wall_s`` and ``hostname`` are not shown), so the same rows give
the same bytes.

What it shows, for each tenant (a cgroup that holds enclaves: its cgroup row) and each
of three metrics — slowdown, p99 fault latency, miss ratio:

- one swept key: the metric against the key's values, the mean over the seeds, the
  seeds' minimum and maximum as a bar;
- two swept keys: a heat map per tenant, the first key across, the second up, each cell
  the mean over the seeds (one colour scale per metric, shared by the tenants);
- three or more: one figure per key, each value of the key the mean over the seeds
  *and over every combination of the other keys' values* (a marginal mean), bars from
  the smallest to the largest of those; the page says so.

With more than :data:`MAX_DRAWN_TENANTS` tenants the figures draw the tenants' median
(a line with a band from the smallest to the largest tenant; one heat map), and the
tables still list every tenant.  A key's values are in the grid's order.  Rows whose
``outcome`` is ``"error"`` and missing values (a tenant whose enclaves never faulted has
no p99) are left out of the means, and the page counts the points that failed.  Each
figure has the table of the numbers it draws under it.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._atomic import atomic_write_text
from ..report.fmt import fmt_ns, sig3
from ..units import format_size, format_time, parse_time

__all__ = ["METRICS", "render_sweep_html", "tenants", "value_label", "write_sweep_html"]


@dataclass(frozen=True)
class Metric:
    column: str
    title: str
    #: figure axis / colour bar label
    label: str
    #: a value as the tables show it
    fmt: Any
    #: a value as the figures plot it
    scale: float = 1.0


METRICS: tuple[Metric, ...] = (
    Metric("slowdown", "slowdown", "slowdown (×)", lambda v: f"{sig3(v)}×"),
    Metric(
        "p99_fault_latency_ns",
        "p99 fault latency",
        "p99 fault latency (µs)",
        fmt_ns,
        1e-3,
    ),
    Metric("miss_ratio", "miss ratio", "miss ratio (faults / accesses)", sig3),
)

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       margin: 2em auto; max-width: 72em; padding: 0 1em; color: #1a1a1a; line-height: 1.4; }
h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
p.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.5em 0.8em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th { background: #f2f2f2; }
td.l, th.l { text-align: left; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
""".strip()

#: PNG metadata: no "Software" (the matplotlib version); Agg writes no time
_PNG_METADATA = {"Software": None}
_DPI = 90
#: heat-map cells are annotated with their value up to this many cells
_ANNOTATE_MAX_CELLS = 64
#: tenants drawn one by one up to this many; more: the figures draw the tenants' median
MAX_DRAWN_TENANTS = 12
#: heat-map panels per figure row
_HEAT_COLUMNS = 4


def _e(x: object) -> str:
    return html.escape(str(x))


def value_label(value: str, kind: str | None = None) -> str:
    """A swept value as the page shows it.  By the key's kind (``epcsim.sweep.grid``): a
    size in binary units (``67108864`` -> ``64MiB``), a time in its unit when exact
    (``1000000`` -> ``1ms``, ``4096`` -> ``4096ns``).  Without a kind, a whole number of
    4 KiB pages is taken for a size (the grid writes sizes as bytes); anything else is
    shown as written."""
    try:
        n = int(value)
    except ValueError:
        return value
    if kind == "time":
        text = format_time(n)
        return text if parse_time(text) == n else f"{n}ns"  # exact, or in ns
    if kind == "size" or (kind is None and n >= 4096 and n % 4096 == 0):
        return format_size(n)
    return value


def tenants(rows: Sequence[Mapping[str, Any]], tenant_col: str = "cgroup") -> list[str]:
    """The tenants: the cgroups that hold enclaves (a cgroup row, ``enclave`` None, whose
    path is some enclave row's *tenant_col*), sorted."""
    holding = {r.get(tenant_col) for r in rows if r.get("enclave") is not None}
    return sorted(
        {
            r[tenant_col]
            for r in rows
            if r.get("enclave") is None
            and r.get(tenant_col) is not None
            and r.get(tenant_col) in holding
        }
    )


def _match(v: Any) -> tuple[str, Any]:
    """A grid value as rows and axes are compared: the column's typed value (``1048576``,
    ``0.5``, ``True``, None for a size's ``max``) and the ``--set`` string (``"1048576"``,
    ``"0.5"``, ``"true"``, ``"max"``) give the same key."""
    if v is None or v == "max":
        return ("max", None)
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, int | float):
        return ("num", float(v))
    text = str(v)
    if text in ("true", "false"):
        return ("bool", text == "true")
    try:
        return ("num", float(text))
    except ValueError:
        return ("str", text)


@dataclass(frozen=True)
class _Axis:
    key: str
    #: (label shown, match key), in the grid's order
    values: tuple[tuple[str, tuple[str, Any]], ...]


def _axis(a: Any, rows: Sequence[Mapping[str, Any]]) -> _Axis:
    """An ``epcsim.sweep.grid.Axis`` (``key``, ``values``) or a (key, values or None) pair;
    None: the values in the order the rows first show them."""
    key, values = (a.key, a.values) if hasattr(a, "key") else a
    kind = getattr(a, "kind", None)
    if values is None:
        seen: dict[tuple[str, Any], str] = {}
        for r in rows:
            v = r.get(key)
            seen.setdefault(_match(v), "max" if v is None else str(v))
        return _Axis(key, tuple((value_label(t, kind), m) for m, t in seen.items()))
    return _Axis(key, tuple((value_label(str(v), kind), _match(v)) for v in values))


def _number(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


@dataclass(frozen=True)
class _Cell:
    mean: float | None
    lo: float | None
    hi: float | None
    n: int


def _median(sorted_values: list[float]) -> float:
    n = len(sorted_values)
    mid = n // 2
    return sorted_values[mid] if n % 2 else (sorted_values[mid - 1] + sorted_values[mid]) / 2


def _cell(values: list[float]) -> _Cell:
    if not values:
        return _Cell(None, None, None, 0)
    values = sorted(values)  # the same mean whatever order the dataset gives the rows
    return _Cell(math.fsum(values) / len(values), values[0], values[-1], len(values))


def _aggregate(
    rows: Sequence[Mapping[str, Any]],
    tenant: str,
    metric: str,
    keys: Sequence[str],
    tenant_col: str = "cgroup",
) -> dict[tuple[Any, ...], _Cell]:
    """Mean / min / max of *metric* for *tenant* per combination of *keys*' values, over
    every other column (seeds, other keys)."""
    groups: dict[tuple[Any, ...], list[float]] = {}
    for r in rows:
        if r.get("enclave") is not None or r.get(tenant_col) != tenant:
            continue
        if r.get("outcome") == "error":
            continue
        at = tuple(_match(r.get(k)) for k in keys)
        v = _number(r.get(metric))
        groups.setdefault(at, [])
        if v is not None:
            groups[at].append(v)
    return {at: _cell(vs) for at, vs in groups.items()}


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, metadata=_PNG_METADATA)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _new_figure(width: float, height: float, **kw: Any) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), **kw)


def _line_figure(
    rows: Sequence[Mapping[str, Any]], axis: _Axis, names: Sequence[str], tenant_col: str
) -> tuple[str, list[list[str]]]:
    """Three panels (the metrics) against *axis*; a line per tenant. Returns the PNG and
    the table rows (tenant, value, then mean [min – max] per metric)."""
    fig = _new_figure(4.0 * len(METRICS), 3.4)
    labels = [label for label, _ in axis.values]
    cells = {
        (t, m.column): _aggregate(rows, t, m.column, [axis.key], tenant_col)
        for t in names
        for m in METRICS
    }
    many = len(names) > MAX_DRAWN_TENANTS
    for k, m in enumerate(METRICS):
        ax = fig.add_subplot(1, len(METRICS), k + 1)
        if many:
            xs, mid, lo, hi = [], [], [], []
            for i, (_, at) in enumerate(axis.values):
                means = [c.mean for t in names if (c := cells[(t, m.column)].get((at,)))]
                vals = sorted(v * m.scale for v in means if v is not None)
                if vals:
                    xs.append(i)
                    mid.append(_median(vals))
                    lo.append(vals[0])
                    hi.append(vals[-1])
            label = f"median of {len(names)} tenants"
            ax.plot(xs, mid, marker="o", label=label)
            ax.fill_between(xs, lo, hi, alpha=0.25, label="smallest to largest tenant")
        for t in [] if many else names:
            agg = cells[(t, m.column)]
            xs, ys, lo, hi = [], [], [], []
            for i, (_, at) in enumerate(axis.values):
                c = agg.get((at,))
                if c is None or c.mean is None:
                    continue
                xs.append(i)
                ys.append(c.mean * m.scale)
                lo.append((c.mean - c.lo) * m.scale)
                hi.append((c.hi - c.mean) * m.scale)
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=t)
        ax.set_xticks(range(len(labels)), labels, rotation=45 if len(labels) > 4 else 0, fontsize=8)
        ax.set_xlabel(axis.key, fontsize=9)
        ax.set_title(m.label, fontsize=9)
        ax.grid(True, alpha=0.3)
        if k == 0 and names:
            ax.legend(fontsize=8)
    fig.tight_layout()
    table = []
    for t in names:
        for label, at in axis.values:
            row = [t, label]
            for m in METRICS:
                row.append(_fmt_cell(cells[(t, m.column)].get((at,)), m))
            table.append(row)
    return _png(fig), table


def _heat_figure(
    rows: Sequence[Mapping[str, Any]],
    axes: Sequence[_Axis],
    names: Sequence[str],
    m: Metric,
    tenant_col: str,
) -> tuple[str, list[list[str]]]:
    """A heat map per tenant of *m*: ``axes[0]`` across, ``axes[1]`` up."""
    import numpy as np

    xa, ya = axes
    grids = []
    for t in names:
        agg = _aggregate(rows, t, m.column, [xa.key, ya.key], tenant_col)
        g = np.full((len(ya.values), len(xa.values)), np.nan)
        for i, (_, y) in enumerate(ya.values):
            for j, (_, x) in enumerate(xa.values):
                c = agg.get((x, y))
                if c is not None and c.mean is not None:
                    g[i, j] = c.mean * m.scale
        grids.append((t, g, agg))
    drawn = [(t, g) for t, g, _ in grids]
    if len(names) > MAX_DRAWN_TENANTS:
        stack = np.stack([g for _, g in drawn])
        med = np.full(stack.shape[1:], np.nan)
        for i, j in np.ndindex(med.shape):
            vals = sorted(float(v) for v in stack[:, i, j] if np.isfinite(v))
            if vals:
                med[i, j] = _median(vals)
        drawn = [(f"median of {len(names)} tenants", med)]
    cols = max(1, min(len(drawn), _HEAT_COLUMNS))
    nrows = max(1, -(-len(drawn) // cols))
    fig = _new_figure(1.2 + 3.6 * cols, 0.4 + 3.2 * nrows, layout="constrained")
    finite = [g[np.isfinite(g)] for _, g in drawn]
    allv = np.concatenate(finite) if finite else np.array([])
    vmin, vmax = (float(allv.min()), float(allv.max())) if allv.size else (0.0, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    image = None
    panels = []
    for k, (t, g) in enumerate(drawn):
        ax = fig.add_subplot(nrows, cols, k + 1)
        panels.append(ax)
        image = ax.imshow(
            np.ma.masked_invalid(g), origin="lower", aspect="auto", vmin=vmin, vmax=vmax
        )
        ax.set_xticks(range(len(xa.values)), [lb for lb, _ in xa.values], fontsize=7, rotation=45)
        ax.set_yticks(range(len(ya.values)), [lb for lb, _ in ya.values], fontsize=7)
        ax.set_xlabel(xa.key, fontsize=8)
        if k % cols == 0:
            ax.set_ylabel(ya.key, fontsize=8)
        ax.set_title(t, fontsize=9)
        if g.size <= _ANNOTATE_MAX_CELLS:
            for i in range(g.shape[0]):
                for j in range(g.shape[1]):
                    if np.isfinite(g[i, j]):
                        dark = (g[i, j] - vmin) / (vmax - vmin) < 0.5  # viridis' dark half
                        ax.text(
                            j,
                            i,
                            sig3(float(g[i, j])),
                            ha="center",
                            va="center",
                            fontsize=7,
                            color="white" if dark else "black",
                        )
    if image is not None:
        fig.colorbar(image, ax=panels, label=m.label)
    table = []
    for t, _, agg in grids:
        for ylabel, y in ya.values:
            for xlabel, x in xa.values:
                table.append([t, xlabel, ylabel, _fmt_cell(agg.get((x, y)), m)])
    return _png(fig), table


def _fmt_cell(c: _Cell | None, m: Metric) -> str:
    if c is None or c.mean is None:
        return "—"
    if c.n == 1 or c.lo == c.hi:
        return m.fmt(c.mean)
    return f"{m.fmt(c.mean)} [{m.fmt(c.lo)} – {m.fmt(c.hi)}]"


def _table(head: Sequence[str], body: Sequence[Sequence[str]], left: int) -> str:
    def row(cells: Sequence[str], tag: str) -> str:
        return (
            "<tr>"
            + "".join(
                f"<{tag}{' class=l' if i < left else ''}>{_e(c)}</{tag}>"
                for i, c in enumerate(cells)
            )
            + "</tr>\n"
        )

    return "<table>\n" + row(head, "th") + "".join(row(r, "td") for r in body) + "</table>\n"


def _figure(png: str, alt: str) -> str:
    return f"<figure><img alt='{_e(alt)}' src='data:image/png;base64,{png}'></figure>\n"


def _rows(table: Any) -> list[Mapping[str, Any]]:
    if hasattr(table, "to_pylist"):  # a pyarrow Table (the dataset)
        return list(table.to_pylist())
    return list(table)


def render_sweep_html(
    table: Any,
    axes: Sequence[Any],
    tenant_col: str = "cgroup",
    *,
    title: str = "epcsim sweep",
    facts: Sequence[tuple[str, str]] = (),
) -> str:
    """The page for a sweep's rows.

    Args:
        table: the dataset (a ``pyarrow.Table``, or its rows as dicts): one row per cgroup
            and per enclave of each point, a column per swept key, ``seed``, ``outcome``
            (``"error"``: a failed point), ``point`` (its key) where there is one.
        axes: the swept keys in the grid's order: ``epcsim.sweep.grid.Axis`` objects
            (``key``, ``values``: the ``--set`` strings) or (key, values or None) pairs
            (None: the values in the order the rows first show them).
        tenant_col: the column naming a row's cgroup.
        title: the page's heading (e.g. the scenario's name).
        facts: (label, text) lines shown under the heading (scenario hash, ...).
    """
    rows = _rows(table)
    axs = [_axis(a, rows) for a in axes]
    keys = [a.key for a in axs]
    names = tenants(rows, tenant_col)
    seeds = sorted({int(r["seed"]) for r in rows if r.get("seed") is not None})

    def point(r: Mapping[str, Any]) -> Any:
        if r.get("point") is not None:
            return r["point"]
        return (tuple(_match(r.get(k)) for k in keys), r.get("seed"))

    points = {point(r) for r in rows}
    failed = {point(r) for r in rows if r.get("outcome") == "error"}
    parts = [
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>",
        f"<title>{_e(title)}</title><style>\n{_CSS}\n</style></head><body>\n",
        f"<h1>{_e(title)}</h1>\n<ul>\n",
    ]
    lines = [
        *facts,
        ("swept", ", ".join(f"{a.key} ({len(a.values)} values)" for a in axs) or "—"),
        ("seeds", ", ".join(str(s) for s in seeds) or "—"),
        ("points", f"{len(points)}, of which {len(failed)} failed (left out)"),
        ("tenants", ", ".join(names) or "— (no cgroup holds an enclave)"),
    ]
    parts += [f"<li>{_e(label)}: {_e(text)}</li>\n" for label, text in lines]
    parts.append("</ul>\n")
    if len(keys) >= 3:
        note = (
            "Three or more keys are swept: each figure shows one key, each of its values "
            "the mean over the seeds and over every combination of the other keys' "
            "values (a marginal mean); the bars and the brackets in the tables run from "
            "the smallest to the largest of the values averaged."
        )
    elif len(keys) == 2:
        note = (
            "Two keys are swept: a heat map per tenant and metric, the first key across, "
            "the second up, each cell the mean over the seeds (the tables add the seeds' "
            "smallest and largest in brackets); one colour scale per metric; a blank cell "
            "has no value (e.g. no timed fault: no p99)."
        )
    else:
        note = (
            "Each point is the mean over the seeds; the bars and the brackets in the table "
            "run from the smallest to the largest seed's value."
        )
    if len(names) > MAX_DRAWN_TENANTS:
        note += (
            f" With {len(names)} tenants (more than {MAX_DRAWN_TENANTS}) the figures draw "
            "the tenants' median (lines: with a band from the smallest to the largest "
            "tenant); the tables list every tenant."
        )
    parts.append(
        f"<p class='note'>{_e(note)} Tenants are the cgroups that hold enclaves. Times are "
        "virtual (epcsim's cost model). Slowdown: the longest thread's run time over its "
        "accesses at the cost of a hit, a cgroup's being its enclaves' largest "
        "(docs/OUTPUTS.md).</p>\n"
    )
    metric_head = [m.title for m in METRICS]
    if not keys:
        parts.append("<p>No key is swept: only the seed varies.</p>\n")
        body = []
        for t in names:
            body.append(
                [
                    t,
                    *(
                        _fmt_cell(_aggregate(rows, t, m.column, [], tenant_col).get(()), m)
                        for m in METRICS
                    ),
                ]
            )
        parts.append(_table(["tenant", *metric_head], body, 1))
    elif len(keys) == 2 and names:
        for m in METRICS:
            png, body = _heat_figure(rows, axs, names, m, tenant_col)
            parts.append(f"<h2>{_e(m.title)}</h2>\n")
            parts.append(_figure(png, f"{m.title} per tenant against {keys[0]} and {keys[1]}"))
            parts.append(_table(["tenant", keys[0], keys[1], m.title], body, 1))
    elif names:
        for a in axs:
            png, body = _line_figure(rows, a, names, tenant_col)
            parts.append(f"<h2>{_e(a.key)}</h2>\n")
            parts.append(
                _figure(png, f"slowdown, p99 fault latency and miss ratio against {a.key}")
            )
            parts.append(_table(["tenant", a.key, *metric_head], body, 1))
    parts.append("</body></html>\n")
    return "".join(parts)


def write_sweep_html(
    path: str | os.PathLike[str],
    table: Any,
    axes: Sequence[Any],
    tenant_col: str = "cgroup",
    *,
    title: str = "epcsim sweep",
    facts: Sequence[tuple[str, str]] = (),
) -> None:
    """Write :func:`render_sweep_html`'s page to *path* (``DIR/_meta/sweep.html``),
    atomically."""
    page = render_sweep_html(table, axes, tenant_col, title=title, facts=facts)
    atomic_write_text(path, page)
