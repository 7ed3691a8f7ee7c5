"""The compiled core as one namespace, for :mod:`epcsim.compiled.engine`: every name
of :mod:`epcsim.compiled.layout` (the tables' offsets, codes, masks) and
:func:`~epcsim.compiled.loop.run_core`."""

from __future__ import annotations

from . import layout
from .loop import run_core

__all__ = ["run_core"]


def __getattr__(name: str) -> object:
    """The layout's names (``core.S_NOW``, ``getattr(core, "CG_USAGE")``)."""
    try:
        return getattr(layout, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
