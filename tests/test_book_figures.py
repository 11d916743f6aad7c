"""upx_core.book.figures: the chapters' picture grids, hand-drawn boxes and stacked explanations,
drawn from real images and a real (two-iteration) result."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.patches import Rectangle

from upx_core import MaskSetting, OptimConfig, optimize_masks
from upx_core.book.figures import (
    Panel,
    draw_box,
    explanation_rows,
    objective_title,
    picture_grid,
)
from upx_core.plotting import to_numpy_image

matplotlib.use("Agg")
AFRICAN_ELEPHANT = 386


@pytest.fixture(scope="module")
def result(model, crops):
    settings = [MaskSetting(mode="ftc", seed=0), MaskSetting(mode="deletion", seed=0)]
    return optimize_masks(model, crops, targets=AFRICAN_ELEPHANT, settings=settings,
                          config=OptimConfig(iterations=2), device="cpu", progress=False)


def test_picture_grid_shows_photos_and_maps_with_their_titles(crops):
    mask = torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    fig = picture_grid([[Panel(crops[0], "photo", "below"), Panel(mask, "mask",
                                                                  interpolation="nearest")],
                        [None, Panel(crops[1], "second")]], size=(2.0, 3.0))
    axes = np.array(fig.axes).reshape(2, 2)
    assert tuple(fig.get_size_inches()) == (4.0, 6.0)
    assert [ax.get_title() for ax in axes.ravel()] == ["photo", "mask", "", "second"]
    assert axes[0, 0].get_xlabel() == "below"
    # a photo as it is, a map in grey on the fixed 0-1 scale, at its own resolution
    np.testing.assert_array_equal(axes[0, 0].images[0].get_array(), to_numpy_image(crops[0]))
    shown = axes[0, 1].images[0]
    np.testing.assert_array_equal(shown.get_array(), mask[0, 0].numpy())
    assert (shown.get_clim(), shown.get_cmap().name, shown.get_interpolation()) == (
        (0.0, 1.0), "gray", "nearest")
    # an empty cell has no axis; a framed picture keeps its frame but no ticks
    assert not axes[1, 0].axison and not axes[1, 0].images
    assert axes[0, 0].axison and list(axes[0, 0].get_xticks()) == []
    plt.close(fig)


def test_picture_grid_without_frame_and_with_font_sizes(crops):
    diff = (crops[0] - crops[1]).abs().mean(0)
    fig = picture_grid([[Panel(diff, "|a - b|", cmap="magma", vmin=None, vmax=None)]],
                       frame=False, title_size=8)
    ax = fig.axes[0]
    assert not ax.axison and ax.title.get_fontsize() == 8
    image = ax.images[0]
    assert image.get_cmap().name == "magma"
    assert image.get_clim() == (float(diff.min()), float(diff.max()))  # scaled to the map
    plt.close(fig)


def test_draw_box_outlines_exactly_the_box_pixels():
    fig, axes = plt.subplots(1, 2)
    draw_box(axes, (120, 224, 150, 216), linewidth=1.0)
    for ax in axes:
        (patch,) = [p for p in ax.patches if isinstance(p, Rectangle)]
        # pixel i covers [i - 0.5, i + 0.5]: rows 120-223 and columns 150-215, edge to edge
        assert (patch.get_x(), patch.get_y()) == (149.5, 119.5)
        assert (patch.get_width(), patch.get_height()) == (66, 104)
        assert not patch.get_fill() and patch.get_linestyle() == "--"
        assert patch.get_edgecolor() == (1.0, 1.0, 1.0, 1.0) and patch.get_linewidth() == 1.0
    draw_box(axes[0], (0, 10, 0, 10))  # one axis works too
    assert len(axes[0].patches) == 2
    plt.close(fig)


def test_explanation_rows_stack_three_panels_per_mask(result, crops):
    fig = explanation_rows([(result, crops[0], 0, 0, "first"), (result, crops[1], 1, 1, "last")])
    assert len(fig.axes) == 7  # three panels per row and the colour bar
    titles = [ax.get_title() for ax in fig.axes[:6]]
    assert titles == ["first", "undesirable pixels (F-TC)", "perturbed image",
                      "last", "crucial pixels (deletion)", "perturbed image"]
    # the second row is mask (1, 1): its perturbed image and its probabilities
    np.testing.assert_array_equal(fig.axes[5].images[0].get_array(),
                                  to_numpy_image(result.perturbed[1, 1]))
    before, after = float(result.target_prob_before[1, 1]), float(result.target_prob_after[1, 1])
    assert fig.axes[5].get_xlabel().startswith(f"African elephant: {before:.3f} \u2192 {after:.3f}")
    plt.close(fig)


def test_objective_title_names_the_library_default():
    default = OptimConfig().objective
    other = "log_prob" if default == "prob" else "prob"
    assert objective_title(default, 0) == f"objective = {default!r} (library default), trial 0"
    assert objective_title(other, 2) == f"objective = {other!r}, trial 2"


@pytest.fixture(scope="module")
def stored_runs():
    from pathlib import Path

    from upx_core.evaluation.runs import load_stored_runs, objective_runs

    found = objective_runs(load_stored_runs(Path(__file__).resolve().parents[1]
                                            / "notebooks" / "results"))
    return {"probability": found["prob"][1], "log-probability": found["log_prob"][1]}


def test_distributions_and_gain_against_confidence_of_stored_runs(stored_runs):
    from upx_core.book.figures import distributions, gain_against_confidence

    fig = distributions(stored_runs)
    left, right = fig.axes
    assert (left.get_ylabel(), right.get_ylabel()) == ("relative improvement, Eq. 8 (%)",
                                                       "undesirable-pixel ratio")
    assert [t.get_text() for t in left.get_xticklabels()] == [
        "F-TC", "F-NTC", "baseline (Eq. 3)", "random (F-TC area)"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(stored_runs)
    plt.close(fig)
    fig = gain_against_confidence(stored_runs)
    (ax,) = fig.axes
    dots = np.concatenate([c.get_offsets() for c in ax.collections])
    ftc = pd.concat([df[df["mode"] == "ftc"] for df in stored_runs.values()])
    assert len(dots) == len(ftc) == 400  # one F-TC dot per image and run
    assert sorted(dots[:, 0]) == pytest.approx(sorted(ftc["prob_before"]))
    plt.close(fig)


def test_strata_bars_on_the_shared_images(stored_runs):
    from upx_core.book.figures import strata_bars

    fig = strata_bars(stored_runs)
    assert [ax.get_title() for ax in fig.axes] == ["probability, 200 images",
                                                   "log-probability, 200 images"]
    heights = [p.get_height() for p in fig.axes[0].patches if p.get_height() > 0][:4]
    assert [round(h, 3) for h in heights] == [72.003, 62.642, 44.086, 4.819]  # F-TC's strata
    band = [p for p in fig.axes[0].patches if p.get_label() == "paper's Table 1"]
    assert len(band) == 1 and band[0].get_y() == 44.9
    plt.close(fig)
