"""perturbed_probs: softmax of the classifier on Q(X; M') (Eq. 1), the one "perturb, forward,
softmax" that the evaluation and the case studies share."""

from __future__ import annotations

import torch
from torch import nn

from upx_core import OptimConfig
from upx_core.method.equations import blur, perturb
from upx_core.method.runtime import perturbed_probs


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 10))


def test_perturbed_probs_is_eq1_then_softmax_in_eval_mode():
    model = tiny().train()
    x = torch.rand(2, 3, 16, 16)
    masks = torch.rand(2, 1, 16, 16)
    cfg = OptimConfig(sigma=2.0, kernel_size=5)
    p = perturbed_probs(model, x, masks, cfg)
    assert model.training and all(q.requires_grad for q in model.parameters())  # restored
    assert p.shape == (2, 10) and not p.requires_grad
    assert torch.allclose(p.sum(dim=1), torch.ones(2))
    model.eval()
    with torch.no_grad():  # dropout off: the same numbers as eval mode by hand
        want = torch.softmax(model(perturb(x, blur(x, 2.0, 5), masks)), dim=1)
        clean = torch.softmax(model(x), dim=1)
        blurred = torch.softmax(model(blur(x, 2.0, 5)), dim=1)
    assert torch.allclose(p, want, atol=1e-6)
    # M' = 1 keeps the image, M' = 0 is its blur; one mask broadcasts over the images
    assert torch.allclose(perturbed_probs(model, x, torch.ones(1, 1, 16, 16), cfg), clean,
                          atol=1e-6)
    assert torch.allclose(perturbed_probs(model, x, torch.zeros(1, 1, 16, 16), cfg), blurred,
                          atol=1e-6)
