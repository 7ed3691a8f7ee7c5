"""``epcsim.run()``: its arguments are checked (EpcsimError naming the argument) before
anything is created or run; the engine that ran is recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _scenarios import BUSY, tiny

import epcsim
from epcsim.errors import EpcsimError, ScenarioError

TINY = tiny()


@pytest.mark.parametrize(
    "seed, text",
    [
        ("abc", "seed: expected a non-negative integer, got str 'abc'"),
        (-1, "seed: expected a non-negative integer, got -1"),
        (1.5, "seed: expected a non-negative integer, got float 1.5"),
        (True, "seed: expected a non-negative integer, got True"),
    ],
)
def test_bad_seed_is_an_epcsim_error_and_creates_nothing(
    tmp_path: Path, seed: object, text: str
) -> None:
    out = tmp_path / "out"
    with pytest.raises(EpcsimError) as e:
        epcsim.run(TINY, seed=seed, out=out)  # type: ignore[arg-type]
    assert str(e.value) == text
    assert list(tmp_path.iterdir()) == []


def test_numpy_integer_seed_is_accepted() -> None:
    r = epcsim.run(TINY, seed=np.int64(5), engine="reference")
    assert r.summary["seed"] == 5 and type(r.summary["seed"]) is int


def test_overrides_as_a_string_is_refused(tmp_path: Path) -> None:
    """``overrides='a=b'`` used to be iterated character by character."""
    with pytest.raises(EpcsimError) as e:
        epcsim.run(TINY, overrides="host.epc=8MiB", out=tmp_path / "out")  # type: ignore[arg-type]
    assert str(e.value) == (
        "overrides: expected a list of KEY=VALUE strings, got str 'host.epc=8MiB'"
    )
    with pytest.raises(EpcsimError, match=r"^overrides: expected KEY=VALUE strings, got int 3$"):
        epcsim.run(TINY, overrides=[3])  # type: ignore[list-item]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("scenario, kind", [(None, "NoneType"), (42, "int"), (b"x", "bytes")])
def test_scenario_of_the_wrong_type(scenario: object, kind: str) -> None:
    """``scenario=None`` used to say "not valid TOML"."""
    with pytest.raises(EpcsimError) as e:
        epcsim.run(scenario)  # type: ignore[arg-type]
    assert not isinstance(e.value, ScenarioError)
    assert str(e.value) == (
        f"scenario: expected a Scenario, a path, builtin:NAME, a TOML string or a dict, got {kind}"
    )


def test_out_is_a_file(tmp_path: Path) -> None:
    """``out=<file>`` used to raise FileExistsError."""
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(EpcsimError) as e:
        epcsim.run(TINY, out=f, engine="reference")
    assert str(e.value) == f"out {f}: exists and is not a directory"
    assert f.read_text() == "x"


def test_out_empty_string(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EpcsimError, match=r"^out: empty path: name the run directory$"):
        epcsim.run(TINY, out="", engine="reference")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, text",
    [
        (
            {"engine": "fast"},
            "engine: expected one of auto, compiled, reference, check (or batched), got 'fast'",
        ),
        ({"progress": 3}, "progress: expected a callable or None, got int"),
        ({"report": "yes"}, "report: expected True or False, got 'yes'"),
        ({"force": 1}, "force: expected True or False, got 1"),
    ],
)
def test_bad_arguments_create_nothing(tmp_path: Path, kwargs: dict, text: str) -> None:
    """A bad engine or progress used to leave a directory holding only INCOMPLETE."""
    with pytest.raises(EpcsimError) as e:
        epcsim.run(TINY, out=tmp_path / "out", **kwargs)
    assert str(e.value) == text
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("engine", ["compiled", "batched"])
def test_compiled_engine_refuses_an_ineligible_scenario(tmp_path: Path, engine: str) -> None:
    with pytest.raises(EpcsimError) as e:
        epcsim.run("builtin:mixed-priority", engine=engine, out=tmp_path / "out")
    assert str(e.value) == (
        "engine compiled: the compiled engine runs no extension "
        "(host.extensions: epcsim.kernel.rfc_knobs); "
        "use engine reference or auto"
    )
    assert list(tmp_path.iterdir()) == []


def test_compiled_engine_refuses_when_it_cannot_take_over(tmp_path: Path) -> None:
    """Found only when the enclave thread starts: an error, not a silent fallback; the
    run directory is not created."""
    out = tmp_path / "out"
    with pytest.raises(EpcsimError) as e:
        epcsim.run(BUSY, engine="compiled", out=out)
    assert str(e.value) == (
        "engine compiled: an EADD build runs under a reclaim design other than v16 "
        "(host.policy); use engine reference or auto"
    )
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == [".out.lock"]
    # auto: the reference runs the build (under v14) and the thread until the build is
    # done, then the compiled engine
    auto = epcsim.run(BUSY, engine="auto")
    assert auto.engine == "mixed"
    assert auto.run["engine_reason"] == (
        "auto: the compiled engine took the enclave threads over when they became eligible "
        "(before: an EADD build runs under a reclaim design other than v16 (host.policy))"
    )


def test_engine_that_ran_is_recorded() -> None:
    ref = epcsim.run(TINY, engine="reference")
    assert ref.engine == "reference"
    assert ref.run["engine_requested"] == "reference"
    assert ref.run["engine_reason"] == "requested reference"
    comp = epcsim.run(TINY, engine="auto")
    assert comp.engine == "compiled"
    assert comp.run["engine"] == "compiled"
    assert comp.run["engine_reason"] == "auto: the scenario is eligible for the compiled engine"
    alias = epcsim.run(TINY, engine="batched")
    assert alias.engine == "compiled" and alias.run["engine_requested"] == "compiled"
    assert ref.summary == comp.summary == alias.summary
    # the kselftest program: no enclave threads, its ADD_PAGES loops run compiled
    ks = epcsim.run("builtin:kselftest", overrides=["host.epc=8MiB"])
    assert ks.engine == "compiled" and ks.run["events"]["compiled"] > 0
    assert ks.run["engine_reason"] == "auto: the scenario is eligible for the compiled engine"
    # the events each engine ran: the reference's heap pops, the compiled core's steps
    assert ref.run["events"]["compiled"] == 0 and ref.run["events"]["reference"] > 0
    assert comp.run["events"]["compiled"] > 0
    assert comp.engine_events == comp.run["events"]
    facts = ref.run
    assert set(facts) == {
        "format",
        "version",
        "scenario",
        "scenario_hash",
        "seed",
        "engine_requested",
        "engine",
        "engine_reason",
        "events",
        "outcome",
        "wall_s",
        "finished_utc",
        "versions",
        "files",
    }
    assert facts["files"] == []
    assert set(facts["versions"]) == {"epcsim", "python", "numpy", "numba", "pyarrow"}
    assert facts["versions"]["epcsim"] == epcsim.__version__
    assert facts["scenario_hash"] == ref.summary["scenario_hash"]
