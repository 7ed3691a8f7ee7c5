"""NumPy ``.npy`` arrays of page numbers.

A one-dimensional array of any integer dtype (either byte order); ``uint64`` values of
2**63 and above read as negative int64 (the same 64 bits).  The reader parses the header
with :mod:`numpy.lib.format` and streams the data with ``np.fromfile`` (never the whole
array at once); a file shorter than its header says is an error naming the first missing
element (record, 1-based).

The writer streams too: it writes a fixed-size version 1.0 header (room for any length),
the int64 data, then the final shape into the header.
"""

from __future__ import annotations

import ast
import tokenize
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from numpy.lib import format as npformat

from ..._atomic import atomic_open
from ._base import (
    DEFAULT_CHUNK,
    BaseReader,
    TraceError,
    TraceFormat,
    is_zstd,
    open_binary,
    read_items,
)

__all__ = ["FORMAT", "NpyReader", "write_npy"]

MAGIC = b"\x93NUMPY"
#: total header size the writer uses (magic, version, length, dict, padding)
_HEADER = 128


class NpyReader(BaseReader):
    """Reader of ``.npy`` page arrays (see the module docstring)."""

    format_name = "npy"

    def __init__(
        self, path: str | Path, *, skip_bad: bool = False, chunk: int = DEFAULT_CHUNK
    ) -> None:
        super().__init__(path, skip_bad=skip_bad, chunk=chunk)
        #: zstd-compressed (by its magic): streamed, truncation found at the end of a pass
        self.compressed = is_zstd(self.path)
        with open_binary(self.path) as f:
            try:
                version = npformat.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = npformat.read_array_header_1_0(f)
                else:
                    shape, fortran, dtype = npformat.read_array_header_2_0(f)
            except (ValueError, SyntaxError, EOFError) as e:
                raise TraceError(f"not a NumPy .npy file ({e})", file=self.path) from None
            except tokenize.TokenError:  # numpy re-tokenizes a header it cannot parse
                raise TraceError(
                    "not a NumPy .npy file (the header is not a dictionary literal)",
                    file=self.path,
                ) from None
            self.offset = f.tell()
        if len(shape) != 1:
            raise TraceError(
                f"a .npy trace is one-dimensional, this array has shape {shape}", file=self.path
            )
        if dtype.kind not in "iu" or dtype.hasobject:
            raise TraceError(f"a .npy trace holds integers, this one {dtype}", file=self.path)
        self.dtype = dtype
        self.length = int(shape[0])
        if self.compressed:
            self.available = self.length  # at most; a pass finds out
            return
        size = self.path.stat().st_size
        have = (size - self.offset) // dtype.itemsize
        if have < self.length and not skip_bad:
            raise TraceError(
                f"truncated: the header says {self.length} elements, the file holds {have}",
                file=self.path,
                record=have + 1,
            )
        self.available = min(have, self.length)

    def _chunks(self) -> Iterator[np.ndarray]:
        with open_binary(self.path) as f:
            if self.compressed:
                read_items(f, np.dtype(np.uint8), self.offset)  # the header
            else:
                f.seek(self.offset)
            left = self.available
            done = 0
            while left > 0:
                want = min(self._read_size(), left)
                a, _ = read_items(f, self.dtype, want, self._buffer(self.dtype, want))
                if a.size == 0:
                    if self.compressed:
                        break
                    raise TraceError(  # pragma: no cover - the file shrank under us
                        "file shrank while being read", file=self.path
                    )
                left -= a.size
                done += a.size
                # (a fresh array: no copy when it is already native int64)
                if a.dtype.kind == "u" and a.dtype.itemsize == 8:
                    yield a.astype(np.uint64, copy=False).view(np.int64)
                else:
                    yield a.astype(np.int64, copy=False)
        if done < self.length:
            self._bad(f"truncated: the header says {self.length} elements", record=done + 1)

    def count(self) -> int:
        if self.compressed:
            return super().count()
        return self.available


def _header(n: int) -> bytes:
    d = {"descr": "<i8", "fortran_order": False, "shape": (n,)}
    text = repr(d).encode("latin1")
    body = text + b" " * (_HEADER - 10 - len(text) - 1) + b"\n"
    head = MAGIC + b"\x01\x00" + len(body).to_bytes(2, "little") + body
    assert len(head) == _HEADER and ast.literal_eval(text.decode()) == d
    return head


def write_npy(path: Path, source: Iterable[np.ndarray]) -> int:
    """Write the pages of *source* as a one-dimensional int64 ``.npy``; returns the
    count.  Atomic: written under a temporary name, renamed onto *path* when complete."""
    n = 0
    with atomic_open(path, "wb") as f:
        f.write(_header(0))
        for pages in source:
            a = np.asarray(pages, dtype=np.int64).astype("<i8", copy=False)
            a.tofile(f)
            n += a.size
        f.seek(0)
        f.write(_header(n))
    return n


FORMAT = TraceFormat(
    name="npy",
    description="NumPy .npy one-dimensional integer array of page numbers",
    reader=NpyReader,
    extensions=(".npy",),
    writer=write_npy,
    write_extensions=(".npy",),
    magic=MAGIC,
)
