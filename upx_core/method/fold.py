"""Batch norm folded into the convolution before it, for a frozen classifier.

With frozen weights in eval mode a batch norm is a fixed per-channel affine map, so a convolution
followed by one computes the same as a single convolution with

    s  = g / sqrt(v + eps)                (per output channel)
    W' = s * W,    b' = s * (b - mu) + t

(g, t: the norm's weight and bias; mu, v: its running mean and variance). Every optimizer
iteration runs the classifier forward and backward, and on the CPU the separate normalization
passes cost EfficientNet-Lite0 about a third of that time (322 ms unfolded, 214 ms folded for 8
images, 2 threads; ``book/implementation-notes.md``).
The caller's model is never changed: the folded network is a copy.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

__all__ = ["fold_batchnorm", "CHECK_SIZE"]

# The side, in pixels, of the probe crop the folded copy is checked on. A fold is right or wrong
# per convolution, whatever the input's size: a wrong one changes every output pixel of its
# layer, and a 64 x 64 crop still runs every layer (EfficientNet-Lite0's last feature map is
# 2 x 2). One such image costs about a tenth of the two 224 x 224 images the optimizer passes.
CHECK_SIZE = 64


def _foldable_norm(module: nn.Module) -> bool:
    if type(module) is nn.BatchNorm2d:
        return True
    try:  # timm's norm + activation layer (EfficientNet's): the activation stays
        from timm.layers import BatchNormAct2d
    except ImportError:
        return False
    return type(module) is BatchNormAct2d


def _after_norm(norm: nn.Module) -> nn.Module:
    """What remains of ``norm`` once its affine map moved into the convolution."""
    if type(norm) is nn.BatchNorm2d:
        return nn.Identity()
    return nn.Sequential(norm.drop, norm.act)  # BatchNormAct2d: norm, then drop, then act


def _fold_into(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        scale = norm.running_var.add(norm.eps).rsqrt()
        if norm.weight is not None:
            scale = scale * norm.weight
        bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
        shift = norm.bias if norm.bias is not None else torch.zeros_like(norm.running_mean)
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        conv.bias = nn.Parameter((bias - norm.running_mean) * scale + shift,
                                 requires_grad=conv.weight.requires_grad)


def _fold_children(parent: nn.Module) -> int:
    folded = 0
    children = list(parent.named_children())
    for i, (name, child) in enumerate(children):
        prev = children[i - 1][1] if i else None
        if (isinstance(prev, nn.Conv2d) and _foldable_norm(child) and not child.training
                and child.running_mean is not None
                and child.num_features == prev.out_channels):
            _fold_into(prev, child)
            setattr(parent, name, _after_norm(child))
            folded += 1
        else:
            folded += _fold_children(child)
    return folded


def fold_batchnorm(model: nn.Module, probe: torch.Tensor | None = None,
                   rtol: float = 1e-3) -> tuple[nn.Module, int]:
    """A copy of ``model`` with each eval-mode batch norm folded into the convolution before it.

    A norm is folded when it is registered right after a ``Conv2d`` in the same parent module
    (how torchvision's ResNets and timm's EfficientNets are written) and is a plain
    ``BatchNorm2d`` or timm's ``BatchNormAct2d``. Registration order is not execution order in
    every model, so with a ``probe`` batch the copy's logits are compared with the model's: if
    they differ by more than ``rtol`` of the logits' scale, the original model is returned with
    a warning. The comparison runs on the probe's first image, center-cropped to at most
    :data:`CHECK_SIZE` pixels a side (the whole first image for a model that refuses the
    crop). Returns ``(network, number of norms folded)``; with nothing to fold, ``model``
    itself and 0 (no copy is made).
    """
    if not any(_foldable_norm(m) and not m.training for m in model.modules()):
        return model, 0
    folded_model = copy.deepcopy(model)
    count = _fold_children(folded_model)
    if count == 0:
        return model, 0
    if probe is not None:
        small = _check_input(probe)
        try:
            err, scale = _fold_error(model, folded_model, small)
        except (RuntimeError, ValueError):
            if small.shape == probe[:1].shape:
                raise
            # a model built for one input size (a flatten before its classifier, say)
            err, scale = _fold_error(model, folded_model, probe[:1])
        if not err <= rtol * scale:
            warnings.warn(
                f"batch norm folding changed the logits by {err:.3g} (scale {scale:.3g}); "
                "optimizing with the unfolded model instead (OptimConfig(fold_batchnorm=False) "
                "turns folding off)", RuntimeWarning, stacklevel=2)
            return model, 0
    return folded_model, count


def _check_input(probe: torch.Tensor) -> torch.Tensor:
    """The probe's first image, center-cropped to at most :data:`CHECK_SIZE` pixels a side."""
    image = probe[:1]
    if image.dim() != 4:
        return image
    h, w = image.shape[-2:]
    top, left = max(h - CHECK_SIZE, 0) // 2, max(w - CHECK_SIZE, 0) // 2
    return image[..., top:top + CHECK_SIZE, left:left + CHECK_SIZE]


def _fold_error(model: nn.Module, folded: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """The largest difference between the two networks' outputs on ``x``, and their scale."""
    with torch.no_grad():
        expected = model(x).float()
        got = folded(x).float()
    return float((got - expected).abs().max()), float(expected.abs().max()) or 1.0
