"""Hand-drawn image regions (does a mask sit on the boots; what does blurring only them do) and
their control: the same measure for boxes of the same size placed at random on the same image.

A box is ``(top, bottom, left, right)`` in pixels of the model's input (rows ``top:bottom``,
columns ``left:right``). Nothing here optimizes: the shares read a map of undesirable pixels
(1 - M'), the blurs run the model once per batch of boxes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch

from ..method.config import OptimConfig
from ..method.runtime import perturbed_probs

__all__ = [
    "box_region",
    "region_share",
    "blur_region",
    "random_boxes",
    "box_shares",
    "blur_boxes",
    "percentile_of",
    "share_control",
    "box_table",
    "blur_control",
    "blurred_boxes",
    "box_blur_controls",
]


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


def box_table(undesirable: torch.Tensor, box: Sequence[int], n: int = 200,
              seed: int = 0) -> pd.DataFrame:
    """Where ``box`` stands in each map of ``undesirable`` (``[K, H, W]``, or ``[K, 1, H, W]``):
    one row per map, :func:`region_share`'s ``share``, ``area`` and ``enrichment`` and
    :func:`share_control`'s columns (``value``, the share from the integral image, and its
    percentile among ``n`` random boxes of the box's size, the same boxes for every map)."""
    size = undesirable.shape[-2:]
    region = box_region(box, size)
    return pd.DataFrame([{**region_share(u, region), **share_control(u, box, n, seed)}
                         for u in undesirable.reshape(-1, *size)])


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


def _names(model: torch.nn.Module, classes: Sequence[int], names: Sequence[str] | None):
    return list(names) if names is not None else [model.categories[int(c)] for c in classes]


def blurred_boxes(model: torch.nn.Module, image: torch.Tensor,
                  boxes: Mapping[str, Sequence[int]], classes: Sequence[int],
                  config: OptimConfig | None = None,
                  names: Sequence[str] | None = None) -> pd.DataFrame:
    """The probabilities of ``classes`` (indices) on the clean image and with each of ``boxes``
    (``{label: box}``) alone blurred by hand (:func:`blur_region`): rows ``"clean image"`` and
    ``"<label> blurred"``, one column per class, named ``names`` (default: the model's
    category names)."""
    idx = [int(c) for c in classes]
    dev = next(model.parameters(), torch.empty(0)).device
    x = image if image.dim() == 4 else image[None]
    with torch.no_grad():
        clean = torch.softmax(model(x.to(dev)), dim=1)[0].cpu()
    rows = {"clean image": clean[idx].numpy()}
    for label, box in boxes.items():
        region = box_region(box, image.shape[-2:])
        rows[f"{label} blurred"] = blur_region(model, image, region, config)[idx].numpy()
    return pd.DataFrame(rows, index=_names(model, idx, names)).T


def box_blur_controls(model: torch.nn.Module, image: torch.Tensor,
                      boxes: Mapping[str, Sequence[int]], classes: Sequence[int], n: int = 100,
                      seed: int = 0, config: OptimConfig | None = None,
                      names: Sequence[str] | None = None) -> pd.DataFrame:
    """:func:`blur_control` for each of ``boxes`` (``{label: box}``) and ``classes``: one row
    per (box, class), its columns followed by ``box`` (the label) and ``class`` (``names``,
    default the model's category names)."""
    return pd.concat([blur_control(model, image, box, list(classes), n=n, seed=seed,
                                   config=config)
                      .assign(box=label, **{"class": _names(model, classes, names)})
                      for label, box in boxes.items()], ignore_index=True)
