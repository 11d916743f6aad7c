"""The toy network whose undesirable region is known, shared by the query-only tests.

conv1: a Laplacian of the three channels, squared (local high-frequency energy); conv2: a
whole-image readout where class 0 loses 8x the mean energy of one quadrant (the top-left unless
told) and classes 1, 2 are constants. On uniform noise p_0 is 0.24 clean, 0.93 with the top-left
quadrant blurred: blurring that quadrant, and nothing else, raises class 0.
"""

from __future__ import annotations

import torch
from torch import nn

SIZE, HALF = 32, 16  # the image's side and the quadrant's


class Hindered(nn.Module):
    def __init__(self, rows: slice = slice(0, HALF), cols: slice = slice(0, HALF)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 1, 3, padding=1, bias=False)
        lap = torch.tensor([[0.0, -1, 0], [-1, 4, -1], [0, -1, 0]])
        self.conv1.weight.data[:] = lap / 3
        self.conv2 = nn.Conv2d(1, 3, SIZE)
        self.conv2.weight.data.zero_()
        self.conv2.weight.data[0, 0, rows, cols] = -8.0 / HALF**2
        self.conv2.bias.data[:] = torch.tensor([3.9, 0.5, 0.0])

    def forward(self, x):
        return self.conv2(self.conv1(x).pow(2)).flatten(1)


def noise_image(seed: int = 0) -> torch.Tensor:
    """A ``[1, 3, SIZE, SIZE]`` uniform-noise image, the same for every test that asks."""
    return torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def found(result, j: int = 0) -> tuple[float, float]:
    """(target probability gain, share of the blur 1 - M' in the top-left quadrant) of the
    first image's mask ``j`` in an UPXResult."""
    gain = float(result.target_prob_after[0, j] - result.target_prob_before[0, j])
    und = result.undesirable[0, j, 0]
    return gain, float(und[:HALF, :HALF].sum() / und.sum().clamp_min(1e-12))
