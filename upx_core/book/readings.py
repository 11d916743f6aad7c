"""The readings the paper leaves open, against its Tables 1-2: which setting lands where.

``benchmarks/factorial.py`` runs every reading (objective x F-NTC's norm x gamma, and a
lambda2 sweep for F-TC and Eq. 3) on the same images; :func:`upx_core.evaluation.tables.
readings_table` turns its rows into one row per reading with phi (Eq. 8) and the ratio (Table
2) and their intervals. This module places those rows against the paper's four (ratio, phi)
pairs: :func:`paper_box` is the region they span, :func:`against_paper` says which readings'
intervals reach it, and :func:`readings_figure` draws phi against the ratio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from ..evaluation.tables import MODE_LABELS, PAPER_TABLES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["paper_points", "paper_box", "against_paper", "reading_label", "readings_figure"]


def paper_points() -> pd.DataFrame:
    """The paper's four (model, mode, ratio %, phi %) pairs of Tables 1 and 2."""
    return pd.DataFrame([
        {"model": model, "mode": mode, "ratio_pct": 100 * PAPER_TABLES["ratio"][model][mode],
         "phi": PAPER_TABLES["phi"][model][mode]}
        for model in PAPER_TABLES["phi"] for mode in PAPER_TABLES["phi"][model]])


def paper_box() -> dict[str, float]:
    """The smallest box holding the paper's four pairs: ratio 3.60-3.98 %, phi 44.69-48.98."""
    points = paper_points()
    return {"ratio_lo": float(points["ratio_pct"].min()),
            "ratio_hi": float(points["ratio_pct"].max()),
            "phi_lo": float(points["phi"].min()), "phi_hi": float(points["phi"].max())}


def against_paper(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (one row per reading, as :func:`readings_table` gives it) with three columns:
    ``phi_reaches`` and ``ratio_reaches`` (the reading's 95 % interval overlaps the paper's
    range of that measure, :func:`paper_box`) and ``both`` (the two together)."""
    box = paper_box()
    out = table.copy()
    out["phi_reaches"] = (out["phi_hi"] >= box["phi_lo"]) & (out["phi_lo"] <= box["phi_hi"])
    out["ratio_reaches"] = ((out["ratio_pct_hi"] >= box["ratio_lo"])
                            & (out["ratio_pct_lo"] <= box["ratio_hi"]))
    out["both"] = out["phi_reaches"] & out["ratio_reaches"]
    return out


def reading_label(row: pd.Series) -> str:
    """A reading in words: ``"F-NTC, |dy|, gamma 0.3, log-prob"``."""
    objective = "log-prob" if row["objective"] == "log_prob" else "prob"
    if row["mode"] == "fntc":
        norm = "|dy|" if row["fntc_norm"] == "abs" else "dy²"
        return f"F-NTC, {norm}, gamma {row['gamma']:g}, {objective}"
    return f"{MODE_LABELS.get(row['mode'], row['mode'])}, lambda2 {row['lambda2']:g}, {objective}"


def readings_figure(table: pd.DataFrame) -> Figure:
    """phi (Eq. 8) against the ratio (Table 2), one point per reading with its 95 % intervals
    as bars, one panel per objective; the paper's four pairs as black stars and their box
    shaded."""
    import matplotlib.pyplot as plt

    families = {("fntc", "abs"): ("F-NTC, |dy|, by gamma", "tab:blue", "o"),
                ("fntc", "squared"): ("F-NTC, dy², by gamma", "tab:cyan", "s"),
                ("ftc", ""): ("F-TC, by lambda2", "tab:orange", "^"),
                ("baseline", ""): ("baseline (Eq. 3), by lambda2", "tab:gray", "v")}
    objectives = [o for o in ("prob", "log_prob") if o in set(table["objective"])]
    fig, axes = plt.subplots(1, len(objectives), figsize=(4.6 * len(objectives), 4.0),
                             sharey=True, squeeze=False, layout="constrained")
    box, points = paper_box(), paper_points()
    for ax, objective in zip(axes[0], objectives, strict=True):
        ax.axvspan(box["ratio_lo"], box["ratio_hi"], ymin=0, ymax=1, color="0.92", zorder=0)
        ax.axhspan(box["phi_lo"], box["phi_hi"], color="0.92", zorder=0)
        part = table[table["objective"] == objective]
        for (mode, norm), (label, colour, marker) in families.items():
            rows = part[(part["mode"] == mode) & (part["fntc_norm"].fillna("") == norm)]
            if rows.empty:
                continue
            ax.errorbar(rows["ratio_pct"], rows["phi"],
                        xerr=[rows["ratio_pct"] - rows["ratio_pct_lo"],
                              rows["ratio_pct_hi"] - rows["ratio_pct"]],
                        yerr=[rows["phi"] - rows["phi_lo"], rows["phi_hi"] - rows["phi"]],
                        fmt=marker, color=colour, ecolor=colour, elinewidth=0.8, capsize=2,
                        markersize=5, label=label, alpha=0.9)
        ax.scatter(points["ratio_pct"], points["phi"], marker="*", s=120, color="black",
                   zorder=5, label="the paper (Tables 1-2)")
        ax.set_title("probability" if objective == "prob" else "log-probability")
        ax.set_xlabel("undesirable pixels, % of the image (Table 2)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("relative improvement phi, % (Eq. 8)")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return fig
