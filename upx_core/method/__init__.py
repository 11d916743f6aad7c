"""The method: Eq. 1-7, the mask optimization that uses them, and the classifiers it queries.

Nothing here imports from :mod:`upx_core.evaluation` or :mod:`upx_core.book`
(``tests/test_layout.py``); the source of this folder is what
:func:`upx_core.evaluation.provenance.optimizer_version` hashes.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["MODES", "MaskSetting", "OptimConfig", "settings_grid"], "config"),
    **dict.fromkeys(["MODE_REGISTRY", "Mode"], "modes"),
    **dict.fromkeys(["perturb", "blur", "upsample_mask", "tv_norm", "l1_norm", "mask_penalty",
                     "ftc_penalty", "fntc_penalty", "loss_terms"], "equations"),
    **dict.fromkeys(["relative_improvement", "undesirable_pixel_ratio", "consistency",
                     "top_fraction_mask"], "metrics"),
    **dict.fromkeys(["area_matched_phi", "occlusion_map", "rise_map", "rise_maps"], "baselines"),
    **dict.fromkeys(["Classifier", "load_model", "load_model_file", "class_index"], "models"),
    "optimize_masks": "optimizer",
    **dict.fromkeys(["optimize_masks_blackbox", "torch_predictor"], "blackbox"),
    **dict.fromkeys(["export_onnx", "onnx_predictor"], "onnxbox"),
    "fold_batchnorm": "fold",
    "UPXResult": "result",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
