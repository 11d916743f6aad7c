"""The tables the book and ``upx evaluate`` print: Tables 1 and 2 of the paper beside our runs,
with bootstrap intervals; paired comparisons between two modes (wins, a paired bootstrap, a sign
test); a claim's mean over trials with its spread; and Fig. 4's bracket for the highest
probability.

One mode order (:data:`MODE_ORDER`) and one set of labels (:data:`MODE_LABELS`) serve every table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..method.modes import MODE_REGISTRY

__all__ = [
    "MODE_ORDER",
    "MODE_LABELS",
    "PAPER_TABLES",
    "paper_layout",
    "summary_table",
    "paired_wins",
    "mode_mean",
    "over_trials",
    "bracket_highest",
    "bootstrap_interval",
    "interval_table",
    "paired_comparison",
    "paired_runs",
    "CONFIDENCE_BINS",
    "by_confidence",
    "ratio_summary",
    "sign_test",
    "run_label",
    "readings_table",
]

# The paper's two modes first, then its Eq. 3 and the random control, then any other mode.
MODE_ORDER = ("ftc", "fntc", "baseline", "random",
              *(m for m in MODE_REGISTRY if m not in ("ftc", "fntc", "baseline")))
# in MODE_ORDER, which figures that list the labels follow
MODE_LABELS = {m: "random (F-TC area)" if m == "random" else MODE_REGISTRY[m].label
               for m in MODE_ORDER}

# Tables 1 and 2 of the paper (1000 ImageNet images). Table 2 is read as a fraction of the
# image (0.0373 = 3.73 %), as its text says: "below 4%".
PAPER_TABLES = {
    "phi": {"VGG-19": {"ftc": 48.741, "fntc": 48.979},
            "ResNet-18": {"ftc": 44.898, "fntc": 44.688}},
    "ratio": {"VGG-19": {"ftc": 0.0373, "fntc": 0.0378},
              "ResNet-18": {"ftc": 0.0360, "fntc": 0.0398}},
}
_METRIC_COLUMN = {"phi": "relative_improvement", "ratio": "ratio",
                  "phi_thresholded": "relative_improvement_thresholded"}
_METRIC_NAME = {"phi": "phi (Eq. 8, %)", "ratio": "undesirable-pixel ratio",
                "phi_thresholded": "phi, only pixels above the threshold blurred (%)"}


def paper_layout(runs: dict[str, pd.DataFrame], metric: str = "phi",
                 paper: bool = True) -> pd.DataFrame:
    """Table 1 (``metric="phi"``) or Table 2 (``"ratio"``) in the paper's layout.

    ``runs`` maps a source label ("this run, 12 images") to an evaluation table (the rows of
    :func:`upx_core.evaluation.protocol.run_evaluation`). One row per (model, source), plus the
    paper's rows when ``paper``; one column per mode, named as in :data:`MODE_LABELS`, F-TC and
    F-NTC first; the last column ``images`` counts the distinct images of that row. phi is the mean
    relative improvement of Eq. 8 (percent), ratio the mean share of undesirable pixels.
    ``"phi_thresholded"`` is phi with only the pixels counted by the ratio blurred (the paper has no
    such table; a run without that column gives NaN).
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
    modes = [m for m in MODE_ORDER if any(m in r for r in rows.values())]
    table = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=[*modes, "images"])
    table = table.rename(columns=MODE_LABELS)
    table["images"] = table["images"].astype("Int64")
    table.columns.name = _METRIC_NAME[metric]
    return table


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Tables 1 and 2 in the paper's layout: one row per model, columns (metric, mode).

    ``phi``: the mean of Eq. 8's relative improvement (percent), ``ratio_fraction``: the mean
    share of undesirable pixels as a fraction (0.0373 is the paper's 3.73 %; the same unit and
    name as ``upx explain``'s result.json), ``phi_thresholded``: phi when only the pixels
    counted in the ratio are blurred, ``n``: images per mode.
    With several seeds, phi and ratio average over images and seeds alike.
    """
    if df.empty:
        raise ValueError("no rows to summarize")
    g = df.groupby(["model", "mode"])
    parts = {
        "phi": g["relative_improvement"].mean().unstack("mode"),
        "ratio_fraction": g["ratio"].mean().unstack("mode"),
        "phi_thresholded": g["relative_improvement_thresholded"].mean().unstack("mode"),
        "n": g["image_index"].nunique().unstack("mode"),
    }
    present = [m for m in MODE_ORDER if m in set(df["mode"])]
    table = pd.concat({k: v[present] for k, v in parts.items()}, axis=1)
    table.columns.names = ["metric", "mode"]
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


def mode_mean(df: pd.DataFrame, mode: str, column: str = "relative_improvement") -> float:
    """The mean of ``column`` over the rows of ``mode``: phi (Eq. 8) by default, or ``"ratio"``
    (Table 2), over every model, image and seed in ``df``. NaN when the mode has no rows."""
    return float(df.loc[df["mode"] == mode, column].mean())


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


def _per_image(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """One value per (model, image, mode): the mean over the image's trials (seeds), so that
    trials of one image, which are not independent samples, count once."""
    return df.groupby(["model", "image_index", "mode"], sort=False)[column].mean().reset_index()


def bootstrap_interval(values: Sequence[float], n_boot: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of ``values`` (one value per image).

    ``n_boot`` resamples with replacement from a seeded NumPy generator, so the interval is the
    same on every run. NaN values are dropped; fewer than two values give ``(nan, nan)``.
    """
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def interval_table(runs: dict[str, pd.DataFrame], metric: str = "phi", n_boot: int = 2000,
                   seed: int = 0) -> pd.DataFrame:
    """Table 1 (``"phi"``) or 2 (``"ratio"``) with a 95 % bootstrap interval per cell.

    One row per (model, source) and mode: the mean (as :func:`paper_layout` gives it, over
    images and trials), and the interval of that mean from resampling images
    (:func:`bootstrap_interval` over the per-image means). Long rather than wide, so the table
    fits a page with every interval shown.
    """
    if metric not in _METRIC_COLUMN:
        raise ValueError(f"metric must be one of {', '.join(_METRIC_COLUMN)}, got {metric!r}")
    col = _METRIC_COLUMN[metric]
    rows = []
    for source, df in runs.items():
        if col not in df:
            continue
        per_image = _per_image(df, col)
        for model in per_image["model"].unique():
            for mode in (m for m in MODE_ORDER if m in set(per_image["mode"])):
                part = per_image[(per_image["model"] == model) & (per_image["mode"] == mode)]
                if part.empty:
                    continue
                lo, hi = bootstrap_interval(part[col].to_numpy(), n_boot, seed)
                rows.append({"source": f"{model} ({source})", "mode": MODE_LABELS[mode],
                             "mean": mode_mean(df[df["model"] == model], mode, col),
                             "ci_low": lo, "ci_high": hi, "images": len(part)})
    return pd.DataFrame(rows)


def paired_comparison(df: pd.DataFrame, a: str, b: str, column: str = "relative_improvement",
                      n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mode ``a`` against mode ``b`` on the same images: a paired bootstrap and a sign test.

    Per (model, image), the trials' mean of ``column`` under each mode; then the mean of the
    differences ``a - b`` with its 95 % bootstrap interval, the share of images where ``a`` is
    higher (:func:`paired_wins` counts per trial instead), and the two-sided exact sign-test
    p-value of that share (ties dropped). Raises if the modes share no image.
    """
    per_image = _per_image(df[df["mode"].isin([a, b])], column)
    wide = per_image.pivot_table(index=["model", "image_index"], columns="mode", values=column)
    if a not in wide or b not in wide:
        raise ValueError(f"modes {a!r} and {b!r} share no (model, image)")
    diff = (wide[a] - wide[b]).dropna().to_numpy()
    if len(diff) == 0:
        raise ValueError(f"modes {a!r} and {b!r} share no (model, image)")
    return _paired_stats(diff, n_boot, seed)


def paired_runs(a: pd.DataFrame, b: pd.DataFrame, mode: str,
                column: str = "relative_improvement", n_boot: int = 2000,
                seed: int = 0) -> dict[str, float]:
    """Run ``a`` against run ``b`` (two objectives, two models' images...) for one ``mode``, on
    the images both hold: :func:`paired_comparison`'s statistics of the per-image differences
    ``a - b`` (each image's trials averaged first), plus both runs' means on those images
    (``mean_a``, ``mean_b``). Raises if the runs share no image of that mode."""
    per = [_per_image(df[df["mode"] == mode], column).groupby("image_index")[column].mean()
           for df in (a, b)]
    both = pd.concat(per, axis=1, keys=["a", "b"], join="inner").dropna()
    if both.empty:
        raise ValueError(f"the two runs share no image of mode {mode!r}")
    return {**_paired_stats((both["a"] - both["b"]).to_numpy(), n_boot, seed),
            "mean_a": float(both["a"].mean()), "mean_b": float(both["b"].mean())}


def _paired_stats(diff: np.ndarray, n_boot: int, seed: int) -> dict[str, float]:
    lo, hi = bootstrap_interval(diff, n_boot, seed)
    wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
    return {"images": len(diff), "mean_difference": float(diff.mean()), "ci_low": lo,
            "ci_high": hi, "share_a_higher": wins / len(diff),
            "sign_test_p": sign_test(wins, losses)}


# f_h(X) strata: the top class's probability on the clean image, which decides how much is
# left to gain (1 - f_h(X) is Eq. 8's denominator).
CONFIDENCE_BINS = (0.0, 0.3, 0.6, 0.9, 1.0)


def by_confidence(df: pd.DataFrame, bins: Sequence[float] = CONFIDENCE_BINS) -> pd.DataFrame:
    """Tables 1 and 2 per stratum of the model's confidence f_h(X) before any blur.

    One row per (stratum, mode): the stratum's ``images`` and their ``share`` of all images of
    that mode, ``phi`` (Eq. 8, %) and ``ratio_pct`` (Table 2, in percent), means over the
    stratum's images (trials averaged first). Strata are ``[lo, hi)``, the last ``[lo, hi]``.
    """
    rows = []
    for mode in (m for m in MODE_ORDER if m in set(df["mode"])):
        part = df[df["mode"] == mode].groupby("image_index")[
            ["prob_before", "relative_improvement", "ratio"]].mean()
        cut = pd.cut(part["prob_before"], list(bins), right=False, include_lowest=True)
        cut = cut.cat.rename_categories(
            [f"{lo:g}-{hi:g}" for lo, hi in zip(bins[:-1], bins[1:], strict=True)])
        cut[part["prob_before"] >= bins[-1]] = cut.cat.categories[-1]  # f_h(X) = 1 closes it
        for stratum, group in part.groupby(cut, observed=False):
            rows.append({"f_h(X)": stratum, "mode": MODE_LABELS[mode], "images": len(group),
                         "share": len(group) / len(part),
                         "phi": float(group["relative_improvement"].mean()),
                         "ratio_pct": 100 * float(group["ratio"].mean())})
    return pd.DataFrame(rows)


def ratio_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Table 2 read two ways, per mode: the mean ratio over all masks (``ratio_pct``, in
    percent), the share of masks with no pixel past the threshold (``empty_share``: an empty
    mask is "below 4 %" trivially), and the mean and median ratio of the other masks
    (``nonempty_ratio_pct``, ``nonempty_median_pct``)."""
    rows = []
    for mode in (m for m in MODE_ORDER if m in set(df["mode"])):
        ratio = df.loc[df["mode"] == mode, "ratio"]
        found = ratio[ratio > 0]
        rows.append({"mode": MODE_LABELS[mode], "masks": len(ratio),
                     "ratio_pct": 100 * float(ratio.mean()),
                     "empty_share": float((ratio == 0).mean()),
                     "nonempty_ratio_pct": 100 * float(found.mean()),
                     "nonempty_median_pct": 100 * float(found.median())})
    return pd.DataFrame(rows)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign-test p-value: the chance, under a fair coin, of a split at least as
    uneven as ``wins`` : ``losses``."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


_OBJECTIVE_WORDS = {"prob": "probability", "log_prob": "log-probability", "logit": "logit"}


def run_label(df: pd.DataFrame) -> str:
    """A stored run in words for a table or legend: ``"Lite0, probability, 200 images"``."""
    models = sorted(set(df["model"].astype(str)))
    objectives = sorted(set(df["objective"].astype(str)))
    model = "/".join(m.replace("efficientnet_lite", "Lite") for m in models)
    objective = "/".join(_OBJECTIVE_WORDS.get(o, o) for o in objectives)
    return f"{model}, {objective}, {df['image_index'].nunique()} images"


READING_COLUMNS = ["objective", "fntc_norm", "gamma", "lambda2", "mode"]


def readings_table(rows: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per reading of the paper (``objective``, ``fntc_norm``, ``gamma``, ``lambda2``,
    ``mode``) in ``rows`` (evaluation rows of several settings, as
    ``benchmarks/factorial.py`` stores them): its ``images``, ``phi`` (Eq. 8, %) and
    ``ratio_pct`` (Table 2, %) over images (trials averaged first), each with its 95 %
    bootstrap interval (``phi_lo``...). ``fntc_norm`` is blank for the modes it does not touch.
    """
    df = rows.copy()
    df["fntc_norm"] = df["fntc_norm"].where(df["mode"] == "fntc", "")
    out = []
    for key, part in df.groupby(READING_COLUMNS, sort=True):
        per_image = part.groupby("image_index")[["relative_improvement", "ratio"]].mean()
        row = dict(zip(READING_COLUMNS, key, strict=True))
        row["images"] = len(per_image)
        for name, column, scale in (("phi", "relative_improvement", 1),
                                    ("ratio_pct", "ratio", 100)):
            values = scale * per_image[column].to_numpy()
            lo, hi = bootstrap_interval(values, n_boot, seed)
            row.update({name: float(values.mean()), f"{name}_lo": lo, f"{name}_hi": hi})
        out.append(row)
    return pd.DataFrame(out)
