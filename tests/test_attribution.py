"""The Captum-style interface: ``UndesirablePixels(model).attribute(inputs, target=...)``."""

from __future__ import annotations

import pytest
import torch

from upx_core import OptimConfig, UndesirablePixels

CONFIG = OptimConfig(iterations=3)
AFRICAN_ELEPHANT = 386


@pytest.fixture(scope="module")
def batched_attribution(model, crops):
    explainer = UndesirablePixels(model)
    attr = explainer.attribute(crops, target=[AFRICAN_ELEPHANT, "African elephant"],
                               config=CONFIG, device="cpu")
    return explainer, attr


def _check_against_result(attr, result, batch):
    # 1 - M' of the optimized masks, on every channel
    expected = (1.0 - result.masks_upsampled[:, 0]).expand(batch.shape)
    assert torch.equal(attr, expected)
    assert torch.equal(attr, result.undesirable[:, 0].expand(batch.shape))
    assert attr.min() >= 0 and attr.max() <= 1
    assert torch.equal(attr[:, 0], attr[:, 1]) and torch.equal(attr[:, 1], attr[:, 2])
    assert attr.max() > 0  # the masks moved: some pixels are blurred


def test_batched_attribution_is_one_minus_the_upsampled_mask(batched_attribution, crops):
    explainer, attr = batched_attribution
    assert attr.shape == crops.shape and attr.dtype == crops.dtype
    r = explainer.last_result
    assert r.targets.tolist() == [[AFRICAN_ELEPHANT], [AFRICAN_ELEPHANT]]
    assert r.config == CONFIG and r.settings[0].mode == "ftc"
    assert r.perturbed is None  # keep_images=False
    _check_against_result(attr, r, crops)


def test_single_image_attribution(model, crops, batched_attribution):
    explainer = UndesirablePixels(model)
    x = crops[1]
    attr = explainer.attribute(x, target=AFRICAN_ELEPHANT, config=CONFIG, device="cpu")
    assert attr.shape == x.shape
    r = explainer.last_result
    assert r.masks.shape[:2] == (1, 1)
    _check_against_result(attr.unsqueeze(0), r, x.unsqueeze(0))
    # the same image, target and seed as row 1 of the batched call: the same mask up to
    # float32 reassociation at another batch size (and Adam's scale-free update of it)
    torch.testing.assert_close(attr, batched_attribution[1][1], atol=5e-3, rtol=0)


def test_attribution_settings_reach_the_optimizer(model, crops):
    explainer = UndesirablePixels(model)
    x = crops[:1].clone().requires_grad_(True)  # as Captum users pass inputs
    attr = explainer.attribute(x, target=AFRICAN_ELEPHANT, mode="fntc", seed=3, gamma=1.0,
                               lambda1=0.5, config=OptimConfig(iterations=1, mask_size=10),
                               device="cpu")
    s = explainer.last_result.settings[0]
    assert (s.mode, s.seed, s.gamma, s.lambda1) == ("fntc", 3, 1.0, 0.5)
    assert explainer.last_result.masks.shape[-1] == 10
    assert attr.shape == x.shape and not attr.requires_grad and x.grad is None


def test_attribution_rejects_bad_settings(model, crops):
    with pytest.raises(ValueError, match="mode"):
        UndesirablePixels(model).attribute(crops, target=1, mode="saliency")
    with pytest.raises(TypeError, match="learning_rate"):
        UndesirablePixels(model).attribute(crops, target=1, learning_rate=0.5)
    with pytest.raises(ValueError, match="iterations"):
        UndesirablePixels(model).attribute(crops, target=1, iterations=0)


def test_without_a_config_attribute_uses_the_explain_objective(model, crops):
    """A user's own target: the log-probability (chapter 7's measurement), unless asked."""
    explainer = UndesirablePixels(model)
    explainer.attribute(crops[:1], target=AFRICAN_ELEPHANT, iterations=1, device="cpu")
    assert explainer.last_result.config == OptimConfig(iterations=1, objective="log_prob")
    explainer.attribute(crops[:1], target=AFRICAN_ELEPHANT, iterations=1, objective="prob",
                        device="cpu")
    assert explainer.last_result.config.objective == "prob"
    explainer.attribute(crops[:1], target=AFRICAN_ELEPHANT, config=OptimConfig(iterations=1),
                        device="cpu")
    assert explainer.last_result.config.objective == "prob"  # a given config is kept


def test_a_result_prints_as_one_short_line(batched_attribution):
    r = batched_attribution[0].last_result
    text = repr(r)
    assert text == str(r) and "\n" not in text and len(text) < 300, text
    assert text.startswith("UPXResult(2 images x 1 setting, mode ftc, target African elephant,")
    assert "masks 28x28 for 80x80 images, 3 iterations" in text
    assert "tensor" not in text and "tench" not in text  # no tensors, no list of 1,000 names
