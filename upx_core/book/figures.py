"""The chapters' own figures: grids of pictures with their titles, a hand-drawn box outlined on a
map, explanations stacked in rows under one colour bar.

The paper's three-panel figure and the maps' one encoding are :mod:`upx_core.plotting`'s; this
module only arranges them (and the pictures chapters 1-2 teach with) the way the chapters show
them. Every function returns a pyplot figure, so a chapter's ``plt.show()`` displays it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..method.config import OptimConfig
from ..method.result import UPXResult
from ..plotting import blur_colorbar, show_explanation, to_numpy_image

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["Panel", "picture_grid", "draw_box", "explanation_rows", "objective_title"]


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
