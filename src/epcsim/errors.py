"""Exceptions for bad input to epcsim itself and for misuse of the library.

Hierarchy::

    EpcsimError                 bad input to epcsim (scenario, trace, CLI, host spec)
     +-- HostConfigError        an invalid host description (EPC sections, sizes)
     +-- ScenarioError          a bad scenario: names the file, the table and the field
    EpcsimUsageError            (RuntimeError) the library was used wrongly, e.g. an
                                operation on a task that has exited
    EngineMismatchError         ``engine="check"``: the compiled and the reference
                                engines' results differ (a bug in epcsim, not bad input)

Errors of the modelled kernel are *not* exceptions: kernel-internal functions return
``0`` or a negative errno (see :mod:`epcsim.kernel.constants`), and the user-space
boundary (cgroupfs, ioctls) raises :class:`OSError` with the positive errno, exactly as
Python does against a real cgroupfs.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "EngineMismatchError",
    "EpcsimError",
    "EpcsimUsageError",
    "HostConfigError",
    "ScenarioError",
]


class EpcsimError(Exception):
    """Bad input to epcsim (scenario, trace, host description, CLI argument)."""


class HostConfigError(EpcsimError):
    """An invalid host description, naming the field and the value."""


class EpcsimUsageError(RuntimeError):
    """The library was used in a way it does not support (a programming error)."""


class ScenarioError(EpcsimError):
    """A bad scenario.  ``file``, ``table`` and ``field`` locate the problem."""

    def __init__(self, message: str, *, file: str = "", table: str = "", field: str = "") -> None:
        self.file = file
        self.table = table
        self.field = field
        self.message = message
        where = ": ".join(x for x in (file, ".".join(y for y in (table, field) if y)) if x)
        super().__init__(f"{where}: {message}" if where else message)


class EngineMismatchError(Exception):
    """The compiled and the reference engines gave different results (``engine="check"``).

    Not bad input (not an :class:`EpcsimError`): a bug in epcsim.  ``file`` is the output
    file (``summary.json``, ``timeseries.parquet``, ``fault_latency.npy``), ``field`` the
    first difference in it (a JSON path, a row and column, an index), ``compiled`` and
    ``reference`` the two values as text; ``note`` adds context (lengths that differ too).
    """

    def __init__(self, file: str, field: str, compiled: str, reference: str, *, note: str = ""):
        self.file = file
        self.field = field
        self.compiled = compiled
        self.reference = reference
        self.note = note
        text = f"{file}: {field}: compiled {compiled}, reference {reference}"
        super().__init__(f"{text} ({note})" if note else text)

    def __reduce__(self) -> tuple[Any, ...]:  # picklable despite the keyword-only note
        return (_mismatch, (self.file, self.field, self.compiled, self.reference, self.note))


def _mismatch(file: str, field: str, compiled: str, reference: str, note: str) -> Any:
    return EngineMismatchError(file, field, compiled, reference, note=note)
