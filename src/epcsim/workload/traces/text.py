"""Plain text traces: one page number (or byte address) per line.

Each line holds one non-negative integer, decimal or ``0x`` hex (``0X`` too), with
optional spaces or tabs around it; blank lines are skipped.  Option ``unit``: ``page``
(default; the number is the page) or ``address`` (a byte address: its page is
``address >> 12``).  Values must be below 2**64; page numbers of 2**63 and above read as
negative int64 (the same 64 bits), as object ids of the binary formats do.  Files
compressed with gzip are read transparently.

The writer prints one decimal page number per line (pages that were negative int64 as
their unsigned 64-bit value, so they read back the same).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
from pyarrow import csv as pa_csv

from ..._atomic import atomic_open
from ._base import (
    DEFAULT_CHUNK,
    PAGE_SHIFT,
    BaseReader,
    Option,
    TraceError,
    TraceFormat,
    show,
    text_batches,
)

__all__ = ["FORMAT", "TextReader", "write_text"]

UNITS = ("page", "address")
_NUMBER = r"0[xX][0-9a-fA-F]+|[0-9]+"
_LINE = rf"[ \t]*(?:{_NUMBER})?[ \t]*"
_NUMBER_RE = re.compile(_NUMBER)


def _value(token: str) -> int:
    return int(token, 16) if token[1:2] in ("x", "X") else int(token)


def _parse_decimal(lines: list[str]) -> np.ndarray | None:
    """Fast path: a chunk of plain decimal lines, parsed by pyarrow's CSV reader as one
    uint64 column; None for anything else (hex, blanks, spaces, bad lines), which the
    line-by-line path then reads or reports."""
    try:
        table = pa_csv.read_csv(
            io.BytesIO("".join(lines).encode("utf-8", "surrogateescape")),
            read_options=pa_csv.ReadOptions(column_names=["v"], use_threads=False),
            parse_options=pa_csv.ParseOptions(quote_char=False, ignore_empty_lines=False),
            convert_options=pa_csv.ConvertOptions(column_types={"v": pa.uint64()}),
        )
    except (pa.ArrowException, ValueError):
        return None
    col = table.column("v")
    if table.num_rows != len(lines) or col.null_count:
        return None
    return col.to_numpy().astype(np.uint64, copy=True)


class TextReader(BaseReader):
    """Reader of plain text traces (see the module docstring)."""

    format_name = "text"

    def __init__(
        self,
        path: str | Path,
        *,
        unit: str = "page",
        skip_bad: bool = False,
        chunk: int = DEFAULT_CHUNK,
    ) -> None:
        super().__init__(path, skip_bad=skip_bad, chunk=chunk)
        if unit not in UNITS:
            raise TraceError(f"format 'text': option unit: one of {', '.join(UNITS)}, got {unit!r}")
        self.unit = unit
        self._options.update(unit=unit)

    def _chunks(self) -> Iterator[np.ndarray]:
        for done, lines in text_batches(self.path):
            values = _parse_decimal(lines)
            if values is None:
                values = self._parse_slowly(lines, done + 1)
            if self.unit == "address":
                values >>= np.uint64(PAGE_SHIFT)
            yield values.view(np.int64)

    def _parse_slowly(self, lines: list[str], first_line: int) -> np.ndarray:
        what = "page number" if self.unit == "page" else "address"
        out = []
        for k, ln in enumerate(lines):
            token = ln.strip()
            if not token:
                continue
            if not _NUMBER_RE.fullmatch(token):
                self._bad(
                    f"bad {what} {show(token)} (expected a decimal or 0x hex integer)",
                    line=first_line + k,
                )
                continue
            v = _value(token)
            if v >= 2**64:
                self._bad(f"{what} {show(token)} out of range (2**64 or more)", line=first_line + k)
                continue
            out.append(v)
        return np.array(out, dtype=np.uint64)


def write_text(path: Path, source: Iterable[np.ndarray]) -> int:
    """Write the pages of *source*, one decimal page number per line; returns the count.
    Atomic: written under a temporary name, renamed onto *path* when complete."""
    n = 0
    with atomic_open(path, "w", encoding="ascii", newline="\n") as f:
        for pages in source:
            pages = np.asarray(pages, dtype=np.int64)
            if pages.size:
                f.write("\n".join(map(str, pages.view(np.uint64).tolist())))
                f.write("\n")
            n += pages.size
    return n


FORMAT = TraceFormat(
    name="text",
    description="plain text, one page number or address per line (decimal or 0x hex)",
    reader=TextReader,
    options=(Option("unit", UNITS, "page", "page: numbers are pages; address: byte addresses"),),
    aliases=("txt", "plain"),
    extensions=(".txt", ".txt.gz"),
    writer=write_text,
    write_extensions=(".txt",),
    sniff_text=lambda lines: bool(re.fullmatch(_LINE, lines[0])),
)
