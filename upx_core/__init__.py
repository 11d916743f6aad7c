"""upx: the pixels that hinder a classifier's target class (Kang, Jung, Lee), reproduced.

Layout: ``equations`` (Eq. 1-7), ``optimizer`` (the batched mask optimizer), ``attribution``
(a Captum-style class), ``metrics`` (Eq. 8, Table 2 ratio, trial consistency), ``models``,
``data``, ``plotting``, ``evaluation`` (the Table 1/2 protocol), ``store`` (its resumable CSV)
and ``cli`` (``upx explain``, ``upx evaluate``).
"""

from .attribution import UndesirablePixels
from .config import MODES, MaskSetting, OptimConfig, settings_grid
from .data import load_image, sample_path
from .metrics import consistency, relative_improvement, undesirable_pixel_ratio
from .models import Classifier, class_index, load_model
from .optimizer import optimize_masks
from .result import UPXResult

__version__ = "0.1.0"

__all__ = [
    "MODES",
    "Classifier",
    "MaskSetting",
    "OptimConfig",
    "UPXResult",
    "UndesirablePixels",
    "class_index",
    "consistency",
    "load_image",
    "load_model",
    "optimize_masks",
    "relative_improvement",
    "sample_path",
    "settings_grid",
    "undesirable_pixel_ratio",
]
