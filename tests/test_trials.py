"""upx_core.evaluation.trials: the agreement of trials, summarized and paired over images."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from upx_core.evaluation.trials import agreement_paired, agreement_summary

NAN = float("nan")


def _pairs() -> pd.DataFrame:
    rows = [
        # image 1: baseline pairs r 0.2 and 0.4, IoU 0.5 and undefined (both empty)
        ("baseline", 1, 0.2, 0.5, False), ("baseline", 1, 0.4, NAN, True),
        # image 2: baseline one pair, both empty and flat: nothing defined
        ("baseline", 2, NAN, NAN, True),
        # F-TC: image 1 r 0.6 / IoU 0.7, image 2 r 0.1 / IoU 0.0
        ("ftc", 1, 0.6, 0.7, False), ("ftc", 2, 0.1, 0.0, False),
    ]
    return pd.DataFrame(rows, columns=["mode", "image_index", "pearson", "iou", "both_empty"])


def test_summary_leaves_undefined_pairs_out_and_counts_empty_ones():
    t = agreement_summary(_pairs()).set_index("mode")
    assert t.loc["baseline (Eq. 3)", "pearson"] == pytest.approx(0.3)  # image 1 only
    assert t.loc["baseline (Eq. 3)", "pearson_images"] == 1
    assert t.loc["baseline (Eq. 3)", "iou"] == pytest.approx(0.5)
    assert t.loc["baseline (Eq. 3)", "both_empty_share"] == pytest.approx(2 / 3)
    assert math.isnan(t.loc["baseline (Eq. 3)", "pearson_lo"])  # one image: no interval
    assert t.loc["F-TC", "pearson"] == pytest.approx(0.35)
    assert t.loc["F-TC", "iou_images"] == 2 and t.loc["F-TC", "both_empty_share"] == 0


def test_paired_uses_only_images_defined_for_both_modes():
    t = agreement_paired(_pairs(), "ftc", "baseline").set_index("measure")
    # Pearson: image 1 only (0.6 - 0.3); IoU: image 1 only (0.7 - 0.5)
    assert t.loc["pearson", "images"] == 1
    assert t.loc["pearson", "mean_difference"] == pytest.approx(0.3)
    assert t.loc["iou", "mean_difference"] == pytest.approx(0.2)
    assert t.loc["iou", "share_a_higher"] == 1.0


def test_grouped_by_reading():
    pairs = pd.concat([_pairs().assign(reading="init"), _pairs().assign(reading="noise")])
    t = agreement_summary(pairs, by=["reading"])
    assert len(t) == 4 and set(t["reading"]) == {"init", "noise"}
    p = agreement_paired(pairs, "ftc", "baseline", by=["reading"])
    assert p.groupby("reading").size().to_dict() == {"init": 2, "noise": 2}
