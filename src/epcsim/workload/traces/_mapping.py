"""Dense page numbering (:class:`DenseMapper`) and a trace as a simulator workload
(:class:`TracePattern`).

A trace's page numbers are sparse (object ids, or addresses of a 64-bit address space):
the enclave that runs it has only *footprint* pages.  :class:`DenseMapper` renumbers
pages 0, 1, 2, ... in the order they are first seen, so a trace's footprint pages fit an
enclave of exactly that many pages, and the first page the program touches is page 0.
"""

from __future__ import annotations

import numpy as np

from ..patterns import _check_out, _count
from ._base import TraceError, TraceReader

__all__ = ["DenseMapper", "TracePattern"]

_INT32_TOP = np.iinfo(np.int32).max


class DenseMapper:
    """Renumber page numbers densely, in first-seen order, across any number of chunks.

    ``map(chunk)`` returns the dense numbers of *chunk* (np.int64 in ``[0, len(self))``),
    numbering pages not seen before in the order of their first access; ``lookup`` maps
    without adding.  State is two sorted arrays (one entry per distinct page: 16 bytes
    each); a chunk costs a sort of the chunk plus a merge of its new pages.
    """

    #: pages below this are numbered through a direct table (4 bytes per page number
    #: up to the largest seen) instead of the sorted arrays: traces of small integer
    #: ids (object ids, page numbers of a compact space) map with one gather
    TABLE_LIMIT = 1 << 24
    #: table mode numbers a chunk into uint16 while every number fits (a footprint of
    #: at most 65,536 pages): half the memory of int32 codes, whose first touch was a
    #: third of the numbering pass of a 10M-access trace
    NARROW_TOP = 0xFFFF

    def __init__(self) -> None:
        self._keys = np.zeros(0, np.int64)  # sorted distinct pages
        self._codes = np.zeros(0, np.int64)  # their dense numbers
        self._order: list[np.ndarray] = []  # pages by dense number, per chunk
        #: table mode: dense number of page p at _table[p] (-1: not seen), while every
        #: page seen is in [0, TABLE_LIMIT); None once one is not (sorted mode)
        self._table: np.ndarray | None = np.zeros(0, np.int32)
        self._n = 0
        #: table mode: the new pages of the chunk being numbered (reused)
        self._scratch = np.zeros(0, np.int64)

    def __len__(self) -> int:
        """Distinct pages seen (the footprint so far)."""
        return self._n

    @property
    def footprint(self) -> int:
        """Distinct pages seen so far."""
        return self._n

    def _to_sorted(self) -> None:
        """Leave table mode: the sorted arrays from the table."""
        t = self._table
        assert t is not None
        keys = np.flatnonzero(t >= 0).astype(np.int64)
        self._keys = keys
        self._codes = t[keys].astype(np.int64)
        self._table = None

    def _map_table(self, chunk: np.ndarray, top: int) -> np.ndarray:
        """Table mode: the codes of *chunk*, whose pages are all below *top*."""
        t = self._table
        assert t is not None
        if top > t.size:
            grown = np.full(max(top, 2 * t.size), -1, np.int32)
            grown[: t.size] = t
            self._table = t = grown
        from ._dense import number_chunk

        order = self._scratch
        if order.size < chunk.size:  # (the new pages of a chunk: kept by copy below)
            self._scratch = order = np.empty(chunk.size, np.int64)
        k = -1
        if self._n <= self.NARROW_TOP:
            codes = np.empty(chunk.size, np.uint16)
            k = number_chunk(t, chunk, codes, order, self._n, self.NARROW_TOP)
            if k < 0:  # a number above uint16's: this chunk's new pages forgotten
                t[order[: -k - 1]] = -1
        if k < 0:
            codes = np.empty(chunk.size, np.int32)
            k = number_chunk(t, chunk, codes, order, self._n, _INT32_TOP)
        if k:
            self._n += k
            self._order.append(order[:k].copy())
        return codes

    def _find(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos = np.searchsorted(self._keys, u)
        if self._keys.size == 0:
            return pos, np.zeros(u.size, bool)
        found = self._keys[np.minimum(pos, self._keys.size - 1)] == u
        return pos, found

    def map(self, chunk: np.ndarray) -> np.ndarray:
        """Dense numbers of the pages of *chunk*, numbering new pages as first seen."""
        return self._map_codes(chunk).astype(np.int64, copy=False)

    def _map_codes(self, chunk: np.ndarray) -> np.ndarray:
        """:meth:`map` without the final conversion: uint16 or int32 codes in table
        mode (the narrowest that holds the chunk's numbers)."""
        chunk = np.asarray(chunk, dtype=np.int64)
        if chunk.size == 0:
            return np.zeros(0, np.int64)
        if self._table is not None:
            top = int(chunk.max()) + 1
            if int(chunk.min()) >= 0 and top <= self.TABLE_LIMIT:
                return self._map_table(chunk, top)
            self._to_sorted()
        u, first, inv = np.unique(chunk, return_index=True, return_inverse=True)
        pos, found = self._find(u)
        codes = np.empty(u.size, np.int64)
        codes[found] = self._codes[pos[found]]
        new = np.flatnonzero(~found)
        if new.size:
            n0 = self._keys.size
            by_first = new[np.argsort(first[new], kind="stable")]
            codes[by_first] = np.arange(n0, n0 + new.size, dtype=np.int64)
            self._keys = np.insert(self._keys, pos[new], u[new])
            self._codes = np.insert(self._codes, pos[new], codes[new])
            self._order.append(u[by_first])
            self._n += new.size
        return codes[inv.reshape(-1)]

    def lookup(self, chunk: np.ndarray) -> np.ndarray:
        """Dense numbers of pages already seen (a TraceError for a page never seen)."""
        chunk = np.asarray(chunk, dtype=np.int64)
        t = self._table
        if t is not None:
            if chunk.size == 0:
                return np.zeros(0, np.int64)
            ok = (chunk >= 0) & (chunk < t.size)
            codes = np.full(chunk.size, -1, np.int64)
            codes[ok] = t[chunk[ok]]
            if (codes < 0).any():
                page = int(chunk[np.argmax(codes < 0)])
                raise TraceError(f"page {page} was not in the trace when it was first read")
            return codes
        pos, found = self._find(chunk)
        if not found.all():
            page = int(chunk[np.argmin(found)])
            raise TraceError(f"page {page} was not in the trace when it was first read")
        return self._codes[pos]

    def pages(self) -> np.ndarray:
        """The original page of each dense number (``pages()[d]`` maps back)."""
        if len(self._order) > 1:
            self._order = [np.concatenate(self._order)]
        return self._order[0].copy() if self._order else np.zeros(0, np.int64)


#: the error of a trace (or of what ``skip_bad`` left of it) without accesses
NO_ACCESSES = "the trace has no accesses"


def check_trace(reader: TraceReader) -> int:
    """Read *reader* through once, as :class:`TracePattern` will, and return its
    accesses: a malformed line or record raises the reader's TraceError (unless
    ``skip_bad``), and a trace without accesses raises the TraceError TracePattern
    raises.  Scenario validation calls it, so ``epcsim validate`` reports what ``run``
    would fail on, with the same message."""
    n = reader.count()
    if n == 0:
        raise TraceError(NO_ACCESSES, file=reader.path)
    return n


class TracePattern:
    """A trace as a :class:`~epcsim.workload.patterns.Pattern`: the simulator's enclave
    thread takes the trace's pages, densely renumbered (:class:`DenseMapper`), in order.

    Construction reads the whole trace once (streaming) to number its pages, so
    ``npages`` (the footprint) is known before the first access; an enclave running it
    needs at least ``npages`` data pages.  ``take(rng, n)`` returns the next *n* pages
    and ignores *rng* (a trace is deterministic).  When the trace ends it **wraps
    around**: the next access is the trace's first again (``passes`` counts completed
    passes), so a workload of more accesses than the trace replays it; give
    ``accesses = length`` to run it exactly once.
    """

    #: a trace of at most this many accesses keeps its dense numbers in memory (2 bytes
    #: each while its footprint is at most 65,536 pages, else 4) after the numbering
    #: pass, instead of reading and mapping the file again
    KEEP_LIMIT = 1 << 26

    def __init__(self, reader: TraceReader) -> None:
        self.reader = reader
        self.mapper = DenseMapper()
        n = 0
        kept: list[np.ndarray] | None = []
        # (each chunk is done with before the next is read: transient_pages())
        scan = getattr(reader, "transient_pages", reader.pages)
        for chunk in scan():
            codes = self.mapper._map_codes(chunk)
            n += chunk.size
            if kept is not None:
                if n <= self.KEEP_LIMIT:
                    if codes.dtype != np.uint16:
                        codes = codes.astype(np.int32, copy=False)
                    kept.append(codes)
                else:
                    kept = None
        #: the dense numbers of one pass, in read chunks (None: re-read the file)
        self._kept = kept
        self._kept_next = 0
        if n == 0:
            raise TraceError(NO_ACCESSES, file=reader.path)
        #: accesses in one pass over the trace
        self.length = n
        #: distinct pages of the trace: the pattern's pages are 0..npages-1
        self.npages = self.mapper.footprint
        #: completed passes over the trace (wrap-arounds)
        self.passes = 0
        self.description = f"trace({reader.format_name}: {reader.path.name})"
        #: malformed lines/records skipped in one pass (``skip_bad=True``)
        self.skipped = int(getattr(reader, "skipped", 0))
        self._buf = np.zeros(0, np.int64)
        self._pos = 0
        reader.reset()

    @property
    def footprint(self) -> int:
        """Distinct pages (the same as ``npages``)."""
        return self.npages

    def _refill(self) -> None:
        if self._kept:
            if self._kept_next >= len(self._kept):
                self._kept_next = 0
                self.passes += 1
            self._buf = self._kept[self._kept_next]  # uint16/int32: take() converts as it copies
            self._kept_next += 1
            self._pos = 0
            return
        chunk = self.reader.read(getattr(self.reader, "chunk", 1 << 18))
        if chunk.size == 0:
            self.reader.reset()
            self.passes += 1
            chunk = self.reader.read(getattr(self.reader, "chunk", 1 << 18))
            if chunk.size == 0:  # pragma: no cover - the file changed under us
                raise TraceError("the trace has no accesses", file=self.reader.path)
        self._buf = self.mapper.lookup(chunk)
        self._pos = 0

    def take(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """The next *n* dense page numbers (np.int64 in ``[0, npages)``), wrapping
        around at the end of the trace; *rng* is not used."""
        n = _count(n)
        return self.take_into(rng, n, np.empty(n, np.int64))

    def take_into(self, rng: np.random.Generator, n: int, out: np.ndarray) -> np.ndarray:
        """:meth:`take` written to ``out[:n]``, which is returned: one copy from the
        trace's kept numbers to the caller's buffer."""
        n = _count(n)
        _check_out(n, out)
        done = 0
        while done < n:
            if self._pos >= self._buf.size:
                self._refill()
            k = min(n - done, self._buf.size - self._pos)
            out[done : done + k] = self._buf[self._pos : self._pos + k]
            self._pos += k
            done += k
        return out[:n]

    def __repr__(self) -> str:
        return f"<Pattern {self.description} over {self.npages} pages>"
