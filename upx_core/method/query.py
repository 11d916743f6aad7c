"""The query-only gradient: antithetic finite differences along random directions (issue 11).

The loss splits into a part that needs the model, the f-term plus R_F-TC or R_F-NTC, and
R_M = lambda1 TV(M) + lambda2 ||1 - M||_1 (Eq. 3), which does not. The first part's gradient is
estimated from queries by antithetic Gaussian smoothing (NES, Wierstra et al.; Ilyas et al.
2018): for P = ``samples`` directions u_p ~ N(0, I) of the m x m mask,

    g = sum_p (L(M + sigma u_p) - L(M - sigma u_p)) u_p / (2 sigma P),

the gradient of L smoothed by a Gaussian of width sigma. R_M's gradient is exact (autograd on
the mask alone). Adam receives g + grad R_M, as the white-box optimizer's Adam receives grad L.

The estimator's variance grows with the number of directions it has to cover: m^2 = 784 for
the 28 x 28 mask. With a smooth basis B (:func:`smooth_basis`) the directions are u_p = B z_p,
z_p ~ N(0, I_k^2), where the columns of B are an orthonormal basis of the bilinearly upsampled
k x k fields: g then estimates B B^T grad L, the gradient's projection onto smooth masks, from
k^2 dimensions instead of m^2 (Ilyas et al. 2019 and Tu et al. 2019 search in such a reduced
space). The mask itself and R_M stay on the full m x m grid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .config import SEED_LIMIT, MaskSetting, OptimConfig
from .equations import l1_norm, loss_terms, mask_penalty, perturb, tv_norm, upsample_mask
from .loop import Jobs
from .result import TERMS

__all__ = ["MODEL_TERMS", "NES_SEED_OFFSET", "FiniteDifferences", "QueriedMasks",
           "add_exact_penalty", "direction_generators", "draw_directions", "record_terms",
           "smooth_basis"]

# Added to a trial's seed for its stream of search directions u_p, so that they are not drawn
# from the stream of its start M0 nor from gradient.NOISE_SEED_OFFSET's (the PCG multiplier).
NES_SEED_OFFSET = 0x5851F42D4C957F2D
# The history's terms that come from the model's answers (the rest are exact at M).
MODEL_TERMS = ("f_term", "r_factors", "prob")


class FiniteDifferences:
    """g + grad R_M for one chunk of masks, from ``ask``: images ``[N, 3, H, W]`` -> the scores
    ``[N, C]`` that loss_terms reads (logits, or log-probabilities).

    Per iteration each mask's 2 x ``samples`` neighbours M +/- sigma u_p, clipped to [0, 1] (so
    every queried image is a mixture of X and h(X), as the optimizer's are), go to ``ask`` in
    one call. ``basis``: directions from :func:`smooth_basis` ``(basis, m)``, else all cells.
    Mask j's directions come from a CPU generator seeded with its trial seed plus
    :data:`NES_SEED_OFFSET`, so the same call gives the same masks bit for bit on the CPU.
    """

    def __init__(self, ask: Callable[[torch.Tensor], torch.Tensor], jobs: Jobs,
                 config: OptimConfig, samples: int, sigma: float,
                 basis: int | None = None) -> None:
        self.ask, self.jobs, self.config = ask, jobs, config
        self.samples, self.sigma = samples, sigma
        self.cost = 2 * samples  # queries per mask and iteration
        # each mask's 2 x samples neighbours, in the order [mask, sign, sample]
        self.queried = QueriedMasks(ask, jobs, config, self.cost)
        self.gens = direction_generators(jobs.settings)
        self.directions = None if basis is None else smooth_basis(basis, config.mask_size)

    def gradient(self, mask: torch.Tensor, it: int) -> torch.Tensor:
        config, weights, samples, sigma = self.config, self.jobs.weights, self.samples, self.sigma
        n = mask.shape[0]
        u = draw_directions(self.gens, samples, config.mask_size, self.directions)
        with torch.no_grad():
            signed = sigma * torch.stack([u, -u], dim=1)  # [n, 2, samples, 1, m, m]
            pm = (mask.detach()[:, None, None] + signed).clamp_(0.0, 1.0).flatten(0, 2)
            terms = self.queried.terms(pm)
            model_part = (terms["f_term"] + terms["r_factors"]).view(n, 2, samples)
            diff = (model_part[:, 0] - model_part[:, 1]).view(n, samples, 1, 1, 1)
            g = (diff * u).sum(dim=1) / (2 * sigma * samples)
        r_m = add_exact_penalty(mask, g, weights, config)
        with torch.no_grad():  # no query is spent on M itself: the neighbours' mean
            at = {t: terms[t].view(n, self.cost).mean(dim=1) for t in MODEL_TERMS}
            return record_terms(at, mask, r_m, weights["beta"], config)

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        return self.ask(images)


class QueriedMasks:
    """One chunk's per-mask constants repeated for the ``reps`` masks each mask queries per
    iteration (mask j's at rows j * reps to (j + 1) * reps - 1), and :meth:`terms`, the loss
    terms of such a batch of masks from ``ask``'s scores of their perturbed images."""

    def __init__(self, ask: Callable[[torch.Tensor], torch.Tensor], jobs: Jobs,
                 config: OptimConfig, reps: int) -> None:
        self.ask, self.config = ask, config
        self.x, self.hx, self.clean = (t.repeat_interleave(reps, dim=0)
                                       for t in (jobs.x, jobs.hx, jobs.clean))
        self.weights = {key: v.repeat_interleave(reps, dim=0) for key, v in jobs.weights.items()}

    def terms(self, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """loss_terms of ``masks`` ``[n * reps, 1, m, m]``, one query each (Eq. 1 through ask)."""
        q = perturb(self.x, self.hx, upsample_mask(masks, tuple(self.x.shape[-2:])))
        return loss_terms(self.ask(q), self.clean, masks, config=self.config, **self.weights)


def add_exact_penalty(mask: torch.Tensor, estimate: torch.Tensor, weights: dict,
                      config: OptimConfig) -> torch.Tensor:
    """Put ``estimate`` (the model's part of grad L) plus R_M's exact gradient (autograd on the
    mask alone) into ``mask.grad``; returns R_M per mask."""
    r_m = mask_penalty(mask, weights["lambda1"], weights["lambda2"], weights["beta"],
                       config.reduction, config.tv_root)
    r_m.sum().backward()
    mask.grad.add_(estimate)
    return r_m


def record_terms(model: dict[str, torch.Tensor], mask: torch.Tensor, r_m: torch.Tensor,
                 beta: torch.Tensor, config: OptimConfig) -> torch.Tensor:
    """One iteration's TERMS ``[n, len(TERMS)]``: the model's :data:`MODEL_TERMS` as the
    estimator read them (``[n]`` each), TV and L1 exact at M, total their sum with R_M."""
    at = dict(model)
    at["tv"] = tv_norm(mask, beta, config.reduction, root=config.tv_root)
    at["l1"] = l1_norm(mask, config.reduction)
    at["total"] = at["f_term"] + at["r_factors"] + r_m
    return torch.stack([at[t] for t in TERMS], dim=1)


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
