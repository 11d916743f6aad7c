"""What a mask did to the classifier, beyond its target's probability: the logit decomposition
(through the target's own logit, or through the other classes), trial consistency per setting
and the probabilities of chosen classes (the paper's Fig. 4). Hand-drawn image regions and their
controls are :mod:`upx_core.book.regions`'.

Every function reads an :class:`UPXResult` (or runs the model once on its images); nothing here
optimizes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import nn

from ..method.equations import logsumexp_others
from ..method.metrics import consistency, undesirable_pixel_ratio
from ..method.models import class_index
from ..method.result import UPXResult

__all__ = [
    "logit_decomposition",
    "plot_logit_decomposition",
    "consistency_table",
    "probability_table",
    "clean_probs",
    "top_classes",
]

BEFORE = "before (clean image)"


def _settings_frame(result: UPXResult, b: int) -> pd.DataFrame:
    rows = []
    for k, s in enumerate(result.settings):
        t = int(result.targets[b, k])
        rows.append({
            "image": b, "k": k, "mode": s.mode, "seed": s.seed, "lambda1": s.lambda1,
            "lambda2": s.lambda2, "beta": s.beta, "gamma": s.gamma, "target": t,
            "target_name": result.class_name(t),
        })
    return pd.DataFrame(rows)


@torch.no_grad()
def logit_decomposition(
    model: nn.Module, images: torch.Tensor, result: UPXResult, device: str = "cpu",
) -> pd.DataFrame:
    """How each mask raised its target: the target's own logit, or the other classes'.

    With y the logits, the target's log-odds split exactly into two parts,

        log(p_k / (1 - p_k)) = y_k - LSE_{i != k}(y_i),

    so the change from X to Q is ``d_target_logit - d_lse_others`` (column ``d_log_odds``).
    A mask that raises p_k through its own class has ``d_target_logit > 0``; one that raises it
    by suppressing competitors has ``d_lse_others < 0``. ``d_mean_others`` is the mean shift of
    the N - 1 other logits, the quantity Eq. 4 (F-TC) penalizes; Eq. 6 (F-NTC) penalizes
    ``d_target_logit``. One row per (image, setting); needs ``result.perturbed``.
    """
    if result.perturbed is None:
        raise ValueError("the result kept no perturbed images: use keep_images=True")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    b_count, k_count = result.targets.shape
    if images.shape[0] != b_count:
        raise ValueError(f"result has {b_count} images, got {images.shape[0]}")
    was_training = model.training
    model.eval()
    try:
        clean = model(images.to(device)).float().cpu()
        perturbed = torch.cat([
            model(chunk.to(device)).float().cpu()
            for chunk in result.perturbed.flatten(0, 1).split(32)
        ]).view(b_count, k_count, -1)
    finally:
        model.train(was_training)
    frames = []
    for b in range(b_count):
        df = _settings_frame(result, b)
        t = result.targets[b]
        y0 = clean[b].expand(k_count, -1)
        y1 = perturbed[b]
        idx = t.view(-1, 1)

        def split(y, idx=idx):
            yk = y.gather(1, idx).squeeze(1)
            others = logsumexp_others(y, idx)
            mean_others = (y.sum(1) - yk) / (y.shape[1] - 1)
            return yk, others, mean_others

        yk0, lse0, mo0 = split(y0)
        yk1, lse1, mo1 = split(y1)
        df["prob_before"] = result.target_prob_before[b].numpy()
        df["prob_after"] = result.target_prob_after[b].numpy()
        df["d_target_logit"] = (yk1 - yk0).numpy()
        df["d_lse_others"] = (lse1 - lse0).numpy()
        df["d_log_odds"] = ((yk1 - lse1) - (yk0 - lse0)).numpy()
        df["d_mean_others"] = (mo1 - mo0).numpy()
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def plot_logit_decomposition(df: pd.DataFrame, ax: Axes | None = None,
                             labels: Sequence[str] | None = None) -> Figure:
    """Grouped bars per row of :func:`logit_decomposition`: the target-logit change, minus the
    others' log-sum-exp change, and their sum, the change in the target's log-odds."""
    if ax is None:
        fig = Figure(figsize=(max(5.0, 0.75 * len(df) + 1.5), 3.6), layout="constrained")
        ax = fig.subplots()
    fig = ax.figure
    x = np.arange(len(df))
    w = 0.27
    ax.bar(x - w, df["d_target_logit"], w, label=r"$\Delta y_k$ (target logit)", color="tab:blue")
    ax.bar(x, -df["d_lse_others"], w, label=r"$-\Delta\,\mathrm{LSE}_{i\neq k}\,y_i$ (others)",
           color="tab:orange")
    ax.bar(x + w, df["d_log_odds"], w, label=r"$\Delta \log\frac{p_k}{1-p_k}$ (sum)",
           color="0.4")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(labels if labels is not None else
                       [f"{m}\ntrial {s}" for m, s in zip(df["mode"], df["seed"], strict=True)],
                       fontsize=8)
    ax.set_ylabel("change from X to Q")
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    return fig


def consistency_table(result: UPXResult, b: int = 0, threshold: float = 0.6) -> pd.DataFrame:
    """Trial consistency per setting group of image ``b``: settings equal but for their seed.

    Columns: trials, mean pairwise Pearson r and IoU of the thresholded maps
    (:func:`upx_core.consistency`), the mean target probability before and after, and the mean
    share of pixels above ``threshold`` (Table 2's ratio). Groups with one trial get NaN
    consistency. Rows keep the order in which the groups first appear.
    """
    groups: dict[tuple, list[int]] = {}
    for k, s in enumerate(result.settings):
        key = dataclasses.replace(s, seed=0), int(result.targets[b, k])
        groups.setdefault(key, []).append(k)
    up = result.masks_upsampled[b]
    rows = []
    for (s, t), ks in groups.items():
        c = consistency(up[ks], threshold) if len(ks) > 1 else {"pearson": float("nan"),
                                                                  "iou": float("nan")}
        rows.append({
            "mode": s.mode, "lambda1": s.lambda1, "lambda2": s.lambda2, "beta": s.beta,
            "gamma": s.gamma, "target_name": result.class_name(t), "trials": len(ks),
            "pearson": c["pearson"], "iou": c["iou"],
            "prob_before": float(result.target_prob_before[b, ks].mean()),
            "prob_after": float(result.target_prob_after[b, ks].mean()),
            "ratio": float(undesirable_pixel_ratio(up[ks], threshold).mean()),
        })
    return pd.DataFrame(rows)


def probability_table(
    result: UPXResult,
    classes: Sequence[int | str],
    b: int = 0,
    labels: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Probabilities of ``classes`` on image ``b``: one row for the clean image, one per mask.

    Rows: ``"before (clean image)"``, then mask ``k`` of image ``b`` labelled ``labels[k]``
    (default: ``"<mode> -> <target>"``). Columns: the class names. Values: softmax
    probabilities in [0, 1], so a column read downwards shows how each mask moved that class.
    """
    cats = result.categories
    idx = [class_index(c, cats) for c in classes]
    names = [result.class_name(i) for i in idx]
    k_count = result.targets.shape[1]
    if labels is None:
        labels = [
            f"{result.settings[k].mode} \u2192 {result.class_name(int(result.targets[b, k]))}"
            for k in range(k_count)
        ]
    if len(labels) != k_count:
        raise ValueError(f"got {len(labels)} labels for {k_count} masks")
    if len(set(labels)) != len(labels) or BEFORE in labels:
        raise ValueError(f"row labels must be distinct and not {BEFORE!r}: {list(labels)}")
    cols = torch.tensor(idx)
    rows = torch.cat([result.probs_before[b, cols].unsqueeze(0), result.probs_after[b][:, cols]])
    return pd.DataFrame(rows.double().numpy(), index=[BEFORE, *labels], columns=names)


@torch.no_grad()
def clean_probs(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The model's class probabilities of the clean ``images`` (``[B, 3, H, W]``, or one image
    ``[3, H, W]``): softmax of one forward pass, ``[B, C]`` (or ``[C]``) on the CPU."""
    dev = next(model.parameters(), torch.empty(0)).device
    x = images if images.dim() == 4 else images[None]
    probs = torch.softmax(model(x.to(dev)), dim=1).cpu()
    return probs if images.dim() == 4 else probs[0]


def top_classes(probs: torch.Tensor, categories: Sequence[str], k: int = 5) -> pd.DataFrame:
    """The ``k`` most probable classes of ``probs`` (``[C]``), the most probable first: their
    ``class`` names and ``probability``."""
    top = probs.topk(k)
    return pd.DataFrame({"class": [categories[int(i)] for i in top.indices],
                         "probability": top.values.numpy()})
