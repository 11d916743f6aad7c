"""upx_core.evaluation.blackbox_run and its two figures (upx_core.book.figures), read from
the stored query-only run that chapter 9 shows (notebooks/results/blackbox)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from upx_core.book.figures import budget_curves, fair_curves, quality_maps
from upx_core.evaluation.blackbox_run import load_fair_run, load_quality_run
from upx_core.method.equations import upsample_mask

matplotlib.use("Agg")
FOLDER = Path(__file__).resolve().parents[1] / "notebooks" / "results" / "blackbox"


@pytest.fixture(scope="module")
def run():
    return load_quality_run(FOLDER)


def test_the_stored_run_read_back(run):
    assert [target for _, target in run.cases] == ["African elephant", "ski", "abaya",
                                                   "mobile home"]
    assert (run.objective, run.budgets, run.top) == ("log_prob", [1000, 4000, 16000], 16000)
    assert run.found == ["African elephant", "abaya", "ski"]  # white-box phi >= 10
    assert len(run.onnx) == 12 and len(run.oracle) == 20 and len(run.seeds) == 8
    assert run.timing.index.tolist() == [("onnxruntime", 1000), ("onnxruntime", 4000),
                                         ("onnxruntime", 16000), ("torch", 1000)]
    assert run.timing[("onnxruntime", 16000)] == pytest.approx(138.775804, abs=1e-6)
    assert run.oracle_agreement.columns.tolist() == [802, 3602, 16002, 64002, 256002]
    assert run.seed_agreement.loc["ski", "white seed 1"] == pytest.approx(0.3311, abs=1e-4)
    r = run.at_budget(16000)["pearson_vs_white"]
    assert (round(r["African elephant"], 4), round(r["ski"], 4)) == (0.7378, 0.8821)


def test_the_table_of_budgets(run):
    table = run.table()
    assert table.columns.tolist() == ["target", "budget", "r vs white-box", "phi",
                                      "white-box phi", "phi share", "ratio %",
                                      "white-box ratio %"]
    first = table.iloc[0]  # sorted by target, then budget
    assert (first["target"], first["budget"]) == ("African elephant", 1000)
    assert first["phi share"] == pytest.approx(16.193657735753 / 46.35458448482451)
    assert first["ratio %"] == pytest.approx(27.702486515045166)


def test_undesirable_maps_are_the_stored_masks_upsampled(run):
    maps = run.undesirable("onnxruntime_16000", (224, 224))
    assert maps.shape == (4, 224, 224)
    m = torch.from_numpy(run.masks["onnxruntime_16000"][2]).float()[None, None]
    assert torch.equal(maps[2], 1 - upsample_mask(m, (224, 224))[0, 0])


def test_the_figures_of_the_stored_run(run):
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    fig = quality_maps(run, images)
    assert len(fig.axes) == 4 * 6 + 1  # photo, two white-box seeds, three budgets; colour bar
    assert [ax.get_title() for ax in fig.axes[3:6]] == [
        "query-only, 1,000 queries", "query-only, 4,000 queries", "query-only, 16,000 queries"]
    assert [fig.axes[6 * i].get_ylabel() for i in range(4)] == [t for _, t in run.cases]
    plt.close(fig)
    fig = budget_curves(run, ["African elephant", "ski", "abaya"])
    assert [ax.get_title() for ax in fig.axes] == ["African elephant", "ski", "abaya"]
    query_only = fig.axes[1].lines[0]  # ski, the query-only estimator
    ski = run.onnx[run.onnx["target"] == "ski"].sort_values("budget")
    np.testing.assert_array_equal(query_only.get_xdata(), ski["budget"].to_numpy())
    np.testing.assert_array_equal(query_only.get_ydata(), ski["pearson_vs_white"].to_numpy())
    plt.close(fig)


@pytest.fixture(scope="module")
def fair():
    return load_fair_run(FOLDER)


def test_the_fair_comparison_read_back(fair):
    maps = fair.maps
    assert set(maps["method"]) == {"white-box", "query-only", "query-only, tracking",
                                   "oracle, same directions", "occlusion", "RISE"}
    # torch_1000 and the stored oracle left out; tracking_<budget>_seed<s>: the running gradient
    tracked = maps[maps["method"] == "query-only, tracking"]
    assert sorted(set(zip(tracked["budget"], tracked["trial"], strict=True))) == [
        (b, s) for b in (1000, 4000, 16000) for s in (0, 1, 2)]
    assert tracked["phi"].notna().all()  # its own rows hold the masks' raw phi
    assert (maps["method"] == "occlusion").sum() == 4
    assert set(maps.loc[maps["method"] == "occlusion", "budget"]) == {28 * 28 + 1}
    rise = maps[maps["method"] == "RISE"]
    assert sorted(set(zip(rise["budget"], rise["trial"], strict=True))) == [
        (b, s) for b in (1000, 4000) for s in (0, 1, 2)]
    # the ceiling is the mean r of white-box seeds 1 and 2 with seed 0 (quality.json's rows)
    seeds = fair.quality.seed_agreement
    for target in ("African elephant", "ski", "abaya"):
        assert fair.ceiling[target] == pytest.approx(seeds.loc[target].mean())
    # seed 0's query-only raw phi is the stored run's
    zero = maps[(maps["method"] == "query-only") & (maps["trial"] == 0)]
    stored = fair.quality.onnx.set_index(["target", "budget"])["phi"]
    for _, row in zero.iterrows():
        assert row["phi"] == stored[(row["target"], int(row["budget"]))]


def test_the_fair_summary(fair):
    table = fair.summary(["ski"])
    assert table.columns.tolist() == [
        "target", "method", "budget", "maps", "r median", "r min", "r max", "r / ceiling",
        "phi", "mean blur", "phi top 1 %", "phi top 2 %", "phi top 5 %", "phi white-box area"]
    assert table["method"].tolist()[:3] == ["white-box", "query-only", "query-only"]
    ski = fair.maps[(fair.maps["target"] == "ski") & (fair.maps["method"] == "query-only")
                    & (fair.maps["budget"] == 4000)]
    row = table[(table["method"] == "query-only") & (table["budget"] == 4000)].iloc[0]
    assert row["maps"] == 3
    assert row["r median"] == pytest.approx(ski["pearson_vs_white"].median())
    assert (row["r min"], row["r max"]) == (ski["pearson_vs_white"].min(),
                                            ski["pearson_vs_white"].max())
    assert row["r / ceiling"] == pytest.approx(row["r median"] / fair.ceiling["ski"])
    white = table[table["method"] == "white-box"].iloc[0]  # r over seeds 1 and 2 only
    assert white["r / ceiling"] == pytest.approx(1.0)


def test_the_fair_figure(fair):
    fig = fair_curves(fair, ["African elephant", "ski", "abaya"])
    assert [ax.get_title() for ax in fig.axes] == ["African elephant", "ski", "abaya"]
    table = fair.summary()
    ski = table[(table["target"] == "ski") & (table["method"] == "query-only")]
    drawn = fig.axes[1].lines[1]  # after the ceiling's dashed line: the query-only medians
    np.testing.assert_array_equal(drawn.get_xdata(), ski["budget"].to_numpy())
    np.testing.assert_array_equal(drawn.get_ydata(), ski["r median"].to_numpy())
    plt.close(fig)
