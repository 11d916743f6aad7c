"""upx_core.book.readings: the paper's four (ratio, phi) pairs and which readings reach them."""

from __future__ import annotations

import matplotlib
import pandas as pd
import pytest

from upx_core.book.readings import (
    against_paper,
    paper_box,
    paper_points,
    reading_label,
    readings_figure,
)

matplotlib.use("Agg")


def test_paper_points_and_box_are_tables_1_and_2():
    points = paper_points().set_index(["model", "mode"])
    assert points.loc[("VGG-19", "ftc"), "phi"] == 48.741
    assert points.loc[("ResNet-18", "fntc"), "ratio_pct"] == pytest.approx(3.98)
    assert paper_box() == pytest.approx({"ratio_lo": 3.60, "ratio_hi": 3.98,
                                         "phi_lo": 44.688, "phi_hi": 48.979})


def _reading(mode, phi, lo, hi, ratio, rlo, rhi, objective="prob", norm="", gamma=0.3,
             lambda2=2.0):
    return {"objective": objective, "fntc_norm": norm, "gamma": gamma, "lambda2": lambda2,
            "mode": mode, "images": 4, "phi": phi, "phi_lo": lo, "phi_hi": hi,
            "ratio_pct": ratio, "ratio_pct_lo": rlo, "ratio_pct_hi": rhi}


def test_against_paper_asks_each_interval_to_overlap_the_papers_range():
    table = pd.DataFrame([
        _reading("ftc", 40.0, 30.0, 44.6, 3.7, 3.0, 4.5),   # phi interval ends just below 44.688
        _reading("ftc", 40.0, 30.0, 44.7, 1.0, 0.5, 3.59),  # ratio ends just below 3.60
        _reading("fntc", 50.0, 48.9, 60.0, 5.0, 3.9, 6.0, norm="abs"),  # both reach
    ])
    out = against_paper(table)
    assert out["phi_reaches"].tolist() == [False, True, True]
    assert out["ratio_reaches"].tolist() == [True, False, True]
    assert out["both"].tolist() == [False, False, True]


def test_reading_label_in_words():
    assert reading_label(pd.Series(_reading("fntc", 0, 0, 0, 0, 0, 0, objective="log_prob",
                                            norm="squared", gamma=0.25))) == (
        "F-NTC, dy², gamma 0.25, log-prob")
    assert reading_label(pd.Series(_reading("baseline", 0, 0, 0, 0, 0, 0, lambda2=0.5))) == (
        "baseline (Eq. 3), lambda2 0.5, prob")


def test_readings_figure_one_panel_per_objective_one_series_per_family():
    table = pd.DataFrame([
        _reading("ftc", 40.0, 30.0, 50.0, 1.0, 0.5, 1.5),
        _reading("fntc", 10.0, 5.0, 15.0, 0.2, 0.0, 0.4, norm="abs"),
        _reading("fntc", 12.0, 5.0, 15.0, 0.2, 0.0, 0.4, norm="squared", objective="log_prob"),
    ])
    fig = readings_figure(table)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["probability", "log-probability"]
    # per panel: its families' error-bar series, then the paper's stars
    assert len(axes[0].containers) == 2 and len(axes[1].containers) == 1
    stars = axes[0].collections[-1].get_offsets()
    assert len(stars) == 4
