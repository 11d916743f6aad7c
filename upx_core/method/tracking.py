"""The query-only gradient with a time prior: forward differences that correct a running estimate.

:class:`~upx_core.method.query.FiniteDifferences` forgets everything after each Adam step: its
2P queries give P antithetic differences, and its estimate of grad L is their average along P
random directions of the d = m^2 = 784 mask cells, noisy by a factor sqrt(d / P). But M moves
little per step, so grad L changes slowly (the time prior of Ilyas et al. 2019, "Prior
convictions"). This estimator keeps a running estimate s of the model's part of grad L and spends
each iteration's queries correcting it:

- one centre query L(M) and P forward differences a_p = L(M_p) - L(M) at M_p = clip(M + sigma
  u_p, 0, 1), u_p ~ N(0, I_d): P + 1 queries instead of 2P (the centre is shared);
- the displacements delta_p = M_p - M that were actually queried (the clip included), so a
  cell held at 0 or 1 is read as it was moved, not as u_p asked;
- s <- rho s, then the smallest change of s that agrees with every measurement,
  s <- s + D^T (D D^T)^{-1} (a - D s), D = [delta_1 ... delta_P] (a block Kaczmarz step: s
  becomes the nearest vector to its decayed self whose forward differences are the measured ones;
  the P directions act as one orthogonalized set);
- Adam receives s / c_t + grad R_M, where c_t = rho (1 - P/d) c_{t-1} + P/d (c_0 = 0) is the
  share of a fixed gradient that s holds in expectation: each step measures a random
  P-dimensional subspace, P/d of every direction, and rho forgets. Without it the estimate
  starts at P/d of its size and R_M's exact gradient wins (masks that blur nothing).

``rho`` (``decay``) trades staleness against noise: 1 keeps every past measurement, smaller
values trust only recent ones. R_M's gradient is exact, as in every optimizer of this package.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .config import OptimConfig
from .loop import Jobs
from .query import (
    MODEL_TERMS,
    QueriedMasks,
    add_exact_penalty,
    direction_generators,
    draw_directions,
    record_terms,
)

__all__ = ["DEFAULT_DECAY", "TrackedDifferences", "coverage"]

# rho of the running estimate: chosen among 0.9, 0.95, 0.98 and 1 on the tusker and ski, seeds 0
# and 1, 4,000 queries (chapter 9 says so; seed 2 and the abaya were not used to choose it).
DEFAULT_DECAY = 0.95


class TrackedDifferences:
    """s / c_t + grad R_M for one chunk of masks, from ``ask``: images ``[N, 3, H, W]`` -> the
    scores ``[N, C]`` that loss_terms reads (logits, or log-probabilities).

    Per iteration each mask's centre M and its ``samples`` neighbours go to ``ask`` in one call
    (``samples + 1`` queries). The directions come from the generators of
    :func:`~upx_core.method.query.direction_generators` (trial seed plus ``NES_SEED_OFFSET``),
    so the same call gives the same masks bit for bit on the CPU.
    """

    def __init__(self, ask: Callable[[torch.Tensor], torch.Tensor], jobs: Jobs,
                 config: OptimConfig, samples: int, sigma: float,
                 decay: float = DEFAULT_DECAY) -> None:
        self.ask, self.jobs, self.config = ask, jobs, config
        self.samples, self.sigma, self.decay = samples, sigma, decay
        self.cost = samples + 1  # queries per mask and iteration
        self.queried = QueriedMasks(ask, jobs, config, self.cost)  # [centre, neighbours] per mask
        self.gens = direction_generators(jobs.settings)
        self.estimate: torch.Tensor | None = None  # s, [n, d]
        self.share = 0.0  # c_t

    def gradient(self, mask: torch.Tensor, it: int) -> torch.Tensor:
        config, weights, p, sigma = self.config, self.jobs.weights, self.samples, self.sigma
        n, m = mask.shape[0], config.mask_size
        d = m * m
        u = draw_directions(self.gens, p, m)  # [n, p, 1, m, m]
        with torch.no_grad():
            centre = mask.detach()
            moved = (centre[:, None] + sigma * u).clamp_(0.0, 1.0)
            pm = torch.cat([centre[:, None], moved], dim=1).flatten(0, 1)  # [n (p + 1), 1, m, m]
            terms = self.queried.terms(pm)
            model_part = (terms["f_term"] + terms["r_factors"]).view(n, p + 1).double()
            measured = model_part[:, 1:] - model_part[:, :1]  # a_p, [n, p]
            delta = (moved - centre[:, None]).reshape(n, p, d).double()
            s = (torch.zeros(n, d, dtype=torch.float64) if self.estimate is None
                 else self.decay * self.estimate)
            residual = measured - torch.einsum("npd,nd->np", delta, s)
            # pinv: a direction clipped to nothing (every cell it moves held at 0 or 1) or more
            # directions than cells leave D D^T singular; the least-norm answer stays defined
            coef = torch.linalg.pinv(delta @ delta.transpose(1, 2), hermitian=True)
            s = s + torch.einsum("npq,nq,npd->nd", coef, residual, delta)
            self.estimate = s
            self.share = coverage(self.share, p, d, self.decay)
            g = (s / self.share).float().view(n, 1, m, m)
        r_m = add_exact_penalty(mask, g, weights, config)
        with torch.no_grad():  # the centre query gives the terms at M itself
            at = {t: terms[t].view(n, p + 1)[:, 0] for t in MODEL_TERMS}
            return record_terms(at, mask, r_m, weights["beta"], config)

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        return self.ask(images)


def coverage(previous: float, samples: int, cells: int, decay: float) -> float:
    """c_t = decay (1 - P/d) c_{t-1} + P/d: the share of a fixed gradient that the running
    estimate holds in expectation after one more step (P = ``samples`` directions among d =
    ``cells``; at most one, where P >= d measures every direction)."""
    share = min(samples / cells, 1.0)
    return decay * (1.0 - share) * previous + share
