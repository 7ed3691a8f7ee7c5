"""What every trace reader shares: :class:`TraceError`, the :class:`TraceReader` protocol,
the :class:`BaseReader` that implements it over one method (``_chunks``: one pass over
the file as NumPy chunks), format descriptors for the registry, option coercion, and the
byte-address → page helpers.

A reader is a cursor over its file, as libCacheSim's readers are (``read_one_req``,
``reset_reader``, ``clone_reader``), but by chunks: :meth:`BaseReader.read` returns the next
*n* pages, :meth:`BaseReader.reset` rewinds.  Iterating (``for chunk in reader`` or
:meth:`BaseReader.pages`) is always a fresh, complete pass from the first record and does
not move the cursor.
"""

from __future__ import annotations

import gzip
import io
import operator
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TextIO, runtime_checkable

import numpy as np

from ...errors import EpcsimError, EpcsimUsageError

__all__ = [
    "DEFAULT_CHUNK",
    "PAGE_SHIFT",
    "PAGE_SIZE",
    "BaseReader",
    "Option",
    "TraceError",
    "TraceFormat",
    "TraceReader",
]

#: Bytes per page: every address maps to the 4 KiB page of its byte.
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT

#: Pages per chunk when a reader is not told otherwise (2 MiB of int64).
DEFAULT_CHUNK = 1 << 18

#: items the binary readers read at a time in a transient pass (the numbering pass):
#: the reused buffer and its consumer's reads of it stay in the L2 cache (2^18 int64
#: items, 2 MiB, measured 10 % slower for the numbering pass of a 10M-access trace)
TRANSIENT_CHUNK = 1 << 17

#: Characters of text read per chunk of lines by the text-based readers.
TEXT_BATCH = 1 << 20

_EMPTY = np.zeros(0, dtype=np.int64)
_EMPTY.flags.writeable = False


class TraceError(EpcsimError):
    """A trace that cannot be read: missing file, unknown format or option, malformed
    line or record.  ``file`` names the file, ``line`` (text formats, 1-based, counting
    every physical line) or ``record`` (binary formats, 1-based) the place."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path = "",
        line: int | None = None,
        record: int | None = None,
    ) -> None:
        self.file = str(file)
        self.line = line
        self.record = record
        self.message = message
        where = [self.file] if self.file else []
        if line is not None:
            where.append(f"line {line}")
        if record is not None:
            where.append(f"record {record}")
        super().__init__(": ".join([*where, message]))


@runtime_checkable
class TraceReader(Protocol):
    """A page-access trace on disk, read in NumPy chunks (np.int64 page numbers).

    Object traces (libCacheSim formats) give one page per object: the page number is the
    object id (ids of 2**63 and above appear as negative int64, the same 64 bits).
    """

    format_name: str
    path: Path
    #: malformed lines or records skipped (``skip_bad=True``) in the latest pass
    skipped: int

    def __iter__(self) -> Iterator[np.ndarray]:
        """A complete pass from the start, in chunks of the reader's chunk size."""
        ...

    def pages(self, chunk: int | None = None) -> Iterator[np.ndarray]:
        """A complete pass from the start, in chunks of exactly *chunk* pages (the last
        one shorter); does not move the cursor."""
        ...

    def read(self, n: int) -> np.ndarray:
        """The next *n* pages from the cursor (fewer at the end; empty once exhausted)."""
        ...

    def reset(self) -> None:
        """Rewind the cursor to the first access."""
        ...

    def count(self) -> int:
        """Accesses in the trace (may take a pass; cached)."""
        ...

    def clone(self) -> TraceReader:
        """A new reader of the same file with the same options, cursor at the start."""
        ...


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Option:
    """One reader option: name, accepted kind, default and a line of help.

    *kind* is ``bool``, ``int``, ``str``, ``"column"`` (a 1-based column number or a
    header name) or a tuple of allowed strings.  Strings (from the command line) are
    coerced: ``true/false/yes/no/1/0`` for bool, decimal for int.
    """

    name: str
    kind: Any
    default: Any
    help: str

    def coerce(self, fmt: str, value: Any) -> Any:
        def bad(expected: str) -> TraceError:
            return TraceError(f"format {fmt!r}: option {self.name}: {expected}, got {value!r}")

        kind = self.kind
        if value is None and self.default is None:
            return None
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in _BOOLS:
                return _BOOLS[value.lower()]
            raise bad("expected true or false")
        if kind is int or kind == "column":
            is_int = isinstance(value, int | np.integer) and not isinstance(value, bool)
            is_digits = isinstance(value, str) and value.strip().lstrip("+").isdigit()
            if is_int or is_digits:
                v = int(value)
            elif kind == "column" and isinstance(value, str) and value:
                return value
            else:
                raise bad("expected an integer" if kind is int else "expected a column")
            if v <= 0:
                raise bad("must be > 0")
            return v
        if isinstance(kind, tuple):
            if isinstance(value, str) and value in kind:
                return value
            raise bad(f"expected one of {', '.join(kind)}")
        if isinstance(value, str):
            return value
        raise bad("expected a string")


_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}

#: Options every reader takes.
COMMON_OPTIONS = (
    Option("skip_bad", bool, False, "count and skip malformed lines/records (see .skipped)"),
    Option("chunk", int, DEFAULT_CHUNK, "pages per chunk when iterating"),
)


@dataclass(frozen=True)
class TraceFormat:
    """A registered trace format: its reader, optional writer and how to recognise it."""

    name: str
    description: str
    reader: type[BaseReader]
    #: format-specific options (the common ones, skip_bad and chunk, are added)
    options: tuple[Option, ...] = ()
    aliases: tuple[str, ...] = ()
    #: file-name endings that select this format (lower case, with the dot)
    extensions: tuple[str, ...] = ()
    #: ``writer(path, source)`` writes pages (atomically); *source* an iterable of int64
    #: chunks
    writer: Callable[[Path, Iterable[np.ndarray]], int] | None = None
    #: file-name endings an output of the writer may have (as shown in messages;
    #: matched case-insensitively): ``trace convert`` refuses any other
    write_extensions: tuple[str, ...] = ()
    #: the bytes every file of this format starts with (binary formats with a header)
    magic: bytes | None = None
    #: ``sniff_text(lines)``: is this the format, given the first non-blank lines of the
    #: file (newlines stripped, at least one line)
    sniff_text: Callable[[list[str]], bool] | None = None
    all_options: tuple[Option, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "all_options", (*self.options, *COMMON_OPTIONS))

    def parse_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Coerce and check *options*; an unknown key names the format, the key and the
        valid keys (as libCacheSim's ``*_parse_params`` do)."""
        known = {o.name: o for o in self.all_options}
        out: dict[str, Any] = {}
        for key, value in options.items():
            opt = known.get(key)
            if opt is None:
                raise TraceError(
                    f"format {self.name!r}: unknown option {key!r} "
                    f"(valid: {', '.join(sorted(known))})"
                )
            out[key] = opt.coerce(self.name, value)
        return out


# --------------------------------------------------------------------------- files


def check_file(path: str | Path) -> Path:
    """*path* as a Path; TraceError if it is missing or not a regular file."""
    p = Path(path)
    if not p.exists():
        raise TraceError("no such file", file=p)
    if not p.is_file():
        raise TraceError("not a file", file=p)
    return p


#: The first bytes of a zstd frame (RFC 8878), as libCacheSim's ``.zst`` traces start.
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: Compressed bytes read from the file at a time when decompressing zstd.
ZSTD_READ = 1 << 17
#: Compressed bytes decompressed per step (bounds one step's output).
ZSTD_FEED = 1 << 10


def is_zstd(path: Path) -> bool:
    """Whether *path* is zstd-compressed (by its magic bytes, whatever its name)."""
    with open(path, "rb") as f:
        return f.read(4) == ZSTD_MAGIC


class ZstdFile(io.RawIOBase):
    """A zstd-compressed file, decompressed as it is read (streamed: ``ZSTD_READ``
    compressed bytes read at a time, decompressed ``ZSTD_FEED`` at a time, every frame in
    order, as ``zstd -d`` does).  Corrupt data,
    or a file ending inside a frame (a cut download), is a TraceError naming the file:
    a truncated trace is never read as a shorter one."""

    def __init__(self, path: Path) -> None:
        import zstandard

        super().__init__()
        self.path = path
        self._zstd = zstandard
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._in_frame = False
        self._f = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._pending = memoryview(b"")  # compressed bytes read, not yet decompressed
        self._buf = b""
        self._pos = 0
        self._out = 0  # decompressed bytes handed out
        self._eof = False

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._out

    def readinto(self, b: Any) -> int:
        mv = memoryview(b).cast("B")
        while self._pos >= len(self._buf):
            if self._eof:
                return 0
            self._fill()
        n = min(len(mv), len(self._buf) - self._pos)
        mv[:n] = self._buf[self._pos : self._pos + n]
        self._pos += n
        self._out += n
        return n

    def _fill(self) -> None:
        """Decompress input pieces of ``ZSTD_FEED`` bytes until there is output (or the
        end): a piece of at most 1 KiB bounds the output of one step to about 32 MiB even
        for data compressed 30,000 times (a tight loop of pages, run-length blocks)."""
        while True:
            if not self._pending:
                data = self._f.read(ZSTD_READ)
                if not data:
                    if self._in_frame:
                        raise TraceError(
                            "truncated zstd data (the file ends inside a frame)", file=self.path
                        )
                    self._eof = True
                    self._buf, self._pos = b"", 0
                    return
                self._pending = memoryview(data)
            piece = self._pending[:ZSTD_FEED]
            self._pending = self._pending[ZSTD_FEED:]
            self._in_frame = True
            try:
                out = self._obj.decompress(piece)
            except self._zstd.ZstdError as e:
                raise TraceError(f"corrupt zstd data ({e})", file=self.path) from None
            if self._obj.eof:  # a frame ended: the rest of the piece starts the next one
                rest = self._obj.unused_data
                self._obj = self._dctx.decompressobj()
                self._in_frame = False
                if rest:
                    self._pending = memoryview(bytes(rest) + bytes(self._pending))
            if out:
                self._buf, self._pos = out, 0
                return

    def close(self) -> None:
        self._f.close()
        super().close()


def open_binary(path: Path) -> io.RawIOBase | io.BufferedReader:
    """*path* opened for reading bytes, decompressed on the fly when it is zstd (by its
    magic bytes)."""
    if is_zstd(path):
        return ZstdFile(path)
    return open(path, "rb")


def read_items(
    f: Any, dtype: np.dtype, count: int, out: np.ndarray | None = None
) -> tuple[np.ndarray, int]:
    """Up to *count* items of *dtype* from the binary stream *f* (fewer only at its end),
    and the bytes of a partial item after them (non-zero only at the end); read into
    *out* (a buffer of *dtype* and at least *count* items) if given, else a fresh
    array."""
    if out is not None and out.dtype == dtype and out.size >= count:
        a = out[:count]
    else:
        a = np.empty(count, dtype=dtype)
    mv = memoryview(a.view(np.uint8))
    got = 0
    while got < mv.nbytes:
        k = f.readinto(mv[got:])
        if not k:
            break
        got += k
    whole = got // a.itemsize
    return a[:whole], got - whole * a.itemsize


def open_text(path: Path) -> TextIO:
    """*path* opened for reading text (UTF-8, undecodable bytes replaced so they show up
    as a malformed line); gzip- or zstd-compressed files (by their magic) are
    decompressed on the fly."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    if head == ZSTD_MAGIC:
        raw = io.BufferedReader(ZstdFile(path))
        return io.TextIOWrapper(raw, encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def text_batches(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(number of lines before the chunk, lines) of about :data:`TEXT_BATCH` characters;
    a corrupt gzip or zstd stream (a bad header, a bad stream, a cut end) is a TraceError."""
    done = 0
    try:
        with open_text(path) as f:
            while lines := f.readlines(TEXT_BATCH):
                yield done, lines
                done += len(lines)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise TraceError(f"cannot read: {e}", file=path) from None


def show(line: str, limit: int = 60) -> str:
    """A line for an error message: stripped of its newline, repr, shortened."""
    s = line.rstrip("\r\n")
    if len(s) > limit:
        s = s[:limit] + "..."
    return repr(s)


# --------------------------------------------------------------------------- addresses


def expand_extents(start: np.ndarray, size: np.ndarray | None) -> np.ndarray:
    """Pages touched by byte extents [start, start + size) (uint64 arrays, the caller
    checked that no extent passes 2**64), each extent's pages in order; a size of 0 (or no
    sizes) touches the page of the first byte."""
    first = start >> np.uint64(PAGE_SHIFT)
    if size is None:
        return first.view(np.int64)
    last_byte = start + (np.maximum(size, 1).astype(np.uint64) - np.uint64(1))
    n = (last_byte >> np.uint64(PAGE_SHIFT)) - first + np.uint64(1)
    n = n.astype(np.int64)
    if np.all(n == 1):
        return first.view(np.int64)
    total = int(n.sum())
    offsets = np.arange(total, dtype=np.int64)
    offsets -= np.repeat(np.cumsum(n) - n, n)
    out = np.repeat(first.view(np.int64), n)
    out += offsets
    return out


def bad_block_extents(ids: np.ndarray, sizes: np.ndarray | None, block_size: int) -> np.ndarray:
    """Which requests of *ids* (uint64 block numbers) and *sizes* (bytes) reach past
    2**64 bytes at *block_size* bytes per block (a bool mask)."""
    over = ids > np.uint64((2**64 - 1) // block_size)
    if sizes is not None:
        start = ids * np.uint64(block_size)  # wraps where over: masked anyway
        end = start + (np.maximum(sizes, 1).astype(np.uint64) - np.uint64(1))
        over |= end < start
    return over


def block_pages(
    ids: np.ndarray, sizes: np.ndarray | None, block_size: int, bad: Callable[[int, str], None]
) -> np.ndarray:
    """Pages of block-addressed requests (``mapping="address"``), each request's pages in
    order.  A request reaching past 2**64 bytes is reported as ``bad(index, message)``
    (which raises or counts) and dropped."""
    ids = ids.astype(np.uint64, copy=False)
    badm = bad_block_extents(ids, sizes, block_size)
    if badm.any():
        for i in np.flatnonzero(badm).tolist():
            size = "" if sizes is None else f" of {int(sizes[i])} bytes"
            bad(
                i,
                f"request{size} at block {int(ids[i])} (block_size {block_size}) "
                "reaches past 2**64 bytes",
            )
        keep = ~badm
        ids = ids[keep]
        sizes = None if sizes is None else sizes[keep]
    return expand_extents(ids * np.uint64(block_size), sizes)


# --------------------------------------------------------------------------- readers


def _check_n(n: int, what: str) -> int:
    n = operator.index(n)
    if n < 0:
        raise EpcsimUsageError(f"{what} must be >= 0, got {n}")
    return n


def rechunk(chunks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """The pages of *chunks* in chunks of exactly *size* (the last one shorter)."""
    parts: list[np.ndarray] = []
    have = 0
    for c in chunks:
        if c.size == 0:
            continue
        if not parts and c.size == size:
            yield c
            continue
        parts.append(c)
        have += c.size
        if have >= size:
            buf = np.concatenate(parts)
            k = (buf.size // size) * size
            for i in range(0, k, size):
                yield buf[i : i + size]
            parts = [buf[k:]] if k < buf.size else []
            have = buf.size - k
    if have:
        yield np.concatenate(parts)


class BaseReader:
    """The :class:`TraceReader` protocol over one method, :meth:`_chunks` (a pass over the
    file as int64 chunks of any size), which reports a malformed line or record through
    :meth:`_bad`.  Subclasses set ``format_name`` and take their options as keywords."""

    format_name: ClassVar[str] = "?"

    def __init__(
        self, path: str | Path, *, skip_bad: bool = False, chunk: int = DEFAULT_CHUNK
    ) -> None:
        self.path = check_file(path)
        self.skip_bad = bool(skip_bad)
        self.chunk = operator.index(chunk)
        if self.chunk <= 0:
            raise TraceError(f"format {self.format_name!r}: option chunk: must be > 0")
        #: malformed lines or records skipped in the latest pass (``skip_bad=True``)
        self.skipped = 0
        self._options: dict[str, Any] = {"skip_bad": self.skip_bad, "chunk": self.chunk}
        self._count: int | None = None
        self._cursor: Iterator[np.ndarray] | None = None
        self._pending: np.ndarray = _EMPTY
        self._done = False
        #: the buffers chunks are read into during transient_pages() (None: fresh ones)
        self._scratch: dict[str, np.ndarray] | None = None

    # -- what subclasses provide

    def _chunks(self) -> Iterator[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _bad(self, message: str, *, line: int | None = None, record: int | None = None) -> None:
        """A malformed line or record: raise, or count it when skipping."""
        if not self.skip_bad:
            raise TraceError(message, file=self.path, line=line, record=record)
        self.skipped += 1

    # -- the protocol

    def _pass(self) -> Iterator[np.ndarray]:
        self.skipped = 0
        total = 0
        for c in self._chunks():
            total += c.size
            yield c
        self._count = total

    def _read_size(self) -> int:
        """Items a binary reader reads at a time: ``chunk``, at most TRANSIENT_CHUNK
        during a :meth:`transient_pages` pass."""
        return self.chunk if self._scratch is None else min(self.chunk, TRANSIENT_CHUNK)

    def _buffer(self, dtype: np.dtype, count: int) -> np.ndarray | None:
        """The buffer a binary reader reads *count* items of *dtype* into
        (:func:`read_items`): the same one for each chunk of a :meth:`transient_pages`
        pass, else None (a fresh array per chunk)."""
        if self._scratch is None:
            return None
        buf = self._scratch.get(dtype.str)
        if buf is None or buf.size < count:
            buf = self._scratch[dtype.str] = np.empty(count, dtype)
        return buf

    def transient_pages(self) -> Iterator[np.ndarray]:
        """A complete pass from the start, in chunks of any size, for a consumer that
        is done with each chunk before it asks for the next (the numbering pass of
        :class:`~epcsim.workload.traces.TracePattern`): the next chunk may overwrite
        it.  The binary readers read every chunk of the pass into one buffer, without
        fresh memory per chunk (whose first touch cost half of the numbering pass of a
        69 MB trace)."""
        self._scratch = {}
        try:
            yield from self._pass()
        finally:
            self._scratch = None

    def pages(self, chunk: int | None = None) -> Iterator[np.ndarray]:
        size = self.chunk if chunk is None else _check_n(chunk, "chunk")
        if size == 0:
            raise EpcsimUsageError("chunk must be > 0")
        return rechunk(self._pass(), size)

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.pages()

    def read(self, n: int) -> np.ndarray:
        n = _check_n(n, "read: n")
        if self._cursor is None and not self._done:
            self._cursor = self._pass()
        parts = []
        have = 0
        while have < n:
            if self._pending.size == 0:
                if self._cursor is None:
                    break
                nxt = next(self._cursor, None)
                if nxt is None:
                    self._cursor = None
                    self._done = True
                    break
                self._pending = nxt
                continue
            take = self._pending[: n - have]
            self._pending = self._pending[take.size :]
            parts.append(take)
            have += take.size
        if not parts:
            return _EMPTY.copy()
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def reset(self) -> None:
        if self._cursor is not None:
            self._cursor.close()  # type: ignore[attr-defined]
        self._cursor = None
        self._pending = _EMPTY
        self._done = False

    def count(self) -> int:
        if self._count is None:
            total = 0
            for c in self._pass():
                total += c.size
            self._count = total
        return self._count

    def clone(self) -> BaseReader:
        return type(self)(self.path, **self._options)

    @property
    def options(self) -> dict[str, Any]:
        """The options this reader was opened with (defaults filled in)."""
        return dict(self._options)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.format_name} {str(self.path)!r}>"
