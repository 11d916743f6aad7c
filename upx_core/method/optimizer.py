"""The white-box optimizer: B images x K settings, one forward and one backward per iteration.

:func:`optimize_masks` checks the images, the model and the targets, prepares the model (eval
mode, frozen, batch norm folded, on the device, channels-last) and runs the shared loop
(:mod:`.loop`) with the autograd gradient (:class:`~upx_core.method.gradient.Autograd`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import MaskSetting, OptimConfig
from .equations import blur_for
from .fold import fold_batchnorm
from .gradient import Autograd, noise_generators
from .loop import (
    as_settings,
    check_finite,
    check_images,
    initial_mask,
    job_targets,
    optimize,
    target_list,
)
from .models import ProbsAsLogits, check_network
from .result import UPXResult
from .runtime import (
    channels_last_weights,
    check_amp,
    cuda_batch_size,
    forward,
    frozen,
    on_device,
    resolve_amp,
    resolve_device,
)

# initial_mask, job_targets, target_list, check_finite and noise_generators moved to the loop
# and the gradient; this module's callers keep importing them from here.
__all__ = ["optimize_masks", "reference_images", "initial_mask", "job_targets", "target_list",
           "check_finite", "noise_generators"]


def reference_images(reference: torch.Tensor | float, images: torch.Tensor) -> torch.Tensor:
    """``reference`` (see :func:`optimize_masks`) as one image per image of ``images``, on their
    device; a one-line ValueError for a value outside [0, 1], a NaN or a shape that does not
    broadcast."""
    ref = torch.as_tensor(reference, dtype=torch.float32, device=images.device)
    if not bool(torch.isfinite(ref).all()) or float(ref.min()) < 0 or float(ref.max()) > 1:
        raise ValueError("reference: values must be finite and in [0, 1] like the images, got "
                         f"[{float(ref.min()):.3g}, {float(ref.max()):.3g}]")
    try:
        return ref.expand(images.shape).contiguous()
    except RuntimeError:
        raise ValueError(f"reference: shape {tuple(ref.shape)} does not broadcast to the images' "
                         f"{tuple(images.shape)}") from None


def optimize_masks(
    model: nn.Module,
    images: torch.Tensor,
    targets: int | str | Sequence[int | str | None] | torch.Tensor | None = None,
    settings: MaskSetting | Sequence[MaskSetting] | None = None,
    config: OptimConfig | None = None,
    device: str | torch.device = "auto",
    batch_size: int | None = None,
    keep_images: bool = True,
    progress: bool = True,
    outputs: str = "logits",
    reference: torch.Tensor | float | None = None,
) -> UPXResult:
    """Optimize one mask per (image, setting) pair, all pairs in one batch per iteration.

    model: maps ``[N, 3, H, W]`` images in [0, 1] to logits (a :class:`Classifier`, or any
        module whose inputs live in the space that the blur and the mask mix).
    images: ``[B, 3, H, W]`` (or one ``[3, H, W]``) floats in [0, 1], B >= 1.
    targets: per image class index (an int or NumPy integer) or name, or one for all images;
        ``None`` takes each image's top class. Checked before any work, like the images.
    settings: K :class:`MaskSetting` (mode, trial seed, lambdas, gamma, optional target); every
        image gets every setting, so the result has B x K masks.
    batch_size: at most this many masks per forward pass (memory); ``None``: all at once on
        the CPU, :func:`suggest_batch_size` on CUDA.
    keep_images: keep the perturbed images in the result (B x K x 3 x H x W floats).
    outputs: what ``model`` returns, ``"logits"`` or ``"probs"`` (a softmax at its end, read
        as logits through ``log p``: :class:`~upx_core.method.models.ProbsAsLogits`). The model is
        checked on the first images before any work (:func:`~upx_core.method.models.check_network`):
        float64 weights, another channel count, a tuple output, or probabilities declared as
        logits are one-line ValueErrors.
    reference: what the masked pixels move toward, Eq. 1's h(X). ``None`` (the paper's): each
        image's Gaussian blur. A number in [0, 1]: a constant image of that value (0, black).
        A tensor in [0, 1] that broadcasts to ``images`` (``[3, H, W]``, ``[B, 3, H, W]``, or a
        colour ``[3, 1, 1]``): one reference for all images, or one per image. This is what
        Captum calls a baseline.
    Returns an :class:`UPXResult` with masks, probabilities, top-5s and per-iteration terms.
    """
    config = config or OptimConfig()
    settings = as_settings(settings)
    images = check_images(images, config)
    if batch_size is not None and batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    image_targets = target_list(targets, images.shape[0], getattr(model, "categories", None))
    dev = resolve_device(device)
    config = resolve_amp(config, dev)  # the result's config says what "auto" chose
    check_amp(config, dev)
    with frozen(model):
        check_network(model, images[:2].detach().to(
            next(model.parameters(), images).device, torch.float32), outputs)
        if outputs == "probs":
            model = ProbsAsLogits(model)
        # The folded copy (if any) is checked against the model on the first images, in eval
        # mode, before any of them is optimized.
        net = model
        if config.fold_batchnorm:
            probe = images[:2].detach().to(next(model.parameters(), images).device, torch.float32)
            net, _ = fold_batchnorm(model, probe)
        # Exits in reverse: the weights' memory format first, then their device.
        with on_device(net, dev), channels_last_weights(net, config.channels_last):
            return _optimize_all(net, images, image_targets, settings, config, dev, batch_size,
                                 keep_images, progress, targets, reference)


def _optimize_all(model, images, image_targets, settings, config, dev, batch_size, keep_images,
                  progress, targets=None, reference=None) -> UPXResult:
    categories = getattr(model, "categories", None)  # a folded copy keeps them
    b, n = images.shape[0], images.shape[0] * len(settings)
    if batch_size is None and dev.type == "cuda":
        batch_size = cuda_batch_size(model, tuple(images.shape[-2:]), dev, config)
    # one memory layout whatever the caller's (load_image returns a strided view): kernels pick
    # their path by layout, so the same pixels would otherwise give another mask
    images = images.detach().to(dev, torch.float32).contiguous()
    blurred = (blur_for(images, config) if reference is None  # once per image
               else reference_images(reference, images))
    with torch.no_grad():
        logits_clean = torch.cat([
            forward(model, images[i:i + 64], config) for i in range(0, b, 64)
        ])
    job_target = job_targets(targets, image_targets, settings, logits_clean, categories,
                             "Classifier(..., categories=[...])")
    bar = tqdm(total=config.iterations * n, disable=not progress, unit="mask-it",
               desc=f"upx {n} mask{'s' * (n != 1)}", leave=False)
    result = optimize(images, blurred, logits_clean, settings, job_target, config,
                      lambda jobs: Autograd(model, jobs, config), chunk=batch_size, bar=bar,
                      keep_images=keep_images, categories=categories, device=str(dev))
    bar.close()
    return result
