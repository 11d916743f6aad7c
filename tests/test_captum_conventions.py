"""UndesirablePixels as Captum users call it: normalized inputs, NumPy arrays, tuples, Captum's
keyword options, and a returned tensor that behaves like any other (issue 10)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from upx_core import OptimConfig, UndesirablePixels, optimize_masks

CONFIG = OptimConfig(iterations=3)
AFRICAN_ELEPHANT = 386


@pytest.fixture(scope="module")
def reference(model, crops):
    return UndesirablePixels(model).attribute(crops[:1], target=AFRICAN_ELEPHANT, config=CONFIG,
                                              device="cpu")


def test_the_attribution_is_a_real_tensor_not_a_view(reference):
    attr = reference.clone()
    assert attr.stride(1) != 0 and attr.is_contiguous()
    assert reference.stride(1) != 0
    a = reference.numpy().copy()
    a[0, 0] = -1.0
    assert (a[0, 1] >= 0).all()  # writing channel 0 leaves channel 1 alone
    view = reference.clone()
    view[:, 0].zero_()
    assert torch.equal(view[:, 1], reference[:, 1])
    assert torch.equal(reference.clone().abs_(), reference)  # in-place ops work


def test_normalized_inputs_to_a_bare_network_give_the_same_attribution(model, crops, reference):
    mean, std = model.mean.flatten().tolist(), model.std.flatten().tolist()
    normalized = (crops[:1] - model.mean) / model.std
    explainer = UndesirablePixels(model.net, mean=mean, std=std)
    attr = explainer.attribute(normalized, target=AFRICAN_ELEPHANT, config=CONFIG, device="cpu")
    assert attr.shape == normalized.shape
    torch.testing.assert_close(attr, reference, atol=2e-3, rtol=0)


def test_normalized_inputs_without_mean_and_std_say_what_to_do(model, crops):
    normalized = (crops[:1] - 0.5) / 0.5
    with pytest.raises(ValueError, match=r"mean=\.\.\., std=\.\.\."):
        UndesirablePixels(model).attribute(normalized, target=AFRICAN_ELEPHANT, config=CONFIG)
    with pytest.raises(ValueError, match="both mean and std"):
        UndesirablePixels(model.net, mean=(0.5, 0.5, 0.5))


def test_numpy_inputs_tuples_numpy_targets_and_captum_options(model, crops, reference):
    explainer = UndesirablePixels(model)
    out = explainer.attribute(crops[:1].numpy(), target=np.int64(AFRICAN_ELEPHANT),
                              config=CONFIG, device="cpu")
    assert isinstance(out, np.ndarray) and out.shape == tuple(crops[:1].shape)
    np.testing.assert_allclose(out, reference.numpy(), atol=1e-6)
    (as_tuple,) = explainer.attribute((crops[:1],), target=torch.tensor(AFRICAN_ELEPHANT),
                                      iterations=3, objective=CONFIG.objective, device="cpu")
    assert explainer.last_result.config.iterations == 3
    torch.testing.assert_close(as_tuple, reference, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="tuple of 2"):
        explainer.attribute((crops[:1], crops[:1]), target=AFRICAN_ELEPHANT)


def test_a_plain_function_as_the_model_works_like_the_module(model, crops, reference):
    # Captum's forward_func is often a function around the network: the optimizer follows its
    # gradient as it follows the module's (no batch-norm folding, so float rounding differs)
    attr = UndesirablePixels(lambda x: model(x)).attribute(
        crops[:1], target=AFRICAN_ELEPHANT, config=CONFIG, device="cpu")
    torch.testing.assert_close(attr, reference, atol=2e-3, rtol=0)
    # one that answers in NumPy has no gradient: pointed to the query-only optimizer
    with pytest.raises(ValueError, match="upx_core.optimize_masks_blackbox"):
        UndesirablePixels(lambda x: model(x).detach().numpy()).attribute(
            crops[:1], target=AFRICAN_ELEPHANT, config=CONFIG, device="cpu")
    with pytest.raises(TypeError, match="torch.nn.Module or a function"):
        UndesirablePixels("efficientnet_lite0")


class _WithTemperature(torch.nn.Module):
    """The real network with a second forward argument, as Captum's additional_forward_args
    feeds it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, temperature):
        return self.model(x) / temperature


def test_additional_forward_args_reach_every_call(model, crops, reference):
    explainer = UndesirablePixels(_WithTemperature(model))
    attr = explainer.attribute(crops[:1], target=AFRICAN_ELEPHANT, config=CONFIG,
                               device="cpu", additional_forward_args=(1.0,))
    torch.testing.assert_close(attr, reference, atol=1e-6, rtol=0)
    hot = explainer.attribute(crops[:1], target=AFRICAN_ELEPHANT, config=CONFIG,
                              device="cpu", additional_forward_args=4.0)
    assert not torch.allclose(hot, reference, atol=1e-3)  # the argument changed the model


def test_baselines_are_what_the_masked_pixels_move_toward(model, crops, reference):
    from upx_core.method.equations import blur_for, upsample_mask

    explainer = UndesirablePixels(model)
    # the paper's reference, the blur, given explicitly: the same masks bit for bit
    blurred = blur_for(crops[:1], CONFIG)
    same = explainer.attribute(crops[:1], target=AFRICAN_ELEPHANT, config=CONFIG, device="cpu",
                               baselines=(blurred,))
    assert torch.equal(same, reference)
    # black (Captum's usual baseline): Q = X * M' exactly, and another mask
    black = explainer.attribute(crops[:1], target=AFRICAN_ELEPHANT, config=CONFIG, device="cpu",
                                baselines=0.0)
    assert not torch.allclose(black, reference, atol=1e-3)
    result = optimize_masks(model, crops[:1], targets=AFRICAN_ELEPHANT, config=CONFIG,
                            device="cpu", reference=0.0)
    kept = upsample_mask(result.masks[:, 0], tuple(crops.shape[-2:]))
    torch.testing.assert_close(result.perturbed[:, 0], crops[:1] * kept, atol=1e-6, rtol=0)
    torch.testing.assert_close(result.undesirable[:, 0, 0], black[:, 0], atol=0, rtol=0)
    # normalized inputs take baselines in the same space: black is (0 - mean) / std
    mean, std = model.mean.flatten().tolist(), model.std.flatten().tolist()
    bare = UndesirablePixels(model.net, mean=mean, std=std)
    normalized = bare.attribute((crops[:1] - model.mean) / model.std, target=AFRICAN_ELEPHANT,
                                config=CONFIG, device="cpu", baselines=-model.mean / model.std)
    torch.testing.assert_close(normalized, black, atol=1e-3, rtol=0)


@pytest.mark.parametrize(("baselines", "message"), [
    (torch.zeros(2, 3, 5, 5), r"baselines: shape \(2, 3, 5, 5\) does not broadcast"),
    (5.0, r"baselines: they range over \[5, 5\]"),
])
def test_a_wrong_baseline_is_one_line_naming_it(model, crops, baselines, message):
    with pytest.raises(ValueError, match=message):
        UndesirablePixels(model).attribute(crops[:1], target=AFRICAN_ELEPHANT, config=CONFIG,
                                           device="cpu", baselines=baselines)


def test_a_reference_outside_the_images_range_is_refused(model, crops):
    with pytest.raises(ValueError, match=r"reference: values must be finite and in \[0, 1\]"):
        optimize_masks(model, crops[:1], targets=AFRICAN_ELEPHANT, config=CONFIG, device="cpu",
                       reference=torch.full((3, 1, 1), float("nan")))


def test_a_model_with_a_softmax_is_refused_as_logits_and_read_with_outputs_probs(model,
                                                                                  crops):
    softmaxed = torch.nn.Sequential(model, torch.nn.Softmax(dim=1))
    with pytest.raises(ValueError, match="outputs are probabilities .* outputs='probs'"):
        UndesirablePixels(softmaxed).attribute(crops[:1], target=AFRICAN_ELEPHANT,
                                               config=CONFIG, device="cpu")
    config = OptimConfig(iterations=3)  # log_prob: log p is the same read from either output
    explainer = UndesirablePixels(softmaxed, outputs="probs")
    attr = explainer.attribute(crops[:1], target=AFRICAN_ELEPHANT, mode="baseline",
                               config=config, device="cpu")
    ref = UndesirablePixels(model)
    expected = ref.attribute(crops[:1], target=AFRICAN_ELEPHANT, mode="baseline",
                             config=config, device="cpu")
    torch.testing.assert_close(attr, expected, atol=2e-3, rtol=0)
    with torch.no_grad():
        p = softmaxed(crops[:1])
    torch.testing.assert_close(explainer.last_result.probs_before, p, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="not probabilities"):
        UndesirablePixels(model, outputs="probs").attribute(
            crops[:1], target=AFRICAN_ELEPHANT, config=CONFIG, device="cpu")


class _Pair(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x), x.mean()


def test_what_torch_would_raise_is_a_one_line_message(model, crops):
    import copy

    cases = [
        (model, crops[:1].permute(0, 2, 3, 1).numpy(), r"look channel-last \[N, H, W, C\]"),
        (model, crops[0].permute(1, 2, 0).numpy(), r"x\.transpose\(2, 0, 1\)"),
        (_Pair(model), crops[:1], "returns a tuple, not one tensor"),
        (copy.deepcopy(model).double(), crops[:1], "weights are float64; .* model.float()"),
        (torch.nn.Sequential(torch.nn.Conv2d(1, 3, 1), model), crops[:1],
         "first layer takes 1-channel images"),
    ]
    for net, x, match in cases:
        with pytest.raises(ValueError, match=match) as err:
            UndesirablePixels(net).attribute(x, target=AFRICAN_ELEPHANT, config=CONFIG,
                                             device="cpu")
        assert "\n" not in str(err.value)


def test_class_names_must_be_the_classifiers_own():
    from torch import nn

    from upx_core.method.models import Classifier

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 10)).eval()
    x = torch.rand(1, 3, 32, 32)
    ten = Classifier(net, mean=(0.5,) * 3, std=(0.5,) * 3, input_size=32)  # no categories
    with pytest.raises(ValueError, match="10 outputs and 1000 category names"):
        UndesirablePixels(ten).attribute(x, target="goldfish", iterations=1, device="cpu")
    assert UndesirablePixels(ten).attribute(x, target=1, iterations=1, device="cpu").shape \
        == x.shape
    named = Classifier(net, mean=(0.5,) * 3, std=(0.5,) * 3, input_size=32,
                       categories=[f"digit {i}" for i in range(10)])
    explainer = UndesirablePixels(named)
    explainer.attribute(x, target="digit 3", iterations=1, device="cpu")
    assert explainer.last_result.targets.tolist() == [[3]]
