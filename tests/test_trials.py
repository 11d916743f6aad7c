"""upx_core.evaluation.trials: the agreement of trials, summarized and paired over images."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from upx_core.evaluation.trials import agreement_paired, agreement_summary, agreement_table

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


def test_agreement_table_writes_each_mean_with_its_interval():
    t = agreement_table(agreement_summary(_pairs()))
    assert list(t.columns) == ["mode", "Pearson r (95 %)", "IoU (95 %)", "images with an IoU",
                               "both empty"]
    assert t.loc[1, "Pearson r (95 %)"] == "0.35 (0.10-0.60)"  # F-TC: two images, 0.6 and 0.1
    assert t.loc[0, "Pearson r (95 %)"] == "0.30 (nan-nan)"  # one image: no interval
    assert t["images with an IoU"].tolist() == [1, 2]
    assert t["both empty"].tolist() == pytest.approx([2 / 3, 0.0])


def test_agreement_table_of_the_stored_consistency_run():
    from pathlib import Path

    pairs = pd.read_csv(Path(__file__).resolve().parents[1]
                        / "notebooks/results/trial-consistency/pairs.csv")
    t = agreement_table(agreement_summary(pairs, by=["reading"]))
    assert t[["reading", "mode"]].values.tolist() == [
        ["init", "baseline (Eq. 3)"], ["init", "F-TC"], ["noise", "baseline (Eq. 3)"],
        ["noise", "F-TC"]]
    assert t["IoU (95 %)"].tolist() == ["0.32 (0.20-0.44)", "0.37 (0.23-0.49)",
                                        "0.48 (0.38-0.57)", "0.53 (0.43-0.61)"]
    assert t["Pearson r (95 %)"].tolist()[2:] == ["0.80 (0.72-0.86)", "0.84 (0.79-0.88)"]
    assert t["images with an IoU"].tolist() == [14, 13, 16, 16]
