"""The report of a run directory: PNG figures and a self-contained ``report.html``.

``write_report(run_dir)`` reads what :meth:`epcsim.sim.Result.write` wrote
(``summary.json``, ``timeseries.parquet``, ``fault_latency.npy``), draws
``usage.png``, ``rates.png``, ``fault_latency.png`` and ``slowdown.png`` and writes
``report.html`` next to them.  The output depends only on the run directory (no wall
clock, no matplotlib version or user style), so it is byte-identical when rebuilt.
See ``docs/OUTPUTS.md``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..sim.result import Result
from .figures import write_figures
from .html import render_html

__all__ = ["write_report"]


def write_report(run_dir: str | os.PathLike) -> Path:
    """Write the figures and ``report.html`` into *run_dir*; return the HTML path."""
    d = Path(run_dir)
    result = Result.read(d)
    figures = write_figures(result, d)
    out = d / "report.html"
    out.write_text(render_html(result, figures), encoding="utf-8", newline="\n")
    return out
