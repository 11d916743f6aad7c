"""Batch norm folding: the folded copy computes the model's logits, the model is untouched, and a
model whose registration order is not its execution order is refused with a warning."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from upx_core import MaskSetting, OptimConfig, load_model, optimize_masks
from upx_core.method.fold import CHECK_SIZE, fold_batchnorm


def _norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_efficientnet_lite0_folds_every_norm_and_keeps_its_logits(model, crops):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_norms = _norms(model)
    folded, count = fold_batchnorm(model, crops)
    assert count == n_norms == 49  # stem + 16 blocks' norms + head
    assert _norms(folded) == 0 and _norms(model) == n_norms
    with torch.no_grad():
        torch.testing.assert_close(folded(crops), model(crops), rtol=1e-4, atol=1e-4)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_resnet18_folds_its_20_norms():
    net = load_model("resnet18", pretrained=False)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for m in net.modules():  # running statistics other than 0 and 1, as after training
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        x = torch.rand(2, 3, 64, 64)
    folded, count = fold_batchnorm(net, x)
    assert count == 20
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-4)


class OutOfOrder(nn.Module):
    """Registers conv, norm, conv but runs norm after the second conv."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.a = nn.Conv2d(3, 4, 3)
            self.norm = nn.BatchNorm2d(4)
            self.b = nn.Conv2d(4, 4, 3)
            self.norm.running_mean.uniform_(-1, 1)
            self.norm.running_var.uniform_(0.5, 2.0)
            self.norm.weight.data.uniform_(0.5, 2.0)

    def forward(self, x):
        return self.norm(self.b(torch.relu(self.a(x)))).mean(dim=(2, 3))


def test_folding_checked_on_a_probe_refuses_a_wrong_fold():
    net = OutOfOrder().eval()
    x = torch.rand(2, 3, 16, 16)
    with pytest.warns(RuntimeWarning, match="batch norm folding changed the logits"):
        got, count = fold_batchnorm(net, x)
    assert got is net and count == 0


def _input_sizes(model: nn.Module) -> list[tuple[int, ...]]:
    """Records the shape of every batch ``model`` runs (a forward pre-hook; kept on the model)."""
    seen: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    return seen


def test_the_check_runs_one_small_crop_of_the_probe_and_still_refuses_a_wrong_fold():
    # the optimizer passes two 224 x 224 images; checking on all of them cost ~90 % of folding
    net = OutOfOrder().eval()
    seen = _input_sizes(net)
    with pytest.warns(RuntimeWarning, match="batch norm folding changed the logits"):
        got, count = fold_batchnorm(net, torch.rand(2, 3, 224, 224))
    assert got is net and count == 0
    assert seen == [(1, 3, CHECK_SIZE, CHECK_SIZE)] * 2  # the model, then its folded copy


class LateNorm(nn.Module):
    """A near-identity depthwise 1x1 convolution registered before a norm that runs before it,
    ``conv(norm(x))``: folding the norm into the convolution is then subtly wrong, by a few
    percent of one layer's activations (weights 1 +- 5 %, biases +- 0.05)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.conv = nn.Conv2d(channels, channels, 1, groups=channels)
            self.norm = nn.BatchNorm2d(channels).eval()
            nn.init.uniform_(self.conv.weight, 0.95, 1.05)
            nn.init.uniform_(self.conv.bias, -0.05, 0.05)
            self.norm.running_mean.uniform_(-0.5, 0.5)
            self.norm.running_var.uniform_(0.8, 1.25)
            self.norm.bias.data.uniform_(-0.5, 0.5)

    def forward(self, x):
        return self.conv(self.norm(x))


def test_the_small_check_sees_a_subtly_wrong_fold_inside_efficientnet_lite0(model, tusker):
    net = copy.deepcopy(model)
    stage = net.net.blocks[5]  # 192 channels at 7 x 7 of 224 (at 2 x 2 of the check's crop)
    stage.append(LateNorm(192))
    with pytest.warns(RuntimeWarning, match="batch norm folding changed the logits"):
        got, count = fold_batchnorm(net, tusker.unsqueeze(0))
    assert got is net and count == 0
    stage[-1].conv.bias.data.zero_()  # a late norm into a conv with 1x weights is harmless
    stage[-1].conv.weight.data.fill_(1.0)
    got, count = fold_batchnorm(net, tusker.unsqueeze(0))
    assert count == 50


class FixedSize(nn.Module):
    """Conv, norm, then a linear layer over the flattened 16 x 16 map: takes 16 x 16 only."""

    def __init__(self, swap: bool = False) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 3, 1)
            self.norm = nn.BatchNorm2d(3).eval()
            self.norm.running_mean.uniform_(-1, 1)
            self.norm.bias.data.uniform_(-1, 1)
            self.fc = nn.Linear(3 * 16 * 16, 5)
        self.swap = swap

    def forward(self, x):
        y = self.conv(self.norm(x)) if self.swap else self.norm(self.conv(x))
        return self.fc(y.flatten(1))


def test_a_model_that_takes_one_input_size_is_checked_on_the_whole_first_image():
    x = torch.rand(2, 3, 16, 16)
    seen = _input_sizes(net := FixedSize().eval())
    folded, count = fold_batchnorm(net, x)
    assert count == 1 and seen == [(1, 3, 16, 16)] * 2
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)
    # the same at 80 x 80 (a flatten of 3 x 80 x 80): the 64 x 64 crop is refused, the whole
    # first image is checked
    big = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3), nn.Flatten(),
                        nn.Linear(3 * 80 * 80, 5)).eval()
    seen = _input_sizes(big)
    folded, count = fold_batchnorm(big, torch.rand(2, 3, 80, 80))
    assert count == 1 and seen[-1] == (1, 3, 80, 80)
    with pytest.warns(RuntimeWarning, match="batch norm folding changed the logits"):
        got, count = fold_batchnorm(FixedSize(swap=True).eval(), x)
    assert count == 0


def test_nothing_to_fold_returns_the_model_itself():
    net = OutOfOrder().train()  # training-mode norms use batch statistics: not foldable
    assert fold_batchnorm(net) == (net, 0)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    assert fold_batchnorm(plain.eval()) == (plain, 0)


def test_optimizer_gives_the_same_masks_folded_or_not(model, crops):
    # lr 1e-3: see test_optimizer.py; folding reassociates float32 sums like a new batch layout
    config = OptimConfig(iterations=3, lr=1e-3, objective="log_prob")
    settings = [MaskSetting(mode="ftc", seed=0), MaskSetting(mode="fntc", seed=1)]
    reference = copy.deepcopy(model)
    runs = [optimize_masks(model, crops, targets=386, settings=settings, device="cpu",
                           config=config.replace(fold_batchnorm=fold), progress=False)
            for fold in (True, False)]
    # Each mask element moves ~3e-3 in 3 steps, and 99 % of them agree to 1e-5. Adam divides
    # out the gradient's scale, so an element whose gradient is near 0 can take a step of
    # about lr the other way under other rounding: 2e-4 on an Intel Xeon, 1e-3 on an AMD EPYC
    # (measured). Such an element differs by at most 2 * lr per step.
    diff = (runs[0].masks - runs[1].masks).abs().flatten()
    assert diff.quantile(0.99) < 1e-5, diff.quantile(0.99)
    assert diff.max() <= 2 * config.lr * config.iterations * 1.01, diff.max()
    torch.testing.assert_close(runs[0].probs_after, runs[1].probs_after, rtol=1e-3, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 reference.state_dict().values(), strict=True))
