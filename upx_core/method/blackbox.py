"""The query-only optimizer: the same masks and objectives from forward calls alone (issue 11).

A black-box classifier (an ONNX session, an HTTP endpoint, a model whose weights we may not
differentiate) answers ``predict(images) -> scores`` and nothing else. The mask M and the loss
each mode minimizes are those of :func:`upx_core.method.optimizer.optimize_masks`; only the gradient
differs. The loss splits into a part that needs the model, the f-term plus R_F-TC or R_F-NTC,
and R_M = lambda1 TV(M) + lambda2 ||1 - M||_1, which does not. The first part's gradient is
estimated from queries by antithetic Gaussian smoothing (NES, Wierstra et al.; Ilyas et al.
2018): for P = ``samples`` directions u_p ~ N(0, I) of the m x m mask,

    g = sum_p (L(M + sigma u_p) - L(M - sigma u_p)) u_p / (2 sigma P),

the gradient of L smoothed by a Gaussian of width sigma. R_M's gradient is exact (autograd on
the mask alone). Adam receives g + grad R_M, as the gradient optimizer's Adam receives grad L.

The estimator's variance grows with the number of directions it has to cover: m^2 = 784 for
the 28 x 28 mask. With ``basis=k`` the directions are u_p = B z_p, z_p ~ N(0, I_k^2), where the
columns of B are an orthonormal basis of the bilinearly upsampled k x k fields
(:func:`smooth_basis`): g then estimates B B^T grad L, the gradient's projection onto smooth
masks, from k^2 dimensions instead of m^2 (Ilyas et al. 2019 and Tu et al. 2019 search in such a
reduced space). The mask itself and R_M stay on the full m x m grid.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .config import MODES, SEED_LIMIT, MaskSetting, OptimConfig
from .equations import (
    blur_for,
    l1_norm,
    loss_terms,
    mask_penalty,
    perturb,
    tv_norm,
    upsample_mask,
)
from .fold import fold_batchnorm as _fold
from .optimizer import check_finite, initial_mask, job_targets, target_list
from .result import TERMS, UPXResult
from .runtime import frozen

__all__ = ["OUTPUTS", "optimize_masks_blackbox", "samples_for_budget", "smooth_basis",
           "torch_predictor"]

# What predict returns: class probabilities (a softmax already applied) or pre-softmax logits.
OUTPUTS = ("probs", "logits")

# Added to a trial's seed for its stream of search directions u_p, so that they are not drawn
# from the stream of its start M0 nor from optimizer.NOISE_SEED_OFFSET's (the PCG multiplier).
NES_SEED_OFFSET = 0x5851F42D4C957F2D

Predict = Callable[[torch.Tensor], "torch.Tensor | np.ndarray"]


def torch_predictor(model: nn.Module, outputs: str = "probs", fold_batchnorm: bool = True,
                    channels_last: bool = False) -> Predict:
    """``model`` as a black box: ``predict(images) -> [N, C]`` on the CPU, float32.

    Each call runs the model in eval mode under ``torch.inference_mode()``, so no gradient can
    be taken through what it returns (the optimizer cannot cheat). ``outputs="probs"`` applies
    a softmax to the model's logits; ``"logits"`` returns them as they are. Images may be a
    torch tensor or a NumPy array; they are moved to the model's device. The callable carries
    ``outputs`` and the model's ``categories`` (if any) for :func:`optimize_masks_blackbox`.

    ``fold_batchnorm`` (default, as in :class:`~upx_core.method.config.OptimConfig`) and
    ``channels_last`` answer through a private copy of the model with its batch norms folded
    (:func:`upx_core.method.fold.fold_batchnorm`, checked against the model on the first call's
    images) and its weights in channels-last order: the same function in float32, rounded
    otherwise. Folded and channels-last, torch answered 1.6 times the queries per second of the
    model as given at batch 16 on this project's CPU (``benchmarks/blackbox_throughput.py
    --precisions``); channels-last is off by default, as in the white-box optimizer, whose
    precision gate it failed (``benchmarks/precision_gate.py``). The caller's model is never
    changed.
    """
    if outputs not in OUTPUTS:
        raise ValueError(f"outputs must be one of {OUTPUTS}, got {outputs!r}")
    net: nn.Module | None = None  # the network that answers, made at the first call

    def answering(x: torch.Tensor) -> nn.Module:
        nonlocal net
        if net is None:
            net = model
            if fold_batchnorm:
                with frozen(model), torch.no_grad():
                    net, _ = _fold(model, x[:2])
            if channels_last:
                net = copy.deepcopy(net) if net is model else net
                net.to(memory_format=torch.channels_last)
        return net

    def predict(images):
        x = torch.as_tensor(images)
        weight = next(model.parameters(), None)
        dev = weight.device if weight is not None else x.device
        x = x.to(dev, torch.float32)
        m = answering(x)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with frozen(m), torch.inference_mode():
            y = m(x).float()
            return (torch.softmax(y, dim=1) if outputs == "probs" else y).cpu()

    predict.outputs = outputs
    predict.categories = getattr(model, "categories", None)
    return predict


def optimize_masks_blackbox(
    predict: Predict,
    images: torch.Tensor | np.ndarray,
    targets: int | str | Sequence[int | str | None] | torch.Tensor | None = None,
    settings: MaskSetting | Sequence[MaskSetting] | None = None,
    config: OptimConfig | None = None,
    queries: int = 2000,
    samples: int = 8,
    sigma: float = 0.1,
    basis: int | None = None,
    outputs: str = "probs",
    batch_size: int | None = None,
    progress: bool = True,
    categories: Sequence[str] | None = None,
    keep_images: bool = True,
) -> UPXResult:
    """Optimize one mask per (image, setting) pair from ``predict``'s outputs alone.

    predict: ``[N, 3, H, W]`` float32 CPU tensor in [0, 1] -> ``[N, C]`` scores (a torch tensor
        or anything NumPy converts; ``np.asarray`` reads the images as an array). Called once
        on the clean images, once per iteration on every mask's 2 x ``samples`` perturbed
        images (in chunks of ``batch_size`` if given), once on the final perturbed images.
    images, targets, settings, config: as :func:`upx_core.method.optimizer.optimize_masks` (images
        may be a NumPy array). Names as targets need ``categories`` (or ``predict.categories``)
        with one name per output. config's blur, mask size, lr, objective, reduction, ftc_form
        and tv_root apply; amp, channels_last and fold_batchnorm concern a model we do not see.
    queries: the budget, forward evaluations per mask counting the clean and the final one;
        the run takes min(config.iterations, (queries - 2) // (2 samples)) iterations.
    samples, sigma: antithetic pairs per iteration and their standard deviation in mask units.
        The perturbed masks M +/- sigma u are clipped to [0, 1], so every queried image is a
        mixture of X and h(X), as the optimizer's are.
    basis: draw the directions from the ``basis`` x ``basis`` smooth fields of
        :func:`smooth_basis` instead of all m x m cells (``None``, the default: all cells).
    outputs: ``"probs"`` or ``"logits"``, what predict returns.

    With ``"probs"`` the logits f' that Eq. 4-7 are written on are unknown; the log-probabilities
    log p = f' - LSE(f') stand in for them. The f-terms are unchanged (softmax(log p) = p), but
    R_F-TC's mean shift of the non-target logits (and R_F-NTC's shift of the target's) moves by
    the change of LSE(f') between Q and X. That is still the natural choice: a black box's
    logits are defined only up to such a per-image constant (any f' + c gives the same p), and
    log p is the one member of that family it determines. Logits, where a box returns them, give
    the gradient optimizer's R_F exactly.

    Returns an :class:`UPXResult` as optimize_masks does, with ``queries`` ``[B, K]`` (used per
    mask) and ``config.iterations`` the iterations run. The history's tv, l1 are exact at each
    iteration's M; f_term, r_factors and prob are the means over its 2 x samples queried
    neighbours (spending no query on M itself), and total is their sum with the exact R_M.
    Seeded: mask j's directions come from a CPU generator seeded with its trial seed plus
    :data:`NES_SEED_OFFSET`, so the same call gives the same masks bit for bit on the CPU.
    """
    config = config or OptimConfig()
    settings = _settings(settings)
    if outputs not in OUTPUTS:
        raise ValueError(f"outputs must be one of {OUTPUTS}, got {outputs!r}")
    declared = getattr(predict, "outputs", None)
    if declared is not None and declared != outputs:
        raise ValueError(f"predict returns {declared} but outputs={outputs!r}; pass "
                         f"outputs={declared!r}")
    if not _positive_int(samples):
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    if not isinstance(sigma, numbers.Real) or not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    if not _positive_int(queries) or queries < 2 + 2 * samples:
        raise ValueError(f"queries={queries!r} is too small: one iteration with samples={samples} "
                         f"takes 2 + 2 * samples = {2 + 2 * samples} queries per mask")
    if basis is not None and (not _positive_int(basis) or basis > config.mask_size):
        raise ValueError(f"basis must be an integer from 1 to the mask size {config.mask_size}, "
                         f"got {basis!r}")
    if batch_size is not None and not _positive_int(batch_size):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if config.perturb_noise > 0:
        raise ValueError("perturb_noise is not supported by the query-only optimizer: noise on "
                         "the queried images would add to the finite differences; set it to 0")
    iterations = min(config.iterations, (queries - 2) // (2 * samples))
    images = _as_images(images, config)
    b, k = images.shape[0], len(settings)
    categories = categories if categories is not None else getattr(predict, "categories", None)
    image_targets = target_list(targets, b, categories)

    blurred = blur_for(images, config)
    clean = _scores(_query(predict, images, batch_size), outputs)
    job_target = job_targets(targets, image_targets, settings, clean, categories,
                             "categories=[...]")
    job_image = torch.arange(b).repeat_interleave(k)
    jobs = [settings[s] for s in torch.arange(k).repeat(b).tolist()]

    n = b * k
    used = torch.ones(n, dtype=torch.long)  # the clean query, shared by an image's K masks
    x, hx, y0 = images[job_image], blurred[job_image], clean[job_image]
    per_mask = _per_mask(jobs, job_target)
    mask = torch.stack([initial_mask(s.seed, config.mask_size, config.init_noise)
                        for s in jobs]).requires_grad_(True)
    opt = torch.optim.Adam([mask], lr=config.lr)
    gens = direction_generators(jobs)
    history = torch.empty(iterations, n, len(TERMS))
    # every per-mask tensor repeated for its 2 x samples perturbed copies, in the order
    # [mask, sign, sample]
    reps = 2 * samples
    xr, hxr, y0r = (t.repeat_interleave(reps, dim=0) for t in (x, hx, y0))
    per_query = {key: v.repeat_interleave(reps, dim=0) for key, v in per_mask.items()}
    size = tuple(images.shape[-2:])
    # the bar counts the queries a user pays for: every mask's perturbed images and its final
    # one; the clean images were asked once before (one per image, shared by its masks)
    bar = tqdm(total=b + n * (iterations * reps + 1), initial=b, disable=not progress,
               unit="query", desc=f"upx black-box {n} mask{'s' * (n != 1)}",
               leave=False)
    m = config.mask_size
    directions = None if basis is None else smooth_basis(basis, m)  # [m * m, basis^2]
    for it in range(iterations):
        u = draw_directions(gens, samples, m, directions)  # [n, samples, 1, m, m]
        with torch.no_grad():
            signed = sigma * torch.stack([u, -u], dim=1)  # [n, 2, samples, 1, m, m]
            pm = (mask.detach()[:, None, None] + signed).clamp_(0.0, 1.0).flatten(0, 2)
            q = perturb(xr, hxr, upsample_mask(pm, size))
            y = _scores(_query(predict, q, batch_size), outputs)
            used += reps
            terms = loss_terms(y, y0r, pm, config=config, **per_query)
            model_part = (terms["f_term"] + terms["r_factors"]).view(n, 2, samples)
            diff = (model_part[:, 0] - model_part[:, 1]).view(n, samples, 1, 1, 1)
            g = (diff * u).sum(dim=1) / (2 * sigma * samples)
        opt.zero_grad(set_to_none=True)
        r_m = mask_penalty(mask, per_mask["lambda1"], per_mask["lambda2"], per_mask["beta"],
                           config.reduction, config.tv_root)
        r_m.sum().backward()
        mask.grad.add_(g)
        with torch.no_grad():
            history[it] = _record(terms, mask, r_m, per_mask["beta"], config, n, reps)
        opt.step()
        with torch.no_grad():
            mask.clamp_(0.0, 1.0)
        check_finite(history[it: it + 1], mask, jobs, it)
        bar.update(n * reps)

    with torch.no_grad():  # the final probabilities
        final = mask.detach()
        q = perturb(x, hx, upsample_mask(final, size))
        probs_after = torch.softmax(_scores(_query(predict, q, batch_size), outputs), dim=1)
        used += 1
        bar.update(n)
    bar.close()
    return UPXResult.build(
        config=config.replace(iterations=iterations), settings=settings,
        targets=job_target.view(b, k), masks=final.clone(),
        probs_before=torch.softmax(clean, dim=1), probs_after=probs_after, history=history,
        perturbed=q if keep_images else None, image_size=size, categories=categories,
        device="cpu", queries=used.view(b, k),
    )


def direction_generators(jobs: Sequence[MaskSetting]) -> list[torch.Generator]:
    """One CPU generator per mask for its search directions, seeded with its trial seed plus
    :data:`NES_SEED_OFFSET`."""
    return [torch.Generator().manual_seed((s.seed + NES_SEED_OFFSET) % SEED_LIMIT) for s in jobs]


def draw_directions(gens: Sequence[torch.Generator], samples: int, m: int,
                    directions: torch.Tensor | None = None) -> torch.Tensor:
    """One iteration's search directions ``[n, samples, 1, m, m]``, ``samples`` per generator:
    N(0, I) over the m x m cells, or ``directions @ z`` with z ~ N(0, I) in the columns of a
    :func:`smooth_basis` ``directions`` ``[m * m, k * k]``."""
    if directions is None:
        return torch.stack([torch.randn(samples, 1, m, m, generator=g) for g in gens])
    z = torch.stack([torch.randn(samples, directions.shape[1], generator=g) for g in gens])
    return (z @ directions.T).view(len(gens), samples, 1, m, m)


def smooth_basis(k: int, m: int = 28) -> torch.Tensor:
    """An orthonormal basis ``[m * m, k * k]`` of the m x m masks that are a k x k grid
    bilinearly upsampled (as :func:`upsample_mask` upsamples M): the columns span those fields
    and ``B.T @ B`` is the identity. ``k = m`` gives a basis of every m x m mask."""
    grid = torch.eye(k * k, dtype=torch.float64).view(k * k, 1, k, k)
    fields = torch.nn.functional.interpolate(grid, size=(m, m), mode="bilinear",
                                             align_corners=False)
    q, _ = torch.linalg.qr(fields.view(k * k, m * m).T)  # float64: orthonormal to rounding
    return q.float()


def samples_for_budget(queries: int, iterations: int) -> int:
    """The antithetic pairs per iteration that spend ``queries`` per mask over ``iterations``
    (the clean and the final query included), at least one."""
    return max(1, (queries - 2) // (2 * iterations))


def _positive_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def _settings(settings) -> list[MaskSetting]:
    if settings is None:
        return [MaskSetting()]
    if isinstance(settings, MaskSetting):
        return [settings]
    settings = list(settings)
    if not settings:
        raise ValueError("settings is empty: give at least one MaskSetting")
    return settings


def _as_images(images, config: OptimConfig) -> torch.Tensor:
    """``[B, 3, H, W]`` float32 on the CPU, contiguous, checked as optimize_masks checks it."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor or NumPy array, got "
                         f"{type(images).__name__}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floats in [0, 1], got dtype {images.dtype}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise ValueError(f"images must be [B, 3, H, W] with B >= 1, got {tuple(images.shape)}")
    images = images.detach().to("cpu", torch.float32).contiguous()
    if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise ValueError("images must be finite and in [0, 1]")
    if min(images.shape[-2:]) < config.mask_size or \
            min(images.shape[-2:]) <= config.kernel_size // 2:
        raise ValueError(f"images are {images.shape[-1]}x{images.shape[-2]}, smaller than the "
                         f"{config.mask_size}x{config.mask_size} mask or the blur kernel")
    return images


def _query(predict: Predict, images: torch.Tensor, batch_size: int | None) -> torch.Tensor:
    """predict's outputs for ``images`` as one float32 CPU tensor ``[N, C]``, checked."""
    parts = []
    for chunk in images.split(batch_size or images.shape[0]):
        out = predict(chunk)
        out = out if isinstance(out, torch.Tensor) else torch.as_tensor(np.asarray(out))
        if out.dim() != 2 or out.shape[0] != chunk.shape[0] or out.shape[1] < 2:
            raise ValueError(f"predict must return [N, C] scores with C >= 2; for {chunk.shape[0]}"
                             f" images it returned shape {tuple(out.shape)}")
        parts.append(out.detach().to("cpu", torch.float32))
    out = torch.cat(parts)  # a new tensor, also when predict returned an inference tensor
    if not torch.isfinite(out).all():
        raise ValueError("predict returned NaN or Inf")
    return out


def _scores(out: torch.Tensor, outputs: str) -> torch.Tensor:
    """What ``loss_terms`` reads as the logits f': the logits, or the log-probabilities
    (probabilities renormalized defensively, zeros floored at the smallest float32)."""
    if outputs == "logits":
        return out
    if (out < 0).any():
        raise ValueError("predict returned negative probabilities; with logits pass "
                         "outputs='logits'")
    total = out.sum(dim=1, keepdim=True)
    if not (total > 0).all():
        raise ValueError("predict returned a row of probabilities summing to 0")
    return (out / total).clamp_min(torch.finfo(torch.float32).tiny).log()


def _per_mask(jobs: list[MaskSetting], job_target: torch.Tensor) -> dict[str, torch.Tensor]:
    """loss_terms' per-mask arguments: target, mode index and the setting's weights."""
    out = {"target": job_target, "mode": torch.tensor([MODES.index(s.mode) for s in jobs])}
    for f in ("lambda1", "lambda2", "beta", "gamma"):
        out[f] = torch.tensor([getattr(s, f) for s in jobs], dtype=torch.float32)
    return out


def _record(terms, mask, r_m, beta, config, n, reps) -> torch.Tensor:
    """One iteration's TERMS ``[n, len(TERMS)]``: the model's terms averaged over the queried
    neighbours, TV and L1 exact at M."""
    mean = {t: terms[t].view(n, reps).mean(dim=1) for t in ("f_term", "r_factors", "prob")}
    mean["tv"] = tv_norm(mask, beta, config.reduction, root=config.tv_root)
    mean["l1"] = l1_norm(mask, config.reduction)
    mean["total"] = mean["f_term"] + mean["r_factors"] + r_m
    return torch.stack([mean[t] for t in TERMS], dim=1)
