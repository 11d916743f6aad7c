"""The chapters' tables and regions (upx_core.book.analysis, upx_core.book.regions,
upx_core.evaluation.tables), the results folder (upx_core.book.chapter) and stored-result files
(upx_core.evaluation.provenance)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from upx_core import MaskSetting, OptimConfig, UPXResult
from upx_core.book.analysis import BEFORE, probability_table
from upx_core.book.chapter import find_results_dir
from upx_core.book.regions import blur_region, box_region, region_share
from upx_core.evaluation.provenance import load_results, provenance, save_results
from upx_core.evaluation.tables import (
    bootstrap_interval,
    bracket_highest,
    interval_table,
    paired_comparison,
    paired_wins,
    paper_layout,
    sign_test,
)

CATS = [f"class{i}" for i in range(5)]


def fake_result() -> UPXResult:
    """One image, two masks (targets 1 and 2) over five classes, with known probabilities."""
    before = torch.tensor([[0.6, 0.1, 0.2, 0.05, 0.05]])
    after = torch.tensor([[[0.3, 0.5, 0.1, 0.05, 0.05],
                           [0.5, 0.05, 0.4, 0.03, 0.02]]])
    return UPXResult(
        config=OptimConfig(iterations=1),
        settings=[MaskSetting(target=1), MaskSetting(target=2)],
        targets=torch.tensor([[1, 2]]),
        masks=torch.ones(1, 2, 1, 4, 4),
        probs_before=before,
        probs_after=after,
        history=torch.zeros(1, 1, 2, 6),
        image_size=(8, 8),
        categories=CATS,
    )


def test_probability_table_rows_and_values():
    table = probability_table(fake_result(), ["class0", 1, "class2"])
    assert list(table.columns) == ["class0", "class1", "class2"]
    assert list(table.index) == [BEFORE, "ftc \u2192 class1", "ftc \u2192 class2"]
    assert table.loc[BEFORE, "class0"] == pytest.approx(0.6)
    assert table.loc["ftc \u2192 class1", "class1"] == pytest.approx(0.5)
    assert table.loc["ftc \u2192 class2", "class2"] == pytest.approx(0.4)


def test_probability_table_labels_are_checked():
    with pytest.raises(ValueError, match="labels"):
        probability_table(fake_result(), [0, 1], labels=["only one"])
    with pytest.raises(ValueError, match="distinct"):
        probability_table(fake_result(), [0, 1], labels=["same", "same"])
    table = probability_table(fake_result(), [0], labels=["a", "b"])
    assert list(table.index) == [BEFORE, "a", "b"]


def test_bracket_highest_marks_each_column_maximum():
    table = probability_table(fake_result(), ["class0", "class1", "class2"])
    text = bracket_highest(table)
    assert text.loc[BEFORE, "class0"] == "[0.600]"
    assert text.loc["ftc \u2192 class1", "class1"] == "[0.500]"
    assert text.loc["ftc \u2192 class2", "class2"] == "[0.400]"
    assert text.loc[BEFORE, "class1"] == "0.100"
    pct = bracket_highest(table, digits=1, percent=True)
    assert pct.loc[BEFORE, "class0"] == "[60.0]"


def test_bracket_highest_brackets_ties():
    text = bracket_highest(pd.DataFrame({"c": [0.5, 0.5, 0.1]}, index=["a", "b", "x"]))
    assert list(text["c"]) == ["[0.500]", "[0.500]", "0.100"]


def test_save_and_load_results_round_trip(tmp_path):
    df = pd.DataFrame({"image_index": [1, 2], "mode": ["ftc", "fntc"], "ratio": [0.1, 0.2]})
    meta = provenance("upx evaluate --n 2", wall_s=12.34, note="test")
    assert meta["command"] == "upx evaluate --n 2"
    assert meta["wall_s"] == 12.3
    assert meta["hardware"] and meta["date"]
    csv, sidecar = save_results(df, tmp_path / "runs" / "run.csv", meta)
    assert json.loads(sidecar.read_text())["note"] == "test"
    (tmp_path / "runs" / "orphan.csv").write_text("a\n1\n")
    loaded = load_results(tmp_path / "runs")
    assert [name for name, _, _ in loaded] == ["orphan", "run"]
    assert loaded[0][2] == {"provenance": "unknown"}
    pd.testing.assert_frame_equal(loaded[1][1], df)
    assert loaded[1][2]["command"] == "upx evaluate --n 2"


def test_load_results_missing_folder_is_empty(tmp_path):
    assert load_results(tmp_path / "nothing") == []


def test_box_region_and_region_share():
    region = box_region((0, 2, 0, 4), size=(4, 4))
    assert float(region.sum()) == 8
    with pytest.raises(ValueError, match="box"):
        box_region((2, 2, 0, 4), size=(4, 4))
    inside = torch.zeros(4, 4)
    inside[0, 0] = 1.0
    stats = region_share(inside, region)
    assert stats == pytest.approx({"share": 1.0, "area": 0.5, "enrichment": 2.0})
    uniform = region_share(torch.full((1, 4, 4), 0.3), region)
    assert uniform["enrichment"] == pytest.approx(1.0)
    assert region_share(torch.zeros(4, 4), region)["share"] == 0.0


def test_blur_region_only_changes_the_region():
    from torch import nn

    from upx_core.method.models import Classifier

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 5))
    model = Classifier(net, mean=(0.5,) * 3, std=(0.5,) * 3, input_size=16, categories=CATS)
    image = torch.rand(3, 16, 16)
    nothing = blur_region(model, image, torch.zeros(16, 16))
    with torch.no_grad():
        clean = torch.softmax(model(image[None]), dim=1)[0]
    assert torch.allclose(nothing, clean, atol=1e-6)
    changed = blur_region(model, image, box_region((0, 8, 0, 8), size=(16, 16)),
                          OptimConfig(sigma=2.0, kernel_size=5))
    assert not torch.allclose(changed, clean, atol=1e-4)
    assert changed.sum() == pytest.approx(1.0, abs=1e-5)


def test_find_results_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_results_dir() is None
    (tmp_path / "notebooks" / "results").mkdir(parents=True)
    assert find_results_dir() == tmp_path / "notebooks" / "results"
    (tmp_path / "results").mkdir()
    assert find_results_dir() == tmp_path / "results"


def eval_rows() -> pd.DataFrame:
    rows = []
    for image, gains in ((1, (50.0, 40.0, 5.0)), (2, (30.0, 35.0, 10.0))):
        for mode, gain in zip(("ftc", "fntc", "random"), gains, strict=True):
            rows.append({"model": "m", "image_index": image, "seed": 0, "mode": mode,
                         "relative_improvement": gain, "ratio": 0.01 * image})
    return pd.DataFrame(rows)


def test_paper_layout_puts_paper_and_runs_side_by_side():
    table = paper_layout({"live": eval_rows()}, "phi")
    assert list(table.index) == ["VGG-19 (paper)", "ResNet-18 (paper)", "m (live)"]
    assert list(table.columns) == ["F-TC", "F-NTC", "random (F-TC area)", "images"]
    assert table.loc["VGG-19 (paper)", "F-TC"] == pytest.approx(48.741)
    assert table.loc["m (live)", "F-TC"] == pytest.approx(40.0)
    assert table.loc["m (live)", "images"] == 2
    assert pd.isna(table.loc["VGG-19 (paper)", "random (F-TC area)"])
    ratio = paper_layout({"live": eval_rows()}, "ratio", paper=False)
    assert list(ratio.index) == ["m (live)"]
    assert ratio.loc["m (live)", "F-NTC"] == pytest.approx(0.015)
    with pytest.raises(ValueError, match="metric"):
        paper_layout({"live": eval_rows()}, "accuracy")


def test_paper_layout_thresholded_phi():
    rows = eval_rows()
    rows["relative_improvement_thresholded"] = rows["relative_improvement"] / 2
    table = paper_layout({"new": rows, "old": eval_rows()}, "phi_thresholded")
    assert list(table.index) == ["m (new)", "m (old)"]  # the paper has no such table
    assert table.loc["m (new)", "F-TC"] == pytest.approx(20.0)
    assert pd.isna(table.loc["m (old)", "F-TC"])


def test_paired_wins():
    df = eval_rows()
    assert paired_wins(df, "ftc", "random") == 1.0
    assert paired_wins(df, "ftc", "fntc") == 0.5
    with pytest.raises(ValueError, match="share no"):
        paired_wins(df, "ftc", "baseline")


# --- intervals and paired tests (chapter 7's "How sure are these numbers?") -------------------

def test_sign_test_exact_values():
    assert sign_test(5, 5) == 1.0
    assert sign_test(0, 0) == 1.0
    # 10 wins, 0 losses: 2 * (1/2)^10
    assert sign_test(10, 0) == pytest.approx(2 / 1024)
    # 8:2 -> 2 * (C(10,0) + C(10,1) + C(10,2)) / 2^10 = 2 * 56 / 1024
    assert sign_test(8, 2) == pytest.approx(112 / 1024)
    assert sign_test(2, 8) == sign_test(8, 2)


def test_bootstrap_interval_brackets_the_mean_and_is_seeded():
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    lo, hi = bootstrap_interval(values, n_boot=4000, seed=1)
    assert lo < sum(values) / len(values) < hi
    assert 1.0 <= lo and hi <= 10.0
    assert bootstrap_interval(values, n_boot=4000, seed=1) == (lo, hi)
    assert bootstrap_interval([3.0, 3.0, 3.0]) == (3.0, 3.0)
    assert all(v != v for v in bootstrap_interval([1.0, float("nan")]))  # one value: nan


def _paired_rows(a_values, b_values, seeds=(0,)):
    rows = []
    for s in seeds:
        for i, (a, b) in enumerate(zip(a_values, b_values, strict=True)):
            rows += [{"model": "m", "image_index": i, "seed": s, "mode": "ftc",
                      "relative_improvement": a + s},
                     {"model": "m", "image_index": i, "seed": s, "mode": "random",
                      "relative_improvement": b}]
    return pd.DataFrame(rows)


def test_paired_comparison_resamples_images_not_trials():
    df = _paired_rows([10.0, 20.0, 30.0, 40.0], [0.0, 5.0, 35.0, 1.0], seeds=(0, 2))
    out = paired_comparison(df, "ftc", "random")
    # per image the trials are averaged first (ftc: a + 1), so 4 differences, not 8
    assert out["images"] == 4
    assert out["mean_difference"] == pytest.approx((11 + 16 - 4 + 40) / 4)
    assert out["share_a_higher"] == 0.75
    assert out["sign_test_p"] == pytest.approx(sign_test(3, 1))
    assert out["ci_low"] < out["mean_difference"] < out["ci_high"]
    with pytest.raises(ValueError, match="share no"):
        paired_comparison(df, "ftc", "baseline")


def test_a_mode_that_finds_nothing_has_an_interval_at_zero():
    df = _paired_rows([0.0] * 6, [0.0] * 6)
    out = paired_comparison(df, "ftc", "random")
    assert out["ci_low"] == out["ci_high"] == 0.0 and out["sign_test_p"] == 1.0


def test_interval_table_one_row_per_model_and_mode_in_mode_order():
    df = _paired_rows([10.0, 20.0, 30.0], [1.0, 2.0, 3.0]).assign(ratio=0.01)
    table = interval_table({"live": df}, "phi")
    assert list(table["mode"]) == ["F-TC", "random (F-TC area)"]
    assert list(table["images"]) == [3, 3]
    assert table.loc[0, "mean"] == pytest.approx(20.0)
    assert (table["ci_low"] <= table["mean"]).all() and (table["mean"] <= table["ci_high"]).all()
    with pytest.raises(ValueError, match="metric"):
        interval_table({"live": df}, "accuracy")


def _run(values: dict[int, tuple[float, float, float]], mode: str = "ftc") -> pd.DataFrame:
    """Rows of one mode: image -> (prob_before, relative_improvement, ratio)."""
    return pd.DataFrame([{"model": "m", "image_index": i, "mode": mode, "seed": 0,
                          "prob_before": p, "relative_improvement": phi, "ratio": r}
                         for i, (p, phi, r) in values.items()])


def test_paired_runs_compares_two_runs_on_the_images_they_share_only():
    from upx_core.evaluation.tables import paired_runs

    a = _run({1: (0.5, 40.0, 0.01), 2: (0.5, 30.0, 0.0), 3: (0.5, 99.0, 0.0)})
    b = _run({1: (0.5, 10.0, 0.01), 2: (0.5, 35.0, 0.0), 4: (0.5, -50.0, 0.0)})
    out = paired_runs(a, b, "ftc")
    # images 1 and 2 only: differences 30 and -5
    assert out["images"] == 2
    assert out["mean_difference"] == pytest.approx(12.5)
    assert (out["mean_a"], out["mean_b"]) == (pytest.approx(35.0), pytest.approx(22.5))
    assert out["share_a_higher"] == 0.5 and out["sign_test_p"] == 1.0
    with pytest.raises(ValueError, match="share no image"):
        paired_runs(a, b, "fntc")


def test_by_confidence_strata_shares_and_means():
    from upx_core.evaluation.tables import by_confidence

    df = _run({1: (0.1, 80.0, 0.02), 2: (0.2, 60.0, 0.0), 3: (0.95, 4.0, 0.0),
               4: (1.0, 0.0, 0.0), 5: (0.3, 50.0, 0.01)})
    t = by_confidence(df).set_index("f_h(X)")
    assert t["images"].tolist() == [2, 1, 0, 2]  # 0.3 opens the second stratum; 1.0 closes the last
    assert t["share"].tolist() == [0.4, 0.2, 0.0, 0.4]
    assert t.loc["0-0.3", "phi"] == pytest.approx(70.0)
    assert t.loc["0-0.3", "ratio_pct"] == pytest.approx(1.0)
    assert t.loc["0.9-1", "phi"] == pytest.approx(2.0)


def test_ratio_summary_separates_the_empty_masks():
    from upx_core.evaluation.tables import ratio_summary

    df = pd.concat([_run({1: (0.5, 1, 0.0), 2: (0.5, 1, 0.02), 3: (0.5, 1, 0.04),
                          4: (0.5, 1, 0.0)}),
                    _run({1: (0.5, 1, 0.0)}, mode="fntc")])
    t = ratio_summary(df).set_index("mode")
    assert t.loc["F-TC", "masks"] == 4
    assert t.loc["F-TC", "ratio_pct"] == pytest.approx(1.5)
    assert t.loc["F-TC", "empty_share"] == 0.5
    assert t.loc["F-TC", "nonempty_ratio_pct"] == pytest.approx(3.0)
    assert t.loc["F-TC", "nonempty_median_pct"] == pytest.approx(3.0)
    assert t.loc["F-NTC", "empty_share"] == 1.0


def test_run_label_says_model_objective_and_images_in_words():
    from upx_core.evaluation.tables import run_label

    df = _run({1: (0.5, 1, 0.0), 2: (0.5, 1, 0.0)}).assign(model="efficientnet_lite1",
                                                           objective="log_prob")
    assert run_label(df) == "Lite1, log-probability, 2 images"


def test_readings_table_one_row_per_reading_trials_averaged_first():
    from upx_core.evaluation.tables import readings_table

    rows = pd.DataFrame([
        # F-NTC, squared norm, gamma 1: image 1 over two trials (phi 10 and 30), image 2 one
        {"objective": "prob", "fntc_norm": "squared", "gamma": 1.0, "lambda2": 3.0,
         "mode": "fntc", "image_index": 1, "seed": 0, "relative_improvement": 10.0,
         "ratio": 0.01},
        {"objective": "prob", "fntc_norm": "squared", "gamma": 1.0, "lambda2": 3.0,
         "mode": "fntc", "image_index": 1, "seed": 1, "relative_improvement": 30.0,
         "ratio": 0.03},
        {"objective": "prob", "fntc_norm": "squared", "gamma": 1.0, "lambda2": 3.0,
         "mode": "fntc", "image_index": 2, "seed": 0, "relative_improvement": 50.0,
         "ratio": 0.0},
        # F-TC: the norm of F-NTC does not apply, whatever the row says
        {"objective": "prob", "fntc_norm": "abs", "gamma": 0.3, "lambda2": 0.5,
         "mode": "ftc", "image_index": 1, "seed": 0, "relative_improvement": 5.0,
         "ratio": 0.04},
    ])
    t = readings_table(rows).set_index("mode")
    assert t.loc["fntc", "images"] == 2
    assert t.loc["fntc", "phi"] == pytest.approx((20.0 + 50.0) / 2)
    assert t.loc["fntc", "ratio_pct"] == pytest.approx((2.0 + 0.0) / 2)
    assert t.loc["fntc", "phi_lo"] <= t.loc["fntc", "phi"] <= t.loc["fntc", "phi_hi"]
    assert (t.loc["ftc", "fntc_norm"], t.loc["ftc", "lambda2"]) == ("", 0.5)
    assert t.loc["ftc", "ratio_pct"] == pytest.approx(4.0)


def test_clean_probs_and_top_classes(model, tusker):
    from upx_core.book.analysis import clean_probs, top_classes

    with torch.no_grad():
        want = torch.softmax(model(tusker[None]), dim=1)
    one = clean_probs(model, tusker)
    assert one.shape == (1000,) and torch.equal(one, want[0])
    assert torch.equal(clean_probs(model, tusker[None]), want)
    top = top_classes(torch.tensor([0.1, 0.5, 0.15, 0.25]), ["a", "b", "c", "d"], k=3)
    assert top["class"].tolist() == ["b", "d", "c"]
    assert top["probability"].tolist() == pytest.approx([0.5, 0.25, 0.15])
    assert top_classes(one, model.categories, 1)["class"].tolist() == ["tusker"]
