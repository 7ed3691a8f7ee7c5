"""epcsim's native trace format, for fast re-reading (``epcsim trace convert``).

A 24-byte little-endian header, then the page numbers::

    char[8] magic = "EPCTRACE"; uint16 version = 1; uint8 itemsize (4 or 8);
    uint8 flags = 0; uint32 reserved = 0; uint64 count
    count x uint32 or uint64 page numbers (little-endian)

The writer uses ``uint32`` when every page is in [0, 2**32) (half the size), else
``uint64`` (int64 page numbers stored as their 64 bits, so negative object ids round
trip).  To choose it takes two passes over a re-iterable source (a reader or a list);
given a one-shot iterator it writes ``uint64`` in one pass.  A file whose size does not
match the header's count is an error naming the first missing record (1-based).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

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

__all__ = ["FORMAT", "MAGIC", "NativeReader", "write_native"]

MAGIC = b"EPCTRACE"
VERSION = 1
_HEAD = struct.Struct("<8sHBBIQ")
HEADER_SIZE = _HEAD.size
assert HEADER_SIZE == 24


class NativeReader(BaseReader):
    """Reader of epcsim native traces (see the module docstring)."""

    format_name = "native"

    def __init__(
        self, path: str | Path, *, skip_bad: bool = False, chunk: int = DEFAULT_CHUNK
    ) -> None:
        super().__init__(path, skip_bad=skip_bad, chunk=chunk)
        #: zstd-compressed (by its magic): streamed, truncation found at the end of a pass
        self.compressed = is_zstd(self.path)
        with open_binary(self.path) as f:
            head = _read_exactly(f, HEADER_SIZE)
        if len(head) < HEADER_SIZE or not head.startswith(MAGIC):
            raise TraceError("not an epcsim native trace (no EPCTRACE header)", file=self.path)
        _, version, itemsize, _flags, _, count = _HEAD.unpack(head)
        if version != VERSION:
            raise TraceError(
                f"native trace version {version} (this epcsim reads version {VERSION})",
                file=self.path,
            )
        if itemsize not in (4, 8):
            raise TraceError(f"native trace item size {itemsize} (4 or 8)", file=self.path)
        self.dtype = np.dtype("<u4" if itemsize == 4 else "<u8")
        self.length = count
        if self.compressed:
            self.available = count  # at most; a pass finds out
            return
        have = (self.path.stat().st_size - HEADER_SIZE) // itemsize
        if have < count and not skip_bad:
            raise TraceError(
                f"truncated: the header says {count} pages, the file holds {have}",
                file=self.path,
                record=have + 1,
            )
        self.available = min(have, count)

    def _chunks(self) -> Iterator[np.ndarray]:
        with open_binary(self.path) as f:
            _read_exactly(f, HEADER_SIZE)
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
                if self.dtype.itemsize == 4:
                    yield a.astype(np.int64)
                else:
                    yield a.astype(np.uint64, copy=False).view(np.int64)
        if done < self.length:
            self._bad(f"truncated: the header says {self.length} pages", record=done + 1)

    def count(self) -> int:
        if self.compressed:
            return super().count()
        return self.available


def _read_exactly(f: Any, n: int) -> bytes:
    """*n* bytes from *f* (fewer only at its end)."""
    parts = []
    while n > 0 and (b := f.read(n)):
        parts.append(b)
        n -= len(b)
    return b"".join(parts)


def write_native(path: Path, source: Iterable[np.ndarray]) -> int:
    """Write the pages of *source* in the native format; returns the count.  Atomic: the
    file is written under a temporary name and renamed onto *path* when complete."""
    one_shot = isinstance(source, Iterator)
    itemsize = 8
    if not one_shot:
        lo, hi = 0, 0
        for pages in source:
            pages = np.asarray(pages, dtype=np.int64)
            if pages.size:
                lo, hi = min(lo, int(pages.min())), max(hi, int(pages.max()))
        itemsize = 4 if lo >= 0 and hi < 2**32 else 8
    dtype = "<u4" if itemsize == 4 else "<u8"
    n = 0
    with atomic_open(path, "wb") as f:
        f.write(_HEAD.pack(MAGIC, VERSION, itemsize, 0, 0, 0))
        for pages in source:
            pages = np.asarray(pages, dtype=np.int64)
            pages.view(np.uint64).astype(dtype).tofile(f)
            n += pages.size
        f.seek(0)
        f.write(_HEAD.pack(MAGIC, VERSION, itemsize, 0, 0, n))
    return n


FORMAT = TraceFormat(
    name="native",
    description="epcsim native: header + uint32/uint64 page numbers (fast to re-read)",
    reader=NativeReader,
    aliases=("epcsim", "epct"),
    extensions=(".epct",),
    writer=write_native,
    write_extensions=(".epct",),
    magic=MAGIC,
)
