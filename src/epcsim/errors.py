"""Exceptions for bad input to epcsim itself and for misuse of the library.

Hierarchy::

    EpcsimError                 bad input to epcsim (scenario, trace, CLI, host spec)
     +-- HostConfigError        an invalid host description (EPC sections, sizes)
     +-- ScenarioError          a bad scenario: names the file, the table and the field
    EpcsimUsageError            (RuntimeError) the library was used wrongly, e.g. an
                                operation on a task that has exited

Errors of the modelled kernel are *not* exceptions: kernel-internal functions return
``0`` or a negative errno (see :mod:`epcsim.kernel.constants`), and the user-space
boundary (cgroupfs, ioctls) raises :class:`OSError` with the positive errno, exactly as
Python does against a real cgroupfs.
"""

from __future__ import annotations

__all__ = ["EpcsimError", "EpcsimUsageError", "HostConfigError", "ScenarioError"]


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
