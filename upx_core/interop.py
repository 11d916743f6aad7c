"""A Captum-style interface: ``UndesirablePixels(model).attribute(inputs, target=...)``, and
``quantus_explain_func``, the same attribution as the ``explain_func`` Quantus metrics call."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .method.config import EXPLAIN_OBJECTIVE, MaskSetting, OptimConfig
from .method.models import MODEL_OUTPUTS, Classifier
from .method.optimizer import optimize_masks
from .method.result import UPXResult

__all__ = ["UndesirablePixels", "quantus_explain_func"]

_SETTING_FIELDS = {"lambda1", "lambda2", "beta", "gamma"}
# Inputs this far outside [0, 1] (after undoing a given normalization) are clamped into it, not
# refused: Quantus's robustness metrics add noise to images in [0, 1] (MaxSensitivity and
# AvgSensitivity uniform in +-0.2, LocalLipschitzEstimate Gaussian with std 0.1, by default), and
# the attribution of such an input is that of the nearest image, the clamped one.
TOLERANCE = 0.5
_CONFIG_FIELDS = {f.name for f in dataclasses.fields(OptimConfig)}


class UndesirablePixels:
    """Undesirable pixels as an attribution method, shaped like Captum's ``Attribution`` classes.

    ``attribute`` returns a tensor shaped like ``inputs`` whose value at each pixel is 1 - M',
    how strongly blurring that pixel raises the target class (the same value on all channels;
    high = blurring it *helps* the target, the opposite sign of a saliency map), so Captum's
    ``visualize_image_attr`` and evaluation tools such as Quantus take it directly. The full
    :class:`UPXResult` of the last call stays in ``self.last_result``.

    forward_func: a ``torch.nn.Module``, or any callable that maps a batch of images to
        scores through torch operations (Captum's ``forward_func``: the optimizer follows its
        gradients; a callable's weights are not frozen, so they may collect ``.grad``). A model
        that can only be queried (NumPy in, NumPy out, no gradient) needs the query-only
        optimizer, :func:`upx_core.optimize_masks_blackbox`. A :class:`Classifier` takes
        images in [0, 1]. A bare network that takes normalized tensors works as Captum users
        call it: pass the normalization as ``mean`` and ``std`` and give ``attribute``
        normalized inputs; the masks are optimized on the images in [0, 1] that they stand
        for (blur and mask mix pixels linearly, so an affine per-channel normalization
        commutes with Eq. 1).
    outputs: ``"logits"`` (default) or ``"probs"`` for a network with a softmax at its end
        (read through ``log p``; a network whose outputs are probabilities but declared as
        logits is refused, see :func:`upx_core.method.models.check_network`).
    """

    def __init__(self, forward_func: nn.Module | Callable, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, outputs: str = "logits") -> None:
        if not isinstance(forward_func, nn.Module):
            if not callable(forward_func):
                raise TypeError(
                    "forward_func must be a torch.nn.Module or a function of the images (got "
                    f"{type(forward_func).__name__})")
            forward_func = _Function(forward_func)
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std (the normalization the network expects), "
                             "or neither")
        if outputs not in MODEL_OUTPUTS:
            raise ValueError(f"outputs must be one of {', '.join(MODEL_OUTPUTS)}, got "
                             f"{outputs!r}")
        self.forward_func = forward_func
        self.outputs = outputs
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
        additional_forward_args: object = None,
        baselines: torch.Tensor | np.ndarray | float | tuple | None = None,
        **options,
    ) -> torch.Tensor | np.ndarray | tuple:
        """Optimize one mask per input and return ``1 - M'`` shaped like ``inputs``.

        ``inputs``: ``[N, 3, H, W]`` or ``[3, H, W]``, a tensor or a NumPy array (the result is
        of the same kind), or Captum's tuple of one such tensor (a tuple comes back).
        ``options`` may set the per-mask weights ``lambda1``, ``lambda2``, ``beta``, ``gamma``
        and any :class:`OptimConfig` field (``iterations=50``, ``lr=...``), which override
        ``config``. Without ``config`` the objective is ``log_prob``
        (:data:`upx_core.method.config.EXPLAIN_OBJECTIVE`): on the sample images it finds a mask for
        about twice as many targets as the paper's probability (chapter 7); pass
        ``objective="prob"`` for the paper's literal objective.
        ``additional_forward_args`` (Captum's): passed after the images to every call of the
        model, unchanged (the optimizer batches masks in its own way, so they must not be
        per-example tensors). ``baselines`` (Captum's): what the masked pixels move toward,
        Eq. 1's h(X); ``None`` (the paper's), each image's Gaussian blur; else a number or a
        tensor (or array) shaped like ``inputs`` or broadcasting to them, in the same space as
        ``inputs`` (normalized when a ``mean`` and ``std`` were given), e.g. ``0.0`` for black
        images in [0, 1].
        Inputs at most :data:`TOLERANCE` (0.5) outside [0, 1] (once a given ``mean``/``std`` is
        undone), such as the noisy copies Quantus's robustness metrics pass, are clamped into
        [0, 1] and explained as the clamped image; further ones are refused.
        """
        if isinstance(baselines, tuple):  # Captum's baselines come as a tuple like the inputs
            if len(baselines) != 1:
                raise ValueError(f"baselines: one tensor or number (or a tuple of one), got a "
                                 f"tuple of {len(baselines)}")
            (baselines,) = baselines
        if isinstance(inputs, tuple):
            if len(inputs) != 1:
                raise ValueError(f"inputs: one image tensor (or a tuple of one), got a tuple "
                                 f"of {len(inputs)}")
            return (self.attribute(inputs[0], target, mode, seed, config, device, progress,
                                   additional_forward_args, baselines, **options),)
        as_numpy = isinstance(inputs, np.ndarray)
        x = torch.from_numpy(inputs) if as_numpy else inputs
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"inputs must be a tensor or a NumPy array, got {type(x).__name__}")
        _check_channels_first(x)
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
        reference = None if baselines is None else self._reference(baselines, batch)
        model = self._model
        if additional_forward_args is not None:
            model = _WithArgs(model, additional_forward_args)
        result = optimize_masks(
            model, images, targets=target,
            settings=[MaskSetting(mode=mode, seed=seed, **setting)], config=config,
            device=device, keep_images=False, progress=progress, outputs=self.outputs,
            reference=reference,
        )
        self.last_result = result
        # a real tensor, not an expand view: three channels that share memory break in-place
        # operations (attr.abs_()) and surprise NumPy users who write one channel
        attr = result.undesirable[:, 0].expand(batch.shape).contiguous()
        attr = attr.to(batch.device, batch.dtype if batch.is_floating_point() else torch.float32)
        attr = attr[0] if single else attr
        return attr.cpu().numpy() if as_numpy else attr

    def _reference(self, baselines, batch: torch.Tensor) -> torch.Tensor:
        """Captum's ``baselines`` as images in [0, 1] shaped like ``batch``: a number is a
        constant in the inputs' space (normalized ones too), undone like the inputs."""
        ref = torch.as_tensor(baselines, dtype=torch.float32)
        try:
            ref = ref.to(batch.device).expand(batch.shape)
        except RuntimeError:
            raise ValueError(f"baselines: shape {tuple(ref.shape)} does not broadcast to the "
                             f"inputs' {tuple(batch.shape)}") from None
        try:
            return self._images(ref)
        except ValueError as err:  # the inputs' range check, said of the baselines
            raise ValueError(f"baselines: {err}".replace("inputs range", "they range", 1)) \
                from None

    def _images(self, batch: torch.Tensor) -> torch.Tensor:
        """The images in [0, 1] that ``batch`` stands for: values up to :data:`TOLERANCE`
        outside [0, 1] are clamped into it, further ones refused."""
        if self.mean is not None:
            shape = (1, -1, 1, 1)
            batch = (batch.float() * self.std.view(shape).to(batch.device)
                     + self.mean.view(shape).to(batch.device))
        if not (batch.is_floating_point() and batch.numel()):
            return batch
        lo, hi = float(batch.min()), float(batch.max())
        if lo >= 0 and hi <= 1:
            return batch
        if lo >= -TOLERANCE and hi <= 1 + TOLERANCE:
            return batch.clamp(0, 1)  # noise a robustness metric added: the nearest image
        if self.mean is not None:
            raise ValueError(
                f"inputs range over [{lo:.3g}, {hi:.3g}] once the mean and std given are undone,"
                f" more than {TOLERANCE} outside [0, 1]: are they the network's normalization?")
        raise ValueError(
            f"inputs range over [{lo:.3g}, {hi:.3g}], more than {TOLERANCE} outside [0, 1]: this "
            "model takes images in [0, 1]; for normalized inputs to a bare network, pass its "
            "normalization as UndesirablePixels(net, mean=..., std=...)")


def _check_channels_first(x: torch.Tensor) -> None:
    """A channel-last image (HWC, NumPy's and PIL's order) gets a message saying how to turn
    it, rather than the optimizer's shape error."""
    if x.dim() in (3, 4) and x.shape[-1] in (1, 3, 4) and x.shape[-3] not in (1, 3):
        order = "[N, H, W, C]" if x.dim() == 4 else "[H, W, C]"
        turn = "x.transpose(0, 3, 1, 2)" if x.dim() == 4 else "x.transpose(2, 0, 1)"
        raise ValueError(f"inputs of shape {tuple(x.shape)} look channel-last {order}; upx "
                         f"takes channel-first [N, 3, H, W] images: pass {turn} (NumPy) or "
                         f"{turn.replace('transpose', 'permute')} (torch)")


class _Function(nn.Module):
    """A plain function of the images (Captum's ``forward_func``) as a module."""

    def __init__(self, fn: Callable) -> None:
        super().__init__()
        self.fn = fn
        self.categories = getattr(fn, "categories", None)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fn(images)


class _WithArgs(nn.Module):
    """``model(images, *args)``: Captum's ``additional_forward_args`` on every call."""

    def __init__(self, model: nn.Module, args: object) -> None:
        super().__init__()
        args = args if isinstance(args, tuple) else (args,)
        if any(isinstance(a, torch.Tensor) and a.dim() > 0 for a in args):
            raise ValueError("additional_forward_args: per-example tensors are not supported "
                             "(the optimizer batches masks in its own way); pass Python values "
                             "or 0-d tensors, or close over them in a module")
        self.model, self.args = model, args
        self.categories = getattr(model, "categories", None)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images, *self.args)


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
