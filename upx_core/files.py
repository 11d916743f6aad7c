"""Writing outputs so that an interrupted run never leaves a half-written file or folder, and
``--force`` never deletes anything upx did not write."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "check_output_file",
    "MARKER",
    "atomic_write_bytes",
    "atomic_directory",
    "check_output_dir",
    "OutputDir",
    "new_file_mode",
]

# Every folder atomic_directory writes holds this file, and in it the names of the files upx
# wrote there (the manifest): --force replaces only such a folder, and only while it holds
# nothing else, so a file a user added (notes beside the pictures) is never deleted.
MARKER = ".upx-output"
MARKER_TEXT = ("This folder was written by upx; 'upx explain --out THIS_FOLDER --force' may "
               "replace it.\n")
MANIFEST_HEADER = "upx wrote these files here (--force refuses while the folder holds others):"


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (os.umask can only
    be read by setting it, which another thread could see for an instant)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode(folder: bool = False) -> int:
    """The mode ``open()`` or ``mkdir()`` would give a new file (0666) or folder (0777) under
    the process's umask: 0644 / 0755 under umask 022. ``mkstemp`` and ``mkdtemp`` create
    0600 / 0700 whatever the umask; what upx renames into place gets this mode instead."""
    return (0o777 if folder else 0o666) & ~_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename it over ``path``.

    ``path`` is always either the old or the new file, never a part of one: the data is
    fsynced before the rename and the folder after it (so the rename survives a power cut).
    The file gets the mode a new file gets under the umask (0644 under umask 022; ``mkstemp``
    alone would leave it readable by its owner only).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, new_file_mode())
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


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


@dataclass(frozen=True)
class OutputDir:
    """An output folder that :func:`check_output_dir` accepted: its ``path``, whether ``force``
    may replace it, and the input files it must never hold (``protect``).

    :func:`atomic_directory` takes it as checked: it checks again only before it replaces an
    existing folder, which may have changed since.
    """

    path: Path
    force: bool = False
    protect: tuple[Path, ...] = ()

    def __str__(self) -> str:
        return str(self.path)


def check_output_dir(
    path: str | os.PathLike, force: bool = False, protect: Iterable[str | os.PathLike] = ()
) -> OutputDir:
    """Raise an OSError unless ``path`` can become an output folder; creates nothing.

    ``path`` must not exist, or with ``force`` be an empty folder or one that upx wrote (it
    holds the :data:`MARKER` file) and that holds nothing but the files upx listed in it. It
    is never a file, never one of ``protect`` (the input files) and never a folder holding
    one. The nearest existing folder above it must be
    a folder that this process can create a folder in (checked by creating and removing one).
    Returns what it checked, as an :class:`OutputDir`.
    """
    path = Path(path)
    protect = tuple(Path(p) for p in protect)
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
        if (path / MARKER).is_file():
            _check_only_upx_files(path)
    _check_writable_above(resolved, f"cannot create output folder {path}")
    return OutputDir(path, force, protect)


def _manifest(folder: Path) -> set[str] | None:
    """The names upx listed in ``folder``'s marker, or None for a marker without a list."""
    lines = (folder / MARKER).read_text(errors="replace").splitlines()
    if MANIFEST_HEADER not in lines:
        return None
    return {line for line in lines[lines.index(MANIFEST_HEADER) + 1:] if line}


def _check_only_upx_files(folder: Path) -> None:
    """FileExistsError unless every entry of ``folder`` is one that upx listed in its marker:
    replacing the folder would delete the others."""
    listed = _manifest(folder)
    others = sorted(p.name for p in folder.iterdir()
                    if p.name != MARKER and (listed is None or p.name not in listed))
    if listed is None and others:
        raise FileExistsError(
            f"--force: {folder} was written by an older upx that kept no list of its files, so "
            "replacing it could delete a file of yours; remove the folder yourself or choose "
            "another output folder")
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise FileExistsError(
            f"--force would delete {shown} in {folder}, which upx did not write; move "
            f"{'it' if len(others) == 1 else 'them'} out or choose another output folder")


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
    path: str | os.PathLike | OutputDir, force: bool = False,
    protect: Iterable[str | os.PathLike] = ()
) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it becomes ``path``.

    :func:`check_output_dir` decides, before anything is written and again before ``path`` is
    replaced, whether ``path`` may be written: an existing ``path`` raises FileExistsError
    unless ``force``, and ``force`` replaces only a folder that upx wrote (each one holds the
    :data:`MARKER` file, which lists the files written) while it holds nothing else, never a
    file or a folder holding one of ``protect``. An :class:`OutputDir` (what the check
    returned, with its own ``force`` and ``protect``) is not checked again before writing,
    only before the replace. The folder gets the mode ``mkdir`` would give it under the umask.
    The old folder is replaced only after the new one is complete. On any error (or Ctrl-C)
    the temporary folder and any parent folders created for it are removed and an existing
    ``path`` is left as it was.
    """
    checked = path if isinstance(path, OutputDir) else check_output_dir(path, force, protect)
    path, force, protect = checked.path, checked.force, checked.protect
    created = _missing_parents(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        os.chmod(tmp, new_file_mode(folder=True))  # mkdtemp's 0700 would ignore the umask
        (tmp / MARKER).write_text(MARKER_TEXT)
        yield tmp
        written = sorted(p.name for p in tmp.iterdir() if p.name != MARKER)
        (tmp / MARKER).write_text(MARKER_TEXT + MANIFEST_HEADER + "\n"
                                  + "".join(f"{name}\n" for name in written))
        if path.exists() or path.is_symlink():
            check_output_dir(path, force, protect)  # it may have changed since it was checked
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
