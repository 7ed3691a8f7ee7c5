"""Run directories: recognise one, lock it, build a run aside and install it.

A run directory is recognised by its manifest, ``run.json``, which epcsim writes last
(``docs/OUTPUTS.md``); a directory that holds files but no manifest is not epcsim's and
is never written into.  A run is built in a temporary sibling directory
(``.NAME.tmp-XXXXXXXX``) and renamed onto ``NAME`` only when every file is written, so
``NAME`` holds either the previous complete run or the new complete one: an error or
Ctrl-C removes the temporary directory and leaves the previous run untouched.  A lock
(``.NAME.lock`` beside the directory, ``flock``) makes a second run into the same
directory fail before it writes anything.

Usage (what :func:`epcsim.run` does)::

    target = check_out(out, key, force=force)     # validates; creates nothing
    with claim(target, key, force=force) as tmp:  # parent, lock, temporary directory
        ...write the run into tmp...
    # tmp is now target
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import EpcsimError

__all__ = [
    "KNOWN_FILES",
    "MANIFEST",
    "RUN_FORMAT",
    "RUN_JSON_VERSION",
    "RunDirError",
    "RunKey",
    "check_out",
    "claim",
    "claim_dir",
    "exclusive_lock",
    "lock_path",
    "read_manifest",
    "resolve_out",
]

#: the manifest that marks an epcsim run directory and records the run's facts
MANIFEST = "run.json"
#: ``run.json`` ``format``
RUN_FORMAT = "epcsim-run"
#: ``run.json`` ``version``
RUN_JSON_VERSION = 1
#: files epcsim writes into a run directory (``epcsim report`` adds the report's files
#: to a run written without them; ``INCOMPLETE`` is what epcsim 0.2 left behind)
KNOWN_FILES = frozenset(
    {
        MANIFEST,
        "summary.json",
        "timeseries.parquet",
        "fault_latency.npy",
        "fault_latency.parquet",
        "report.html",
        "usage.png",
        "rates.png",
        "fault_latency.png",
        "slowdown.png",
        "INCOMPLETE",
    }
)


#: what an interrupted atomic write (epcsim._atomic) or report leaves: ``.NAME.tmp-XXX``
_LEFTOVER = re.compile(r"\..+\.tmp-\w+(\.\w+)*")


class RunDirError(EpcsimError):
    """A run directory that epcsim refuses to write or read (names the path)."""


@dataclass(frozen=True)
class RunKey:
    """What makes two runs the same: the resolved scenario (its hash) and the seed."""

    scenario: str
    scenario_hash: str
    seed: int

    def describe(self) -> str:
        return f"scenario {self.scenario} ({self.scenario_hash[:12]}), seed {self.seed}"

    def same_run(self, other: RunKey) -> bool:
        return self.scenario_hash == other.scenario_hash and self.seed == other.seed


def lock_path(target: Path) -> Path:
    """The lock file of run directory *target*: ``.NAME.lock`` beside it."""
    return target.parent / f".{target.name}.lock"


def read_manifest(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``run.json`` of *run_dir*, checked; :class:`RunDirError` naming the file if it is
    unreadable or not an epcsim manifest."""
    path = Path(run_dir) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise RunDirError(f"{path}: cannot read the run manifest: {e}") from None
    if not isinstance(data, dict) or data.get("format") != RUN_FORMAT:
        raise RunDirError(f'{path}: not an epcsim run manifest (no "format": "{RUN_FORMAT}")')
    problems = [
        k
        for k, t in (("scenario", str), ("scenario_hash", str), ("seed", int), ("files", list))
        if not isinstance(data.get(k), t) or isinstance(data.get(k), bool)
    ]
    if problems:
        raise RunDirError(f"{path}: missing or wrong type: {', '.join(problems)}")
    return data


def _key_of(manifest: dict[str, Any]) -> RunKey:
    return RunKey(manifest["scenario"], manifest["scenario_hash"], manifest["seed"])


def _label(out: str | os.PathLike[str]) -> str:
    return f"out {os.fspath(out)}"


def check_out(out: object, key: RunKey, *, force: bool = False) -> Path:
    """Validate run directory *out* for run *key*; return its resolved path.

    Creates nothing.  Accepted: a path that does not exist, an empty directory, an
    epcsim run directory of the same run (*key*), or, with *force*, of another run.
    Refused (:class:`RunDirError`): an empty path, a file, the current directory or one
    of its ancestors, a directory holding files but no ``run.json``, a run directory
    holding files epcsim did not write (even with *force*: epcsim deletes only its own
    files), and another run without *force*.
    """
    target, label = resolve_out(out, "run")
    _check_existing(target, label, key, force=force)
    return target


def resolve_out(out: object, what: str) -> tuple[Path, str]:
    """(resolved path, ``out TEXT`` label) of output directory *out* of a *what* (run,
    comparison, sweep, advice); RunDirError for a non-path, an empty path, or the
    current directory or one of its ancestors.  Creates nothing."""
    if isinstance(out, bytes) or not isinstance(out, str | os.PathLike):
        raise RunDirError(f"out: expected a directory path, got {type(out).__name__}")
    text = os.fspath(out)
    if not isinstance(text, str) or not text.strip():
        raise RunDirError(f"out: empty path: name the {what} directory")
    label = _label(text)
    target = Path(text).resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or cwd.is_relative_to(target):
        raise RunDirError(
            f"{label}: is the current directory or contains it; name a directory for the {what}"
        )
    return target, label


def existing_entries(target: Path, label: str) -> set[str]:
    """The entries of an output directory *target* about to be claimed: empty when it
    does not exist or is empty.  RunDirError for a dangling symbolic link, a
    non-directory or a directory that cannot be listed."""
    if not target.exists():
        if target.is_symlink():
            raise RunDirError(f"{label}: a dangling symbolic link")
        return set()
    if not target.is_dir():
        raise RunDirError(f"{label}: exists and is not a directory")
    try:
        return set(os.listdir(target))
    except OSError as e:
        raise RunDirError(f"{label}: cannot list it: {e.strerror or e}") from None


def _check_existing(target: Path, label: str, key: RunKey, *, force: bool) -> None:
    entries = existing_entries(target, label)
    if not entries:
        return
    if MANIFEST not in entries:
        raise RunDirError(
            f"{label}: not an epcsim run directory (it holds files and no {MANIFEST}); "
            "name a new or empty directory"
        )
    manifest = read_manifest(target)
    foreign = sorted(
        e
        for e in entries - KNOWN_FILES - {str(f) for f in manifest["files"]}
        if not _LEFTOVER.fullmatch(e)
    )
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise RunDirError(
            f"{label}: holds files epcsim did not write ({shown}); epcsim replaces only "
            "its own runs: move them away first"
        )
    old = _key_of(manifest)
    if not old.same_run(key) and not force:
        raise RunDirError(
            f"{label}: holds a different run ({old.describe()}); "
            "replace it with --force (force=True)"
        )


def _stale(target: Path) -> Iterator[Path]:
    """Temporary siblings a killed run left behind (``.NAME.tmp-*``, ``.NAME.old-*``)."""
    pat = re.compile(rf"\.{re.escape(target.name)}\.(tmp|old)-[A-Za-z0-9_]{{8}}")
    with contextlib.suppress(OSError):
        for p in target.parent.iterdir():
            if pat.fullmatch(p.name) and p.is_dir() and not p.is_symlink():
                yield p


@contextlib.contextmanager
def claim(target: Path, key: RunKey, *, force: bool = False) -> Iterator[Path]:
    """Lock *target* (checked by :func:`check_out`) and yield an empty temporary
    directory beside it; on success, install it as *target* (replacing the previous
    run); on any exception remove it and leave *target* untouched.

    Raises :class:`RunDirError` if another process holds the lock, or if *target*
    changed since :func:`check_out` so that it may no longer be written.
    """
    with claim_dir(target, lambda: _check_existing(target, _label(target), key, force=force)) as t:
        yield t


@contextlib.contextmanager
def exclusive_lock(lock: Path, label: str, what: str = "run") -> Iterator[None]:
    """Hold ``flock`` on *lock* (created if missing) for the block; RunDirError naming
    *label* if another process holds it (``another epcsim WHAT is writing it``)."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirError(
                f"{label}: another epcsim {what} is writing it (it holds {lock}); "
                "wait for it to finish or choose another directory"
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def claim_dir(target: Path, recheck: Callable[[], None]) -> Iterator[Path]:
    """:func:`claim` for any directory epcsim builds aside (a run, a comparison):
    *recheck* is called under the lock and raises if *target* may no longer be
    written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(lock_path(target), _label(target)):
        # under the lock: the directory may have changed since it was checked
        recheck()
        for stale in _stale(target):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)  # mkdtemp creates 0700
            yield tmp
            _install(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _install(tmp: Path, target: Path) -> None:
    """Rename *tmp* onto *target*; a previous non-empty *target* is renamed aside first
    and deleted after."""
    if target.is_dir() and any(target.iterdir()):
        aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, aside)  # onto the empty directory just made
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(aside, target)  # put the previous run back
            raise
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(tmp, target)  # target absent, or an empty directory
