"""Where a stored result came from: the machine, the commit, the command and the wall time.

Larger evaluation runs are stored as a CSV plus a small JSON sidecar (:func:`save_results`), so a
chapter can show them beside its own live run and say where they came from; the benchmarks
record the same :func:`hardware` and :func:`git_commit`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
from pathlib import Path

import pandas as pd
import torch

__all__ = ["hardware", "git_commit", "provenance", "save_results", "load_results"]


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
    """Write ``df`` to ``path`` (CSV) and ``meta`` beside it as ``<stem>.json``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    sidecar = path.with_suffix(".json")
    sidecar.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
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
