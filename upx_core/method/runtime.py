"""Where and how the classifier runs: the device, the model's flags and memory layout for the
duration of a call, the batch that fits a GPU, and the forward pass every part of upx shares.

The optimizer (``optimizer.py``), the evaluation protocol (``evaluation/protocol.py``), the
chapters' region tools (``book/analysis.py``) and the benchmarks run the model through
:func:`forward` and :func:`perturbed_probs`, so a precision or memory-format option reaches all of
them alike.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import itertools
import os
import sys
from collections.abc import Iterator

import torch
from torch import nn

from .config import AMP_AUTO, OptimConfig
from .equations import blur_for, perturb, upsample_mask

__all__ = [
    "resolve_device",
    "frozen",
    "on_device",
    "channels_last_weights",
    "batch_from_memory",
    "suggest_batch_size",
    "cuda_batch_size",
    "bf16_supported",
    "resolve_amp",
    "check_amp",
    "forward",
    "perturbed_probs",
    "keep_freed_memory",
]

# glibc's mallopt parameters (malloc.h) and the environment variables that set them at start.
_MALLOPT = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_TOP_PAD_": -2, "MALLOC_MMAP_THRESHOLD_": -3}
_INT_MAX = 2**31 - 1  # mallopt takes an int: 2 GiB is the largest threshold it accepts


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available; ``"cuda"`` without a GPU is a clear error."""
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but no CUDA GPU is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return torch.device(device)


def keep_freed_memory() -> bool:
    """Keep large freed blocks on glibc's heap instead of handing them back to the OS.

    By default glibc serves every block above its mmap threshold with a fresh ``mmap`` and
    returns it on ``free``, so each Adam step page-faults the same activations in again: half
    of the optimizer's CPU time was system time. This is what the Makefile's ``MALLOC_*``
    variables do for the book (2.1x faster at 24 images, masks bit for bit equal:
    ``benchmarks/allocator.py``), done from inside the process for ``upx`` and for notebooks
    started elsewhere. It changes where memory lives, never the arithmetic; the process keeps
    the memory it once used until it exits.

    Returns ``True`` when applied; ``False`` (and does nothing) off glibc, or when any
    ``MALLOC_*`` variable is set: the caller's choice wins.
    """
    if not sys.platform.startswith("linux") or any(v in os.environ for v in _MALLOPT):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl and other C libraries: nothing to tune
        return False
    values = {"MALLOC_TRIM_THRESHOLD_": _INT_MAX, "MALLOC_TOP_PAD_": 1 << 30,
              "MALLOC_MMAP_THRESHOLD_": _INT_MAX}
    return all(libc.mallopt(_MALLOPT[k], ctypes.c_int(v)) == 1 for k, v in values.items())


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no weight gradients for the duration; the caller's flags come back after.

    Weights that do not require grad spare the backward pass their weight-gradient kernels,
    which is most of its cost.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        model.eval()
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def on_device(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """The model on ``device`` for the duration, back on the device it came from after."""
    original = next(model.parameters(), torch.empty(0)).device
    model.to(device)
    try:
        yield model
    finally:
        model.to(original)


@contextlib.contextmanager
def channels_last_weights(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """The model's 4-D weights and buffers in channels-last memory order for the duration.

    Convolutions whose input and weight are both channels-last run NHWC kernels (cuDNN's tensor
    core kernels, oneDNN's on the CPU) without a layout conversion per call. Only tensors that
    were plainly contiguous are converted, and exactly those are made contiguous again on exit:
    the values never change (the weights are frozen), only their strides, and the caller gets
    the model back in the memory format it gave.
    """
    converted = []
    if enabled:
        for t in itertools.chain(model.parameters(), model.buffers()):
            if (t.dim() == 4 and t.is_contiguous()
                    and not t.is_contiguous(memory_format=torch.channels_last)):
                t.data = t.data.contiguous(memory_format=torch.channels_last)
                converted.append(t)
    try:
        yield model
    finally:
        for t in converted:
            t.data = t.data.contiguous()


# Share of free CUDA memory a batch may plan for, and the largest batch suggested.
SAFETY = 0.6
MAX_BATCH = 4096


def batch_from_memory(free_bytes: float, per_mask_bytes: float, fixed_bytes: float = 0.0,
                      safety: float = SAFETY, max_batch: int = MAX_BATCH) -> int:
    """How many masks fit: ``(free * safety - fixed) / per_mask``, clamped to 1..max_batch."""
    if not 0 < safety <= 1:
        raise ValueError(f"safety must be in (0, 1], got {safety}")
    if per_mask_bytes <= 0:
        return max_batch
    fit = (free_bytes * safety - fixed_bytes) // per_mask_bytes
    return int(max(1, min(max_batch, fit)))


def suggest_batch_size(
    model: nn.Module,
    image_size: int | tuple[int, int] = 224,
    device: str | torch.device = "auto",
    config: OptimConfig | None = None,
    safety: float = SAFETY,
    max_batch: int = MAX_BATCH,
) -> int | None:
    """Masks per forward pass that fit the free memory of a CUDA device (``None`` on the CPU).

    Measures the peak memory of one optimizer step (perturb, forward under ``config``'s amp and
    channels-last options, backward to the mask) at 1 and 4 masks; the difference gives the
    cost of one more mask, the rest the fixed cost. Then :func:`batch_from_memory` with the
    device's free memory (plus what PyTorch's cache holds but does not use) and ``safety``,
    which leaves room for fragmentation, cuDNN workspaces and the per-image tensors. On the CPU
    ``optimize_masks`` takes all masks at once, so this returns ``None``.
    """
    dev = resolve_device(device)
    if dev.type != "cuda":
        return None
    config = config or OptimConfig()
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    with frozen(model), on_device(model, dev), channels_last_weights(model, config.channels_last):
        return cuda_batch_size(model, size, dev, config, safety, max_batch)


def _probe_peak(model: nn.Module, n: int, size, dev: torch.device, config: OptimConfig) -> int:
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    x = torch.rand(n, 3, *size, device=dev)
    hx = blur_for(x, config)
    mask = torch.ones(n, 1, config.mask_size, config.mask_size, device=dev, requires_grad=True)
    logits = forward(model, perturb(x, hx, upsample_mask(mask, size)), config)
    logits.logsumexp(dim=1).sum().backward()
    torch.cuda.synchronize(dev)
    peak = torch.cuda.max_memory_allocated(dev) - base
    del x, hx, mask, logits
    return int(peak)


def cuda_batch_size(model: nn.Module, size: tuple[int, int], dev: torch.device,
                    config: OptimConfig, safety: float = SAFETY,
                    max_batch: int = MAX_BATCH) -> int:
    """:func:`suggest_batch_size` for a model already frozen and on ``dev`` (a CUDA device)."""
    small, large = 1, 4
    p_small = _probe_peak(model, small, size, dev, config)
    p_large = _probe_peak(model, large, size, dev, config)
    per_mask = max((p_large - p_small) / (large - small), 1.0)
    fixed = max(p_small - small * per_mask, 0.0)
    free, _ = torch.cuda.mem_get_info(dev)
    free += torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
    return batch_from_memory(free, per_mask, fixed, safety, max_batch)


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively: CUDA, or a CPU whose oneDNN has
    bfloat16 kernels (AVX-512 BF16 or AMX). Elsewhere autocast would emulate it, slower than
    float32."""
    if device.type == "cuda":
        return True
    return bool(torch.backends.mkldnn.is_available()
                and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_amp(config: OptimConfig, device: torch.device) -> OptimConfig:
    """``config`` with ``amp="auto"`` made concrete for ``device``: bfloat16 with channels-last
    where :func:`bf16_supported`, float32 (``amp=None``, ``channels_last`` as given) elsewhere.
    Any other ``config`` is returned as it is."""
    if config.amp != AMP_AUTO:
        return config
    if bf16_supported(device):
        return dataclasses.replace(config, amp="bf16", channels_last=True)
    return dataclasses.replace(config, amp=None)


def check_amp(config: OptimConfig, device: torch.device) -> None:
    """A clear error, before any work, for ``amp="bf16"`` on a CPU without native bfloat16."""
    if config.amp == "bf16" and not bf16_supported(device):
        raise ValueError("amp='bf16' needs CUDA or a CPU with native bfloat16 (AVX-512 BF16 "
                         "or AMX); this CPU has neither: use float32 (amp=None; upx: --amp fp32 "
                         "or auto)")


def forward(model: nn.Module, x: torch.Tensor, config: OptimConfig) -> torch.Tensor:
    """The model's logits (float32) for ``x`` under ``config``'s channels-last and amp options.

    ``amp="bf16"`` runs the model under bfloat16 autocast on the device ``x`` is on (CUDA, or a
    CPU with native bfloat16: :func:`check_amp` refuses the others before any work);
    ``amp="auto"`` is resolved for that device (:func:`resolve_amp`)."""
    config = resolve_amp(config, x.device)
    if config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if config.amp == "bf16":
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return model(x).float()
    return model(x).float()


def perturbed_probs(model: nn.Module, images: torch.Tensor, masks_up: torch.Tensor,
                    config: OptimConfig | None = None) -> torch.Tensor:
    """Class probabilities ``[N, C]`` (softmax, float32) of the perturbed images Q(X; M').

    ``images`` ``[N, 3, H, W]`` and upsampled masks ``masks_up`` ``[N or 1, 1, H, W]`` (1 keeps a
    pixel, 0 puts its blur there; Eq. 1), on the model's device. The blur and the forward pass
    follow ``config`` (sigma, kernel size, blur, amp, channels-last) as in the optimizer, without
    ``perturb_noise`` (as the optimizer's final probabilities). The model is in eval mode for
    the call and nothing records a gradient.
    """
    config = config or OptimConfig()
    with frozen(model), torch.no_grad():
        q = perturb(images, blur_for(images, config), masks_up)
        return torch.softmax(forward(model, q, config), dim=1)
