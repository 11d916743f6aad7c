"""The paper's equations, one function each, in [0, 1] pixel space.

Notation follows Kang, Jung, Lee: X is the image, h(X) its Gaussian blur, M the coarse mask
(1 keeps a pixel, 0 replaces it by its blur), M' = Inp(M) the mask upsampled to the image,
y = f'(.) the pre-softmax logits and f(.) = softmax(y) the class probabilities.
Every function is batched over a leading dimension N (one entry per mask).
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .modes import MODE_REGISTRY

if TYPE_CHECKING:  # pragma: no cover
    from .config import OptimConfig

__all__ = [
    "blur",
    "gaussian_kernel",
    "median_blur",
    "blur_for",
    "upsample_mask",
    "perturb",
    "tv_norm",
    "l1_norm",
    "mask_penalty",
    "ftc_penalty",
    "fntc_penalty",
    "logsumexp_others",
    "loss_terms",
]


def gaussian_kernel(kernel_size: int, sigma: float, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """The paper's g_{sigma,s} in one dimension: ``kernel_size`` weights summing to 1,
    proportional to exp(-t^2 / (2 sigma^2)) at t = -(s-1)/2 .. (s-1)/2.

    Computed as torchvision's ``gaussian_blur`` computes it (positions scaled by 1/sqrt(2),
    then a softmax), operation for operation, so that :func:`blur` gives its numbers bit for
    bit without importing torchvision (about a second of start-up, for one kernel).
    """
    lim = (kernel_size - 1) / (2.0 * math.sqrt(2.0))
    x = torch.linspace(-lim, lim, steps=kernel_size, dtype=dtype, device=device)
    return torch.softmax(x.div(sigma).pow(2).neg(), dim=0)


def blur(images: torch.Tensor, sigma: float = 5.0, kernel_size: int = 11) -> torch.Tensor:
    """h(X) = g_{sigma,s}(X): Gaussian blur of a batch ``[N, C, H, W]`` (reflect padding).

    The 2-D kernel is the outer product of :func:`gaussian_kernel` with itself, applied per
    channel as one ``conv2d``: the same operations, in the same order, as torchvision's
    ``gaussian_blur`` (``tests/test_equations.py`` holds them bit-identical). The optimizer
    computes it once per image, not once per iteration, because X does not change.
    """
    if kernel_size <= 0 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    if images.numel() == 0:
        return images
    shape = images.shape
    # torchvision's shapes: [C, H, W] or any leading dimensions, flattened into one batch
    x = images.unsqueeze(0) if images.ndim == 3 else (
        images.reshape((-1,) + shape[-3:]) if images.ndim > 4 else images)
    fp = torch.is_floating_point(x)
    g = gaussian_kernel(kernel_size, sigma, x.dtype if fp else torch.float32, x.device)
    kernel = (g.unsqueeze(-1) * g).expand(shape[-3], 1, kernel_size, kernel_size)
    pad = kernel_size // 2
    out = F.conv2d(F.pad(x if fp else x.to(torch.float32), [pad] * 4, mode="reflect"), kernel,
                   groups=shape[-3])
    out = out.squeeze(0) if images.ndim == 3 else out.reshape(shape) if images.ndim > 4 else out
    return out if fp else out.round_().to(images.dtype)


def median_blur(images: torch.Tensor, kernel_size: int = 11) -> torch.Tensor:
    """The median of each pixel's ``kernel_size`` x ``kernel_size`` neighbourhood, per channel,
    of a batch ``[N, C, H, W]`` (reflect padding, as :func:`blur`; ``kernel_size`` odd).

    With an odd kernel the median is one of the window's values: an isolated impulse is removed
    and a constant image stays itself. Part of jacobgil's reading of h(X) (see :func:`blur_for`);
    OpenCV's ``medianBlur`` replicates the border instead, which changes only the border pixels.
    """
    if kernel_size <= 0 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
    pad = kernel_size // 2
    out = torch.empty_like(images)
    for i in range(images.shape[0]):  # one image at a time: its windows take k^2 x its memory
        x = images[i:i + 1]
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect") if pad else x
        windows = padded.unfold(2, kernel_size, 1).unfold(3, kernel_size, 1)
        out[i:i + 1] = windows.reshape(*x.shape, kernel_size**2).median(dim=-1).values
    return out


def blur_for(images: torch.Tensor, config: OptimConfig) -> torch.Tensor:
    """h(X) as ``config`` reads it: every part of upx that blurs with a config calls this.

    ``config.blur="gaussian"`` is :func:`blur` (the paper); ``"gaussian+median"`` is the mean
    of that Gaussian blur and :func:`median_blur` with the same kernel size, as jacobgil's
    pytorch-explain-black-box does ((GaussianBlur(11, 5) + medianBlur(11)) / 2).
    """
    gaussian = blur(images, config.sigma, config.kernel_size)
    if config.blur == "gaussian":
        return gaussian
    if config.blur == "gaussian+median":
        return (gaussian + median_blur(images, config.kernel_size)) / 2
    raise ValueError(f"blur must be 'gaussian' or 'gaussian+median', got {config.blur!r}")


def upsample_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """M' = Inp(M): bilinear interpolation of a coarse mask ``[N, 1, m, m]`` to ``size``."""
    return F.interpolate(mask, size=size, mode="bilinear", align_corners=False)


def perturb(images: torch.Tensor, blurred: torch.Tensor, mask_up: torch.Tensor) -> torch.Tensor:
    """Eq. 1: Q(X; M', h) = X * M' + h(X) * (1 - M').

    ``mask_up`` is M' (already upsampled, ``[N, 1, H, W]``); M' = 1 gives X, M' = 0 gives h(X).
    """
    return images * mask_up + blurred * (1.0 - mask_up)


def tv_norm(mask: torch.Tensor, beta: float | torch.Tensor = 2.0, reduction: str = "mean",
            root: bool = True):
    """Total variation of Eq. 3, per mask.

    TV_beta(M) = sum_{i,j} ( |M_{i+1,j} - M_{i,j}|^beta + |M_{i,j+1} - M_{i,j}|^beta )^(1/beta)

    taken over the (m-1) x (m-1) cells where both differences exist. The paper writes the
    differences without absolute values; we take them so that odd or fractional beta stay real.
    ``reduction="mean"`` divides by the number of cells (see the implementation notes: with the
    paper's lambda1 = 1.7 a summed TV freezes the mask); ``"sum"`` is the paper's literal form.
    The 1/beta root is taken only where the inner sum is positive, so a flat mask has TV 0 and a
    finite (zero) gradient instead of the NaN of d/dx sqrt(x) at 0.
    ``root=False`` drops the 1/beta root: the mean (or sum) of |dy|^beta + |dx|^beta over the
    same cells, as Fong & Vedaldi's TV is taken by jacobgil's pytorch-explain-black-box (his
    averages the m(m-1) row and the m(m-1) column differences separately, which adds the last
    row's and column's differences that no cell here has).
    """
    beta_t = torch.as_tensor(beta, dtype=mask.dtype, device=mask.device).reshape(-1, 1, 1, 1)
    dy = (mask[..., 1:, :-1] - mask[..., :-1, :-1]).abs()
    dx = (mask[..., :-1, 1:] - mask[..., :-1, :-1]).abs()
    inner = dy.pow(beta_t) + dx.pow(beta_t)
    if not root:
        return _reduce(inner, reduction)
    positive = inner > 0
    tiny = torch.finfo(mask.dtype).tiny
    rooted = torch.where(positive, inner.clamp_min(tiny).pow(1.0 / beta_t),
                         torch.zeros_like(inner))
    return _reduce(rooted, reduction)


def l1_norm(mask: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """||1 - M||_1 of Eq. 3, per mask: the amount of blurring. ``"sum"`` is the paper's form."""
    return _reduce((1.0 - mask).abs(), reduction)


def mask_penalty(
    mask: torch.Tensor,
    lambda1: float | torch.Tensor = 1.7,
    lambda2: float | torch.Tensor = 3.0,
    beta: float | torch.Tensor = 2.0,
    reduction: str = "mean",
    tv_root: bool = True,
) -> torch.Tensor:
    """Eq. 3: R_M = lambda1 * TV_beta(M) + lambda2 * ||1 - M||_1, per mask ``[N]``
    (``tv_root``: see :func:`tv_norm`'s ``root``)."""
    return (lambda1 * tv_norm(mask, beta, reduction, root=tv_root)
            + lambda2 * l1_norm(mask, reduction))


def ftc_penalty(
    logits: torch.Tensor,
    logits_clean: torch.Tensor,
    target: torch.Tensor,
    gamma: float | torch.Tensor = 0.3,
    form: str = "mean",
) -> torch.Tensor:
    """Eq. 4: R_F-TC = gamma * || 1/(N-1) sum_{i != k} ( f'_i(Q) - f'_i(X) ) ||_2, per mask.

    Penalizes moving the non-target logits, so the target probability can rise only through the
    target's own logit ("factors for the target class"). ``form="mean"`` is the literal reading:
    the sum sits inside the norm, so the norm is the absolute mean shift of the N - 1 non-target
    logits. ``form="vector"`` reads it as gamma/(N-1) times the L2 norm of the vector of shifts,
    which also stops non-target logits from moving in opposite directions.
    """
    diff = logits - logits_clean
    keep = torch.ones_like(diff).scatter_(1, target.view(-1, 1), 0.0)
    n_other = diff.shape[1] - 1
    if form == "mean":
        value = ((diff * keep).sum(dim=1) / n_other).abs()
    elif form == "vector":
        value = (diff * keep).norm(dim=1) / n_other
    else:
        raise ValueError(f"ftc form must be 'mean' or 'vector', got {form!r}")
    return gamma * value


def fntc_penalty(
    logits: torch.Tensor,
    logits_clean: torch.Tensor,
    target: torch.Tensor,
    gamma: float | torch.Tensor = 0.3,
    norm: str = "abs",
) -> torch.Tensor:
    """Eq. 6: R_F-NTC = gamma * || f'_k(Q) - f'_k(X) ||_2, per mask.

    Penalizes moving the target's own logit, so the target probability can rise only by
    lowering the other classes ("factors for non-target classes"). The norm of the scalar
    dy_k = f'_k(Q) - f'_k(X) reads two ways: ``norm="abs"``, |dy_k| (the L2 norm itself), whose
    slope is gamma on either side of 0, so the target's own gain must pull harder than gamma to
    move y_k at all; ``norm="squared"``, dy_k^2 (the squared norm, as in a least-squares
    penalty), whose slope is 0 at dy_k = 0 and grows with the shift.
    """
    idx = target.view(-1, 1)
    shift = (logits.gather(1, idx) - logits_clean.gather(1, idx)).squeeze(1)
    if norm == "abs":
        return gamma * shift.abs()
    if norm == "squared":
        return gamma * shift.square()
    raise ValueError(f"fntc norm must be 'abs' or 'squared', got {norm!r}")


def logsumexp_others(values: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """LSE_{i != k}(v_i) = log sum_{i != k} exp(v_i), per row of ``values`` ``[N, C]``.

    On logits y it is the log-odds' second part, log(f_k / (1 - f_k)) = y_k - LSE_{i != k}(y_i);
    on log-probabilities it is log(1 - f_k), computed without forming 1 - f_k.
    """
    return torch.logsumexp(values.scatter(1, target.view(-1, 1), float("-inf")), dim=1)


class _Parts:
    """:class:`~upx_core.method.modes.LossParts` for one batch: each regularizer is computed on
    its first call, once, whichever modes call it."""

    def __init__(self, gain: torch.Tensor, others: torch.Tensor, ftc, fntc) -> None:
        self.gain, self.others = gain, others
        self.ftc, self.fntc = functools.cache(ftc), functools.cache(fntc)


def loss_terms(
    logits: torch.Tensor,
    logits_clean: torch.Tensor,
    mask: torch.Tensor,
    target: torch.Tensor,
    mode: torch.Tensor,
    lambda1: torch.Tensor,
    lambda2: torch.Tensor,
    beta: torch.Tensor,
    gamma: torch.Tensor,
    config: OptimConfig,
) -> dict[str, torch.Tensor]:
    """Eq. 3, 5 and 7 per mask: the loss each mask minimizes, in the parts the history records.

    One batch may mix modes (``mode`` holds each mask's index in
    :data:`~upx_core.method.modes.MODE_REGISTRY`, whose entries give the mode's parts):

    - baseline, Eq. 3: -f_k(Q) + R_M
    - ftc, Eq. 5: -f_k(Q) + R_M + R_F-TC
    - fntc, Eq. 7: sum_{i != k} f_i(Q) + R_M + R_F-NTC
    - deletion, ref. [3]: f_k(Q) + R_M
    With ``config.objective="log_prob"`` each f becomes its logarithm (log f_k,
    log sum_{i != k} f_i); with ``"logit"`` f_k becomes the pre-softmax score y_k and
    sum_{i != k} f_i becomes LSE_{i != k} y_i, the log-sum-exp of the other logits (log_prob's
    terms without the normalizer log sum_i exp(y_i)). ``config.tv_root`` picks TV's form
    (:func:`tv_norm`). Returns ``[N]`` tensors named as :data:`upx_core.method.result.TERMS`:
    ``f_term`` (the first term), ``tv`` and ``l1`` (R_M's two norms, unweighted), ``r_factors``
    (R_F-TC or R_F-NTC, zero for the other modes), ``total`` and ``prob`` (f_k(Q)).
    """
    logits = logits.float()
    idx = target.view(-1, 1)
    log_p = torch.log_softmax(logits, dim=1)
    log_pk = log_p.gather(1, idx).squeeze(1)
    # log sum_{i != k} p_i, computed without forming 1 - p_k, which cancels badly.
    log_others = logsumexp_others(log_p, target)
    if config.objective == "prob":
        gain, others = log_pk.exp(), log_others.exp()
    elif config.objective == "logit":
        gain, others = logits.gather(1, idx).squeeze(1), logsumexp_others(logits, target)
    else:
        gain, others = log_pk, log_others
    parts = _Parts(gain, others, lambda: ftc_penalty(logits, logits_clean, target, gamma,
                                                     config.ftc_form),
                   lambda: fntc_penalty(logits, logits_clean, target, gamma, config.fntc_norm))
    f_term = reg = torch.zeros_like(gain)
    for code, entry in enumerate(MODE_REGISTRY.values()):  # each mask takes its own mode's
        term, penalty = entry.loss(parts)
        f_term = torch.where(mode == code, term, f_term)
        if penalty is not None:
            reg = torch.where(mode == code, penalty, reg)
    r_m = mask_penalty(mask, lambda1, lambda2, beta, config.reduction, config.tv_root)
    return {
        "f_term": f_term,
        # R_M's parts, for the loss history
        "tv": tv_norm(mask, beta, config.reduction, root=config.tv_root),
        "l1": l1_norm(mask, config.reduction),
        "r_factors": reg,
        "total": f_term + r_m + reg,
        "prob": log_pk.exp(),
    }


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    flat = values.flatten(1)
    if reduction == "mean":
        return flat.mean(dim=1)
    if reduction == "sum":
        return flat.sum(dim=1)
    raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
