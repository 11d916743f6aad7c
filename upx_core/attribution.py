"""A Captum-style interface: ``UndesirablePixels(model).attribute(inputs, target=...)``, and
``quantus_explain_func``, the same attribution as the ``explain_func`` Quantus metrics call."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .config import EXPLAIN_OBJECTIVE, MaskSetting, OptimConfig
from .models import Classifier
from .optimizer import optimize_masks
from .result import UPXResult

__all__ = ["UndesirablePixels", "quantus_explain_func"]

_SETTING_FIELDS = {"lambda1", "lambda2", "beta", "gamma"}
_CONFIG_FIELDS = {f.name for f in dataclasses.fields(OptimConfig)}


class UndesirablePixels:
    """Undesirable pixels as an attribution method, shaped like Captum's ``Attribution`` classes.

    ``attribute`` returns a tensor shaped like ``inputs`` whose value at each pixel is 1 - M',
    how strongly blurring that pixel raises the target class (the same value on all channels;
    high = blurring it *helps* the target, the opposite sign of a saliency map), so Captum's
    ``visualize_image_attr`` and evaluation tools such as Quantus take it directly. The full
    :class:`UPXResult` of the last call stays in ``self.last_result``.

    forward_func: a ``torch.nn.Module`` (the optimizer follows its gradients). A
        :class:`Classifier` takes images in [0, 1]. A bare network that takes normalized
        tensors works as Captum users call it: pass the normalization as ``mean`` and ``std``
        and give ``attribute`` normalized inputs; the masks are optimized on the images in
        [0, 1] that they stand for (blur and mask mix pixels linearly, so an affine
        per-channel normalization commutes with Eq. 1).
    """

    def __init__(self, forward_func: nn.Module, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        if not isinstance(forward_func, nn.Module):
            raise TypeError(
                "forward_func must be a torch.nn.Module: the mask optimizer follows its "
                f"gradients (got {type(forward_func).__name__}); a model that can only be "
                "queried is not supported yet")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std (the normalization the network expects), "
                             "or neither")
        self.forward_func = forward_func
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32)
        self._model = forward_func if mean is None else Classifier(
            forward_func, mean, std, categories=getattr(forward_func, "categories", None))
        self.last_result: UPXResult | None = None

    def attribute(
        self,
        inputs: torch.Tensor | np.ndarray | tuple,
        target: int | str | Sequence[int | str] | torch.Tensor | None = None,
        mode: str = "ftc",
        seed: int = 0,
        config: OptimConfig | None = None,
        device: str = "auto",
        progress: bool = False,
        **options,
    ) -> torch.Tensor | np.ndarray | tuple:
        """Optimize one mask per input and return ``1 - M'`` shaped like ``inputs``.

        ``inputs``: ``[N, 3, H, W]`` or ``[3, H, W]``, a tensor or a NumPy array (the result is
        of the same kind), or Captum's tuple of one such tensor (a tuple comes back).
        ``options`` may set the per-mask weights ``lambda1``, ``lambda2``, ``beta``, ``gamma``
        and any :class:`OptimConfig` field (``iterations=50``, ``lr=...``), which override
        ``config``. Without ``config`` the objective is ``log_prob``
        (:data:`upx_core.config.EXPLAIN_OBJECTIVE`): on the sample images it finds a mask for
        about twice as many targets as the paper's probability (chapter 7); pass
        ``objective="prob"`` for the paper's literal objective.
        """
        if isinstance(inputs, tuple):
            if len(inputs) != 1:
                raise ValueError(f"inputs: one image tensor (or a tuple of one), got a tuple "
                                 f"of {len(inputs)}")
            return (self.attribute(inputs[0], target, mode, seed, config, device, progress,
                                   **options),)
        as_numpy = isinstance(inputs, np.ndarray)
        x = torch.from_numpy(inputs) if as_numpy else inputs
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"inputs must be a tensor or a NumPy array, got {type(x).__name__}")
        unknown = sorted(set(options) - _SETTING_FIELDS - _CONFIG_FIELDS)
        if unknown:
            raise TypeError(f"attribute() got unexpected option(s) {', '.join(unknown)}")
        setting = {k: v for k, v in options.items() if k in _SETTING_FIELDS}
        overrides = {k: v for k, v in options.items() if k in _CONFIG_FIELDS}
        if config is None:  # for a user's target: the objective that finds a mask more often
            config = OptimConfig(objective=EXPLAIN_OBJECTIVE)
        if overrides:
            config = config.replace(**overrides)
        single = x.dim() == 3
        batch = (x.unsqueeze(0) if single else x).detach()
        images = self._images(batch)
        result = optimize_masks(
            self._model, images, targets=target,
            settings=[MaskSetting(mode=mode, seed=seed, **setting)], config=config,
            device=device, keep_images=False, progress=progress,
        )
        self.last_result = result
        # a real tensor, not an expand view: three channels that share memory break in-place
        # operations (attr.abs_()) and surprise NumPy users who write one channel
        attr = result.undesirable[:, 0].expand(batch.shape).contiguous()
        attr = attr.to(batch.device, batch.dtype if batch.is_floating_point() else torch.float32)
        attr = attr[0] if single else attr
        return attr.cpu().numpy() if as_numpy else attr

    def _images(self, batch: torch.Tensor) -> torch.Tensor:
        """The images in [0, 1] that ``batch`` stands for."""
        if self.mean is None:
            if batch.is_floating_point() and batch.numel() and (
                    float(batch.min()) < 0 or float(batch.max()) > 1):
                raise ValueError(
                    "inputs are outside [0, 1]: for normalized inputs, pass the network's "
                    "normalization as UndesirablePixels(net, mean=..., std=...)")
            return batch
        shape = (1, -1, 1, 1)
        return (batch.float() * self.std.view(shape).to(batch.device)
                + self.mean.view(shape).to(batch.device)).clamp(0, 1)


def quantus_explain_func(
    model: nn.Module,
    inputs: np.ndarray | torch.Tensor,
    targets: np.ndarray | Sequence[int] | int,
    *,
    mode: str = "ftc",
    iterations: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    invert: bool = False,
    seed: int = 0,
    config: OptimConfig | None = None,
    device: str = "auto",
    **options,
) -> np.ndarray:
    """Undesirable pixels as a Quantus ``explain_func`` (tested with quantus 0.6.0).

    Quantus calls ``explain_func(model=model, inputs=x_batch, targets=y_batch,
    **explain_func_kwargs)`` with ``x_batch`` a channel-first ``[N, 3, H, W]`` NumPy array (give
    the metric ``channel_first=True``) and ``y_batch`` the class indices; this returns
    ``[N, 1, H, W]`` float32, one value per pixel (Quantus broadcasts it over the channels):
    ``UndesirablePixels(model, mean, std).attribute(inputs, target=targets, ...)[:, :1]``.
    ``mean``/``std``: the normalization of a bare network whose ``x_batch`` is normalized (none
    for a :class:`Classifier`, which takes images in [0, 1]). ``iterations`` and ``options``
    (``lambda1``, ``lr``, any :class:`OptimConfig` field) go to ``attribute``.

    Sign: the default is ``1 - M'`` in [0, 1], high where blurring the pixel *raises* the target.
    That is the opposite of what faithfulness metrics (FaithfulnessCorrelation, PixelFlipping,
    ...) assume, high = evidence *for* the target; for them pass ``invert=True``, which returns
    ``-(1 - M') = M' - 1``: 0 where blurring does not help the target, negative where the pixel
    holds it back (a metric with ``abs=True`` sees ``1 - M'`` again).

    NumPy 2 removed ``numpy.trapz`` (and ``numpy.NaN``), which quantus 0.6.0 still calls: IROF,
    PixelFlipping with ``return_auc_per_sample=True``, and the ``get_auc_score()`` of
    PixelFlipping, RegionPerturbation and Selectivity raise AttributeError (Continuity, where a
    prediction changes). Use ``numpy<2``, a metric that does not integrate (Sparseness,
    FaithfulnessCorrelation, PixelFlipping's curves, ...), or alias it first:
    ``np.trapz = np.trapezoid`` (the same function, renamed in NumPy 2.0).
    """
    x = inputs.detach().cpu().float() if isinstance(inputs, torch.Tensor) else \
        torch.from_numpy(np.asarray(inputs, dtype=np.float32))
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"inputs: channel-first [N, 3, H, W] images, got shape {tuple(x.shape)} "
                         "(call the Quantus metric with channel_first=True)")
    if iterations is not None:
        options["iterations"] = iterations
    attr = UndesirablePixels(model, mean=mean, std=std).attribute(
        x, target=np.asarray(targets), mode=mode, seed=seed, config=config, device=device,
        **options)[:, :1]
    return (-attr if invert else attr).numpy()
