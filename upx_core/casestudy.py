"""Helpers shared by the case-study and evaluation chapters (notebooks 04-07).

- :func:`probability_table`: the probabilities of a few classes before and after each mask, the
  numbers of the paper's Fig. 4; :func:`bracket_highest` formats them the paper's way, with each
  class's highest probability in brackets.
- :func:`over_trials`: a claim about a case study stated over several trials (seeds), as the
  mean with the smallest and largest trial beside it, since one trajectory of 200 Adam steps
  depends on the CPU's rounding.
- :func:`box_region`, :func:`region_share` and :func:`blur_region`: does a mask sit on a part of
  the image (a hand-drawn box), and what happens when only that part is blurred.
- :data:`PAPER_TABLES`, :func:`paper_layout` and :func:`paired_wins`: Tables 1 and 2 of the
  paper next to evaluation runs (rows model and source, one column per mode).
- :func:`provenance`, :func:`save_results` and :func:`load_results`: larger evaluation runs are
  stored as a CSV plus a small JSON sidecar (command, hardware, date, git commit, wall time), so
  a chapter can show them next to its own live run with where they came from.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from .config import OptimConfig
from .models import class_index
from .optimizer import perturbed_probs
from .result import UPXResult

__all__ = [
    "probability_table",
    "bracket_highest",
    "over_trials",
    "box_region",
    "region_share",
    "blur_region",
    "find_results_dir",
    "PAPER_TABLES",
    "MODE_LABELS",
    "paper_layout",
    "paired_wins",
    "hardware",
    "git_commit",
    "provenance",
    "save_results",
    "load_results",
]

BEFORE = "before (clean image)"


def probability_table(
    result: UPXResult,
    classes: Sequence[int | str],
    b: int = 0,
    labels: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Probabilities of ``classes`` on image ``b``: one row for the clean image, one per mask.

    Rows: ``"before (clean image)"``, then mask ``k`` of image ``b`` labelled ``labels[k]``
    (default: ``"<mode> -> <target>"``). Columns: the class names. Values: softmax
    probabilities in [0, 1], so a column read downwards shows how each mask moved that class.
    """
    cats = result.categories
    idx = [class_index(c, cats) for c in classes]
    names = [result.class_name(i) for i in idx]
    k_count = result.targets.shape[1]
    if labels is None:
        labels = [
            f"{result.settings[k].mode} \u2192 {result.class_name(int(result.targets[b, k]))}"
            for k in range(k_count)
        ]
    if len(labels) != k_count:
        raise ValueError(f"got {len(labels)} labels for {k_count} masks")
    if len(set(labels)) != len(labels) or BEFORE in labels:
        raise ValueError(f"row labels must be distinct and not {BEFORE!r}: {list(labels)}")
    cols = torch.tensor(idx)
    rows = torch.cat([result.probs_before[b, cols].unsqueeze(0), result.probs_after[b][:, cols]])
    return pd.DataFrame(rows.double().numpy(), index=[BEFORE, *labels], columns=names)


def bracket_highest(table: pd.DataFrame, digits: int = 3, percent: bool = False) -> pd.DataFrame:
    """Format ``table`` as strings with each column's highest value in brackets (paper, Fig. 4).

    ``percent`` writes 0.721 as 72.1 (the paper quotes "accuracy" in percent). Ties bracket
    every tied cell.
    """
    scale = 100.0 if percent else 1.0
    out = pd.DataFrame(index=table.index, columns=table.columns, dtype=object)
    for col in table.columns:
        values = table[col].astype(float)
        top = values.max()
        for row, v in values.items():
            text = f"{v * scale:.{digits}f}"
            out.loc[row, col] = f"[{text}]" if v == top else text
    return out


def over_trials(per_trial: pd.DataFrame, by: Sequence[str], columns: Sequence[str],
                spread: bool = True) -> pd.DataFrame:
    """Mean of ``columns`` over the trials of each ``by`` group, with their minimum and maximum.

    ``per_trial`` has one row per trial; the result has one row per group and, for each column,
    ``mean``, ``min`` and ``max`` (only the means unless ``spread``). Claims are asserted on the
    mean or on the worst trial, with the spread shown beside them.
    """
    stats = ["mean", "min", "max"] if spread else ["mean"]
    table = per_trial.groupby(list(by), sort=False)[list(columns)].agg(stats)
    return table.reindex(columns=list(columns), level=0)


def box_region(box: Sequence[int], size: Sequence[int] = (224, 224)) -> torch.Tensor:
    """An ``[H, W]`` map that is 1 inside ``box = (top, bottom, left, right)`` (pixel rows
    ``top:bottom``, columns ``left:right``) and 0 elsewhere."""
    top, bottom, left, right = (int(v) for v in box)
    h, w = int(size[0]), int(size[1])
    if not (0 <= top < bottom <= h and 0 <= left < right <= w):
        raise ValueError(f"box {tuple(box)} is empty or outside a {h} x {w} image")
    region = torch.zeros(h, w)
    region[top:bottom, left:right] = 1.0
    return region


def region_share(undesirable: torch.Tensor, region: torch.Tensor) -> dict[str, float]:
    """How much of a map of undesirable pixels (1 - M') lies inside ``region`` (``[H, W]``).

    ``share``: the region's part of the map's total mass; ``area``: the region's part of the
    image; ``enrichment``: share / area (1 means no more than a uniform map would put there).
    A map with no mass has share 0.
    """
    u = undesirable.detach().reshape(region.shape).double().clamp(0, 1)
    r = region.double()
    total = float(u.sum())
    share = float((u * r).sum()) / total if total > 0 else 0.0
    area = float(r.mean())
    return {"share": share, "area": area, "enrichment": share / area if area > 0 else 0.0}


def blur_region(model: torch.nn.Module, image: torch.Tensor, region: torch.Tensor,
                config: OptimConfig | None = None) -> torch.Tensor:
    """Class probabilities ``[C]`` of ``image`` with only ``region`` replaced by its blur.

    The same perturbation as Eq. 1 with a hand-drawn mask M' = 1 - region, so a claim about a
    part of the image ("the end of the horn") can be tested directly.
    """
    dev = next(model.parameters(), torch.empty(0)).device
    x = image.unsqueeze(0).to(dev, torch.float32) if image.dim() == 3 else image.to(dev)
    keep = (1.0 - region.to(dev, torch.float32)).reshape(1, 1, *region.shape[-2:])
    return perturbed_probs(model, x, keep, config)[0].cpu()


def find_results_dir(name: str = "results") -> Path | None:
    """The stored-results folder, whether a notebook runs from ``notebooks/`` (the book build)
    or from the repository root (papermill in CI): ``./name`` or ``./notebooks/name``."""
    for candidate in (Path.cwd() / name, Path.cwd() / "notebooks" / name):
        if candidate.is_dir():
            return candidate
    return None


# Tables 1 and 2 of the paper (1000 ImageNet images). Table 2 is read as a fraction of the
# image (0.0373 = 3.73 %), as its text says: "below 4%".
PAPER_TABLES = {
    "phi": {"VGG-19": {"ftc": 48.741, "fntc": 48.979},
            "ResNet-18": {"ftc": 44.898, "fntc": 44.688}},
    "ratio": {"VGG-19": {"ftc": 0.0373, "fntc": 0.0378},
              "ResNet-18": {"ftc": 0.0360, "fntc": 0.0398}},
}
MODE_LABELS = {"ftc": "F-TC", "fntc": "F-NTC", "baseline": "baseline (Eq. 3)",
               "random": "random (F-TC area)", "deletion": "deletion"}
_METRIC_COLUMN = {"phi": "relative_improvement", "ratio": "ratio",
                  "phi_thresholded": "relative_improvement_thresholded"}
_METRIC_NAME = {"phi": "phi (Eq. 8, %)", "ratio": "undesirable-pixel ratio",
                "phi_thresholded": "phi, only pixels above the threshold blurred (%)"}


def paper_layout(runs: dict[str, pd.DataFrame], metric: str = "phi",
                 paper: bool = True) -> pd.DataFrame:
    """Table 1 (``metric="phi"``) or Table 2 (``"ratio"``) in the paper's layout.

    ``runs`` maps a source label ("this run, 12 images") to an evaluation table (the rows of
    :func:`upx_core.evaluation.run_evaluation`). One row per (model, source), plus the paper's
    rows when ``paper``; one column per mode, named as in :data:`MODE_LABELS`, F-TC and F-NTC
    first; the last column ``images`` counts the distinct images of that row. phi is the mean
    relative improvement of Eq. 8 (percent), ratio the mean share of undesirable pixels.
    ``"phi_thresholded"`` is phi with only the pixels counted by the ratio blurred (the paper
    has no such table; a run without that column gives NaN).
    """
    if metric not in _METRIC_COLUMN:
        raise ValueError(f"metric must be one of {', '.join(_METRIC_COLUMN)}, got {metric!r}")
    col = _METRIC_COLUMN[metric]
    rows: dict[str, dict] = {}
    if paper and metric in PAPER_TABLES:
        for model, values in PAPER_TABLES[metric].items():
            rows[f"{model} (paper)"] = {**values, "images": 1000}
    for source, df in runs.items():
        for model, part in df.groupby("model", sort=False):
            if col not in part:
                part = part.assign(**{col: float("nan")})
            row = part.groupby("mode")[col].mean().to_dict()
            row["images"] = part["image_index"].nunique()
            rows[f"{model} ({source})"] = row
    modes = [m for m in MODE_LABELS if any(m in r for r in rows.values())]
    table = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=[*modes, "images"])
    table = table.rename(columns=MODE_LABELS)
    table["images"] = table["images"].astype("Int64")
    table.columns.name = _METRIC_NAME[metric]
    return table


def paired_wins(df: pd.DataFrame, a: str = "ftc", b: str = "random",
                column: str = "relative_improvement") -> float:
    """The share of (model, image, seed) where mode ``a`` scores higher than mode ``b``.

    A paired comparison on the same images, which a difference of means over a few images
    cannot give. Raises if the two modes share no (model, image, seed).
    """
    key = ["model", "image_index", "seed"]
    left = df[df["mode"] == a].set_index(key)[column]
    right = df[df["mode"] == b].set_index(key)[column]
    both = left.to_frame("a").join(right.to_frame("b"), how="inner")
    if both.empty:
        raise ValueError(f"modes {a!r} and {b!r} share no (model, image, seed)")
    return float((both["a"] > both["b"]).mean())


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
