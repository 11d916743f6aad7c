"""UndesirablePixels as Captum users call it: normalized inputs, NumPy arrays, tuples, Captum's
keyword options, and a returned tensor that behaves like any other (issue 10)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from upx_core import OptimConfig, UndesirablePixels

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


def test_a_plain_function_as_the_model_is_a_clear_error(model):
    with pytest.raises(TypeError, match="torch.nn.Module"):
        UndesirablePixels(lambda x: model(x))


def test_class_names_must_be_the_classifiers_own():
    from torch import nn

    from upx_core.models import Classifier

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
