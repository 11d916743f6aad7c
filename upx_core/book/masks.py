"""A chapter's masks as tables: the case studies' two objectives computed side by side, one row
per mask and trial (probabilities, Eq. 8, Table 2's ratio, the top class after), the
probabilities of chosen classes under each mask (Fig. 4), how alike two sets of masks are, and
the hand-made masks chapter 2 prices with Eq. 3's penalties.

Every table reads :class:`UPXResult` fields; :func:`both_objectives` and :func:`recompute_routes`
run the optimizer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import nn

# optimize_masks through the package's public name, wherever the method keeps its loop
from .. import optimize_masks
from ..method.config import MaskSetting, OptimConfig, settings_grid
from ..method.equations import l1_norm, tv_norm
from ..method.metrics import consistency, relative_improvement, undesirable_pixel_ratio
from ..method.result import UPXResult
from .analysis import logit_decomposition, probability_table
from .chapter import load_sample

__all__ = ["both_objectives", "mask_rows", "pearson_pairs", "probabilities_by_mask",
           "recompute_routes", "fntc_route_counts", "hand_made_masks", "penalty_table"]

OBJECTIVES = ("prob", "log_prob")  # the two readings of f_k the case studies compare


def both_objectives(model: nn.Module, images: torch.Tensor, settings: Sequence[MaskSetting],
                    config: OptimConfig, targets=None,
                    device: str = "cpu") -> dict[str, UPXResult]:
    """The same masks under the probability and the log-probability objective, the library's
    default first (its key first in the dict): ``{objective: result}``. ``config`` sets every
    other hyperparameter; ``targets`` as :func:`upx_core.optimize_masks` takes them."""
    default = OptimConfig().objective
    order = [default] + [o for o in OBJECTIVES if o != default]
    return {obj: optimize_masks(model, images, targets=targets, settings=settings,
                                config=config.replace(objective=obj), device=device,
                                progress=False)
            for obj in order}


def mask_rows(result: UPXResult, images: Sequence[str] | None = None,
              threshold: float = 0.6) -> pd.DataFrame:
    """One row per mask (image b, setting k), image by image: ``image`` (``images[b]``, or b),
    ``mode``, ``trial`` (the setting's seed), ``target`` (class name), the target's probability
    ``before`` and ``after``, its ``change``, Eq. 8's ``gain`` (%), Table 2's ``ratio`` (a
    fraction, pixels with 1 - M' > ``threshold``) and the ``top class after``."""
    gain = relative_improvement(result.target_prob_before, result.target_prob_after)
    ratio = undesirable_pixel_ratio(result.masks_upsampled[:, :, 0], threshold)
    top_after = result.probs_after.argmax(dim=-1)
    b_count, k_count = result.targets.shape
    rows = []
    for b in range(b_count):
        for k, s in enumerate(result.settings):
            before, after = result.target_prob_before[b, k], result.target_prob_after[b, k]
            rows.append({"image": images[b] if images is not None else b, "mode": s.mode,
                         "trial": s.seed, "target": result.class_name(int(result.targets[b, k])),
                         "before": float(before), "after": float(after),
                         "change": float(after - before),  # in the probabilities' own precision
                         "gain": float(gain[b, k]), "ratio": float(ratio[b, k]),
                         "top class after": result.class_name(int(top_after[b, k]))})
    return pd.DataFrame(rows)


def pearson_pairs(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Pearson r of ``a[i]`` and ``b[i]`` for each i: two masks of the same trial under two
    objectives, or two modes (``[N, ...]`` each, upsampled M' or 1 - M' alike)."""
    if a.shape != b.shape:
        raise ValueError(f"paired masks must have one shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    return [consistency(torch.stack([x, y]))["pearson"] for x, y in zip(a, b, strict=True)]


def probabilities_by_mask(result: UPXResult, classes: Sequence[int | str],
                          b: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The probabilities of ``classes`` under each mask of image ``b`` (the paper's Fig. 4).

    Returns ``(per_trial, table)``. ``per_trial`` has one row per mask, indexed
    ``"mask for <target>, trial <seed>"``: a column per class, then ``mask`` (``"mask for
    <target>"``), ``trial`` and Table 2's ``ratio``. ``table`` has the clean image's row
    (:func:`upx_core.book.analysis.probability_table`'s first) and then each mask's mean over
    its trials, in the order the masks first appear.
    """
    targets = [result.class_name(int(t)) for t in result.targets[b]]
    seeds = [s.seed for s in result.settings]
    labels = [f"mask for {t}, trial {s}" for t, s in zip(targets, seeds, strict=True)]
    probs = probability_table(result, classes, b=b, labels=labels)
    names = list(probs.columns)
    per_trial = probs.iloc[1:].assign(
        mask=[f"mask for {t}" for t in targets], trial=seeds,
        ratio=undesirable_pixel_ratio(result.masks_upsampled[b, :, 0]).numpy())
    mean = per_trial.groupby("mask", sort=False)[names].mean()
    return per_trial, pd.concat([probs.iloc[:1], mean])


def recompute_routes(model: nn.Module, rows: pd.DataFrame, config: OptimConfig,
                     penalties: Mapping | None = None, mode: str = "fntc",
                     device: str = "cpu") -> pd.DataFrame:
    """The masks of stored evaluation ``rows`` (``file``, ``target``, ``relative_improvement``)
    computed again, one trial (seed 0) of ``mode`` each in one optimizer call, and split into
    their two routes: :func:`upx_core.book.analysis.logit_decomposition`'s rows, with the
    row's ``file`` and ``image_index``, Eq. 8's ``phi`` (%) and the Table 2 ``ratio`` of the new
    mask, and ``stored_phi``, the row's own."""
    images = torch.stack([load_sample(f, model) for f in rows["file"]])
    result = optimize_masks(model, images, targets=rows["target"].tolist(),
                            settings=settings_grid((mode,), (0,), **dict(penalties or {})),
                            config=config, device=device, progress=False)
    return logit_decomposition(model, images, result, device=device).assign(
        file=rows["file"].to_numpy(), image_index=rows["image_index"].to_numpy(),
        phi=relative_improvement(result.target_prob_before,
                                 result.target_prob_after)[:, 0].numpy(),
        ratio=undesirable_pixel_ratio(result.masks_upsampled[:, 0, 0]).numpy(),
        stored_phi=rows["relative_improvement"].to_numpy())


def fntc_route_counts(stored: pd.DataFrame, routes: pd.DataFrame,
                      moved: float = 10.0) -> pd.DataFrame:
    """How many images F-NTC moved, and by which route: of the ``stored`` F-NTC rows, those
    that raised the target by more than ``moved`` (phi, %), and of those recomputed
    (:func:`recompute_routes`), how many moved again, lowered the competitors' log-sum-exp and
    kept the target logit within 0.05."""
    counts = [
        ("images in the stored run", len(stored)),
        (f"F-NTC raised the target by more than {moved:g} % (stored)",
         int((stored["relative_improvement"] > moved).sum())),
        ("recomputed here", len(routes)),
        (f"... raised by more than {moved:g} % again", int((routes["phi"] > moved).sum())),
        ("... the competitors' log-sum-exp fell", int((routes["d_lse_others"] < 0).sum())),
        ("... the target logit moved by less than 0.05",
         int((routes["d_target_logit"].abs() < 0.05).sum())),
    ]
    return pd.DataFrame(counts, columns=["F-NTC under the probability", "images"])


def hand_made_masks(n: int = 28, seed: int = 0) -> dict[str, torch.Tensor]:
    """Five ``[n, n]`` masks that tell Eq. 3's two penalties apart: keep all (M = 1), half blur
    (M = 0.5), a smooth blob blurred off-centre, the same blob's values scrambled (``seed``),
    and a checkerboard."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    blob = 1 - torch.exp(-((xx - 0.2) ** 2 + (yy + 0.1) ** 2) / (2 * 0.25**2))
    perm = torch.randperm(n * n, generator=torch.Generator().manual_seed(seed))
    return {
        "keep all (M = 1)": torch.ones(n, n),
        "half blur (M = 0.5)": torch.full((n, n), 0.5),
        "smooth blob": blob,
        "scrambled blob": blob.flatten()[perm].view(n, n),
        "checkerboard": ((torch.arange(n)[:, None] + torch.arange(n)[None]) % 2).float(),
    }


def penalty_table(masks: Mapping[str, torch.Tensor], setting: MaskSetting,
                  reduction: str = "mean") -> pd.DataFrame:
    """Eq. 3's penalties of each mask, indexed by its name: ``TV`` (TV_beta(M)), ``L1``
    (||1 - M||_1) and ``R_M = lambda1 TV + lambda2 L1``, with ``setting``'s weights."""
    rows = []
    for name, m in masks.items():
        m4 = m.reshape(1, 1, *m.shape[-2:])
        tv = float(tv_norm(m4, setting.beta, reduction))
        l1 = float(l1_norm(m4, reduction))
        rows.append({"mask": name, "TV": tv, "L1": l1,
                     "R_M": setting.lambda1 * tv + setting.lambda2 * l1})
    return pd.DataFrame(rows).set_index("mask")
