"""Writing outputs so that an interrupted run never leaves a half-written file or folder, and
``--force`` never deletes anything upx did not write."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = [
    "check_output_file",
    "MARKER",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_directory",
    "check_output_dir",
]

# Every folder atomic_directory writes holds this file; force replaces only such folders.
MARKER = ".upx-output"
MARKER_TEXT = ("This folder was written by upx; 'upx explain --out THIS_FOLDER --force' may "
               "replace it.\n")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename it over ``path``.

    ``path`` is always either the old or the new file, never a part of one: the data is
    fsynced before the rename and the folder after it (so the rename survives a power cut).
    The file gets mode 0644 (``mkstemp`` alone would leave it readable by its owner only).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_output_dir(
    path: str | os.PathLike, force: bool = False, protect: Iterable[str | os.PathLike] = ()
) -> Path:
    """Raise an OSError unless ``path`` can become an output folder; creates nothing.

    ``path`` must not exist, or with ``force`` be a folder that upx wrote (it holds the
    :data:`MARKER` file) or an empty one. It is never a file, never one of ``protect`` (the
    input files) and never a folder holding one. The nearest existing folder above it must be
    a folder that this process can create a folder in (checked by creating and removing one).
    Returns ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    resolved = path.resolve()
    for p in protect:
        kept = Path(p).resolve()
        if _within(kept, resolved):
            what = "is" if kept == resolved else "contains"
            raise FileExistsError(
                f"output folder {path} {what} the input image {p}; choose another output folder")
    if path.is_symlink() and not path.exists():
        raise FileExistsError(f"output folder {path} is a broken symbolic link")
    if path.exists():
        if not path.is_dir():
            raise FileExistsError(
                f"{path} is a file, not an output folder; upx never replaces files")
        if not force:
            raise FileExistsError(
                f"output folder {path} already exists (use --force to replace it)")
        if not (path / MARKER).is_file() and any(path.iterdir()):
            raise FileExistsError(
                f"--force replaces only a folder that upx wrote, and {path} has no {MARKER} "
                "file; choose another output folder or remove this one yourself")
    _check_writable_above(resolved, f"cannot create output folder {path}")
    return path


def check_output_file(path: str | os.PathLike) -> Path:
    """Raise an OSError unless ``path`` can be written as a file (a results CSV); creates nothing.

    ``path`` must not be a folder, and the nearest existing folder above it must be a folder
    this process can write a file in (checked by creating and removing one), so a run fails
    before it computes anything rather than after.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; --out names the results file (a .csv)")
    _check_writable_above(path.resolve(), f"cannot write {path}")
    return path


def _check_writable_above(resolved: Path, doing: str) -> None:
    """The nearest existing folder above ``resolved`` must be a folder this process can create
    something in (checked by creating and removing a folder); ``doing`` starts the error."""
    above = resolved.parent
    while not above.exists():
        above = above.parent
    if not above.is_dir():
        raise NotADirectoryError(f"{doing}: {above} is a file")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".upx-probe.", dir=above))
    except OSError as err:
        cls = PermissionError if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else OSError
        raise cls(f"{doing}: folder {above} is not writable ({err.strerror or err})") from None


def _missing_parents(path: Path) -> list[Path]:
    """The folders above ``path`` that do not exist yet, deepest first."""
    missing = []
    for parent in path.absolute().parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing


@contextlib.contextmanager
def atomic_directory(
    path: str | os.PathLike, force: bool = False, protect: Iterable[str | os.PathLike] = ()
) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it becomes ``path``.

    :func:`check_output_dir` decides, before anything is written and again before ``path`` is
    replaced, whether ``path`` may be written: an existing ``path`` raises FileExistsError
    unless ``force``, and ``force`` replaces only a folder that upx wrote (each one holds the
    :data:`MARKER` file), never a file or a folder holding one of ``protect``. The old folder is
    replaced only after the new one is complete. On any error (or Ctrl-C) the temporary folder
    and any parent folders created for it are removed and an existing ``path`` is left as it was.
    """
    path = Path(path)
    protect = list(protect)
    check_output_dir(path, force, protect)
    created = _missing_parents(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        (tmp / MARKER).write_text(MARKER_TEXT)
        yield tmp
        if path.exists() or path.is_symlink():
            check_output_dir(path, force, protect)  # it may have changed while tmp was written
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old / path.name, path)
                old.rmdir()
                raise
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def check_image_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path if it is a file; a folder is IsADirectoryError, a missing file
    FileNotFoundError. Needs no torch, so ``upx explain`` answers a typo at once."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not an image file")
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    return path
