"""Where a stored result came from: the machine, the commit, the command and the wall time.

Larger evaluation runs are stored as a CSV plus a small JSON sidecar (:func:`save_results`), so a
chapter can show them beside its own live run and say where they came from; the benchmarks
record the same :func:`hardware` and :func:`git_commit`. Every row of ``upx evaluate``'s CSV
records the segment of the run that computed it (:func:`segment`): the commit, and the
:func:`optimizer_version` that decides whether a stopped run may be resumed by this code.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path

import pandas as pd
import torch

__all__ = ["hardware", "git_commit", "MASK_FOLDER", "optimizer_version", "segment",
           "provenance", "save_results", "load_results"]

# The folder whose code decides a mask's numbers: the equations, their optimization, the forward
# passes, BatchNorm folding, the classifiers and their weights, the settings and the metrics
# stored beside the masks. A new module there is hashed without anyone listing it.
MASK_FOLDER = "method"


def hardware() -> str:
    """A one-line description of this machine: CPU model name and core count, and any GPU."""
    cpu = platform.processor() or platform.machine()
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in text.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.SubprocessError):
        pass
    desc = f"{cpu}, {os.cpu_count()} logical CPUs"
    if torch.cuda.is_available():
        desc += f", GPU {torch.cuda.get_device_name(0)}"
    return desc


def git_commit(repo: str | os.PathLike | None = None) -> str | None:
    """The checked-out commit (with ``+dirty`` when tracked files changed), or ``None``."""
    cwd = Path(repo) if repo is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty.strip() else "")


def optimizer_version() -> str:
    """A short, stable name of the code that computes the masks: ``sha256:`` and the first 12
    hex digits of the SHA-256 of the source of every module in :data:`MASK_FOLDER` (``method/``),
    read now from this package.

    A resumed evaluation must not mix rows computed by different code under one CSV, and the
    commit cannot decide that: it changes with every unrelated edit (a README, a chapter, a
    test) and is unknown outside a git checkout. The source of the modules that compute a mask
    changes only when they do. Any edit to them counts, a docstring or a comment too: telling
    those apart would need a parser's judgement of what changes a number, and a needless
    refusal costs one ``--force-resume``, a silent mix a wrong table. The ``sha256:`` prefix
    keeps a plain ``pd.read_csv`` from reading a digits-only (or ``123e4...``) hash as a number.
    """
    digest = hashlib.sha256()
    folder = Path(__file__).resolve().parents[1] / MASK_FOLDER
    for path in sorted(folder.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return "sha256:" + digest.hexdigest()[:12]


def segment() -> dict[str, str]:
    """The code computing rows now, as ``upx evaluate`` records it in each row: ``git_commit``
    (:func:`git_commit`, ``"unknown"`` outside a git checkout) and ``optimizer_version``."""
    return {"git_commit": git_commit() or "unknown", "optimizer_version": optimizer_version()}


def provenance(command: str, wall_s: float | None = None, **extra) -> dict:
    """Where a stored result came from: command, hardware, UTC date, git commit, wall time."""
    meta = {
        "command": command,
        "hardware": hardware(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "wall_s": None if wall_s is None else round(float(wall_s), 1),
    }
    meta.update(extra)
    return meta


def save_results(df: pd.DataFrame, path: str | os.PathLike, meta: dict) -> tuple[Path, Path]:
    """Write ``df`` to ``path`` (CSV) and ``meta`` beside it as ``<stem>.json``, each file
    atomically: a run killed while saving leaves each file whole (old or new), never half a
    table."""
    # imported here: the module imports nothing relative at the top, so that a copy of the
    # package can load it alone to compute that copy's optimizer_version (tests/test_store.py)
    from ..files import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, df.to_csv(index=False).encode())
    sidecar = path.with_suffix(".json")
    atomic_write_bytes(sidecar, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    return path, sidecar


def load_results(folder: str | os.PathLike) -> list[tuple[str, pd.DataFrame, dict]]:
    """Every ``*.csv`` in ``folder`` with its JSON sidecar: ``(name, table, metadata)``.

    A CSV without a sidecar is still returned, with metadata ``{"provenance": "unknown"}``, so
    a chapter can show it but must say that its origin is not recorded. A missing folder gives
    an empty list.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = []
    for csv in sorted(folder.glob("*.csv")):
        sidecar = csv.with_suffix(".json")
        meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {"provenance": "unknown"}
        out.append((csv.stem, pd.read_csv(csv), meta))
    return out
