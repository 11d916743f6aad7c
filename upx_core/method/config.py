"""Hyperparameters: what is shared by a batch of masks, and what each mask may set for itself.

Defaults are the paper's (Sect. 4.1): Adam, lr 0.1, 200 iterations, lambda1 1.7, lambda2 3.0,
beta 2, gamma 0.3, a 28 x 28 mask, Gaussian blur with sigma 5 and kernel size 11. Where the paper
is silent (normalization of TV and L1, probability or log-probability, what a trial is) the
defaults are the readings chosen in ``book/implementation-notes.md``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, replace

from .modes import MODE_REGISTRY

# The built-in classifiers (upx_core.method.models.load_model); here, not in models, so that the
# command line can list them without importing torch.
EFFICIENTNET_LITE = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
MODEL_NAMES = (*EFFICIENTNET_LITE, "resnet18", "vgg19")
MODES = tuple(MODE_REGISTRY)  # baseline, ftc, fntc, deletion: method/modes.py
# What `upx evaluate` can score: the optimized modes, and the F-TC mask moved to random places.
EVAL_MODES = (*MODES, "random")
OBJECTIVES = ("prob", "log_prob", "logit")
REDUCTIONS = ("mean", "sum")
FTC_FORMS = ("mean", "vector")
FNTC_NORMS = ("abs", "squared")
BLURS = ("gaussian", "gaussian+median")  # OptimConfig.blur, the reading of h(X)
# The objective of `upx explain` and UndesirablePixels.attribute, for a user's own target. On 16
# sample images x their three most probable classes, F-TC under log_prob found a mask (a pixel
# above the threshold, phi >= 10) for 40 of 48 targets, under prob for 21, and never found one
# that log_prob missed (benchmarks/default_objective.py, chapter 7). The reproduction (OptimConfig,
# upx evaluate, the chapters) keeps the paper's literal probability.
EXPLAIN_OBJECTIVE = "log_prob"
AMP_DTYPES = ("bf16",)  # OptimConfig.amp: one of these, None (float32) or AMP_AUTO
# OptimConfig.amp: bfloat16 with channels-last where the device computes bfloat16 natively
# (CUDA, AVX-512 BF16 or AMX), float32 elsewhere; what it chose is in the result's config.
# The default of `upx explain`: on 48 images x 3 trials it kept phi within 0.16 points and the
# ratio within 3.1 % of float32's, its trials agreeing better (benchmarks/precision_gate.py).
AMP_AUTO = "auto"
# How a query-only run reads the gradient: a running estimate corrected by forward differences
# (method/tracking.py, P + 1 queries per iteration, the default) or antithetic differences
# averaged afresh at every step (method/query.py, 2P).
ESTIMATORS = ("tracking", "antithetic")
DEFAULT_ESTIMATOR = ESTIMATORS[0]
AMP_FLAGS = (AMP_AUTO, *AMP_DTYPES, "fp32")  # upx's --amp; fp32 is amp=None

__all__ = ["MODES", "MaskSetting", "OptimConfig", "settings_grid"]


# torch.Generator.manual_seed takes seeds below 2**64.
SEED_LIMIT = 2**64


def _is_real(value) -> bool:
    """A Python or NumPy number other than a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _not_int(value) -> bool:
    """Not a Python or NumPy integer (bools are not integers here)."""
    return not isinstance(value, numbers.Integral) or isinstance(value, bool)


def _check_nonneg(name: str, value: float) -> None:
    if not _is_real(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")


def _as_builtin(obj, ints: tuple[str, ...], reals: tuple[str, ...]) -> None:
    """Store NumPy scalars (already validated) as Python ints and floats on a frozen dataclass,
    so that ``asdict`` gives what ``json`` can write; Python numbers are kept as they are."""
    for name in ints:
        value = getattr(obj, name)
        if value is not None and not isinstance(value, int):
            object.__setattr__(obj, name, int(value))
    for name in reals:
        value = getattr(obj, name)
        if not isinstance(value, (int, float)):
            object.__setattr__(obj, name, float(value))


@dataclass(frozen=True)
class MaskSetting:
    """What one mask of a batch optimizes: the mode, its trial seed and its regularizer weights.

    mode: ``baseline`` (Eq. 3), ``ftc`` (Eq. 5), ``fntc`` (Eq. 7) or ``deletion`` (the
    "meaningful perturbation" mask of Fong & Vedaldi, ref. [3]: minimize f_k(Q) + R_M).
    seed: the trial. Trial ``s`` starts Adam from M0 = 1 - init_noise * U(0, 1), drawn from a
    CPU generator seeded with ``s``, so the same seed gives the same mask on any batch layout.
    target: a class index overriding the image's target for this mask (``None``: the image's).
    """

    mode: str = "ftc"
    seed: int = 0
    lambda1: float = 1.7
    lambda2: float = 3.0
    beta: float = 2.0
    gamma: float = 0.3
    target: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        for name in ("lambda1", "lambda2", "gamma"):
            _check_nonneg(name, getattr(self, name))
        if not _is_real(self.beta) or math.isnan(self.beta) or self.beta < 1:
            raise ValueError(f"beta must be a number >= 1, got {self.beta!r}")
        if _not_int(self.seed) or not 0 <= self.seed < SEED_LIMIT:
            raise ValueError(f"seed must be an integer in 0..2**64 - 1, got {self.seed!r}")
        if self.target is not None and (_not_int(self.target) or self.target < 0):
            raise ValueError(
                f"target must be None or a non-negative class index, got {self.target!r}")
        _as_builtin(self, ("seed", "target"), ("lambda1", "lambda2", "beta", "gamma"))


@dataclass(frozen=True)
class OptimConfig:
    """What all masks of one optimizer call share (they share one forward pass per iteration).

    reduction: ``mean`` averages TV over the (m-1)^2 cells and L1 over the m^2 cells, ``sum``
    is the paper's literal sum (784x larger for a 28 x 28 mask at the same lambdas).
    objective: ``prob`` optimizes f_k as a softmax probability (the paper's text); ``log_prob``
    its logarithm; ``logit`` the pre-softmax score y_k (fntc: the log-sum-exp of the other
    logits; see :func:`upx_core.method.equations.loss_terms`). ``init_noise``: 0 starts every trial
    at M = 1 (no perturbation), so all trials coincide (unless ``perturb_noise`` > 0); > 0
    makes trials differ by their seeded random start.
    amp: ``"bf16"`` runs the classifier under bfloat16 autocast on CUDA or on a CPU with native
    bfloat16 (AVX-512 BF16, AMX; refused on other CPUs); the mask, the blur, every loss term and
    Adam's state stay float32, and the probabilities reported are the bf16 classifier's.
    ``"auto"`` picks ``"bf16"`` with ``channels_last`` where the device computes bfloat16
    natively and float32 (``None``) elsewhere, when the optimizer knows its device
    (:func:`upx_core.method.runtime.resolve_amp`); the result's config says which. The default
    stays float32 so that a script's numbers do not depend on the CPU it runs on; ``upx
    explain`` defaults to ``"auto"``.
    fntc_norm: Eq. 6's norm of the target logit's shift dy_k, ``abs`` (|dy_k|, the L2 norm of a
    scalar, whose slope gamma at dy_k = 0 is a wall the target's own gain must climb) or
    ``squared`` (dy_k^2, the squared L2 norm, flat at dy_k = 0; see
    :func:`upx_core.method.equations.fntc_penalty`).
    ``check_every``: how often the loop looks for NaN/Inf (a host-device sync on CUDA).
    ``fold_batchnorm``: optimize through a copy of the classifier with its eval-mode batch norms
    folded into their convolutions (same function, faster; see
    :func:`upx_core.method.fold.fold_batchnorm`).

    Readings of Fong & Vedaldi's mask as jacobgil's pytorch-explain-black-box implements it
    (the defaults keep the paper's): ``perturb_noise``, the standard deviation of Gaussian
    noise added to the perturbed image Q at every iteration, in [0, 1] pixel units (jacobgil
    adds std 0.2 to normalized inputs, about 0.2 * 0.226 = 0.045 in pixel units for ImageNet's
    channel stds); each mask draws it from its own CPU generator seeded by its trial seed, so
    it does not depend on the batch, and with noise the trials from M = 1 differ too (a
    different meaning of "trial"). The final probabilities are measured without noise.
    ``tv_root=False`` takes TV without the 1/beta root (:func:`upx_core.method.equations.tv_norm`).
    ``blur``: h(X) as the Gaussian blur (``"gaussian"``) or the mean of it and a median blur
    of the same kernel size (``"gaussian+median"``, :func:`upx_core.method.equations.blur_for`).
    """

    iterations: int = 200
    lr: float = 0.1
    mask_size: int = 28
    sigma: float = 5.0
    kernel_size: int = 11
    objective: str = "prob"
    reduction: str = "mean"
    ftc_form: str = "mean"
    fntc_norm: str = "abs"
    init_noise: float = 0.5
    amp: str | None = None
    channels_last: bool = False
    check_every: int = 10
    fold_batchnorm: bool = True
    perturb_noise: float = 0.0
    tv_root: bool = True
    blur: str = "gaussian"

    def __post_init__(self) -> None:
        if _not_int(self.iterations) or self.iterations <= 0:
            raise ValueError(f"iterations must be a positive integer, got {self.iterations!r}")
        if not _is_real(self.lr) or not (self.lr > 0) or math.isinf(self.lr):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if _not_int(self.mask_size) or self.mask_size < 2:
            raise ValueError(f"mask_size must be an integer >= 2, got {self.mask_size!r}")
        if not _is_real(self.sigma) or not (self.sigma > 0):
            raise ValueError(f"sigma must be > 0, got {self.sigma!r}")
        ks = self.kernel_size
        if _not_int(ks) or ks <= 0 or ks % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {ks!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}")
        if self.ftc_form not in FTC_FORMS:
            raise ValueError(f"ftc_form must be one of {FTC_FORMS}, got {self.ftc_form!r}")
        if self.fntc_norm not in FNTC_NORMS:
            raise ValueError(f"fntc_norm must be one of {FNTC_NORMS}, got {self.fntc_norm!r}")
        if not _is_real(self.init_noise) or not (0 <= self.init_noise <= 1):
            raise ValueError(f"init_noise must be in [0, 1], got {self.init_noise!r}")
        if self.amp is not None and self.amp not in (*AMP_DTYPES, AMP_AUTO):
            raise ValueError(f"amp must be None, 'bf16' or 'auto', got {self.amp!r}")
        if _not_int(self.check_every) or self.check_every <= 0:
            raise ValueError(f"check_every must be a positive integer, got {self.check_every!r}")
        _check_nonneg("perturb_noise", self.perturb_noise)
        if not isinstance(self.tv_root, bool):
            raise ValueError(f"tv_root must be True or False, got {self.tv_root!r}")
        if self.blur not in BLURS:
            raise ValueError(f"blur must be one of {BLURS}, got {self.blur!r}")
        _as_builtin(self, ("iterations", "mask_size", "kernel_size", "check_every"),
                    ("lr", "sigma", "init_noise", "perturb_noise"))

    def replace(self, **changes) -> OptimConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


def settings_grid(
    modes: tuple[str, ...] | list[str] = ("ftc",),
    seeds: tuple[int, ...] | list[int] = (0,),
    **fixed,
) -> list[MaskSetting]:
    """Every (mode, seed) pair as a :class:`MaskSetting`, mode-major, with ``fixed`` fields."""
    return [MaskSetting(mode=m, seed=s, **fixed) for m in modes for s in seeds]
