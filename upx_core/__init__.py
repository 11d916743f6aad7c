"""upx: the pixels that hinder a classifier's target class (Kang, Jung, Lee), reproduced.

The module map (the README's "Layout" and the book's contributor notes show the same block)::

    upx_core/
      method/           the method; imports nothing from evaluation/ or book/
        config.py       OptimConfig, MaskSetting, settings grids, the choices the CLI offers
        modes.py        the registry of modes: each one's names, words and loss function
        equations.py    Eq. 1-7, one function each, and loss_terms: what each mode minimizes
        metrics.py      Eq. 8's relative improvement, Table 2's ratio, trial consistency
        result.py       UPXResult: masks, probabilities, the loss history
        loop.py         the one Adam loop of every optimizer; an estimator gives its gradient
        gradient.py     the white-box estimator: autograd through the model
        query.py        the query-only estimator: finite differences along random directions
        tracking.py     the default query-only estimator: a running gradient, corrected
        oracle.py       exact derivatives along those directions (the query-only's reference)
        baselines.py    occlusion and RISE maps from queries; phi at an equal blurred area
        optimizer.py    the white-box optimizer over B images x K settings (optimize_masks)
        blackbox.py     the same masks from forward queries alone (optimize_masks_blackbox)
        onnxbox.py      ONNX export, and an ONNX Runtime session as the black box
        models.py       the classifiers (EfficientNet-Lite offline; ResNet-18, VGG-19 online)
        runtime.py      device, frozen model, channels-last, GPU batch size, the forward pass
        fold.py         batch norm folded into the convolutions (same outputs, faster)
      evaluation/       Tables 1-2 over many images; imports the method, never the book
        protocol.py     the paper's protocol (upx evaluate): images, modes, rows
        store.py        its resumable, locked CSV
        distributed.py  the evaluation sharded under torchrun
        provenance.py   hardware, commit and command of a stored run; the optimizer version
        tables.py       Tables 1-2 beside the paper, paired wins, spread over trials
        runs.py         stored runs compared: two objectives, strata, targets, two models
        trials.py       how alike a mask's trials are (Pearson, IoU), with intervals
        blackbox_run.py the stored query-only run read back: agreement and cost per budget
      book/             what only the chapters use; nothing outside it imports it
        chapter.py      what every chapter starts and saves: parameters, config, claims, outputs
        figures.py      the chapters' figures: picture grids, drawn boxes, explanations in rows
        masks.py        one row per mask and trial, both objectives side by side, hand-made masks
        claims.py       the book's checked sentences
        analysis.py     logit decomposition, trial consistency, probability tables, top classes
        regions.py      hand-drawn boxes: a mask's share, blurring them, random boxes as control
        widgets.py      the static (kernel-free) and live explorers
        readings.py     the paper's open readings against its Tables 1-2 (phi against ratio)
      data.py           image files and the 1000 ImageNet sample images
      files.py          outputs written whole or not at all; --force replaces only upx's own
      errors.py         upx's own errors: what the upx command reports in one line, exit 2
      plotting.py       the paper's three-panel figure and heatmaps
      interop.py        UndesirablePixels (Captum's attribute), quantus_explain_func (Quantus)
      report.py         what upx explain writes and prints
      cli.py            upx explain, upx evaluate, upx export-onnx
      cli_plan.py       upx explain's flags checked once: the plain values its run takes
      cli_models.py     the model and the run a plan names: white-box or query-only
      threads.py        the OpenMP spin set before torch loads (fast on busy CPUs)
      _lazy.py          re-exports imported on first use: no torch for ``import upx_core``

Where a new piece goes: a method, a gradient or a black box in ``method/``; a metric of a mask
in ``method/metrics.py``; a table or statistic read from stored runs in ``evaluation/``; a
helper only chapters use in ``book/``. Each folder's ``__init__`` re-exports its public names
(``__all__``); ``tests/test_layout.py`` holds this map to the files and the import rules.
"""

from ._lazy import lazy_exports
from .threads import apply_thread_policy

# Before anything imports torch: see threads.py (a busy CPU made upx 15x slower without it).
apply_thread_policy()

_EXPORTS = {
    "UndesirablePixels": "interop",
    "quantus_explain_func": "interop",
    "optimize_masks_blackbox": "method.blackbox",
    "torch_predictor": "method.blackbox",
    "MODES": "method.config",
    "MaskSetting": "method.config",
    "OptimConfig": "method.config",
    "settings_grid": "method.config",
    "load_image": "data",
    "sample_path": "data",
    "consistency": "method.metrics",
    "relative_improvement": "method.metrics",
    "undesirable_pixel_ratio": "method.metrics",
    "Classifier": "method.models",
    "class_index": "method.models",
    "load_model": "method.models",
    "optimize_masks": "method.optimizer",
    "UPXResult": "method.result",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

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
