"""Figures in the paper's layout: image, its undesirable pixels, perturbed image, with the target
probability before -> after underneath.

One encoding of 1 - M' for the whole book, the CLI's pictures and the explorer (issue 27): the
map alone, in a sequential colour-blind-safe colour map (:data:`CMAP`, viridis) on the fixed
scale 0-1 that its colour bar shows, beside the photo, on which the region Table 2 counts
(1 - M' > 0.6) is outlined by a white line with a black edge, visible on any photo. Nothing is
blended into the photo, so a map covering 1 % of the image is as visible as one covering half.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .method.modes import MODE_REGISTRY
from .method.result import UPXResult

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
    "to_numpy_image", "overlay", "outline_region", "heatmap_rgb", "heatmap_title",
    "blur_colorbar", "heatmap_figure", "show_explanation", "explanation_grid", "CMAP",
]

CMAP = "viridis"  # sequential, perceptually uniform, readable with the common colour blindnesses
LINE = (1.0, 1.0, 1.0)  # the outline: white inside the region's edge ...
EDGE = (0.0, 0.0, 0.0)  # ... and black just outside it, so one of the two shows on any photo


def to_numpy_image(image: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` in [0, 1] to an ``[H, W, 3]`` float array for ``imshow``."""
    return image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()


def _map2d(undesirable: torch.Tensor) -> torch.Tensor:
    return undesirable.detach().cpu().float().reshape(undesirable.shape[-2:]).clamp(0, 1)


def heatmap_rgb(undesirable: torch.Tensor, cmap: str = CMAP) -> np.ndarray:
    """Colour an ``[H, W]`` (or ``[1, H, W]``) map in [0, 1] to ``[H, W, 3]``, on the fixed
    0-1 scale of :func:`blur_colorbar` (0: kept as it is, 1: replaced by its blur)."""
    return _plt().get_cmap(cmap)(_map2d(undesirable).numpy())[..., :3]


def outline_region(undesirable: torch.Tensor, threshold: float | None = None,
                   width: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The edge of the region ``1 - M' > threshold`` (default :data:`THRESHOLD`) as two
    ``[H, W]`` boolean masks: ``inner``, the region's pixels within ``width`` of its edge,
    and ``outer``, the pixels outside it within ``width`` of it."""
    threshold = THRESHOLD if threshold is None else threshold
    region = (_map2d(undesirable) > threshold).float()[None, None]
    k = 2 * width + 1
    grown = F.max_pool2d(region, k, stride=1, padding=width)
    shrunk = -F.max_pool2d(-region, k, stride=1, padding=width)
    inside = region.bool()
    return (inside & ~shrunk.bool())[0, 0].numpy(), (grown.bool() & ~inside)[0, 0].numpy()


def overlay(image: torch.Tensor, undesirable: torch.Tensor,
            threshold: float | None = None) -> np.ndarray:
    """The photo with the region ``1 - M' > threshold`` (Table 2's 0.6) outlined: a white line
    inside its edge, a black one outside. The photo's pixels are otherwise untouched; the map's
    values are shown by :func:`heatmap_rgb` beside it."""
    img = to_numpy_image(image).copy()
    inner, outer = outline_region(undesirable, threshold)
    img[outer] = EDGE
    img[inner] = LINE
    return img


# How a figure names each mode: the paper's words, not the library's keys.
MODE_NAMES = {name: mode.title for name, mode in MODE_REGISTRY.items()}
THRESHOLD = 0.6  # Table 2's: a pixel counts as blurred when 1 - M' > 0.6


COLORBAR_LABEL = "how strongly the pixel is blurred, 1 \u2212 M\u2032"
OUTLINED = f"1 \u2212 M\u2032 > {THRESHOLD} outlined"


def blur_colorbar(fig: Figure, axes: Sequence[Axes] | Axes, cmap: str = CMAP,
                  label: str = COLORBAR_LABEL) -> Colorbar:
    """The maps' scale, beside ``axes``: 0 (kept as it is) to 1 (replaced by its blur)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    mappable = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap)
    bar = fig.colorbar(mappable, ax=axes, fraction=0.025, pad=0.02, aspect=30)
    bar.set_label(label, fontsize=9)
    bar.ax.tick_params(labelsize=8)
    return bar


def heatmap_title(mode: str) -> str:
    """What 1 - M' shows for a mode: pixels that hinder the target, except for a mode whose
    blurred pixels are the ones the class needs (ref. [3]'s deletion mask)."""
    return f"{_pixels(mode)} pixels ({MODE_NAMES.get(mode, mode)})"


def _pixels(mode: str) -> str:
    entry = MODE_REGISTRY.get(mode)
    return "crucial" if entry is not None and entry.crucial else "undesirable"


def _prob_caption(result: UPXResult, b: int, k: int) -> str:
    before, after = float(result.target_prob_before[b, k]), float(result.target_prob_after[b, k])
    caption = f"{before:.3f} \u2192 {after:.3f}"
    if float(result.undesirable[b, k].max()) <= THRESHOLD:
        # an empty map and a photo without outline: say that nothing was found
        caption += f"\nno pixel above {THRESHOLD}"
    return caption


def _bare(axes) -> None:
    for ax in np.ravel(axes):
        ax.set_xticks([])
        ax.set_yticks([])


def heatmap_figure(result: UPXResult, image: torch.Tensor, b: int = 0, k: int = 0) -> Figure:
    """Mask (b, k) as ``upx explain``'s heatmap.png: the photo with the region above the
    threshold outlined, and the map alone, titled by what it shows, with its colour bar."""
    fig, (photo, ax) = _plt().subplots(1, 2, figsize=(7.4, 3.6), layout="constrained")
    photo.imshow(overlay(image, result.undesirable[b, k]))
    photo.set_title(OUTLINED, fontsize=10)
    ax.imshow(heatmap_rgb(result.undesirable[b, k]))
    ax.set_title(heatmap_title(result.settings[k].mode), fontsize=10)
    ax.set_xlabel(f"{result.class_name(int(result.targets[b, k]))}: {_prob_caption(result, b, k)}",
                  fontsize=9)
    _bare((photo, ax))
    blur_colorbar(fig, [photo, ax])
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
    """Three panels for mask (b, k): the image with the region 1 - M' > 0.6 outlined, the map
    of undesirable pixels alone, the perturbed image.

    The target probability before -> after is written under the perturbed image, as in the
    paper's figures. ``colorbar`` adds the map's scale (:func:`blur_colorbar`); by default
    only to a figure of its own (a caller's ``axes`` belong to a layout the caller controls).
    """
    if axes is None:
        fig, axes = _plt().subplots(1, 3, figsize=(9.8, 3.3), layout="constrained")
        colorbar = colorbar is not False
    else:
        fig = axes[0].figure
    target = result.class_name(int(result.targets[b, k]))
    setting = result.settings[k]
    axes[0].imshow(overlay(image, result.undesirable[b, k]))
    axes[0].set_title(title or "image")
    axes[0].set_xlabel(OUTLINED, fontsize=8)
    axes[1].imshow(heatmap_rgb(result.undesirable[b, k]))
    axes[1].set_title(heatmap_title(setting.mode))
    if result.perturbed is not None:
        axes[2].imshow(to_numpy_image(result.perturbed[b, k]))
    axes[2].set_title("perturbed image")
    axes[2].set_xlabel(f"{target}: {_prob_caption(result, b, k)}")
    _bare(axes)
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
    show_photo: bool = True,
) -> Figure:
    """One column per (b, k) pair: the photo with the region 1 - M' > 0.6 outlined
    (``show_photo``), the map alone captioned with the target and before -> after, and with
    ``show_perturbed`` the perturbed image. ``labels`` title the columns (default: mode and
    trial seed); ``colorbar`` adds the maps' scale.
    """
    b_count, k_count = result.targets.shape
    pairs = list(pairs) if pairs is not None else [
        (b, k) for b in range(b_count) for k in range(k_count)
    ]
    kinds = (["photo"] if show_photo else []) + ["map"] + (
        ["perturbed"] if show_perturbed and result.perturbed is not None else [])
    fig, axes = _plt().subplots(len(kinds), len(pairs),
                             figsize=(2.6 * len(pairs) + 1.0, 2.7 * len(kinds) + 0.3),
                             squeeze=False, layout="constrained")
    row = {kind: i for i, kind in enumerate(kinds)}
    for col, (b, k) in enumerate(pairs):
        s = result.settings[k]
        target = result.class_name(int(result.targets[b, k]))
        if show_photo:
            axes[row["photo"], col].imshow(overlay(images[b], result.undesirable[b, k]))
        ax = axes[row["map"], col]
        ax.imshow(heatmap_rgb(result.undesirable[b, k]))
        ax.set_xlabel(f"{target}: {_prob_caption(result, b, k)}", fontsize=8)
        if "perturbed" in row:
            axes[row["perturbed"], col].imshow(to_numpy_image(result.perturbed[b, k]))
        axes[0, col].set_title(labels[col] if labels else
                               f"{MODE_NAMES.get(s.mode, s.mode)}, trial {s.seed}", fontsize=9)
    _bare(axes)
    modes = {result.settings[k].mode for _, k in pairs}
    if show_photo:
        axes[row["photo"], 0].set_ylabel(OUTLINED, fontsize=9)
    kinds_shown = {_pixels(m) for m in modes}
    axes[row["map"], 0].set_ylabel(f"{kinds_shown.pop()} pixels" if len(kinds_shown) == 1
                                   else "1 \u2212 M\u2032", fontsize=9)
    if "perturbed" in row:
        axes[row["perturbed"], 0].set_ylabel("perturbed image", fontsize=9)
    if colorbar:
        blur_colorbar(fig, list(axes.ravel()))
    return fig
