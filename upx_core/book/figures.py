"""The chapters' own figures: grids of pictures with their titles, a hand-drawn box outlined on a
map, explanations stacked in rows under one colour bar, the stored evaluation runs' distributions
and strata (chapter 7) and the stored query-only run's maps and budget curves (chapter 9).

The paper's three-panel figure and the maps' one encoding are :mod:`upx_core.plotting`'s; this
module only arranges them (and the pictures chapters 1-2 teach with) the way the chapters show
them. Every function returns a pyplot figure, so a chapter's ``plt.show()`` displays it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from ..evaluation.blackbox_run import FairRun, QualityRun
from ..evaluation.tables import MODE_LABELS, by_confidence
from ..method.config import OptimConfig
from ..method.result import UPXResult
from ..plotting import blur_colorbar, heatmap_rgb, overlay, show_explanation, to_numpy_image

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["Panel", "picture_grid", "draw_box", "explanation_rows", "objective_title",
           "distributions", "gain_against_confidence", "strata_bars", "quality_maps",
           "budget_curves", "fair_curves"]


def _plt():
    import matplotlib.pyplot as plt

    return plt


@dataclass(frozen=True)
class Panel:
    """One picture of :func:`picture_grid`: an image ``[3, H, W]`` in [0, 1] (shown as a photo)
    or a map ``[H, W]`` (shown in ``cmap``, on ``vmin``-``vmax``; ``None`` scales to the map),
    with a title above it and a label below."""

    picture: torch.Tensor | np.ndarray
    title: str = ""
    xlabel: str = ""
    cmap: str = "gray"
    vmin: float | None = 0.0
    vmax: float | None = 1.0
    interpolation: str | None = None


def _show(ax: Axes, panel: Panel) -> None:
    picture = torch.as_tensor(panel.picture)
    if picture.dim() == 3 and picture.shape[0] == 3:
        ax.imshow(to_numpy_image(picture))
    else:
        ax.imshow(picture.reshape(picture.shape[-2:]).numpy(), cmap=panel.cmap, vmin=panel.vmin,
                  vmax=panel.vmax, interpolation=panel.interpolation)


def picture_grid(rows: Sequence[Sequence[Panel | None]], size: tuple[float, float] = (2.6, 2.7),
                 frame: bool = True, title_size: float | None = None,
                 label_size: float | None = None) -> Figure:
    """One row of pictures per entry of ``rows``, each ``size`` inches (width, height).

    ``None`` leaves a cell empty; rows shorter than the longest leave their end empty.
    ``frame=False`` hides the axes altogether, otherwise only their ticks go (the label below
    a picture needs its axis). ``title_size`` and ``label_size`` are font sizes.
    """
    ncol = max(len(row) for row in rows)
    fig, axes = _plt().subplots(len(rows), ncol, figsize=(size[0] * ncol, size[1] * len(rows)),
                                squeeze=False)
    for r, row in enumerate(rows):
        for c in range(ncol):
            ax, panel = axes[r, c], row[c] if c < len(row) else None
            if panel is None:
                ax.axis("off")
                continue
            _show(ax, panel)
            # matplotlib's own sizes unless given: a title is larger than a label by default
            ax.set_title(panel.title, **({"fontsize": title_size} if title_size else {}))
            ax.set_xlabel(panel.xlabel, **({"fontsize": label_size} if label_size else {}))
            if frame:
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                ax.axis("off")
    fig.tight_layout()
    return fig


def draw_box(axes: Axes | Iterable[Axes], box: Sequence[int], linewidth: float = 1.2) -> None:
    """Outline the hand-drawn ``box = (top, bottom, left, right)`` (pixel rows ``top:bottom``,
    columns ``left:right``, as :func:`upx_core.book.analysis.box_region` reads it) on each of
    ``axes``: a dashed white rectangle around exactly those pixels."""
    from matplotlib.patches import Rectangle

    top, bottom, left, right = (int(v) for v in box)
    for ax in np.atleast_1d(np.asarray(axes, dtype=object)).ravel():
        ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False,
                               edgecolor="white", linewidth=linewidth, linestyle="--"))


def explanation_rows(rows: Sequence[tuple[UPXResult, torch.Tensor, int, int, str]]) -> Figure:
    """:func:`upx_core.plotting.show_explanation` once per row, under one colour bar.

    Each row is ``(result, image, b, k, title)``: mask (b, k) of ``result`` on ``image`` (the
    photo with its region outlined, the map alone, the perturbed image), ``title`` over the
    photo. Row ``i`` is ``fig.axes[3 * i: 3 * i + 3]``.
    """
    fig, axes = _plt().subplots(len(rows), 3, figsize=(9.0, 2.8 * len(rows)), squeeze=False,
                                layout="constrained")
    for ax, (result, image, b, k, title) in zip(axes, rows, strict=True):
        show_explanation(result, image, b=b, k=k, axes=list(ax), title=title)
    blur_colorbar(fig, list(axes.ravel()))
    return fig


def objective_title(objective: str, trial: int) -> str:
    """A figure's title for one objective's masks: ``objective = 'prob' (library default),
    trial 0``."""
    default = " (library default)" if objective == OptimConfig().objective else ""
    return f"objective = {objective!r}{default}, trial {trial}"


def _long(runs: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    long = pd.concat([df.assign(source=src) for src, df in runs.items()], ignore_index=True)
    return long.assign(mode=long["mode"].map(MODE_LABELS))


def distributions(runs: Mapping[str, pd.DataFrame]) -> Figure:
    """Tables 1 and 2 image by image: each image's relative improvement (Eq. 8, left) and ratio
    (right), one dot per image by mode and run (``runs``: label -> evaluation rows), boxes at
    the quartiles, one legend above both panels."""
    import seaborn as sns

    long = _long(runs)
    order = [label for label in MODE_LABELS.values() if label in set(long["mode"])]
    fig, axes = _plt().subplots(1, 2, figsize=(12, 4.2))
    for ax, column, label in zip(axes, ["relative_improvement", "ratio"],
                                 ["relative improvement, Eq. 8 (%)", "undesirable-pixel ratio"],
                                 strict=True):
        sns.boxplot(data=long, x="mode", y=column, hue="source", order=order, ax=ax,
                    showfliers=False, fill=False, legend=False)
        sns.stripplot(data=long, x="mode", y=column, hue="source", order=order, ax=ax,
                      dodge=True, size=4, alpha=0.8, legend=ax is axes[0])
        if ax.get_legend():
            handles, labels = ax.get_legend_handles_labels()
            ax.get_legend().remove()
        ax.set_xlabel("")
        ax.set_ylabel(label)
        ax.tick_params(axis="x", labelrotation=15)
    axes[0].axhline(0, color="grey", linewidth=0.8)
    # one legend for both panels, above them, so neither panel is squeezed to make room for it
    fig.legend(handles, labels, loc="upper center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.86))
    return fig


def gain_against_confidence(runs: Mapping[str, pd.DataFrame]) -> Figure:
    """F-TC's relative improvement (Eq. 8) of each image against the top class's probability
    on the clean image, f_h(X), one marker style per run."""
    import seaborn as sns

    long = _long(runs)
    fig, ax = _plt().subplots(figsize=(6, 4))
    sns.scatterplot(data=long[long["mode"] == MODE_LABELS["ftc"]], x="prob_before",
                    y="relative_improvement", hue="source", style="source", ax=ax, s=30)
    ax.set_xlabel("$f_h(X)$, the top class's probability on the clean image")
    ax.set_ylabel("F-TC relative improvement, Eq. 8 (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def strata_bars(runs: Mapping[str, pd.DataFrame], modes: Sequence[str] = ("ftc", "fntc"),
                paper: tuple[float, float] = (44.9, 49.0)) -> Figure:
    """phi (Eq. 8) per stratum of f_h(X) (:func:`upx_core.evaluation.tables.by_confidence`), one
    panel per run (``runs``: label -> rows) on the images all of them hold, bars per mode, with
    the ``paper``'s range of F-TC's phi shaded (Table 1: 44.9 and 48.7)."""
    import seaborn as sns

    shared = set.intersection(*(set(df["image_index"]) for df in runs.values()))
    fig, axes = _plt().subplots(1, len(runs), figsize=(5 * len(runs), 3.6), squeeze=False)
    for ax, (name, df) in zip(axes[0], runs.items(), strict=True):
        table = by_confidence(df[df["image_index"].isin(shared)])
        table = table[table["mode"].isin([MODE_LABELS[m] for m in modes])]
        sns.barplot(data=table, x="f_h(X)", y="phi", hue="mode", ax=ax)
        ax.set_title(f"{name}, {len(shared)} images")
        ax.set_xlabel("$f_h(X)$ before any blur")
        ax.set_ylabel("phi, Eq. 8 (%)")
        ax.axhspan(*paper, color="grey", alpha=0.2, label="paper's Table 1")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def quality_maps(run: QualityRun, images: torch.Tensor) -> Figure:
    """The stored query-only run's masks, one row per case: the photo with white-box seed 0's
    region 1 - M' > 0.6 outlined, then the map 1 - M' alone of white-box seeds 0 and 1 and of
    the query-only mask (ONNX Runtime) at each budget, under one colour bar."""
    columns = ([("photo", "image, white-box seed 0\n1 \u2212 M\u2032 > 0.6 outlined"),
                ("white", "white-box, seed 0"), ("white_seed1", "white-box, seed 1")]
               + [(f"onnxruntime_{b}", f"query-only, {b:,} queries") for b in run.budgets])
    fig, axes = _plt().subplots(len(run.cases), len(columns),
                                figsize=(2.3 * len(columns) + 1.2, 2.4 * len(run.cases)),
                                squeeze=False, layout="constrained")
    size = tuple(images.shape[-2:])
    maps = {key: run.undesirable("white" if key == "photo" else key, size) for key, _ in columns}
    for i, (_, target) in enumerate(run.cases):
        for j, (key, title) in enumerate(columns):
            ax = axes[i, j]
            ax.imshow(overlay(images[i], maps[key][i]) if key == "photo"
                      else heatmap_rgb(maps[key][i]))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=9)
        axes[i, 0].set_ylabel(target, fontsize=10)
    blur_colorbar(fig, list(axes.ravel()))
    return fig


def budget_curves(run: QualityRun, targets: Sequence[str], goal: float = 0.6) -> Figure:
    """Pearson r with white-box seed 0 against the queries per mask, one panel per target (in
    ``targets``' order): the query-only estimator (ONNX Runtime) and the oracle, the other
    white-box seeds dotted and the ``goal`` in red."""
    fig, axes = _plt().subplots(1, len(targets), figsize=(3.4 * len(targets), 3.0), sharey=True,
                                squeeze=False, layout="constrained")
    axes = axes[0]
    for ax, target in zip(axes, targets, strict=True):
        for kind, style, label in ((run.onnx, "o-", "query-only (ONNX Runtime)"),
                                   (run.oracle, "s--", "oracle: exact directional derivatives")):
            part = kind[kind["target"] == target].sort_values("budget")
            ax.plot(part["budget"], part["pearson_vs_white"], style, label=label)
        for r in run.seed_agreement.loc[target]:
            ax.axhline(r, color="0.6", lw=1, ls=":")
        ax.axhline(goal, color="C3", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(target, fontsize=10)
        ax.set_xlabel("queries per mask")
    axes[0].set_ylabel("Pearson r with white-box seed 0")
    axes[0].plot([], [], color="0.6", ls=":", label="white-box seeds 1 and 2")
    axes[0].plot([], [], color="C3", lw=0.8, label=f"the goal, {goal:g}")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=2,
               fontsize=9)
    return fig


def fair_curves(run: FairRun, targets: Sequence[str]) -> Figure:
    """Pearson r with white-box seed 0 against the queries per map, one panel per target: the
    query-only masks of each estimator (antithetic, tracking; median over seeds, bars from min
    to max), the oracle with the antithetic estimator's own directions, the occlusion sweep and
    RISE (median, min to max), and the ceiling (the white-box seeds 1 and 2, their range shaded,
    their mean dashed)."""
    fig, axes = _plt().subplots(1, len(targets), figsize=(3.4 * len(targets), 3.0), sharey=True,
                                squeeze=False, layout="constrained")
    axes = axes[0]
    table = run.summary()
    styles = {"query-only": ("o-", "C0", "query-only, antithetic"),
              "query-only, tracking": ("o-", "C3", "query-only, tracking"),
              "oracle, same directions": ("s--", "C1", "oracle, antithetic's directions"),
              "occlusion": ("D", "C2", "occlusion"), "RISE": ("^-", "C4", "RISE")}
    for ax, target in zip(axes, targets, strict=True):
        rows = table[table["target"] == target]
        white = rows[rows["method"] == "white-box"].iloc[0]
        ax.axhspan(white["r min"], white["r max"], color="0.85")
        ax.axhline(run.ceiling[target], color="0.4", lw=1, ls="--")
        for method, (style, colour, label) in styles.items():
            part = rows[rows["method"] == method].sort_values("budget")
            ax.errorbar(part["budget"], part["r median"], fmt=style, color=colour, capsize=3,
                        yerr=[part["r median"] - part["r min"], part["r max"] - part["r median"]],
                        label=label)
        ax.set_xscale("log")
        ax.set_title(target, fontsize=10)
        ax.set_xlabel("queries per map")
    axes[0].set_ylabel("Pearson r with white-box seed 0")
    axes[0].plot([], [], color="0.4", ls="--", label="ceiling: white-box seeds 1, 2 (range shaded)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=3,
               fontsize=9)
    return fig
