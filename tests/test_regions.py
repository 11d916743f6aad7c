"""The random-box control of upx_core.book.regions: a hand-drawn box against boxes of the same size
placed at random on the same image, for a mask's share (box_shares, share_control, box_table) and
for the target's change when only the box is blurred (blur_boxes, blur_control, blurred_boxes,
box_blur_controls)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from upx_core import OptimConfig, load_image, load_model, sample_path
from upx_core.book.regions import (
    blur_boxes,
    blur_control,
    blur_region,
    blurred_boxes,
    box_blur_controls,
    box_region,
    box_shares,
    box_table,
    percentile_of,
    random_boxes,
    region_share,
    share_control,
)

BOX = (120, 170, 150, 200)  # 50 x 50, fully inside a 224 x 224 image


def test_random_boxes_keep_the_size_stay_inside_and_are_seeded():
    boxes = random_boxes(BOX, (224, 224), n=500, seed=3)
    assert boxes.shape == (500, 4) and boxes.dtype == torch.long
    top, bottom, left, right = boxes.unbind(1)
    assert (bottom - top).eq(50).all() and (right - left).eq(50).all()
    assert top.min() >= 0 and bottom.max() <= 224 and left.min() >= 0 and right.max() <= 224
    assert torch.equal(boxes, random_boxes(BOX, (224, 224), n=500, seed=3))
    assert not torch.equal(boxes, random_boxes(BOX, (224, 224), n=500, seed=4))


def test_random_boxes_reach_every_place_uniformly():
    # a 3 x 2 box in a 4 x 4 image has 2 x 3 places; 6000 draws put about 1000 on each
    boxes = random_boxes((0, 3, 0, 2), (4, 4), n=6000, seed=0)
    places, counts = torch.unique(boxes, dim=0, return_counts=True)
    assert len(places) == 6
    assert counts.min() > 850 and counts.max() < 1150


def test_random_boxes_refuse_a_box_outside_the_image_and_no_boxes():
    with pytest.raises(ValueError, match="outside"):
        random_boxes((0, 300, 0, 10), (224, 224))
    with pytest.raises(ValueError, match="at least 1"):
        random_boxes(BOX, (224, 224), n=0)


def test_box_shares_equal_region_share_box_by_box():
    torch.manual_seed(0)
    u = torch.rand(224, 224) ** 3
    boxes = random_boxes(BOX, (224, 224), n=20, seed=1)
    got = box_shares(u, boxes)
    want = torch.tensor([region_share(u, box_region(b.tolist()))["share"] for b in boxes],
                        dtype=torch.float64)
    assert torch.allclose(got, want, rtol=0, atol=1e-12)
    empty = box_shares(torch.zeros(224, 224), boxes)
    assert torch.equal(empty, torch.zeros(20, dtype=torch.float64))


def test_percentile_of_exact_values():
    c = [1.0, 2.0, 3.0, 4.0]
    top = percentile_of(5.0, c)
    assert (top["percentile"], top["p_value"], top["p_value_low"]) == (100.0, 0.2, 1.0)
    tie = percentile_of(2.0, c)  # one below, one tied: (1 + 0.5) / 4
    assert tie["percentile"] == 37.5
    assert tie["p_value"] == pytest.approx(4 / 5) and tie["p_value_low"] == pytest.approx(3 / 5)
    bottom = percentile_of(0.0, c)
    assert (bottom["percentile"], bottom["p_value"], bottom["p_value_low"]) == (0.0, 1.0, 0.2)
    assert tie["control_median"] == 2.5 and tie["n"] == 4
    with pytest.raises(ValueError, match="no values"):
        percentile_of(1.0, [])


def test_a_mask_concentrated_in_the_box_is_singled_out():
    u = box_region(BOX) * 0.9
    c = share_control(u, BOX, n=200, seed=0)
    assert c["value"] == 1.0
    assert c["percentile"] == 100.0 and c["p_value"] == pytest.approx(1 / 201)
    # the same mask, asked about a box elsewhere, is at the bottom of the control
    away = share_control(u, (0, 50, 0, 50), n=200, seed=0)
    assert away["value"] == 0.0 and away["percentile"] < 50 and away["p_value"] == 1.0


def test_a_uniform_mask_singles_out_no_box():
    c = share_control(torch.full((224, 224), 0.3), BOX, n=200, seed=0)
    assert c["value"] == pytest.approx(2500 / 224 ** 2)
    assert c["percentile"] == 50.0 and c["p_value"] == 1.0  # every random box ties


def test_under_a_mask_with_no_preference_a_box_percentile_is_uniform():
    # smooth random blobs (a 28 x 28 noise map upsampled, like a mask): the percentile of a box
    # drawn like the control's is uniform on [0, 100] (the permutation null)
    torch.manual_seed(1)
    coarse = torch.rand(1, 1, 28, 28)
    u = torch.nn.functional.interpolate(coarse, size=(224, 224), mode="bilinear")[0, 0]
    control = box_shares(u, random_boxes(BOX, (224, 224), n=400, seed=0))
    probes = box_shares(u, random_boxes(BOX, (224, 224), n=400, seed=9))
    pct = torch.tensor([percentile_of(v, control)["percentile"] for v in probes])
    assert 45 < float(pct.mean()) < 55
    for q in (10, 25, 50, 75, 90):  # the empirical quantiles sit near the uniform's
        assert abs(float(pct.quantile(q / 100)) - q) < 6
    assert float((pct > 95).float().mean()) < 0.09


@pytest.fixture(scope="module")
def model():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_model("efficientnet_lite0")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tusker():
    try:
        return load_image(sample_path("tusker"))
    except RuntimeError as err:  # offline without UPX_DATA_DIR
        pytest.skip(str(err))


def test_blur_boxes_and_blur_control_are_blur_region_box_by_box(model, tusker):
    config = OptimConfig()
    boxes = random_boxes(BOX, (224, 224), n=3, seed=5)
    batched = blur_boxes(model, tusker, boxes, config, batch_size=2)
    for b, probs in zip(boxes, batched, strict=True):
        one = blur_region(model, tusker, box_region(b.tolist()), config)
        assert torch.allclose(probs, one, atol=1e-5)
    target = 386  # African elephant
    (c,) = blur_control(model, tusker, BOX, target, n=3, seed=5, config=config).to_dict("records")
    with torch.no_grad():
        clean = float(torch.softmax(model(tusker[None]), dim=1)[0, target])
    assert c["clean"] == pytest.approx(clean, abs=1e-5) and c["n"] == 3
    own = float(blur_region(model, tusker, box_region(BOX), config)[target]) - clean
    assert c["value"] == pytest.approx(own, abs=1e-5)
    changes = batched[:, target].double() - clean
    assert c["percentile"] == pytest.approx(percentile_of(own, changes)["percentile"])
    # several targets from the same forward passes: one row each, in the order given
    both = blur_control(model, tusker, BOX, [101, target], n=3, seed=5, config=config)
    assert both["target"].tolist() == [101, target]
    assert both.iloc[1]["value"] == pytest.approx(c["value"], abs=1e-6)


def test_box_table_is_region_share_and_share_control_map_by_map():
    inside = box_region(BOX) * 0.9
    spread = torch.full((224, 224), 0.3)
    table = box_table(torch.stack([inside, spread])[:, None], BOX, n=50, seed=2)
    assert list(table.columns) == ["share", "area", "enrichment", "value", "control_median",
                                   "percentile", "p_value", "p_value_low", "n"]
    for row, u in zip(table.to_dict("records"), (inside, spread), strict=True):
        assert row == {**region_share(u, box_region(BOX)), **share_control(u, BOX, 50, 2)}
    # all of the first map's mass is in the box, which no random box holds as fully
    assert table.loc[0, "share"] == 1.0 and table.loc[0, "area"] == 2500 / 224**2
    assert table.loc[1, "enrichment"] == pytest.approx(1.0)


def test_blurred_boxes_and_box_blur_controls_box_by_box(model, tusker):
    config = OptimConfig()
    boxes = {"box": BOX, "corner": (0, 40, 0, 40)}
    hand = blurred_boxes(model, tusker, boxes, [386, 101], config)
    assert hand.index.tolist() == ["clean image", "box blurred", "corner blurred"]
    assert hand.columns.tolist() == ["African elephant", "tusker"]
    with torch.no_grad():
        clean = torch.softmax(model(tusker[None]), dim=1)[0]
    assert hand.loc["clean image"].tolist() == clean[[386, 101]].tolist()
    corner = blur_region(model, tusker, box_region(boxes["corner"]), config)
    assert hand.loc["corner blurred"].tolist() == corner[[386, 101]].tolist()
    controls = box_blur_controls(model, tusker, boxes, [386, 101], n=3, seed=5, config=config,
                                 names=["Af", "tusker"])
    assert controls[["box", "class"]].values.tolist() == [["box", "Af"], ["box", "tusker"],
                                                          ["corner", "Af"], ["corner", "tusker"]]
    alone = blur_control(model, tusker, boxes["corner"], [386, 101], n=3, seed=5, config=config)
    pd.testing.assert_frame_equal(controls.iloc[2:].drop(columns=["box", "class"])
                                  .reset_index(drop=True), alone)
