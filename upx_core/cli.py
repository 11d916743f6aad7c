"""The ``upx`` command: ``upx explain`` for one image (white-box, or ``--black-box`` / ``--onnx``
from queries alone), ``upx evaluate`` for the Table 1/2 protocol, ``upx export-onnx``.

``python -m upx_core.cli`` is the same command, which is how torchrun starts it on N processes:
``torchrun --nproc_per_node N -m upx_core.cli evaluate ...``.

Bad input ends with a one-line ``upx: error: ...`` and exit code 2, never a traceback; Ctrl-C
ends with a one-line message and exit code 130. ``upx explain`` checks its image, target and
output folder before it loads the model, and ``--force`` replaces only a folder that upx wrote.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .errors import UPXError

__all__ = ["main", "build_parser"]

# What a user can act on: upx's own errors, a bad value (every parameter check raises
# ValueError), a file problem (OSError: FileNotFoundError, PermissionError, ...) and the
# optimizer's NaN (FloatingPointError: lower lr). Not RuntimeError: from torch that is a bug,
# whose traceback must show.
EXPECTED_ERRORS = (UPXError, ValueError, OSError, FloatingPointError)
# What the Python API's messages call a parameter, as upx evaluate's flags name it.
CLI_WORDS = {" (force_resume=True)": "", "resume=False": "--no-resume", "out_csv": "--out"}


def _add_hyperparameters(p: argparse.ArgumentParser, objective: str | None = None) -> None:
    """The paper's hyperparameters as flags; ``objective`` overrides the --objective default."""
    from .method.config import (
        FNTC_NORMS,
        FTC_FORMS,
        MODEL_NAMES,
        OBJECTIVES,
        REDUCTIONS,
        MaskSetting,
        OptimConfig,
    )

    c, s = OptimConfig(), MaskSetting()
    g = p.add_argument_group("hyperparameters (defaults: the paper's, Sect. 4.1)")
    # no choices=: a wrong name gets the one-line error of load_model, not argparse's usage dump
    g.add_argument("--model", default="efficientnet_lite0",
                   help=f"the classifier: {', '.join(MODEL_NAMES)}; efficientnet_lite* work "
                        "offline (default: %(default)s)")
    g.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="trials: each seed starts Adam from another random mask (default: 0)")
    g.add_argument("--iterations", type=int, default=c.iterations,
                   help="Adam steps per mask (default: %(default)s)")
    g.add_argument("--lr", type=float, default=c.lr,
                   help="Adam learning rate (default: %(default)s)")
    g.add_argument("--lambda1", type=float, default=s.lambda1,
                   help="TV weight (Eq. 3; default: %(default)s)")
    g.add_argument("--lambda2", type=float, default=s.lambda2,
                   help="L1 weight (Eq. 3; default: %(default)s)")
    g.add_argument("--beta", type=float, default=s.beta,
                   help="TV exponent (Eq. 3; default: %(default)s)")
    g.add_argument("--gamma", type=float, default=s.gamma,
                   help="F-TC/F-NTC weight (Eq. 4, 6; default: %(default)s)")
    g.add_argument("--mask-size", type=int, default=c.mask_size,
                   help="side of the square mask M (default: %(default)s)")
    g.add_argument("--sigma", type=float, default=c.sigma,
                   help="Gaussian blur sigma (Eq. 1; default: %(default)s)")
    g.add_argument("--kernel-size", type=int, default=c.kernel_size,
                   help="blur kernel size, odd (default: %(default)s)")
    g.add_argument("--objective", choices=OBJECTIVES, default=objective or c.objective,
                   help="optimize the target's probability (the paper's, upx evaluate's "
                        "default), its log (upx explain's default: it finds a mask for far more "
                        "targets) or its pre-softmax logit (default: %(default)s)")
    g.add_argument("--reduction", choices=REDUCTIONS, default=c.reduction,
                   help="TV and L1 averaged over cells or summed (paper) (default: %(default)s)")
    g.add_argument("--ftc-form", choices=FTC_FORMS, default=c.ftc_form,
                   help="Eq. 4 on the mean shift of the non-target logits (literal) or on "
                        "the vector of their shifts (default: %(default)s)")
    g.add_argument("--fntc-norm", choices=FNTC_NORMS, default=c.fntc_norm,
                   help="Eq. 6's norm of the target logit's shift: |dy_k| or dy_k^2 "
                        "(default: %(default)s)")
    g.add_argument("--init-noise", type=float, default=c.init_noise,
                   help="a trial starts at M = 1 - init_noise * U(0, 1) (default: %(default)s)")
    g.add_argument("--threshold", type=float, default=0.6,
                   help="undesirable-pixel threshold on 1 - M' (Table 2; default: %(default)s)")


def _add_runtime(p: argparse.ArgumentParser, amp: str) -> None:
    from .method.config import AMP_FLAGS

    g = p.add_argument_group("running")
    g.add_argument("--device", default="auto",
                   help="auto, cpu, cuda or cuda:N; under torchrun each rank takes GPU "
                        "LOCAL_RANK (default: %(default)s)")
    g.add_argument("--amp", choices=AMP_FLAGS, default=amp,
                   help="the classifier's arithmetic: bf16 (bfloat16 autocast, CUDA or a CPU "
                        "with native bfloat16), fp32, or auto (bf16 with channels-last where "
                        "the device computes bfloat16 natively, fp32 elsewhere); the mask and "
                        "the losses stay float32 (default: %(default)s)")
    g.add_argument("--channels-last", action="store_true",
                   help="channels-last memory layout for the classifier's input (on with "
                        "--amp auto where it picks bf16)")
    g.add_argument("--batch-size", type=int, default=None,
                   help="masks per forward pass (default: all on the CPU, what fits on CUDA)")
    g.add_argument("--no-progress", "--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .cli_plan import DEFAULT_QUERIES
    from .method.config import ESTIMATORS, EVAL_MODES, EXPLAIN_OBJECTIVE, MODES

    parser = argparse.ArgumentParser(
        prog="upx", description="Undesirable pixels: the pixels whose blur raises a class.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    ex = sub.add_parser("explain", help="explain one image",
                        description="Optimize the mask of undesirable pixels for one image.")
    ex.add_argument("image", help="an image file, or sample:NAME_OR_INDEX for an ImageNet sample")
    ex.add_argument("--target", default=None,
                    help="class name or index to raise (default: the top class)")
    ex.add_argument("--mode", default="ftc", choices=MODES,
                    help="the objective: Eq. 3, 5, 7 or Fong & Vedaldi's (default: %(default)s)")
    ex.add_argument("--out", required=True, help="output folder (must not exist, see --force)")
    ex.add_argument("--force", action="store_true",
                    help="replace an output folder that upx wrote before (never any other "
                         "folder or file)")
    _add_hyperparameters(ex, objective=EXPLAIN_OBJECTIVE)
    _add_runtime(ex, "auto")
    bb = ex.add_argument_group(
        "black box: a model you can only query (no gradient; upx_core.method.blackbox)")
    bb.add_argument("--black-box", action="store_true",
                    help="optimize from --model's outputs alone, run under inference_mode")
    bb.add_argument("--onnx", default=None, metavar="MODEL.onnx",
                    help="explain this ONNX model through ONNX Runtime (implies --black-box; "
                         "make one with upx export-onnx)")
    # None, not the default budget, in the parser: a --queries without --black-box/--onnx is
    # refused.
    bb.add_argument("--queries", type=int, default=None,
                    help=f"model queries per mask (default: {DEFAULT_QUERIES})")
    bb.add_argument("--estimator", choices=ESTIMATORS, default=None,
                    help="how the gradient is read from queries: a running estimate corrected "
                         "by forward differences (tracking, the default) or antithetic "
                         "differences averaged afresh at each step")
    bb.add_argument("--model-file", default=None, metavar="MODEL.pt2",
                    help="explain your own PyTorch model (white-box): a torch.export program "
                         "(.pt2) or a TorchScript file, with --mean --std (--input-size, "
                         "--outputs)")
    bb.add_argument("--mean", type=float, nargs=3, default=None,
                    help="--onnx's or --model-file's input normalization, if the file does not "
                         "hold it (a file that holds it refuses another)")
    bb.add_argument("--std", type=float, nargs=3, default=None, help="likewise")
    bb.add_argument("--input-size", type=int, default=None,
                    help="its image side in pixels (default: the file's, or 224)")
    bb.add_argument("--outputs", choices=("logits", "probs"), default=None,
                    help="what its model returns (default: the file's, or logits)")

    xo = sub.add_parser("export-onnx", help="write a built-in model as an ONNX file",
                        description="Export --model (preprocessing in the file's metadata) for "
                                    "upx explain --onnx, ONNX Runtime or any ONNX tool.")
    xo.add_argument("out", help="the .onnx file to write (must not exist, see --force)")
    xo.add_argument("--model", default="efficientnet_lite0",
                    help="the classifier to export (default: %(default)s)")
    xo.add_argument("--force", action="store_true", help="replace an existing file")

    ev = sub.add_parser(
        "evaluate", help="the paper's Table 1/2 protocol on N images",
        description="phi (Eq. 8) and the undesirable-pixel ratio per image/mode. Also under "
                    "torchrun: torchrun --nproc_per_node N -m upx_core.cli evaluate ...")
    ev.add_argument("--images", "--data-root", dest="images", default=None,
                    help="folder of ImageNet sample images (default: $UPX_DATA_DIR)")
    which = ev.add_mutually_exclusive_group()
    which.add_argument("--n", type=int, default=16,
                       help="number of images, a seeded random choice (default: %(default)s)")
    which.add_argument("--indices", type=int, nargs="+", default=None,
                       help="these sample images (class indices 0-999) instead of --n")
    ev.add_argument("--select-seed", type=int, default=0,
                    help="seed of the --n image choice (default: %(default)s)")
    ev.add_argument("--modes", nargs="+", default=["ftc", "fntc"], choices=EVAL_MODES,
                    help="modes to evaluate; random needs ftc (default: ftc fntc)")
    ev.add_argument("--batch-images", type=int, default=8,
                    help="images per optimizer batch (default: %(default)s)")
    ev.add_argument("--out", required=True, help="results CSV (resumed if it exists)")
    fresh = ev.add_mutually_exclusive_group()
    fresh.add_argument("--no-resume", action="store_true",
                       help="start over, ignoring --out rows")
    fresh.add_argument("--force-resume", action="store_true",
                       help="resume --out even if its rows were computed by another "
                            "optimizer version (the source of the mask-computing modules); "
                            "each row keeps the git_commit and optimizer_version that "
                            "computed it")
    ev.add_argument("--random-weights", action="store_true",
                    help="the model with random weights (timing only; the numbers mean nothing)")
    _add_hyperparameters(ev)
    _add_runtime(ev, "fp32")  # stored runs stay comparable across machines
    return parser


def _config(args):
    from .method.config import OptimConfig

    return OptimConfig(
        iterations=args.iterations, lr=args.lr, mask_size=args.mask_size, sigma=args.sigma,
        kernel_size=args.kernel_size, objective=args.objective, reduction=args.reduction,
        ftc_form=args.ftc_form, fntc_norm=args.fntc_norm, init_noise=args.init_noise,
        amp=None if args.amp == "fp32" else args.amp, channels_last=args.channels_last,
    )


def _penalties(args) -> dict:
    return {"lambda1": args.lambda1, "lambda2": args.lambda2, "beta": args.beta,
            "gamma": args.gamma}


def explain(args) -> int:
    from .cli_plan import plan_explain

    # Everything a user can get wrong is checked once, before the model loads and optimizes.
    plan = plan_explain(args, _config(args), announce=functools.partial(_status, args))
    from .cli_models import model_and_run
    from .data import load_image
    from .method.runtime import keep_freed_memory
    from .report import write_explanation

    keep_freed_memory()
    model, run, extra = model_and_run(plan)
    image = load_image(plan.picture, model.input_size, model.resize_size)
    t0 = time.perf_counter()
    result = run(image, plan.target)
    wall = time.perf_counter() - t0
    if result.queries is not None:
        extra["queries"] = int(result.queries[0].max())
    write_explanation(result, image, plan.image, plan.out, plan.model_name, plan.threshold,
                      wall, extra=extra)
    return 0


def export_onnx_command(args) -> int:
    from .method.models import load_model
    from .method.onnxbox import export_onnx

    out = Path(args.out)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; pass --force to replace it")
    export_onnx(load_model(args.model), out)
    print(f"wrote        {out} ({out.stat().st_size / 2**20:.1f} MiB; upx explain IMG --onnx "
          f"{out})")
    return 0


def evaluate(args) -> int:
    import pandas as pd

    from .data import data_dir
    from .evaluation.distributed import env_world
    from .evaluation.protocol import run_evaluation, select_images
    from .evaluation.store import read_rows
    from .evaluation.tables import summary_table
    from .files import check_output_file
    from .method.models import load_model
    from .method.runtime import keep_freed_memory, resolve_device

    keep_freed_memory()

    if args.images is not None and not Path(args.images).expanduser().is_dir():
        raise FileNotFoundError(f"--images folder does not exist: {args.images}")
    root = data_dir(args.images)
    if root is None:
        raise ValueError("no image folder: pass --images DIR or set UPX_DATA_DIR")
    # the output is checked before the model loads: a run must not fail after computing
    out = check_output_file(args.out)
    if out.exists() and not args.no_resume:
        read_rows(out)  # another kind of file is refused now, not at the first write
    resolve_device(args.device)  # a bad --device fails before the model loads
    config = _config(args)
    # on the CPU: run_evaluation moves it to the device (under torchrun, each rank's own)
    model = load_model(args.model, pretrained=not args.random_weights)
    indices = (args.indices if args.indices is not None
               else select_images(args.n, seed=args.select_seed))
    try:
        df = run_evaluation(
            model, indices, modes=tuple(args.modes), seeds=tuple(args.seeds), config=config,
            threshold=args.threshold, batch_images=args.batch_images, device=args.device,
            out_csv=args.out, resume=not args.no_resume, progress=not args.no_progress,
            data_root=root, batch_size=args.batch_size, penalties=_penalties(args),
            force_resume=args.force_resume,
        )
    except ValueError as err:  # the API names its parameters; a user typed flags
        raise ValueError(functools.reduce(lambda m, w: m.replace(*w), CLI_WORDS.items(),
                                          str(err))) from None
    if env_world()[0] == 0:  # under torchrun only rank 0 holds the merged table
        if not df.empty:
            with pd.option_context("display.width", 120, "display.precision", 4):
                print(summary_table(df).to_string())
        print(f"wrote {args.out} ({len(df)} rows)")
    return 0


def _status(args, line: str) -> None:
    """One line on stderr saying what upx is doing, unless --no-progress/--quiet."""
    if not args.no_progress:
        print(line, file=sys.stderr, flush=True)


def _one_line(err: BaseException) -> str:
    """The error as one line; an OSError from the system reads "reason: path"."""
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        msg = f"{err.strerror}: {err.filename}"
        if err.filename2 is not None:
            msg += f" -> {err.filename2}"
    else:
        msg = str(err) or type(err).__name__
    return " ".join(msg.split())


def main(argv: Sequence[str] | None = None) -> int:
    # Parsing is inside the try, and ``import upx_core`` loads no torch (see __init__), so a
    # Ctrl-C while torch and the model load is also one line.
    args = None
    try:
        args = build_parser().parse_args(argv)
        return {"explain": explain, "evaluate": evaluate,
                "export-onnx": export_onnx_command}[args.command](args)
    except EXPECTED_ERRORS as err:
        print(f"upx: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"upx: interrupted; {_what_was_kept(args)}", file=sys.stderr)
        return 130


def _what_was_kept(args) -> str:
    """What an interrupted run left: explain writes its folder whole or not at all, evaluate
    keeps every finished batch in its CSV and resumes from there."""
    if args is not None and args.command == "evaluate":
        return (f"the rows finished so far are in {args.out}; run the same command again to "
                "resume")
    return "no partial output was kept"


def run() -> None:
    """The ``upx`` command: :func:`main`, then a quick exit. Python's teardown of the modules
    torch, torchvision and timm bring took 0.7-1.9 s after a command had finished (measured on
    2 cores); every file upx writes is complete and closed when ``main`` returns, so the process
    flushes its streams and leaves without it. Under ``torchrun`` (``WORLD_SIZE`` set) the usual
    exit stays, for the process group's own shutdown."""
    code = main()
    if "WORLD_SIZE" in os.environ:
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (upx ... | head): nothing left to say
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
