"""What ``upx explain``'s model flags mean: which flag applies to which model (a flag the run
would ignore is refused, not dropped), and the query-only run of ``--black-box`` / ``--onnx``.

Imports no torch at module level, like :mod:`upx_core.cli`.
"""

from __future__ import annotations

__all__ = ["check_model_flags", "black_box"]


def check_model_flags(args) -> None:
    """Refuse what the run would ignore: --queries without --black-box/--onnx, the flags that
    describe a user's model file without one (a built-in --model holds its own)."""
    if args.model_file and (args.onnx or args.black_box):
        raise ValueError("--model-file runs white-box; for a query-only run export it to ONNX "
                         "and pass --onnx")
    if args.queries is not None and not (args.onnx or args.black_box):
        raise ValueError("--queries applies only to a query-only run: add --onnx MODEL.onnx or "
                         "--black-box, or leave it out")
    own = [f for f in ("mean", "std", "input_size", "outputs") if getattr(args, f) is not None]
    if own and not (args.onnx or args.model_file):
        raise ValueError(f"{' '.join('--' + f.replace('_', '-') for f in own)} "
                         f"describe{'s' * (len(own) == 1)} your own model file: add --onnx or "
                         f"--model-file (--model {args.model} holds its own)")
    if args.model_file and (args.mean is None or args.std is None):
        raise ValueError("--model-file needs --mean and --std, the normalization it takes")


def black_box(args, config, settings) -> tuple:
    """``upx explain --black-box`` / ``--onnx``: the predictor (with its sizes and classes), the
    query-only optimizer on it, and what result.json records of it."""
    from .method.blackbox import optimize_masks_blackbox, samples_for_budget, torch_predictor
    from .method.models import load_model

    queries = 16000 if args.queries is None else args.queries
    if queries < 1:
        raise ValueError(f"--queries must be a positive integer, got {queries}")
    if args.onnx:
        from .method.onnxbox import onnx_predictor

        predict = onnx_predictor(args.onnx, mean=args.mean, std=args.std, strict=True,
                                 input_size=args.input_size, outputs=args.outputs)
    else:
        model = load_model(args.model)  # the CPU: a black box's queries come back as arrays
        predict = torch_predictor(model, "logits")
        predict.input_size, predict.resize_size = model.input_size, model.resize_size
    # spend the budget on the paper's iterations: as many search directions as it allows
    samples = samples_for_budget(queries, config.iterations)

    def run(image, target):
        return optimize_masks_blackbox(predict, image, targets=target, settings=settings,
                                       config=config, queries=queries, samples=samples,
                                       outputs=predict.outputs, batch_size=args.batch_size,
                                       progress=not args.no_progress)
    extra = {"model": str(args.onnx) if args.onnx else args.model,
             "black_box": "onnxruntime" if args.onnx else "torch inference_mode"}
    return predict, run, extra
