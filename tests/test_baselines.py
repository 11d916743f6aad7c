"""The query-only baselines (occlusion, RISE) and the area-matched phi, on a toy net whose
hindering quadrant is known: blurring it, and nothing else, raises class 0 (as in
tests/test_blackbox.py). Each test takes a few seconds at most on one CPU thread."""

from __future__ import annotations

import pytest
import torch
from toy import HALF, SIZE, Hindered

from upx_core.method.baselines import area_matched_phi, occlusion_map, rise_map, rise_maps
from upx_core.method.blackbox import torch_predictor
from upx_core.method.equations import blur
from upx_core.method.metrics import relative_improvement, top_fraction_mask

M = 28


@pytest.fixture(scope="module")
def image():
    return torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def p0(net, x) -> float:
    with torch.no_grad():
        return float(net(x).softmax(1)[0, 0])


def quadrant_share(undesirable: torch.Tensor, top: float = 0.25) -> float:
    """The share of a map's top ``top`` cells (``[1, 1, m, m]``) in the top-left quadrant."""
    region = top_fraction_mask(undesirable[0, 0], top)
    return float(region[:M // 2, :M // 2].sum() / region.sum())


def test_top_fraction_mask_ranks_and_breaks_ties_in_row_major_order():
    maps = torch.tensor([[0.0, 3.0, 1.0], [3.0, 0.0, 2.0]])
    assert top_fraction_mask(maps, 0.5).tolist() == [[False, True, False], [True, False, True]]
    # a constant map: the first round(0.25 * 8) = 2 pixels
    assert top_fraction_mask(torch.zeros(2, 4), 0.25).tolist() == [[True, True, False, False],
                                                                  [False] * 4]
    with pytest.raises(ValueError, match="fraction"):
        top_fraction_mask(maps, 0.0)
    with pytest.raises(ValueError, match="NaN"):
        top_fraction_mask(torch.full((2, 2), float("nan")), 0.5)


def test_area_matched_phi_is_phi_of_the_blurred_top_pixels(image):
    net = Hindered()
    predict = torch_predictor(net)
    quadrant = torch.zeros(1, SIZE, SIZE)
    quadrant[0, :HALF, :HALF] = 1.0
    phi = area_matched_phi(predict, image, quadrant, [0], fractions=[0.25])
    # exact: the top quarter of the quadrant indicator is the quadrant
    q = image.clone()
    q[..., :HALF, :HALF] = blur(image)[..., :HALF, :HALF]
    want = relative_improvement(p0(net, image), p0(net, q))
    assert phi.shape == (1, 1)
    assert float(phi[0, 0]) == pytest.approx(float(want), abs=1e-4)
    assert float(phi[0, 0]) > 80  # measured 91.4: p0 0.24 -> 0.93
    # the inverted map ranks the quadrant last; its ties (the other 768 pixels) go in row-major
    # order, so its top quarter is exactly the top-right quadrant, which the net ignores
    inverted = area_matched_phi(predict, image, 1 - quadrant, [0], fractions=[0.25])
    r = image.clone()
    r[..., :HALF, HALF:] = blur(image)[..., :HALF, HALF:]
    assert float(inverted[0, 0]) == pytest.approx(float(relative_improvement(
        p0(net, image), p0(net, r))), abs=1e-4)
    assert float(inverted[0, 0]) < 5  # measured -0.02
    noise = torch.rand(1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    random = area_matched_phi(predict, image, noise, [0], fractions=[0.25])
    assert float(random[0, 0]) < float(phi[0, 0]) - 30, random  # measured 36.7
    with pytest.raises(ValueError, match="maps must be"):
        area_matched_phi(predict, image, torch.zeros(2, SIZE, SIZE), [0])


def test_the_occlusion_sweep_finds_the_hindering_quadrant(image):
    undesirable, queries = occlusion_map(torch_predictor(Hindered()), image, [0])
    assert queries == M * M + 1 and undesirable.shape == (1, 1, M, M)
    share = quadrant_share(undesirable)
    assert share >= 0.6, share  # measured 0.94 (bilinear M' spreads a cell past the border)
    # the same sweep on a net hindered by the bottom-right quadrant finds none of the top-left
    other, _ = occlusion_map(torch_predictor(Hindered(slice(HALF, None), slice(HALF, None))),
                             image, [0])
    assert quadrant_share(other) < 0.2, quadrant_share(other)  # measured 0


def test_rise_finds_the_hindering_quadrant_and_a_larger_budget_extends_a_smaller(image):
    predict = torch_predictor(Hindered())
    undesirable, queries = rise_map(predict, image, [0], queries=500, seed=0)
    assert queries == 500 and undesirable.shape == (1, 1, M, M)
    share = quadrant_share(undesirable)
    assert share >= 0.6, share  # measured 0.92 (seeds 0-3: 0.92-0.97)
    other, _ = rise_map(torch_predictor(Hindered(slice(HALF, None), slice(HALF, None))), image,
                        [0], queries=500, seed=0)
    assert quadrant_share(other) < 0.2, quadrant_share(other)  # measured 0
    both = rise_maps(predict, image, [0], budgets=[200, 500], seed=0)
    assert torch.allclose(both[500], undesirable, atol=1e-6)
    assert torch.allclose(both[200], rise_map(predict, image, [0], queries=200, seed=0)[0],
                          atol=1e-6)
    seed1, _ = rise_map(predict, image, [0], queries=200, seed=1)
    assert not torch.allclose(seed1, both[200])
    with pytest.raises(ValueError, match="budgets"):
        rise_map(predict, image, [0], queries=1)
    with pytest.raises(ValueError, match="one target per image"):
        rise_map(predict, image, [0, 1], queries=10)
