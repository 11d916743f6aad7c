"""Query-only maps to set beside the optimized mask, and phi at a matched blurred area (issue 26).

The query-only mask (:mod:`.blackbox`) spends its budget on finite differences. Two older
query-only readings spend the same queries more simply, and a fair comparison needs both:

- :func:`occlusion_map`: blur one mask cell at a time (M = 1 except that cell, 0), one query
  each; with m x m + 1 queries it gives the exact forward difference of every cell at M = 1.
- :func:`rise_map`: RISE (Petsiuk et al. 2018) read for undesirable pixels: random coarse binary
  masks, blurred where 0 (Eq. 1), each weighting its blurred cells by the target's gain.

Both return an *undesirable* map ``[B, 1, m, m]``, higher where blurring raises the target, to be
compared with 1 - M. :func:`area_matched_phi` scores any such map the same way: phi (Eq. 8) when
only its top fraction of pixels is blurred, so that a map does not win by blurring more (R_M,
Eq. 3, prices the area for the optimizer; a fixed fraction removes it from the comparison).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .blackbox import logit_scores, query_outputs
from .config import OptimConfig
from .equations import blur_for, perturb, upsample_mask
from .metrics import relative_improvement, top_fraction_mask

__all__ = ["GAINS", "area_matched_phi", "occlusion_map", "rise_map", "rise_maps",
           "target_scores"]

# The target's gain a baseline weights by: of its probability, or of its log-probability (the
# objective the stored query-only run optimized, OptimConfig.objective="log_prob").
GAINS = ("prob", "log_prob")

Predict = Callable[[torch.Tensor], "torch.Tensor | np.ndarray"]


def target_scores(predict: Predict, images: torch.Tensor, targets: torch.Tensor,
                  gain: str = "log_prob", batch_size: int | None = None) -> torch.Tensor:
    """The target's probability (``gain="prob"``) or log-probability (``"log_prob"``) for each
    of ``images`` ``[N, 3, H, W]``, float64 ``[N]``; ``targets`` ``[N]``. ``predict.outputs``
    (``"probs"``, the default when absent, or ``"logits"``) says what predict returns."""
    if gain not in GAINS:
        raise ValueError(f"gain must be one of {GAINS}, got {gain!r}")
    outputs = getattr(predict, "outputs", "probs")
    # read and checked as the query-only optimizer reads predict; the gains in float64
    out = query_outputs(predict, images, batch_size).double()
    logp = torch.log_softmax(out, dim=1) if outputs == "logits" else logit_scores(out, outputs)
    picked = logp.gather(1, targets.view(-1, 1).long())[:, 0]
    return picked if gain == "log_prob" else picked.exp()


def area_matched_phi(predict: Predict, images: torch.Tensor, maps: torch.Tensor,
                     targets: Sequence[int] | torch.Tensor,
                     fractions: Sequence[float] = (0.01, 0.02, 0.05),
                     config: OptimConfig | None = None,
                     batch_size: int | None = None) -> torch.Tensor:
    """phi (Eq. 8, %) of each image's target when only the top ``fractions`` of its pixels, as
    ``maps`` ranks them, are blurred: ``[B, len(fractions)]``.

    maps: ``[B, h, w]`` or ``[B, 1, h, w]`` undesirable maps, higher = blurred first (1 - M for
        a mask M, or what :func:`occlusion_map` and :func:`rise_map` return), bilinearly
        upsampled to the image as M' is (Eq. 2) when smaller. Ties go to the earlier pixel in
        row-major order (:func:`~upx_core.method.metrics.top_fraction_mask`).
    The blurred image is h(X) of ``config`` (default: the paper's Gaussian, sigma 5, kernel 11)
    and Eq. 1 mixes it in with a binary M': the chosen pixels blurred, the rest kept.
    """
    images, targets = _check(images, targets)
    maps = torch.as_tensor(maps, dtype=torch.float32)
    maps = maps[:, None] if maps.dim() == 3 else maps
    if maps.dim() != 4 or maps.shape[:2] != (len(images), 1):
        raise ValueError(f"maps must be [B, h, w] or [B, 1, h, w] for {len(images)} images, got "
                         f"{tuple(maps.shape)}")
    size = tuple(images.shape[-2:])
    if tuple(maps.shape[-2:]) != size:
        maps = upsample_mask(maps, size)
    blurred = blur_for(images, config or OptimConfig())
    before = target_scores(predict, images, targets, "prob", batch_size)
    keep = torch.stack([~top_fraction_mask(maps[:, 0], f) for f in fractions], dim=1)
    q = perturb(images[:, None], blurred[:, None], keep[:, :, None].float())  # [B, F, 3, H, W]
    after = target_scores(predict, q.flatten(0, 1), targets.repeat_interleave(len(fractions)),
                          "prob", batch_size)
    return relative_improvement(before[:, None].expand(-1, len(fractions)),
                                after.view(len(images), len(fractions)))


def occlusion_map(predict: Predict, images: torch.Tensor, targets: Sequence[int] | torch.Tensor,
                  gain: str = "log_prob", config: OptimConfig | None = None,
                  batch_size: int | None = 64) -> tuple[torch.Tensor, int]:
    """The blur-occlusion sweep: for every cell c of the m x m mask, the target's gain when M is
    1 except M_c = 0 (upsampled and mixed by Eq. 1-2 as the optimizer's masks are).

    Returns the undesirable map ``[B, 1, m, m]`` (the gain of blurring each cell; higher =
    blurring it raises the target) and the queries per image, m x m + 1 (the clean image once).
    At M = 1 this is the exact forward difference of each cell, where the query-only optimizer
    estimates differences along random directions.
    """
    images, targets = _check(images, targets)
    config = config or OptimConfig()
    m = config.mask_size
    cells = torch.ones(m * m, 1, m * m)
    cells[torch.arange(m * m), 0, torch.arange(m * m)] = 0.0
    g = _gains(predict, images, targets, cells.view(m * m, 1, m, m), gain, config, batch_size)
    return g.float().view(len(images), 1, m, m), m * m + 1


def rise_maps(predict: Predict, images: torch.Tensor, targets: Sequence[int] | torch.Tensor,
              budgets: Sequence[int], cells: int = 7, keep: float = 0.5, seed: int = 0,
              gain: str = "log_prob", config: OptimConfig | None = None,
              batch_size: int | None = 64) -> dict[int, torch.Tensor]:
    """:func:`rise_map` at several budgets from one set of queries: the map at budget n reads
    the first n - 1 random masks, exactly what ``rise_map(queries=n)`` with this seed reads."""
    images, targets = _check(images, targets)
    config = config or OptimConfig()
    if not budgets or any(not _int_at_least(b, 2) for b in budgets):
        raise ValueError(f"budgets must be integers >= 2 (one random mask and the clean image), "
                         f"got {budgets!r}")
    if not _int_at_least(cells, 1) or cells > config.mask_size:
        raise ValueError(f"cells must be an integer from 1 to the mask size {config.mask_size}, "
                         f"got {cells!r}")
    if not isinstance(keep, numbers.Real) or not 0 < keep < 1:
        raise ValueError(f"keep must be a probability strictly between 0 and 1, got {keep!r}")
    masks = _rise_masks(max(budgets) - 1, cells, keep, seed, config.mask_size)
    gains = _gains(predict, images, targets, masks, gain, config, batch_size)  # [B, N]
    blurred_share = (1.0 - masks).flatten(1)  # [N, m * m]: how much of each cell is blurred
    out = {}
    for n in sorted(set(budgets)):
        g = gains[:, :n - 1]
        # RISE's weighted mean, centered by the mean gain: the expectation's ranking of cells
        # is unchanged (the centering subtracts the same constant from every cell) and the
        # noise a gain common to all masks adds to every cell goes
        s = (g - g.mean(dim=1, keepdim=True)) @ blurred_share[:n - 1].double()
        out[n] = (s / ((n - 1) * (1 - keep))).float().view(len(images), 1, config.mask_size,
                                                            config.mask_size)
    return out


def rise_map(predict: Predict, images: torch.Tensor, targets: Sequence[int] | torch.Tensor,
             queries: int = 1000, cells: int = 7, keep: float = 0.5, seed: int = 0,
             gain: str = "log_prob", config: OptimConfig | None = None,
             batch_size: int | None = 64) -> tuple[torch.Tensor, int]:
    """RISE read for undesirable pixels: ``queries - 1`` random masks M_i, each a ``cells`` x
    ``cells`` grid of cells kept with probability ``keep`` (else blurred), bilinearly upsampled
    to the m x m mask with a random shift of up to one grid cell (as RISE shifts its masks),
    then mixed by Eq. 1-2. The map is the mean over masks of the target's gain g_i (centered)
    times each cell's blurred share 1 - M_i, over 1 - keep.

    Returns the undesirable map ``[B, 1, m, m]`` and the queries per image (``queries``: the
    masks and the clean image). Seeded: the masks come from a CPU generator seeded with
    ``seed``, drawn one by one, so a larger budget extends a smaller one's masks.
    """
    maps = rise_maps(predict, images, targets, [queries], cells, keep, seed, gain, config,
                     batch_size)
    return maps[queries], queries


def _rise_masks(n: int, cells: int, keep: float, seed: int, m: int) -> torch.Tensor:
    """``n`` RISE masks ``[n, 1, m, m]`` in [0, 1], drawn one at a time (a fixed order)."""
    gen = torch.Generator().manual_seed(seed)
    step = math.ceil(m / cells)  # one grid cell, in mask cells
    grids, shifts = [], []
    for _ in range(n):
        grids.append((torch.rand(cells, cells, generator=gen) < keep).float())
        shifts.append(torch.randint(0, step, (2,), generator=gen))
    up = F.interpolate(torch.stack(grids)[:, None], size=((cells + 1) * step,) * 2,
                       mode="bilinear", align_corners=False)
    return torch.stack([u[:, int(dy):int(dy) + m, int(dx):int(dx) + m]
                        for u, (dy, dx) in zip(up, shifts, strict=True)])


def _gains(predict, images, targets, masks, gain, config, batch_size) -> torch.Tensor:
    """The target's gain ``[B, N]`` for each image under each of ``masks`` ``[N, 1, m, m]``."""
    blurred = blur_for(images, config)
    clean = target_scores(predict, images, targets, gain, batch_size)
    size, step = tuple(images.shape[-2:]), batch_size or len(masks)
    out = torch.empty(len(images), len(masks), dtype=torch.float64)
    for b in range(len(images)):
        for start in range(0, len(masks), step):
            chunk = upsample_mask(masks[start:start + step], size)
            q = perturb(images[b:b + 1], blurred[b:b + 1], chunk)
            t = targets[b].repeat(len(chunk))
            out[b, start:start + len(chunk)] = target_scores(predict, q, t, gain) - clean[b]
    return out


def _check(images, targets) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.as_tensor(images, dtype=torch.float32)
    if images.dim() != 4 or images.shape[1] != 3 or len(images) == 0:
        raise ValueError(f"images must be [B, 3, H, W] with B >= 1, got {tuple(images.shape)}")
    targets = torch.as_tensor(targets).view(-1).long()
    if len(targets) != len(images):
        raise ValueError(f"give one target per image: {len(targets)} targets, {len(images)} "
                         "images")
    return images, targets


def _int_at_least(value, low: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low
