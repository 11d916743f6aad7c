"""Eq. 8 (relative improvement, phi), the Table 2 ratio and trial consistency on hand values."""

from __future__ import annotations

import math

import pytest
import torch

from upx_core.method.metrics import (
    consistency,
    consistency_pairs,
    pearson,
    relative_improvement,
    undesirable_pixel_ratio,
)


def test_relative_improvement_hand_values():
    before = torch.tensor([0.5, 0.2, 1.0, 0.6, 0.0], dtype=torch.float64)
    after = torch.tensor([0.75, 0.1, 1.0, 1.0, 0.3], dtype=torch.float64)
    # (0.75-0.5)/0.5, (0.1-0.2)/0.8, nothing left to improve, reached 1, (0.3-0)/1
    expected = [50.0, -12.5, 0.0, 100.0, 30.0]
    out = relative_improvement(before, after)
    assert out.dtype == torch.float64
    for got, want in zip(out.tolist(), expected, strict=True):
        assert abs(got - want) < 1e-9
    # float32 probabilities (what a model gives) are computed in float64, to float32 accuracy
    out32 = relative_improvement(before.float(), after.float())
    assert out32.dtype == torch.float64
    torch.testing.assert_close(out32, torch.tensor(expected, dtype=torch.float64), atol=1e-5,
                               rtol=0)


def test_relative_improvement_takes_python_floats_and_lists():
    assert abs(float(relative_improvement(0.5, 0.75)) - 50.0) < 1e-9
    assert relative_improvement([1.0], [0.4]).tolist() == [0.0]


@pytest.mark.parametrize("before, after", [
    (float("nan"), 0.5),
    (0.5, float("nan")),
    (1.0, float("nan")),  # "nothing to improve" must not hide a NaN after
    (float("nan"), float("nan")),
])
def test_relative_improvement_of_nan_is_nan_not_zero(before, after):
    assert math.isnan(float(relative_improvement(before, after)))


def test_a_nan_image_leaves_the_others_measured_and_makes_their_mean_nan():
    out = relative_improvement([0.5, float("nan"), 1.0], [0.75, 0.5, 1.0])
    assert out[0] == 50.0 and math.isnan(out[1]) and out[2] == 0.0
    assert math.isnan(float(out.mean()))  # phi over these images: not a number that looks measured


def test_undesirable_pixel_ratio_counts_one_minus_mask_strictly_above_threshold():
    # 1 - M' = [0.0, 0.6, 0.61, 1.0]: only 0.61 and 1.0 exceed 0.6 (0.6 itself does not)
    mask_up = torch.tensor([[1.0, 0.4], [0.39, 0.0]], dtype=torch.float64)
    assert float(undesirable_pixel_ratio(mask_up, 0.6)) == 0.5
    assert float(undesirable_pixel_ratio(mask_up, 0.0)) == 0.75
    assert float(undesirable_pixel_ratio(mask_up, 1.0)) == 0.0


def test_undesirable_pixel_ratio_is_per_mask():
    masks = torch.ones(2, 3, 1, 10, 10)
    masks[0, 1, 0, :5, :2] = 0.0   # 10 of 100 pixels fully blurred
    masks[1, 2, 0] = 0.3           # every pixel at 1 - M' = 0.7
    ratio = undesirable_pixel_ratio(masks, 0.6)
    assert ratio.shape == (2, 3, 1)
    expected = torch.zeros(2, 3, 1)
    expected[0, 1, 0] = 0.1
    expected[1, 2, 0] = 1.0
    torch.testing.assert_close(ratio, expected)


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan")])
def test_undesirable_pixel_ratio_threshold_out_of_range_raises(threshold):
    with pytest.raises(ValueError, match="threshold"):
        undesirable_pixel_ratio(torch.ones(4, 4), threshold)


def _hand_masks() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 4 x 4 masks (M', 1 keeps): a blurs a 2 x 2 block, b a 2 x 3 block overlapping it in 2."""
    a = torch.ones(4, 4)
    a[0:2, 0:2] = 0.0
    b = torch.ones(4, 4)
    b[1:3, 0:3] = 0.1
    return a, b


def test_pearson_hand_values_and_constant_maps():
    """r of the two hand masks by hand: a blurs 4 cells (1 - M' = 1), b 6 (0.9), 2 of them
    shared; r is the same for the masks and for their 1 - M' maps, and what consistency_pairs
    reports; a constant map has no correlation (NaN)."""
    a, b = _hand_masks()
    x, y = (1 - a).flatten().double(), (1 - b).flatten().double()
    want = float(((x - x.mean()) * (y - y.mean())).sum()
                 / math.sqrt(((x - x.mean()) ** 2).sum() * ((y - y.mean()) ** 2).sum()))
    assert pearson(1 - a, 1 - b) == pytest.approx(want, abs=1e-12)
    assert pearson(a, b) == pytest.approx(want, abs=1e-12)
    assert consistency_pairs(torch.stack([a, b]))[0]["pearson"] == pearson(1 - a, 1 - b)
    assert pearson(a, -a) == pytest.approx(-1.0, abs=1e-12)
    assert math.isnan(pearson(torch.ones(4, 4), b))


def test_consistency_of_identical_masks_is_perfect():
    a, _ = _hand_masks()
    out = consistency(torch.stack([a, a, a]))
    assert out == {"pearson": pytest.approx(1.0, abs=1e-12), "iou": 1.0}


def test_consistency_of_a_mask_and_its_negative_has_pearson_minus_one():
    gen = torch.Generator().manual_seed(0)
    m = torch.rand(1, 8, 8, generator=gen)
    out = consistency(torch.stack([m, 1.0 - m]))
    assert out["pearson"] == pytest.approx(-1.0, abs=1e-9)


def test_consistency_iou_and_pearson_hand_values():
    a, b = _hand_masks()
    # undesirable regions (1 - M' > 0.6): a = {(0,0),(0,1),(1,0),(1,1)},
    # b = {(1,0),(1,1),(1,2),(2,0),(2,1),(2,2)}; intersection 2, union 8
    out = consistency(torch.stack([a, b]))
    assert out["iou"] == pytest.approx(2 / 8)
    ua, ub = (1 - a).flatten().double(), (1 - b).flatten().double()
    ua, ub = ua - ua.mean(), ub - ub.mean()
    r = float(ua @ ub / (ua.norm() * ub.norm()))
    assert out["pearson"] == pytest.approx(r, abs=1e-12)
    assert 0 < r < 1


def test_consistency_averages_over_all_pairs():
    a, b = _hand_masks()
    out = consistency(torch.stack([a, a, b]))
    # pairs (a,a) 1, (a,b) 0.25, (a,b) 0.25
    assert out["iou"] == pytest.approx((1 + 0.25 + 0.25) / 3)


def test_consistency_skips_constant_pairs_and_counts_two_empty_regions_as_agreeing():
    flat = torch.ones(2, 4, 4)
    out = consistency(flat)
    assert math.isnan(out["pearson"])
    assert out["iou"] == 1.0


def test_consistency_pairs_leave_undefined_pairs_undefined_and_flag_both_empty():
    from upx_core.method.metrics import consistency_pairs

    a, b = _hand_masks()
    empty = torch.ones_like(a)  # M' = 1 everywhere: nothing blurred, a constant map
    pairs = consistency_pairs(torch.stack([a, b, empty, empty]))
    assert [(p["i"], p["j"]) for p in pairs] == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert pairs[0]["iou"] == pytest.approx(2 / 8) and not pairs[0]["both_empty"]
    assert pairs[0]["pearson"] == pytest.approx(consistency(torch.stack([a, b]))["pearson"])
    # a region against an empty one: IoU 0, defined; the constant map has no correlation
    assert pairs[1]["iou"] == 0.0 and math.isnan(pairs[1]["pearson"])
    assert [p["both_empty"] for p in pairs] == [False] * 5 + [True]
    assert math.isnan(pairs[5]["iou"]) and math.isnan(pairs[5]["pearson"])
    # consistency() counts the empty pair as agreeing, IoU 1
    mean = (2 / 8 + 0 + 0 + 0 + 0 + 1) / 6
    assert consistency(torch.stack([a, b, empty, empty]))["iou"] == pytest.approx(mean)


def test_consistency_needs_two_trials():
    with pytest.raises(ValueError, match="two trials"):
        consistency(torch.ones(1, 4, 4))


def test_found_mask_needs_a_pixel_past_the_threshold_and_a_real_gain():
    import pandas as pd

    from upx_core.method.metrics import FOUND_PHI, found_mask

    assert FOUND_PHI == 10.0
    ratio = torch.tensor([0.0, 0.01, 0.01, 0.0])
    rel = torch.tensor([50.0, 9.99, 10.0, 0.0])
    # an empty mask with a big gain (the faint blur below the threshold did it) is not found
    assert found_mask(ratio, rel).tolist() == [False, False, True, False]
    assert found_mask(ratio, rel, min_phi=5).tolist() == [False, True, True, False]
    df = pd.DataFrame({"ratio": ratio.numpy(), "phi": rel.numpy()})
    assert found_mask(df["ratio"], df["phi"]).tolist() == [False, False, True, False]
