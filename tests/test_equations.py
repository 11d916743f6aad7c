"""Eq. 1-7 (upx_core.method.equations) and the per-mode loss of equations.loss_terms, on
hand-made tensors whose values are computed here by hand."""

from __future__ import annotations

import math

import pytest
import torch

from upx_core.method.config import MODES, OptimConfig
from upx_core.method.equations import (
    blur,
    blur_for,
    fntc_penalty,
    ftc_penalty,
    l1_norm,
    loss_terms,
    mask_penalty,
    median_blur,
    perturb,
    tv_norm,
    upsample_mask,
)

# A 3 x 3 mask with 3-4-5 differences. TV uses the (m-1)^2 = 4 cells where both the downward
# difference dy = M[i+1,j] - M[i,j] and the rightward dx = M[i,j+1] - M[i,j] exist:
#   cell (0,0): dy = 0.3, dx = 0.4     cell (0,1): dy = 0.6, dx = 0.0
#   cell (1,0): dy = 0.0, dx = 0.7     cell (1,1): dy = -0.5, dx = -0.8
# (M[2,2] = 0.9 enters no cell.)
MASK3 = torch.tensor([[0.0, 0.4, 0.4],
                      [0.3, 1.0, 0.2],
                      [0.3, 0.5, 0.9]]).view(1, 1, 3, 3)
TV3_BETA2_SUM = 0.5 + 0.6 + 0.7 + math.sqrt(0.25 + 0.64)
TV3_BETA1_SUM = 0.7 + 0.6 + 0.7 + 1.3
TV3_BETA3_SUM = (0.3**3 + 0.4**3) ** (1 / 3) + 0.6 + 0.7 + (0.5**3 + 0.8**3) ** (1 / 3)
# Without the 1/beta root (tv_norm(root=False)): sum over the cells of |dy|^beta + |dx|^beta.
TV3_BETA2_NOROOT_SUM = 0.09 + 0.16 + 0.36 + 0.49 + 0.25 + 0.64  # 1.99
TV3_BETA3_NOROOT_SUM = 0.027 + 0.064 + 0.216 + 0.343 + 0.125 + 0.512  # 1.287
# ||1 - M||_1 over all 9 entries.
L1_3_SUM = 1.0 + 0.6 + 0.6 + 0.7 + 0.0 + 0.8 + 0.7 + 0.5 + 0.1


def _close(value: torch.Tensor, expected: float, tol: float = 1e-6) -> None:
    assert value.shape == (1,)
    assert abs(float(value[0]) - expected) < tol, (float(value[0]), expected)


# --- Eq. 1: Q(X; M', h) = X * M' + h(X) * (1 - M') ---------------------------------------------

def test_perturb_keeps_image_where_mask_is_one_and_blur_where_zero():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=gen)
    hx = blur(x, sigma=2.0, kernel_size=5)
    assert not torch.equal(x, hx)
    ones = torch.ones(2, 1, 16, 16)
    assert torch.equal(perturb(x, hx, ones), x)
    assert torch.equal(perturb(x, hx, torch.zeros_like(ones)), hx)
    half = perturb(x, hx, torch.full_like(ones, 0.5))
    torch.testing.assert_close(half, (x + hx) / 2, atol=1e-7, rtol=0)


def test_perturb_mixes_per_pixel():
    x = torch.zeros(1, 3, 2, 2)
    hx = torch.ones(1, 3, 2, 2)
    mask = torch.tensor([[1.0, 0.0], [0.25, 0.5]]).view(1, 1, 2, 2)
    expected = (1.0 - mask).expand(1, 3, 2, 2)
    assert torch.equal(perturb(x, hx, mask), expected)


def test_blur_of_constant_image_is_the_constant():
    x = torch.full((1, 3, 20, 24), 0.37)
    torch.testing.assert_close(blur(x, sigma=5.0, kernel_size=11), x, atol=1e-6, rtol=0)


def test_blur_of_impulse_is_the_normalized_gaussian_kernel():
    x = torch.zeros(1, 1, 21, 21)
    x[..., 10, 10] = 1.0
    out = blur(x, sigma=5.0, kernel_size=11)
    w = torch.tensor([math.exp(-(i**2) / (2 * 25.0)) for i in range(-5, 6)], dtype=torch.float64)
    w = w / w.sum()
    expected = torch.zeros(21, 21, dtype=torch.float64)
    expected[5:16, 5:16] = w[:, None] * w[None, :]
    torch.testing.assert_close(out[0, 0].double(), expected, atol=1e-7, rtol=0)
    assert abs(float(out.sum()) - 1.0) < 1e-6


def _images(shape, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        return torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
    return torch.rand(shape, generator=gen, dtype=dtype)


@pytest.mark.parametrize(("sigma", "kernel_size"), [(5.0, 11), (2.0, 5), (0.7, 3), (3, 1),
                                                     (12.5, 21), (5.0, 13)])
@pytest.mark.parametrize(("shape", "dtype", "layout"), [
    ((2, 3, 224, 224), torch.float32, "strided"),   # what the optimizer blurs
    ((2, 3, 80, 96), torch.float32, "channels_last"),
    ((3, 40, 41), torch.float32, "strided"),
    ((2, 2, 3, 24, 24), torch.float64, "strided"),
    ((1, 3, 30, 30), torch.uint8, "strided"),
])
def test_blur_is_bit_identical_to_torchvision(sigma, kernel_size, shape, dtype, layout):
    # blur reimplements torchvision's gaussian_blur to spare the command its import: every
    # mask upx computed before depends on these numbers being the same to the last bit
    from torchvision.transforms.v2.functional import gaussian_blur

    x = _images(shape, dtype, seed=kernel_size)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    want = gaussian_blur(x, kernel_size=[kernel_size, kernel_size], sigma=[sigma, sigma])
    got = blur(x, sigma=sigma, kernel_size=kernel_size)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert torch.equal(got, want)
    assert got.stride() == want.stride()


def test_blur_of_a_real_image_is_bit_identical_to_torchvision(tusker):
    from torchvision.transforms.v2.functional import gaussian_blur

    x = tusker.unsqueeze(0).contiguous()
    assert torch.equal(blur(x), gaussian_blur(x, kernel_size=[11, 11], sigma=[5.0, 5.0]))


@pytest.mark.parametrize(("sigma", "kernel_size"), [(5.0, 10), (5.0, 0), (5.0, -3), (0.0, 11),
                                                     (-1.0, 11)])
def test_blur_rejects_a_bad_kernel_or_sigma(sigma, kernel_size):
    with pytest.raises(ValueError, match="kernel_size|sigma"):
        blur(torch.rand(1, 3, 16, 16), sigma=sigma, kernel_size=kernel_size)


# --- median blur and the choice of h(X) --------------------------------------------------------

def test_median_blur_hand_values_with_reflect_padding():
    # Reflect padding (the edge is not repeated) of 1..9 in a 3 x 3 grid gives the windows
    # whose sorted values are written out here; the median is the 5th of 9.
    x = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    windows = {
        (0, 0): [5, 4, 5, 2, 1, 2, 5, 4, 5], (0, 1): [4, 5, 6, 1, 2, 3, 4, 5, 6],
        (0, 2): [5, 6, 5, 2, 3, 2, 5, 6, 5], (1, 0): [2, 1, 2, 5, 4, 5, 8, 7, 8],
        (1, 1): list(range(1, 10)), (1, 2): [2, 3, 2, 5, 6, 5, 8, 9, 8],
        (2, 0): [5, 4, 5, 8, 7, 8, 5, 4, 5], (2, 1): [4, 5, 6, 7, 8, 9, 4, 5, 6],
        (2, 2): [5, 6, 5, 8, 9, 8, 5, 6, 5],
    }
    expected = torch.tensor([[4.0, 4.0, 5.0], [5.0, 5.0, 5.0], [5.0, 6.0, 6.0]])
    for (i, j), w in windows.items():
        assert sorted(w)[4] == expected[i, j]
    assert torch.equal(median_blur(x, 3)[0, 0], expected)


def test_median_blur_removes_an_impulse_keeps_a_constant_and_an_edge():
    impulse = torch.zeros(2, 3, 15, 15)
    impulse[..., 7, 7] = 1.0
    assert torch.equal(median_blur(impulse, 11), torch.zeros_like(impulse))
    const = torch.full((1, 3, 12, 13), 0.37)
    assert torch.equal(median_blur(const, 11), const)
    edge = torch.zeros(1, 1, 12, 12)
    edge[..., 6:] = 1.0  # a straight edge is its own median (the Gaussian would smear it)
    assert torch.equal(median_blur(edge, 5), edge)
    assert median_blur(const, 1).equal(const)
    with pytest.raises(ValueError, match="kernel_size"):
        median_blur(const, 4)


def test_blur_for_follows_the_config():
    x = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    gaussian = OptimConfig(sigma=2.0, kernel_size=5)
    assert torch.equal(blur_for(x, gaussian), blur(x, 2.0, 5))
    mixed = gaussian.replace(blur="gaussian+median")
    assert torch.equal(blur_for(x, mixed), (blur(x, 2.0, 5) + median_blur(x, 5)) / 2)
    assert not torch.equal(blur_for(x, mixed), blur_for(x, gaussian))


# --- M' = Inp(M) --------------------------------------------------------------------------------

def test_upsample_of_constant_mask_is_constant():
    mask = torch.full((3, 1, 28, 28), 0.3)
    up = upsample_mask(mask, (224, 200))
    assert up.shape == (3, 1, 224, 200)
    torch.testing.assert_close(up, torch.full_like(up, 0.3), atol=1e-7, rtol=0)


def test_upsample_is_bilinear_with_half_pixel_centres():
    mask = torch.tensor([[0.0, 1.0], [0.0, 1.0]]).view(1, 1, 2, 2)
    up = upsample_mask(mask, (4, 4))
    row = torch.tensor([0.0, 0.25, 0.75, 1.0])
    assert torch.equal(up[0, 0], row.expand(4, 4))


# --- Eq. 3: R_M = lambda1 * TV_beta(M) + lambda2 * ||1 - M||_1 ----------------------------------

@pytest.mark.parametrize("beta, expected_sum", [(2.0, TV3_BETA2_SUM), (1.0, TV3_BETA1_SUM),
                                                (3.0, TV3_BETA3_SUM)])
def test_tv_norm_hand_values(beta, expected_sum):
    _close(tv_norm(MASK3, beta, reduction="sum"), expected_sum)
    # mean divides by the (m - 1)^2 cells, not the m^2 entries
    _close(tv_norm(MASK3, beta, reduction="mean"), expected_sum / 4)


@pytest.mark.parametrize("beta, expected_sum", [(2.0, TV3_BETA2_NOROOT_SUM),
                                                (1.0, TV3_BETA1_SUM),  # root of power 1
                                                (3.0, TV3_BETA3_NOROOT_SUM)])
def test_tv_norm_without_root_hand_values(beta, expected_sum):
    _close(tv_norm(MASK3, beta, reduction="sum", root=False), expected_sum)
    _close(tv_norm(MASK3, beta, reduction="mean", root=False), expected_sum / 4)
    # per-mask betas broadcast as in the rooted form
    both = tv_norm(MASK3.expand(2, 1, 3, 3), torch.tensor([2.0, 3.0]), "sum", root=False)
    torch.testing.assert_close(both, torch.tensor([TV3_BETA2_NOROOT_SUM, TV3_BETA3_NOROOT_SUM]))


def test_tv_norm_without_root_has_a_finite_gradient_on_flat_cells():
    mask = torch.full((1, 1, 5, 5), 0.6)
    mask[..., 3:, 3:] = 0.1
    mask.requires_grad_(True)
    tv_norm(mask, 2.0, reduction="sum", root=False).backward()
    assert torch.isfinite(mask.grad).all() and mask.grad.abs().sum() > 0


def test_tv_norm_of_constant_mask_is_zero_with_a_finite_zero_gradient():
    for beta in (1.0, 2.0, 2.5):
        mask = torch.full((2, 1, 5, 5), 0.6, requires_grad=True)
        tv = tv_norm(mask, beta, reduction="sum")
        assert torch.equal(tv, torch.zeros(2))
        tv.sum().backward()
        assert torch.equal(mask.grad, torch.zeros_like(mask))


def test_tv_norm_gradient_is_finite_on_a_partly_flat_mask():
    # Flat cells (inner sum 0) sit next to a step: the flat cells must not poison the gradient.
    mask = torch.ones(1, 1, 6, 6)
    mask[..., 3:, 3:] = 0.2
    mask.requires_grad_(True)
    tv_norm(mask, 2.0, reduction="sum").backward()
    assert torch.isfinite(mask.grad).all()
    assert mask.grad.abs().sum() > 0


def test_tv_norm_rejects_unknown_reduction():
    with pytest.raises(ValueError, match="reduction"):
        tv_norm(MASK3, 2.0, reduction="max")


def test_l1_norm_hand_values():
    _close(l1_norm(MASK3, reduction="sum"), L1_3_SUM)
    _close(l1_norm(MASK3, reduction="mean"), L1_3_SUM / 9)
    assert torch.equal(l1_norm(torch.ones(2, 1, 4, 4), "sum"), torch.zeros(2))


@pytest.mark.parametrize("reduction, tv, l1", [("sum", TV3_BETA2_SUM, L1_3_SUM),
                                               ("mean", TV3_BETA2_SUM / 4, L1_3_SUM / 9)])
def test_mask_penalty_is_lambda1_tv_plus_lambda2_l1(reduction, tv, l1):
    _close(mask_penalty(MASK3, lambda1=1.7, lambda2=3.0, beta=2.0, reduction=reduction),
           1.7 * tv + 3.0 * l1, tol=1e-5)
    _close(mask_penalty(MASK3, lambda1=0.0, lambda2=1.0, beta=2.0, reduction=reduction), l1)
    _close(mask_penalty(MASK3, lambda1=1.0, lambda2=0.0, beta=2.0, reduction=reduction), tv)


def test_per_mask_lambdas_and_betas_broadcast_like_separate_calls():
    gen = torch.Generator().manual_seed(1)
    masks = torch.rand(3, 1, 7, 7, generator=gen)
    lambda1 = torch.tensor([0.0, 1.7, 5.0])
    lambda2 = torch.tensor([3.0, 0.5, 0.0])
    beta = torch.tensor([1.0, 2.0, 3.5])
    for reduction in ("sum", "mean"):
        together = mask_penalty(masks, lambda1, lambda2, beta, reduction)
        assert together.shape == (3,)
        alone = torch.cat([
            mask_penalty(masks[i:i + 1], float(lambda1[i]), float(lambda2[i]), float(beta[i]),
                         reduction)
            for i in range(3)
        ])
        torch.testing.assert_close(together, alone, atol=1e-6, rtol=1e-6)
        # and the three settings really give three different penalties
        assert len(set(together.tolist())) == 3


# --- Eq. 4 and 6: the F-TC and F-NTC regularizers ------------------------------------------------

CLEAN = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
TARGET = torch.tensor([3])
# Non-target shifts (0.5, 0.0, -1.0), target shift +10.
MOVED = torch.tensor([[1.5, 2.0, 2.0, 14.0]])


def test_ftc_penalty_is_zero_for_unchanged_logits():
    logits = torch.randn(3, 10, generator=torch.Generator().manual_seed(2))
    target = torch.tensor([0, 4, 9])
    for form in ("mean", "vector"):
        assert torch.equal(ftc_penalty(logits, logits.clone(), target, 0.3, form), torch.zeros(3))


def test_ftc_penalty_hand_values():
    # mean: gamma * |(0.5 + 0 - 1) / 3| ; vector: gamma * sqrt(0.25 + 0 + 1) / 3
    _close(ftc_penalty(MOVED, CLEAN, TARGET, 0.3, "mean"), 0.3 * 0.5 / 3)
    _close(ftc_penalty(MOVED, CLEAN, TARGET, 0.3, "vector"), 0.3 * math.sqrt(1.25) / 3)


def test_ftc_penalty_ignores_the_target_logit():
    other = MOVED.clone()
    other[0, 3] = -50.0
    for form in ("mean", "vector"):
        assert torch.equal(ftc_penalty(other, CLEAN, TARGET, 0.3, form),
                           ftc_penalty(MOVED, CLEAN, TARGET, 0.3, form))


def test_ftc_penalty_rejects_unknown_form():
    with pytest.raises(ValueError, match="form"):
        ftc_penalty(MOVED, CLEAN, TARGET, 0.3, "max")


def test_fntc_penalty_hand_value_and_ignores_non_targets():
    _close(fntc_penalty(MOVED, CLEAN, TARGET, 0.3), 0.3 * 10.0)
    other = MOVED.clone()
    other[0, :3] = torch.tensor([-7.0, 9.0, 100.0])
    assert torch.equal(fntc_penalty(other, CLEAN, TARGET, 0.3),
                       fntc_penalty(MOVED, CLEAN, TARGET, 0.3))
    _close(fntc_penalty(torch.tensor([[1.0, 2.0, 3.0, 1.5]]), CLEAN, TARGET, 0.5), 0.5 * 2.5)


def test_fntc_penalty_squared_reading_hand_values_and_its_flat_start():
    # dy_k = 14 - 4 = 10 -> gamma * 100; dy_k = 1.5 - 4 = -2.5 -> gamma * 6.25
    _close(fntc_penalty(MOVED, CLEAN, TARGET, 0.3, "squared"), 0.3 * 100.0, tol=4e-6)  # float32
    _close(fntc_penalty(torch.tensor([[1.0, 2.0, 3.0, 1.5]]), CLEAN, TARGET, 0.5, "squared"),
           0.5 * 6.25)
    # the two readings' slopes at dy_k = 0: gamma (abs, either side) against 0 (squared)
    for norm, slope in (("abs", 0.3), ("squared", 0.0)):
        y = torch.tensor([[1.0, 2.0, 3.0, 4.0 + 1e-3]], requires_grad=True)
        fntc_penalty(y, CLEAN, TARGET, 0.3, norm).sum().backward()
        assert y.grad[0, 3].item() == pytest.approx(slope, abs=1e-3)
        assert torch.count_nonzero(y.grad[0, :3]) == 0
    with pytest.raises(ValueError, match="fntc norm"):
        fntc_penalty(MOVED, CLEAN, TARGET, 0.3, "l1")


def test_per_mask_gamma_and_target_broadcast_like_separate_calls():
    gen = torch.Generator().manual_seed(3)
    clean = torch.randn(4, 6, generator=gen)
    logits = clean + torch.randn(4, 6, generator=gen)
    target = torch.tensor([0, 5, 2, 2])
    gamma = torch.tensor([0.3, 0.0, 1.0, 2.5])
    for fn in (lambda *a: ftc_penalty(*a, "mean"), lambda *a: ftc_penalty(*a, "vector"),
               fntc_penalty):
        together = fn(logits, clean, target, gamma)
        alone = torch.cat([fn(logits[i:i + 1], clean[i:i + 1], target[i:i + 1], float(gamma[i]))
                           for i in range(4)])
        torch.testing.assert_close(together, alone, atol=1e-7, rtol=1e-6)
        assert together[1] == 0


# --- loss_terms: the loss each mode minimizes --------------------------------------------------

def _terms(logits, clean, mask, target, modes, objective, lambda1=1.7, lambda2=3.0, beta=2.0,
           gamma=0.3, reduction="sum", tv_root=True):
    n = logits.shape[0]
    full = lambda v: torch.full((n,), float(v))  # noqa: E731
    config = OptimConfig(objective=objective, reduction=reduction, tv_root=tv_root)
    mode = torch.tensor([MODES.index(m) for m in modes])
    return loss_terms(logits, clean, mask, target, mode, full(lambda1), full(lambda2),
                           full(beta), full(gamma), config)


@pytest.mark.parametrize("objective", ["prob", "log_prob"])
def test_loss_terms_match_the_documented_formula_per_mode(objective):
    logits = MOVED.expand(4, 4)
    clean = CLEAN.expand(4, 4)
    mask = MASK3.expand(4, 1, 3, 3)
    target = TARGET.expand(4)
    out = _terms(logits, clean, mask, target, list(MODES), objective)

    e = [math.exp(v) for v in MOVED[0].tolist()]
    p = [v / sum(e) for v in e]
    p_k, p_others = p[3], p[0] + p[1] + p[2]
    if objective == "log_prob":
        p_k, p_others = math.log(p_k), math.log(p_others)
    r_m = 1.7 * TV3_BETA2_SUM + 3.0 * L1_3_SUM
    r_ftc = 0.3 * 0.5 / 3
    r_fntc = 0.3 * 10.0
    expected = {
        "baseline": -p_k + r_m,          # Eq. 3
        "ftc": -p_k + r_m + r_ftc,       # Eq. 5
        "fntc": p_others + r_m + r_fntc,  # Eq. 7
        "deletion": p_k + r_m,           # ref. [3]
    }
    for i, mode in enumerate(MODES):
        assert abs(float(out["total"][i]) - expected[mode]) < 1e-5, mode
    # the parts add up to the total, and "prob" is always the plain target probability
    torch.testing.assert_close(out["total"], out["f_term"] + 1.7 * out["tv"]
                               + 3.0 * out["l1"] + out["r_factors"])
    torch.testing.assert_close(out["prob"], torch.full((4,), p[3]))
    # deletion lowers what baseline raises: the same term, opposite sign
    assert float(out["f_term"][3]) == -float(out["f_term"][0])
    assert float(out["f_term"][3]) != 0


def test_loss_terms_with_the_logit_objective_per_mode():
    logits = MOVED.expand(4, 4)
    out = _terms(logits, CLEAN.expand(4, 4), MASK3.expand(4, 1, 3, 3), TARGET.expand(4),
                 list(MODES), "logit")
    y = MOVED[0].tolist()
    y_k, lse_others = y[3], math.log(sum(math.exp(v) for v in y[:3]))
    r_m = 1.7 * TV3_BETA2_SUM + 3.0 * L1_3_SUM
    expected_f = {"baseline": -y_k, "ftc": -y_k, "fntc": lse_others, "deletion": y_k}
    expected_reg = {"baseline": 0.0, "ftc": 0.3 * 0.5 / 3, "fntc": 0.3 * 10.0, "deletion": 0.0}
    for i, mode in enumerate(MODES):
        assert abs(float(out["f_term"][i]) - expected_f[mode]) < 1e-5, mode
        total = expected_f[mode] + r_m + expected_reg[mode]
        assert abs(float(out["total"][i]) - total) < 1e-5, mode
    # the recorded probability stays f_k(Q), whatever the objective
    e = [math.exp(v) for v in y]
    torch.testing.assert_close(out["prob"], torch.full((4,), e[3] / sum(e)))


def test_loss_terms_take_tv_without_root_when_asked():
    args = (MOVED, CLEAN, MASK3, TARGET, ["baseline"], "prob")
    rooted, plain = _terms(*args), _terms(*args, tv_root=False)
    _close(plain["tv"], TV3_BETA2_NOROOT_SUM)
    _close(plain["total"] - rooted["total"], 1.7 * (TV3_BETA2_NOROOT_SUM - TV3_BETA2_SUM))
    torch.testing.assert_close(plain["total"], plain["f_term"] + 1.7 * plain["tv"]
                               + 3.0 * plain["l1"] + plain["r_factors"])
    _close(mask_penalty(MASK3, 1.7, 3.0, 2.0, "sum", tv_root=False),
           1.7 * TV3_BETA2_NOROOT_SUM + 3.0 * L1_3_SUM)


def test_loss_terms_log_others_is_exact_when_target_dominates():
    # p_k ~ 1 - 1e-13: 1 - p_k cancels in float32, log-sum-exp over the others does not
    logits = torch.tensor([[0.0, 0.0, 30.0]])
    out = _terms(logits, logits, torch.ones(1, 1, 3, 3), torch.tensor([2]), ["fntc"],
                 "log_prob")
    expected = math.log(2.0) - 30.0 - math.log1p(2 * math.exp(-30.0))
    assert abs(float(out["f_term"][0]) - expected) < 1e-4


def _fntc_pull_on_target_logit(f_k: float, objective: str, gamma: float = 0.3) -> float:
    """d(F-NTC loss)/d(y_k) just after y_k leaves its clean value upwards (Eq. 6-7)."""
    n = 1000
    y_k = math.log(f_k * (n - 1) / (1 - f_k))  # others at logit 0: softmax gives f_k
    clean = torch.zeros(1, n)
    clean[0, 0] = y_k
    logits = clean.clone()
    logits[0, 0] += 1e-4  # past the kink of |y_k(Q) - y_k(X)|
    logits.requires_grad_(True)
    out = _terms(logits, clean, torch.ones(1, 1, 3, 3), torch.tensor([0]), ["fntc"], objective,
                 lambda1=0.0, lambda2=0.0, gamma=gamma)
    out["total"].sum().backward()
    return float(logits.grad[0, 0])


@pytest.mark.parametrize("f_k", [0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99])
def test_fntc_never_raises_the_target_logit_under_the_probability(f_k):
    # prob: the pull on y_k is f_k (1 - f_k) <= 0.25 < gamma = 0.3, so raising the target's
    # logit always costs more in R_F-NTC than it gains: the loss grows, F-NTC must stall.
    pull = _fntc_pull_on_target_logit(f_k, "prob")
    assert abs(pull - (0.3 - f_k * (1 - f_k))) < 1e-4
    assert pull > 0.04


@pytest.mark.parametrize("f_k", [0.05, 0.2, 0.4, 0.6, 0.9])
def test_fntc_raises_the_target_logit_under_log_prob_above_gamma(f_k):
    # log_prob: the pull on y_k is f_k, which beats gamma = 0.3 once f_k > 0.3: F-NTC then runs
    # away through the target's own logit, the route Eq. 6 is meant to close.
    pull = _fntc_pull_on_target_logit(f_k, "log_prob")
    assert abs(pull - (0.3 - f_k)) < 1e-4
    assert (pull < 0) == (f_k > 0.3)


def test_fntc_would_move_the_target_logit_under_the_probability_only_below_a_quarter():
    # The largest pull f_k (1 - f_k) is 0.25 at f_k = 0.5: only gamma < 0.25 lets F-NTC raise
    # y_k at all under the probability objective.
    assert _fntc_pull_on_target_logit(0.5, "prob", gamma=0.24) < 0
    assert _fntc_pull_on_target_logit(0.5, "prob", gamma=0.26) > 0


@pytest.mark.parametrize("f_k", [0.05, 0.5, 0.99])
def test_fntc_never_moves_the_target_logit_up_under_the_logit_objective(f_k):
    # logit: LSE_{i != k} y_i does not depend on y_k, so only R_F-NTC pulls on it (by gamma).
    assert abs(_fntc_pull_on_target_logit(f_k, "logit") - 0.3) < 1e-6
