"""Atomic writes: the file is always the old or the new one, readable like a plain file."""

from __future__ import annotations

import os
import stat

import pytest

from upx_core.io import atomic_write_bytes


def test_atomic_write_bytes_replaces_whole_with_mode_0644(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(b"old")
    atomic_write_bytes(path, b"new\n")
    assert path.read_bytes() == b"new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]


def test_atomic_write_bytes_failure_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "a.csv"
    path.write_bytes(b"old")

    def fail(*_):
        raise OSError("no rename")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="no rename"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]
