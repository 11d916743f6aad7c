"""The batched mask optimizer: B images x K settings, one forward and one backward per iteration.

Every mask's loss is summed into one scalar, so each mask receives exactly the gradient of its
own loss, and Adam (an element-wise update) moves it as if it were optimized alone: what else
shares the batch does not change a result beyond floating-point reassociation in the model.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .config import MODES, SEED_LIMIT, MaskSetting, OptimConfig
from .equations import blur_for, loss_terms, perturb, upsample_mask
from .fold import fold_batchnorm
from .models import ProbsAsLogits, check_network
from .result import TERMS, UPXResult
from .runtime import (
    channels_last_weights,
    check_amp,
    cuda_batch_size,
    forward,
    frozen,
    on_device,
    resolve_device,
)

__all__ = ["optimize_masks", "initial_mask", "job_targets", "target_list", "check_finite"]


def initial_mask(seed: int, size: int, init_noise: float) -> torch.Tensor:
    """The trial's start M0 = 1 - init_noise * U(0, 1), ``[1, size, size]``, from a CPU generator.

    A CPU generator seeded per mask makes M0 independent of device, batch size and batch order.
    """
    gen = torch.Generator().manual_seed(seed)
    return 1.0 - init_noise * torch.rand(1, size, size, generator=gen)


# Added to a trial's seed for its perturb_noise stream, so that the noise is not drawn from the
# same stream as the trial's M0 (2^64 / golden ratio: far from any small seed).
NOISE_SEED_OFFSET = 0x9E3779B97F4A7C15


def noise_generators(settings: Sequence[MaskSetting]) -> list[torch.Generator]:
    """One CPU generator per mask for ``OptimConfig.perturb_noise``, seeded from its trial seed
    (plus :data:`NOISE_SEED_OFFSET`), so a mask's noise does not depend on the batch."""
    return [torch.Generator().manual_seed((s.seed + NOISE_SEED_OFFSET) % SEED_LIMIT)
            for s in settings]


def _noise(gens: list[torch.Generator], shape, std: float, dev: torch.device) -> torch.Tensor:
    """Gaussian noise ``[len(gens), *shape]`` with std ``std``, each row from its own generator
    on the CPU, then moved to ``dev`` (through pinned memory on CUDA, without a host sync)."""
    noise = torch.stack([torch.randn(*shape, generator=g) for g in gens]).mul_(std)
    if dev.type == "cuda":
        return noise.pin_memory().to(dev, non_blocking=True)
    return noise.to(dev)


def target_list(targets, b: int, categories) -> list[int | None]:
    """Each image's target as a class index, ``None`` for its top class; checked before any work.

    One target (an index, NumPy integer, name or 0-d tensor/array) applies to every image; a
    sequence, tensor or array gives one per image.
    """
    from .models import class_index

    if targets is None:
        return [None] * b
    if isinstance(targets, (torch.Tensor, np.ndarray)):
        targets = targets.item() if targets.ndim == 0 else targets.reshape(-1).tolist()
    if isinstance(targets, (str, numbers.Number)):
        targets = [targets] * b
    try:
        targets = list(targets)
    except TypeError:
        raise ValueError(
            "targets must be a class index or name, a sequence of them (one per image) or "
            f"None, got {type(targets).__name__}"
        ) from None
    if len(targets) != b:
        raise ValueError(f"got {len(targets)} targets for {b} images")
    return [None if t is None else class_index(t, categories) for t in targets]


def job_targets(targets, image_targets: list[int | None], settings: Sequence[MaskSetting],
                scores_clean: torch.Tensor, categories, remedy: str) -> torch.Tensor:
    """Each (image, setting) pair's target class, image-major (``[B * K]``).

    ``image_targets`` is :func:`target_list`'s; ``None`` becomes the image's top class in
    ``scores_clean`` (``[B, C]`` logits or log-probabilities); a setting's own target wins.
    ``targets`` (the caller's argument) tells whether classes were given by name; names need the
    classifier's own class names, else a name would silently pick its ImageNet index.
    ``remedy`` ends that error: how the caller passes class names.
    """
    b, n_classes = scores_clean.shape
    names = isinstance(targets, str) or (isinstance(targets, Sequence)
                                         and any(isinstance(t, str) for t in targets))
    if names and (categories is None or len(categories) != n_classes):
        raise ValueError(
            f"target names need the classifier's own class names: it has {n_classes} outputs "
            f"and {'no' if categories is None else len(categories)} category names; pass class "
            f"indices, or {remedy}")
    top = scores_clean.argmax(dim=1).cpu().tolist()
    image_targets = [top[i] if t is None else t for i, t in enumerate(image_targets)]
    if max(image_targets) >= n_classes:
        raise ValueError(f"class index {max(image_targets)} is out of range 0..{n_classes - 1}")
    job_target = torch.tensor([
        s.target if s.target is not None else int(image_targets[i])
        for i in range(b) for s in settings
    ])
    if (job_target < 0).any() or (job_target >= n_classes).any():
        raise ValueError(f"a setting's target is outside 0..{n_classes - 1}")
    return job_target


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
    Returns an :class:`UPXResult` with masks, probabilities, top-5s and per-iteration terms.
    """
    config = config or OptimConfig()
    if settings is None:
        settings = [MaskSetting()]
    elif isinstance(settings, MaskSetting):
        settings = [settings]
    settings = list(settings)
    if not settings:
        raise ValueError("settings is empty: give at least one MaskSetting")
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise ValueError(
            f"images must be a float tensor in [0, 1], got dtype {images.dtype}; convert it "
            "first (a uint8 image: images.float() / 255, a bool one: images.float())"
        )
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch: give at least one image")
    if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise ValueError("images must be finite and in [0, 1]")
    if min(images.shape[-2:]) < config.mask_size:
        raise ValueError(
            f"images are {images.shape[-1]}x{images.shape[-2]}, smaller than the "
            f"{config.mask_size}x{config.mask_size} mask"
        )
    if min(images.shape[-2:]) <= config.kernel_size // 2:
        raise ValueError(
            f"images are {images.shape[-1]}x{images.shape[-2]}, too small for the "
            f"{config.kernel_size}-pixel blur kernel"
        )
    if batch_size is not None and batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    image_targets = target_list(targets, images.shape[0], getattr(model, "categories", None))
    dev = resolve_device(device)
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
                                 keep_images, progress, targets)


def _optimize_all(model, images, image_targets, settings, config, dev, batch_size, keep_images,
                  progress, targets=None) -> UPXResult:
    categories = getattr(model, "categories", None)  # a folded copy keeps them
    b, k = images.shape[0], len(settings)
    n = b * k
    size = tuple(images.shape[-2:])
    if batch_size is None and dev.type == "cuda":
        batch_size = cuda_batch_size(model, size, dev, config)
    # one memory layout whatever the caller's (load_image returns a strided view): kernels pick
    # their path by layout, so the same pixels would otherwise give another mask
    images = images.detach().to(dev, torch.float32).contiguous()
    blurred = blur_for(images, config)  # once per image
    with torch.no_grad():
        logits_clean = torch.cat([
            forward(model, images[i:i + 64], config) for i in range(0, b, 64)
        ])
    job_image = torch.arange(b).repeat_interleave(k)
    job_setting = torch.arange(k).repeat(b)
    job_target = job_targets(targets, image_targets, settings, logits_clean, categories,
                             "Classifier(..., categories=[...])")

    chunk = batch_size or n
    masks = torch.empty(n, 1, config.mask_size, config.mask_size)
    history = torch.empty(config.iterations, n, len(TERMS))
    probs_after = torch.empty(n, logits_clean.shape[1])
    perturbed = torch.empty(n, 3, *size) if keep_images else None
    bar = tqdm(total=config.iterations * n, disable=not progress, unit="mask-it",
               desc=f"upx {n} mask{'s' * (n != 1)}", leave=False)
    for start in range(0, n, chunk):
        sel = slice(start, min(start + chunk, n))
        out = _optimize_chunk(
            model, images, blurred, logits_clean, job_image[sel], job_target[sel],
            [settings[s] for s in job_setting[sel].tolist()], config, bar,
        )
        masks[sel], history[:, sel], probs_after[sel] = out[0], out[1], out[2]
        if perturbed is not None:
            perturbed[sel] = out[3]
    bar.close()

    probs_before = torch.softmax(logits_clean.float(), dim=1).cpu()
    return UPXResult.build(
        config=config, settings=settings, targets=job_target.view(b, k), masks=masks,
        probs_before=probs_before, probs_after=probs_after, history=history,
        perturbed=perturbed, image_size=size, categories=categories, device=str(dev),
    )


def _optimize_chunk(model, images, blurred, logits_clean, job_image, job_target, settings,
                    config, bar):
    """Adam on one chunk of masks. On CUDA the loop never waits for the device except in
    ``check_finite`` every ``check_every`` iterations: per-mask constants are built once
    before it, the loss history stays on the device, and Adam keeps its step count on the
    host. ``tests/test_optimizer_gpu.py`` counts the host-reading calls to keep it so."""
    dev = images.device
    idx = job_image.to(dev)
    x, hx, clean = images[idx], blurred[idx], logits_clean[idx]
    target = job_target.to(dev)
    mode = torch.tensor([MODES.index(s.mode) for s in settings], device=dev)
    lambda1, lambda2, beta, gamma = (
        torch.tensor([getattr(s, f) for s in settings], dtype=torch.float32, device=dev)
        for f in ("lambda1", "lambda2", "beta", "gamma")
    )
    mask = torch.stack([
        initial_mask(s.seed, config.mask_size, config.init_noise) for s in settings
    ]).to(dev).requires_grad_(True)
    opt = torch.optim.Adam([mask], lr=config.lr)
    size = tuple(images.shape[-2:])
    history = torch.empty(config.iterations, len(settings), len(TERMS), device=dev)
    done = 0  # iterations already reported to the progress bar
    # perturb_noise 0 draws nothing, so the default run is the same arithmetic as without it
    gens = noise_generators(settings) if config.perturb_noise > 0 else None
    for it in range(config.iterations):
        q = perturb(x, hx, upsample_mask(mask, size))
        if gens is not None:
            q = q + _noise(gens, q.shape[1:], config.perturb_noise, dev)
        logits = forward(model, q, config)
        terms = loss_terms(logits, clean, mask, target, mode, lambda1, lambda2, beta, gamma,
                           config)
        history[it] = torch.stack([terms[t] for t in TERMS], dim=1).detach()
        opt.zero_grad(set_to_none=True)
        terms["total"].sum().backward()
        opt.step()
        with torch.no_grad():
            mask.clamp_(0.0, 1.0)
        if (it + 1) % config.check_every == 0 or it + 1 == config.iterations:
            check_finite(history[done: it + 1], mask, settings, it)
            bar.update(len(settings) * (it + 1 - done))
            done = it + 1
    with torch.no_grad():  # the final probabilities: Q without perturb_noise
        final = mask.detach()
        q = perturb(x, hx, upsample_mask(final, size))
        probs = torch.softmax(forward(model, q, config), dim=1)
    return final.cpu(), history.cpu(), probs.cpu(), q.cpu()


def check_finite(history, mask, settings, it):
    bad = ~torch.isfinite(history).all(dim=(0, 2)) | ~torch.isfinite(mask).flatten(1).all(dim=1)
    if bad.any():
        j = int(bad.nonzero()[0])
        raise FloatingPointError(
            f"NaN or Inf in the loss of mask {j} ({settings[j]}) by iteration {it + 1}; "
            "lower lr or the lambdas"
        )
