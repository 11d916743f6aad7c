"""Evaluation metrics: Eq. 8, the undesirable-pixel ratio of Table 2, trial consistency, and the
top fraction of a map that the area-matched phi blurs."""

from __future__ import annotations

import itertools

import torch

__all__ = ["relative_improvement", "undesirable_pixel_ratio", "found_mask", "pearson",
           "consistency_pairs", "consistency", "top_fraction_mask"]

# A mask "finds" undesirable pixels when it raises the target by at least this phi (Eq. 8, %).
FOUND_PHI = 10.0


def relative_improvement(prob_before, prob_after) -> torch.Tensor:
    """Eq. 8 for each image: (f_h(Q) - f_h(X)) / (1 - f_h(X)) * 100; the paper's phi is its
    mean over images.

    The share of the residual probability 1 - f_h(X) that the perturbation won; 100 means the
    class reached probability 1, negative values mean it fell. An image already at f_h(X) = 1
    has nothing to improve and scores 0. A NaN probability (before or after) gives NaN, never
    a score that looks measured.
    """
    before = torch.as_tensor(prob_before, dtype=torch.float64)
    after = torch.as_tensor(prob_after, dtype=torch.float64)
    residual = 1.0 - before
    safe = torch.where(residual > 0, residual, torch.ones_like(residual))
    out = torch.where(residual > 0, (after - before) / safe * 100.0, torch.zeros_like(residual))
    return torch.where(torch.isnan(before) | torch.isnan(after),
                       torch.full_like(out, float("nan")), out)


def undesirable_pixel_ratio(mask_up: torch.Tensor, threshold: float = 0.6) -> torch.Tensor:
    """Table 2: the fraction of pixels whose undesirable magnitude 1 - M' exceeds ``threshold``.

    ``mask_up`` is M' at image size, ``[..., H, W]``; returns one ratio per mask (a fraction,
    not a percentage: the paper's 0.0373 reads as 3.73 %). The paper's "magnitude" is taken as
    1 - M', how strongly a pixel is replaced by its blur.
    """
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return ((1.0 - mask_up) > threshold).flatten(-2).float().mean(dim=-1)


def found_mask(ratio, relative_improvement, min_phi: float = FOUND_PHI):
    """Whether a mask found undesirable pixels: at least one pixel past Table 2's threshold
    (``ratio > 0``) and the target raised by ``relative_improvement >= min_phi`` (Eq. 8, in %).

    Elementwise over tensors, arrays or pandas Series (returns the same kind); the rule behind
    the default objective of ``upx explain`` (chapter 7, benchmarks/default_objective.py).
    """
    return (ratio > 0) & (relative_improvement >= min_phi)


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson r of two maps of the same size, flattened, in float64; NaN when either is
    constant (no correlation is defined)."""
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    denom = a.norm() * b.norm()
    return float((a @ b) / denom) if denom > 0 else float("nan")


def consistency_pairs(masks_up: torch.Tensor, threshold: float = 0.6) -> list[dict]:
    """Every pair of T trials' masks compared, as the figures are read and as numbers.

    ``masks_up``: ``[T, ..., H, W]`` upsampled masks of the same image, setting and target,
    differing only in their trial. One dict per pair ``(i, j)``, ``i < j``: ``pearson``, the
    correlation of their 1 - M' maps (NaN when either is constant: no correlation is defined);
    ``iou``, the intersection over union of their regions 1 - M' > ``threshold`` (NaN when both
    regions are empty: two masks that found nothing agree on nothing); ``both_empty``.
    """
    if masks_up.shape[0] < 2:
        raise ValueError("consistency needs at least two trials")
    flat = (1.0 - masks_up).flatten(1).double()
    regions = flat > threshold
    pairs = []
    for i, j in itertools.combinations(range(flat.shape[0]), 2):
        union = (regions[i] | regions[j]).sum()
        inter = (regions[i] & regions[j]).sum()
        pairs.append({"i": i, "j": j, "pearson": pearson(flat[i], flat[j]),
                      "iou": float(inter / union) if union > 0 else float("nan"),
                      "both_empty": bool(union == 0)})
    return pairs


def consistency(masks_up: torch.Tensor, threshold: float = 0.6) -> dict[str, float]:
    """How alike T trials' masks are: mean pairwise Pearson r, and IoU of thresholded masks.

    The means of :func:`consistency_pairs`: a pair of constant masks has no defined correlation
    and is skipped; a pair whose thresholded regions are both empty counts as IoU 1 (they
    agree). To leave those pairs out instead, average :func:`consistency_pairs` yourself.
    """
    pairs = consistency_pairs(masks_up, threshold)
    rs = [p["pearson"] for p in pairs if p["pearson"] == p["pearson"]]
    ious = [1.0 if p["both_empty"] else p["iou"] for p in pairs]
    return {
        "pearson": sum(rs) / len(rs) if rs else float("nan"),
        "iou": sum(ious) / len(ious),
    }


def top_fraction_mask(maps: torch.Tensor, fraction: float) -> torch.Tensor:
    """The binary region ``[..., H, W]`` (bool) of the ``fraction`` of each map's pixels ranked
    highest: round(fraction x H x W) pixels, at least one. Ties go to the earlier pixel in
    row-major order (a stable sort), so a constant map selects its first rows, not a random set.
    The area-matched phi (:func:`upx_core.method.baselines.area_matched_phi`) blurs this region.
    """
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) \
            or not 0 < fraction <= 1:
        raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}")
    maps = torch.as_tensor(maps)
    if maps.dim() < 2 or maps.shape[-1] * maps.shape[-2] == 0:
        raise ValueError(f"maps must be [..., H, W], got shape {tuple(maps.shape)}")
    flat = maps.flatten(-2)
    if torch.isnan(flat).any():
        raise ValueError("maps contain NaN: a NaN pixel has no rank")
    k = max(1, round(fraction * flat.shape[-1]))
    order = torch.sort(flat, dim=-1, descending=True, stable=True).indices[..., :k]
    region = torch.zeros_like(flat, dtype=torch.bool).scatter_(-1, order, True)
    return region.view(maps.shape)
