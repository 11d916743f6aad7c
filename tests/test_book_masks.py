"""upx_core.book.masks: the chapters' per-mask tables, read from a real (two-iteration) result on
two real image crops, and the hand-made masks of chapter 2 with their exact penalties."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from upx_core import MaskSetting, OptimConfig, optimize_masks
from upx_core.book.masks import (
    both_objectives,
    fntc_route_counts,
    hand_made_masks,
    mask_rows,
    pearson_pairs,
    penalty_table,
    probabilities_by_mask,
    recompute_routes,
)

AFRICAN_ELEPHANT, INDIAN_ELEPHANT, TUSKER = 386, 385, 101
CONFIG = OptimConfig(iterations=2)


@pytest.fixture(scope="module")
def settings():
    return [MaskSetting(mode="ftc", seed=s, target=t) for t in (AFRICAN_ELEPHANT, TUSKER)
            for s in (0, 1)]


@pytest.fixture(scope="module")
def result(model, crops, settings):
    return optimize_masks(model, crops, settings=settings, config=CONFIG, device="cpu",
                          progress=False)


def test_both_objectives_runs_the_default_first_and_each_as_alone(model, crops, settings):
    runs = both_objectives(model, crops[:1], settings[:1], CONFIG.replace(objective="logit"))
    default = OptimConfig().objective
    assert list(runs) == [default, "log_prob" if default == "prob" else "prob"]
    for objective, run in runs.items():
        alone = optimize_masks(model, crops[:1], settings=settings[:1],
                               config=CONFIG.replace(objective=objective), progress=False)
        assert run.config.objective == objective
        assert torch.equal(run.masks, alone.masks)


def test_mask_rows_one_row_per_mask_image_by_image(result):
    rows = mask_rows(result, ["tusker crop", "elephant crop"])
    assert list(rows.columns) == ["image", "mode", "trial", "target", "before", "after",
                                  "change", "gain", "ratio", "top class after"]
    assert rows["image"].tolist() == ["tusker crop"] * 4 + ["elephant crop"] * 4
    assert rows["trial"].tolist() == [0, 1, 0, 1] * 2
    assert rows["target"].tolist() == ["African elephant"] * 2 + ["tusker"] * 2 + \
        ["African elephant"] * 2 + ["tusker"] * 2
    before, after = result.target_prob_before, result.target_prob_after
    row = rows.iloc[6]  # image 1, setting 2
    assert row["before"] == float(before[1, 2]) and row["after"] == float(after[1, 2])
    assert row["change"] == float(after[1, 2] - before[1, 2])
    residual = 1 - float(before[1, 2])
    assert row["gain"] == pytest.approx((float(after[1, 2]) - float(before[1, 2])) / residual
                                        * 100, rel=1e-9)
    assert row["ratio"] == float(((1 - result.masks_upsampled[1, 2, 0]) > 0.6).float().mean())
    assert row["top class after"] == result.categories[int(result.probs_after[1, 2].argmax())]
    assert mask_rows(result)["image"].tolist() == [0] * 4 + [1] * 4


def test_pearson_pairs_pairs_masks_index_by_index():
    a = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert pearson_pairs(a, a) == pytest.approx([1.0, 1.0, 1.0])
    assert pearson_pairs(a, 1 - a) == pytest.approx([-1.0, -1.0, -1.0])
    assert pearson_pairs(a, a.flip(0))[1] == pytest.approx(1.0)  # the middle pairs with itself
    with pytest.raises(ValueError, match="one shape"):
        pearson_pairs(a, a[:2])


def test_probabilities_by_mask_labels_trials_and_averages_them(result):
    per_trial, table = probabilities_by_mask(result, ["African elephant", INDIAN_ELEPHANT,
                                                      "tusker"], b=0)
    assert per_trial.index.tolist() == ["mask for African elephant, trial 0",
                                        "mask for African elephant, trial 1",
                                        "mask for tusker, trial 0", "mask for tusker, trial 1"]
    names = ["African elephant", "Indian elephant", "tusker"]
    assert list(per_trial.columns) == [*names, "mask", "trial", "ratio"]
    assert per_trial["trial"].tolist() == [0, 1, 0, 1]
    assert per_trial.loc["mask for tusker, trial 1", "tusker"] == \
        float(result.probs_after[0, 3, TUSKER])
    assert table.index.tolist() == ["before (clean image)", "mask for African elephant",
                                    "mask for tusker"]
    assert table.loc["before (clean image)", "Indian elephant"] == \
        float(result.probs_before[0, INDIAN_ELEPHANT])
    mean = (float(result.probs_after[0, 0, AFRICAN_ELEPHANT])
            + float(result.probs_after[0, 1, AFRICAN_ELEPHANT])) / 2
    assert table.loc["mask for African elephant", "African elephant"] == pytest.approx(mean,
                                                                                       rel=1e-12)


def test_hand_made_masks_and_their_exact_penalties():
    masks = hand_made_masks(28)
    assert list(masks) == ["keep all (M = 1)", "half blur (M = 0.5)", "smooth blob",
                           "scrambled blob", "checkerboard"]
    assert all(m.shape == (28, 28) for m in masks.values())
    # scrambling moves the blob's values, it does not change them
    assert torch.equal(masks["smooth blob"].flatten().sort().values,
                       masks["scrambled blob"].flatten().sort().values)
    assert float(masks["checkerboard"].sum()) == 28 * 28 / 2
    setting = MaskSetting(mode="baseline", lambda1=2.0, lambda2=3.0, beta=2.0)
    table = penalty_table(masks, setting, "mean")
    assert table.loc["keep all (M = 1)"].tolist() == [0.0, 0.0, 0.0]
    assert table.loc["half blur (M = 0.5)"].tolist() == [0.0, 0.5, 1.5]
    # every cell of a checkerboard steps by 1 down and right: sqrt(1 + 1) per cell
    checker = table.loc["checkerboard"]
    assert checker["TV"] == pytest.approx(math.sqrt(2), rel=1e-6) and checker["L1"] == 0.5
    assert checker["R_M"] == pytest.approx(2.0 * math.sqrt(2) + 1.5, rel=1e-6)
    summed = penalty_table({"checkerboard": masks["checkerboard"]}, setting, "sum")
    assert summed.loc["checkerboard", "TV"] == pytest.approx(27 * 27 * math.sqrt(2), rel=1e-6)
    assert table["TV"].idxmax() == "checkerboard"


def test_recompute_routes_and_their_counts_on_the_stored_run(model):
    stored = pd.read_csv(Path(__file__).resolve().parents[1]
                         / "notebooks/results/cpu_200img_prob.csv").query("mode == 'fntc'")
    moved = stored[stored["relative_improvement"] > 10]
    first = moved.head(1)
    routes = recompute_routes(model, first, CONFIG.replace(objective="prob"))
    assert len(routes) == 1 and routes["mode"].tolist() == ["fntc"]
    assert routes["target"].tolist() == first["target"].tolist()
    assert routes["stored_phi"].tolist() == first["relative_improvement"].tolist()
    assert routes[["file", "image_index"]].values.tolist() == \
        first[["file", "image_index"]].values.tolist()
    assert 0 <= routes.loc[0, "ratio"] <= 1
    before, after = routes.loc[0, "prob_before"], routes.loc[0, "prob_after"]
    assert routes.loc[0, "phi"] == pytest.approx((after - before) / (1 - before) * 100, rel=1e-5)
    counts = fntc_route_counts(stored, routes)
    assert counts["images"].tolist() == [
        200, 39, 1, int(routes.loc[0, "phi"] > 10), int(routes.loc[0, "d_lse_others"] < 0),
        int(abs(routes.loc[0, "d_target_logit"]) < 0.05)]
    assert counts.iloc[1, 0] == "F-NTC raised the target by more than 10 % (stored)"
