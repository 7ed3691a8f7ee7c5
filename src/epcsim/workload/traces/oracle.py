"""libCacheSim's ``oracleGeneral`` binary trace (libCacheSim ``traceReader/generalReader/
binary.c`` and ``customizedReader/oracle/oracleGeneralBin.h``).

Packed little-endian 24-byte records, no header::

    uint32 clock_time; uint64 obj_id; uint32 obj_size; int64 next_access_vtime

``next_access_vtime`` is the 1-based position of the next request to the same object
(-1 when there is none; libCacheSim also accepts INT64_MAX).  Read with ``np.fromfile``
*chunk* records at a time.

Mapping (option ``mapping``): ``object`` (default) gives one page per object, the page
number being ``obj_id``; ``address`` reads ``obj_id`` as a block number, so a request
touches the pages of bytes ``[obj_id * block_size, obj_id * block_size + obj_size)``, in
order (``block_size`` defaults to 512, a disk sector).

A file whose size is not a multiple of 24 has a truncated last record: an error naming
its record number when the reader is opened (with ``skip_bad=True`` it is counted in
``skipped`` and ignored).

The writer gives every page its own object of 4096 bytes (so libCacheSim run with sizes
sees one object per page), ``clock_time`` = the 1-based position (mod 2**32), and fills
``next_access_vtime`` in a second, backward pass over the written file, keeping one
entry per distinct page in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ..._atomic import atomic_path
from ._base import (
    DEFAULT_CHUNK,
    PAGE_SIZE,
    BaseReader,
    Option,
    TraceError,
    TraceFormat,
    block_pages,
    is_zstd,
    open_binary,
    read_items,
)

__all__ = ["FORMAT", "ORACLE_DTYPE", "OracleGeneralReader", "write_oracle"]

#: One oracleGeneral record (packed, 24 bytes).
ORACLE_DTYPE = np.dtype(
    [
        ("clock_time", "<u4"),
        ("obj_id", "<u8"),
        ("obj_size", "<u4"),
        ("next_access_vtime", "<i8"),
    ]
)
RECORD = ORACLE_DTYPE.itemsize
assert RECORD == 24

MAPPINGS = ("object", "address")


class OracleGeneralReader(BaseReader):
    """Reader of libCacheSim ``oracleGeneral`` files (see the module docstring)."""

    format_name = "oracleGeneral"

    def __init__(
        self,
        path: str | Path,
        *,
        mapping: str = "object",
        block_size: int = 512,
        skip_bad: bool = False,
        chunk: int = DEFAULT_CHUNK,
    ) -> None:
        super().__init__(path, skip_bad=skip_bad, chunk=chunk)
        if mapping not in MAPPINGS:
            raise TraceError(f"format 'oracleGeneral': option mapping: one of {MAPPINGS}")
        self.mapping = mapping
        self.block_size = int(block_size)
        self._options.update(mapping=mapping, block_size=self.block_size)
        #: zstd-compressed (by its magic): streamed, its length known after a pass
        self.compressed = is_zstd(self.path)
        #: records and the bytes of a partial last record (None: not known before a pass)
        self.records: int | None = None
        self.tail: int | None = None
        if self.compressed:
            return
        size = self.path.stat().st_size
        self.records, self.tail = divmod(size, RECORD)
        if self.tail and not skip_bad:
            raise TraceError(
                f"truncated record ({self.tail} of {RECORD} bytes; "
                f"the file size {size} is not a multiple of {RECORD})",
                file=self.path,
                record=self.records + 1,
            )

    def records_chunks(self) -> Iterator[np.ndarray]:
        """The raw records (ORACLE_DTYPE) in chunks of the reader's chunk size (at most
        TRANSIENT_CHUNK in a transient pass; a zstd-compressed file decompressed as it
        is read).  A partial record at the end of a compressed file is reported after
        the last chunk (``truncated record``)."""
        size = self._read_size()
        with open_binary(self.path) as f:
            left = self.records
            done = 0
            while left is None or left > 0:
                want = size if left is None else min(size, left)
                rec, partial = read_items(f, ORACLE_DTYPE, want, self._buffer(ORACLE_DTYPE, want))
                if rec.size:
                    yield rec
                done += rec.size
                if left is not None:
                    if rec.size < want:  # pragma: no cover - the file shrank under us
                        raise TraceError("file shrank while being read", file=self.path)
                    left -= rec.size
                elif rec.size < want:  # the end of the decompressed data
                    if partial:
                        self._bad(
                            f"truncated record ({partial} of {RECORD} bytes at the end of "
                            "the decompressed data)",
                            record=done + 1,
                        )
                    break

    def _chunks(self) -> Iterator[np.ndarray]:
        done = 0
        for rec in self.records_chunks():
            if self.mapping == "object":
                yield np.ascontiguousarray(rec["obj_id"]).view(np.int64)
            else:
                yield self._addresses(rec, done)
            done += rec.size
        if self.tail:
            assert self.records is not None
            self._bad("truncated record", record=self.records + 1)

    def _addresses(self, rec: np.ndarray, done: int) -> np.ndarray:
        def bad(i: int, message: str) -> None:
            self._bad(message, record=done + i + 1)

        return block_pages(rec["obj_id"], rec["obj_size"], self.block_size, bad)

    def count(self) -> int:
        if self.mapping == "object" and self.records is not None:
            return self.records
        return super().count()


def _fill_next_access(path: Path, n: int, chunk: int) -> None:
    """Set ``next_access_vtime`` of the *n* records of *path* in one backward pass.

    Global state: for every object seen so far (later in the file), the 1-based position
    of its earliest access seen, as sorted key/value arrays (one entry per object)."""
    keys = np.zeros(0, np.uint64)
    vals = np.zeros(0, np.int64)
    with open(path, "r+b") as f:
        end = n
        while end > 0:
            start = max(0, end - chunk)
            f.seek(start * RECORD)
            rec = np.fromfile(f, dtype=ORACLE_DTYPE, count=end - start)
            ids = rec["obj_id"].copy()
            m = ids.size
            nxt = np.full(m, -1, np.int64)
            order = np.argsort(ids, kind="stable")
            sid = ids[order]
            same = sid[1:] == sid[:-1]
            # inside the chunk: the next access is the following one of the same id
            nxt[order[:-1][same]] = order[1:][same] + (start + 1)
            # the last access of each id in the chunk looks up the later chunks
            is_last = np.ones(m, bool)
            is_last[order[:-1][same]] = False
            li = np.flatnonzero(is_last)
            if keys.size:
                pos = np.searchsorted(keys, ids[li])
                pos_c = np.minimum(pos, keys.size - 1)
                found = keys[pos_c] == ids[li]
                nxt[li[found]] = vals[pos_c[found]]
            rec["next_access_vtime"] = nxt
            f.seek(start * RECORD)
            rec.tofile(f)
            # remember the first access of each id in this chunk
            is_first = np.ones(m, bool)
            is_first[order[1:][same]] = False
            fi = np.flatnonzero(is_first)
            fk = ids[fi]
            fv = fi.astype(np.int64) + (start + 1)
            srt = np.argsort(fk)
            fk, fv = fk[srt], fv[srt]
            if keys.size:
                pos = np.searchsorted(keys, fk)
                pos_c = np.minimum(pos, keys.size - 1)
                found = keys[pos_c] == fk
                vals[pos_c[found]] = fv[found]
                new = ~found
                keys = np.insert(keys, pos[new], fk[new])
                vals = np.insert(vals, pos[new], fv[new])
            else:
                keys, vals = fk, fv
            end = start


def write_oracle(path: Path, source: Iterable[np.ndarray], *, chunk: int = DEFAULT_CHUNK) -> int:
    """Write the pages of *source* as oracleGeneral records (one 4096-byte object per
    page); returns the number of records.  Atomic: the records and their
    ``next_access_vtime`` are written under a temporary name, renamed onto *path* when
    both passes completed."""
    n = 0
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            for pages in source:
                pages = np.asarray(pages, dtype=np.int64)
                rec = np.zeros(pages.size, dtype=ORACLE_DTYPE)
                pos = np.arange(n + 1, n + 1 + pages.size, dtype=np.int64)
                rec["clock_time"] = pos & 0xFFFFFFFF
                rec["obj_id"] = pages.view(np.uint64)
                rec["obj_size"] = PAGE_SIZE
                rec["next_access_vtime"] = -1
                rec.tofile(f)
                n += pages.size
        _fill_next_access(tmp, n, chunk)
    return n


FORMAT = TraceFormat(
    name="oracleGeneral",
    description="libCacheSim oracleGeneral binary (24-byte records; one object = one page)",
    reader=OracleGeneralReader,
    options=(
        Option("mapping", MAPPINGS, "object", "object: one page per obj_id; address: blocks"),
        Option("block_size", int, 512, "bytes per block of obj_id (mapping=address)"),
    ),
    aliases=("oracle", "oraclegeneral", "oracle_general"),
    extensions=(".oraclegeneral.bin", ".oraclegeneral", ".bin"),
    writer=write_oracle,
    write_extensions=(".oracleGeneral.bin", ".oracleGeneral", ".bin"),
)
