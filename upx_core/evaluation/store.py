"""The evaluation's results on disk: one resumable CSV of rows keyed by (image, mode, seed).

Its one job is to keep those rows safe and consistent between runs. Every write replaces the
whole file atomically (:func:`upx_core.files.atomic_write_bytes`), so a crash leaves the previous
or the new file, never half a row; a resumed run reads the rows already there, refuses a file
written with other run settings (:data:`RUN_COLUMNS`), and under torchrun each rank writes its
own part (:func:`part_path`) which :func:`merge_parts` folds into the main file. Two runs that
write the same file at once (``upx evaluate --modes ftc`` and ``--modes fntc``) add their rows
under a lock (:func:`add_rows`): each write merges with what is on disk, so neither loses the
other's rows. :mod:`upx_core.evaluation.protocol` decides which rows to compute; this module stores
them.

A run can be stopped and resumed many times, by other code each time: every row records the
segment that computed it (:data:`SEGMENT_COLUMNS`: the git commit and the optimizer version of
:func:`upx_core.evaluation.provenance.optimizer_version`). Rows of another optimizer version are
refused (:func:`check_version`) unless the resume is forced; then both kinds stay, each row with its
own version. A CSV from before these columns reads as version ``unknown``.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..files import atomic_write_bytes

__all__ = [
    "KEY",
    "RUN_COLUMNS",
    "SEGMENT_COLUMNS",
    "UNKNOWN",
    "COLUMNS",
    "part_path",
    "part_paths",
    "write_rows",
    "add_rows",
    "locked",
    "read_rows",
    "check_compatible",
    "check_version",
    "existing_rows",
    "remove_stale",
    "merge_parts",
    "sort_rows",
    "frame",
    "keys",
    "select",
    "concat",
]

KEY = ["image_index", "mode", "seed"]
# Columns that must agree between an existing CSV and a resumed run (else the rows would mix
# two different experiments under one key).
RUN_COLUMNS = ["model", "threshold", "iterations", "lr", "mask_size", "sigma", "kernel_size",
               "objective", "reduction", "ftc_form", "fntc_norm", "init_noise", "lambda1",
               "lambda2", "beta", "gamma", "precision"]
# Run columns added later, with the value every row written before them was computed with.
ADDED_COLUMNS = {"fntc_norm": "abs"}
# Which code computed a row (recorded, not run settings: a forced resume mixes them).
SEGMENT_COLUMNS = ["git_commit", "optimizer_version"]
UNKNOWN = "unknown"  # a segment column's value in a CSV written before it existed
COLUMNS = [
    *KEY, "file", "model", "target", "target_name", "prob_before", "prob_after",
    "relative_improvement", "ratio", "relative_improvement_thresholded", "threshold",
    "iterations", "lr", "mask_size", "sigma", "kernel_size", "objective", "reduction",
    "ftc_form", "fntc_norm", "init_noise", "lambda1", "lambda2", "beta", "gamma", "precision",
    "channels_last", "device", *SEGMENT_COLUMNS,
]


def part_path(out_csv: str | os.PathLike, rank: int) -> Path:
    """The file rank ``rank`` writes under torchrun: ``<out_csv>.rank<R>.csv``."""
    out = Path(out_csv)
    return out.with_name(f"{out.name}.rank{rank}.csv")


def part_paths(out_csv: Path) -> list[Path]:
    """The rank parts of ``out_csv`` that exist, by rank."""
    prefix = f"{out_csv.name}.rank"
    found = [p for p in out_csv.parent.glob(f"{out_csv.name}.rank*.csv")
             if p.name[len(prefix):-4].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(prefix):-4]))


def write_rows(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` so that ``path`` is always either the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


@contextlib.contextmanager
def locked(path: Path):
    """Hold an exclusive lock for writing ``path``: a lock on its folder, since ``path`` itself
    is replaced by every write (a lock on it would be on a file that is gone), and a lock file
    beside it would be left behind. Runs writing other files in the folder wait their turn."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def add_rows(df: pd.DataFrame, path: Path, run: dict, mode_order: Sequence[str],
             replace: bool = False, force_resume: bool = False) -> pd.DataFrame:
    """Merge ``df`` into the rows on disk at ``path`` under its lock, and write them back.

    Rows another process wrote since this one last read are kept; for a key both hold, the
    rows already on disk win (the same key means the same image, mode, seed and settings).
    ``replace``: ignore what is on disk (a run that starts afresh, at its first write). A file
    whose rows disagree with ``run`` (another run's settings) is refused, and unless
    ``force_resume`` one with rows of another ``run["optimizer_version"]``. Returns all rows.
    """
    with locked(path):
        on_disk = read_rows(path) if path.exists() and not replace else frame([])
        if not on_disk.empty:
            check_compatible(on_disk, run, path)
            if not force_resume:
                check_version(on_disk, run["optimizer_version"], path)
        rows = sort_rows(concat([on_disk, df]), mode_order)
        write_rows(rows, path)
    return rows


def read_rows(path: Path) -> pd.DataFrame:
    """The rows of an evaluation CSV (an empty file is no rows); another CSV is an error.

    A CSV written before :data:`SEGMENT_COLUMNS` existed gets them, as :data:`UNKNOWN`; one
    written before a column of :data:`ADDED_COLUMNS` existed gets the value it was computed with.
    """
    try:
        # as text: a git commit or a version made of digits must not become a number
        df = pd.read_csv(path, keep_default_na=False, dtype=dict.fromkeys(SEGMENT_COLUMNS, str))
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=COLUMNS)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not an evaluation CSV ({type(err).__name__})") from None
    missing = [c for c in COLUMNS if c not in df.columns
               and c not in SEGMENT_COLUMNS and c not in ADDED_COLUMNS]
    if missing:
        raise ValueError(f"{path} is not an evaluation CSV (missing columns {missing})")
    for col, value in ADDED_COLUMNS.items():
        if col not in df.columns:
            df[col] = value
    for col in SEGMENT_COLUMNS:
        if col not in df.columns:
            df[col] = UNKNOWN
    return df


def check_compatible(df: pd.DataFrame, run: dict, path: Path) -> None:
    """Raise ValueError if a row of ``df`` disagrees with ``run`` on a :data:`RUN_COLUMNS`."""
    for col in RUN_COLUMNS:
        want = run[col]
        for have in df[col].unique().tolist():  # Python values: the message shows 3.0
            same = (math.isclose(float(have), float(want), rel_tol=1e-9)
                    if isinstance(want, (int, float)) else str(have) == str(want))
            if not same:
                raise ValueError(
                    f"{path} holds rows with {col}={have!r}, this run has {col}={want!r}; "
                    "write to another out_csv or pass resume=False to start it afresh"
                )


def check_version(df: pd.DataFrame, version: str, path: Path) -> None:
    """Raise ValueError if a row of ``df`` was computed by an optimizer version other than
    ``version``: resuming would mix two codes' numbers in one table without saying so."""
    others = sorted(set(df["optimizer_version"].astype(str)) - {version})
    if others:
        raise ValueError(
            f"{path} holds rows of optimizer version {', '.join(others)}, this run is optimizer "
            f"version {version}; pass --force-resume (force_resume=True) to add its rows beside "
            "them, each row keeping its own version, or write to another out_csv"
        )


def sort_rows(df: pd.DataFrame, mode_order: Sequence[str]) -> pd.DataFrame:
    """``df`` sorted by image, mode (in ``mode_order``) and seed, with a fresh index."""
    if df.empty:
        return df.reset_index(drop=True)
    order = {m: i for i, m in enumerate(mode_order)}
    out = df.sort_values(KEY, key=lambda s: s.map(order) if s.name == "mode" else s,
                         kind="stable")
    return out.reset_index(drop=True)


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


def keys(df: pd.DataFrame) -> set[tuple[int, str, int]]:
    """The (image, mode, seed) keys of ``df``."""
    if df.empty:
        return set()
    return set(zip(df["image_index"].astype(int), df["mode"].astype(str),
                   df["seed"].astype(int), strict=True))


def select(df: pd.DataFrame, wanted: set) -> pd.DataFrame:
    """The rows of ``df`` whose key is in ``wanted``."""
    if df.empty:
        return df
    row_keys = list(zip(df["image_index"].astype(int), df["mode"].astype(str),
                        df["seed"].astype(int), strict=True))
    return df[[k in wanted for k in row_keys]]


def concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The frames' rows, the first of each key kept."""
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.concat(frames, ignore_index=True)
    return out.drop_duplicates(subset=KEY, keep="first").reset_index(drop=True)


def remove_stale(out: Path, with_out: bool) -> None:
    """Start ``out`` afresh: remove the rank parts a stopped torchrun run left, and ``out``
    itself if ``with_out`` (a torchrun run, whose ranks write only their parts; a single process
    replaces ``out`` at its first write instead, so a crash before it keeps the old rows)."""
    for p in part_paths(out):
        p.unlink(missing_ok=True)
    if with_out:
        out.unlink(missing_ok=True)


def existing_rows(out: Path | None, work: Path | None, run: dict, sharded: bool,
                  force_resume: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every row on disk, the rows already in this process's own file ``work``).

    ``out`` and its rank parts are read, each checked against ``run``: its settings, and unless
    ``force_resume`` its optimizer version. ``sharded``: each process writes its own part
    ``work`` (under torchrun), so its own rows are that part's alone. ``out=None``: no rows.
    """
    if out is None:
        return frame([]), frame([])
    frames = {p: read_rows(p) for p in [out, *part_paths(out)] if p.exists()}
    for p, df in frames.items():
        if not df.empty:
            check_compatible(df, run, p)
            if not force_resume:
                check_version(df, run["optimizer_version"], p)
    existing = concat(list(frames.values()))
    own = frames.get(work, frame([])) if sharded else existing
    return existing, own


def merge_parts(out: Path, mode_order: Sequence[str]) -> pd.DataFrame:
    """Fold ``<out>.rank*.csv`` into ``out`` (sorted), then remove the parts; all the rows."""
    parts = part_paths(out)
    frames = [read_rows(p) for p in [out, *parts] if p.exists()]
    full = sort_rows(concat(frames), mode_order)
    if parts:
        write_rows(full, out)
        for p in parts:
            p.unlink(missing_ok=True)
    return full
