"""The oracle gradient: the query-only estimator's directions with exact directional derivatives.

:class:`~upx_core.method.query.FiniteDifferences` estimates the model's part of grad L from
finite differences along P random directions u_p. Its error has two sources: sampling only P
directions, and the differences themselves (the step sigma, the clip of M +/- sigma u to
[0, 1], the rounding of the model's answers). The oracle keeps the first and removes the second:
the same directions from the same generators, each difference replaced by the exact derivative
u_p . grad L from autograd,

    g = mean_p (u_p . grad L) u_p,

the zero-step limit of the estimate, plus R_M's exact gradient. ``benchmarks/blackbox_quality.py``
runs it to bound what a query-only mask can reach for a given number of directions.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import MaskSetting, OptimConfig
from .equations import blur_for, loss_terms, perturb, upsample_mask
from .fold import fold_batchnorm
from .loop import Jobs, optimize
from .query import add_exact_penalty, direction_generators, draw_directions, smooth_basis
from .result import TERMS
from .runtime import frozen

__all__ = ["DirectionalDerivatives", "oracle_masks"]


class DirectionalDerivatives:
    """g + grad R_M for one chunk of masks, with ``model`` (logits out) differentiated; the
    directions as :class:`~upx_core.method.query.FiniteDifferences` draws them (``samples`` per
    iteration, from :func:`~upx_core.method.query.smooth_basis` ``(basis, m)`` if given)."""

    cost = 1  # one forward and backward per mask and iteration, whatever ``samples``

    def __init__(self, model: nn.Module, jobs: Jobs, config: OptimConfig, samples: int,
                 basis: int | None = None) -> None:
        self.model, self.jobs, self.config, self.samples = model, jobs, config, samples
        self.gens = direction_generators(jobs.settings)
        self.directions = None if basis is None else smooth_basis(basis, config.mask_size)

    def gradient(self, mask: torch.Tensor, it: int) -> torch.Tensor:
        jobs, config, weights = self.jobs, self.config, self.jobs.weights
        u = draw_directions(self.gens, self.samples, config.mask_size, self.directions)
        q = perturb(jobs.x, jobs.hx, upsample_mask(mask, tuple(jobs.x.shape[-2:])))
        terms = loss_terms(self.model(q), jobs.clean, mask, config=config, **weights)
        grad, = torch.autograd.grad((terms["f_term"] + terms["r_factors"]).sum(), mask)
        slope = (u * grad[:, None]).flatten(2).sum(dim=2)  # [n, samples]: u_p . grad L
        estimate = (slope[..., None, None, None] * u).mean(dim=1)
        add_exact_penalty(mask, estimate, weights, config)
        return torch.stack([terms[t] for t in TERMS], dim=1).detach()

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


def oracle_masks(model: nn.Module, images: torch.Tensor, targets, setting: MaskSetting,
                 config: OptimConfig, samples: int,
                 basis: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One oracle mask per image ``[B, 3, H, W]`` (CPU, float32) for its target class, through
    the batch-norm-folded ``model``: the query-only optimizer's M0, Adam, exact R_M, clip and
    directions, with :class:`DirectionalDerivatives`. Returns the final masks ``[B, 1, m, m]``
    and the final probabilities ``[B, C]``."""
    with frozen(model), torch.no_grad():
        net, _ = fold_batchnorm(model, images[:2])
    with frozen(net):
        for p in net.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            clean = net(images)
        result = optimize(images, blur_for(images, config), clean, [setting],
                          torch.as_tensor(targets).view(-1), config,
                          lambda jobs: DirectionalDerivatives(net, jobs, config, samples, basis),
                          keep_images=False)
    return result.masks[:, 0], result.probs_after[:, 0]
