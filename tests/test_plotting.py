"""Paper-layout figures: titles say what the map is; captions carry p before -> after; one
encoding of 1 - M' (the map alone in viridis beside the photo, the region above 0.6 outlined)."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from upx_core import MaskSetting, OptimConfig, optimize_masks
from upx_core.plotting import (
    CMAP,
    COLORBAR_LABEL,
    explanation_grid,
    heatmap_figure,
    heatmap_rgb,
    outline_region,
    overlay,
    show_explanation,
    to_numpy_image,
)

matplotlib.use("Agg")
AFRICAN_ELEPHANT = 386


@pytest.fixture(scope="module")
def result(model, crops):
    settings = [MaskSetting(mode="ftc", seed=0), MaskSetting(mode="deletion", seed=0)]
    return optimize_masks(model, crops[:1], targets=AFRICAN_ELEPHANT, settings=settings,
                          config=OptimConfig(iterations=2), device="cpu", progress=False)


def test_show_explanation_titles_say_what_the_heatmap_is(result, crops):
    titles = []
    for k in range(2):
        fig = show_explanation(result, crops[0], b=0, k=k)
        titles.append([ax.get_title() for ax in fig.axes[:3]])  # the fourth: the colour bar
        caption = fig.axes[2].get_xlabel()
        plt.close(fig)
        before = float(result.target_prob_before[0, k])
        after = float(result.target_prob_after[0, k])
        assert caption.startswith(f"African elephant: {before:.3f} \u2192 {after:.3f}")
        # two iterations blur no pixel past the threshold, and the caption says so
        assert float(result.undesirable[0, k].max()) <= 0.6
        assert caption.endswith("\nno pixel above 0.6")
    assert titles[0] == ["image", "undesirable pixels (F-TC)", "perturbed image"]
    # Ref. [3]'s deletion mask blurs what the class needs: calling it undesirable would invert it.
    assert titles[1] == ["image", "crucial pixels (deletion)", "perturbed image"]


def test_explanation_grid_has_one_column_per_mask(result, crops):
    fig = explanation_grid(result, crops[:1], show_perturbed=True)
    assert len(fig.axes) == 7  # photo, map and perturbed image of two masks, and the colour bar
    assert [ax.get_title() for ax in fig.axes[:2]] == ["F-TC, trial 0", "deletion, trial 0"]
    # rows are labelled: the outlined region, what the maps show (1 - M' when the modes
    # differ), then Q(X)
    assert [fig.axes[i].get_ylabel() for i in (0, 2, 4)] == [
        "1 \u2212 M\u2032 > 0.6 outlined", "1 \u2212 M\u2032", "perturbed image"]
    plt.close(fig)
    ftc_only = explanation_grid(result, crops[:1], pairs=[(0, 0)], show_photo=False)
    assert len(ftc_only.axes) == 2  # one row: the map alone, and the colour bar
    assert ftc_only.axes[0].get_ylabel() == "undesirable pixels"
    plt.close(ftc_only)


def _colorbars(fig):
    return [ax for ax in fig.axes if ax.get_ylabel() == COLORBAR_LABEL]


def test_heatmaps_carry_a_colour_bar_that_says_what_they_mean(result, crops):
    assert COLORBAR_LABEL == "how strongly the pixel is blurred, 1 \u2212 M\u2032"
    for fig in (show_explanation(result, crops[0]), explanation_grid(result, crops[:1]),
                heatmap_figure(result, crops[0])):
        (bar,) = _colorbars(fig)
        assert bar.get_ylim() == (0.0, 1.0)  # the map's whole range, not the data's
        plt.close(fig)
    # axes the caller laid out get none unless asked: the caller owns that figure's layout
    fig, axes = plt.subplots(1, 3)
    assert not _colorbars(show_explanation(result, crops[0], axes=axes))
    assert len(_colorbars(show_explanation(result, crops[0], axes=axes, colorbar=True))) == 1
    plt.close(fig)


def test_the_heatmap_picture_says_what_it_shows(result, crops):
    """upx explain's heatmap.png: titled by mode, the target's probabilities under it."""
    fig = heatmap_figure(result, crops[0], k=1)
    assert fig.axes[0].get_title() == "1 \u2212 M\u2032 > 0.6 outlined"  # the photo, then the map
    ax = fig.axes[1]
    assert ax.get_title() == "crucial pixels (deletion)"
    assert ax.get_xlabel().startswith("African elephant: ")
    assert ax.get_xlabel().endswith("no pixel above 0.6")
    plt.close(fig)


def _hand_made_map(size: int) -> torch.Tensor:
    """1 - M' of 0.9 on a 20 x 25 box, 0.3 on another, 0 elsewhere: one region above 0.6."""
    m = torch.zeros(size, size)
    m[10:30, 35:60] = 0.9
    m[50:70, 5:20] = 0.3
    return m


def test_the_map_is_shown_alone_on_its_colour_bar_scale(crops):
    """Issue 27: the old jet map was blended into the photo at <= 50 %, so a mask covering 1 %
    looked like the plain photo and 0 showed the photo, not the colour bar's 0. The map panel
    is the colour map of 1 - M' alone, whatever the photo."""
    m = _hand_made_map(crops.shape[-1])
    rgb = heatmap_rgb(m)
    colours = matplotlib.colormaps[CMAP]
    assert CMAP == "viridis"  # sequential and colour-blind safe, unlike jet
    np.testing.assert_allclose(rgb[0, 0], colours(0.0)[:3])  # 0 is the bar's 0, not the photo
    np.testing.assert_allclose(rgb[20, 45], colours(0.9)[:3])
    np.testing.assert_allclose(rgb[60, 10], colours(0.3)[:3])


def test_the_photo_outlines_the_region_above_the_threshold_and_is_otherwise_untouched(crops):
    m = _hand_made_map(crops.shape[-1])
    photo = to_numpy_image(crops[0])
    shown = overlay(crops[0], m)
    inner, outer = outline_region(m)
    # the edge of the 0.9 box: white inside it, black just outside; the 0.3 box is not outlined
    assert inner[10, 45] and inner[29, 45] and inner[20, 35] and not inner[20, 45]
    assert outer[8, 45] and outer[20, 61] and not outer[10, 45]
    assert not (inner | outer)[45:75, 0:25].any()
    assert (shown[inner] == 1.0).all() and (shown[outer] == 0.0).all()
    untouched = ~(inner | outer)
    np.testing.assert_array_equal(shown[untouched], photo[untouched])
    # nothing above the threshold: the photo as it is
    np.testing.assert_array_equal(overlay(crops[0], 0.5 * m), photo)


def test_every_figure_uses_the_one_encoding(result, crops):
    """The photo (outlined) and the map alone on the same colour map in every figure."""
    for fig in (show_explanation(result, crops[0]), explanation_grid(result, crops[:1]),
                heatmap_figure(result, crops[0])):
        (bar,) = _colorbars(fig)
        assert {c.get_cmap().name for c in bar.collections} == {CMAP}
        pictures = [ax.get_images()[0].get_array() for ax in fig.axes if ax.get_images()]
        photo = to_numpy_image(crops[0])
        # two iterations leave nothing above 0.6: the photo unchanged, the map on its own
        assert any(np.array_equal(np.asarray(p), photo) for p in pictures)
        assert any(np.allclose(np.asarray(p), heatmap_rgb(result.undesirable[0, 0]))
                   for p in pictures)
        plt.close(fig)
