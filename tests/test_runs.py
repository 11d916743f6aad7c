"""upx_core.evaluation.runs, read from the stored evaluation runs that chapter 7 shows
(notebooks/results): the exact numbers its tables and checked sentences are drawn from."""

from __future__ import annotations

from pathlib import Path

import pytest

from upx_core.evaluation import runs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "notebooks" / "results"


@pytest.fixture(scope="module")
def stored():
    return runs.load_stored_runs(RESULTS)


@pytest.fixture(scope="module")
def lite0(stored):
    found = runs.objective_runs(stored)
    return found["prob"][1], found["log_prob"][1]


def test_the_stored_runs_and_how_they_were_made(stored):
    assert sorted(stored.files.values()) == ["cpu_200img_log_prob", "cpu_200img_prob",
                                             "cpu_24img_lite1_log_prob", "cpu_24img_lite1_prob",
                                             "cpu_48img_log_prob"]
    assert stored.files["Lite0, probability, 200 images (stored)"] == "cpu_200img_prob"
    row = stored.made.set_index("file").loc["cpu_200img_prob.csv"]
    assert (row["run"], row["modes"], row["date"], row["commit"]) == (
        "Lite0, probability, 200 images", "baseline, fntc, ftc, random", "2026-11-29",
        "ac939b26c2")
    assert stored.commands["Lite0, probability, 200 images"].endswith(
        "--n 200 --objective prob --out notebooks/results/cpu_200img_prob.csv")
    assert runs.load_stored_runs(None).runs == {}
    assert {obj: label for obj, (label, _) in runs.objective_runs(stored).items()} == {
        "prob": "Lite0, probability, 200 images (stored)",
        "log_prob": "Lite0, log-probability, 200 images (stored)"}


def test_run_facts_of_the_probability_run(lite0):
    f = runs.run_facts(lite0[0])
    assert (round(f["ftc_phi"], 2), round(f["baseline_phi"], 2), round(f["fntc_phi"], 2)) == (
        35.18, 35.61, 5.69)
    assert (round(f["random_phi"], 2), round(f["ftc_thr_phi"], 2)) == (-0.54, 15.97)
    assert (f["ftc_beats_random_share"], f["ftc_beats_random"]) == (0.995, 199)
    assert (f["eq3_beats_ftc_share"], f["eq3_wins_pct"]) == (0.62, 62.0)
    assert f["thr_share"] == pytest.approx(f["ftc_thr_phi"] / f["ftc_phi"])
    assert round(f["ftc_ratio_pct"], 4) == 0.4654 and f["ftc_ratio"] == f["ftc_ratio_pct"] / 100
    assert round(f["spearman"], 4) == -0.8577 and round(f["sure_small_gain_share"], 4) == 0.8649


def test_the_tables_of_runs(lite0):
    prob, lp = lite0
    spearman = runs.confidence_correlation({"p": prob, "l": lp})
    assert spearman["source"].tolist() == ["p", "l"]
    assert spearman["Spearman r"].round(4).tolist() == [-0.8577, -0.9019]
    wins = runs.wins_table({"p": prob})
    assert wins.loc["p"].tolist() == [0.995, 0.375, 0.76, 0.895]
    assert wins.columns.tolist() == ["F-TC > random (F-TC area)", "F-TC > baseline (Eq. 3)",
                                     "F-NTC > random (F-TC area)", "F-TC > F-NTC"]
    paired = runs.paired_table({"p": prob}).set_index("comparison")
    assert paired.loc["F-TC - baseline (Eq. 3)", ["mean_difference", "ci_low", "ci_high"]] \
        .round(3).tolist() == [-0.428, -0.649, -0.225]
    assert paired["images"].tolist() == [200] * 4
    ratios = runs.ratio_table({"p": prob}).loc["Lite0, probability, 200 images"]
    assert ratios.loc["F-TC", "empty_share"] == pytest.approx(41.0)  # in percent
    assert round(ratios.loc["F-NTC", "nonempty_ratio_pct"], 3) == 0.260


def test_the_two_objectives_image_by_image(lite0):
    prob, lp = lite0
    pairs = runs.objective_comparison(lp, prob)
    ftc = pairs.loc[("F-TC", "phi (points)")]
    assert ftc["images"] == 200
    assert [round(ftc[c], 3) for c in ("probability", "log-probability", "difference",
                                       "ci_low", "ci_high")] == [35.179, 39.172, 3.993, 3.233,
                                                                  4.816]
    assert ftc["share higher"] == 0.875
    assert round(pairs.loc[("F-NTC", "ratio (% of the image)"), "log-probability"], 2) == 17.31
    strata = runs.strata_table({"probability": prob, "log-probability": lp})
    assert strata["mode"].unique().tolist() == ["F-TC", "F-NTC"]
    sure = strata[(strata["objective"] == "probability") & (strata["mode"] == "F-TC")]
    assert sure["images"].tolist() == [21, 29, 76, 74]
    assert sure["phi"].round(3).tolist() == [72.003, 62.642, 44.086, 4.819]


def test_the_default_objective_run():
    targets = runs.load_default_objective(RESULTS / "default-objective")
    found, mean_ratio = runs.found_tables(targets)
    assert found.loc["all targets"].tolist() == ["132 of 150", "75 of 150"]  # log_prob, prob
    assert found.loc["class ranked 3", "prob"] == "13 of 50"
    assert mean_ratio.index.tolist() == runs.TARGET_BANDS
    f = runs.target_facts(targets)
    assert {k: f[k] for k in ("images", "runner_targets", "top_targets", "runner_found_prob",
                              "runner_found_log", "top_found_prob", "top_found_log",
                              "prob_only")} == {
        "images": 50, "runner_targets": 100, "top_targets": 50, "runner_found_prob": 43,
        "runner_found_log": 98, "top_found_prob": 32, "top_found_log": 34, "prob_only": 0}
    assert (f["runner_share_prob"], f["runner_share_log"], f["sure_found_max"]) == (
        0.43, 0.98, 0.1875)
    assert round(f["runner_size_factor"], 4) == 5.7286
    assert round(f["runner_size_found_factor"], 4) == 2.4657
    assert f["runner_size_log_pct"] == pytest.approx(100 * f["runner_size_log"])
    assert runs.load_default_objective(None).empty


def test_two_models_on_their_shared_images(stored):
    shared = runs.shared_image_runs(stored.runs)
    assert list(shared) == ["log_prob, 24 shared images", "prob, 23 shared images"]
    prob = shared["prob, 23 shared images"]
    assert prob.groupby("model")["image_index"].nunique().tolist() == [23, 23]
    table = runs.model_table(shared)
    assert round(table.loc[("prob, 23 shared images", "efficientnet_lite1"),
                           "mean f_h(X), clean"], 3) == 0.525
    assert table.loc[("log_prob, 24 shared images", "efficientnet_lite0"),
                     "F-TC > F-NTC"] == 0.0


def test_live_agreement_pairs_rows_of_the_same_settings(lite0):
    prob = lite0[0]
    live = prob[prob["image_index"].isin(sorted(prob["image_index"].unique())[:2])]
    table = runs.live_agreement(live, {"stored": prob, "other": lite0[1]})
    assert list(table) == ["stored"]  # the log-probability run has other settings
    ftc = table["stored"].loc["ftc"]
    assert ftc["relative_improvement live"] == ftc["relative_improvement stored"]
    assert ftc["images"] == 2


def test_accuracy_stored_and_published():
    mean = std = [0.5, 0.5, 0.5]  # Lite0's own normalization
    assert runs.sample_accuracy(ROOT / "benchmarks" / "results", "efficientnet_lite0", mean,
                                std) == [0.881]
    assert runs.sample_accuracy(ROOT / "benchmarks" / "results", "efficientnet_lite0",
                                [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], images=7) == []
    assert runs.published_top1() == {"vgg19": 72.376, "resnet18": 69.758}
