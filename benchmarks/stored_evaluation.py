"""Make a stored evaluation run for chapter 7: the CSV of ``run_evaluation`` plus its sidecar.

Chapter 7 (``notebooks/07_evaluation.ipynb``) shows every ``notebooks/results/*.csv`` beside its
live run. This script writes one with the provenance the chapter prints (command, hardware, date,
git commit, wall time); the CSV is resumable, so a killed run picks up where it stopped.

Usage (the Lite1 runs of chapter 7):
    OMP_NUM_THREADS=2 python benchmarks/stored_evaluation.py --model efficientnet_lite1 \
        --n 24 --objective prob --out notebooks/results/cpu_24img_lite1_prob.csv
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from upx_core import OptimConfig, load_model
from upx_core.evaluation.protocol import run_evaluation, select_images
from upx_core.evaluation.provenance import provenance, save_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--n", type=int, default=24, help="images: select_images(n, seed=0)")
    ap.add_argument("--objective", choices=("prob", "log_prob"), default="prob")
    ap.add_argument("--modes", nargs="+", default=["ftc", "fntc", "baseline", "random"])
    ap.add_argument("--batch-images", type=int, default=4)
    ap.add_argument("--note", default="", help="anything a reader should know about the run")
    ap.add_argument("--out", type=Path, required=True, help="the CSV; the sidecar goes beside it")
    args = ap.parse_args()
    if args.out.suffix != ".csv":
        ap.error(f"--out must end in .csv, got {args.out}")

    model = load_model(args.model)
    start = time.time()
    df = run_evaluation(model, select_images(args.n, 0), modes=tuple(args.modes),
                        config=OptimConfig(objective=args.objective),
                        batch_images=args.batch_images, device="cpu", out_csv=args.out)
    wall = time.time() - start
    command = shlex.join(["python", "benchmarks/stored_evaluation.py", *sys.argv[1:]])
    meta = provenance(command, wall, n_images=args.n, rows=len(df),
                      threads=torch.get_num_threads(), note=args.note)
    save_results(df, args.out, meta)
    print(f"wrote {args.out} ({len(df)} rows) in {wall:.0f} s")


if __name__ == "__main__":
    main()
