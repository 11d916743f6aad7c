"""Figures in the paper's layout: image, heatmap of undesirable pixels over it, perturbed image,
with the target probability before -> after underneath."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from .result import UPXResult

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.colorbar import Colorbar
    from matplotlib.figure import Figure


def _plt():
    """pyplot, imported on first use: matplotlib takes about half a second to import, which
    ``import upx_core.plotting`` (and ``upx explain`` until it draws) should not pay."""
    import matplotlib.pyplot as plt

    return plt

__all__ = [
    "to_numpy_image", "overlay", "heatmap_rgb", "heatmap_title", "blur_colorbar", "heatmap_figure",
    "show_explanation", "explanation_grid",
]


def to_numpy_image(image: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` in [0, 1] to an ``[H, W, 3]`` float array for ``imshow``."""
    return image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()


def heatmap_rgb(undesirable: torch.Tensor, cmap: str = "jet") -> np.ndarray:
    """Colour an ``[H, W]`` (or ``[1, H, W]``) map in [0, 1] to ``[H, W, 3]``."""
    values = undesirable.detach().cpu().reshape(undesirable.shape[-2:]).clamp(0, 1).numpy()
    return _plt().get_cmap(cmap)(values)[..., :3]


def overlay(image: torch.Tensor, undesirable: torch.Tensor, alpha: float = 0.5,
            cmap: str = "jet") -> np.ndarray:
    """Heatmap of 1 - M' blended over the image, weighted by the map so clean pixels show."""
    img = to_numpy_image(image)
    heat = heatmap_rgb(undesirable, cmap)
    weight = alpha * undesirable.detach().cpu().reshape(img.shape[:2]).clamp(0, 1).numpy()
    # float rounding can overshoot 1 by an ulp, which matplotlib reports as clipping
    return np.clip(img * (1 - weight[..., None]) + heat * weight[..., None], 0.0, 1.0)


# How a figure names each mode: the paper's words, not the library's keys.
MODE_NAMES = {"baseline": "Eq. 3", "ftc": "F-TC", "fntc": "F-NTC", "deletion": "deletion"}
THRESHOLD = 0.6  # Table 2's: a pixel counts as blurred when 1 - M' > 0.6


COLORBAR_LABEL = "how strongly the pixel is blurred, 1 \u2212 M\u2032"


def blur_colorbar(fig: Figure, axes: Sequence[Axes] | Axes, cmap: str = "jet",
                  label: str = COLORBAR_LABEL) -> Colorbar:
    """The heatmaps' scale, beside ``axes``: 0 (kept as it is) to 1 (replaced by its blur)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    mappable = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap)
    bar = fig.colorbar(mappable, ax=axes, fraction=0.025, pad=0.02, aspect=30)
    bar.set_label(label, fontsize=9)
    bar.ax.tick_params(labelsize=8)
    return bar


def heatmap_title(mode: str) -> str:
    """What 1 - M' shows for a mode: pixels that hinder the target, except for ref. [3]'s
    deletion mask, whose blurred pixels are the ones the class needs."""
    if mode == "deletion":
        return "crucial pixels (deletion)"
    return f"undesirable pixels ({MODE_NAMES.get(mode, mode)})"


def _prob_caption(result: UPXResult, b: int, k: int) -> str:
    before, after = float(result.target_prob_before[b, k]), float(result.target_prob_after[b, k])
    caption = f"{before:.3f} \u2192 {after:.3f}"
    if float(result.undesirable[b, k].max()) <= THRESHOLD:
        # an empty heatmap looks like a plain photo: say that nothing was found
        caption += f"\nno pixel above {THRESHOLD}"
    return caption


def heatmap_figure(result: UPXResult, image: torch.Tensor, b: int = 0, k: int = 0) -> Figure:
    """The heatmap of mask (b, k) over its image, titled by what it shows, with its colour bar."""
    fig, ax = _plt().subplots(figsize=(4.6, 3.6), layout="constrained")
    ax.imshow(overlay(image, result.undesirable[b, k]))
    ax.set_title(heatmap_title(result.settings[k].mode), fontsize=10)
    ax.set_xlabel(f"{result.class_name(int(result.targets[b, k]))}: {_prob_caption(result, b, k)}",
                  fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    blur_colorbar(fig, ax)
    return fig


def show_explanation(
    result: UPXResult,
    image: torch.Tensor,
    b: int = 0,
    k: int = 0,
    axes: Sequence[Axes] | None = None,
    title: str | None = None,
    colorbar: bool | None = None,
) -> Figure:
    """Three panels for mask (b, k): image, undesirable pixels over it, perturbed image.

    The target probability before -> after is written under the perturbed image, as in the
    paper's figures. ``colorbar`` adds the heatmap's scale (:func:`blur_colorbar`); by default
    only to a figure of its own (a caller's ``axes`` belong to a layout the caller controls).
    """
    if axes is None:
        fig, axes = _plt().subplots(1, 3, figsize=(9.8, 3.3), layout="constrained")
        colorbar = colorbar is not False
    else:
        fig = axes[0].figure
    target = result.class_name(int(result.targets[b, k]))
    setting = result.settings[k]
    axes[0].imshow(to_numpy_image(image))
    axes[0].set_title(title or "image")
    axes[1].imshow(overlay(image, result.undesirable[b, k]))
    axes[1].set_title(heatmap_title(setting.mode))
    if result.perturbed is not None:
        axes[2].imshow(to_numpy_image(result.perturbed[b, k]))
    axes[2].set_title("perturbed image")
    axes[2].set_xlabel(f"{target}: {_prob_caption(result, b, k)}")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if colorbar:
        blur_colorbar(fig, list(axes))
    return fig


def explanation_grid(
    result: UPXResult,
    images: torch.Tensor,
    pairs: Sequence[tuple[int, int]] | None = None,
    labels: Sequence[str] | None = None,
    show_perturbed: bool = False,
    colorbar: bool = True,
) -> Figure:
    """One column per (b, k) pair: heatmap over the image, captioned target and before -> after.

    With ``show_perturbed`` a second row shows the perturbed images. ``labels`` title the
    columns (default: mode and trial seed); ``colorbar`` adds the heatmaps' scale.
    """
    b_count, k_count = result.targets.shape
    pairs = list(pairs) if pairs is not None else [
        (b, k) for b in range(b_count) for k in range(k_count)
    ]
    rows = 2 if show_perturbed and result.perturbed is not None else 1
    fig, axes = _plt().subplots(rows, len(pairs), figsize=(2.6 * len(pairs) + 1.0, 2.9 * rows),
                             squeeze=False, layout="constrained")
    for col, (b, k) in enumerate(pairs):
        s = result.settings[k]
        target = result.class_name(int(result.targets[b, k]))
        ax = axes[0, col]
        ax.imshow(overlay(images[b], result.undesirable[b, k]))
        ax.set_title(labels[col] if labels else f"{MODE_NAMES.get(s.mode, s.mode)}, trial {s.seed}",
                     fontsize=9)
        ax.set_xlabel(f"{target}: {_prob_caption(result, b, k)}", fontsize=8)
        if rows == 2:
            axes[1, col].imshow(to_numpy_image(result.perturbed[b, k]))
        for a in axes[:, col]:
            a.set_xticks([])
            a.set_yticks([])
    modes = {result.settings[k].mode for _, k in pairs}
    axes[0, 0].set_ylabel("crucial pixels" if modes == {"deletion"} else
                          "undesirable pixels" if "deletion" not in modes else "1 \u2212 M\u2032",
                          fontsize=9)
    if rows == 2:
        axes[1, 0].set_ylabel("perturbed image", fontsize=9)
    if colorbar:
        blur_colorbar(fig, list(axes.ravel()))
    return fig
