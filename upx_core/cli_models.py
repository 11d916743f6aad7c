"""The model an ``upx explain`` plan names and the run on it: white-box (a built-in model or a
``--model-file``), or query-only (``--black-box``, ``--onnx``).

Imports no torch at module level, like :mod:`upx_core.cli`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .cli_plan import ExplainPlan

__all__ = ["model_and_run"]


def model_and_run(plan: ExplainPlan) -> tuple[Any, Callable, dict]:
    """The model (what gives the image's size), ``run(image, target) -> UPXResult`` and what
    result.json records of the run beyond the plan (how the black box ran)."""
    return black_box(plan) if plan.query_only else white_box(plan)


def white_box(plan: ExplainPlan) -> tuple[Any, Callable, dict]:
    from .method.models import load_model, load_model_file
    from .method.optimizer import optimize_masks

    model = (load_model_file(plan.model_file, plan.mean, plan.std, plan.input_size or 224)
             if plan.model_file else load_model(plan.model, device=plan.device))

    def run(image, target):
        return optimize_masks(model, image, targets=target, settings=list(plan.settings),
                              config=plan.config, device=plan.device,
                              batch_size=plan.batch_size, progress=plan.progress,
                              outputs=plan.outputs or "logits")
    return model, run, {}


def black_box(plan: ExplainPlan) -> tuple[Any, Callable, dict]:
    """The predictor (with its sizes and classes) and the query-only optimizer on it."""
    from .method.blackbox import optimize_masks_blackbox, samples_for_budget, torch_predictor
    from .method.models import load_model

    if plan.onnx:
        from .method.onnxbox import onnx_predictor

        predict = onnx_predictor(plan.onnx, mean=plan.mean, std=plan.std, strict=True,
                                 input_size=plan.input_size, outputs=plan.outputs)
    else:
        model = load_model(plan.model)  # the CPU: a black box's queries come back as arrays
        predict = torch_predictor(model, "logits")
        predict.input_size, predict.resize_size = model.input_size, model.resize_size
    # spend the budget on the paper's iterations: as many search directions as it allows
    samples = samples_for_budget(plan.queries, plan.config.iterations, plan.estimator)

    def run(image, target):
        return optimize_masks_blackbox(predict, image, targets=target,
                                       settings=list(plan.settings), config=plan.config,
                                       queries=plan.queries, samples=samples,
                                       outputs=predict.outputs, batch_size=plan.batch_size,
                                       progress=plan.progress, estimator=plan.estimator)
    return predict, run, {"black_box": "onnxruntime" if plan.onnx else "torch inference_mode",
                          "estimator": plan.estimator}
