"""The working-set curve of ``epcsim trace info --plot`` (matplotlib object API, Agg,
default style, no ``Software`` metadata: the same trace gives a byte-identical PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..._atomic import atomic_path

__all__ = ["plot_working_set"]


def plot_working_set(stats: dict[str, Any], path: str | Path) -> Path:
    """Draw distinct pages per window against accesses (a step per window), with the
    footprint as a dashed line; write PNG to *path* (atomically: a temporary name in
    its folder, renamed when complete)."""
    from matplotlib import style as mpl_style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    wss = np.asarray(stats["wss"], dtype=np.float64)
    window = int(stats["window"])
    accesses = int(stats["accesses"])
    edges = np.minimum(np.arange(wss.size + 1, dtype=np.float64) * window, accesses)
    path = Path(path)
    with mpl_style.context("default"):
        fig = Figure(figsize=(8, 4), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        if wss.size:
            ax.stairs(wss, edges, color="C0", linewidth=1.5, label=f"distinct pages per {window:,}")
        ax.axhline(
            stats["footprint_pages"],
            color="black",
            linestyle="--",
            linewidth=0.8,
            label=f"footprint {stats['footprint_pages']:,} pages",
        )
        ax.set_xlabel("accesses")
        ax.set_ylabel("pages")
        ax.set_ylim(bottom=0)
        ax.set_xlim(0, max(accesses, 1))
        ax.set_title(f"working set of {Path(stats['path']).name} ({stats['format']})")
        ax.legend(loc="best", fontsize="small")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", metadata={"Software": None})
    return path
