"""upx_core.files: atomic files (always the old or the new one, readable like a plain file) and
output folders (written whole or not at all; ``force`` replaces only what upx wrote)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from upx_core.files import (
    MARKER,
    OutputDir,
    atomic_directory,
    atomic_write_bytes,
    check_output_dir,
)


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


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _write_upx_folder(path: Path, text: str = "old") -> None:
    with atomic_directory(path) as tmp:
        (tmp / "result.json").write_text(text)


def test_written_folder_holds_the_marker_and_force_replaces_it(tmp_path):
    out = tmp_path / "out"
    _write_upx_folder(out)
    assert (out / MARKER).is_file() and (out / "result.json").read_text() == "old"
    with pytest.raises(FileExistsError, match="already exists"):
        _write_upx_folder(out, "new")
    with atomic_directory(out, force=True) as tmp:
        (tmp / "result.json").write_text("new")
    assert (out / "result.json").read_text() == "new" and (out / MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left


def test_a_checked_folder_is_checked_again_only_before_it_is_replaced(tmp_path):
    out = tmp_path / "out"
    _write_upx_folder(out)
    checked = check_output_dir(out, force=True, protect=[tmp_path / "photo.png"])
    assert checked == OutputDir(out, True, (tmp_path / "photo.png",))
    (out / "notes.txt").write_text("mine")  # added after the check, while upx computed
    with pytest.raises(FileExistsError, match=r"would delete notes\.txt"):
        with atomic_directory(checked) as tmp:
            (tmp / "result.json").write_text("new")
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "result.json").read_text() == "old"
    (out / "notes.txt").unlink()
    with atomic_directory(checked) as tmp:  # its force applies
        (tmp / "result.json").write_text("new")
    assert (out / "result.json").read_text() == "new"


def test_force_refuses_a_folder_upx_did_not_write_and_keeps_it(tmp_path):
    mine = tmp_path / "thesis"
    (mine / "chapters").mkdir(parents=True)
    (mine / "chapters" / "one.tex").write_text("years of work")
    before = _tree(tmp_path)
    with pytest.raises(FileExistsError, match=f"has no {MARKER} file"):
        check_output_dir(mine, force=True)
    with pytest.raises(FileExistsError, match=f"has no {MARKER} file"):
        with atomic_directory(mine, force=True) as tmp:
            (tmp / "result.json").write_text("{}")
    assert _tree(tmp_path) == before and sorted(os.listdir(tmp_path)) == ["thesis"]


def test_force_replaces_an_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with atomic_directory(tmp_path / "empty", force=True) as tmp:
        (tmp / "a.txt").write_text("a")
    assert (tmp_path / "empty" / "a.txt").read_text() == "a"


def test_never_a_file_the_input_or_a_folder_holding_the_input(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    photo = photos / "photo.png"
    photo.write_bytes(b"pixels")
    (photos / "sibling.png").write_bytes(b"more pixels")
    (photos / MARKER).write_text("")  # even a folder that looks like upx's
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    before = _tree(tmp_path)
    for out, match in [(photo, "is the input image"), (photos, "contains the input image"),
                       (tmp_path, "contains the input image"), (notes, "is a file")]:
        with pytest.raises(FileExistsError, match=match):
            check_output_dir(out, force=True, protect=[photo])
        with pytest.raises(FileExistsError, match=match):
            with atomic_directory(out, force=True, protect=[photo]):
                pass
    assert _tree(tmp_path) == before


def test_a_folder_holding_the_input_through_a_symlink_is_refused(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "photo.png").write_bytes(b"pixels")
    (tmp_path / "link").symlink_to(tmp_path / "photos")
    with pytest.raises(FileExistsError, match="contains the input image"):
        check_output_dir(tmp_path / "link", force=True, protect=[tmp_path / "photos/photo.png"])


def test_output_inside_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "photo.png").write_bytes(b"pixels")
    with pytest.raises(NotADirectoryError, match=r"photo\.png is a file"):
        check_output_dir(tmp_path / "photo.png" / "deeper" / "out")


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create folders in: a chmod 555 one, or for root (whom
    permissions do not stop) /sys, which refuses everyone."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.access(ro, os.W_OK):
        ro.chmod(0o755)
        ro = Path("/sys")
        if not ro.is_dir():
            pytest.skip("running as root without /sys: no folder refuses writes")
    return ro


def test_read_only_parent_is_a_permission_error_and_nothing_is_created(tmp_path):
    ro = _read_only_folder(tmp_path)
    try:
        for out in (ro / "out", ro / "new" / "deeper" / "out"):
            with pytest.raises(PermissionError, match="is not writable"):
                check_output_dir(out)
            with pytest.raises(PermissionError, match="is not writable"):
                with atomic_directory(out):
                    pass
            assert not out.exists() and not (ro / "new").exists()
    finally:
        if ro != Path("/sys"):
            ro.chmod(0o755)


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failure_while_writing_leaves_nothing_and_keeps_the_old_folder(tmp_path, error):
    new = tmp_path / "a" / "b" / "out"
    with pytest.raises(type(error)):
        with atomic_directory(new) as tmp:
            (tmp / "half.json").write_text("{")
            raise error
    assert os.listdir(tmp_path) == []  # the parents it created are gone too
    old = tmp_path / "old"
    _write_upx_folder(old)
    before = _tree(tmp_path)
    with pytest.raises(type(error)):
        with atomic_directory(old, force=True) as tmp:
            (tmp / "result.json").write_text("half")
            raise error
    assert _tree(tmp_path) == before and os.listdir(tmp_path) == ["old"]


def test_force_never_deletes_a_file_the_user_added_to_a_upx_folder(tmp_path):
    out = tmp_path / "out"
    _write_upx_folder(out)
    (out / "mynotes.txt").write_text("my notes")
    with pytest.raises(FileExistsError, match=r"would delete mynotes\.txt .* upx did not write"):
        with atomic_directory(out, force=True) as tmp:
            (tmp / "result.json").write_text("new")
    assert (out / "mynotes.txt").read_text() == "my notes"
    assert (out / "result.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (out / "mynotes.txt").unlink()  # only upx's files left: --force replaces them
    with atomic_directory(out, force=True) as tmp:
        (tmp / "result.json").write_text("new")
    assert (out / "result.json").read_text() == "new"


def test_a_marker_without_a_file_list_is_not_taken_as_permission(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER).write_text("This folder was written by upx\n")  # an older upx's marker
    (out / "result.json").write_text("{}")
    with pytest.raises(FileExistsError, match="older upx that kept no list"):
        check_output_dir(out, force=True)


@pytest.mark.parametrize("umask, folder_mode, file_mode", [
    (0o022, 0o755, 0o644), (0o077, 0o700, 0o600), (0o002, 0o775, 0o664)])
def test_outputs_respect_the_umask(tmp_path, umask, folder_mode, file_mode):
    old = os.umask(umask)
    try:
        with atomic_directory(tmp_path / "out") as tmp:
            (tmp / "result.json").write_text("{}")
        atomic_write_bytes(tmp_path / "table.csv", b"a,b\n")
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == folder_mode
    assert (tmp_path / "out" / "result.json").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "table.csv").stat().st_mode & 0o777 == file_mode
