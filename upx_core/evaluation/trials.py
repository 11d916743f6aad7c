"""How alike the trials of a mask are, summarized over images with intervals (Fig. 2 against
Fig. 3).

The rows are pairs of trials of one image and mode, as
:func:`upx_core.method.metrics.consistency_pairs` gives them (``pearson``, ``iou``, ``both_empty``)
with the ``image_index`` and ``mode`` (and any grouping columns such as ``reading``). A pair of
two empty regions has no IoU and is counted apart: two masks that found nothing agree on nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from .tables import MODE_LABELS, bootstrap_interval, sign_test

__all__ = ["agreement_summary", "agreement_paired", "agreement_table"]

MEASURES = ("pearson", "iou")


def _per_image(pairs: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Each image's mean over its defined pairs, per measure (NaN when none is defined)."""
    return pairs.groupby([*by, "mode", "image_index"])[list(MEASURES)].mean().reset_index()


def agreement_summary(pairs: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (``by``..., mode): the mean Pearson r and IoU over images (each image's pairs
    averaged first, pairs where the measure is undefined left out), their 95 % bootstrap
    intervals, how many images each mean has, and the share of pairs where both regions are
    empty (``both_empty_share``)."""
    per_image = _per_image(pairs, by)
    rows = []
    for key, part in per_image.groupby([*by, "mode"], sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip([*by, "mode"], key, strict=True))
        row["mode"] = MODE_LABELS.get(row["mode"], row["mode"])
        source = pairs
        for col, value in zip([*by, "mode"], key, strict=True):
            source = source[source[col] == value]
        row["both_empty_share"] = float(source["both_empty"].mean())
        for m in MEASURES:
            values = part[m].dropna().to_numpy()
            lo, hi = bootstrap_interval(values)
            row.update({m: float(values.mean()) if len(values) else float("nan"),
                        f"{m}_lo": lo, f"{m}_hi": hi, f"{m}_images": len(values)})
        rows.append(row)
    return pd.DataFrame(rows)


def agreement_paired(pairs: pd.DataFrame, a: str, b: str,
                     by: Sequence[str] = ()) -> pd.DataFrame:
    """Mode ``a`` against mode ``b`` on the same images, per (``by``..., measure): the mean of
    the per-image differences ``a - b`` with its 95 % bootstrap interval, the share of images
    where ``a`` agrees more, and the exact sign-test p (images where either is undefined left
    out)."""
    per_image = _per_image(pairs, by)
    rows = []
    for key, part in per_image.groupby(list(by), sort=False) if by else [((), per_image)]:
        key = key if isinstance(key, tuple) else (key,)
        wide = part.pivot_table(index="image_index", columns="mode", values=list(MEASURES))
        for m in MEASURES:
            diff = (wide[(m, a)] - wide[(m, b)]).dropna().to_numpy()
            lo, hi = bootstrap_interval(diff)
            wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
            rows.append({**dict(zip(by, key, strict=True)), "measure": m,
                         "images": len(diff), "mean_difference": float(diff.mean()),
                         "ci_low": lo, "ci_high": hi,
                         "share_a_higher": wins / len(diff) if len(diff) else float("nan"),
                         "sign_test_p": sign_test(wins, losses)})
    return pd.DataFrame(rows)


def agreement_table(summary: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """:func:`agreement_summary` for reading: its grouping columns and ``mode``, each measure
    as ``"mean (low-high)"`` (``Pearson r (95 %)``, ``IoU (95 %)``), the ``images with an IoU``
    and the share of pairs where ``both`` trials are ``empty``."""
    by = list(summary.columns[:summary.columns.get_loc("mode") + 1])
    shown = summary[by].copy()
    for name, col in (("Pearson r", "pearson"), ("IoU", "iou")):
        shown[f"{name} (95 %)"] = [
            f"{m:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"
            for m, lo, hi in zip(summary[col], summary[f"{col}_lo"], summary[f"{col}_hi"],
                                 strict=True)]
    shown["images with an IoU"] = summary["iou_images"]
    shown["both empty"] = summary["both_empty_share"]
    return shown
