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

__all__ = ["NES_SEED_OFFSET", "FiniteDifferences", "direction_generators", "draw_directions",
           "smooth_basis"]

# Added to a trial's seed for its stream of search directions u_p, so that they are not drawn
# from the stream of its start M0 nor from gradient.NOISE_SEED_OFFSET's (the PCG multiplier).
NES_SEED_OFFSET = 0x5851F42D4C957F2D


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
        self.cost = reps = 2 * samples  # queries per mask and iteration
        # every per-mask tensor repeated for its 2 x samples neighbours, in the order
        # [mask, sign, sample]
        self.xr, self.hxr, self.y0r = (t.repeat_interleave(reps, dim=0)
                                       for t in (jobs.x, jobs.hx, jobs.clean))
        self.per_query = {key: v.repeat_interleave(reps, dim=0) for key, v in jobs.weights.items()}
        self.gens = direction_generators(jobs.settings)
        self.directions = None if basis is None else smooth_basis(basis, config.mask_size)

    def gradient(self, mask: torch.Tensor, it: int) -> torch.Tensor:
        config, weights, samples, sigma = self.config, self.jobs.weights, self.samples, self.sigma
        n = mask.shape[0]
        u = draw_directions(self.gens, samples, config.mask_size, self.directions)
        with torch.no_grad():
            signed = sigma * torch.stack([u, -u], dim=1)  # [n, 2, samples, 1, m, m]
            pm = (mask.detach()[:, None, None] + signed).clamp_(0.0, 1.0).flatten(0, 2)
            q = perturb(self.xr, self.hxr, upsample_mask(pm, tuple(self.xr.shape[-2:])))
            terms = loss_terms(self.ask(q), self.y0r, pm, config=config, **self.per_query)
            model_part = (terms["f_term"] + terms["r_factors"]).view(n, 2, samples)
            diff = (model_part[:, 0] - model_part[:, 1]).view(n, samples, 1, 1, 1)
            g = (diff * u).sum(dim=1) / (2 * sigma * samples)
        r_m = mask_penalty(mask, weights["lambda1"], weights["lambda2"], weights["beta"],
                           config.reduction, config.tv_root)
        r_m.sum().backward()
        mask.grad.add_(g)
        with torch.no_grad():
            return _record(terms, mask, r_m, weights["beta"], config, n, self.cost)

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        return self.ask(images)


def _record(terms, mask, r_m, beta, config, n, reps) -> torch.Tensor:
    """One iteration's TERMS ``[n, len(TERMS)]``: the model's terms averaged over the queried
    neighbours (no query is spent on M itself), TV and L1 exact at M."""
    mean = {t: terms[t].view(n, reps).mean(dim=1) for t in ("f_term", "r_factors", "prob")}
    mean["tv"] = tv_norm(mask, beta, config.reduction, root=config.tv_root)
    mean["l1"] = l1_norm(mask, config.reduction)
    mean["total"] = mean["f_term"] + mean["r_factors"] + r_m
    return torch.stack([mean[t] for t in TERMS], dim=1)


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
