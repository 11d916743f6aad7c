"""The readings the paper leaves open, as one factorial on the same images and trials.

Two families of grid cells, each under both objectives (the paper's probability and its log):

- F-NTC (Eq. 6-7): the norm of the target logit's shift, ``abs`` |dy_k| or ``squared`` dy_k^2
  (``OptimConfig.fntc_norm``), x gamma in {0, 0.1, 0.25, 0.3, 1}; at gamma = 0 the two norms
  are the same loss, so that cell runs once (norm ``abs``);
- lambda2 (L1's weight in R_M, Eq. 3) in {0.5, 1, 2, 3, 5} for F-TC (Eq. 5, gamma 0.3) and for
  Eq. 3 alone (``baseline``).

Every cell optimizes the same images (a prefix of the draw order of ``select_images(200, 0)``,
so every image is also in both 200-image runs of chapter 7) with the same trial seeds, the
paper's other hyperparameters and 200 iterations. Each cell is one resumable
``run_evaluation`` CSV in ``--out``; the images are done in chunks, every cell for one chunk
before the next chunk, so a stopped run leaves a complete grid on fewer images, and the same
command resumes it (a larger ``--n`` extends it). ``factorial.json`` beside them records the
grid, command, hardware and commits.

    python benchmarks/factorial.py --n 24 --seeds 0 1 --out notebooks/results/factorial
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
import time
from pathlib import Path

from upx_core import OptimConfig, load_model
from upx_core.evaluation.protocol import run_evaluation
from upx_core.evaluation.provenance import provenance

OBJECTIVES = ("prob", "log_prob")
FNTC_GAMMAS = (0.0, 0.1, 0.25, 0.3, 1.0)
LAMBDA2S = (0.5, 1.0, 2.0, 3.0, 5.0)


def cells() -> list[dict]:
    """The grid: one dict per CSV, with its name, config fields, modes and penalties."""
    out = []
    for objective in OBJECTIVES:
        for gamma in FNTC_GAMMAS:
            for norm in ("abs",) if gamma == 0 else ("abs", "squared"):
                out.append({"name": f"fntc-{objective}-{norm}-gamma{gamma:g}",
                            "config": {"objective": objective, "fntc_norm": norm},
                            "modes": ["fntc"], "penalties": {"gamma": gamma}})
        for lambda2 in LAMBDA2S:
            out.append({"name": f"lambda2-{objective}-{lambda2:g}",
                        "config": {"objective": objective},
                        "modes": ["ftc", "baseline"], "penalties": {"lambda2": lambda2}})
    return out


def image_order(n: int) -> list[int]:
    """The first ``n`` images of ``select_images(200, 0)`` in its draw order: a uniform random
    subset of the 200 images of chapter 7's runs."""
    if not 0 < n <= 200:
        raise ValueError(f"--n must be in 1..200, got {n}")
    return random.Random(0).sample(range(1000), 200)[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24, help="images (default: %(default)s)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="trials")
    ap.add_argument("--chunk", type=int, default=4, help="images per chunk (all cells each)")
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--out", type=Path, required=True, help="folder of the cells' CSVs")
    ap.add_argument("--force-resume", action="store_true",
                    help="resume CSVs written by another optimizer version (rows keep theirs)")
    args = ap.parse_args()

    images = image_order(args.n)
    model = load_model("efficientnet_lite0")
    args.out.mkdir(parents=True, exist_ok=True)
    record = args.out / "factorial.json"
    previous = json.loads(record.read_text()) if record.exists() else {}
    start = time.time()
    grid = cells()
    for stop in range(args.chunk, len(images) + args.chunk, args.chunk):
        chunk = images[:stop]
        for i, cell in enumerate(grid):
            print(f"images 1-{len(chunk)}: cell {i + 1}/{len(grid)} {cell['name']}",
                  file=sys.stderr, flush=True)
            run_evaluation(model, chunk, modes=cell["modes"], seeds=tuple(args.seeds),
                           config=OptimConfig(iterations=args.iterations, **cell["config"]),
                           penalties=cell["penalties"], batch_images=args.chunk, device="cpu",
                           out_csv=args.out / f"{cell['name']}.csv", progress=False,
                           force_resume=args.force_resume)
        command = shlex.join(["python", "benchmarks/factorial.py", *sys.argv[1:]])
        wall = time.time() - start + float(previous.get("wall_s") or 0.0)
        meta = provenance(command, wall, images=images[:stop], seeds=args.seeds,
                          iterations=args.iterations, cells=grid,
                          note="wall_s sums every segment of the resumed command; each row "
                               "of the CSVs records the commit and optimizer version that "
                               "computed it")
        record.write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
