"""One Adam loop over B images x K settings for every optimizer; only the gradient differs.

Each mask M minimizes its mode's loss L(M) (Eq. 3, 5 or 7): M0 = 1 - init_noise * U(0, 1)
from the trial's seed, then per iteration an estimate of grad L(M), an Adam step (lr) and M
clipped to [0, 1]. This module owns all of that: the (image, setting) pairs, their targets and
weights, M0, Adam, the clip, the loss history, the NaN checks and the :class:`UPXResult`. Where
the gradient comes from is an :class:`Estimator`, built for each chunk of masks:

- :mod:`.gradient`: autograd through the model (white-box, ``optimize_masks``);
- :mod:`.query`: finite differences along random directions, forward queries only
  (``optimize_masks_blackbox``);
- :mod:`.oracle`: the exact derivative along those same directions (a reference for the
  query-only estimator: its sampling error without the finite differences').

A new way of getting the gradient is one such class; it sees the masks of its chunk and their
constants (:class:`Jobs`) and nothing of the loop.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import MODES, MaskSetting, OptimConfig
from .equations import perturb, upsample_mask
from .result import TERMS, UPXResult

__all__ = ["Estimator", "Jobs", "as_settings", "check_finite", "check_images", "descend",
           "initial_mask", "job_targets", "optimize", "target_list"]


class Estimator(Protocol):
    """How one chunk's masks get grad L(M): built for a :class:`Jobs`, called once per iteration.

    ``cost``: the model evaluations one mask spends per iteration (what progress bars count).
    """

    cost: int

    def gradient(self, mask: torch.Tensor, it: int) -> torch.Tensor:
        """Put the estimate of grad L(M) into ``mask.grad`` (``None`` on entry) for the masks
        ``[n, 1, m, m]`` and return iteration ``it``'s :data:`TERMS` ``[n, len(TERMS)]``."""

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """The scores ``[N, C]`` (logits, or log-probabilities) the loss reads, for ``images``."""


@dataclass
class Jobs:
    """A chunk of masks and what each one's loss needs, mask j at row j.

    x, hx: the image X and its blur h(X) ``[n, 3, H, W]``; clean: X's scores ``[n, C]``;
    weights: :func:`~upx_core.method.equations.loss_terms`'s per-mask arguments (target, mode
    index, lambda1, lambda2, beta, gamma), ``[n]`` each, on X's device.
    """

    settings: list[MaskSetting]
    x: torch.Tensor
    hx: torch.Tensor
    clean: torch.Tensor
    weights: dict[str, torch.Tensor]

    @classmethod
    def select(cls, settings: list[MaskSetting], images: torch.Tensor, blurred: torch.Tensor,
               clean: torch.Tensor, job_image: torch.Tensor, job_target: torch.Tensor) -> Jobs:
        """The masks whose images are ``job_image`` (indices into ``images``), with their
        settings and targets; everything on the images' device."""
        dev = images.device
        idx = job_image.to(dev)
        weights = {"target": job_target.to(dev),
                   "mode": torch.tensor([MODES.index(s.mode) for s in settings], device=dev)}
        for f in ("lambda1", "lambda2", "beta", "gamma"):
            weights[f] = torch.tensor([getattr(s, f) for s in settings], dtype=torch.float32,
                                      device=dev)
        return cls(list(settings), images[idx], blurred[idx], clean[idx], weights)


def initial_mask(seed: int, size: int, init_noise: float) -> torch.Tensor:
    """The trial's start M0 = 1 - init_noise * U(0, 1), ``[1, size, size]``, from a CPU generator.

    A CPU generator seeded per mask makes M0 independent of device, batch size and batch order.
    """
    gen = torch.Generator().manual_seed(seed)
    return 1.0 - init_noise * torch.rand(1, size, size, generator=gen)


def optimize(images: torch.Tensor, blurred: torch.Tensor, clean: torch.Tensor,
             settings: list[MaskSetting], job_target: torch.Tensor, config: OptimConfig,
             estimator_for: Callable[[Jobs], Estimator], *, iterations: int | None = None,
             chunk: int | None = None, check_every: int | None = None, bar: tqdm | None = None,
             keep_images: bool = True, **result) -> UPXResult:
    """Every (image, setting) pair's mask, image-major, ``chunk`` masks at a time.

    images, blurred: ``[B, 3, H, W]`` X and h(X) on the device the loop runs on; clean: X's
    scores ``[B, C]``; job_target: ``[B * K]`` (:func:`job_targets`); ``estimator_for`` builds
    each chunk's :class:`Estimator`. ``iterations`` (default ``config.iterations``) is recorded
    in the result's config; ``result`` goes to :meth:`UPXResult.build` (categories, device,
    queries).
    """
    iterations = config.iterations if iterations is None else iterations
    b, k = images.shape[0], len(settings)
    n = b * k
    size = tuple(images.shape[-2:])
    job_image = torch.arange(b).repeat_interleave(k)
    job_setting = torch.arange(k).repeat(b)
    chunk = chunk or n
    masks = torch.empty(n, 1, config.mask_size, config.mask_size)
    history = torch.empty(iterations, n, len(TERMS))
    probs_after = torch.empty(n, clean.shape[1])
    perturbed = torch.empty(n, 3, *size) if keep_images else None
    for start in range(0, n, chunk):
        sel = slice(start, min(start + chunk, n))
        jobs = Jobs.select([settings[s] for s in job_setting[sel].tolist()], images, blurred,
                           clean, job_image[sel], job_target[sel])
        out = descend(jobs, estimator_for(jobs), config, iterations, check_every, bar)
        masks[sel], history[:, sel], probs_after[sel] = out[0], out[1], out[2]
        if perturbed is not None:
            perturbed[sel] = out[3]
    if iterations != config.iterations:
        config = config.replace(iterations=iterations)
    return UPXResult.build(
        config=config, settings=settings, targets=job_target.view(b, k), masks=masks,
        probs_before=torch.softmax(clean.float(), dim=1).cpu(), probs_after=probs_after,
        history=history, perturbed=perturbed, image_size=size, **result)


def descend(jobs: Jobs, estimator: Estimator, config: OptimConfig, iterations: int,
            check_every: int | None = None, bar: tqdm | None = None,
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Adam on one chunk of masks from their M0; returns the final masks, the history
    ``[iterations, n, len(TERMS)]``, the final probabilities and Q(X; M'), on the CPU.

    The loop reads nothing back from the device except in :func:`check_finite`, every
    ``check_every`` (default ``config.check_every``) iterations and at the last: per-mask
    constants are built before it, the history stays on the device, Adam keeps its step count
    on the host. ``tests/test_optimizer_gpu.py`` counts the host-reading calls to keep it so.
    """
    check_every = check_every or config.check_every
    dev, n = jobs.x.device, len(jobs.settings)
    mask = torch.stack([
        initial_mask(s.seed, config.mask_size, config.init_noise) for s in jobs.settings
    ]).to(dev).requires_grad_(True)
    opt = torch.optim.Adam([mask], lr=config.lr)
    history = torch.empty(iterations, n, len(TERMS), device=dev)
    done = 0  # iterations already checked and reported to the progress bar
    for it in range(iterations):
        opt.zero_grad(set_to_none=True)
        history[it] = estimator.gradient(mask, it)
        opt.step()
        with torch.no_grad():
            mask.clamp_(0.0, 1.0)  # the projection onto [0, 1]
        if (it + 1) % check_every == 0 or it + 1 == iterations:
            check_finite(history[done: it + 1], mask, jobs.settings, it)
            if bar is not None:
                bar.update(n * estimator.cost * (it + 1 - done))
            done = it + 1
    with torch.no_grad():  # the final probabilities, of Q itself (no noise, no neighbours)
        final = mask.detach()
        q = perturb(jobs.x, jobs.hx, upsample_mask(final, tuple(jobs.x.shape[-2:])))
        probs = torch.softmax(estimator.scores(q), dim=1)
    return final.cpu(), history.cpu(), probs.cpu(), q.cpu()


def check_finite(history: torch.Tensor, mask: torch.Tensor, settings: Sequence[MaskSetting],
                 it: int) -> None:
    """A FloatingPointError naming the first mask whose loss history or M is NaN or Inf."""
    bad = ~torch.isfinite(history).all(dim=(0, 2)) | ~torch.isfinite(mask).flatten(1).all(dim=1)
    if bad.any():
        j = int(bad.nonzero()[0])
        raise FloatingPointError(
            f"NaN or Inf in the loss of mask {j} ({settings[j]}) by iteration {it + 1}; "
            "lower lr or the lambdas"
        )


def as_settings(settings: MaskSetting | Sequence[MaskSetting] | None) -> list[MaskSetting]:
    """The settings as a non-empty list; ``None`` is the default :class:`MaskSetting`."""
    if settings is None:
        return [MaskSetting()]
    if isinstance(settings, MaskSetting):
        return [settings]
    settings = list(settings)
    if not settings:
        raise ValueError("settings is empty: give at least one MaskSetting")
    return settings


def check_images(images, config: OptimConfig, arrays: bool = False) -> torch.Tensor:
    """``images`` as ``[B, 3, H, W]`` (one ``[3, H, W]`` gains a batch axis), checked before any
    work: floats, finite, in [0, 1], at least one, no smaller than the mask or the blur kernel.
    ``arrays``: NumPy arrays are accepted too (the query-only optimizer's callers)."""
    if arrays and isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        kinds = "a torch.Tensor or NumPy array" if arrays else "a torch.Tensor"
        raise ValueError(f"images must be {kinds}, got {type(images).__name__}")
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
    return images


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
