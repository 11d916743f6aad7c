"""``upx explain``'s flags checked once, into the plain values its run and its report take.

:func:`plan_explain` checks what needs no torch first, so a typo is answered before torch's
seconds of import; then it says what it loads and checks what needs torch: the device, the
image's file and size, the target and the output folder. Nothing after it reads the parsed
flags or checks them again (the optimizer keeps its own checks, for callers of the library).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserInputError
from .files import OutputDir, check_image_file, check_output_dir
from .method.config import DEFAULT_ESTIMATOR, MODEL_NAMES, MaskSetting, OptimConfig

__all__ = ["ExplainPlan", "plan_explain", "check_model_flags", "DEFAULT_QUERIES"]

# The smallest budget measured (1,000, 4,000, 16,000) at which the default estimator's maps agree
# with the white-box ones at a median r >= 0.6 over three seeds on both the elephant and the ski
# (chapter 9, "A running gradient"; tests/test_stored_results.py holds it). 4,000 queries took
# 28 s per mask through ONNX Runtime (benchmarks/results/explain-onnx-4000-2026-12-07).
DEFAULT_QUERIES = 16000


@dataclass(frozen=True)
class ExplainPlan:
    """One ``upx explain`` run, checked: what to explain, with which model, and where to."""

    image: Path  # the image file (a sample:NAME resolved to its file)
    picture: Any = field(repr=False, compare=False)  # the image, decoded: a PIL RGB image
    out: OutputDir  # the output folder, checked (with --force and the image it must not hold)
    target: int | None  # an ImageNet class index; None: the model's top class
    mode: str
    seeds: tuple[int, ...]
    settings: tuple[MaskSetting, ...]  # one mask per seed
    config: OptimConfig
    threshold: float
    model: str  # --model: the built-in model, or the one queried by --black-box
    model_file: str | None  # as given: result.json records it so
    onnx: str | None
    queries: int | None  # the budget per mask of a query-only run; None: white-box
    estimator: str | None  # how a query-only run reads the gradient; None: white-box
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None
    input_size: int | None
    outputs: str | None
    device: Any  # a torch.device
    batch_size: int | None
    progress: bool

    @property
    def query_only(self) -> bool:
        return self.queries is not None

    @property
    def model_name(self) -> str:
        """The model as the user named it: its file, or the built-in's name."""
        return self.onnx or self.model_file or self.model


def check_model_flags(args: argparse.Namespace) -> None:
    """Refuse what the run would ignore: --queries without --black-box/--onnx, the flags that
    describe a user's model file without one (a built-in --model holds its own)."""
    if args.model_file and (args.onnx or args.black_box):
        raise UserInputError("--model-file runs white-box; for a query-only run export it to "
                             "ONNX and pass --onnx")
    if args.queries is not None and not (args.onnx or args.black_box):
        raise UserInputError("--queries applies only to a query-only run: add --onnx "
                             "MODEL.onnx or --black-box, or leave it out")
    if args.estimator is not None and not (args.onnx or args.black_box):
        raise UserInputError("--estimator applies only to a query-only run: add --onnx "
                             "MODEL.onnx or --black-box, or leave it out")
    if args.queries is not None and args.queries < 1:
        raise UserInputError(f"--queries must be a positive integer, got {args.queries}")
    own = [f for f in ("mean", "std", "input_size", "outputs") if getattr(args, f) is not None]
    if own and not (args.onnx or args.model_file):
        raise UserInputError(f"{' '.join('--' + f.replace('_', '-') for f in own)} "
                             f"describe{'s' * (len(own) == 1)} your own model file: add --onnx "
                             f"or --model-file (--model {args.model} holds its own)")
    if args.model_file and (args.mean is None or args.std is None):
        raise UserInputError("--model-file needs --mean and --std, the normalization it takes")


def plan_explain(args: argparse.Namespace, config: OptimConfig,
                 announce: Callable[[str], None]) -> ExplainPlan:
    """``upx explain``'s parsed flags (and the :class:`OptimConfig` made of them), checked.

    ``announce`` gets one line saying what loads, once the checks that need no torch passed.
    Raises ValueError (:class:`~upx_core.errors.UserInputError`) or OSError naming the flag.
    """
    repeated = sorted({s for s in args.seeds if args.seeds.count(s) > 1})
    if repeated:
        raise UserInputError(f"--seeds repeats {' '.join(map(str, repeated))}; a seed is a "
                             "trial, and each trial needs its own")
    settings = tuple(
        MaskSetting(mode=args.mode, seed=s, lambda1=args.lambda1, lambda2=args.lambda2,
                    beta=args.beta, gamma=args.gamma) for s in args.seeds)
    if not 0 <= args.threshold <= 1:
        raise UserInputError(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.model not in MODEL_NAMES:
        raise UserInputError(f"unknown model {args.model!r}; choose one of "
                             f"{', '.join(MODEL_NAMES)}")
    check_model_flags(args)
    sample = args.image.startswith("sample:")
    if not sample:
        check_image_file(args.image)  # before torch loads: a typo is answered at once

    # What follows imports torch (seconds): say so at once, not after.
    announce(f"loading {args.onnx or args.model_file or args.model} ...")
    from .data import check_min_size, open_rgb, sample_path
    from .method.models import class_index
    from .method.runtime import resolve_device

    device = resolve_device(args.device)
    image = sample_path(args.image.split(":", 1)[1]) if sample else Path(args.image)
    out = check_output_dir(args.out, args.force, protect=[image])
    picture = open_rgb(image)
    check_min_size(picture, config.mask_size, image)
    query_only = bool(args.onnx or args.black_box)
    return ExplainPlan(
        image=image, picture=picture, out=out,
        # names are ImageNet's for every model (a file names no classes of its own); the
        # optimizer checks the index against the model's outputs
        target=None if args.target is None else class_index(args.target),
        mode=args.mode, seeds=tuple(args.seeds), settings=settings, config=config,
        threshold=args.threshold, model=args.model,
        model_file=args.model_file, onnx=args.onnx,
        queries=(DEFAULT_QUERIES if args.queries is None else args.queries) if query_only
        else None,
        estimator=(args.estimator or DEFAULT_ESTIMATOR) if query_only else None,
        mean=tuple(args.mean) if args.mean else None,
        std=tuple(args.std) if args.std else None,
        input_size=args.input_size, outputs=args.outputs, device=device,
        batch_size=args.batch_size, progress=not args.no_progress,
    )
