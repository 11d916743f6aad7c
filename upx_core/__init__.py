"""upx: the pixels that hinder a classifier's target class (Kang, Jung, Lee), reproduced.

Layout: ``equations`` (Eq. 1-7), ``optimizer`` (the batched mask optimizer), ``attribution``
(a Captum-style class), ``metrics`` (Eq. 8, Table 2 ratio, trial consistency), ``models``,
``data``, ``plotting``, ``evaluation`` (the Table 1/2 protocol), ``store`` (its resumable CSV)
and ``cli`` (``upx explain``, ``upx evaluate``). For the book: ``chapter`` (what every chapter
starts with), ``claims`` (its checked sentences), ``casestudy`` and ``explore`` (tables,
figures and widgets of the chapters).
"""

import importlib

# Names are imported on first use (PEP 562), so that ``import upx_core`` (and with it the
# ``upx`` command's start) loads no torch: a Ctrl-C while torch loads then reaches cli.main,
# which ends it with one line instead of a traceback. ``from upx_core import load_model`` works
# as before.
_EXPORTS = {
    "UndesirablePixels": "attribution",
    "MODES": "config",
    "MaskSetting": "config",
    "OptimConfig": "config",
    "settings_grid": "config",
    "load_image": "data",
    "sample_path": "data",
    "consistency": "metrics",
    "relative_improvement": "metrics",
    "undesirable_pixel_ratio": "metrics",
    "Classifier": "models",
    "class_index": "models",
    "load_model": "models",
    "optimize_masks": "optimizer",
    "UPXResult": "result",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


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
