"""Valgrind lackey traces: ``valgrind --tool=lackey --trace-mem=yes PROGRAM 2> FILE``.

Lackey prints one line per memory access of the program (valgrind's
``lackey/lk_main.c``, ``trace_instr`` and ``trace_load``/``store``/``modify``)::

    I  0401ab70,3        an instruction fetch: address (hex), size (decimal)
     L 1fff000778,8      a data load
     S 1fff000770,8      a data store
     M 0421f9c0,4        a data modify (load and store of the same bytes)

Each line is one access to the 4 KiB page of its first byte (``address >> 12``; an
access straddling a page boundary counts once, for its first page).  Lines starting
with ``==`` (valgrind's own header and summary, ``==PID== ...``) and blank lines are
skipped; any other line is malformed (it may be the program's own stderr: run the
program with its stderr elsewhere, or pass ``skip_bad=True``).  Lackey output carries no
thread id: a multi-threaded program's accesses come interleaved as valgrind serialised
them.

Options: ``collapse`` drops an access to the same page as the access just before it
(within the kinds kept), which shrinks instruction-fetch-heavy traces several times
without changing which pages are used or in what order they are first touched;
``kinds`` keeps only some access kinds (``"LSM"``: data only).

Files compressed with gzip are read transparently (lackey output compresses ~20x).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

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

__all__ = ["FORMAT", "LackeyReader"]

#: (kind, hex address) of every well-formed access line of a chunk
_FIND_RE = re.compile(r"^(I | [LSM]) ([0-9a-fA-F]{1,16}),[0-9]+$", re.MULTILINE)
_FIND_ADDR_RE = re.compile(r"^(?:I | [LSM]) ([0-9a-fA-F]{1,16}),[0-9]+$", re.MULTILINE)
#: one access line (slow path)
_LINE_RE = re.compile(r"(I | [LSM]) ([0-9a-fA-F]{1,16}),([0-9]+)")

KINDS = "ILSM"


class LackeyReader(BaseReader):
    """Reader of valgrind lackey ``--trace-mem=yes`` output (see the module docstring)."""

    format_name = "lackey"

    def __init__(
        self,
        path: str | Path,
        *,
        collapse: bool = False,
        kinds: str = KINDS,
        skip_bad: bool = False,
        chunk: int = DEFAULT_CHUNK,
    ) -> None:
        super().__init__(path, skip_bad=skip_bad, chunk=chunk)
        kinds = kinds.upper()
        if not kinds or any(k not in KINDS for k in kinds):
            raise TraceError(f"format 'lackey': option kinds: letters of {KINDS}, got {kinds!r}")
        self.collapse = bool(collapse)
        self.kinds = "".join(k for k in KINDS if k in kinds)
        self._options.update(collapse=self.collapse, kinds=self.kinds)

    def _chunks(self) -> Iterator[np.ndarray]:
        last = None  # page of the previous access kept (collapse)
        all_kinds = self.kinds == KINDS
        for done, lines in text_batches(self.path):
            # fast path: the chunk is well formed when its access lines and its '=='
            # lines are all of its lines
            text = "".join(lines)
            skip = text.count("\n==") + text.startswith("==")
            if all_kinds:
                addrs = _FIND_ADDR_RE.findall(text)
                ok = len(addrs) + skip == len(lines)
            else:
                found = _FIND_RE.findall(text)
                ok = len(found) + skip == len(lines)
                addrs = [a for k, a in found if k.strip() in self.kinds]
            if not ok:
                addrs = self._parse_slowly(lines, done + 1)
            pages = np.array([int(a, 16) >> PAGE_SHIFT for a in addrs], dtype=np.int64)
            if self.collapse and pages.size:
                keep = np.empty(pages.size, dtype=bool)
                keep[0] = pages[0] != last
                np.not_equal(pages[1:], pages[:-1], out=keep[1:])
                last = int(pages[-1])
                pages = pages[keep]
            yield pages

    def _parse_slowly(self, lines: list[str], first_line: int) -> list[str]:
        out = []
        for k, ln in enumerate(lines):
            s = ln.rstrip("\n")
            if s.startswith("==") or not s.strip(" \t"):
                continue
            m = _LINE_RE.fullmatch(s)
            if m is None:
                self._bad(
                    f"malformed lackey line {show(ln)} "
                    "(expected 'I  ADDR,SIZE', ' L ADDR,SIZE', ' S ...' or ' M ...', "
                    "ADDR hex, or a '==' line)",
                    line=first_line + k,
                )
                continue
            if m.group(1).strip() in self.kinds:
                out.append(m.group(2))
        return out


FORMAT = TraceFormat(
    name="lackey",
    description="valgrind --tool=lackey --trace-mem=yes output (I/L/S/M lines)",
    reader=LackeyReader,
    options=(
        Option("collapse", bool, False, "drop an access to the same page as the previous one"),
        Option("kinds", str, KINDS, "access kinds kept: letters of ILSM"),
    ),
    extensions=(".lackey", ".lackey.gz"),
    sniff_text=lambda lines: lines[0].startswith("==") or bool(_LINE_RE.fullmatch(lines[0])),
)
