"""epcsim._atomic: a failed or interrupted write leaves the previous file and no partial file."""

from __future__ import annotations

import os

import pytest

from epcsim._atomic import atomic_open, atomic_path, atomic_write_text, same_file


def test_success_replaces(tmp_path):
    t = tmp_path / "a.txt"
    t.write_text("old")
    atomic_write_text(t, "new")
    assert t.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


@pytest.mark.parametrize("exc", [ValueError, KeyboardInterrupt])
def test_failure_keeps_previous(tmp_path, exc):
    t = tmp_path / "a.npy"
    t.write_text("old")
    with pytest.raises(exc), atomic_open(t, "w") as f:
        f.write("partial")
        raise exc()
    assert t.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]


def test_tmp_keeps_suffix_and_dir(tmp_path):
    t = tmp_path / "x.oracleGeneral.bin"
    with atomic_path(t) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.endswith(".oracleGeneral.bin")
        tmp.write_bytes(b"1")
    assert t.read_bytes() == b"1"


def test_tmp_without_suffix(tmp_path):
    """keep_suffix=False: the temporary name does not end as the target does, so a
    ``*.parquet`` glob never matches a file in progress (epcsim sweep's dataset)."""
    t = tmp_path / "k.parquet"
    with atomic_path(t, keep_suffix=False) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(".k.parquet.tmp-")
        assert not tmp.name.endswith(".parquet")
        assert list(tmp_path.glob("*.parquet")) == []
        tmp.write_bytes(b"1")
    assert t.read_bytes() == b"1"


def test_mode_follows_umask(tmp_path):
    t = tmp_path / "m"
    atomic_write_text(t, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert t.stat().st_mode & 0o777 == 0o666 & ~umask


def test_same_file(tmp_path):
    a = tmp_path / "a"
    a.write_text("x")
    os.link(a, tmp_path / "h")
    (tmp_path / "s").symlink_to(a)
    assert same_file(a, tmp_path / "h") and same_file(a, tmp_path / "s") and same_file(a, a)
    assert not same_file(a, tmp_path / "missing")
