"""A Captum-style interface: ``UndesirablePixels(model).attribute(inputs, target=...)``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .config import MaskSetting, OptimConfig
from .optimizer import optimize_masks
from .result import UPXResult

__all__ = ["UndesirablePixels"]


class UndesirablePixels:
    """Undesirable pixels as an attribution method, shaped like Captum's ``Attribution`` classes.

    ``attribute`` returns a tensor shaped like ``inputs`` whose value at each pixel is 1 - M',
    how much blurring that pixel raises the target class (the same value on all channels), so
    Captum's ``visualize_image_attr`` and evaluation tools such as Quantus take it directly.
    The full :class:`UPXResult` of the last call stays in ``self.last_result``.

    forward_func: a model taking ``inputs`` as they are given (a :class:`Classifier` takes images
        in [0, 1]). Since blur and mask mix pixels linearly, a per-channel affine normalization
        commutes with Eq. 1, so normalized inputs to a bare network give the same masks.
    """

    def __init__(self, forward_func: nn.Module) -> None:
        self.forward_func = forward_func
        self.last_result: UPXResult | None = None

    def attribute(
        self,
        inputs: torch.Tensor,
        target: int | str | Sequence[int | str] | torch.Tensor | None = None,
        mode: str = "ftc",
        seed: int = 0,
        config: OptimConfig | None = None,
        device: str = "auto",
        progress: bool = False,
        **setting,
    ) -> torch.Tensor:
        """Optimize one mask per input and return ``1 - M'`` shaped like ``inputs``.

        ``setting`` may set ``lambda1``, ``lambda2``, ``beta`` and ``gamma``; ``config`` the
        shared optimizer options (iterations, lr, mask size, blur).
        """
        single = inputs.dim() == 3
        batch = inputs.unsqueeze(0) if single else inputs
        result = optimize_masks(
            self.forward_func, batch.detach(), targets=target,
            settings=[MaskSetting(mode=mode, seed=seed, **setting)], config=config,
            device=device, keep_images=False, progress=progress,
        )
        self.last_result = result
        attr = result.undesirable[:, 0].expand_as(batch).to(inputs.device, inputs.dtype)
        return attr[0] if single else attr
