"""Atomic file writes: every file epcsim writes appears complete or not at all.

A file is written under a temporary name in its target's directory
(``.NAME.tmp-XXXXXX``) and renamed onto the target only when the write completed.
A failed or interrupted write (an exception, Ctrl-C) removes the temporary file and
leaves any previous target untouched.  ``os.replace`` within one directory is atomic on
POSIX, so a reader sees either the old file or the new one (``docs/OUTPUTS.md``).

Usage::

    with atomic_path(target) as tmp:      # tmp: a Path in target's directory
        np.save(tmp, array)               # any writer that takes a path
    with atomic_open(target, "w") as f:   # or a file object
        f.write(text)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "atomic_path", "atomic_write_bytes", "atomic_write_text", "same_file"]


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], *, keep_suffix: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside *target*; rename it onto *target* on success.

    The temporary name keeps *target*'s suffixes (``x.tmp-ab12.npy``) so that writers
    that look at the extension (``np.save``, ``savefig``) see the same one; with
    ``keep_suffix=False`` it does not (``.x.parquet.tmp-ab12``), so that a glob such as
    ``*.parquet`` over a directory being written never matches a file in progress or
    one a killed process left behind (``epcsim sweep``'s dataset).  On any
    exception (``KeyboardInterrupt`` included) the temporary file is removed and the
    exception propagates; *target* is not touched.
    """
    target = Path(target)
    parent = target.parent
    suffix = "".join(target.suffixes[-2:]) if target.suffixes and keep_suffix else ""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", suffix=suffix, dir=parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # mkstemp creates 0600; give the result the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_open(
    target: str | os.PathLike[str], mode: str = "w", **kwargs: Any
) -> Iterator[IO[Any]]:
    """Open a temporary file beside *target* (``mode`` "w"/"wb"/"wt"); rename on success."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open: mode must be a write mode, not {mode!r}")
    with atomic_path(target) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def atomic_write_text(target: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write *text* to *target* atomically (``newline="\\n"``)."""
    with atomic_open(target, "w", encoding=encoding, newline="\n") as f:
        f.write(text)


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    """Write *data* to *target* atomically."""
    with atomic_open(target, "wb") as f:
        f.write(data)


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True if *a* and *b* name the same existing file (same path, hard link or symlink)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
