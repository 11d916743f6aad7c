"""The logit decomposition and consistency tables (upx_core.book.analysis), PNG rendering and
the explorers (upx_core.book.widgets)."""

from __future__ import annotations

import math

import pytest
import torch

from upx_core import MaskSetting, OptimConfig, load_image, load_model, optimize_masks, sample_path
from upx_core.book.analysis import consistency_table, logit_decomposition, plot_logit_decomposition
from upx_core.book.widgets import (
    live_explorer,
    result_pictures,
    result_pngs,
    stored_result,
    tree_explorer,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = OptimConfig(iterations=2)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on busy shared cores two threads can be many times slower
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    return load_model("efficientnet_lite0")


@pytest.fixture(scope="module")
def image():
    try:
        return load_image(sample_path("mobile home"))
    except RuntimeError as err:  # offline without UPX_DATA_DIR
        pytest.skip(str(err))


# Two modes x three L1 weights, one trial each.
SETTINGS = [MaskSetting(mode=m, seed=1, lambda2=w)
            for m in ("ftc", "fntc") for w in (1.0, 3.0, 6.0)]


@pytest.fixture(scope="module")
def grid_result(model, image):
    return optimize_masks(model, image, targets="mobile home", settings=SETTINGS, config=TINY,
                          progress=False)


def test_result_pngs_one_valid_png_per_cell(grid_result, image):
    from PIL import Image

    titles = [f"mode={s.mode}, lambda2={s.lambda2}" for s in SETTINGS]
    pngs = result_pngs(grid_result, image, titles=titles)
    assert len(pngs) == len(SETTINGS)
    for p in pngs:
        assert p.startswith(PNG_MAGIC)
        import io

        with Image.open(io.BytesIO(p)) as im:
            im.verify()
    assert len(set(pngs)) == len(pngs)  # titles differ, so every picture does


def test_stored_result_redraws_stored_masks(grid_result, image):
    """A result rebuilt from its masks and probabilities has the optimizer's perturbed images
    and target probabilities, so the explorer's pictures need no optimizer."""
    r = grid_result
    t = int(r.targets[0, 0])
    s = stored_result(image, r.masks[0, :, 0], t, float(r.target_prob_before[0, 0]),
                      r.target_prob_after[0].tolist(), SETTINGS, r.config, r.categories)
    assert torch.allclose(s.perturbed, r.perturbed, atol=1e-5)
    assert torch.allclose(s.target_prob_after, r.target_prob_after)
    assert torch.equal(s.undesirable, r.undesirable)
    jpegs = result_pictures(s, image, dpi=100, format="jpeg", quality=70, colorbar=True)
    import io

    from PIL import Image

    with Image.open(io.BytesIO(jpegs[0])) as im:
        assert im.format == "JPEG" and im.width >= 800


def test_tree_explorer_links_every_level():
    """Image, mode and knob each pick a Stack child in every branch; the value slider of the
    chosen knob (its options depend on the knob) picks the picture, and shows the value."""
    import ipywidgets as widgets

    values = {"lambda1": (0.5, 1.7, 5.0), "seed": (0, 1)}
    tree = {im: {m: {k: {v: f"{im}{m}{k}{v}".encode() for v in vs} for k, vs in values.items()}
                 for m in ("ftc", "fntc")} for im in ("ski", "abaya", "tusker")}
    tree["ski"]["fntc"]["seed"][1] = "<i>not computed</i>"
    box = tree_explorer(tree, ["image", "mode", "knob", "value"], dropdown=["image"])
    c = box.controls
    assert isinstance(c["image"], widgets.Dropdown) and isinstance(c["mode"], widgets.ToggleButtons)
    assert [label for label, _ in c["knob"].options] == ["lambda1", "seed"]
    slider = c["value"]["lambda1"]
    assert isinstance(slider, widgets.SelectionSlider)
    assert slider.options == ("0.5", "1.7", "5") and slider.index == 0
    pictures = box.children[-1]
    leaves = pictures.children[2].children[1].children[0]  # tusker, fntc, lambda1
    assert [w.value for w in leaves.children] == [f"tuskerfntclambda1{v}".encode()
                                                  for v in values["lambda1"]]
    assert isinstance(pictures.children[0].children[1].children[1].children[1], widgets.HTML)
    linked = {(ln.source[0].model_id, ln.target[0].model_id) for ln in box.links}
    assert (c["image"].model_id, pictures.model_id) in linked
    assert (c["knob"].model_id, box.children[-2].model_id) in linked  # the slider Stack
    assert (slider.model_id, leaves.model_id) in linked
    assert all((c["mode"].model_id, p.model_id) in linked for p in pictures.children)
    assert len(box.links) == 1 + 1 + 3 + 6 + 12
    bad = {"a": {"x": {1: b"1"}}, "b": {"y": {1: b"1"}}}
    with pytest.raises(ValueError, match="different options"):
        tree_explorer(bad, ["image", "knob", "value"])


def test_logit_decomposition_is_exact(model, image, grid_result):
    df = logit_decomposition(model, image, grid_result)
    assert len(df) == 6
    p0, p1 = df["prob_before"], df["prob_after"]
    log_odds = (p1 / (1 - p1)).map(math.log) - (p0 / (1 - p0)).map(math.log)
    assert (df["d_log_odds"] - log_odds).abs().max() < 1e-3
    assert (df["d_log_odds"] - (df["d_target_logit"] - df["d_lse_others"])).abs().max() < 1e-4
    fig = plot_logit_decomposition(df)
    assert len(fig.axes[0].patches) == 3 * len(df)


def test_consistency_table_groups_trials(model, image):
    settings = [MaskSetting(mode=m, seed=s) for m in ("baseline", "ftc") for s in (0, 1, 2)]
    r = optimize_masks(model, image, settings=settings, config=TINY, progress=False)
    table = consistency_table(r)
    assert list(table["mode"]) == ["baseline", "ftc"]
    assert list(table["trials"]) == [3, 3]
    assert table[["pearson", "iou"]].notna().all().all()
    assert ((table["iou"] >= 0) & (table["iou"] <= 1)).all()


def test_live_explorer_builds_and_updates(model, image):
    import ipywidgets as widgets

    ex = live_explorer(model, image, target="mobile home", iterations=2)
    assert isinstance(ex, widgets.VBox)
    expected = {"mode", "objective", "target", "seed", "lambda1", "lambda2", "beta", "gamma",
                "lr", "iterations", "sigma", "kernel_size", "mask_size"}
    assert set(ex.controls) == expected
    assert ex.button in ex.children[3].children
    assert ex.picture.layout.display == "none"
    ex.controls["mode"].value = "fntc"
    ex.controls["mask_size"].value = 14
    setting, config = ex.current()
    assert setting.mode == "fntc" and config.mask_size == 14 and config.iterations == 2
    r = ex.update()
    assert r is ex.result and r.masks.shape[-1] == 14
    assert r.class_name(int(r.targets[0, 0])) == "mobile home"
    picture = bytes(ex.picture.value)
    assert picture[:4] == b"RIFF" and picture[8:12] == b"WEBP" and ex.picture.format == "webp"
    assert ex.picture.layout.display is None
    assert "mobile home" in ex.status.value


def test_live_explorer_reports_bad_input(model, image):
    ex = live_explorer(model, image, iterations=1)
    ex.controls["kernel_size"].value = 4  # the slider steps by 2 from 3; force an even size
    if ex.controls["kernel_size"].value % 2:
        pytest.skip("the slider rounded the even kernel size to an odd one")
    assert ex.update() is None
    assert "kernel_size" in ex.status.value


def test_live_explorer_objective_and_the_cli_hint(model, image):
    """A target the model gives little probability barely moves under the probability; the
    status says so as `upx explain` does (try the log-probability), and the objective control
    reaches the optimizer."""
    ex = live_explorer(model, image, target="parachute", iterations=2)
    assert ex.controls["objective"].value == "prob"
    assert ex.controls["objective"].options == ("prob", "log_prob")
    assert ex.update() is not None
    assert "barely moved" in ex.status.value and "--objective log_prob" in ex.status.value
    ex.controls["objective"].value = "log_prob"
    setting, config = ex.current()
    assert config.objective == "log_prob"
    r = ex.update()
    assert r.config.objective == "log_prob"
    assert "--objective log_prob" not in ex.status.value  # the hint is for the probability


def test_live_explorer_shows_any_error(image):
    """An error other than ValueError (here a classifier that cannot take the image) is shown
    in the status line, not left as "optimizing..." with the traceback in the lab's log."""
    from torch import nn

    from upx_core import Classifier

    net = nn.Sequential(nn.Flatten(), nn.Linear(10, 3))  # expects 10 inputs, gets 3 x 224 x 224
    broken = Classifier(net, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                        categories=["a", "b", "c"])
    ex = live_explorer(broken, image, target=0, iterations=1)
    assert ex.update() is None
    assert "RuntimeError" in ex.status.value and "optimizing" not in ex.status.value
    assert not ex.button.disabled
