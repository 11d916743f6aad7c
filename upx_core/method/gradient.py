"""The white-box gradient: autograd through the model, one forward and one backward per iteration.

Every mask's loss (Eq. 3, 5 or 7) is summed into one scalar before the backward pass, so each
mask receives exactly the gradient of its own loss, and Adam (an element-wise update) moves it
as if it were optimized alone: what else shares the batch does not change a result beyond
floating-point reassociation in the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .config import SEED_LIMIT, MaskSetting, OptimConfig
from .equations import loss_terms, perturb, upsample_mask
from .loop import Jobs
from .result import TERMS
from .runtime import forward

__all__ = ["NOISE_SEED_OFFSET", "Autograd", "noise_generators", "perturbation_noise"]

# Added to a trial's seed for its perturb_noise stream, so that the noise is not drawn from the
# same stream as the trial's M0 (2^64 / golden ratio: far from any small seed).
NOISE_SEED_OFFSET = 0x9E3779B97F4A7C15


class Autograd:
    """grad L(M) by backpropagation through ``model`` (logits out) for one chunk of masks.

    With ``config.perturb_noise`` > 0, Gaussian noise from each mask's own generator
    (:func:`noise_generators`) is added to every Q(X; M', h) before the model sees it; at 0
    nothing is drawn, so the default run is the same arithmetic as without the option.
    """

    cost = 1  # one forward (and backward) per mask and iteration

    def __init__(self, model: nn.Module, jobs: Jobs, config: OptimConfig) -> None:
        self.model, self.jobs, self.config = model, jobs, config
        self.gens = noise_generators(jobs.settings) if config.perturb_noise > 0 else None

    def gradient(self, mask: torch.Tensor, it: int) -> torch.Tensor:
        jobs, config = self.jobs, self.config
        q = perturb(jobs.x, jobs.hx, upsample_mask(mask, tuple(jobs.x.shape[-2:])))  # Eq. 1
        if self.gens is not None:
            q = q + perturbation_noise(self.gens, q.shape[1:], config.perturb_noise, q.device)
        terms = loss_terms(forward(self.model, q, config), jobs.clean, mask, config=config,
                           **jobs.weights)
        terms["total"].sum().backward()
        return torch.stack([terms[t] for t in TERMS], dim=1).detach()

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        return forward(self.model, images, self.config)


def noise_generators(settings: Sequence[MaskSetting]) -> list[torch.Generator]:
    """One CPU generator per mask for ``OptimConfig.perturb_noise``, seeded from its trial seed
    (plus :data:`NOISE_SEED_OFFSET`), so a mask's noise does not depend on the batch."""
    return [torch.Generator().manual_seed((s.seed + NOISE_SEED_OFFSET) % SEED_LIMIT)
            for s in settings]


def perturbation_noise(gens: list[torch.Generator], shape, std: float,
                       dev: torch.device) -> torch.Tensor:
    """Gaussian noise ``[len(gens), *shape]`` with std ``std``, each row from its own generator
    on the CPU, then moved to ``dev`` (through pinned memory on CUDA, without a host sync)."""
    noise = torch.stack([torch.randn(*shape, generator=g) for g in gens]).mul_(std)
    if dev.type == "cuda":
        return noise.pin_memory().to(dev, non_blocking=True)
    return noise.to(dev)
