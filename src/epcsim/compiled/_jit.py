"""The compiled core's numba decorators (placeholder: the options of the former
``sim/_core.py``, unchanged)."""

from __future__ import annotations

from numba import njit

#: hot paths: inlined into their caller by numba
inline = njit(cache=True, _nrt=False, inline="always", error_model="numpy")
#: rare paths: functions of their own
outline = njit(cache=True, _nrt=False, error_model="numpy")
#: entry points called from Python, compiled once and cached on disk
njit_cached = njit(cache=True, _nrt=False, error_model="numpy")

__all__ = ["inline", "njit_cached", "outline"]
