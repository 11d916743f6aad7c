"""upx: the pixels that hinder a classifier's target class (Kang, Jung, Lee), reproduced.

The module map (the README's "Layout" and the book's contributor notes show the same block)::

    upx_core/
      The method
        equations.py    Eq. 1-7, one function each, and loss_terms: what each mode minimizes
        optimizer.py    the batched Adam loop over B images x K settings (optimize_masks)
        blackbox.py     the same masks from forward queries alone (optimize_masks_blackbox)
        onnxbox.py      ONNX export, and an ONNX Runtime session as the black box
        config.py       OptimConfig, MaskSetting, settings grids, the choices the CLI offers
        result.py       UPXResult: masks, probabilities, the loss history
        attribution.py  UndesirablePixels (Captum's attribute), quantus_explain_func (Quantus)
        metrics.py      Eq. 8's relative improvement, Table 2's ratio, trial consistency
      Running it
        runtime.py      device, frozen model, channels-last, GPU batch size, the forward pass
        fold.py         batch norm folded into the convolutions (same outputs, faster)
        threads.py      the OpenMP spin set before torch loads (fast on busy CPUs)
        models.py       the classifiers (EfficientNet-Lite offline; ResNet-18, VGG-19 online)
        data.py         image files and the 1000 ImageNet sample images
        io.py           outputs written whole or not at all; --force replaces only upx's own
        plotting.py     the paper's three-panel figure and heatmaps
        cli.py          upx explain, upx evaluate, upx export-onnx
        cli_models.py   which model flags apply to which model; the query-only run
        report.py       what upx explain writes and prints
      Tables 1-2
        evaluation.py   the paper's protocol over many images (upx evaluate)
        store.py        its resumable, locked CSV
        distributed.py  the evaluation sharded under torchrun
        tables.py       Tables 1-2 beside the paper, paired wins, spread over trials
        trials.py       how alike a mask's trials are (Pearson, IoU), with intervals
        provenance.py   hardware, commit and command of a stored run
      The book
        analysis.py     logit decomposition, consistency and probability tables, image regions
        widgets.py      the static (kernel-free) and live explorers
        chapter.py      what every chapter starts with: parameters, config, sample image
        claims.py       the book's checked sentences

Imports point from the book to the method, never back: no module outside "The book" imports
one inside it, and ``config`` imports nothing of upx. ``tests/test_layout.py`` holds this map to
the files.
"""

import importlib

from .threads import apply_thread_policy

# Before anything imports torch: see threads.py (a busy CPU made upx 15x slower without it).
apply_thread_policy()

# Names are imported on first use (PEP 562), so that ``import upx_core`` (and with it the
# ``upx`` command's start) loads no torch: a Ctrl-C while torch loads then reaches cli.main,
# which ends it with one line instead of a traceback. ``from upx_core import load_model`` works
# as before.
_EXPORTS = {
    "UndesirablePixels": "attribution",
    "optimize_masks_blackbox": "blackbox",
    "torch_predictor": "blackbox",
    "quantus_explain_func": "attribution",
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
    "optimize_masks_blackbox",
    "quantus_explain_func",
    "relative_improvement",
    "sample_path",
    "settings_grid",
    "torch_predictor",
    "undesirable_pixel_ratio",
]
