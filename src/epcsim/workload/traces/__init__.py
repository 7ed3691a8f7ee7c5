"""Page-access traces: read (streaming), convert, analyse, and run as a workload.

Every format is one module with a reader meeting the :class:`TraceReader` protocol (as
libCacheSim's readers sit behind one API) and a :class:`TraceFormat` descriptor; the
list :data:`FORMATS` below is the registry (a new format is one module and one entry).

========================  ====================================================
``oracleGeneral``         libCacheSim binary, 24-byte records (:mod:`.oracle`)
``csv``                   libCacheSim-style CSV, columns by option (:mod:`.csv`)
``lackey``                valgrind ``--tool=lackey --trace-mem=yes`` (:mod:`.lackey`)
``text``                  one page or address per line (:mod:`.text`)
``npy``                   NumPy ``.npy`` array of pages (:mod:`.npy`)
``native``                epcsim's compact format (:mod:`.native`)
========================  ====================================================

A reader yields np.int64 page numbers (4 KiB pages) in chunks and never holds the whole
trace in memory; zstd-compressed files (libCacheSim's ``.zst``, recognised by the zstd
magic) are decompressed as they are read, for every format.  Writers write atomically
(a temporary name, renamed when complete) and refuse the file they read.  Object
traces (libCacheSim) give one page per object id (sizes ignored) unless
``mapping="address"``.  :class:`DenseMapper` renumbers pages densely in
first-seen order; :class:`TracePattern` runs a trace as an enclave's workload;
:func:`trace_stats` computes ``epcsim trace info``'s numbers.  See ``docs/TRACES.md``.

Errors: :class:`TraceError` (an :class:`~epcsim.errors.EpcsimError`) names the file and
the line or record; ``skip_bad=True`` counts malformed lines/records in ``.skipped``
instead.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..._atomic import same_file
from . import csv, lackey, native, npy, oracle, text
from ._base import (
    DEFAULT_CHUNK,
    PAGE_SIZE,
    Option,
    TraceError,
    TraceFormat,
    TraceReader,
    check_file,
    is_zstd,
    open_binary,
    open_text,
    read_items,
)
from ._mapping import DenseMapper, TracePattern, check_trace
from ._stats import auto_window, stack_distances, trace_stats

__all__ = [
    # reading
    "TraceReader",
    "open_trace",
    "detect_format",
    # the registry
    "FORMATS",
    "TraceFormat",
    "Option",
    "get_format",
    # writing
    "write_trace",
    "convert_trace",
    "format_for_output",
    # using
    "DenseMapper",
    "TracePattern",
    "check_trace",
    "trace_stats",
    "stack_distances",
    "auto_window",
    # errors and constants
    "TraceError",
    "PAGE_SIZE",
    "DEFAULT_CHUNK",
]

#: The registered formats, by canonical name (the registry).
FORMATS: dict[str, TraceFormat] = {
    f.name: f
    for f in (
        oracle.FORMAT,
        csv.FORMAT,
        lackey.FORMAT,
        text.FORMAT,
        npy.FORMAT,
        native.FORMAT,
    )
}

_BY_NAME: dict[str, TraceFormat] = {}
for _f in FORMATS.values():
    for _name in (_f.name, *_f.aliases):
        _BY_NAME[_name.lower()] = _f


def get_format(name: str) -> TraceFormat:
    """The format called *name* or one of its aliases (case-insensitive)."""
    fmt = _BY_NAME.get(str(name).lower())
    if fmt is None:
        raise TraceError(f"unknown trace format {name!r} (one of {', '.join(FORMATS)})")
    return fmt


#: extensions that may hold more than one text format: sniffed instead
_AMBIGUOUS = (".txt", ".txt.gz")


def _first_lines(path: Path, n: int = 8) -> list[str]:
    """The first *n* non-blank lines within the first 64 KiB (a binary file without
    newlines is not read to its end)."""
    try:
        with open_text(path) as f:
            head = f.read(1 << 16)
    except (OSError, EOFError, UnicodeError, zlib.error):  # a corrupt gzip stream
        return []
    lines = head.splitlines()
    if len(head) == 1 << 16 and lines:
        lines.pop()  # may be cut
    return [ln for ln in lines if ln.strip()][:n]


def detect_format(path: str | Path) -> TraceFormat:
    """The format of *path*: by magic bytes (native, npy), then by name (the formats'
    extensions, longest first: ``x.oracleGeneral.bin``, ``.csv``, ``.npy``...), then by
    sniffing the first text lines (lackey's ``==`` header or access lines, or a number
    per line); a ``.txt`` file that fits neither is ``text``.  TraceError when none
    fits.  A zstd-compressed file (by its magic ``28 b5 2f fd``) is looked at
    decompressed, its name without ``.zst``."""
    p = check_file(path)
    compressed = is_zstd(p)
    with open_binary(p) as f:
        head = read_items(f, np.dtype(np.uint8), 16)[0].tobytes()
    for fmt in FORMATS.values():
        if fmt.magic is not None and head.startswith(fmt.magic):
            return fmt
    name = p.name.lower()
    if compressed and name.endswith(".zst"):
        name = name[: -len(".zst")]
    by_ext = sorted(
        ((ext, fmt) for fmt in FORMATS.values() for ext in fmt.extensions),
        key=lambda x: -len(x[0]),
    )
    for ext, fmt in by_ext:
        if name.endswith(ext) and ext not in _AMBIGUOUS:
            return fmt
    if "oraclegeneral" in name:
        return FORMATS["oracleGeneral"]
    lines = _first_lines(p)
    if lines:
        for fmt in FORMATS.values():
            if fmt.sniff_text is not None and fmt.sniff_text(lines):
                return fmt
    if name.endswith(_AMBIGUOUS):
        return FORMATS["text"]  # its reader names the first line that is not a number
    raise TraceError(f"cannot tell the trace format (give one of {', '.join(FORMATS)})", file=p)


def open_trace(path: str | Path, *, format: str | None = None, **options: Any) -> TraceReader:
    """Open the trace at *path* for streaming.

    Args:
        path: the trace file.
        format: a name from :data:`FORMATS` (or an alias); None detects it
            (:func:`detect_format`).
        options: the format's options (see each module, or ``FORMATS[name].options``)
            and the common ``skip_bad`` (count and skip malformed lines/records instead
            of raising) and ``chunk`` (pages per chunk when iterating).  Strings are
            coerced (``"true"``, ``"5"``), as given on the command line.

    Raises:
        TraceError: missing file, unknown format or option, a bad option value, or a
            malformed header (malformed lines and records raise while reading).
    """
    p = check_file(path)
    fmt = detect_format(p) if format is None else get_format(format)
    opts = fmt.parse_options(options)
    return fmt.reader(p, **opts)


def _check_not_input(source: object, path: str | Path) -> None:
    """TraceError when *path* is the file *source* reads (same path, hard link or
    symlink): writing a trace onto its own input is refused before anything is written."""
    inp = getattr(source, "path", None)
    if inp is None:
        inp = getattr(getattr(source, "reader", None), "path", None)
    if inp is not None and same_file(inp, path):
        raise TraceError(
            f"is the input trace {inp} (the same file); write to another file", file=path
        )


def write_trace(
    source: Iterable[np.ndarray] | np.ndarray, path: str | Path, *, format: str = "native"
) -> int:
    """Write the pages of *source* (a reader, an iterable of int64 chunks, or one array)
    to *path* in *format* (one with a writer: native, npy, text, oracleGeneral); returns
    the number of pages written.

    The file is written under a temporary name in *path*'s folder and renamed onto
    *path* when complete: an error or an interrupt (Ctrl-C) leaves any previous *path*
    untouched and no partial file.  Writing onto the file a reader reads is refused
    (TraceError) before anything is written."""
    fmt = get_format(format)
    if fmt.writer is None:
        raise TraceError(f"cannot write format {fmt.name!r} (writable: {_writable()})")
    _check_not_input(source, path)
    if isinstance(source, np.ndarray):
        source = [np.asarray(source, dtype=np.int64)]
    try:
        return fmt.writer(Path(path), source)
    except OSError as e:
        raise TraceError(f"cannot write: {e.strerror or e}", file=path) from None


class _DenseSource:
    """A reader's pages densely renumbered; re-iterable (each pass renumbers the same)."""

    def __init__(self, reader: TraceReader) -> None:
        self.reader = reader

    def __iter__(self):
        mapper = DenseMapper()
        for chunk in self.reader.pages():
            yield mapper.map(chunk)


def convert_trace(reader: TraceReader, out: str | Path, *, to: str, dense: bool = False) -> int:
    """Write *reader*'s pages to *out* in format *to*; with *dense*, renumbered by
    :class:`DenseMapper` first.  Returns the number of pages written.  Atomic, and
    refused when *out* is the reader's file (see :func:`write_trace`)."""
    _check_not_input(reader, out)
    source: Iterable[np.ndarray] = _DenseSource(reader) if dense else reader
    return write_trace(source, out, format=to)


def _writable() -> str:
    return ", ".join(f.name for f in FORMATS.values() if f.writer is not None)


def _write_extensions(fmts: Iterable[TraceFormat]) -> str:
    return "; ".join(f"{f.name} {' '.join(f.write_extensions)}" for f in fmts)


def format_for_output(path: str | Path, to: str | None = None) -> str:
    """The writable format of an output file *path*: the one whose extension it has
    (``.epct`` native, ``.npy``, ``.txt`` text, ``.oracleGeneral.bin``/``.bin``
    oracleGeneral).  With *to*, that format, and *path* must have one of its extensions.
    A name with no writable format's extension (``out.csv``, ``out.dat``) is a
    TraceError naming the extensions that work: nothing writes one format under
    another's name."""
    name = Path(path).name.lower()
    writable = [f for f in FORMATS.values() if f.writer is not None]
    if to is not None:
        fmt = get_format(to)
        if fmt.writer is None:
            raise TraceError(f"cannot write format {fmt.name!r} (writable: {_writable()})")
        if any(name.endswith(e.lower()) for e in fmt.write_extensions):
            return fmt.name
        raise TraceError(
            f"a {fmt.name} trace is written to a name ending {' or '.join(fmt.write_extensions)}",
            file=path,
        )
    for fmt in writable:
        if any(name.endswith(e.lower()) for e in fmt.write_extensions):
            return fmt.name
    raise TraceError(
        f"no writable trace format has this extension (use {_write_extensions(writable)})",
        file=path,
    )
