"""The batched mask optimizer on the real EfficientNet-Lite0 and real sample images, and the
validation of its hyperparameters (upx_core.method.config).

Runs use 80 x 80 center crops (conftest.crops) and a few iterations. What the method is for
(a real gain through a non-empty mask, each mode's defining property) is in test_method.py.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from torch import nn

from upx_core import MaskSetting, OptimConfig, optimize_masks, settings_grid
from upx_core.method.equations import blur, blur_for, median_blur, perturb, tv_norm, upsample_mask
from upx_core.method.gradient import noise_generators, perturbation_noise
from upx_core.method.optimizer import initial_mask
from upx_core.method.result import TERMS
from upx_core.method.runtime import perturbed_probs

INDIAN_ELEPHANT, AFRICAN_ELEPHANT = 385, 386
CROP = 80  # conftest.crops

# lr 1e-3 rather than the paper's 0.1 for the batch-layout comparisons: Adam's update is
# lr * m_hat / sqrt(v_hat), which divides out the gradient's scale, so a relative gradient
# difference eps (float32 reassociation of the convolutions at another batch size: up to ~0.4 %
# on elements with small gradients, measured) becomes an absolute mask difference of about
# lr * eps. With lr 0.1 that is ~1e-3 after three steps; with lr 1e-3 it is ~1e-5 while each
# mask still moves ~3e-3 from its start.
LAYOUT_CONFIG = OptimConfig(iterations=3, lr=1e-3, objective="log_prob")
SETTINGS = [
    MaskSetting(mode="ftc", seed=0),
    MaskSetting(mode="fntc", seed=1, lambda1=0.5, gamma=1.0),
]


def run(model, images, **kw):
    kw.setdefault("device", "cpu")
    kw.setdefault("progress", False)
    return optimize_masks(model, images, **kw)


@pytest.fixture(scope="module")
def batched(model, crops):
    """2 images x 2 settings in one batch of 4 masks."""
    return run(model, crops, settings=SETTINGS, config=LAYOUT_CONFIG)


@pytest.fixture(scope="module")
def one_by_one(model, crops):
    """The same 4 masks, each in its own optimize_masks call: masks[b][k]."""
    return [[run(model, crops[b], settings=SETTINGS[k], config=LAYOUT_CONFIG).masks[0, 0]
             for k in range(2)] for b in range(2)]


# --- batching and determinism --------------------------------------------------------------------

def test_batched_run_equals_masks_run_one_by_one(batched, one_by_one):
    alone = torch.stack([torch.stack(row) for row in one_by_one])
    assert alone.shape == batched.masks.shape
    # Not bit-identical: convolutions over a batch of 4 and of 1 sum in a different order.
    # Nearly all elements agree to 1e-5; the few whose gradient is near 0 get Adam steps of
    # either sign and differ by up to ~7e-5 (measured with the folded network, which oneDNN
    # runs with other kernels per batch size than the unfolded one).
    diff = (batched.masks - alone).abs().flatten()
    assert diff.quantile(0.99) < 1e-5 and diff.max() < 5e-4, diff.max()
    # ...and the tolerance is far below how far the masks moved, so the check has teeth
    starts = torch.stack([initial_mask(s.seed, LAYOUT_CONFIG.mask_size, LAYOUT_CONFIG.init_noise)
                          for s in SETTINGS])
    moved = (batched.masks - starts).abs().amax(dim=(-1, -2, -3))
    assert (moved > 2e-3).all()


def test_same_seed_gives_bit_identical_masks_across_runs(model, crops, batched):
    again = run(model, crops, settings=SETTINGS, config=LAYOUT_CONFIG)
    assert torch.equal(again.masks, batched.masks)
    assert torch.equal(again.history, batched.history)


def test_same_seed_is_bit_identical_across_chunking_and_order(model, crops, batched, one_by_one):
    # batch_size=1 runs each mask alone inside one call: the same arithmetic as separate calls
    chunked = run(model, crops, settings=SETTINGS, config=LAYOUT_CONFIG, batch_size=1)
    for b in range(2):
        for k in range(2):
            assert torch.equal(chunked.masks[b, k], one_by_one[b][k])
    # the same batch size with the settings in the other order: each sample's arithmetic is
    # independent of its position in the batch on CPU, so the masks are bit-identical
    swapped = run(model, crops, settings=SETTINGS[::-1], config=LAYOUT_CONFIG)
    assert torch.equal(swapped.masks.flip(1), batched.masks)


def test_different_seeds_differ_only_through_the_initial_noise(model, crops):
    x = crops[1]
    seeds = settings_grid(modes=("ftc",), seeds=(0, 1))
    cfg = OptimConfig(iterations=2)
    noisy = run(model, x, settings=seeds, config=cfg)
    assert (noisy.masks[0, 0] - noisy.masks[0, 1]).abs().max() > 0.1
    flat = run(model, x, settings=seeds, config=cfg.replace(init_noise=0.0))
    assert torch.equal(flat.masks[0, 0], flat.masks[0, 1])
    # ...and the flat start still moved the mask (the gradient reached it)
    assert (flat.masks[0, 0] < 1).any()


def test_initial_mask_depends_only_on_seed_and_noise():
    a = initial_mask(7, 28, 0.5)
    assert torch.equal(a, initial_mask(7, 28, 0.5))
    assert a.shape == (1, 28, 28) and a.min() >= 0.5 and a.max() <= 1.0
    assert not torch.equal(a, initial_mask(8, 28, 0.5))
    assert torch.equal(initial_mask(7, 28, 0.0), torch.ones(1, 28, 28))


# --- the jacobgil readings: noise on Q, logit objective, TV without root, Gaussian+median ------

# std 0.2 (rather than 0.045) so that the noise moves the masks far beyond the batch-layout
# tolerance within LAYOUT_CONFIG's three small steps
NOISY = LAYOUT_CONFIG.replace(perturb_noise=0.2)


@pytest.fixture(scope="module")
def noisy(model, crops):
    return run(model, crops, settings=SETTINGS, config=NOISY)


def test_perturb_noise_is_seeded_per_mask_and_bit_identical_across_runs(model, crops, noisy,
                                                                        batched):
    again = run(model, crops, settings=SETTINGS, config=NOISY)
    assert torch.equal(again.masks, noisy.masks) and torch.equal(again.history, noisy.history)
    # the noise changed the masks, beyond the batch-layout tolerance below
    assert (noisy.masks - batched.masks).abs().max() > 5e-3
    # another batch composition: order swapped, and each mask alone (chunks of one)
    swapped = run(model, crops, settings=SETTINGS[::-1], config=NOISY)
    assert torch.equal(swapped.masks.flip(1), noisy.masks)
    chunked = run(model, crops, settings=SETTINGS, config=NOISY, batch_size=1)
    alone = run(model, crops[1], settings=SETTINGS[0], config=NOISY)
    assert torch.equal(chunked.masks[1, 0], alone.masks[0, 0])
    # in one batch of four, a mask keeps its noise: equal up to convolution reassociation
    # (see test_batched_run_equals_masks_run_one_by_one)
    diff = (noisy.masks - chunked.masks).abs().flatten()
    assert diff.quantile(0.99) < 1e-5 and diff.max() < 5e-4, diff.max()


def test_perturb_noise_makes_trials_from_m_equal_1_differ(model, crops):
    seeds = settings_grid(modes=("ftc",), seeds=(0, 1))
    cfg = NOISY.replace(init_noise=0.0)
    r = run(model, crops[1], settings=seeds, config=cfg)
    assert (r.masks[0, 0] - r.masks[0, 1]).abs().max() > 1e-3  # without noise: equal
    # the noise streams differ from the trials' M0 streams and from each other
    g0, g1 = noise_generators(seeds)
    first = torch.randn(3, generator=g0)
    assert not torch.equal(first, torch.randn(3, generator=g1))
    assert not torch.equal(first, torch.randn(3, generator=torch.Generator().manual_seed(0)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_perturb_noise_on_cuda_is_the_cpu_draw():
    # drawn on the CPU, copied through pinned memory without a sync: the same bits on CUDA
    on_cpu = perturbation_noise(noise_generators(SETTINGS), (3, 8, 8), 0.2, torch.device("cpu"))
    on_cuda = perturbation_noise(noise_generators(SETTINGS), (3, 8, 8), 0.2, torch.device("cuda"))
    torch.cuda.synchronize()
    assert on_cuda.is_cuda and torch.equal(on_cuda.cpu(), on_cpu)


def test_zero_perturb_noise_is_the_default_run(model, crops, batched):
    assert LAYOUT_CONFIG.perturb_noise == 0.0
    zero = run(model, crops, settings=SETTINGS, config=LAYOUT_CONFIG.replace(perturb_noise=0.0))
    assert torch.equal(zero.masks, batched.masks) and torch.equal(zero.history, batched.history)


def test_final_probabilities_are_measured_without_noise(model, crops, noisy):
    # probs_after and the kept perturbed images are Eq. 1 with the final masks, no noise added
    q = perturb(crops.repeat_interleave(2, dim=0), blur_for(crops, NOISY).repeat_interleave(2, 0),
                upsample_mask(noisy.masks.flatten(0, 1), (CROP, CROP)))
    torch.testing.assert_close(noisy.perturbed.flatten(0, 1), q, atol=1e-6, rtol=0)
    with torch.no_grad():
        after = torch.softmax(model(q), dim=1)
    torch.testing.assert_close(noisy.probs_after.flatten(0, 1), after, atol=1e-5, rtol=1e-4)


def test_logit_objective_and_rootless_tv_reach_the_recorded_terms(model, crops):
    # M0 = 1: Q = X at the first step, so f_term is -y_k (baseline), LSE of the others (fntc)
    # or +y_k (deletion) of the clean logits
    modes = settings_grid(modes=("baseline", "fntc", "deletion"), seeds=(0,))
    cfg = OptimConfig(iterations=1, objective="logit", init_noise=0.0, tv_root=False)
    r = run(model, crops[:1], settings=modes, config=cfg)
    with torch.no_grad():
        y = model(crops[:1])[0].double()
    k = int(r.targets[0, 0])
    others = torch.cat([y[:k], y[k + 1:]]).logsumexp(0)
    f_term = r.history[0, 0, :, TERMS.index("f_term")].double()
    torch.testing.assert_close(f_term, torch.stack([-y[k], others, y[k]]), atol=1e-4, rtol=1e-5)
    # TV without its root: with init_noise 0.5 the first step records tv_norm(M0, root=False)
    cfg = cfg.replace(init_noise=0.5, objective="prob")
    r = run(model, crops[:1], settings=modes[0], config=cfg)
    m0 = initial_mask(0, cfg.mask_size, 0.5).unsqueeze(0)
    tv = r.history[0, 0, 0, TERMS.index("tv")]
    assert torch.equal(tv, tv_norm(m0, 2.0, "mean", root=False)[0])
    assert not torch.equal(tv, tv_norm(m0, 2.0, "mean")[0])


def test_fntc_norm_reaches_the_fntc_penalty_and_nothing_else(model, crops):
    # the recorded R_F-NTC of every step is gamma * |dy_k| or gamma * dy_k^2 of that step's
    # logits, and the norm changes F-NTC's masks only
    settings = settings_grid(modes=("fntc", "ftc"), seeds=(0,), gamma=1.0)
    runs = {norm: run(model, crops[:1], settings=settings,
                      config=OptimConfig(iterations=3, fntc_norm=norm))
            for norm in ("abs", "squared")}
    r_abs = runs["abs"].history[0, 0, :, TERMS.index("r_factors")]
    r_sq = runs["squared"].history[0, 0, :, TERMS.index("r_factors")]
    # the first step starts both from the same M0, so |dy_k|^2 there is the squared reading
    torch.testing.assert_close(r_sq[0], r_abs[0].square(), rtol=1e-5, atol=1e-7)
    assert r_abs[0] > 0
    assert not torch.equal(runs["abs"].masks[0, 0], runs["squared"].masks[0, 0])
    assert torch.equal(runs["abs"].masks[0, 1], runs["squared"].masks[0, 1])


def test_gaussian_median_blur_is_what_the_optimizer_and_perturbed_probs_use(model, crops):
    cfg = LAYOUT_CONFIG.replace(iterations=1, blur="gaussian+median")
    r = run(model, crops, config=cfg)
    up = upsample_mask(r.masks[:, 0], (CROP, CROP))
    hx = (blur(crops, cfg.sigma, cfg.kernel_size) + median_blur(crops, cfg.kernel_size)) / 2
    torch.testing.assert_close(r.perturbed[:, 0], perturb(crops, hx, up), atol=1e-6, rtol=0)
    torch.testing.assert_close(perturbed_probs(model, crops, up, cfg), r.probs_after[:, 0],
                               atol=1e-5, rtol=1e-4)
    # ...and the Gaussian h(X) would give other perturbed images
    gauss = perturb(crops, blur(crops, cfg.sigma, cfg.kernel_size), up)
    assert (r.perturbed[:, 0] - gauss).abs().max() > 1e-2


# --- what a result holds --------------------------------------------------------------------------

def test_result_shapes_and_recorded_probabilities(model, crops, batched):
    r = batched
    m, t = LAYOUT_CONFIG.mask_size, LAYOUT_CONFIG.iterations
    assert r.masks.shape == (2, 2, 1, m, m)
    assert r.targets.shape == (2, 2)
    assert r.probs_before.shape == (2, 1000)
    assert r.probs_after.shape == (2, 2, 1000)
    assert r.history.shape == (t, 2, 2, len(TERMS))
    assert r.perturbed.shape == (2, 2, 3, CROP, CROP)
    assert r.masks_upsampled.shape == (2, 2, 1, CROP, CROP)
    assert r.masks.min() >= 0 and r.masks.max() <= 1

    with torch.no_grad():
        clean = torch.softmax(model(crops), dim=1)
    torch.testing.assert_close(r.probs_before, clean, atol=1e-6, rtol=1e-5)
    # targets=None takes each image's top class, for every setting
    assert r.targets.tolist() == [[int(clean[0].argmax())] * 2, [int(clean[1].argmax())] * 2]
    assert r.targets[1, 0] == AFRICAN_ELEPHANT
    torch.testing.assert_close(r.target_prob_before, clean.gather(1, r.targets))

    # the kept perturbed images are Eq. 1 with the returned masks, and probs_after their softmax
    q = perturb(crops.repeat_interleave(2, dim=0),
                blur(crops, LAYOUT_CONFIG.sigma, LAYOUT_CONFIG.kernel_size).repeat_interleave(2, 0),
                upsample_mask(r.masks.flatten(0, 1), (CROP, CROP)))
    torch.testing.assert_close(r.perturbed.flatten(0, 1), q, atol=1e-6, rtol=0)
    with torch.no_grad():
        after = torch.softmax(model(q), dim=1)
    torch.testing.assert_close(r.probs_after.flatten(0, 1), after, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(r.target_prob_after,
                               r.probs_after.gather(2, r.targets[..., None])[..., 0])


def test_target_by_name_by_index_and_setting_override(model, crops):
    x = crops[1]  # the African elephant crop
    cfg = OptimConfig(iterations=1)
    settings = [MaskSetting(seed=0), MaskSetting(seed=0, target=INDIAN_ELEPHANT)]
    by_name = run(model, x, targets="African elephant", settings=settings, config=cfg)
    by_index = run(model, x, targets=AFRICAN_ELEPHANT, settings=settings, config=cfg)
    assert by_name.targets.tolist() == [[AFRICAN_ELEPHANT, INDIAN_ELEPHANT]]
    assert by_index.targets.tolist() == [[AFRICAN_ELEPHANT, INDIAN_ELEPHANT]]
    assert torch.equal(by_name.masks, by_index.masks)
    p = by_name.probs_before[0]
    assert by_name.target_prob_before[0].tolist() == [float(p[AFRICAN_ELEPHANT]),
                                               float(p[INDIAN_ELEPHANT])]
    # the two masks raised different classes, so they differ although their seed is the same
    assert not torch.equal(by_name.masks[0, 0], by_name.masks[0, 1])


def test_per_image_targets_and_their_count(model, crops):
    r = run(model, crops, targets=[INDIAN_ELEPHANT, "african_elephant"],
            config=OptimConfig(iterations=1))
    assert r.targets.tolist() == [[INDIAN_ELEPHANT], [AFRICAN_ELEPHANT]]
    with pytest.raises(ValueError, match="3 targets for 2 images"):
        run(model, crops, targets=[1, 2, 3], config=OptimConfig(iterations=1))
    with pytest.raises(ValueError, match="outside 0..999"):
        run(model, crops, settings=MaskSetting(target=1000), config=OptimConfig(iterations=1))


def test_numpy_and_tensor_targets_work_and_floats_are_refused_before_any_work(model, crops):
    cfg = OptimConfig(iterations=1)
    r = run(model, crops, targets=np.int64(AFRICAN_ELEPHANT), config=cfg)
    assert r.targets.tolist() == [[AFRICAN_ELEPHANT], [AFRICAN_ELEPHANT]]
    r = run(model, crops, targets=np.array([INDIAN_ELEPHANT, AFRICAN_ELEPHANT]), config=cfg)
    assert r.targets.tolist() == [[INDIAN_ELEPHANT], [AFRICAN_ELEPHANT]]
    r = run(model, crops[1], targets=torch.tensor(AFRICAN_ELEPHANT), config=cfg)  # 0-d
    assert r.targets.tolist() == [[AFRICAN_ELEPHANT]]
    # checked before the model runs (TinyNet: no categories, so the ImageNet names apply)
    for bad, match in [(386.0, "386.0 is not an integer"), (object(), "targets must be"),
                       ("", "target is empty"), (-1, "out of range")]:
        with pytest.raises(ValueError, match=match):
            run(TinyNet(), crops, targets=bad, config=cfg)


# --- gradients and the caller's model ---------------------------------------------------------

def _state(model):
    return ([p.requires_grad for p in model.parameters()],
            [m.training for m in model.modules()],
            {k: v.clone() for k, v in model.state_dict().items()})


@pytest.mark.parametrize("setup", ["all_trainable_in_train_mode", "partly_frozen_mixed_modes"])
def test_gradients_reach_only_the_mask(model, crops, setup):
    net = copy.deepcopy(model)
    if setup == "all_trainable_in_train_mode":
        net.train()
        assert all(p.requires_grad for p in net.parameters())
    else:
        for i, p in enumerate(net.parameters()):
            p.requires_grad_(i % 3 == 0)
        net.eval()
        net.net.blocks[2].train()
    flags, modes, weights = _state(net)
    channels_last = setup == "partly_frozen_mixed_modes"
    r = run(net, crops[:1], config=OptimConfig(iterations=2, init_noise=0.0,
                                               channels_last=channels_last))
    assert all(p.grad is None for p in net.parameters())
    # channels_last=True converts the weights for the run only: the caller's layout comes back
    assert all(t.is_contiguous() for t in [*net.parameters(), *net.buffers()])
    assert [p.requires_grad for p in net.parameters()] == flags
    assert [m.training for m in net.modules()] == modes
    # eval mode during the run: batch-norm statistics were not updated, weights untouched
    after = net.state_dict()
    assert all(torch.equal(after[k], v) for k, v in weights.items())
    assert (r.masks < 1).any()  # ...while the mask did receive a gradient


def test_input_images_that_require_grad_are_not_differentiated(model, crops):
    x = crops[:1].clone().requires_grad_(True)
    r = run(model, x, config=OptimConfig(iterations=2))
    assert x.grad is None
    assert r.masks.shape[0] == 1


class TinyNet(nn.Module):
    """A real small CNN: conv, global pool, linear, 10 classes."""

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        with torch.random.fork_rng():  # fixed weights without touching the global generator
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.fc = nn.Linear(8, n_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class NaNForDarkImages(nn.Module):
    """TinyNet whose logits are NaN for images darker than 0.5 on average (sqrt of a negative),
    so only some masks of a batch go bad."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TinyNet()

    def forward(self, x):
        return self.net(x) + torch.sqrt(x.mean(dim=(1, 2, 3)) - 0.5)[:, None]


def test_nan_in_the_loss_raises_and_names_the_mask():
    bright = torch.full((3, 32, 32), 0.9)
    dark = torch.full((3, 32, 32), 0.1)
    images = torch.stack([bright, dark])
    settings = settings_grid(modes=("ftc",), seeds=(0, 1))
    cfg = OptimConfig(iterations=3, mask_size=8, check_every=2)
    with pytest.raises(FloatingPointError, match=r"mask 2 \(MaskSetting\(mode='ftc', seed=0"):
        run(NaNForDarkImages(), images, targets=[0, 0], settings=settings, config=cfg)
    # the bright image alone is fine
    ok = run(NaNForDarkImages(), images[:1], targets=[0], settings=settings, config=cfg)
    assert torch.isfinite(ok.masks).all()


# --- argument checks --------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_cuda_without_gpu_raises(model, crops):
    with pytest.raises(ValueError, match="no CUDA GPU"):
        run(model, crops, device="cuda", config=OptimConfig(iterations=1))


def test_unknown_device_raises(model, crops):
    with pytest.raises(ValueError, match="device"):
        run(model, crops, device="tpu", config=OptimConfig(iterations=1))


@pytest.mark.parametrize("images, match", [
    (torch.full((1, 3, 32, 32), 1.5), r"\[0, 1\]"),
    (torch.full((1, 3, 32, 32), -0.1), r"\[0, 1\]"),
    (torch.full((1, 3, 32, 32), float("nan")), "finite"),
    (torch.rand(1, 1, 32, 32), r"\[B, 3, H, W\]"),
    (torch.rand(3, 32), r"\[B, 3, H, W\]"),
    (torch.rand(2, 3, 32, 32, 1), r"\[B, 3, H, W\]"),
    ([[0.5]], "torch.Tensor"),
    (torch.rand(1, 3, 20, 40), "smaller than the 28x28 mask"),
    # 0/1 or 0..255 integers are not taken as an image: the dtype says convert them
    (torch.ones(1, 3, 32, 32, dtype=torch.uint8), r"float tensor in \[0, 1\].*torch\.uint8"),
    (torch.ones(1, 3, 32, 32, dtype=torch.bool), r"float tensor in \[0, 1\].*torch\.bool"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.int64), "float tensor"),
    (torch.rand(0, 3, 32, 32), "empty batch"),
])
def test_bad_images_raise_before_any_work(images, match):
    with pytest.raises(ValueError, match=match):
        run(TinyNet(), images, config=OptimConfig(iterations=1))


def test_empty_settings_and_bad_batch_size_raise():
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="settings is empty"):
        run(TinyNet(), x, settings=[], config=OptimConfig(iterations=1))
    with pytest.raises(ValueError, match="batch_size"):
        run(TinyNet(), x, batch_size=0, config=OptimConfig(iterations=1))


# --- config --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, name", [
    ({"iterations": 0}, "iterations"),
    ({"iterations": -5}, "iterations"),
    ({"iterations": 2.5}, "iterations"),
    ({"lr": 0}, "lr"),
    ({"lr": -0.1}, "lr"),
    ({"lr": float("inf")}, "lr"),
    ({"lr": float("nan")}, "lr"),
    ({"mask_size": 1}, "mask_size"),
    ({"sigma": 0}, "sigma"),
    ({"sigma": -1.0}, "sigma"),
    ({"sigma": float("nan")}, "sigma"),
    ({"kernel_size": 10}, "kernel_size"),
    ({"kernel_size": 0}, "kernel_size"),
    ({"kernel_size": -3}, "kernel_size"),
    ({"kernel_size": 11.0}, "kernel_size"),
    ({"objective": "logits"}, "objective"),
    ({"reduction": "max"}, "reduction"),
    ({"ftc_form": "l1"}, "ftc_form"),
    ({"init_noise": -0.1}, "init_noise"),
    ({"init_noise": 1.5}, "init_noise"),
    ({"amp": "fp16"}, "amp"),
    ({"check_every": 0}, "check_every"),
    ({"perturb_noise": -0.1}, "perturb_noise"),
    ({"perturb_noise": float("nan")}, "perturb_noise"),
    ({"perturb_noise": float("inf")}, "perturb_noise"),
    ({"perturb_noise": "0.1"}, "perturb_noise"),
    ({"tv_root": 0}, "tv_root"),
    ({"tv_root": "False"}, "tv_root"),
    ({"blur": "median"}, "blur"),
    ({"blur": "Gaussian"}, "blur"),
])
def test_optim_config_rejects_bad_values_naming_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        OptimConfig(**kwargs)


@pytest.mark.parametrize("kwargs, name", [
    ({"mode": "gradcam"}, "mode"),
    ({"lambda1": -1.0}, "lambda1"),
    ({"lambda1": float("nan")}, "lambda1"),
    ({"lambda1": float("inf")}, "lambda1"),
    ({"lambda2": -0.5}, "lambda2"),
    ({"lambda2": float("nan")}, "lambda2"),
    ({"gamma": float("nan")}, "gamma"),
    ({"gamma": -0.3}, "gamma"),
    ({"gamma": float("inf")}, "gamma"),
    ({"beta": 0.5}, "beta"),
    ({"beta": float("nan")}, "beta"),
    ({"lambda1": "1.7"}, "lambda1"),
    ({"seed": -1}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"seed": True}, "seed"),
    ({"seed": 2**64}, r"seed must be an integer in 0\.\.2\*\*64 - 1"),
    ({"seed": 2**70}, r"seed must be an integer in 0\.\.2\*\*64 - 1"),
    ({"seed": np.float64(1)}, "seed"),
    ({"seed": np.bool_(True)}, "seed"),
    ({"target": "tusker"}, "target"),
    ({"target": -1}, "target"),
])
def test_mask_setting_rejects_bad_values_naming_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MaskSetting(**kwargs)


def test_numpy_scalars_are_accepted_and_stored_as_python_numbers():
    s = MaskSetting(seed=np.int64(1), target=np.int64(386), lambda1=np.float32(0.5))
    assert (s.seed, s.target, s.lambda1) == (1, 386, 0.5)
    assert type(s.seed) is int and type(s.target) is int and type(s.lambda1) is float
    cfg = OptimConfig(iterations=np.int64(5), mask_size=np.int32(14), kernel_size=np.int64(5),
                      lr=np.float32(0.25), check_every=np.int64(2))
    assert (cfg.iterations, cfg.mask_size, cfg.kernel_size, cfg.lr) == (5, 14, 5, 0.25)
    json.dumps([asdict(s), cfg.to_dict()])  # what result.json and the CSV store write
    noisy = OptimConfig(perturb_noise=np.float32(0.25))
    assert noisy.perturb_noise == 0.25 and type(noisy.perturb_noise) is float
    assert MaskSetting(seed=2**64 - 1).seed == 2**64 - 1
    assert initial_mask(2**64 - 1, 4, 0.5).shape == (1, 4, 4)


def test_config_accepts_the_paper_defaults_and_edges():
    cfg = OptimConfig()
    assert (cfg.iterations, cfg.lr, cfg.mask_size, cfg.sigma, cfg.kernel_size) == (
        200, 0.1, 28, 5.0, 11)
    s = MaskSetting()
    assert (s.lambda1, s.lambda2, s.beta, s.gamma) == (1.7, 3.0, 2.0, 0.3)
    MaskSetting(lambda1=0, lambda2=0, gamma=0, beta=1)
    OptimConfig(kernel_size=1, init_noise=0.0, mask_size=2)
    c = OptimConfig(objective="logit", perturb_noise=0.045, tv_root=False, blur="gaussian+median")
    assert (c.objective, c.perturb_noise, c.tv_root, c.blur) == (
        "logit", 0.045, False, "gaussian+median")
    assert (cfg.perturb_noise, cfg.tv_root, cfg.blur) == (0.0, True, "gaussian")
    assert OptimConfig().replace(iterations=5).iterations == 5
    assert OptimConfig().to_dict()["lr"] == 0.1
    assert [(s.mode, s.seed) for s in settings_grid(("ftc", "fntc"), (0, 1))] == [
        ("ftc", 0), ("ftc", 1), ("fntc", 0), ("fntc", 1)]


def test_the_same_pixels_in_another_memory_layout_give_the_same_mask(model, crops):
    """load_image returns a strided view; run_evaluation stacks a contiguous copy. Both must
    give the mask bit for bit, or upx explain and upx evaluate disagree on the same image."""
    x = crops[:1].contiguous()
    view = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # channels-last strides
    assert not view.is_contiguous() and torch.equal(view, x)
    cfg = OptimConfig(iterations=10)
    a = run(model, x, config=cfg)
    b = run(model, view, config=cfg)
    assert torch.equal(a.masks, b.masks)


# --- precision -----------------------------------------------------------------------------------

def test_bf16_runs_the_classifier_in_bfloat16_on_a_cpu_that_has_it_and_is_refused_elsewhere(
        model, crops):
    """``amp="bf16"`` on the CPU: the convolutions see bfloat16 where the CPU computes it
    natively (the logits move by bfloat16 rounding, not more); a CPU without it is refused
    before any work, since autocast there would emulate bfloat16 slower than float32."""
    from upx_core.method.runtime import bf16_supported, forward

    cfg = OptimConfig(amp="bf16")
    if not bf16_supported(torch.device("cpu")):
        with pytest.raises(ValueError, match="native bfloat16"):
            run(model, crops[:1], config=cfg.replace(iterations=1))
        return
    seen = []
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    handle = conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    try:
        with torch.no_grad():
            fp32 = forward(model, crops, OptimConfig())
            bf16 = forward(model, crops, cfg)
    finally:
        handle.remove()
    assert seen == [torch.float32, torch.bfloat16]
    assert bf16.dtype == torch.float32
    # bfloat16 keeps 8 significant bits: the logits move by far more than float32
    # reassociation (1e-4), yet each crop keeps its top class
    assert float((bf16 - fp32).abs().max()) > 1e-2
    assert torch.equal(bf16.argmax(dim=1), fp32.argmax(dim=1))
    r = run(model, crops[:1], config=cfg.replace(iterations=2))
    assert torch.isfinite(r.masks).all() and r.masks.dtype == torch.float32


def test_amp_auto_picks_bf16_with_channels_last_where_native_and_records_it(model, crops):
    """``amp="auto"`` is bfloat16 with channels-last on a device that computes bfloat16 natively
    and float32 elsewhere; the result's config records the choice, and its masks are those of
    the chosen config given explicitly, bit for bit (so "auto" adds no arithmetic of its own).
    The query-only optimizer, whose model's arithmetic is not upx's, records float32."""
    from upx_core import optimize_masks_blackbox, torch_predictor
    from upx_core.method.runtime import bf16_supported

    native = bf16_supported(torch.device("cpu"))
    cfg = OptimConfig(iterations=3, amp="auto")
    auto = run(model, crops, config=cfg)
    chosen = (cfg.replace(amp="bf16", channels_last=True) if native
              else cfg.replace(amp=None))
    assert (auto.config.amp, auto.config.channels_last) == (
        ("bf16", True) if native else (None, False))
    assert auto.config == chosen
    assert torch.equal(auto.masks, run(model, crops, config=chosen).masks)
    bb = optimize_masks_blackbox(torch_predictor(model, "logits"), crops[:1], config=cfg,
                                 queries=14, samples=2, outputs="logits", progress=False)
    assert bb.config.amp is None
