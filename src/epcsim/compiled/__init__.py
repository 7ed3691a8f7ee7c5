"""The compiled engine: the kernel model's hot paths specialised onto flat arrays and
compiled with numba, run by an event loop that hands any step it does not cover back to
the reference engine (:mod:`epcsim.sim.engine`).  ``docs/ENGINES.md`` is its contract."""
