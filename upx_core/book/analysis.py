"""What a mask did to the classifier, beyond its target's probability: the logit decomposition
(through the target's own logit, or through the other classes), trial consistency per setting,
the probabilities of chosen classes (the paper's Fig. 4), and hand-drawn image regions (does a
mask sit on the boots; what does blurring only them do) with their control: the same measure
for boxes of the same size placed at random on the same image.

Every function reads an :class:`UPXResult` (or runs the model once on given pixels); nothing
here optimizes.
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

from ..method.config import OptimConfig
from ..method.equations import logsumexp_others
from ..method.metrics import consistency, undesirable_pixel_ratio
from ..method.models import class_index
from ..method.result import UPXResult
from ..method.runtime import perturbed_probs

__all__ = [
    "logit_decomposition",
    "plot_logit_decomposition",
    "consistency_table",
    "probability_table",
    "box_region",
    "region_share",
    "blur_region",
    "random_boxes",
    "box_shares",
    "blur_boxes",
    "percentile_of",
    "share_control",
    "blur_control",
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


def box_region(box: Sequence[int], size: Sequence[int] = (224, 224)) -> torch.Tensor:
    """An ``[H, W]`` map that is 1 inside ``box = (top, bottom, left, right)`` (pixel rows
    ``top:bottom``, columns ``left:right``) and 0 elsewhere."""
    top, bottom, left, right = (int(v) for v in box)
    h, w = int(size[0]), int(size[1])
    if not (0 <= top < bottom <= h and 0 <= left < right <= w):
        raise ValueError(f"box {tuple(box)} is empty or outside a {h} x {w} image")
    region = torch.zeros(h, w)
    region[top:bottom, left:right] = 1.0
    return region


def region_share(undesirable: torch.Tensor, region: torch.Tensor) -> dict[str, float]:
    """How much of a map of undesirable pixels (1 - M') lies inside ``region`` (``[H, W]``).

    ``share``: the region's part of the map's total mass; ``area``: the region's part of the
    image; ``enrichment``: share / area (1 means no more than a uniform map would put there).
    A map with no mass has share 0.
    """
    u = undesirable.detach().reshape(region.shape).double().clamp(0, 1)
    r = region.double()
    total = float(u.sum())
    share = float((u * r).sum()) / total if total > 0 else 0.0
    area = float(r.mean())
    return {"share": share, "area": area, "enrichment": share / area if area > 0 else 0.0}


def blur_region(model: torch.nn.Module, image: torch.Tensor, region: torch.Tensor,
                config: OptimConfig | None = None) -> torch.Tensor:
    """Class probabilities ``[C]`` of ``image`` with only ``region`` replaced by its blur.

    The same perturbation as Eq. 1 with a hand-drawn mask M' = 1 - region, so a claim about a
    part of the image ("the end of the horn") can be tested directly.
    """
    dev = next(model.parameters(), torch.empty(0)).device
    x = image.unsqueeze(0).to(dev, torch.float32) if image.dim() == 3 else image.to(dev)
    keep = (1.0 - region.to(dev, torch.float32)).reshape(1, 1, *region.shape[-2:])
    return perturbed_probs(model, x, keep, config)[0].cpu()


# --- the random-box control: does the mask (or the blur) single out a hand-drawn box? --------
# A hand-drawn box is a hypothesis. The same measure on boxes of the same size placed at random
# on the same image says whether the box stands out: its percentile among them, and a one-sided
# permutation p-value.


def random_boxes(box: Sequence[int], size: Sequence[int] = (224, 224), n: int = 200,
                 seed: int = 0) -> torch.Tensor:
    """``n`` boxes of ``box``'s height and width at uniformly random places inside the image.

    ``box`` is ``(top, bottom, left, right)`` as in :func:`box_region`; the result is a long
    tensor ``[n, 4]`` in the same order, drawn from its own seeded generator (the same ``seed``
    gives the same boxes on every machine).
    """
    top, bottom, left, right = (int(v) for v in box)
    box_region(box, size)  # the same checks and message for a box outside the image
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    h, w = bottom - top, right - left
    gen = torch.Generator().manual_seed(int(seed))
    tops = torch.randint(0, int(size[0]) - h + 1, (n,), generator=gen)
    lefts = torch.randint(0, int(size[1]) - w + 1, (n,), generator=gen)
    return torch.stack([tops, tops + h, lefts, lefts + w], dim=1)


def box_shares(undesirable: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """The share of a map's mass (1 - M', ``[H, W]``) inside each of ``boxes`` (``[n, 4]``):
    :func:`region_share`'s ``share`` for every box at once, from one integral image. A map with
    no mass gives 0 for every box. Shares are rounded to 12 decimals, so boxes holding the same
    mass tie exactly (:func:`percentile_of` counts ties half) whatever the summation order."""
    u = undesirable.detach().reshape(undesirable.shape[-2:]).double().clamp(0, 1)
    total = float(u.sum())
    boxes = torch.as_tensor(boxes, dtype=torch.long).reshape(-1, 4)
    if total <= 0:
        return torch.zeros(len(boxes), dtype=torch.float64)
    integral = torch.nn.functional.pad(u.cumsum(0).cumsum(1), (1, 0, 1, 0))
    top, bottom, left, right = boxes.unbind(1)
    inside = (integral[bottom, right] - integral[top, right] - integral[bottom, left]
              + integral[top, left])
    return torch.round(inside / total, decimals=12)


def blur_boxes(model: torch.nn.Module, image: torch.Tensor, boxes: torch.Tensor,
               config: OptimConfig | None = None, batch_size: int = 32) -> torch.Tensor:
    """Class probabilities ``[n, C]`` of ``image`` with only box ``i`` blurred, for each of
    ``boxes`` (``[n, 4]``): :func:`blur_region` for many boxes, ``batch_size`` forward passes at
    a time."""
    dev = next(model.parameters(), torch.empty(0)).device
    x = (image[0] if image.dim() == 4 else image).to(dev, torch.float32)
    boxes = torch.as_tensor(boxes, dtype=torch.long).reshape(-1, 4)
    out = []
    for chunk in boxes.split(batch_size):
        keep = torch.stack([1.0 - box_region(bx.tolist(), x.shape[-2:]) for bx in chunk])
        keep = keep.unsqueeze(1).to(dev)
        out.append(perturbed_probs(model, x.expand(len(chunk), -1, -1, -1), keep, config).cpu())
    return torch.cat(out)


def percentile_of(value: float, control: Sequence[float] | torch.Tensor) -> dict[str, float]:
    """Where ``value`` falls among the ``control`` values (the same measure on random boxes).

    ``percentile``: the percent of control values below ``value``, ties counted half (100: above
    every random box; 50: typical). ``p_value``: the one-sided permutation p-value of "larger
    than the random boxes", (1 + #{control >= value}) / (n + 1); ``p_value_low`` the same for
    "smaller". ``control_median`` and ``n`` describe the control.
    """
    c = torch.as_tensor(control, dtype=torch.float64).flatten()
    if c.numel() == 0:
        raise ValueError("the control has no values")
    v = float(value)
    below, tied = int((c < v).sum()), int((c == v).sum())
    n = c.numel()
    return {"value": v, "control_median": float(c.quantile(0.5)),
            "percentile": 100.0 * (below + 0.5 * tied) / n,
            "p_value": (1 + n - below) / (n + 1), "p_value_low": (1 + below + tied) / (n + 1),
            "n": n}


def share_control(undesirable: torch.Tensor, box: Sequence[int], n: int = 200,
                  seed: int = 0) -> dict[str, float]:
    """The share of ``undesirable``'s mass inside ``box``, against ``n`` random boxes of the same
    size on the same image (:func:`random_boxes`, :func:`percentile_of`)."""
    size = undesirable.shape[-2:]
    share = float(box_shares(undesirable, torch.tensor([list(box)]))[0])
    return percentile_of(share, box_shares(undesirable, random_boxes(box, size, n, seed)))


def blur_control(model: torch.nn.Module, image: torch.Tensor, box: Sequence[int],
                 targets: int | Sequence[int], n: int = 100, seed: int = 0,
                 config: OptimConfig | None = None) -> pd.DataFrame:
    """The change of each target's probability when only ``box`` is blurred, against the same
    change for ``n`` random boxes of the same size (batched forward passes, one set for all
    targets). One row per target: ``target``, ``clean`` (its probability on the clean image),
    ``value`` (the box's change from it) and :func:`percentile_of`'s columns."""
    size = image.shape[-2:]
    boxes = torch.cat([torch.tensor([[int(v) for v in box]]), random_boxes(box, size, n, seed)])
    probs = blur_boxes(model, image, boxes, config).double()
    dev = next(model.parameters(), torch.empty(0)).device
    x = (image if image.dim() == 4 else image[None]).to(dev, torch.float32)
    # the clean image through the same path (M' = 1 keeps every pixel: Q = X)
    clean = perturbed_probs(model, x, torch.ones(1, 1, *size, device=dev), config)[0].cpu()
    rows = []
    for t in [targets] if isinstance(targets, int) else targets:
        change = probs[:, int(t)] - float(clean[int(t)])
        rows.append({"target": int(t), "clean": float(clean[int(t)]),
                     **percentile_of(float(change[0]), change[1:])})
    return pd.DataFrame(rows)
