"""libCacheSim-style CSV traces (libCacheSim ``traceReader/generalReader/csv.c``).

One request per line, fields split on *delimiter* (no quoting, as libCacheSim's reader).
The columns are given as libCacheSim's ``-t "obj-id-col=5, obj-size-col=4,
has-header=true, delimiter=,"`` gives them:

- ``obj_id_col``: the object id's column, 1-based as in libCacheSim, or a header name.
  Not given: the first header column named ``obj_id``, ``obj-id``, ``id``, ``key`` or
  ``lbn`` (case-insensitive).
- ``obj_size_col``: the size's column (bytes), used only by ``mapping="address"``.  Not
  given: a header column named ``obj_size``, ``obj-size``, ``size`` or ``bytes``, if any;
  without one every request touches one page.
- ``has_header``: not given, the first line is a header when its id field is not a number
  (or ``obj_id_col`` is a name, or a field of the first line is one of the names above).
- ``delimiter``: one character, ``,`` by default.
- ``obj_id_is_num``: ids are non-negative integers (< 2**64); false: any string, numbered
  in first-seen order.
- ``mapping``: ``object`` (one page per id) or ``address`` (the id is a block number:
  the request touches the pages of bytes ``[id * block_size, id * block_size + size)``,
  in order; ``block_size`` defaults to 512, a disk sector).

Other columns (time, op) are ignored.  Blank lines are skipped; a line without the
column, or with an id or size that is not a non-negative integer, is malformed.  Files
compressed with gzip are read transparently.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
from pyarrow import csv as pa_csv

from ._base import (
    DEFAULT_CHUNK,
    BaseReader,
    Option,
    TraceError,
    TraceFormat,
    block_pages,
    open_text,
    show,
    text_batches,
)

__all__ = ["FORMAT", "CsvReader"]

MAPPINGS = ("object", "address")
ID_NAMES = ("obj_id", "obj-id", "id", "key", "lbn")
SIZE_NAMES = ("obj_size", "obj-size", "size", "bytes")


def _find(names: list[str], candidates: tuple[str, ...]) -> int | None:
    low = [n.strip().lower() for n in names]
    for c in candidates:
        if c in low:
            return low.index(c)
    return None


class CsvReader(BaseReader):
    """Reader of libCacheSim-style CSV traces (see the module docstring)."""

    format_name = "csv"

    def __init__(
        self,
        path: str | Path,
        *,
        obj_id_col: int | str | None = None,
        obj_size_col: int | str | None = None,
        has_header: bool | None = None,
        delimiter: str = ",",
        obj_id_is_num: bool = True,
        mapping: str = "object",
        block_size: int = 512,
        skip_bad: bool = False,
        chunk: int = DEFAULT_CHUNK,
    ) -> None:
        super().__init__(path, skip_bad=skip_bad, chunk=chunk)
        if len(delimiter) != 1:
            raise TraceError(f"format 'csv': option delimiter: one character, got {delimiter!r}")
        if mapping not in MAPPINGS:
            raise TraceError(f"format 'csv': option mapping: one of {', '.join(MAPPINGS)}")
        if mapping == "address" and not obj_id_is_num:
            raise TraceError("format 'csv': mapping=address needs numeric ids (obj_id_is_num)")
        if int(block_size) <= 0:
            raise TraceError("format 'csv': option block_size: must be > 0")
        self.delimiter = delimiter
        self.obj_id_is_num = bool(obj_id_is_num)
        self.mapping = mapping
        self.block_size = int(block_size)
        self._options.update(
            obj_id_col=obj_id_col,
            obj_size_col=obj_size_col,
            has_header=has_header,
            delimiter=delimiter,
            obj_id_is_num=self.obj_id_is_num,
            mapping=mapping,
            block_size=self.block_size,
        )
        with open_text(self.path) as f:
            try:
                first = f.readline()
            except (OSError, EOFError, zlib.error) as e:
                raise TraceError(f"cannot read: {e}", file=self.path) from None
        fields = first.rstrip("\r\n").split(delimiter)
        if has_header is None:
            if isinstance(obj_id_col, str) or _find(fields, ID_NAMES + SIZE_NAMES) is not None:
                has_header = True
            elif self.obj_id_is_num and first.strip():
                col = obj_id_col if isinstance(obj_id_col, int) else 1
                try:
                    int(fields[col - 1])
                    has_header = False
                except (ValueError, IndexError):
                    has_header = True
            else:
                has_header = False
        self.has_header = bool(has_header)
        self.header = [x.strip() for x in fields] if self.has_header else None
        self.id_col = self._column("obj_id_col", obj_id_col, ID_NAMES, required=True)
        self.size_col = None
        if mapping == "address":
            self.size_col = self._column("obj_size_col", obj_size_col, SIZE_NAMES)

    def _column(
        self, option: str, value: int | str | None, names: tuple[str, ...], *, required=False
    ) -> int | None:
        """0-based column index of *option*."""
        header = self.header
        if isinstance(value, int) and not isinstance(value, bool):
            if value <= 0:
                raise TraceError(f"format 'csv': option {option}: must be >= 1, got {value}")
            return value - 1
        if isinstance(value, str):
            if value.isdigit():
                return self._column(option, int(value), names, required=required)
            if header is None:
                raise TraceError(
                    f"option {option}: column {value!r} named, but the file has no header",
                    file=self.path,
                )
            idx = _find(header, (value.lower(),))
            if idx is None:
                raise TraceError(
                    f"option {option}: no column {value!r} in the header ({', '.join(header)})",
                    file=self.path,
                    line=1,
                )
            return idx
        idx = _find(header, names) if header is not None else None
        if idx is None and required:
            raise TraceError(
                f"option {option} not given and no header column named {' or '.join(names)}",
                file=self.path,
            )
        return idx

    # -- parsing

    def _chunks(self) -> Iterator[np.ndarray]:
        names: dict[str, int] = {}  # string ids, numbered per pass in first-seen order
        for done, lines in text_batches(self.path):
            first_line = done + 1
            if done == 0 and self.has_header:
                lines = lines[1:]
                first_line += 1
            if not lines:
                continue
            yield self._parse(lines, first_line, names)

    def _parse(self, lines: list[str], first_line: int, names: dict[str, int]) -> np.ndarray:
        fast = self._parse_arrow(lines) if self.obj_id_is_num else self._parse_strings(lines, names)
        if fast is None:
            ids, sizes, lines_of = self._parse_slowly(lines, first_line, names)
        else:
            (ids, sizes), lines_of = fast, None
        if self.mapping == "object":
            return ids.view(np.int64)

        def bad(i: int, message: str) -> None:
            self._bad(message, line=first_line + i if lines_of is None else int(lines_of[i]))

        return block_pages(ids, sizes, self.block_size, bad)

    def _parse_arrow(self, lines: list[str]) -> tuple[np.ndarray, np.ndarray | None] | None:
        """Fast path for numeric ids: pyarrow's CSV parser on the chunk; None when any
        line is not a regular row of integers (the slow path then finds which)."""
        ic, sc = self.id_col, self.size_col
        assert ic is not None
        cols = [f"f{ic}"] + ([] if sc is None else [f"f{sc}"])
        try:
            table = pa_csv.read_csv(
                io.BytesIO("".join(lines).encode("utf-8", "surrogateescape")),
                read_options=pa_csv.ReadOptions(autogenerate_column_names=True, use_threads=False),
                parse_options=pa_csv.ParseOptions(
                    delimiter=self.delimiter, quote_char=False, ignore_empty_lines=False
                ),
                convert_options=pa_csv.ConvertOptions(
                    include_columns=cols, column_types={c: pa.uint64() for c in cols}
                ),
            )
        except (pa.ArrowException, ValueError):
            return None
        if table.num_rows != len(lines) or any(table.column(c).null_count for c in cols):
            return None
        ids = table.column(cols[0]).to_numpy()
        sizes = None if sc is None else table.column(cols[1]).to_numpy()
        return ids, sizes

    def _parse_strings(
        self, lines: list[str], names: dict[str, int]
    ) -> tuple[np.ndarray, np.ndarray | None] | None:
        """Fast path for string ids: None when a line lacks the column or its id."""
        d, ic = self.delimiter, self.id_col
        assert ic is not None
        try:
            keys = [ln.rstrip("\r\n").split(d)[ic].strip() for ln in lines]
        except IndexError:
            return None
        if not all(keys):
            return None
        return np.array([names.setdefault(k, len(names)) for k in keys], dtype=np.uint64), None

    def _parse_slowly(
        self, lines: list[str], first_line: int, names: dict[str, int]
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Line by line, naming the first malformed one (or skipping the malformed)."""
        d, ic, sc = self.delimiter, self.id_col, self.size_col
        assert ic is not None
        ids: list[int] = []
        sizes: list[int] = []
        where: list[int] = []
        for k, ln in enumerate(lines):
            lineno = first_line + k
            if not ln.strip():
                continue
            row = ln.rstrip("\r\n").split(d)
            need = max(ic, -1 if sc is None else sc)
            if need >= len(row):
                which = "obj_id_col" if ic >= len(row) else "obj_size_col"
                col = ic if ic >= len(row) else sc
                assert col is not None
                n = len(row)
                self._bad(
                    f"missing column {col + 1} ({which}; the line has {n} "
                    f"field{'' if n == 1 else 's'}): {show(ln)}",
                    line=lineno,
                )
                continue
            if self.obj_id_is_num:
                v = _uint(row[ic])
                if v is None:
                    self._bad(
                        f"bad object id {show(row[ic].strip())} in column {ic + 1} "
                        "(expected an integer in [0, 2**64))",
                        line=lineno,
                    )
                    continue
            else:
                key = row[ic].strip()
                if not key:
                    self._bad(f"empty object id in column {ic + 1}", line=lineno)
                    continue
                v = names.setdefault(key, len(names))
            s = 0
            if sc is not None:
                s_ = _uint(row[sc])
                if s_ is None:
                    self._bad(
                        f"bad size {show(row[sc].strip())} in column {sc + 1} "
                        "(expected an integer in [0, 2**64))",
                        line=lineno,
                    )
                    continue
                s = s_
            ids.append(v)
            sizes.append(s)
            where.append(lineno)
        return (
            np.array(ids, dtype=np.uint64),
            None if sc is None else np.array(sizes, dtype=np.uint64),
            np.array(where, dtype=np.int64),
        )


def _uint(text: str) -> int | None:
    try:
        v = int(text)
    except ValueError:
        return None
    return v if 0 <= v < 2**64 else None


FORMAT = TraceFormat(
    name="csv",
    description="libCacheSim-style CSV (columns by option; one object = one page)",
    reader=CsvReader,
    options=(
        Option("obj_id_col", "column", None, "object id column: 1-based number or header name"),
        Option("obj_size_col", "column", None, "size column (bytes), for mapping=address"),
        Option("has_header", bool, None, "first line is a header (default: detected)"),
        Option("delimiter", str, ",", "field delimiter (one character)"),
        Option("obj_id_is_num", bool, True, "ids are integers (false: strings)"),
        Option("mapping", MAPPINGS, "object", "object: one page per id; address: id = block"),
        Option("block_size", int, 512, "bytes per block (mapping=address)"),
    ),
    extensions=(".csv", ".csv.gz"),
)
