"""The query-only estimator with a time prior (upx_core.method.tracking), on the toy net whose
top-left quadrant hinders class 0 (tests/toy.py): blurring it, and nothing else, raises it."""

from __future__ import annotations

import pytest
import torch
from toy import Hindered, found, noise_image

from upx_core import MaskSetting, OptimConfig
from upx_core.method.blackbox import optimize_masks_blackbox, torch_predictor
from upx_core.method.result import TERMS
from upx_core.method.tracking import DEFAULT_DECAY, coverage


@pytest.fixture(scope="module")
def net():
    return Hindered()


@pytest.fixture(scope="module")
def image():
    return noise_image()


def run(predict, image, **kw):
    kw.setdefault("progress", False)
    return optimize_masks_blackbox(predict, image, **kw)


def test_tracking_is_the_default_and_finds_the_quadrant_more_sharply_than_antithetic(net, image):
    config = OptimConfig(iterations=100)
    settings = [MaskSetting(mode="baseline", seed=s) for s in range(3)]
    tracked = run(torch_predictor(net), image, targets=0, config=config, settings=settings,
                  queries=2000, samples=8)
    assert tracked.queries.eq(2 + 100 * 9).all()  # a centre and 8 directions per iteration
    # measured: gain 0.63-0.64, share 0.94-0.99 over seeds 0-2 (902 queries each)
    for j in range(3):
        gain, share = found(tracked, j)
        assert gain > 0.5 and share > 0.9, (j, gain, share)
    # the antithetic estimator on as many queries (4 pairs: 802) puts 0.62-0.69 there
    anti = run(torch_predictor(net), image, targets=0, config=config, settings=settings,
               queries=2000, samples=4, estimator="antithetic")
    assert all(found(tracked, j)[1] > found(anti, j)[1] + 0.2 for j in range(3))
    # the same bounds reject a run that cannot find anything: a prohibitive L1 keeps M at 1
    control = run(torch_predictor(net), image, targets=0, config=config,
                  settings=MaskSetting(mode="baseline", seed=0, lambda2=1000.0))
    assert found(control)[0] < 1e-3


def test_queries_are_counted_and_the_same_seed_gives_the_same_masks(net, image):
    calls = []

    def predict(x):
        calls.append(len(x))
        with torch.no_grad():
            return net(x)

    settings = [MaskSetting(mode="ftc", seed=1), MaskSetting(mode="fntc", seed=2)]
    a = run(predict, image, settings=settings, queries=50, samples=4, outputs="logits",
            batch_size=7)
    # (50 - 2) // 5 = 9 iterations of a centre and 4 directions
    assert a.config.iterations == 9 and a.history.shape == (9, 1, 2, len(TERMS))
    assert a.queries.eq(2 + 9 * 5).all()
    assert sum(calls) == 1 + 2 * 9 * 5 + 2 and max(calls) <= 7
    b = run(predict, image, settings=settings, queries=50, samples=4, outputs="logits")
    assert torch.equal(a.masks, b.masks) and torch.equal(a.history, b.history)
    with pytest.raises(ValueError, match="too small"):
        run(predict, image, queries=2 + 5 - 1, samples=4, outputs="logits")


def test_coverage_is_the_expected_share_of_a_fixed_gradient():
    assert coverage(0.0, 8, 784, 1.0) == 8 / 784
    second = coverage(8 / 784, 8, 784, 0.5)
    assert second == pytest.approx(0.5 * (1 - 8 / 784) * 8 / 784 + 8 / 784, rel=1e-15)
    # without forgetting it tends to 1 (every direction measured), with rho to p / (1 - rho q)
    share = 0.0
    for _ in range(5000):
        share = coverage(share, 8, 784, 1.0)
    assert share == pytest.approx(1.0, abs=1e-12)
    share = 0.0
    for _ in range(5000):
        share = coverage(share, 8, 784, DEFAULT_DECAY)
    p = 8 / 784
    assert share == pytest.approx(p / (1 - DEFAULT_DECAY * (1 - p)), rel=1e-12)
    assert coverage(0.3, 900, 784, 0.9) == 1.0  # more directions than cells: all measured


def test_bad_estimator_arguments_are_one_line_errors(net, image):
    with pytest.raises(ValueError, match="estimator must be one of"):
        run(torch_predictor(net), image, estimator="spsa")
    with pytest.raises(ValueError, match="decay must be a number in"):
        run(torch_predictor(net), image, decay=0.0)
    with pytest.raises(ValueError, match="basis applies to estimator='antithetic'"):
        run(torch_predictor(net), image, basis=7)
