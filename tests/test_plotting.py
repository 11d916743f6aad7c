"""Paper-layout figures: titles say what the heatmap is; captions carry p before -> after."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import pytest

from upx_core import MaskSetting, OptimConfig, optimize_masks
from upx_core.plotting import COLORBAR_LABEL, explanation_grid, heatmap_figure, show_explanation

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
    assert len(fig.axes) == 5  # four panels and the colour bar
    assert [ax.get_title() for ax in fig.axes[:2]] == ["F-TC, trial 0", "deletion, trial 0"]
    # rows are labelled: what the heatmaps show (1 - M' when the modes differ), then Q(X)
    assert [fig.axes[0].get_ylabel(), fig.axes[2].get_ylabel()] == ["1 \u2212 M\u2032",
                                                                     "perturbed image"]
    plt.close(fig)
    ftc_only = explanation_grid(result, crops[:1], pairs=[(0, 0)])
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
    ax = fig.axes[0]
    assert ax.get_title() == "crucial pixels (deletion)"
    assert ax.get_xlabel().startswith("African elephant: ")
    assert ax.get_xlabel().endswith("no pixel above 0.6")
    plt.close(fig)
