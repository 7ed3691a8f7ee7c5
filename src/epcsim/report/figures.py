"""The report's figures, drawn with matplotlib's object API (no pyplot global state).

Each figure is a :class:`matplotlib.figure.Figure` saved as PNG by the Agg renderer with
matplotlib's default style (whatever the user's ``matplotlibrc`` says) and without the
``Software`` metadata, so the same run gives byte-identical PNGs.  A PNG is written
atomically (:mod:`epcsim._atomic`).  A figure with nothing to draw is not written: its
:class:`FigureInfo` carries a ``note`` saying why, which the page shows instead.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from matplotlib import style as mpl_style
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter

from .._atomic import atomic_path
from ..kernel.constants import PAGE_SIZE
from ..result import Result, cgroup_rows
from .fmt import KIB, MIB, fmt_ns, fmt_ratio

__all__ = ["FigureInfo", "write_figures", "natural_key", "MIB"]

_DPI = 100
#: PNG metadata: no "Software" (matplotlib version); Agg writes no creation time
_PNG_METADATA = {"Software": None}
#: at most this many legend entries per legend column
_LEGEND_ROWS = 20


@dataclass(frozen=True)
class FigureInfo:
    """A figure of the report: written into the run directory as *filename*, or, when
    there is nothing to draw, not written and *note* says why."""

    filename: str
    title: str
    caption: str
    note: str = ""


def natural_key(s: str) -> tuple:
    """Sort key that orders ``kv#2`` before ``kv#10``."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", s))


def _series(ts: pa.Table) -> dict[str, dict[str, np.ndarray]]:
    """Columns of the time series split by cgroup, in order of first appearance (its
    cgroup rows only)."""
    ts = cgroup_rows(ts)
    names = ts.column("cgroup").to_pylist()
    cols = {
        c: ts.column(c).cast(pa.float64()).to_numpy(zero_copy_only=False)
        for c in ("time_ns", "usage_bytes", "limit_bytes", "faults", "evictions")
        if c in ts.column_names
    }
    idx: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        idx.setdefault(n, []).append(i)
    times = np.unique(cols["time_ns"])
    out: dict[str, dict[str, np.ndarray]] = {}
    for n, rows in idx.items():
        r = np.asarray(rows, np.int64)
        d = {c: v[r] for c, v in cols.items()}
        order = np.argsort(d["time_ns"], kind="stable")
        d = {c: v[order] for c, v in d.items()}
        # a name missing from some samples (a cgroup removed, later a new one with the
        # same path) gets a NaN row in the gap, so lines and rates do not bridge it
        pos = np.searchsorted(times, d["time_ns"])
        gaps = np.flatnonzero(np.diff(pos) > 1) + 1
        if gaps.size:
            t = d["time_ns"]
            mid = (t[gaps - 1] + t[gaps]) / 2
            d = {c: np.insert(v, gaps, mid if c == "time_ns" else np.nan) for c, v in d.items()}
        out[n] = d
    return out


def _colors(names: list[str]) -> dict[str, str]:
    cycle = [f"C{i}" for i in range(10)]
    return {n: cycle[i % len(cycle)] for i, n in enumerate(names)}


def _legend(fig: Figure, handles: list, labels: list[str]) -> None:
    if not handles:
        return
    if max(len(lb) for lb in labels) > 24:
        # long cgroup paths: below the plot, so the axes keep their width
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            fontsize="small",
            ncols=2 if len(handles) > 1 else 1,
        )
    else:
        fig.legend(
            handles,
            labels,
            loc="outside right upper",
            fontsize="small",
            ncols=1 + (len(handles) - 1) // _LEGEND_ROWS,
        )


def _size_tick(v: float, _pos: object = None) -> str:
    """Axis label of a size in bytes (``0``, ``4 KiB``, ``64 MiB``, ``1 GiB``)."""
    if v <= 0:
        return "0"
    for unit, name in ((1 << 30, "GiB"), (MIB, "MiB"), (KIB, "KiB")):
        if v >= unit:
            return f"{v / unit:g} {name}"
    return f"{v:g} B"


def _usage(series: dict[str, dict[str, np.ndarray]]) -> Figure | str:
    if not series:
        return "the time series has no samples"
    fig = Figure(figsize=(9, 4.5), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    colors = _colors(list(series))
    handles, labels = [], []
    any_limit = False
    for name, s in series.items():
        t = s["time_ns"] / 1e9
        # the root (total usage) is drawn wide and pale so a child with the same
        # usage stays visible on top of it
        root = name == "/"
        (h,) = ax.plot(
            t,
            s["usage_bytes"],
            color=colors[name],
            linewidth=3.0 if root else 1.2,
            alpha=0.45 if root else 1.0,
        )
        handles.append(h)
        labels.append(name)
        lim = s["limit_bytes"]
        if not np.all(np.isnan(lim)):
            any_limit = True
            ax.plot(
                t,
                lim,
                color=colors[name],
                linestyle="--",
                linewidth=1.0,
                drawstyle="steps-post",
            )
    if any_limit:
        handles.append(Line2D([], [], color="black", linestyle="--", linewidth=1.0))
        labels.append("limit (misc.max)")
    ax.set_xlabel("virtual time (s)")
    # cgroups of a few pages (the selftests' 192 KiB) beside ones of the whole EPC:
    # logarithmic above one page, linear from 0 to one page
    ax.set_yscale("symlog", linthresh=PAGE_SIZE, linscale=0.5, base=4)
    ax.yaxis.set_major_formatter(FuncFormatter(_size_tick))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("EPC usage (log scale above 4 KiB)")
    ax.set_title("EPC usage and limit per cgroup")
    # at least a few pages tall, so a cgroup that never used any EPC still gets an axis
    ax.set_ylim(0, max(ax.get_ylim()[1], 4 * PAGE_SIZE))
    ax.grid(True, alpha=0.3)
    _legend(fig, handles, labels)
    return fig


def _rate(s: dict[str, np.ndarray], col: str) -> np.ndarray:
    """Events per second of virtual time over each interval between samples; NaN where
    the counter goes backwards (a cgroup path reused by a new cgroup)."""
    dt = np.diff(s["time_ns"])
    dv = np.diff(s[col])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((dt > 0) & (dv >= 0), dv / (dt / 1e9), np.nan)


def _changes(v: np.ndarray) -> bool:
    return bool(np.nanmax(v) > np.nanmin(v))


def _rates(series: dict[str, dict[str, np.ndarray]]) -> Figure | str:
    shown = {
        n: s
        for n, s in series.items()
        if len(s["time_ns"]) >= 2 and (_changes(s["faults"]) or _changes(s["evictions"]))
    }
    if not shown:
        return "no cgroup had a fault or an eviction between two samples"
    fig = Figure(figsize=(9, 6), dpi=_DPI, layout="constrained")
    colors = _colors(list(series))
    ax_f, ax_e = fig.subplots(2, 1, sharex=True)
    handles, labels = [], []
    for name, s in shown.items():
        edges = s["time_ns"] / 1e9
        for ax, col in ((ax_f, "faults"), (ax_e, "evictions")):
            ax.stairs(_rate(s, col), edges, baseline=None, color=colors[name], linewidth=1.0)
        handles.append(Line2D([], [], color=colors[name], linewidth=1.0))
        labels.append(name)
    ax_f.set_ylabel("faults / s")
    ax_f.set_title("Fault and eviction rates per cgroup (per sample interval)")
    ax_e.set_ylabel("evictions / s")
    ax_e.set_xlabel("virtual time (s)")
    for ax in (ax_f, ax_e):
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    _legend(fig, handles, labels)
    return fig


def _fmt_g(v: float, _pos: object = None) -> str:
    return f"{v:g}"


def _latency(lat_ns: np.ndarray, faults: int = 0) -> Figure | str:
    lat = np.asarray(lat_ns, dtype=np.float64)
    if lat.size == 0:
        # the same totals as the enclave table: faults without latency samples
        # (a kselftest process's, a vEPC's) are not "no faults"
        if faults:
            return f"no timed fault ({faults:,} faults resolved, none by an enclave thread)"
        return "no enclave fault was resolved"
    fig = Figure(figsize=(9, 4.5), dpi=_DPI, layout="constrained")
    us = np.maximum(lat, 1.0) / 1e3  # a latency below 1 ns is drawn at 1 ns
    lo, hi = np.log10(us.min()), np.log10(us.max())
    if hi - lo < 0.1:
        lo, hi = lo - 0.05, hi + 0.05
    nbins = int(min(60, max(10, np.ceil((hi - lo) * 20))))
    bins = np.logspace(lo, hi, nbins + 1)
    ax = fig.add_subplot()
    ax.hist(us, bins=bins, color="C0", edgecolor="white", linewidth=0.3, log=True)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(_fmt_g))
    # less than about a decade: label the minor ticks too, or the axis has no numbers
    ax.xaxis.set_minor_formatter(FuncFormatter(_fmt_g) if hi - lo < 1.2 else NullFormatter())
    ax.tick_params(axis="x", which="minor", labelsize="small")
    p50, p99 = np.percentile(us, [50, 99])
    ax.axvline(p50, color="C1", linestyle="--", linewidth=1.0, label=f"p50 {fmt_ns(p50 * 1e3)}")
    ax.axvline(p99, color="C3", linestyle=":", linewidth=1.2, label=f"p99 {fmt_ns(p99 * 1e3)}")
    ax.set_xlabel("fault latency (µs, log scale)")
    ax.set_ylabel("faults (log scale)")
    ax.set_title(f"Fault latency ({lat.size:,} resolved faults, retries included)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    return fig


#: a slowdown axis is logarithmic when its largest bar is this many times its smallest
_SLOWDOWN_LOG_RATIO = 10.0


def _slowdown(enclaves: dict[str, dict]) -> Figure | str:
    vals = [
        (n, float(e["slowdown"]))
        for n, e in sorted(enclaves.items(), key=lambda kv: natural_key(kv[0]))
        # None: no accesses; 0: nothing timed (a vEPC owner has no enclave threads)
        if e.get("slowdown") is not None and e["slowdown"] > 0
    ]
    if not vals:
        return "no enclave ran timed accesses, so none has a slowdown"
    width = min(30.0, max(6.0, 0.35 * len(vals) + 2.0))
    fig = Figure(figsize=(width, 4.5), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(vals))
    ys = np.array([v for _, v in vals])
    lo, hi = float(ys.min()), float(ys.max())
    log = hi / lo >= _SLOWDOWN_LOG_RATIO
    bottom = min(1.0, lo) / 1.5 if log else 0.0
    bars = ax.bar(x, ys - bottom, bottom=bottom, color="C0")
    many = len(vals) > 12
    ax.bar_label(
        bars,
        labels=[fmt_ratio(v) for v in ys],
        padding=2,
        fontsize="x-small" if many else "small",
        rotation=90 if many else 0,
    )
    ax.set_xlim(-0.6, max(len(vals), 4) - 0.4)
    ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
    ax.set_xticks(x, [n for n, _ in vals], rotation=45 if len(vals) > 6 else 0, ha="right")
    if len(vals) <= 6:
        for lbl in ax.get_xticklabels():
            lbl.set_horizontalalignment("center")
    if log:
        ax.set_yscale("log")
        # room above the tallest bar for its label
        ax.set_ylim(bottom, hi * (4.0 if many else 2.0))
        ax.yaxis.set_major_formatter(FuncFormatter(_fmt_g))
        ax.set_ylabel("slowdown (×, log scale; 1 = no overhead)")
    else:
        ax.set_ylim(0, hi * (1.35 if many else 1.15))
        ax.set_ylabel("slowdown (×, 1 = no overhead)")
    ax.set_title("Per-enclave slowdown: run time / (accesses × access cost)")
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def _save(fig: Figure, path: Path) -> None:
    """Write *fig* as PNG to *path* atomically: complete, or the previous file untouched."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI, metadata=_PNG_METADATA)


def write_figures(result: Result, run_dir: Path) -> list[FigureInfo]:
    """Draw the report's figures into *run_dir*; return them in display order."""
    run_dir = Path(run_dir)
    series = _series(result.timeseries)
    specs = [
        (
            FigureInfo(
                "usage.png",
                "EPC usage vs limit",
                "EPC usage per cgroup (solid) and its misc.max limit (dashed, where not max), "
                "sampled every sample interval of virtual time; the size axis is logarithmic "
                "above one page (4 KiB), so small cgroups show beside large ones.",
            ),
            lambda: _usage(series),
        ),
        (
            FigureInfo(
                "rates.png",
                "Fault and eviction rates",
                "Enclave faults and EPC page evictions per second of virtual time, per cgroup, "
                "over each sample interval (cgroups without any are omitted).",
            ),
            lambda: _rates(series),
        ),
        (
            FigureInfo(
                "fault_latency.png",
                "Fault latency distribution",
                "Latency of every resolved enclave fault (log-spaced bins), retries included.",
            ),
            lambda: _latency(
                result.fault_latency_ns,
                sum(int(e.get("faults") or 0) for e in result.summary.get("enclaves", {}).values()),
            ),
        ),
        (
            FigureInfo(
                "slowdown.png",
                "Per-enclave slowdown",
                "Run time of each enclave divided by the time its accesses would take with "
                "every page resident, written above each bar (dashed line: 1, no overhead; "
                "a logarithmic axis when the largest is 10× the smallest or more).",
            ),
            lambda: _slowdown(result.summary.get("enclaves", {})),
        ),
    ]
    out = []
    with mpl_style.context("default"):
        for info, draw in specs:
            fig = draw()
            if isinstance(fig, str):
                # nothing to draw: no image, and none left from an earlier report of
                # this directory to contradict the page
                (run_dir / info.filename).unlink(missing_ok=True)
                out.append(dataclasses.replace(info, note=fig))
            else:
                _save(fig, run_dir / info.filename)
                out.append(info)
    return out
