"""The stored oracle mask recomputed on other floating-point paths of this machine.

Chapter 9's fair comparison recomputed the oracle of the stored query-only run (exact
directional derivatives along the antithetic estimator's directions, 4,000 queries' worth) with
the same settings and found the ski's map no longer agreeing with the white-box one. This
script asks whether the arithmetic path explains it: the same oracle (the stored run's cases in
one batch, seed 0, 200 iterations) in a fresh process per path, ``ATEN_CPU_CAPABILITY`` in
{this CPU's own kernels, avx2} x {1, 2} threads, each mask's Pearson r with the stored white-box
seed 0 mask.

    python benchmarks/oracle_paths.py --out notebooks/results/blackbox/oracle_paths.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from arithmetic_paths import path_definitions  # benchmarks/, the script's own folder

PATHS = ("default", "avx2")  # this CPU's own kernels, and AVX2 (the other SIMD on AVX-512)


def one(stored: str, queries: int) -> list[dict]:
    """This process's oracle masks and their r with the stored white-box seed 0 masks."""
    import torch

    from upx_core import MaskSetting, OptimConfig, load_model
    from upx_core.book.chapter import load_sample
    from upx_core.evaluation.blackbox_run import load_quality_run
    from upx_core.method.blackbox import samples_for_budget
    from upx_core.method.equations import upsample_mask
    from upx_core.method.metrics import pearson
    from upx_core.method.models import class_index
    from upx_core.method.oracle import oracle_masks

    run = load_quality_run(stored)
    model = load_model("efficientnet_lite0")
    images = torch.stack([load_sample(name, model) for name, _ in run.cases])
    targets = [class_index(t, model.categories) for _, t in run.cases]
    size = tuple(images.shape[-2:])
    config = OptimConfig(iterations=200, objective=run.objective)
    samples = samples_for_budget(queries, config.iterations, "antithetic")
    final, _ = oracle_masks(model, images, targets, MaskSetting(mode="ftc", seed=0), config,
                            samples)
    white = run.undesirable("white", size)
    mine = upsample_mask(1 - final, size)[:, 0]
    return [{"target": t, "samples": samples, "pearson_vs_white": pearson(mine[b], white[b])}
            for b, (_, t) in enumerate(run.cases)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stored", default="notebooks/results/blackbox",
                    help="the folder of blackbox_quality.py's quality.json and masks.npz")
    ap.add_argument("--queries", type=int, default=4000)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, help="a JSON file for the rows and their provenance")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:  # a child: the path is in its environment
        print(json.dumps(one(args.stored, args.queries)))
        return

    from upx_core.evaluation.provenance import provenance
    from upx_core.files import atomic_write_bytes

    start, rows = time.time(), []
    defs = path_definitions()
    for path in PATHS:
        for threads in args.threads:
            child = {**os.environ, **defs[path][0], "OMP_NUM_THREADS": str(threads)}
            done = subprocess.run([sys.executable, __file__, "--one", "--stored", args.stored,
                                   "--queries", str(args.queries)], env=child, check=True,
                                  capture_output=True, text=True)
            for row in json.loads(done.stdout.strip().splitlines()[-1]):
                rows.append({"path": path, "threads": threads, **row})
                print(json.dumps(rows[-1]), flush=True)
    if args.out:
        record = {"provenance": provenance(" ".join(["python", *sys.argv]),
                                           wall_s=time.time() - start),
                  "queries": args.queries, "rows": rows}
        atomic_write_bytes(args.out, (json.dumps(record, indent=1) + "\n").encode())


if __name__ == "__main__":
    main()
