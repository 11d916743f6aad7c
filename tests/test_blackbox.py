"""The query-only optimizer (upx_core.method.blackbox) on a toy two-layer conv net, 32 x 32 images.

The net's class 0 loses score for high-frequency content in the image's top-left quadrant, so
blurring that quadrant (and nothing else) raises it: a known answer that the optimizer must find
from forward queries alone. Each test here takes a few seconds at most on one CPU thread.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from toy import HALF, Hindered, found, noise_image

from upx_core import MaskSetting, OptimConfig, optimize_masks
from upx_core.method.blackbox import optimize_masks_blackbox, smooth_basis, torch_predictor
from upx_core.method.equations import blur, upsample_mask
from upx_core.method.optimizer import initial_mask
from upx_core.method.result import TERMS


@pytest.fixture(scope="module")
def net():
    return Hindered()


@pytest.fixture(scope="module")
def image():
    return noise_image()


def run(predict, image, **kw):
    """The antithetic estimator, whose accounting these tests spell out (tracking, the
    default, has its own in test_tracking.py)."""
    kw.setdefault("progress", False)
    kw.setdefault("estimator", "antithetic")
    return optimize_masks_blackbox(predict, image, **kw)


def test_the_toy_net_is_hindered_by_its_top_left_quadrant(net, image):
    q = image.clone()
    q[..., :HALF, :HALF] = blur(image)[..., :HALF, :HALF]
    with torch.no_grad():
        before, after = net(image).softmax(1)[0, 0], net(q).softmax(1)[0, 0]
    assert before < 0.3 and after > 0.9


def test_queries_alone_find_the_hindering_quadrant(net, image):
    config = OptimConfig(iterations=100)
    result = run(torch_predictor(net), image, targets=0, config=config,
                 settings=MaskSetting(mode="baseline", seed=0))
    gain, share = found(result)
    # measured: gain 0.566, share 0.808 (seeds 0-5: gain 0.53-0.57, share 0.72-0.81; the
    # quadrant is a quarter of the image). The gradient optimizer: gain 0.57, share 0.99.
    assert gain > 0.4 and share > 0.6, (gain, share)
    # the same bounds reject a run that cannot find anything: a prohibitive L1 keeps M at 1
    control = run(torch_predictor(net), image, targets=0, config=config,
                  settings=MaskSetting(mode="baseline", seed=0, lambda2=1000.0))
    assert found(control)[0] < 1e-3


def test_same_seed_gives_the_same_masks_bit_for_bit(net, image):
    config = OptimConfig(iterations=10)
    settings = [MaskSetting(mode="ftc", seed=1), MaskSetting(mode="fntc", seed=2)]
    a = run(torch_predictor(net), image, settings=settings, config=config)
    b = run(torch_predictor(net), image, settings=settings, config=config)
    assert torch.equal(a.masks, b.masks) and torch.equal(a.history, b.history)
    other = run(torch_predictor(net), image, config=config,
                settings=[MaskSetting(mode="ftc", seed=3), MaskSetting(mode="fntc", seed=4)])
    assert (other.masks - a.masks).abs().amax(dim=(-1, -2, -3)).min() > 0.1
    # a mask does not depend on what shares its queries: alone, in chunks, beside other images
    # (equal up to the net's batch arithmetic)
    alone = torch.cat([run(torch_predictor(net), image, settings=s, config=config).masks
                       for s in settings], dim=1)
    chunked = run(torch_predictor(net), image, settings=settings, config=config, batch_size=5)
    two = run(torch_predictor(net), torch.cat([image.flip(-1), image]), settings=settings,
              config=config)
    for other in (alone, chunked.masks, two.masks[1:]):
        assert torch.allclose(other, a.masks, atol=1e-5), (other - a.masks).abs().max()


def test_queries_are_counted_and_within_the_budget(net, image):
    calls = []

    def predict(x):
        calls.append(len(x))
        with torch.no_grad():
            return net(x)

    images = image.repeat(2, 1, 1, 1)
    settings = [MaskSetting(mode="baseline", seed=0), MaskSetting(mode="deletion", seed=1)]
    samples, budget = 4, 50  # (50 - 2) // 8 = 6 iterations
    result = run(predict, images, settings=settings, queries=budget, samples=samples,
                 outputs="logits", batch_size=7)
    assert result.config.iterations == 6 and result.history.shape == (6, 2, 2, len(TERMS))
    assert result.queries.shape == (2, 2)
    assert (result.queries == 2 + 2 * samples * 6).all() and (result.queries <= budget).all()
    # what predict saw: the 2 clean images, 4 masks x 2 x 4 per iteration, the 4 final images
    assert sum(calls) == 2 + 4 * 2 * samples * 6 + 4 and max(calls) <= 7
    # config.iterations caps the run below the budget
    capped = run(predict, image, config=OptimConfig(iterations=3), samples=samples,
                 outputs="logits")
    assert int(capped.queries[0, 0]) == 2 + 2 * samples * 3
    assert capped.describe()["queries"] == 2 + 2 * samples * 3
    with pytest.raises(ValueError, match="too small"):
        run(predict, image, queries=2 + 2 * samples - 1, samples=samples, outputs="logits")


def test_numpy_probabilities_and_torch_logits_give_the_same_mask(net, image):
    def numpy_probs(x):
        with torch.no_grad():
            return net(torch.as_tensor(np.asarray(x))).softmax(1).double().numpy()

    def torch_logits(x):
        with torch.no_grad():
            return net(x)

    config = OptimConfig(iterations=30)
    settings = [MaskSetting(mode="baseline", seed=3), MaskSetting(mode="deletion", seed=4)]
    # the f-terms agree (softmax(log p) = p); only float rounding differs. Over 5 steps that is
    # about 1e-6 on every CPU path; over 30 the finite differences can amplify it (one cell
    # 0.0085 apart on an Intel AVX-512 path, 1.8e-6 on AVX2), so the equality is held early
    short = config.replace(iterations=5)
    a = run(numpy_probs, image.numpy(), settings=settings, config=short)
    b = run(torch_logits, image, settings=settings, config=short, outputs="logits")
    assert (a.masks - b.masks).abs().max() < 1e-4
    assert torch.allclose(a.probs_after, b.probs_after, atol=1e-5)
    # R_F-TC's mean shift is not invariant to the per-image constant log p = y - LSE(y):
    # F-TC masks from probabilities and from logits differ
    ftc = MaskSetting(mode="ftc", seed=3)
    pa = run(numpy_probs, image, settings=ftc, config=config)
    lb = run(torch_logits, image, settings=ftc, config=config, outputs="logits")
    assert (pa.masks - lb.masks).abs().max() > 1e-2


def test_torch_predictor_gives_no_gradient(net, image):
    net.train()
    predict = torch_predictor(net)
    out = predict(image.requires_grad_(False).numpy())
    assert not out.requires_grad
    with pytest.raises(RuntimeError):
        out.sum().backward()
    assert torch.allclose(out.sum(1), torch.ones(1))
    # eval mode and frozen weights for the call only
    assert net.training and all(p.requires_grad for p in net.parameters())
    logits = torch_predictor(net, "logits")(image)
    with torch.no_grad():
        assert torch.allclose(logits, net(image))
    with pytest.raises(ValueError, match="outputs='logits'"):
        run(torch_predictor(net, "logits"), image)


def test_a_model_with_a_softmax_is_refused_as_logits_and_read_with_model_outputs_probs(
        net, image):
    softmaxed = nn.Sequential(net, nn.Softmax(dim=1))
    with pytest.raises(ValueError, match="model_outputs='probs'"):
        torch_predictor(softmaxed)(image)  # before: a second softmax, silently flatter
    plain = torch_predictor(net, fold_batchnorm=False)(image)
    read = torch_predictor(softmaxed, fold_batchnorm=False, model_outputs="probs")(image)
    torch.testing.assert_close(read, plain, atol=1e-6, rtol=0)
    logits = torch_predictor(softmaxed, "logits", fold_batchnorm=False, model_outputs="probs")
    torch.testing.assert_close(logits(image).softmax(1), plain, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="model_outputs must be one of"):
        torch_predictor(net, model_outputs="softmax")


@pytest.mark.parametrize("estimator", ["antithetic", "tracking"])
def test_the_mask_penalty_gradient_is_exact(image, estimator):
    """A model that ignores its input: the f-term's estimate is exactly 0 (tracking: every
    measured difference is 0, so its running estimate stays 0), so Adam sees grad R_M alone, as
    the gradient optimizer does through a constant model."""
    const = torch.tensor([[1.0, 0.2, -0.5]])

    class Constant(nn.Module):
        def forward(self, x):
            return const + 0.0 * x.sum(dim=(1, 2, 3), keepdim=True).squeeze(-1).squeeze(-1)

    config = OptimConfig(iterations=5)
    settings = [MaskSetting(mode="baseline", seed=0),
                MaskSetting(mode="ftc", seed=1, lambda1=0.5, beta=3.0)]
    a = run(lambda x: const.expand(len(x), -1), image, settings=settings, config=config,
            outputs="logits", estimator=estimator)
    g = optimize_masks(Constant(), image, settings=settings, config=config, device="cpu",
                       progress=False)
    # bit for bit (measured), masks and every term of the history (tracking's centre query is
    # M itself; the antithetic history averages neighbours of a constant)
    assert torch.equal(a.masks, g.masks) and torch.equal(a.history, g.history)
    start = torch.stack([initial_mask(s.seed, config.mask_size, config.init_noise)
                         for s in settings])
    assert (g.masks[0] - start).abs().max() > 0.1  # R_M alone moved them (measured 0.50)


def test_target_names_need_categories(net, image):
    cats = ["hindered", "plain", "zero"]
    result = run(torch_predictor(net), image, targets="Hindered", categories=cats,
                 config=OptimConfig(iterations=1))
    assert int(result.targets[0, 0]) == 0 and result.categories == cats
    with pytest.raises(ValueError, match="class names"):
        run(torch_predictor(net), image, targets="tench", config=OptimConfig(iterations=1))


def test_samples_for_budget_spends_the_budget_whole():
    from upx_core.method.blackbox import samples_for_budget

    # antithetic: 2 + 200 x 2 x P <= queries: 16000 buys 39 pairs (15602 queries), 4000 buys 9
    pairs = [samples_for_budget(q, 200, "antithetic") for q in (16000, 4000, 1000, 42, 3)]
    assert pairs == [39, 9, 2, 1, 1]
    assert samples_for_budget(42, 4, "antithetic") == 5  # 2 + 4 x 2 x 5 = 42
    # tracking: 2 + 200 x (P + 1) <= queries: 4000 buys 18 directions and a centre (3802)
    ahead = [samples_for_budget(q, 200) for q in (16000, 4000, 1000, 42, 3)]
    assert ahead == [78, 18, 3, 1, 1]
    assert samples_for_budget(42, 4) == 9  # 2 + 4 x (9 + 1) = 42


def test_smooth_basis_is_orthonormal_and_spans_the_upsampled_fields():
    b = smooth_basis(7, 28)
    assert b.shape == (784, 49)
    assert torch.allclose(b.T @ b, torch.eye(49), atol=1e-5)
    coarse = torch.rand(1, 1, 7, 7, generator=torch.Generator().manual_seed(0))
    field = upsample_mask(coarse, (28, 28)).flatten()
    assert torch.allclose(b @ (b.T @ field), field, atol=1e-5)  # in the span: kept
    checker = (torch.arange(28)[:, None] + torch.arange(28)).remainder(2).float().flatten() - 0.5
    assert (b @ (b.T @ checker)).norm() < 0.1 * checker.norm()  # cell-scale detail: dropped


def test_directions_in_a_smooth_basis_find_the_quadrant_more_sharply(net, image):
    # measured (100 iterations, 8 pairs): share of the blur in the quadrant 0.97 / 0.92 / 0.95
    # with basis 7 against 0.81 / 0.77 / 0.75 on all 784 cells (seeds 0, 1, 2), gains 0.52-0.57
    config = OptimConfig(iterations=100)
    for seed in (0, 1):
        setting = MaskSetting(mode="baseline", seed=seed)
        full = found(run(torch_predictor(net), image, targets=0, config=config,
                         settings=setting))
        smooth = found(run(torch_predictor(net), image, targets=0, config=config,
                           settings=setting, basis=7))
        assert smooth[0] > 0.4 and smooth[1] > 0.9, smooth
        assert smooth[1] > full[1] + 0.1, (smooth, full)
    again = run(torch_predictor(net), image, targets=0, config=OptimConfig(iterations=5),
                basis=7)
    assert torch.equal(again.masks, run(torch_predictor(net), image, targets=0, basis=7,
                                        config=OptimConfig(iterations=5)).masks)


@pytest.mark.parametrize("basis", [0, 29, 2.5, True])
def test_a_bad_basis_is_a_one_line_error(net, image, basis):
    with pytest.raises(ValueError, match="basis must be an integer from 1 to the mask size"):
        run(torch_predictor(net), image, basis=basis)
