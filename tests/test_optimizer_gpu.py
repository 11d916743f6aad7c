"""The optimizer's GPU options, checked on the CPU paths: no host-reading call in the iteration
loop outside the NaN check, channels-last weights restored, the CUDA batch-size helper's
arithmetic. bf16 autocast on the CPU is tested in test_optimizer.py."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from upx_core import MaskSetting, OptimConfig, optimize_masks
from upx_core.method import loop
from upx_core.method import optimizer as opt_mod
from upx_core.method.runtime import batch_from_memory, channels_last_weights, suggest_batch_size

# Calls that make the host wait for a CUDA device (a tensor read back, or a tensor built from
# host data, which torch copies synchronously).
HOST_READS = {"__bool__", "item", "tolist", "__int__", "__float__", "__index__", "cpu",
              "numpy", "nonzero", "tensor"}


class HostReads(TorchFunctionMode):
    """Counts host-reading tensor calls, except inside torch.optim: Adam (not capturable) keeps
    its step count in a host tensor, whose ``item`` never waits for the device."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS and "torch/optim" not in sys._getframe(1).f_code.co_filename:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    ).eval()


def images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _host_reads(iterations: int, check_every: int) -> list[str]:
    cfg = OptimConfig(iterations=iterations, mask_size=8, kernel_size=5, sigma=2.0,
                      check_every=check_every)
    net, x = tiny_net(), images()
    settings = [MaskSetting("ftc"), MaskSetting("fntc", seed=1)]
    counter = HostReads()
    real = loop.descend

    def only_the_loop(*args, **kwargs):
        with counter:
            return real(*args, **kwargs)

    loop.descend = only_the_loop
    try:
        optimize_masks(net, x, settings=settings, config=cfg, device="cpu", progress=False)
    finally:
        loop.descend = real
    return counter.calls


def test_no_host_reads_per_iteration():
    # With one NaN check at the end, 2 and 12 iterations read the host equally often: nothing
    # in the loop body itself waits for the device.
    once = _host_reads(12, 100)
    assert _host_reads(2, 100) == once
    # Each NaN check costs the same reads and nothing else does: 4 checks (every 3 of 12
    # iterations) cost three times as much more than 2 checks (every 6).
    every6, every3 = _host_reads(12, 6), _host_reads(12, 3)
    assert len(every6) > len(once)
    assert len(every3) - len(once) == 3 * (len(every6) - len(once))


def test_channels_last_weights_restored_and_used():
    net = tiny_net()
    before = {k: (v.clone(), v.stride()) for k, v in net.state_dict().items()}
    seen = []
    hook = net[0].register_forward_pre_hook(
        lambda m, a: seen.append(m.weight.is_contiguous(memory_format=torch.channels_last)))
    # Unfolded, so that the optimizer runs the caller's own weights (folding would run a copy).
    cfg = OptimConfig(iterations=3, mask_size=8, kernel_size=5, sigma=2.0, channels_last=True,
                      fold_batchnorm=False)
    r_cl = optimize_masks(net, images(), config=cfg, device="cpu", progress=False)
    hook.remove()
    # the first call is the model check before any work (models.check_network), on the
    # caller's layout; every call of the optimization itself runs channels-last weights
    assert seen[0] is False and len(seen) > 1 and all(seen[1:])
    for k, v in net.state_dict().items():
        assert v.stride() == before[k][1], k
        assert torch.equal(v, before[k][0]), k
    r = optimize_masks(net, images(), config=cfg.replace(channels_last=False), device="cpu",
                       progress=False)
    assert torch.allclose(r_cl.masks, r.masks, atol=1e-4)


def test_channels_last_weights_leaves_other_layouts_alone():
    net = tiny_net()
    net[3].weight.data = net[3].weight.data.contiguous(memory_format=torch.channels_last)
    with channels_last_weights(net):
        assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert net[0].weight.is_contiguous()
    assert net[3].weight.is_contiguous(memory_format=torch.channels_last)
    with channels_last_weights(net, enabled=False):
        assert net[0].weight.is_contiguous()


def test_batch_from_memory():
    gib = 1024**3
    assert batch_from_memory(10 * gib, 100 * 1024**2, 0, safety=0.5) == 51
    assert batch_from_memory(10 * gib, 100 * 1024**2, 2 * gib, safety=0.5) == 30
    assert batch_from_memory(1, 10, 0) == 1  # never below one mask
    assert batch_from_memory(10 * gib, 1, max_batch=256) == 256
    with pytest.raises(ValueError):
        batch_from_memory(1, 1, safety=0)


def test_suggest_batch_size_is_cuda_only(monkeypatch):
    assert suggest_batch_size(tiny_net(), 32, device="cpu") is None

    def boom(*a, **k):
        raise AssertionError("probed on the CPU")

    monkeypatch.setattr(opt_mod, "cuda_batch_size", boom)
    optimize_masks(tiny_net(), images(1), config=OptimConfig(iterations=1, mask_size=8),
                   device="cpu", progress=False)
