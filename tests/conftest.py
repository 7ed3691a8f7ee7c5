"""Shared test set-up: this directory is on ``sys.path`` (pytest's rootdir conftest), so
test modules in any subdirectory import the shared scenarios from :mod:`_scenarios`."""
