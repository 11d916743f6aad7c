"""The query-only optimizer: the same masks and objectives from forward calls alone (issue 11).

A black-box classifier (an ONNX session, an HTTP endpoint, a model whose weights we may not
differentiate) answers ``predict(images) -> scores`` and nothing else. The mask M, the loss each
mode minimizes and the Adam loop are those of :func:`upx_core.method.optimizer.optimize_masks`
(:mod:`.loop`); only the gradient differs: finite differences of the loss along random
directions, from ``predict``'s answers, read by one of two estimators (:data:`ESTIMATORS`): a
running estimate corrected at each step (:class:`~upx_core.method.tracking.TrackedDifferences`,
the default) or antithetic differences averaged afresh
(:class:`~upx_core.method.query.FiniteDifferences`); each says how. This module turns
``predict`` into the scores the loss reads, and a query budget into iterations.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .config import AMP_AUTO, DEFAULT_ESTIMATOR, ESTIMATORS, MaskSetting, OptimConfig
from .equations import blur_for
from .fold import fold_batchnorm as _fold
from .loop import as_settings, check_images, job_targets, optimize, target_list
from .models import MODEL_OUTPUTS, ProbsAsLogits, looks_like_probabilities
from .query import FiniteDifferences, smooth_basis
from .result import UPXResult
from .runtime import frozen
from .tracking import DEFAULT_DECAY, TrackedDifferences

__all__ = ["ESTIMATORS", "OUTPUTS", "cost_per_iteration", "logit_scores",
           "optimize_masks_blackbox", "query_outputs", "samples_for_budget", "smooth_basis",
           "torch_predictor"]

# What predict returns: class probabilities (a softmax already applied) or pre-softmax logits.
OUTPUTS = ("probs", "logits")

Predict = Callable[[torch.Tensor], "torch.Tensor | np.ndarray"]


def torch_predictor(model: nn.Module, outputs: str = "probs", fold_batchnorm: bool = True,
                    channels_last: bool = False, model_outputs: str = "logits") -> Predict:
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

    ``model_outputs``: what ``model`` itself returns, ``"logits"`` (default) or ``"probs"`` (a
    softmax at its end; its ``log p`` then stands for the logits, as
    :class:`~upx_core.method.models.ProbsAsLogits` reads it). On the first call, outputs that
    look like probabilities (non-negative rows summing to 1) from a model declared to return
    logits are a one-line ValueError: a second softmax would flatten them silently.
    """
    if outputs not in OUTPUTS:
        raise ValueError(f"outputs must be one of {OUTPUTS}, got {outputs!r}")
    if model_outputs not in MODEL_OUTPUTS:
        raise ValueError(f"model_outputs must be one of {MODEL_OUTPUTS}, got {model_outputs!r}")
    if model_outputs == "probs":
        model = ProbsAsLogits(model)  # log p stands for the logits, as in the white-box optimizer
    checked = model_outputs == "probs"  # only a model declared to give logits is checked
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
        nonlocal checked
        with frozen(m), torch.inference_mode():
            y = m(x).float()
            if not checked:
                if looks_like_probabilities(y):
                    raise ValueError(
                        "the model's outputs are probabilities (non-negative, rows sum to 1), "
                        "not logits: pass torch_predictor(model, model_outputs='probs')")
                checked = True
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
    estimator: str = DEFAULT_ESTIMATOR,
    decay: float = DEFAULT_DECAY,
) -> UPXResult:
    """Optimize one mask per (image, setting) pair from ``predict``'s outputs alone.

    predict: ``[N, 3, H, W]`` float32 CPU tensor in [0, 1] -> ``[N, C]`` scores (a torch tensor
        or anything NumPy converts; ``np.asarray`` reads the images as an array). Called once
        on the clean images, once per iteration on every mask's queried masks (in chunks of
        ``batch_size`` if given), once on the final perturbed images.
    images, targets, settings, config: as :func:`upx_core.method.optimizer.optimize_masks` (images
        may be a NumPy array). Names as targets need ``categories`` (or ``predict.categories``)
        with one name per output. config's blur, mask size, lr, objective, reduction, ftc_form
        and tv_root apply; amp, channels_last and fold_batchnorm concern a model we do not see.
    queries: the budget, forward evaluations per mask counting the clean and the final one;
        the run takes min(config.iterations, (queries - 2) // cost) iterations, cost = the
        queries per iteration (``samples + 1`` tracking, ``2 samples`` antithetic).
    samples, sigma: search directions per iteration and their standard deviation in mask
        units. The perturbed masks M + sigma u (and M - sigma u) are clipped to [0, 1], so every
        queried image is a mixture of X and h(X), as the optimizer's are.
    estimator: ``"tracking"`` (default): a running estimate of the gradient corrected by one
        centre query and ``samples`` forward differences per iteration, forgetting by ``decay``
        per iteration (:class:`~upx_core.method.tracking.TrackedDifferences`); ``"antithetic"``:
        ``samples`` antithetic pairs averaged afresh at each iteration
        (:class:`~upx_core.method.query.FiniteDifferences`). Chapter 9 compares them.
    basis: (antithetic only) draw the directions from the ``basis`` x ``basis`` smooth fields of
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
    iteration's M; f_term, r_factors and prob are those of the centre query (tracking) or the
    means over the 2 x samples queried neighbours (antithetic, which spends no query on M), and
    total is their sum with the exact R_M.
    Seeded: mask j's directions come from a CPU generator seeded with its trial seed plus
    :data:`~upx_core.method.query.NES_SEED_OFFSET`, so the same call gives the same masks bit
    for bit on the CPU.
    """
    config = config or OptimConfig()
    if config.amp == AMP_AUTO:  # the black box's arithmetic is its own: nothing to choose here
        config = dataclasses.replace(config, amp=None)
    settings = as_settings(settings)
    if outputs not in OUTPUTS:
        raise ValueError(f"outputs must be one of {OUTPUTS}, got {outputs!r}")
    declared = getattr(predict, "outputs", None)
    if declared is not None and declared != outputs:
        raise ValueError(f"predict returns {declared} but outputs={outputs!r}; pass "
                         f"outputs={declared!r}")
    if not _positive_int(samples):
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if not isinstance(decay, numbers.Real) or not 0 < decay <= 1:
        raise ValueError(f"decay must be a number in (0, 1], got {decay!r}")
    if basis is not None and estimator != "antithetic":
        raise ValueError("basis applies to estimator='antithetic' only")
    if not isinstance(sigma, numbers.Real) or not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    reps = cost_per_iteration(samples, estimator)
    if not _positive_int(queries) or queries < 2 + reps:
        raise ValueError(f"queries={queries!r} is too small: one {estimator} iteration with "
                         f"samples={samples} takes {2 + reps} queries per mask")
    if basis is not None and (not _positive_int(basis) or basis > config.mask_size):
        raise ValueError(f"basis must be an integer from 1 to the mask size {config.mask_size}, "
                         f"got {basis!r}")
    if batch_size is not None and not _positive_int(batch_size):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if config.perturb_noise > 0:
        raise ValueError("perturb_noise is not supported by the query-only optimizer: noise on "
                         "the queried images would add to the finite differences; set it to 0")
    iterations = min(config.iterations, (queries - 2) // reps)
    images = check_images(images, config, arrays=True).detach().to("cpu", torch.float32)
    images = images.contiguous()  # one memory layout, as optimize_masks has
    b, k = images.shape[0], len(settings)
    categories = categories if categories is not None else getattr(predict, "categories", None)
    image_targets = target_list(targets, b, categories)

    blurred = blur_for(images, config)
    clean = logit_scores(query_outputs(predict, images, batch_size), outputs)
    job_target = job_targets(targets, image_targets, settings, clean, categories,
                             "categories=[...]")
    n = b * k
    # the bar counts the queries a user pays for: every mask's perturbed images and its final
    # one; the clean images were asked once before (one per image, shared by its masks)
    bar = tqdm(total=b + n * (iterations * reps + 1), initial=b, disable=not progress,
               unit="query", desc=f"upx black-box {n} mask{'s' * (n != 1)}",
               leave=False)

    def ask(q: torch.Tensor) -> torch.Tensor:
        return logit_scores(query_outputs(predict, q, batch_size), outputs)

    def estimator_for(jobs):
        if estimator == "tracking":
            return TrackedDifferences(ask, jobs, config, samples, sigma, decay)
        return FiniteDifferences(ask, jobs, config, samples, sigma, basis)

    result = optimize(
        images, blurred, clean, settings, job_target, config, estimator_for,
        iterations=iterations, check_every=1, bar=bar, keep_images=keep_images,
        categories=categories, device="cpu",
        # the clean query (shared by an image's K masks), reps per iteration, the final
        queries=torch.full((b, k), 2 + iterations * reps, dtype=torch.long))
    bar.update(n)
    bar.close()
    return result


def cost_per_iteration(samples: int, estimator: str = DEFAULT_ESTIMATOR) -> int:
    """The queries one mask spends per iteration with ``samples`` directions: ``samples + 1``
    (tracking: a shared centre) or ``2 samples`` (antithetic pairs)."""
    return samples + 1 if estimator == "tracking" else 2 * samples


def samples_for_budget(queries: int, iterations: int,
                       estimator: str = DEFAULT_ESTIMATOR) -> int:
    """The search directions per iteration that spend ``queries`` per mask over ``iterations``
    (the clean and the final query included), at least one: forward differences beside a
    centre query (tracking) or antithetic pairs."""
    per_iteration = (queries - 2) // iterations
    return max(1, per_iteration - 1 if estimator == "tracking" else per_iteration // 2)


def _positive_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def query_outputs(predict: Predict, images: torch.Tensor,
                  batch_size: int | None) -> torch.Tensor:
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


def logit_scores(out: torch.Tensor, outputs: str) -> torch.Tensor:
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
