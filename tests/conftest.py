"""Shared test set-up: this directory is on ``sys.path`` (pytest's rootdir conftest), so
test modules in any subdirectory import the shared scenarios from :mod:`_scenarios`.

The suite runs on pytest-xdist workers (``-n auto`` in ``pyproject.toml``), whose
environment has ``COLUMNS=80`` and ``LINES=24`` that a plain ``pytest`` run does not:
the CLI sizes its tables from ``COLUMNS`` (a pipe without it gets 160 columns), so both
are dropped here and every test sees the environment of a run in one process (a test
that wants a width sets it itself)."""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in ("COLUMNS", "LINES"):
        os.environ.pop(_name, None)
