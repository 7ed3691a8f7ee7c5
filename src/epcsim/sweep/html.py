"""PLACEHOLDER (the sweep helper's; the HTML helper's module replaces it at merge):
``_meta/sweep.html``, offline, the axes and the number of rows only."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

__all__ = ["render_sweep_html"]


def render_sweep_html(table: pa.Table, axes: Sequence[Any], tenant_col: str = "cgroup") -> str:
    """A minimal page: each axis with its values, the number of rows and points."""
    points = len(set(table.column("point").to_pylist())) if "point" in table.column_names else 0
    items = "".join(
        f"<li>{html.escape(a.key)}: {html.escape(', '.join(a.values))}</li>" for a in axes
    )
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>epcsim sweep</title>"
        f"</head><body>\n<h1>epcsim sweep</h1>\n<ul>{items}</ul>\n"
        f"<p>{points} points, {table.num_rows} rows (one per {html.escape(tenant_col)} and "
        "per enclave).</p>\n</body></html>\n"
    )
